//! A minimal SMTP/LMTP client for handing received mail to the local MTA on loopback (and for
//! asking it whether a mailbox exists). Hand-written: lettre could send, but it parses and
//! rewrites the message, and we must pass the bytes through untouched with our own envelope.
//! Commands are built only from [`ReversePath`] and [`MailAddress`], which cannot hold CR, LF,
//! `<` or `>`: no address a peer sealed can add a command of its own (SMTP smuggling).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use toxmail_protocol::{BodyType, DsnRequest, Extensions};

use crate::address::{Domain, MailAddress, ReversePath};
use crate::config::NextHop;

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REPLY_LINES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("next hop unreachable or broke off: {0}")]
    Io(#[from] std::io::Error),
    #[error("next hop timed out")]
    Timeout,
    #[error("next hop sent a malformed reply")]
    Malformed,
    #[error("next hop answered {code} {text}")]
    Rejected { code: u16, text: String },
    #[error("our own host name is not a domain (bridge.hostname)")]
    Hostname,
    /// The message needs an extension the next hop did not announce (SMTPUTF8, 8BITMIME), or
    /// one this client does not speak (BINARYMIME, which needs BDAT).
    #[error("next hop does not support {0}, which the message needs")]
    Unsupported(&'static str),
}

/// The commands this client sends. Each is rendered from validated parts only: no variant can
/// carry a CR, an LF, or a `<`/`>` that would end an address early.
enum Request<'a> {
    Hello { lmtp: bool, host: &'a Domain },
    MailFrom(&'a ReversePath, &'a Extensions),
    RcptTo(&'a MailAddress, &'a DsnRequest),
    Data,
    Rset,
    Quit,
}

impl Request<'_> {
    /// A fixed verb, at most one argument taken from a validated type, the fixed closing text
    /// and CRLF: no other text reaches the line.
    fn line(&self) -> String {
        let (verb, argument, close) = match self {
            Request::Hello { lmtp: true, host } => ("LHLO ", host.as_str(), ""),
            Request::Hello { lmtp: false, host } => ("EHLO ", host.as_str(), ""),
            Request::MailFrom(path, ext) => return crate::address::mail_from_line_with(path, ext),
            Request::RcptTo(address, dsn) => {
                return crate::address::rcpt_to_line_with(address, dsn);
            }
            Request::Data => ("DATA", "", ""),
            Request::Rset => ("RSET", "", ""),
            Request::Quit => ("QUIT", "", ""),
        };
        [verb, argument, close, "\r\n"].concat()
    }
}

impl SmtpError {
    /// 5xx is permanent, and BINARYMIME (never supported here); everything else (4xx, network,
    /// a next hop without SMTPUTF8 or 8BITMIME, which its operator may turn on) is worth
    /// retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SmtpError::Rejected { code, .. } if *code >= 500)
            || matches!(self, SmtpError::Unsupported("BINARYMIME"))
    }
}

struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// The EHLO/LHLO keywords the next hop announced, upper-case (`SMTPUTF8`, `8BITMIME`).
    keywords: Vec<String>,
}

