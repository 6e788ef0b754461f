//! Relay benchmark (prints figures; not a test). On loopback, with a real `toxmail-relay` and its
//! own PostgreSQL: a recipient registers and goes offline; a depositor deposits N envelopes at
//! once (deposit rate: first Deposit to last Custody); the recipient comes back and the relay
//! hands them all on (drain rate: the recipient's connection to the relay to the last envelope
//! stored, each deleted at the relay after its ack).
//! Hand-on memory (issue 12): 100 × 10 MiB held for one recipient, written into the relay's
//! `held` table directly (depositing 1 GiB over Tox would take as long again as handing it on;
//! the relay reads nothing of it until the recipient comes online), then the recipient comes
//! back: the relay's peak RSS (VmHWM) and the time until all are handed on and deleted.
//! Usage: toxmail-relay-bench [rates|handon]   (default both; builds nothing: run
//! scripts/bench.sh relay, or build release bins)

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tox_runtime::transfer::PeerEvent;
use toxmail_protocol::{MessageId, SecretKey, public_key_of};
use toxmail_tests::bootstrapd::{BootstrapDaemon, free_udp_port};
use toxmail_tests::peers::loopback_own_ports as opts;
use toxmail_tests::peers::{Peer, now, sealed_mail};
use toxmail_tests::relay::RelayProcess;

const CONNECT: Duration = Duration::from_secs(90);
const POLICY: &str =
    "daily_count = 1000000\ndaily_bytes = 100000000000\nrecipient_bytes = 100000000000";

struct Figures {
    deposit: Duration,
    drain: Duration,
}

