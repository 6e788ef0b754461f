//! Postfix socketmap server for transport_maps (socketmap_table(5), protocols.md §1): netstring
//! requests `NAME KEY` answered from the resolver, many per connection, one task per connection.
//! The netstring codec does no I/O and bounds every length.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::resolve::{Resolver, Route};

/// Longest request payload accepted (Postfix's own `socketmap_max_query_size`).
pub const MAX_REQUEST: usize = 10_000;
/// Longest reply payload sent: the transport value ends up in logs and bounces.
pub const MAX_REPLY: usize = 500;
/// A connection whose next request is not complete this long after the last answer is closed
/// (Postfix closes its own after 10 s idle, so this only reaps clients that vanished or drip).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once (Postfix keeps one per process that asks: trivial-rewrite, smtpd).
pub const MAX_CONNECTIONS: usize = 256;

/// How long a request may take to arrive, and how many connections are served at once; one
/// over the cap is closed at once (Postfix treats that as a temporary lookup failure).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: IDLE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}
/// Longest key that can be an address: a 64-byte local part, `@`, a 255-byte domain; longer
/// keys are answered "not found" without asking anyone.
pub const MAX_KEY: usize = 320;

const NOT_FOUND: &str = "NOTFOUND ";

/// Where the socketmap listens.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Why bytes are not a netstring. The connection is answered `PERM` and closed: the stream
/// cannot be resynchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetstringError {
    #[error("netstring length is not a decimal number")]
    NotDigits,
    #[error("netstring length has a leading zero")]
    LeadingZero,
    #[error("request longer than {max} bytes")]
    TooLong { max: usize },
    #[error("netstring does not end with a comma")]
    MissingComma,
}

