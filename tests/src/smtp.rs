//! A tiny SMTP client for tests, hand-written on purpose: one transaction per connection, no
//! pipelining, no TLS, no timeouts (wrap calls in `tokio::time::timeout`). It records the reply
//! to MAIL, to each RCPT and to the end of DATA so scenarios can assert 250 / 451 / 550. Also a
//! blocking wait for a server's greeting, used while harness services start.

use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

/// Longest reply line accepted; a server sending more is broken for our purposes.
const MAX_LINE: usize = 4096;

/// One (possibly multi-line) server reply; `text` joins the lines with `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// What the server answered in one transaction. `rcpt` is empty when MAIL was refused; `data` is
/// `None` when no RCPT was accepted, else the refusal of DATA or the reply after the final dot.
#[derive(Clone, Debug)]
pub struct SmtpOutcome {
    pub greeting: Reply,
    pub mail: Reply,
    pub rcpt: Vec<Reply>,
    pub data: Option<Reply>,
}

impl SmtpOutcome {
    /// The server took responsibility for the message (for the accepted recipients).
    pub fn accepted(&self) -> bool {
        self.data
            .as_ref()
            .is_some_and(|r| (200..300).contains(&r.code))
    }

    pub fn rcpt_codes(&self) -> Vec<u16> {
        self.rcpt.iter().map(|r| r.code).collect()
    }
}

/// Sends `message` (LF or CRLF line endings) from `from` to every address in `to`.
/// An error means the conversation broke or the server refused the greeting or EHLO.
pub async fn send(
    addr: SocketAddr,
    from: &str,
    to: &[&str],
    message: &[u8],
) -> Result<SmtpOutcome, std::io::Error> {
    let to: Vec<(&str, &str)> = to.iter().map(|rcpt| (*rcpt, "")).collect();
    send_with_params(addr, (from, ""), &to, message).await
}

/// Like [`send`], with ESMTP parameters after each path (`""` for none), e.g. `RET=HDRS` on MAIL
/// and `NOTIFY=SUCCESS` on RCPT. Test input only: the parameters are sent as given.
pub async fn send_with_params(
    addr: SocketAddr,
    (from, mail_params): (&str, &str),
    to: &[(&str, &str)],
    message: &[u8],
) -> Result<SmtpOutcome, std::io::Error> {
    let with = |line: String, params: &str| match params {
        "" => line,
        params => format!("{line} {params}"),
    };
    let (read, mut write) = TcpStream::connect(addr).await?.into_split();
    let mut read = BufReader::new(read);
    let greeting = read_reply(&mut read).await?;
    expect_positive(&greeting, "greeting")?;
    let ehlo = command(&mut read, &mut write, "EHLO localhost").await?;
    expect_positive(&ehlo, "EHLO")?;
    let mail_line = with(format!("MAIL FROM:<{from}>"), mail_params);
    let mail = command(&mut read, &mut write, &mail_line).await?;
    let mut outcome = SmtpOutcome {
        greeting,
        mail,
        rcpt: Vec::new(),
        data: None,
    };
    if outcome.mail.is_positive() {
        for (rcpt, params) in to {
            let rcpt_line = with(format!("RCPT TO:<{rcpt}>"), params);
            let reply = command(&mut read, &mut write, &rcpt_line).await?;
            outcome.rcpt.push(reply);
        }
    }
    if outcome.rcpt.iter().any(Reply::is_positive) {
        let go_ahead = command(&mut read, &mut write, "DATA").await?;
        outcome.data = Some(if go_ahead.code == 354 {
            write.write_all(&dot_stuff(message)).await?;
            read_reply(&mut read).await?
        } else {
            go_ahead
        });
    }
    // The transaction is over; a server that hangs up instead of answering QUIT is fine.
    let _ = command(&mut read, &mut write, "QUIT").await;
    Ok(outcome)
}

