//! Recipient addresses as Postfix sends them, reduced to the one form every table is keyed by,
//! and the `<76 hex digits>@tox` form that names a Tox ID directly.

use toxmail_protocol::ToxId;

/// The pseudo-domain of addresses whose local part is a Tox ID.
pub const TOX_DOMAIN: &str = "tox";

/// The canonical key of a recipient: `local@domain`, both lower-case, the extension removed.
///
/// - Surrounding `<>` are removed (one pair, both or neither).
/// - Postfix socketmap keys are not case-folded (protocols.md §1), so this does it: the domain
///   because DNS is case-insensitive, and the local part too, as Postfix does for local delivery
///   and as every address book does in practice. `Alice@B.test` and `alice@b.test` are one person.
/// - `delimiter` is Postfix's `recipient_delimiter`: every character of it is a delimiter and the
///   extension starts at the first one (`alice+tag@b.test` → `alice@b.test`). A local part that
///   starts with a delimiter is kept whole, so that no empty local part results. Postfix's
///   `owner-foo`/`foo-request` exception for `-` is not copied.
/// - One trailing dot of the domain is dropped.
/// - SMTPUTF8 (RFC 6531): a UTF-8 local part is put in Unicode NFC (RFC 6532 §3.1 asks senders
///   for it; a decomposed `jo\u{308}rg` is the same mailbox as `jörg`) and lower-cased by the
///   Unicode rules, a policy choice like the ASCII lower-casing. An internationalised domain is
///   keyed by its U-labels after UTS 46 mapping ([`canonical_domain`]): `xn--bcher-kva.test`
///   and `BÜCHER.test` are both `bücher.test`.
///
/// `None` for no `@`, an empty local part or domain, or any whitespace or control character:
/// such a key cannot be a deliverable address.
pub fn normalise(address: &str, delimiter: Option<&str>) -> Option<String> {
    let inner = match (address.strip_prefix('<'), address.ends_with('>')) {
        (Some(rest), true) => &rest[..rest.len() - 1],
        (None, false) => address,
        _ => return None,
    };
    if inner.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    // Split at the last `@`: a quoted local part may contain one, a domain never does.
    let (local, domain) = inner.rsplit_once('@')?;
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let local = match delimiter {
        Some(set) if !set.is_empty() => match local.find(|c| set.contains(c)) {
            Some(at) if at > 0 => &local[..at],
            _ => local,
        },
        _ => local,
    };
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    let local = if local.is_ascii() {
        local.to_lowercase()
    } else {
        use unicode_normalization::UnicodeNormalization;
        local.nfc().collect::<String>().to_lowercase()
    };
    Some(format!("{local}@{}", canonical_domain(domain)?))
}

/// A domain as keys hold it: lower-case ASCII as before for plain ASCII names, and for an
/// internationalised one (non-ASCII, or an `xn--` A-label) its U-labels after UTS 46 mapping
/// (case folding, NFC). `None` when the IDN is invalid (a bad A-label, disallowed characters).
pub fn canonical_domain(domain: &str) -> Option<String> {
    let lower = domain.to_ascii_lowercase();
    if lower.is_ascii() && !lower.split('.').any(|l| l.starts_with("xn--")) {
        return Some(lower);
    }
    let (unicode, result) = idna::domain_to_unicode(domain);
    result.ok().map(|()| unicode)
}

/// The A-label (ASCII, `xn--`) form of a canonical domain, for DNS; `None` when it has none.
pub fn ascii_domain(domain: &str) -> Option<String> {
    if domain.is_ascii() {
        return Some(domain.to_string());
    }
    idna::domain_to_ascii(domain).ok()
}

/// What a normalised address says about a Tox ID in its local part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToxAddress {
    /// Not in the `tox` pseudo-domain.
    NotTox,
    /// `<76 hex>@tox` with a valid checksum.
    Id(ToxId),
    /// In the `tox` pseudo-domain but not a valid Tox ID; the text says why.
    Malformed(String),
}

/// Classifies an address already passed through [`normalise`].
pub fn parse_tox_address(normalised: &str) -> ToxAddress {
    let Some((local, domain)) = normalised.rsplit_once('@') else {
        return ToxAddress::NotTox;
    };
    if domain != TOX_DOMAIN {
        return ToxAddress::NotTox;
    }
    match local.parse::<ToxId>() {
        Ok(id) => ToxAddress::Id(id),
        Err(toxmail_protocol::IdError::Checksum) => {
            ToxAddress::Malformed("Tox ID has a bad checksum (mistyped?)".into())
        }
        Err(_) => ToxAddress::Malformed(
            "malformed Tox address: the local part must be a 76-digit hex Tox ID".into(),
        ),
    }
}

