//! Issue 13 item 5: a delivery retried through Postfix's stock `lmtp` transport, which sends no
//! XFORWARD (so no queue id for the bridge to key on), is queued once and delivered once. A proxy
//! between Postfix and the bridge drops the first connection right after the bridge's reply to
//! the final dot: the bridge has committed, Postfix saw a lost connection and retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use toxmail_bridge::intake::DERIVED_KEY_PREFIX;
use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::site::Site;
use toxmail_tests::wait_for;

use crate::postfix_flow::spec;
use crate::postfix_recovery::{poll, query_strings, send};

/// Counts what went through; the first connection whose client sent a final dot is cut before
/// the reply to it reaches the client.
#[derive(Default)]
struct Cuts {
    armed: AtomicBool,
    cut: AtomicUsize,
    dots: AtomicUsize,
    xforward: AtomicBool,
}

/// Forwards each connection on `listener` to `target`.
async fn proxy(listener: TcpListener, target: std::net::SocketAddr, cuts: Arc<Cuts>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(target).await else {
            continue;
        };
        tokio::spawn(relay(client, server, cuts.clone()));
    }
}

async fn relay(client: TcpStream, server: TcpStream, cuts: Arc<Cuts>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let dot_sent = Arc::new(AtomicBool::new(false));
    let sent = dot_sent.clone();
    let counts = cuts.clone();
    let upstream = async move {
        let (mut buf, mut seen) = (vec![0; 64 * 1024], Vec::new());
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            seen.extend_from_slice(&buf[..n]);
            // Marked before the bytes go on, so the reply cannot overtake the mark.
            if !sent.load(Ordering::SeqCst) && contains(&seen, b"\r\n.\r\n") {
                sent.store(true, Ordering::SeqCst);
                counts.dots.fetch_add(1, Ordering::SeqCst);
            }
            // The command, not the word: a command line starts the stream or follows a CRLF.
            if seen.starts_with(b"XFORWARD") || contains(&seen, b"\nXFORWARD") {
                counts.xforward.store(true, Ordering::SeqCst);
            }
            if server_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_tx.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if dot_sent.load(Ordering::SeqCst) && cuts.armed.swap(false, Ordering::SeqCst) {
                cuts.cut.fetch_add(1, Ordering::SeqCst);
                return; // drops both halves toward Postfix with the reply unsent
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_tx.shutdown().await;
    };
    // A cut ends both directions: the client's socket closes with the downstream half.
    tokio::select! {
        () = downstream => {}
        () = async { upstream.await; std::future::pending::<()>().await } => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_delivery_through_stock_lmtp_is_queued_once() {
    toxmail_tests::init_logging();
    let root = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(root.path()).unwrap();
    let mut b = Site::prepare(root.path(), spec("site-b", "b.test", &["bob"]), &boot.node);
    b.start_bridge();
    let bob_id = b.identities["bob@b.test"].to_string();

    // Site A's socketmap routes Tox mail to Postfix's stock `lmtp` service (XFORWARD off, its
    // default, as on Zimbra) through the proxy.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let mut a_spec = spec("site-a", "a.test", &["alice"]);
    a_spec.socketmap_nexthop = Some(format!("lmtp:inet:[127.0.0.1]:{}", proxy_addr.port()));
    let mut a = Site::prepare(root.path(), a_spec, &boot.node);
    a.admin(&["contact", "add", "bob@b.test", &bob_id]).unwrap();
    let cuts = Arc::new(Cuts::default());
    cuts.armed.store(true, Ordering::SeqCst);
    tokio::spawn(proxy(listener, a.lmtp, cuts.clone()));
    a.start_bridge();

    send(&a, "bob@b.test", "sent twice, queued once").await;
    // The first attempt: the bridge commits, Postfix loses the connection before the 250 and
    // defers the message.
    let deferred = poll(Duration::from_secs(60), || async {
        cuts.cut.load(Ordering::SeqCst) == 1 && a.postfix.maillog().contains("status=deferred")
    });
    assert!(
        deferred.await,
        "{}\n{}",
        a.postfix.maillog(),
        a.bridge_log()
    );
    // The retry, now rather than after Postfix's backoff: the bridge answers 250 again.
    a.postfix.flush();
    let retried = poll(Duration::from_secs(60), || async {
        cuts.dots.load(Ordering::SeqCst) >= 2 && a.postfix.queue_ids().is_empty()
    });
    assert!(retried.await, "{}\n{}", a.postfix.maillog(), a.bridge_log());
    let sent = a.postfix.maillog().matches("status=sent").count();
    assert_eq!(
        sent,
        1,
        "Postfix delivered on its retry:\n{}",
        a.postfix.maillog()
    );

    assert!(
        !cuts.xforward.load(Ordering::SeqCst),
        "Postfix sent XFORWARD"
    );
    // One row, keyed by the message itself (no queue id came with it).
    let keys = query_strings(&a, "SELECT idem_key FROM outbound").await;
    assert_eq!(keys.len(), 1, "queued once: {keys:?}\n{}", a.bridge_log());
    assert!(keys[0].starts_with(DERIVED_KEY_PREFIX), "{keys:?}");
    let arrived = wait_for(Duration::from_secs(90), || {
        b.postfix.maildir_messages("bob").len() == 1
    });
    assert!(
        arrived.await,
        "A:\n{}\nB:\n{}",
        a.bridge_log(),
        b.bridge_log()
    );
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(b.postfix.maildir_messages("bob").len(), 1, "delivered once");
    let states = query_strings(&a, "SELECT state FROM outbound").await;
    assert_eq!(states, ["delivered"]);
}