/// A plain RFC 5322 message with Date and a fresh Message-ID; `body` may use LF or CRLF.
pub fn message(from: &str, to: &[&str], subject: &str, body: &str) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let domain = from.rsplit_once('@').map_or("toxmail.test", |(_, d)| d);
    let id = format!(
        "{}.{}.{}.{}@{domain}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let headers = format!(
        "From: <{from}>\r\nTo: {}\r\nSubject: {subject}\r\nDate: {}\r\nMessage-ID: <{id}>\r\n\r\n",
        to.iter()
            .map(|t| format!("<{t}>"))
            .collect::<Vec<_>>()
            .join(", "),
        rfc5322_date(now.as_secs()),
    );
    let mut out = headers.into_bytes();
    for line in body.split_inclusive('\n') {
        out.extend_from_slice(line.trim_end_matches(['\r', '\n']).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Blocks until `addr` greets with a `220` line containing `token`. For harness start-up: the
/// token tells our server from another test's process on a reused port (reported as AddrInUse).
pub fn await_greeting(addr: SocketAddr, token: &str, timeout: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match read_greeting(addr) {
            Ok(line) if line.starts_with("220 ") && line.contains(token) => return Ok(()),
            Ok(line) => {
                let msg = format!("{addr} is someone else's: {line}");
                return Err(std::io::Error::new(ErrorKind::AddrInUse, msg));
            }
            Err(e) if Instant::now() > deadline => {
                let msg = format!("no greeting from {addr}: {e}");
                return Err(std::io::Error::new(ErrorKind::TimedOut, msg));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn read_greeting(addr: SocketAddr) -> std::io::Result<String> {
    use std::io::{BufRead, Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    if std::io::BufReader::new(&stream)
        .take(512)
        .read_line(&mut line)?
        == 0
    {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let _ = stream.write_all(b"QUIT\r\n");
    Ok(line.trim_end().to_string())
}

/// The DATA payload: CRLF line endings, a dot doubled at the start of a line, and the final dot.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40 + 5);
    let body = message.strip_suffix(b"\n").unwrap_or(message);
    if !message.is_empty() {
        for line in body.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.starts_with(b".") {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

async fn command(
    read: &mut BufReader<OwnedReadHalf>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    line: &str,
) -> std::io::Result<Reply> {
    write.write_all(format!("{line}\r\n").as_bytes()).await?;
    read_reply(read).await
}

/// Reads `NNN-text` lines up to the final `NNN text` line.
async fn read_reply(read: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Reply> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = (&mut *read)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(bad_reply("connection closed or reply line too long", &line));
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let code = text.get(..3).and_then(|c| c.parse::<u16>().ok());
        let code = code.ok_or_else(|| bad_reply("no reply code", &line))?;
        let last = text.as_bytes().get(3) != Some(&b'-');
        lines.push(text.get(4..).unwrap_or("").to_string());
        if last {
            return Ok(Reply {
                code,
                text: lines.join("\n"),
            });
        }
    }
}

fn bad_reply(what: &str, line: &[u8]) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{what}: {:?}", String::from_utf8_lossy(line)),
    )
}

fn expect_positive(reply: &Reply, step: &str) -> std::io::Result<()> {
    if (200..300).contains(&reply.code) {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("{step} refused: {reply}")))
    }
}

/// `Tue, 14 Nov 2023 22:13:20 +0000` for seconds since the Unix epoch (UTC).
fn rfc5322_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Gregorian (year, month 1..=12, day) of a day count since 1970-01-01, counting in 400-year eras
/// of 146 097 days whose years start on 1 March (so the leap day is the last day of a year).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuff_doubles_leading_dots_and_ends_with_a_dot_line() {
        assert_eq!(
            dot_stuff(b".a\n..b\nc.\n.\n"),
            b"..a\r\n...b\r\nc.\r\n..\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"x\r\ny"), b"x\r\ny\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn rfc5322_date_formats_known_instants() {
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_700_000_000),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn message_has_headers_and_crlf_body() {
        let m = message("a@x.test", &["b@y.test"], "hi", "one\ntwo\n");
        let text = String::from_utf8(m).unwrap();
        assert!(text.starts_with("From: <a@x.test>\r\nTo: <b@y.test>\r\nSubject: hi\r\n"));
        assert!(text.contains("\r\nMessage-ID: <") && text.contains("@x.test>\r\n"));
        assert!(text.ends_with("\r\n\r\none\r\ntwo\r\n"));
    }
}
