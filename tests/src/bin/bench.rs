//! Transport benchmark (prints figures; not a test). On loopback, in one run:
//! - friend connect time (friend request → both sides see the friend online);
//! - per-peer throughput of toxmail deliveries (offer, file transfer, spool, header check, inbox
//!   store, ack) for 1 MB and 20 MB envelopes, side by side with a plain c-toxcore file transfer of
//!   the same bytes driven by the same runtime, and their ratio.
//!
//! Seal/open speed is measured by `cargo bench -p toxmail-protocol`.
//! Usage: toxmail-bench [rounds]   (default 3; medians are printed)

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tox_runtime::{Event, Handle, Node, Options, swarm};
use toxmail_protocol::{PublicKey, friend_request_message};
use toxmail_tests::peers::{Peer, sealed_mail};

const IDLE: Duration = Duration::from_secs(2);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Receives plain files: accepts each at offset 0, reports the byte count when one completes.
fn plain_receiver(mut node: Node) -> (Handle, mpsc::UnboundedReceiver<u64>, Node) {
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let handle = node.handle.clone();
    let (_, dummy) = mpsc::unbounded_channel();
    let mut events = std::mem::replace(&mut node.events, dummy);
    let h = handle.clone();
    tokio::spawn(async move {
        let mut got = 0u64;
        while let Some(ev) = events.recv().await {
            match ev {
                Event::FriendRequest { public_key, .. } => {
                    let _ = h.friend_add_norequest(public_key).await;
                }
                Event::FileRecv { friend, file, .. } => {
                    got = 0;
                    let _ = h.file_accept(friend, file, 0).await;
                }
                Event::FileChunk { data, .. } if data.is_empty() => {
                    let _ = done_tx.send(got);
                }
                Event::FileChunk { data, .. } => got += data.len() as u64,
                _ => {}
            }
        }
    });
    (handle, done_rx, node)
}

async fn connect_seconds(
    a: &Handle,
    b_addr: toxmail_protocol::ToxId,
    b: &Handle,
    a_pk: PublicKey,
) -> f64 {
    let start = Instant::now();
    a.friend_add(b_addr, friend_request_message("bench"))
        .await
        .unwrap();
    assert!(swarm::wait_friend_online(a, &b_addr.public_key(), Duration::from_secs(120)).await);
    assert!(swarm::wait_friend_online(b, &a_pk, Duration::from_secs(120)).await);
    start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();

    // Plain pair: raw nodes; the receiver accepts files and counts bytes.
    let ps = Node::start(Options::loopback()).await.unwrap();
    let pr = Node::start(Options::loopback()).await.unwrap();
    swarm::link(&[(&ps.handle, &ps.info), (&pr.handle, &pr.info)])
        .await
        .unwrap();
    let (pr_handle, mut plain_done, pr_node) = plain_receiver(pr);
    let plain_connect = connect_seconds(
        &ps.handle,
        pr_node.info.address,
        &pr_handle,
        ps.info.public_key,
    )
    .await;
    let pr_friend = ps.handle.friends().await.unwrap()[0].friend;

    // toxmail pair.
    let a = Peer::simple(&dir.path().join("a")).await;
    let b = Peer::simple(&dir.path().join("b")).await;
    swarm::link(&[(a.courier.node(), &a.info), (b.courier.node(), &b.info)])
        .await
        .unwrap();
    let start = Instant::now();
    let (l, e) = sealed_mail(&a.secret, &b.public_key(), 1000);
    a.courier
        .deliver(b.info.address, l.message_id, e)
        .await
        .unwrap();
    let toxmail_first = start.elapsed().as_secs_f64();

    println!("friend connect (plain pair, request → both online): {plain_connect:.2} s");
    println!("first toxmail delivery incl. friend request and connect: {toxmail_first:.2} s");
    println!();
    println!("| envelope | plain c-toxcore file MB/s | toxmail delivery MB/s | ratio |");
    println!("|---|---|---|---|");
    for mb in [1usize, 20] {
        let (mut plain, mut ours) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (letter, envelope) = sealed_mail(&a.secret, &b.public_key(), mb * 1000 * 1000);
            let size = envelope.len() as f64;

            tokio::time::sleep(IDLE).await;
            let data: Arc<[u8]> = envelope.to_vec().into();
            let t = Instant::now();
            ps.handle
                .file_send(pr_friend, rand_id(), data, b"bench".to_vec())
                .await
                .unwrap();
            let got = plain_done.recv().await.unwrap();
            assert_eq!(got as f64, size);
            plain.push(size / t.elapsed().as_secs_f64() / 1e6);

            tokio::time::sleep(IDLE).await;
            let t = Instant::now();
            a.courier
                .deliver(b.public_key(), letter.message_id, envelope)
                .await
                .unwrap();
            ours.push(size / t.elapsed().as_secs_f64() / 1e6);
        }
        let (p, o) = (median(plain), median(ours));
        println!("| {mb} MB | {p:.2} | {o:.2} | {:.2} |", o / p);
    }
    a.task.shutdown().await;
    b.task.shutdown().await;
    ps.shutdown().await;
    pr_node.shutdown().await;
}

fn rand_id() -> [u8; 32] {
    toxmail_protocol::MessageId::random().0
}
