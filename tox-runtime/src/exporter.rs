//! The HTTP listener both daemons serve for operators (`[metrics] listen`, loopback by default):
//! `/metrics` in Prometheus' text format, `/healthz` (the process answers) and `/readyz` (the
//! daemon's own readiness check: database reachable, a Tox node connected), `/status` (what the
//! `status` command shows of the running daemon: its nodes' connections). Requests are bounded
//! in number, header size and time; nothing but GET/HEAD on those three paths is served.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ToxCollector, register_build_info};
use crate::transfer::Courier;

/// At most this many scrapes and probes at once; more wait in the accept backlog.
const MAX_CONNECTIONS: usize = 16;
/// A connection, keep-alive included, is closed after this long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the daemon is not ready, in words for the operator.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The live part of `status` (identities' connections and friends), as plain text lines.
pub type StatusText = Arc<dyn Fn() -> String + Send + Sync>;

/// What the listener serves: the process-wide default registry (counters declared as statics),
/// the run's own registry (collectors tied to this run's nodes), and the readiness check.
#[derive(Clone)]
pub struct Exporter {
    pub registry: Registry,
    pub ready: Readiness,
    pub status: StatusText,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

impl Exporter {
    /// The exporter of a daemon running `nodes`: their Tox families and `toxmail_build_info`
    /// in the run's registry; ready when `database_up()` and at least one node is connected;
    /// `/status` from `status`.
    pub fn for_nodes(
        daemon: &str,
        version: &str,
        nodes: Vec<Courier>,
        database_up: fn() -> bool,
        status: StatusText,
    ) -> Exporter {
        let registry = Registry::new();
        let tox = ToxCollector::default();
        for node in &nodes {
            tox.watch(node.clone());
        }
        registry.register(Box::new(tox)).expect("a fresh registry");
        register_build_info(&registry, daemon, version);
        let ready = move || {
            if !database_up() {
                return Err("database unreachable".to_string());
            }
            if !nodes
                .iter()
                .any(|n| n.node().stats().connection().is_online())
            {
                return Err("no Tox node is connected".to_string());
            }
            Ok(())
        };
        Exporter {
            registry,
            ready: Arc::new(ready),
            status,
        }
    }

    /// The text exposition of every metric of this process.
    pub fn render(&self) -> Vec<u8> {
        let mut families = prometheus::gather();
        families.extend(self.registry.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        // Encoding into a Vec fails only on a family without metrics, which gather() drops.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
        }
        match req.uri().path() {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.render(),
            ),
            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
            "/status" => reply(StatusCode::OK, "text/plain", (self.status)()),
            "/readyz" => match (self.ready)() {
                Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n"),
                Err(why) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {why}\n"),
                ),
            },
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

/// Binds `[metrics] listen` (`host:port`); `None` when it is "", the listener turned off.
pub async fn bind(listen: &str) -> std::io::Result<Option<TcpListener>> {
    if listen.is_empty() {
        return Ok(None);
    }
    TcpListener::bind(listen).await.map(Some)
}

/// Serves `exporter` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, exporter: Exporter, shutdown: CancellationToken) {
    let exporter = Arc::new(exporter);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = exporter.respond(&req);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(16 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(slot);
        });
    }
}

/// What the `status` commands read from a running daemon: the body of `GET /status` on its
/// metrics listener (our own endpoint on loopback; a plain HTTP/1.0 exchange, no client library).
pub async fn fetch_status(addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET /status HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.take(1 << 20).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 5 s"))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let line = head.lines().next().unwrap_or_default();
        return Err(std::io::Error::other(format!("answered {line}")));
    }
    Ok(body.to_string())
}
