//! Drives one connection: reads bytes, frames them with the codec, hands lines and bodies to the
//! session and writes its replies. Replies are buffered and flushed before every blocking read,
//! so pipelined commands get their answers in order and in as few writes as possible.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::codec::{Body, BodyDecoder, Line, LineFramer};
use super::command;
use super::session::{Outcome, Session};
use super::{Intake, LmtpConfig};
use crate::reply::Reply;

/// Bytes read per call; also the most a body may overshoot the size limit in memory.
const READ_CHUNK: usize = 64 * 1024;

/// Why the connection ends without a QUIT.
enum Stop {
    Eof,
    Timeout,
    Shutdown,
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

/// The byte pipes of one connection.
struct Wire<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    idle: Duration,
    /// When the current wait must end: the current command's or transaction's deadline.
    deadline: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    fn input(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
    }

    fn push(&mut self, reply: &Reply) {
        self.out.extend_from_slice(reply.render().as_bytes());
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.out.is_empty() {
            return Ok(());
        }
        let by = self.deadline.min(Instant::now() + self.idle);
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        timeout_at(by, write).await.map_err(|_| Stop::Timeout)??;
        self.out.clear();
        Ok(())
    }

    /// Flushes replies, then waits for input; `shutdown` ends the wait when given.
    async fn fill(&mut self, shutdown: Option<&CancellationToken>) -> Result<(), Stop> {
        self.flush().await?;
        let read = timeout_at(self.deadline, self.stream.read(&mut self.buf));
        let read = match shutdown {
            Some(token) => tokio::select! {
                biased;
                _ = token.cancelled() => return Err(Stop::Shutdown),
                r = read => r,
            },
            None => read.await,
        };
        match read.map_err(|_| Stop::Timeout)?? {
            0 => Err(Stop::Eof),
            n => {
                (self.start, self.end) = (0, n);
                Ok(())
            }
        }
    }
}

/// Runs the session on `stream` until QUIT, EOF, error, idle timeout or shutdown.
pub async fn drive<S, I>(
    stream: S,
    config: Arc<LmtpConfig>,
    intake: Arc<I>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    I: Intake,
{
    let mut wire = Wire {
        stream,
        buf: vec![0; READ_CHUNK],
        start: 0,
        end: 0,
        out: Vec::new(),
        idle: config.idle_timeout,
        deadline: Instant::now() + config.idle_timeout,
    };
    let limits = Limits {
        max_line: config.max_line,
        max_message_size: config.max_message_size,
        idle: config.idle_timeout,
        transaction: config.transaction_timeout,
    };
    let mut session = Session::new(config, intake);
    wire.push(&session.greeting());
    let result = converse(&mut wire, &mut session, limits, &shutdown).await;
    let last = match result {
        Ok(()) => None,
        Err(Stop::Timeout) => Some(session.on_idle_timeout()),
        Err(Stop::Shutdown) => Some(session.on_shutdown()),
        Err(Stop::Eof) => {
            debug!("client closed the connection");
            None
        }
        Err(Stop::Io(e)) => {
            info!(error = %e, "connection failed");
            None
        }
    };
    if let Some(reply) = last {
        wire.push(&reply);
    }
    // Best effort: the peer may already be gone.
    let _ = wire.flush().await;
    let _ = wire.stream.shutdown().await;
}

/// Sizes and times one connection is held to.
struct Limits {
    max_line: usize,
    max_message_size: u64,
    idle: Duration,
    transaction: Duration,
}

async fn converse<S, I>(
    wire: &mut Wire<S>,
    session: &mut Session<I>,
    limits: Limits,
    shutdown: &CancellationToken,
) -> Result<(), Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: Intake,
{
    let mut framer = LineFramer::new(limits.max_line);
    // Set at MAIL, cleared when the transaction ends: bounds it as a whole.
    let mut transaction_ends: Option<Instant> = None;
    loop {
        if wire.input().is_empty() {
            wire.fill(Some(shutdown)).await?;
        }
        let (n, line) = framer.decode(wire.input());
        wire.consume(n);
        let outcome = match line {
            Line::Incomplete => continue,
            Line::TooLong => Outcome::Reply(session.on_line_too_long()),
            Line::Complete(line) => session.on_command(command::parse(&line)).await,
        };
        // The next command gets `idle` from now, never past the transaction's end.
        transaction_ends = match (session.in_transaction(), transaction_ends) {
            (false, _) => None,
            (true, None) => Some(Instant::now() + limits.transaction),
            (true, ends) => ends,
        };
        let next = Instant::now() + limits.idle;
        wire.deadline = transaction_ends.map_or(next, |ends| ends.min(next));
        match outcome {
            Outcome::Reply(reply) => wire.push(&reply),
            Outcome::Close(reply) => {
                wire.push(&reply);
                return Ok(());
            }
            Outcome::StartData(reply) => {
                wire.push(&reply);
                // The body may take as long as the transaction has left, not `idle` per read.
                wire.deadline = transaction_ends.unwrap_or_else(|| Instant::now() + limits.idle);
                let body = read_body(wire, limits.max_message_size).await?;
                for reply in session.on_body(body).await {
                    wire.push(&reply);
                }
                transaction_ends = None;
                wire.deadline = Instant::now() + limits.idle;
            }
        }
    }
}

/// Reads up to the final dot. Shutdown does not interrupt a body: it is finished and answered.
async fn read_body<S>(wire: &mut Wire<S>, limit: u64) -> Result<Body, Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut decoder = BodyDecoder::new(limit);
    loop {
        if wire.input().is_empty() {
            wire.fill(None).await?;
        }
        let (n, body) = decoder.decode(wire.input());
        wire.consume(n);
        if let Some(body) = body {
            return Ok(body);
        }
    }
}
