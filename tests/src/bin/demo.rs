//! The live demo: two toxmail nodes on one machine, bootstrapped only from each other on 127.0.0.1,
//! befriend each other and deliver a sealed 10 KB mail with an end-to-end "stored" ack.
//! (The two-site Postfix flow replaces this once the bridge exists.)

use std::time::{Duration, Instant};

use tox_runtime::swarm;
use toxmail_protocol::open;
use toxmail_tests::peers::{Peer, sealed_mail};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "toxmail demo: two nodes on loopback, data in {}",
        dir.path().display()
    );
    let alice = Peer::simple(&dir.path().join("alice")).await;
    let bob = Peer::simple(&dir.path().join("bob")).await;
    println!("  site A Tox ID: {}", alice.info.address);
    println!("  site B Tox ID: {}", bob.info.address);
    swarm::link(&[
        (alice.courier.node(), &alice.info),
        (bob.courier.node(), &bob.info),
    ])
    .await
    .expect("bootstrap on 127.0.0.1");

    let (letter, envelope) = sealed_mail(&alice.secret, &bob.public_key(), 10 * 1024);
    println!(
        "  A sealed a {} byte message into a {} byte envelope (id {})",
        letter.message.len(),
        envelope.len(),
        letter.message_id
    );
    let started = Instant::now();
    let delivery = alice
        .courier
        .deliver(bob.info.address, letter.message_id, envelope);
    match tokio::time::timeout(Duration::from_secs(120), delivery).await {
        Ok(Ok(())) => println!(
            "  B stored it and acknowledged after {:.1} s (friend request, connection, transfer)",
            started.elapsed().as_secs_f64()
        ),
        Ok(Err(e)) => {
            eprintln!("  delivery failed: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("  no delivery within 120 s");
            std::process::exit(1);
        }
    }
    let stored = std::fs::read(
        dir.path()
            .join("bob/inbox")
            .join(format!("{}.env", letter.message_id)),
    )
    .expect("B's stored envelope");
    let opened = open(&stored, &bob.secret).expect("B opens it");
    println!(
        "  B opened it: sender key {} verified, {} bytes, identical: {}",
        opened.sender,
        opened.letter.message.len(),
        opened.letter.message == letter.message
    );
    let subject = opened
        .letter
        .message
        .split(|b| *b == b'\n')
        .find(|l| l.starts_with(b"Subject:"));
    if let Some(s) = subject {
        println!("  {}", String::from_utf8_lossy(s).trim_end());
    }
    alice.task.shutdown().await;
    bob.task.shutdown().await;
}
