//! Validated mail addresses: the only types SMTP/LMTP commands are built from. A peer's sealed
//! `envelope_sender` and `recipient` are attacker input; they become a [`ReversePath`] and a
//! [`MailAddress`] here or not at all, so an address holding CR/LF, `<>`, whitespace or a source
//! route cannot be expressed, let alone written into `MAIL FROM`/`RCPT TO`.
//!
//! Hand-written: smtp-proto parses a whole command line, not a bare address, and neither it nor
//! mail-parser offers a validated address type to build commands from.

use std::fmt;

/// RFC 5321 limits: 64 octets of local part, 255 of domain, 254 for the path as a whole.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 255;
const MAX_ADDRESS: usize = 254;

/// Why a string is not an address we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address is empty")]
    Empty,
    #[error("address is longer than 254 bytes, or a part of it over its RFC 5321 limit")]
    TooLong,
    #[error("address has no @ or an empty local part or domain")]
    Shape,
    #[error(
        "address holds a control or invisible format character, whitespace or one of <>()[]:;,\\\""
    )]
    ForbiddenCharacter,
    #[error("address is a source route (@host:...) or a domain literal")]
    SourceRoute,
    #[error("domain is not a sequence of dot-separated labels")]
    BadDomain,
    #[error("local part starts or ends with a dot, or holds two in a row")]
    BadDots,
}

/// A host or mail domain: dot-separated labels (letters, digits, inner hyphens, UTF-8 letters),
/// kept lower-case. The only form a host name takes in a command this bridge sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain(String);

impl Domain {
    pub fn parse(s: &str) -> Result<Domain, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong);
        }
        if !s.split('.').all(valid_label) {
            return Err(AddressError::BadDomain);
        }
        Ok(Domain(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `local@domain`: a dot-atom local part (RFC 5321 atext, UTF-8 allowed) and a domain of labels.
/// Quoted local parts, domain literals and source routes are refused. The domain is kept
/// lower-case; the local part as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MailAddress {
    text: String,
    at: usize,
}

impl MailAddress {
    pub fn parse(s: &str) -> Result<MailAddress, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > MAX_ADDRESS {
            return Err(AddressError::TooLong);
        }
        if s.starts_with('@') {
            return Err(AddressError::SourceRoute);
        }
        if s.chars().any(forbidden) {
            return Err(AddressError::ForbiddenCharacter);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::Shape)?;
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(AddressError::Shape);
        }
        if local.len() > MAX_LOCAL || domain.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong);
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(AddressError::BadDots);
        }
        let domain = Domain::parse(domain)?;
        let text = format!("{local}@{domain}");
        Ok(MailAddress {
            at: local.len(),
            text,
        })
    }

    pub fn local(&self) -> &str {
        &self.text[..self.at]
    }

    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the address is not ASCII: it can only be sent with SMTPUTF8 (RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        !self.text.is_ascii()
    }

    /// True when the local part could make a mail system route elsewhere: Postfix's percent
    /// hack (`user%other@here`) and UUCP bang paths (`other!user@here`).
    pub fn has_routing_characters(&self) -> bool {
        self.local().contains(['%', '!'])
    }
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `MAIL FROM:<path>` and CRLF: the only argument is a validated path, so no CR, LF or `>`
/// can reach the line.
pub fn mail_from_line(path: &ReversePath) -> String {
    mail_from_line_with(path, &toxmail_protocol::Extensions::default())
}

