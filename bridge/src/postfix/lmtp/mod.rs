//! LMTP server (RFC 2033) where Postfix hands over Tox-bound mail: accept loops for TCP and UNIX
//! sockets. `connection` moves bytes, `codec` frames them, `command` parses lines, `session`
//! decides every reply and calls the [`Intake`] at RCPT and after the final dot.

mod codec;
mod command;
mod connection;
mod session;

/// What the fuzz targets in bridge/fuzz drive: the parser, the codec and a whole connection.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use super::codec::{Body, BodyDecoder, Line, LineFramer};
    pub use super::command::{Command, XAttr, parse};
    pub use super::connection::drive;
}

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::dsn_request::{MailDsn, RcptDsn};
use crate::reply::{Failure, Reply};

/// Limits and names of the LMTP server.
#[derive(Clone, Debug)]
pub struct LmtpConfig {
    /// Named in the greeting and the LHLO reply.
    pub hostname: String,
    /// Announced as SIZE; bigger bodies are read to the end and refused with 552 5.3.4.
    pub max_message_size: u64,
    /// Accepted recipients per transaction; more get 452 4.5.3 (RFC 5321 asks for at least 100).
    pub max_recipients: usize,
    /// Longest command line in bytes, without CRLF.
    pub max_line: usize,
    /// Each command must arrive whole within this long after the previous reply (a client
    /// dripping bytes gets no more time than a silent one); then 421 4.4.2 and close.
    pub idle_timeout: Duration,
    /// A transaction (MAIL to the replies after the final dot) must finish within this long.
    pub transaction_timeout: Duration,
    /// Connections served at once; one more is told 421 4.3.2 and closed.
    pub max_connections: usize,
}

impl Default for LmtpConfig {
    fn default() -> Self {
        LmtpConfig {
            hostname: "localhost".into(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 100,
            max_line: 4096,
            idle_timeout: Duration::from_secs(300),
            transaction_timeout: Duration::from_secs(600),
            max_connections: 64,
        }
    }
}

/// One message with the recipients accepted at RCPT.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    /// "" for the null reverse-path `<>`.
    pub mail_from: String,
    /// In RCPT order; a recipient given twice appears twice.
    pub recipients: Vec<String>,
    /// The message, dot-unstuffed, with its line ends as received.
    pub data: Vec<u8>,
    /// XFORWARD IDENT: the Postfix queue id, when Postfix sent it.
    pub ident: Option<String>,
    /// RET and ENVID of MAIL (RFC 3461).
    pub dsn: MailDsn,
    /// NOTIFY and ORCPT of each recipient, in the order of `recipients` (missing entries mean
    /// none were given).
    pub recipient_dsn: Vec<RcptDsn>,

    /// MAIL's SMTPUTF8 and BODY=, sealed with each copy.
    pub extensions: toxmail_protocol::Extensions,
}

/// Shows the size of the message, never its content.
impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("mail_from", &self.mail_from)
            .field("recipients", &self.recipients)
            .field("data_len", &self.data.len())
            .field("ident", &self.ident)
            .field("dsn", &self.dsn)
            .field("recipient_dsn", &self.recipient_dsn)
            .finish()
    }
}

/// What the LMTP server hands mail to.
pub trait Intake: Send + Sync + 'static {
    /// At RCPT: accept (Ok) or refuse this recipient with a Failure.
    fn check_recipient(
        &self,
        mail_from: &str,
        rcpt: &str,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// After the final ".": commit the message for every accepted recipient and return one Reply
    /// per recipient, in order (250 only once durably committed).
    fn deliver(&self, tx: Transaction) -> impl Future<Output = Vec<Reply>> + Send;
}

/// A bound socket to serve on.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Serves LMTP until `shutdown`: then stops accepting, closes idle sessions with 421, lets a
/// session inside DATA read, deliver and answer its message, and returns when all have ended.
pub async fn serve<I: Intake>(
    listener: Listener,
    config: LmtpConfig,
    intake: Arc<I>,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let sessions = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning on the error.
                warn!(error = %e, "LMTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let span = info_span!("lmtp", session = next_id, %peer);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            warn!(limit = config.max_connections, %peer, "LMTP connection refused: at the cap");
            sessions.spawn(refuse(stream));
            continue;
        };
        let run = (config.clone(), intake.clone(), shutdown.clone());
        match stream {
            Stream::Tcp(s) => spawn(&sessions, s, run, slot, span),
            Stream::Unix(s) => spawn(&sessions, s, run, slot, span),
        }
    }
    drop(listener);
    sessions.close();
    info!(
        open = sessions.len(),
        "LMTP listener closed, waiting for sessions"
    );
    sessions.wait().await;
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Stream, String)> {
    Ok(match listener {
        Listener::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            (Stream::Tcp(s), addr.to_string())
        }
        Listener::Unix(l) => (Stream::Unix(l.accept().await?.0), "unix".to_string()),
    })
}

fn spawn<S, I>(
    sessions: &TaskTracker,
    stream: S,
    (config, intake, shutdown): (Arc<LmtpConfig>, Arc<I>, CancellationToken),
    slot: OwnedSemaphorePermit,
    span: tracing::Span,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Intake,
{
    let session = async move {
        connection::drive(stream, config, intake, shutdown).await;
        drop(slot);
    };
    sessions.spawn(session.instrument(span));
}

/// Tells a connection over the cap to come back later, without reading from it.
async fn refuse(stream: Stream) {
    let reply = Failure::TooManyConnections.reply().render();
    let write = async {
        match stream {
            Stream::Tcp(mut s) => s.write_all(reply.as_bytes()).await,
            Stream::Unix(mut s) => s.write_all(reply.as_bytes()).await,
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}