async fn round(count: usize, size: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(dir.path()).unwrap();
    let relay = RelayProcess::start(&dir.path().join("r"), &boot.node, POLICY);
    let (a_port, b_port) = (free_udp_port(), free_udp_port());
    let b_dir = dir.path().join("b");
    let b = Peer::start(&b_dir, opts(&boot.node, b_port), Duration::ZERO).await;
    relay.register(&b.courier, CONNECT).await;
    let b_key = b.public_key();
    b.task.shutdown().await;

    let a = Peer::start(
        &dir.path().join("a"),
        opts(&boot.node, a_port),
        Duration::ZERO,
    )
    .await;
    // First contact (friend request and connection) is not part of the rate: one small deposit.
    let (warm, env) = sealed_mail(&a.secret, &b_key, 1000);
    let first = a
        .courier
        .deposit(relay.address(), warm.message_id, env, now() + 3600);
    tokio::time::timeout(CONNECT, first).await.unwrap().unwrap();
    let mails: Vec<_> = (0..count)
        .map(|_| sealed_mail(&a.secret, &b_key, size))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (letter, envelope) in mails {
        let courier = a.courier.clone();
        let r = relay.address();
        set.spawn(async move {
            courier
                .deposit(r, letter.message_id, envelope, now() + 3600)
                .await
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap().expect("custody");
    }
    let deposit = start.elapsed();
    assert_eq!(relay.held().await, count as i64 + 1);
    a.task.shutdown().await;

    let b = Peer::start(&b_dir, opts(&boot.node, b_port), Duration::ZERO).await;
    let mut events = b.courier.subscribe();
    b.courier
        .add_relay(relay.address().public_key())
        .await
        .unwrap();
    let r_key = relay.address().public_key();
    let online = async {
        while let Some(e) = events.recv().await {
            if e == PeerEvent::Online(r_key) {
                return Instant::now();
            }
        }
        panic!("events ended");
    };
    let online_at = tokio::time::timeout(CONNECT, online).await.unwrap();
    while b.inbox.count() < count + 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = online_at.elapsed();
    while relay.held().await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.task.shutdown().await;
    Figures { deposit, drain }
}

/// The relay's peak resident set so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Holds `count` envelopes of `size` bytes for an offline recipient (written into the relay's
/// store) and brings the recipient back: the relay's peak RSS (KiB) and
/// the time from the recipient's connection to the relay to the last envelope deleted there.
async fn hand_on_memory(count: usize, size: usize) -> (u64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let boot = BootstrapDaemon::start(dir.path()).unwrap();
    let relay = RelayProcess::start(&dir.path().join("r"), &boot.node, POLICY);
    let b_port = free_udp_port();
    let b_dir = dir.path().join("b");
    let b = Peer::start(&b_dir, opts(&boot.node, b_port), Duration::ZERO).await;
    relay.register(&b.courier, CONNECT).await;
    let b_key = b.public_key();
    b.task.shutdown().await;

    // A depositor's key (any 32 random bytes make one); the recipient trusts the relay to hand
    // on envelopes sealed by others.
    let depositor = SecretKey::from(MessageId::random().0);
    let (client, conn) = tokio_postgres::connect(&relay.pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..count {
        let (letter, envelope) = sealed_mail(&depositor, &b_key, size);
        client
            .execute(
                "INSERT INTO held (message_id, recipient, depositor, envelope, size, expires_at)
                 VALUES ($1, $2, $3, $4, $5, now() + interval '1 day')",
                &[
                    &letter.message_id.0.as_slice(),
                    &b_key.0.as_slice(),
                    &public_key_of(&depositor).0.as_slice(),
                    &&envelope[..],
                    &(envelope.len() as i64),
                ],
            )
            .await
            .unwrap();
    }
    assert_eq!(relay.held().await, count as i64);
    let pid = relay.pid().unwrap();
    let started_kib = peak_rss_kib(pid);

    let b = Peer::start(&b_dir, opts(&boot.node, b_port), Duration::ZERO).await;
    let mut events = b.courier.subscribe();
    let r_key = relay.address().public_key();
    b.courier.add_relay(r_key).await.unwrap();
    let online = async {
        while let Some(e) = events.recv().await {
            if e == PeerEvent::Online(r_key) {
                return Instant::now();
            }
        }
        panic!("events ended");
    };
    let online_at = tokio::time::timeout(CONNECT, online).await.unwrap();
    while relay.held().await > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = online_at.elapsed();
    let peak = peak_rss_kib(pid);
    assert_eq!(b.inbox.count(), count, "each handed on once");
    println!("relay peak RSS before the hand-on: {started_kib} KiB");
    b.task.shutdown().await;
    (peak, took)
}

async fn rates() {
    println!("relay benchmark: deposit N envelopes at once, then drain them to the recipient");
    println!(
        "| envelope | count | deposit envelopes/s | deposit MB/s | drain envelopes/s | drain MB/s |"
    );
    println!("|---|---|---|---|---|---|");
    for (size, count) in [(10 * 1024, 200), (1024 * 1024, 10)] {
        let f = round(count, size).await;
        let mb = (size * count) as f64 / 1e6;
        let (dep, dra) = (f.deposit.as_secs_f64(), f.drain.as_secs_f64());
        println!(
            "| {} KB | {count} | {:.1} | {:.2} | {:.1} | {:.2} |",
            size / 1024,
            count as f64 / dep,
            mb / dep,
            count as f64 / dra,
            mb / dra
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let what = std::env::args().nth(1).unwrap_or_default();
    if what != "handon" {
        rates().await;
    }
    if what != "rates" {
        let (count, size) = (100, 10 << 20);
        println!("relay hand-on: {count} × 10 MiB held for one recipient, who comes online");
        let (peak_kib, took) = hand_on_memory(count, size).await;
        let mb = (count * size) as f64 / 1e6;
        println!("| held | relay peak RSS (VmHWM) | hand-on time | MB/s |");
        println!("|---|---|---|---|");
        println!(
            "| {count} × 10 MiB | {:.1} MB | {:.1} s | {:.2} |",
            peak_kib as f64 * 1024.0 / 1e6,
            took.as_secs_f64(),
            mb / took.as_secs_f64()
        );
    }
}