/// Decodes the netstring at the start of `buf`: `Ok(None)` while incomplete, else its payload
/// and the number of bytes it took. Payloads over `max` bytes are refused from their length
/// alone, before they arrive.
pub fn decode_netstring(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, NetstringError> {
    let max_digits = max.to_string().len();
    let Some(colon) = buf.iter().position(|&b| b == b':') else {
        return match buf.iter().all(u8::is_ascii_digit) {
            false => Err(NetstringError::NotDigits),
            true if buf.len() > max_digits => Err(NetstringError::TooLong { max }),
            true => Ok(None),
        };
    };
    let digits = &buf[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(NetstringError::NotDigits);
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return Err(NetstringError::LeadingZero);
    }
    if digits.len() > max_digits {
        return Err(NetstringError::TooLong { max });
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(NetstringError::NotDigits)?;
    if len > max {
        return Err(NetstringError::TooLong { max });
    }
    let start = colon + 1;
    let end = start + len;
    match buf.get(end) {
        None => Ok(None),
        Some(b',') => Ok(Some((&buf[start..end], end + 1))),
        Some(_) => Err(NetstringError::MissingComma),
    }
}

pub fn encode_netstring(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{}:", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.push(b',');
    out
}

/// The reply payload for a route: what Postfix will do with the recipient.
pub fn reply_for(route: &Route, lmtp_nexthop: &str) -> String {
    let reply = match route {
        Route::Tox { .. } => format!("OK {lmtp_nexthop}"),
        Route::Local | Route::NotTox => NOT_FOUND.to_string(),
        Route::Invalid(reason) => format!("OK error:5.1.3 {reason}"),
        Route::TempFail(reason) => format!("OK retry:4.4.3 {reason}"),
    };
    sanitise(&reply)
}

/// One line of printable ASCII of at most [`MAX_REPLY`] bytes; anything else becomes `?`.
fn sanitise(reply: &str) -> String {
    reply
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(MAX_REPLY)
        .collect()
}

/// What every connection shares.
#[derive(Debug)]
struct Map {
    name: String,
    resolver: Arc<Resolver>,
    lmtp_nexthop: String,
    limits: Limits,
    slots: Arc<Semaphore>,
}

/// The `result` label of a reply payload this module built.
fn result_of(reply: &str) -> &'static str {
    if reply.starts_with("OK error:") {
        "invalid"
    } else if reply.starts_with("OK retry:") {
        "temp"
    } else if reply.starts_with("OK ") {
        "tox"
    } else if reply.starts_with("PERM") {
        "perm"
    } else {
        "notfound"
    }
}

impl Map {
    /// The reply payload for one request payload `NAME SP KEY`, counted and timed.
    async fn answer(&self, request: &[u8]) -> String {
        let started = std::time::Instant::now();
        let reply = self.route(request).await;
        crate::metrics::SOCKETMAP_SECONDS.observe(started.elapsed().as_secs_f64());
        crate::metrics::SOCKETMAP_LOOKUPS
            .with_label_values(&[result_of(&reply)])
            .inc();
        reply
    }

    async fn route(&self, request: &[u8]) -> String {
        let Some(space) = request.iter().position(|&b| b == b' ') else {
            return "PERM malformed request, expected NAME KEY".into();
        };
        let (name, key) = (&request[..space], &request[space + 1..]);
        if name != self.name.as_bytes() {
            return "PERM unknown map".into();
        }
        // `*` gates every transport lookup in Postfix: answer it at once, never from DNS.
        if key == b"*" || key.is_empty() || key.len() > MAX_KEY {
            return NOT_FOUND.into();
        }
        let Ok(key) = std::str::from_utf8(key) else {
            return NOT_FOUND.into();
        };
        let route = self.resolver.resolve(key).await;
        tracing::debug!(key, %route, "socketmap lookup");
        reply_for(&route, &self.lmtp_nexthop)
    }
}

/// Answers socketmap requests for `map_name` until `shutdown`, then waits for open connections
/// to finish their current request.
pub async fn serve(
    listener: Listener,
    map_name: String,
    resolver: Arc<Resolver>,
    lmtp_nexthop: String,
    shutdown: CancellationToken,
) {
    let names = (map_name, lmtp_nexthop);
    serve_with(listener, names, resolver, Limits::default(), shutdown).await
}

/// [`serve`] with explicit limits; `names` are the map name and the LMTP nexthop.
pub async fn serve_with(
    listener: Listener,
    (map_name, lmtp_nexthop): (String, String),
    resolver: Arc<Resolver>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let map = Arc::new(Map {
        name: map_name,
        resolver,
        lmtp_nexthop,
        limits,
        slots: Arc::new(Semaphore::new(limits.max_connections)),
    });
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener, &map, &shutdown, &tracker) => accepted,
        };
        if let Err(e) = accepted {
            // Typically out of file descriptors: wait instead of spinning.
            tracing::warn!(error = %e, "socketmap accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tracker.close();
    tracker.wait().await;
}

async fn accept(
    listener: &Listener,
    map: &Arc<Map>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<()> {
    let (map, shutdown) = (map.clone(), shutdown.clone());
    let over_cap = || {
        let limit = map.limits.max_connections;
        tracing::warn!(limit, "socketmap connection closed: at the cap");
    };
    match listener {
        Listener::Tcp(listener) => {
            let (stream, peer) = listener.accept().await?;
            let Ok(slot) = map.slots.clone().try_acquire_owned() else {
                over_cap();
                return Ok(()); // dropping the stream closes it
            };
            let _ = stream.set_nodelay(true);
            tracing::debug!(%peer, "socketmap connection");
            tracker.spawn(session(stream, map, shutdown, slot));
        }
        Listener::Unix(listener) => {
            let (stream, _) = listener.accept().await?;
            let Ok(slot) = map.slots.clone().try_acquire_owned() else {
                over_cap();
                return Ok(());
            };
            tracker.spawn(session(stream, map, shutdown, slot));
        }
    }
    Ok(())
}

/// One connection: answers each complete request in order, pipelined ones included.
async fn session<S>(
    mut stream: S,
    map: Arc<Map>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    // The next request must be whole by then, however its bytes trickle in.
    let mut deadline = Instant::now() + map.limits.request_timeout;
    loop {
        let mut out = Vec::new();
        let mut close = false;
        loop {
            match decode_netstring(&buf, MAX_REQUEST) {
                Ok(Some((request, used))) => {
                    let reply = map.answer(request).await;
                    out.extend_from_slice(&encode_netstring(reply.as_bytes()));
                    buf.drain(..used);
                    deadline = Instant::now() + map.limits.request_timeout;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(error = %e, "socketmap client sent a bad netstring; closing");
                    out.extend_from_slice(&encode_netstring(format!("PERM {e}").as_bytes()));
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
        let read = tokio::select! {
            _ = shutdown.cancelled() => return,
            read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => read,
        };
        match read {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return, // idle, EOF or error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toxmail_protocol::{PublicKey, ToxId};

    #[test]
    fn decodes_complete_and_waits_for_incomplete_netstrings() {
        assert_eq!(
            decode_netstring(b"11:transport *,", 100),
            Ok(Some((&b"transport *"[..], 15)))
        );
        assert_eq!(decode_netstring(b"0:,rest", 100), Ok(Some((&b""[..], 3))));
        assert_eq!(
            decode_netstring(b"3:abc,4:defg,", 100),
            Ok(Some((&b"abc"[..], 6)))
        );
        for partial in [
            &b""[..],
            b"1",
            b"11",
            b"11:",
            b"11:transport",
            b"11:transport *",
        ] {
            assert_eq!(decode_netstring(partial, 100), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn refuses_malformed_netstrings() {
        use NetstringError::*;
        let cases: [(&[u8], NetstringError); 9] = [
            (b":abc,", NotDigits),
            (b"a:bc,", NotDigits),
            (b"1a", NotDigits),
            (b"-1:a,", NotDigits),
            (b"01:a,", LeadingZero),
            (b"00:,", LeadingZero),
            (b"3:abcd", MissingComma),
            (b"101:", TooLong { max: 100 }),
            (b"1000", TooLong { max: 100 }),
        ];
        for (input, expected) in cases {
            assert_eq!(decode_netstring(input, 100), Err(expected), "{input:?}");
        }
        assert_eq!(
            decode_netstring(b"10001:", MAX_REQUEST),
            Err(TooLong { max: MAX_REQUEST })
        );
        assert_eq!(decode_netstring(b"10000:", MAX_REQUEST), Ok(None));
    }

    #[test]
    fn encodes_netstrings() {
        assert_eq!(encode_netstring(b"NOTFOUND "), b"9:NOTFOUND ,");
        assert_eq!(encode_netstring(b""), b"0:,");
    }

    #[test]
    fn routes_map_to_postfix_replies() {
        let hop = "lmtp:inet:[127.0.0.1]:2424";
        let peer = ToxId::new(PublicKey([1; 32]), 1);
        let source = crate::resolve::RouteSource::Dns;
        let table = [
            (
                Route::Tox {
                    peer,
                    source,
                    relays: Vec::new(),
                },
                "OK lmtp:inet:[127.0.0.1]:2424",
            ),
            (Route::Local, "NOTFOUND "),
            (Route::NotTox, "NOTFOUND "),
            (Route::Invalid("bad".into()), "OK error:5.1.3 bad"),
            (Route::TempFail("later".into()), "OK retry:4.4.3 later"),
        ];
        for (route, expected) in table {
            assert_eq!(reply_for(&route, hop), expected, "{route:?}");
        }
    }

    #[test]
    fn replies_are_counted_by_their_kind() {
        let nexthop = "lmtp:inet:[127.0.0.1]:2424";
        assert_eq!(result_of(&reply_for(&Route::NotTox, nexthop)), "notfound");
        let invalid = Route::Invalid("bad".into());
        assert_eq!(result_of(&reply_for(&invalid, nexthop)), "invalid");
        let temp = Route::TempFail("later".into());
        assert_eq!(result_of(&reply_for(&temp, nexthop)), "temp");
        assert_eq!(result_of("PERM unknown map"), "perm");
        assert_eq!(result_of(&format!("OK {nexthop}")), "tox");
    }

    #[test]
    fn replies_are_one_short_printable_line() {
        let reply = reply_for(&Route::Invalid("a\r\nb\u{e9}\0c".into()), "");
        assert_eq!(reply, "OK error:5.1.3 a??b??c");
        let long = reply_for(&Route::TempFail("x".repeat(2000)), "");
        assert_eq!(long.len(), MAX_REPLY);
        assert!(long.starts_with("OK retry:4.4.3 xxx"));
    }
}
