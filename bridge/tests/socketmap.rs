//! The socketmap server over real TCP (and a UNIX socket), with a real resolver asking dnsmasq:
//! netstring conversations as Postfix has them, and Postfix's own `postmap` when installed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use toxmail_bridge::postfix::socketmap::{
    Limits, Listener, decode_netstring, encode_netstring, serve, serve_with,
};
use toxmail_bridge::resolve::{Directory, Resolver, ResolverConfig};
use toxmail_protocol::{PublicKey, ToxId};
use toxmail_tests::dns::{DnsOptions, DnsServer};

const NEXTHOP: &str = "lmtp:inet:[127.0.0.1]:2424";
const HIT: &str = "OK lmtp:inet:[127.0.0.1]:2424";

fn id(n: u8) -> ToxId {
    ToxId::new(PublicKey([n; 32]), u32::from(n))
}

/// A running `serve` with its resolver and DNS server.
struct Map {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    _dns: DnsServer,
}

fn resolver(dns: &DnsServer) -> Arc<Resolver> {
    let resolver = Resolver::new(ResolverConfig {
        dns_domains: vec!["b.test".into(), "down.test".into()],
        nameservers: vec![dns.addr()],
        recipient_delimiter: Some("+".into()),
        dns_wait: Duration::from_secs(5),
        ..ResolverConfig::default()
    });
    resolver.set_directory(Directory {
        contacts: HashMap::new(),
        local: HashSet::from(["me@b.test".to_string()]),
    });
    Arc::new(resolver)
}

fn start_dns() -> DnsServer {
    let records = [
        ("alice._tox.b.test", vec![format!("v=tox1;id={}", id(1))]),
        ("me._tox.b.test", vec![format!("v=tox1;id={}", id(2))]),
        ("junk._tox.b.test", vec!["not a tox record".to_string()]),
    ];
    let options = DnsOptions {
        refused_domains: vec!["down.test".into()],
        ..DnsOptions::default()
    };
    DnsServer::start_with(&records, &options).expect("dnsmasq (package dnsmasq-base)")
}

async fn start_map() -> Map {
    let dns = start_dns();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        Listener::Tcp(listener),
        "transport".into(),
        resolver(&dns),
        NEXTHOP.into(),
        shutdown.clone(),
    ));
    Map {
        addr,
        shutdown,
        task,
        _dns: dns,
    }
}

