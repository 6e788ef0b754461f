//! A minimal SMTP/LMTP client for handing received mail to the local MTA on loopback (and for
//! asking it whether a mailbox exists). Hand-written: lettre could send, but it parses and
//! rewrites the message, and we must pass the bytes through untouched with our own envelope.
//! Commands are built only from [`ReversePath`] and [`MailAddress`], which cannot hold CR, LF,
//! `<` or `>`: no address a peer sealed can add a command of its own (SMTP smuggling).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use crate::address::{MailAddress, ReversePath};
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
}

impl SmtpError {
    /// 5xx is permanent; everything else (4xx, network) is worth retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(self, SmtpError::Rejected { code, .. } if *code >= 500)
    }
}

struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: OwnedWriteHalf,
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
        };
        conn.expect(220).await?;
        let hello = if hop.lmtp { "LHLO" } else { "EHLO" };
        conn.command(&format!("{hello} {hostname}"), 250).await?;
        Ok(conn)
    }

    async fn reply(&mut self) -> Result<(u16, String), SmtpError> {
        let mut text = String::new();
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
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
            text.push(' ');
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

    async fn command(&mut self, line: &str, class: u16) -> Result<(), SmtpError> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.expect(class).await
    }

    async fn quit(mut self) {
        let _ = self.writer.write_all(b"QUIT\r\n").await;
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
    let mut conn = Conn::open(hop, hostname).await?;
    conn.command(&format!("MAIL FROM:<{sender}>"), 250).await?;
    conn.command(&format!("RCPT TO:<{recipient}>"), 250).await?;
    conn.command("DATA", 354).await?;
    conn.writer.write_all(&dot_stuff(message)).await?;
    conn.expect(250).await?; // LMTP: one reply for our one recipient
    conn.quit().await;
    Ok(())
}

/// Asks the next hop whether it takes mail for `recipient` (RCPT without DATA).
pub async fn probe(
    hop: &NextHop,
    hostname: &str,
    recipient: &MailAddress,
) -> Result<(), SmtpError> {
    let mut conn = Conn::open(hop, hostname).await?;
    conn.command("MAIL FROM:<>", 250).await?;
    let result = conn.command(&format!("RCPT TO:<{recipient}>"), 250).await;
    let _ = conn.command("RSET", 250).await;
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