/// `MAIL FROM:<path>`, then ` SMTPUTF8` and ` BODY=8BITMIME`/` BODY=BINARYMIME` as `extensions`
/// say (fixed keywords: 7BIT is the default and not written), and CRLF.
pub fn mail_from_line_with(
    path: &ReversePath,
    extensions: &toxmail_protocol::Extensions,
) -> String {
    use toxmail_protocol::BodyType;
    let utf8 = if extensions.smtputf8 { " SMTPUTF8" } else { "" };
    let body = match extensions.body {
        BodyType::SevenBit => "",
        BodyType::EightBitMime => " BODY=8BITMIME",
        BodyType::BinaryMime => " BODY=BINARYMIME",
    };
    let mut line = ["MAIL FROM:<", path.as_str(), ">", utf8, body].concat();
    let dsn = &extensions.dsn;
    match dsn.ret {
        Some(toxmail_protocol::DsnRet::Full) => line.push_str(" RET=FULL"),
        Some(toxmail_protocol::DsnRet::Hdrs) => line.push_str(" RET=HDRS"),
        None => {}
    }
    if let Some(envid) = &dsn.envid {
        line.push_str(" ENVID=");
        line.push_str(&crate::dsn_request::encode_xtext(envid));
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<address>` and CRLF, from a validated address only.
pub fn rcpt_to_line(address: &MailAddress) -> String {
    rcpt_to_line_with(address, &toxmail_protocol::DsnRequest::default())
}

/// `RCPT TO:<address>`, then ` NOTIFY=` (fixed keywords) and ` ORCPT=addr-type;xtext` (the
/// address xtext-encoded: no space, CR, LF or `>` can reach the line) as `dsn` asks, and CRLF.
pub fn rcpt_to_line_with(address: &MailAddress, dsn: &toxmail_protocol::DsnRequest) -> String {
    use toxmail_protocol::DsnRequest;
    let mut line = ["RCPT TO:<", address.as_str(), ">"].concat();
    if let Some(bits) = dsn.notify.filter(|&b| DsnRequest::valid_notify(b)) {
        let words: Vec<&str> = if bits == DsnRequest::NEVER {
            vec!["NEVER"]
        } else {
            [
                (DsnRequest::SUCCESS, "SUCCESS"),
                (DsnRequest::FAILURE, "FAILURE"),
                (DsnRequest::DELAY, "DELAY"),
            ]
            .into_iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, word)| word)
            .collect()
        };
        line.push_str(" NOTIFY=");
        line.push_str(&words.join(","));
    }
    if let Some((kind, orcpt)) = &dsn.orcpt {
        line.push_str(" ORCPT=");
        line.push_str(kind.keyword());
        line.push(';');
        line.push_str(&crate::dsn_request::encode_xtext(orcpt));
    }
    line.push_str("\r\n");
    line
}

/// The `MAIL FROM` of a message: the null path `<>` (bounces) or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Address(MailAddress),
}

impl ReversePath {
    /// "" (and "<>") is the null path; anything else must be a valid address.
    pub fn parse(s: &str) -> Result<ReversePath, AddressError> {
        match s {
            "" | "<>" => Ok(ReversePath::Null),
            _ => MailAddress::parse(s).map(ReversePath::Address),
        }
    }

    pub fn address(&self) -> Option<&MailAddress> {
        match self {
            ReversePath::Null => None,
            ReversePath::Address(a) => Some(a),
        }
    }

    /// What goes between `<` and `>`: "" for the null path.
    pub fn as_str(&self) -> &str {
        self.address().map_or("", MailAddress::as_str)
    }

    /// True for a non-ASCII address (the null path never needs SMTPUTF8).
    pub fn needs_smtputf8(&self) -> bool {
        self.address().is_some_and(MailAddress::needs_smtputf8)
    }
}

/// Displays what goes between `<` and `>`: nothing for the null path.
impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Characters no accepted address holds: controls, whitespace, and RFC 5322 specials other than
/// `@` and `.` (they only appear in quoted local parts, domain literals and routes).
fn forbidden(c: char) -> bool {
    c.is_control() || c.is_whitespace() || invisible(c) || "<>()[]:;,\\\"".contains(c)
}

/// Invisible format characters that make one address look like another in a UTF-8 local part:
/// the soft hyphen, zero-width characters and joiners, bidirectional marks, embeddings,
/// overrides and isolates, and the byte order mark (Unicode general category Cf, the ones a
/// mail address has no use for).
fn invisible(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}')
}

/// A DNS label (letters, digits, inner hyphens) or a UTF-8 label of an internationalised domain.
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_addresses_parse_with_the_domain_lower_cased() {
        let a = MailAddress::parse("Bob.Smith+tag@Mail.B.test").unwrap();
        assert_eq!(a.as_str(), "Bob.Smith+tag@mail.b.test");
        assert_eq!((a.local(), a.domain()), ("Bob.Smith+tag", "mail.b.test"));
        assert!(MailAddress::parse("o'brien&co=x#1@b.test").is_ok());
        assert!(MailAddress::parse("jörg@bücher.test").is_ok());
        let id = format!("{}@tox", "A".repeat(76));
        assert!(
            MailAddress::parse(&id).is_err(),
            "76 > 64: a Tox ID is not a mail local part"
        );
    }

    #[test]
    fn utf8_addresses_are_bounded_in_octets_and_flagged_for_smtputf8() {
        let a = MailAddress::parse("jörg@Bücher.test").unwrap();
        assert_eq!(a.as_str(), "jörg@bücher.test");
        assert!(a.needs_smtputf8());
        assert!(ReversePath::parse("jörg@b.test").unwrap().needs_smtputf8());
        assert!(!ReversePath::Null.needs_smtputf8());
        assert!(!MailAddress::parse("bob@b.test").unwrap().needs_smtputf8());
        // 32 two-octet letters are 64 octets (the RFC 5321 limit RFC 6531 keeps); 33 are over.
        assert!(MailAddress::parse(&format!("{}@b.test", "ö".repeat(32))).is_ok());
        let long = format!("{}@b.test", "ö".repeat(33));
        assert_eq!(MailAddress::parse(&long), Err(AddressError::TooLong));
        for bad in [
            "j\u{85}rg@b.test",
            "j\u{200b}rg@b.test",
            "gro\u{202e}j@b.test",
            "jörg@b.test\u{2029}",
            "jörg@b\u{feff}.test",
        ] {
            assert!(MailAddress::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn smuggling_and_routing_forms_are_refused() {
        use AddressError::*;
        let cases = [
            ("", Empty),
            ("bob", Shape),
            ("@b.test", SourceRoute),
            ("bob@", Shape),
            (
                "bob@b.test>\r\nRCPT TO:<carol@plain.test",
                ForbiddenCharacter,
            ),
            ("bob@b.test\nx", ForbiddenCharacter),
            ("bob smith@b.test", ForbiddenCharacter),
            ("<bob@b.test>", ForbiddenCharacter),
            ("@a.test:bob@b.test", SourceRoute),
            ("\"bob smith\"@b.test", ForbiddenCharacter),
            ("bob@[127.0.0.1]", ForbiddenCharacter),
            ("bob@@b.test", Shape),
            ("a@b@c.test", Shape),
            (".bob@b.test", BadDots),
            ("bo..b@b.test", BadDots),
            ("bob@b..test", BadDomain),
            ("bob@-b.test", BadDomain),
            ("bob@b.test.", BadDomain),
            ("bob@b\u{0}.test", ForbiddenCharacter),
            ("bob@b\u{2028}.test", ForbiddenCharacter),
        ];
        for (input, expected) in cases {
            assert_eq!(MailAddress::parse(input), Err(expected), "{input:?}");
        }
        let long = format!("{}@b.test", "x".repeat(65));
        assert_eq!(MailAddress::parse(&long), Err(TooLong));
    }

    #[test]
    fn domains_are_labels_only() {
        assert_eq!(Domain::parse("MX.B.test").unwrap().as_str(), "mx.b.test");
        for bad in [
            "",
            "mx.b.test\r\nMAIL FROM:<>",
            "mx b",
            "mx..b",
            "-mx.b",
            "[127.0.0.1]",
        ] {
            assert!(Domain::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percent_and_bang_are_flagged_as_routing() {
        assert!(
            MailAddress::parse("carol%plain.test@b.test")
                .unwrap()
                .has_routing_characters()
        );
        assert!(
            MailAddress::parse("plain.test!carol@b.test")
                .unwrap()
                .has_routing_characters()
        );
        assert!(
            !MailAddress::parse("carol@b.test")
                .unwrap()
                .has_routing_characters()
        );
    }

    #[test]
    fn the_null_reverse_path_displays_as_nothing() {
        assert_eq!(ReversePath::parse("").unwrap(), ReversePath::Null);
        assert_eq!(ReversePath::parse("<>").unwrap().to_string(), "");
        let p = ReversePath::parse("a@A.test").unwrap();
        assert_eq!(p.to_string(), "a@a.test");
        assert!(ReversePath::parse("a@a.test>\r\nDATA").is_err());
    }
}