/// True when a raw key, even one [`normalise`] rejects, is addressed to the `tox` pseudo-domain:
/// such keys are refused permanently instead of being handed to ordinary mail.
pub fn is_raw_tox_address(address: &str) -> bool {
    let trimmed = address.trim().trim_start_matches('<').trim_end_matches('>');
    trimmed.rsplit_once('@').is_some_and(|(_, domain)| {
        domain
            .trim_end_matches('.')
            .eq_ignore_ascii_case(TOX_DOMAIN)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use toxmail_protocol::PublicKey;

    #[test]
    fn utf8_local_parts_and_idn_domains_have_one_key() {
        let want = Some("jörg@bücher.test".to_string());
        for input in [
            "jörg@bücher.test",
            "JÖRG@BÜCHER.test",
            "jo\u{308}rg@xn--bcher-kva.test",
            "jörg+tag@XN--BCHER-KVA.test.",
        ] {
            assert_eq!(normalise(input, Some("+")), want, "{input:?}");
        }
        assert_eq!(normalise("a@xn--zz.test", None), None, "bad A-label");
        assert_eq!(
            ascii_domain("bücher.test").as_deref(),
            Some("xn--bcher-kva.test")
        );
        assert_eq!(ascii_domain("b.test").as_deref(), Some("b.test"));
    }

    #[test]
    fn normalise_lowercases_strips_brackets_extension_and_trailing_dot() {
        let cases = [
            ("alice@b.test", None, Some("alice@b.test")),
            ("Alice@B.Test", None, Some("alice@b.test")),
            ("<alice@b.test>", None, Some("alice@b.test")),
            ("alice+tag@B.test.", Some("+"), Some("alice@b.test")),
            ("alice-tag+x@b.test", Some("+-"), Some("alice@b.test")),
            ("alice+tag@b.test", None, Some("alice+tag@b.test")),
            ("alice+tag@b.test", Some(""), Some("alice+tag@b.test")),
            ("+alice@b.test", Some("+"), Some("+alice@b.test")),
            ("alice+@b.test", Some("+"), Some("alice@b.test")),
            ("\"a@b\"@c.test", None, Some("\"a@b\"@c.test")),
            ("ÉLODIE@b.test", None, Some("élodie@b.test")),
        ];
        for (input, delimiter, expected) in cases {
            assert_eq!(
                normalise(input, delimiter).as_deref(),
                expected,
                "{input:?} {delimiter:?}"
            );
        }
    }

    #[test]
    fn normalise_rejects_what_cannot_be_an_address() {
        for input in [
            "",
            "alice",
            "@b.test",
            "alice@",
            "alice@.",
            "<alice@b.test",
            "alice@b.test>",
            "al ice@b.test",
            " alice@b.test",
            "alice@b.test\n",
            "alice\t@b.test",
            "*",
        ] {
            assert_eq!(normalise(input, Some("+")), None, "{input:?}");
        }
    }

    #[test]
    fn tox_addresses_are_checked() {
        let id = ToxId::new(PublicKey([7; 32]), 42);
        let good = format!("{}@tox", id.to_string().to_lowercase());
        assert_eq!(parse_tox_address(&good), ToxAddress::Id(id));
        assert_eq!(parse_tox_address("alice@b.test"), ToxAddress::NotTox);
        assert_eq!(parse_tox_address("alice@tox.b.test"), ToxAddress::NotTox);

        let mut bad = good.clone().into_bytes();
        bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
        let bad = String::from_utf8(bad).unwrap();
        assert!(
            matches!(parse_tox_address(&bad), ToxAddress::Malformed(r) if r.contains("checksum"))
        );
        assert!(matches!(
            parse_tox_address("alice@tox"),
            ToxAddress::Malformed(r) if r.contains("76-digit")
        ));
    }

    #[test]
    fn raw_tox_addresses_are_recognised_before_normalising() {
        assert!(is_raw_tox_address("@tox"));
        assert!(is_raw_tox_address("a b@TOX"));
        assert!(is_raw_tox_address("<x@tox.>"));
        assert!(!is_raw_tox_address("x@tox.b.test"));
        assert!(!is_raw_tox_address("tox"));
    }
}