/// One socketmap client connection, reading replies incrementally.
struct Client<S> {
    stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    async fn connect(map: &Map) -> Self {
        let stream = TcpStream::connect(map.addr).await.unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next reply, or `None` once the server has closed the connection.
    async fn reply(&mut self) -> Option<String> {
        loop {
            if let Some((payload, used)) = decode_netstring(&self.buf, 100_000).unwrap() {
                let reply = String::from_utf8(payload.to_vec()).unwrap();
                self.buf.drain(..used);
                return Some(reply);
            }
            let mut chunk = [0u8; 1024];
            let read = self.stream.read(&mut chunk);
            let n = tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .unwrap()
                .ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn ask(&mut self, request: &str) -> String {
        self.send_raw(&encode_netstring(request.as_bytes())).await;
        self.reply().await.expect("a reply")
    }
}

#[tokio::test]
async fn wildcard_is_not_found_at_once() {
    let map = start_map().await;
    let mut client = Client::connect(&map).await;
    let started = Instant::now();
    client.send_raw(b"11:transport *,").await;
    assert_eq!(client.reply().await.as_deref(), Some("NOTFOUND "));
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn tox_recipients_get_the_lmtp_nexthop() {
    let map = start_map().await;
    let mut client = Client::connect(&map).await;
    assert_eq!(client.ask("transport alice@b.test").await, HIT);
    assert_eq!(client.ask("transport Alice+list@B.test").await, HIT);
    assert_eq!(client.ask(&format!("transport {}@tox", id(3))).await, HIT);
}

#[tokio::test]
async fn misses_and_local_identities_are_not_found() {
    let map = start_map().await;
    let mut client = Client::connect(&map).await;
    for key in [
        "nobody@b.test",
        "someone@example.org",
        "me@b.test",
        "no-at-sign",
    ] {
        let reply = client.ask(&format!("transport {key}")).await;
        assert_eq!(reply, "NOTFOUND ", "{key}");
    }
    // Keys longer than any address are not looked up at all.
    let long = format!("transport {}@b.test", "a".repeat(400));
    assert_eq!(client.ask(&long).await, "NOTFOUND ");
}

#[tokio::test]
async fn bad_recipients_bounce_and_dns_failures_retry() {
    let map = start_map().await;
    let mut client = Client::connect(&map).await;
    let reply = client.ask("transport bob@tox").await;
    assert!(reply.starts_with("OK error:5.1.3 "), "{reply}");
    let reply = client.ask("transport junk@b.test").await;
    assert!(reply.starts_with("OK error:5.1.3 garbage TXT"), "{reply}");
    let reply = client.ask("transport alice@down.test").await;
    assert!(reply.starts_with("OK retry:4.4.3 "), "{reply}");
    assert!(reply.bytes().all(|b| (0x20..0x7f).contains(&b)) && reply.len() <= 500);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let map = start_map().await;
    let mut client = Client::connect(&map).await;
    let mut batch = Vec::new();
    for request in [
        "transport alice@b.test",
        "transport *",
        "transport nobody@b.test",
    ] {
        batch.extend_from_slice(&encode_netstring(request.as_bytes()));
    }
    // Split mid-netstring too: the parser must wait for the rest.
    let (first, rest) = batch.split_at(7);
    client.send_raw(first).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.send_raw(rest).await;
    assert_eq!(client.reply().await.as_deref(), Some(HIT));
    assert_eq!(client.reply().await.as_deref(), Some("NOTFOUND "));
    assert_eq!(client.reply().await.as_deref(), Some("NOTFOUND "));
    // The connection stays open for more.
    assert_eq!(client.ask("transport alice@b.test").await, HIT);
}

#[tokio::test]
async fn malformed_netstrings_get_perm_and_close_the_connection() {
    let map = start_map().await;
    for bad in [&b"01:x,"[..], b"abc:", b"3:abcd", b"10001:", b"99999999999"] {
        let mut client = Client::connect(&map).await;
        client.send_raw(bad).await;
        let reply = client.reply().await.unwrap_or_default();
        assert!(reply.starts_with("PERM "), "{bad:?}: {reply}");
        assert_eq!(client.reply().await, None, "{bad:?}: still open");
    }
}

#[tokio::test]
async fn unknown_map_name_is_perm_and_the_connection_stays_open() {
    let map = start_map().await;
    let mut client = Client::connect(&map).await;
    assert_eq!(client.ask("virtual alice@b.test").await, "PERM unknown map");
    assert!(client.ask("transport").await.starts_with("PERM "));
    assert_eq!(client.ask("transport alice@b.test").await, HIT);
}

#[tokio::test]
async fn unix_socket_listener_serves_too() {
    let dns = start_dns();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("socketmap");
    let listener = UnixListener::bind(&path).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(
        Listener::Unix(listener),
        "transport".into(),
        resolver(&dns),
        NEXTHOP.into(),
        shutdown.clone(),
    ));
    let stream = UnixStream::connect(&path).await.unwrap();
    let mut client = Client {
        stream,
        buf: Vec::new(),
    };
    assert_eq!(client.ask("transport alice@b.test").await, HIT);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

/// Issue 8: a client dripping a request byte by byte is closed once the request is late, and
/// connections over the cap are closed at once; a freed slot serves again.
#[tokio::test]
async fn dripping_clients_are_closed_at_the_deadline_and_connections_are_capped() {
    let dns = start_dns();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let limits = Limits {
        request_timeout: Duration::from_millis(1500),
        max_connections: 2,
    };
    let names = ("transport".to_string(), NEXTHOP.to_string());
    let task = tokio::spawn(serve_with(
        Listener::Tcp(listener),
        names,
        resolver(&dns),
        limits,
        shutdown.clone(),
    ));
    let map = Map {
        addr,
        shutdown,
        task,
        _dns: dns,
    };
    let mut drip = TcpStream::connect(addr).await.unwrap();
    let request = encode_netstring(b"transport alice@b.test");
    let dripping = async {
        for b in request.iter().cycle() {
            if drip.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // The request would take 2.3 s: the connection ends before it (else this times out).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        dripping.await;
    });
    let _ = closed.await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), drip.read_to_end(&mut rest)).await;
    assert!(matches!(n, Ok(Ok(_)) | Ok(Err(_))), "closed by the server");
    assert!(rest.is_empty(), "no answer to a late request: {rest:?}");

    let mut first = Client::connect(&map).await;
    assert_eq!(first.ask("transport alice@b.test").await, HIT);
    let mut second = Client::connect(&map).await;
    assert_eq!(second.ask("transport alice@b.test").await, HIT);
    let mut third = Client::connect(&map).await;
    third.stream.write_all(&request).await.ok();
    assert_eq!(third.reply().await, None, "over the cap: closed unanswered");
    // The slot is freed once the server has seen the client go: ask until it serves again.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = Client::connect(&map).await;
        again.send_raw(&request).await;
        if let Some(reply) = again.reply().await {
            assert_eq!(reply, HIT);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed slot never served again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let map = start_map().await;
    let mut client = Client::connect(&map).await;
    assert_eq!(client.ask("transport *").await, "NOTFOUND ");
    map.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), map.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.reply().await, None);
}

/// Postfix's own client: `postmap -q KEY socketmap:inet:127.0.0.1:PORT:transport`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postmap_queries_the_socketmap() {
    let Ok(postmap) = which("postmap") else {
        println!("SKIPPED: postmap not installed (Debian package postfix)");
        return;
    };
    let map = start_map().await;
    // Its own (empty) main.cf: the machine's Postfix may be unconfigured.
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("main.cf"), "compatibility_level = 3.6\n").unwrap();
    let table = format!("socketmap:inet:{}:transport", map.addr);
    let query = |key: &'static str| {
        let mut command = tokio::process::Command::new(&postmap);
        command.arg("-c").arg(config.path());
        command.arg("-q").arg(key).arg(&table);
        async move { command.output().await.unwrap() }
    };
    let hit = query("alice@b.test").await;
    assert!(hit.status.success(), "{hit:?}");
    assert_eq!(String::from_utf8_lossy(&hit.stdout).trim_end(), NEXTHOP);
    let miss = query("nobody@b.test").await;
    assert_eq!(miss.status.code(), Some(1), "not found: {miss:?}");
    let bounce = query("bob@tox").await;
    let text = String::from_utf8_lossy(&bounce.stdout);
    assert!(text.starts_with("error:5.1.3 "), "{bounce:?}");
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    dirs.map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(())
}