impl Conn {
    async fn open(hop: &NextHop, hostname: &str) -> Result<Conn, SmtpError> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(hop.addr))
            .await
            .map_err(|_| SmtpError::Timeout)??;
        let (r, w) = stream.into_split();
        let mut conn = Conn {
            reader: BufReader::new(r),
            writer: w,
            keywords: Vec::new(),
        };
        conn.expect(220).await?;
        let host = Domain::parse(hostname).map_err(|_| SmtpError::Hostname)?;
        let hello = Request::Hello {
            lmtp: hop.lmtp,
            host: &host,
        };
        conn.writer.write_all(hello.line().as_bytes()).await?;
        let (code, lines) = conn.reply_lines().await?;
        if code / 100 != 2 {
            let text = lines.join(" ");
            return Err(SmtpError::Rejected { code, text });
        }
        // The first line is the greeting; each further line starts with a keyword.
        conn.keywords = lines
            .iter()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_ascii_uppercase)
            .collect();
        Ok(conn)
    }

    fn announced(&self, keyword: &str) -> bool {
        self.keywords.iter().any(|k| k == keyword)
    }

    /// The MAIL parameters for a message with `wanted` extensions from `sender` to `recipients`:
    /// SMTPUTF8 when it is asked for or an address is not ASCII, BODY= as sealed; each only if
    /// the next hop announced it, else `Unsupported`.
    fn mail_parameters(
        &self,
        wanted: &Extensions,
        sender: &ReversePath,
        recipient: &MailAddress,
    ) -> Result<Extensions, SmtpError> {
        let smtputf8 = wanted.smtputf8 || sender.needs_smtputf8() || recipient.needs_smtputf8();
        if smtputf8 && !self.announced("SMTPUTF8") {
            return Err(SmtpError::Unsupported("SMTPUTF8"));
        }
        match wanted.body {
            BodyType::SevenBit => {}
            BodyType::EightBitMime if self.announced("8BITMIME") => {}
            BodyType::EightBitMime => return Err(SmtpError::Unsupported("8BITMIME")),
            BodyType::BinaryMime => return Err(SmtpError::Unsupported("BINARYMIME")),
        }
        // The DSN parameters only to a next hop that announced DSN (RFC 3461 §4: a client
        // must not send them otherwise); without it the next hop reports as it always does.
        let dsn = if self.announced("DSN") {
            wanted.dsn.clone()
        } else {
            DsnRequest::default()
        };
        Ok(Extensions {
            smtputf8,
            body: wanted.body,
            dsn,
        })
    }

    async fn reply(&mut self) -> Result<(u16, String), SmtpError> {
        let (code, lines) = self.reply_lines().await?;
        Ok((code, lines.join(" ")))
    }

    /// One reply: its code and the text of each line.
    async fn reply_lines(&mut self) -> Result<(u16, Vec<String>), SmtpError> {
        let mut text = Vec::new();
        for _ in 0..MAX_REPLY_LINES {
            let mut line = String::new();
            let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
                .await
                .map_err(|_| SmtpError::Timeout)??;
            if n == 0 {
                return Err(SmtpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            let line = line.trim_end();
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or(SmtpError::Malformed)?;
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
        }
        Err(SmtpError::Malformed)
    }

    async fn expect(&mut self, class: u16) -> Result<(), SmtpError> {
        let (code, text) = self.reply().await?;
        if code / 100 == class / 100 {
            Ok(())
        } else {
            Err(SmtpError::Rejected { code, text })
        }
    }

    async fn command(&mut self, request: Request<'_>, class: u16) -> Result<(), SmtpError> {
        self.writer.write_all(request.line().as_bytes()).await?;
        self.expect(class).await
    }

    async fn quit(mut self) {
        let _ = self.writer.write_all(Request::Quit.line().as_bytes()).await;
    }
}

/// Delivers `message` from `sender` to one recipient; Ok once the next hop said 250.
pub async fn send(
    hop: &NextHop,
    hostname: &str,
    sender: &ReversePath,
    recipient: &MailAddress,
    message: &[u8],
) -> Result<(), SmtpError> {
    let plain = Extensions::default();
    send_with(hop, hostname, sender, recipient, message, &plain).await
}

/// [`send`], declaring SMTPUTF8 and BODY= as `extensions` ask (and SMTPUTF8 for a non-ASCII
/// address) when the next hop announced them; `Unsupported` before MAIL when it did not.
pub async fn send_with(
    hop: &NextHop,
    hostname: &str,
    sender: &ReversePath,
    recipient: &MailAddress,
    message: &[u8],
    extensions: &Extensions,
) -> Result<(), SmtpError> {
    let mut conn = Conn::open(hop, hostname).await?;
    let params = match conn.mail_parameters(extensions, sender, recipient) {
        Ok(params) => params,
        Err(e) => {
            conn.quit().await;
            return Err(e);
        }
    };
    conn.command(Request::MailFrom(sender, &params), 250)
        .await?;
    conn.command(Request::RcptTo(recipient, &params.dsn), 250)
        .await?;
    conn.command(Request::Data, 354).await?;
    conn.writer.write_all(&dot_stuff(message)).await?;
    conn.expect(250).await?; // LMTP: one reply for our one recipient
    conn.quit().await;
    Ok(())
}

/// The whole mailbox check, connection to QUIT, well under a sender's ack timeout (30 s): the
/// envelope waits for it before its ack, and a slow MTA must not make the sender offer again.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// Asks the next hop whether it takes mail for `recipient` (RCPT without DATA), within
/// `deadline` for the whole exchange (`Timeout` after it: a temporary answer).
pub async fn probe(
    hop: &NextHop,
    hostname: &str,
    recipient: &MailAddress,
    deadline: Duration,
) -> Result<(), SmtpError> {
    tokio::time::timeout(deadline, probe_unbounded(hop, hostname, recipient))
        .await
        .unwrap_or(Err(SmtpError::Timeout))
}

async fn probe_unbounded(
    hop: &NextHop,
    hostname: &str,
    recipient: &MailAddress,
) -> Result<(), SmtpError> {
    let mut conn = Conn::open(hop, hostname).await?;
    let params = conn.mail_parameters(&Extensions::default(), &ReversePath::Null, recipient)?;
    conn.command(Request::MailFrom(&ReversePath::Null, &params), 250)
        .await?;
    let result = conn
        .command(Request::RcptTo(recipient, &DsnRequest::default()), 250)
        .await;
    let _ = conn.command(Request::Rset, 250).await;
    conn.quit().await;
    result
}

/// Dot-stuffs the message, normalises bare LF to CRLF, and appends the final ".".
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    for line in message.split_inclusive(|b| *b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        match line.strip_suffix(b"\n") {
            Some(body) => {
                out.extend_from_slice(body.strip_suffix(b"\r").unwrap_or(body));
                out.extend_from_slice(b"\r\n");
            }
            None => {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_next_hop_that_never_answers_fails_the_probe_at_its_deadline_temporarily() {
        // Accepts the connection and never says a word, as a wedged MTA would.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hop = NextHop {
            lmtp: false,
            addr: silent.local_addr().unwrap(),
        };
        let held = tokio::spawn(async move { silent.accept().await });
        let to = MailAddress::parse("bob@b.test").unwrap();
        let deadline = Duration::from_millis(300);
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            probe(&hop, "mx.b.test", &to, deadline),
        )
        .await
        .expect("the probe ends at its own deadline, not at the per-read timeout");
        assert!(matches!(result, Err(SmtpError::Timeout)), "{result:?}");
        assert!(!result.unwrap_err().is_permanent());
        held.abort();
    }

    #[test]
    fn requests_render_one_line_from_validated_parts() {
        let host = Domain::parse("mx.b.test").unwrap();
        let from = ReversePath::parse("a@a.test").unwrap();
        let to = MailAddress::parse("bob@b.test").unwrap();
        let plain = Extensions::default();
        let both = Extensions {
            smtputf8: true,
            body: BodyType::EightBitMime,
            ..Default::default()
        };
        let lines = [
            Request::Hello {
                lmtp: true,
                host: &host,
            }
            .line(),
            Request::MailFrom(&from, &plain).line(),
            Request::MailFrom(&ReversePath::Null, &plain).line(),
            Request::RcptTo(&to, &plain.dsn).line(),
            Request::MailFrom(&from, &both).line(),
        ];
        assert_eq!(
            lines,
            [
                "LHLO mx.b.test\r\n",
                "MAIL FROM:<a@a.test>\r\n",
                "MAIL FROM:<>\r\n",
                "RCPT TO:<bob@b.test>\r\n",
                "MAIL FROM:<a@a.test> SMTPUTF8 BODY=8BITMIME\r\n",
            ]
        );
        assert!(lines.iter().all(|l| l.matches("\r\n").count() == 1));
    }

    /// The DSN request a peer sealed reaches MAIL and RCPT only in fixed keywords and xtext:
    /// a space, `+`, `=`, CR or LF in a value cannot end the parameter or the line.
    #[test]
    fn the_sealed_dsn_request_renders_as_parameters() {
        use toxmail_protocol::{DsnRequest, DsnRet, OrcptType};
        let from = ReversePath::parse("a@a.test").unwrap();
        let to = MailAddress::parse("bob@b.test").unwrap();
        let ext = Extensions {
            dsn: DsnRequest {
                notify: Some(DsnRequest::SUCCESS | DsnRequest::DELAY),
                orcpt: Some((OrcptType::Rfc822, "b+ob=x@b.test".into())),
                ret: Some(DsnRet::Hdrs),
                envid: Some("Q 1+2=3".into()),
            },
            ..Default::default()
        };
        assert_eq!(
            Request::MailFrom(&from, &ext).line(),
            "MAIL FROM:<a@a.test> RET=HDRS ENVID=Q+201+2B2+3D3\r\n"
        );
        assert_eq!(
            Request::RcptTo(&to, &ext.dsn).line(),
            "RCPT TO:<bob@b.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+2Bob+3Dx@b.test\r\n"
        );
        let utf8 = DsnRequest {
            notify: Some(DsnRequest::NEVER),
            orcpt: Some((OrcptType::Utf8, "j\\x{F6}rg@b.test".into())),
            ..Default::default()
        };
        assert_eq!(
            Request::RcptTo(&to, &utf8).line(),
            "RCPT TO:<bob@b.test> NOTIFY=NEVER ORCPT=utf-8;j\\x{F6}rg@b.test\r\n"
        );
        // Values no open would accept (the fields are public) still cannot break the line.
        let hostile = Extensions {
            dsn: DsnRequest {
                notify: Some(DsnRequest::NEVER | DsnRequest::FAILURE),
                orcpt: Some((OrcptType::Rfc822, "x\r\nDATA".into())),
                ret: None,
                envid: Some("e\r\nRSET".into()),
            },
            ..Default::default()
        };
        let lines = [
            Request::MailFrom(&from, &hostile).line(),
            Request::RcptTo(&to, &hostile.dsn).line(),
        ];
        assert_eq!(
            lines,
            [
                "MAIL FROM:<a@a.test> ENVID=e+0D+0ARSET\r\n",
                "RCPT TO:<bob@b.test> ORCPT=rfc822;x+0D+0ADATA\r\n",
            ]
        );
    }

    #[test]
    fn dot_stuffing_escapes_leading_dots_and_terminates() {
        assert_eq!(
            dot_stuff(b"a\r\n.b\r\n..c\r\n"),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b"lf only\n.\n"), b"lf only\r\n..\r\n.\r\n");
    }
}
