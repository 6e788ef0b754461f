//! Bridge benchmark (issue 3): prints figures, is not a test. `scripts/bench.sh` builds release
//! binaries and runs it in a network namespace with only loopback. In one run:
//! 1. LMTP ingest of 10 KB mail with 1, 4 and 16 sessions (`smtp-source -L -d`), side by side:
//!    the bridge of a running site (recipient: a Tox ID that never comes online, so every message
//!    is sealed, committed and stays queued) and a private Dovecot LMTP → Maildir. Before each run
//!    the bridge restarts on an empty queue and Dovecot's Maildir is emptied. Also the bridge
//!    process's CPU time per message and its memory after each load, from /proc.
//! 2. Where ingest time goes: the cost of one seal, and durable PostgreSQL commits of one 10 KB
//!    row per transaction on the site's own database.
//! 3. End-to-end latency with the peer online (two sites): A's commit (`outbound.created`) to B's
//!    injection into its Postfix (`inbound.injected_at`), joined by message id; 50 messages spaced
//!    100 ms apart, then a burst of 50 on one LMTP connection.
//!
//! 4. `queue [N]` (run on its own; issue 12): N (default 100,000) × 10 KB copies queued over LMTP
//!    for a peer that is offline (RSS while ingesting), a bridge restart (start-up time until it
//!    runs and LMTP answers, RSS 20 s later), then the peer comes online: the time until every
//!    copy is delivered, checked once each at both ends, and the peak RSS meanwhile.
//!
//! Usage: toxmail-bridge-bench [rounds [all|ingest|latency]]   (default 3 all; ingest figures
//! are medians of the rounds), or toxmail-bridge-bench queue [N]. With TOXMAIL_KEEP_BENCH set,
//! the sites' dir (bridge logs) is kept.
//! `toxmail-bridge-bench intake`: the intake memory benchmark of issue 12 only (`intake.rs`).

#[path = "bridge_bench/intake.rs"]
mod intake;

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::block_in_place;
use tokio_postgres::{Client, NoTls};
use tox_runtime::BootstrapNode;
use toxmail_protocol::{Letter, MessageId, Metadata, SecretKey, ToxId, public_key_of, seal};
use toxmail_tests::bootstrapd::BootstrapDaemon;
use toxmail_tests::dovecot::DovecotLmtp;
use toxmail_tests::site::{Site, SiteSpec};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const MESSAGE_SIZE: usize = 10 * 1024;
const SENDER: &str = "alice@a.test";
/// (sessions, messages per run): a few seconds per run at the anchor's rates.
const LOADS: [(usize, usize); 3] = [(1, 1000), (4, 2000), (16, 3000)];
const SPACED: usize = 50;
const SPACING: Duration = Duration::from_millis(100);
const BURST: usize = 50;
/// The first delivery includes the friend request and the connection (~10 s on loopback).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);
const COMMIT_WINDOW: Duration = Duration::from_secs(2);
const KEEP_ENV: &str = "TOXMAIL_KEEP_BENCH";
/// `queue` without N: the figure of issue 12.
const QUEUE_COPIES: usize = 100_000;
/// LMTP sessions for the queue fill.
const QUEUE_SESSIONS: usize = 16;
/// RSS is read this long after the restart (issue 12's figure).
const SETTLE: Duration = Duration::from_secs(20);
/// The peer must have every copy within this long after it starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// USER_HZ, the unit of /proc/<pid>/stat times: 100 on every Linux architecture Debian ships.
const CLOCK_TICKS: f64 = 100.0;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("intake") {
        return intake::run().await;
    }
    if args.peek().is_some_and(|a| a == "queue") {
        let n = match args.nth(1) {
            Some(n) => n.parse()?,
            None => QUEUE_COPIES,
        };
        if n == 0 {
            return Err("N must be at least 1".into());
        }
        return queue_bench(n).await;
    }
    let rounds: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 3,
    };
    if rounds == 0 {
        return Err("rounds must be at least 1".into());
    }
    let part = args.next().unwrap_or_else(|| "all".into());
    if !["all", "ingest", "latency"].contains(&part.as_str()) {
        return Err(format!("unknown part {part:?}: all, ingest or latency").into());
    }
    let root = tempfile::tempdir()?;
    let boot = BootstrapDaemon::start(root.path())?;
    let mut a = block_in_place(|| {
        Site::prepare(root.path(), spec("site-a", "alice", "a.test"), &boot.node)
    });
    let db_a = connect(&a).await?;

    if part != "latency" {
        let ingest = ingest(&mut a, &db_a, rounds).await?;
        print_ingest(&ingest, rounds);
        print_costs(&a, &db_a).await?;
    }
    if part != "ingest" {
        latency(root.path(), &boot.node, &mut a, &db_a).await?;
    }
    if std::env::var_os(KEEP_ENV).is_some() {
        drop(a);
        eprintln!(
            "{KEEP_ENV}: kept {} (bridge logs and configs)",
            root.keep().display()
        );
    }
    Ok(())
}

/// A site with a single mailbox, which is also its Tox identity.
fn spec(name: &str, local: &str, domain: &str) -> SiteSpec {
    SiteSpec {
        name: name.into(),
        domain: domain.into(),
        mailboxes: vec![local.into()],
        identities: vec![format!("{local}@{domain}")],
        ..SiteSpec::default()
    }
}

async fn connect(site: &Site) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(&site.pg.url(), NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A valid Tox ID nobody runs: mail for it is sealed and queued and never leaves.
fn offline_peer() -> ToxId {
    ToxId::new(public_key_of(&SecretKey::from([0x5a; 32])), 0x0bad_cafe)
}

/// msg/s of each round, for one load.
#[derive(Debug)]
struct IngestFigures {
    sessions: usize,
    count: usize,
    bridge: Vec<f64>,
    /// CPU time (user + system) of the bridge process per message, µs.
    bridge_cpu: Vec<f64>,
    dovecot: Vec<f64>,
    /// The bridge's resident memory after the last round, with `count` messages queued.
    bridge_rss_mb: f64,
}

async fn ingest(a: &mut Site, db: &Client, rounds: usize) -> Result<Vec<IngestFigures>> {
    let dovecot = DovecotLmtp::start()?;
    let rcpt = format!("{}@tox", offline_peer());
    let mut figures = Vec::new();
    for (sessions, count) in LOADS {
        let mut fig = IngestFigures {
            sessions,
            count,
            bridge: Vec::new(),
            bridge_cpu: Vec::new(),
            dovecot: Vec::new(),
            bridge_rss_mb: 0.0,
        };
        for _ in 0..rounds {
            fig.dovecot
                .push(dovecot_run(&dovecot, sessions, count).await?);
            let (rate, cpu) = bridge_run(a, db, &rcpt, sessions, count).await?;
            fig.bridge.push(rate);
            fig.bridge_cpu.push(cpu);
        }
        fig.bridge_rss_mb = bridge_rss_mb(a).unwrap_or(f64::NAN);
        eprintln!("ingest {fig:?}");
        figures.push(fig);
    }
    Ok(figures)
}

async fn dovecot_run(dovecot: &DovecotLmtp, sessions: usize, count: usize) -> Result<f64> {
    dovecot.clear_mail()?;
    let secs = smtp_source(dovecot.addr(), sessions, count, "bob@b.test").await?;
    let stored = dovecot.delivered("bob");
    if stored != count {
        let log = dovecot.log();
        return Err(format!("Dovecot stored {stored} of {count} messages\n{log}").into());
    }
    Ok(count as f64 / secs)
}

/// msg/s, and the bridge's CPU µs per message.
async fn bridge_run(
    a: &mut Site,
    db: &Client,
    rcpt: &str,
    sessions: usize,
    count: usize,
) -> Result<(f64, f64)> {
    restart_on_empty_queue(a, db).await?;
    let cpu_before = bridge_cpu(a).ok_or("bridge process not found")?;
    let secs = smtp_source(a.lmtp, sessions, count, rcpt)
        .await
        .map_err(|e| format!("{e}\nbridge log:\n{}", tail(&a.bridge_log())))?;
    let cpu = bridge_cpu(a).ok_or("bridge process not found")? - cpu_before;
    let committed = count_rows(db, "SELECT count(*) FROM outbound").await?;
    if committed != count as i64 {
        return Err(format!("the bridge committed {committed} of {count} messages").into());
    }
    Ok((count as f64 / secs, cpu.as_secs_f64() * 1e6 / count as f64))
}

/// `/proc/<pid>` of the site's `toxmail-bridge run` process.
fn bridge_proc(site: &Site) -> Option<PathBuf> {
    let config = site.config.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.contains(&config) && args.contains(&&b"run"[..])).then(|| entry.path())
        })
}

/// CPU time (user + system) the bridge process has used so far.
fn bridge_cpu(site: &Site) -> Option<Duration> {
    let stat = std::fs::read_to_string(bridge_proc(site)?.join("stat")).ok()?;
    // Fields after the command name start at field 3; utime and stime are fields 14, 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_secs_f64(ticks as f64 / CLOCK_TICKS))
}

/// Resident memory of the bridge process, MB.
fn bridge_rss_mb(site: &Site) -> Option<f64> {
    let status = std::fs::read_to_string(bridge_proc(site)?.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

async fn restart_on_empty_queue(site: &mut Site, db: &Client) -> Result<()> {
    block_in_place(|| site.stop_bridge());
    db.batch_execute("TRUNCATE outbound").await?;
    block_in_place(|| site.start_bridge());
    Ok(())
}

async fn count_rows(db: &Client, sql: &str) -> Result<i64> {
    Ok(db.query_one(sql, &[]).await?.get(0))
}

/// Runs Postfix's load generator over LMTP, reusing each connection; its wall time in seconds.
async fn smtp_source(addr: SocketAddr, sessions: usize, count: usize, rcpt: &str) -> Result<f64> {
    let (s, m, l) = (
        sessions.to_string(),
        count.to_string(),
        MESSAGE_SIZE.to_string(),
    );
    let start = Instant::now();
    let out = tokio::process::Command::new("smtp-source")
        .args([
            "-L", "-d", "-s", &s, "-m", &m, "-l", &l, "-f", SENDER, "-t", rcpt,
        ])
        .arg(format!("inet:{addr}"))
        .output()
        .await?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("smtp-source to {addr} failed ({}): {stderr}", out.status).into());
    }
    Ok(secs)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn print_ingest(figures: &[IngestFigures], rounds: usize) {
    println!("\nLMTP ingest, 10 KB messages, msg/s (median of {rounds} rounds)\n");
    println!(
        "| sessions | messages/run | bridge msg/s | Dovecot msg/s | ratio | bridge CPU µs/msg | \
         bridge RSS MB after run |"
    );
    println!("|---|---|---|---|---|---|---|");
    for f in figures {
        let (bridge, dovecot) = (median(&f.bridge), median(&f.dovecot));
        println!(
            "| {} | {} | {bridge:.0} | {dovecot:.0} | {:.2} | {:.0} | {:.0} |",
            f.sessions,
            f.count,
            bridge / dovecot,
            median(&f.bridge_cpu),
            f.bridge_rss_mb,
        );
    }
    println!("\nEvery round (bridge / Dovecot):");
    for f in figures {
        let pairs: Vec<String> = (f.bridge.iter().zip(&f.dovecot))
            .map(|(b, d)| format!("{b:.0}/{d:.0}"))
            .collect();
        println!("  {:>2} sessions: {}", f.sessions, pairs.join("  "));
    }
}

/// The two costs every accepted message pays besides the LMTP dialogue.
async fn print_costs(site: &Site, db: &Client) -> Result<()> {
    println!("\nWhere ingest time goes\n");
    println!("- seal of one 10 KB letter: {:.0} µs", seal_micros());
    db.batch_execute("CREATE TABLE IF NOT EXISTS bench_commit (id bigserial, v bytea)")
        .await?;
    for clients in [1, 4, 16] {
        let tps = commit_rate(&site.pg.url(), clients).await?;
        println!(
            "- PostgreSQL, one 10 KB row per durable commit, {clients:>2} clients: {tps:.0} tps"
        );
    }
    db.batch_execute("DROP TABLE bench_commit").await?;
    Ok(())
}

fn seal_micros() -> f64 {
    let sender = SecretKey::from([0x11; 32]);
    let peer = offline_peer().public_key();
    let letter = Letter {
        message_id: MessageId::random(),
        metadata: Metadata {
            envelope_sender: SENDER.into(),
            recipient: format!("{}@tox", offline_peer()),
            queue_id: String::new(),
            created: 0,
            expires: 0,
            extensions: Default::default(),
        },
        message: vec![b'x'; MESSAGE_SIZE],
    };
    let n = 500;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(seal(&letter, &sender, &peer).expect("seal"));
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Autocommit INSERTs of one 10 KB bytea row from `clients` connections for COMMIT_WINDOW.
async fn commit_rate(url: &str, clients: usize) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + COMMIT_WINDOW;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(conn);
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO bench_commit (v) VALUES ($1)")
                .await?;
            let row = vec![0x42u8; MESSAGE_SIZE];
            while Instant::now() < deadline {
                client.execute(&insert, &[&row]).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), tokio_postgres::Error>(())
        }));
    }
    let start = Instant::now();
    for task in tasks {
        task.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Per message, in ms: A's commit → stored at B (before B acks) → injected into B's Postfix.
#[derive(Debug, Clone, Copy)]
struct Sample {
    total: f64,
    transfer: f64,
    injection: f64,
}

async fn latency(root: &Path, boot: &BootstrapNode, a: &mut Site, db_a: &Client) -> Result<()> {
    let mut b = block_in_place(|| Site::prepare(root, spec("site-b", "bob", "b.test"), boot));
    block_in_place(|| b.start_bridge());
    let db_b = connect(&b).await?;
    let rcpt = format!("{}@tox", b.identities["bob@b.test"]);
    restart_on_empty_queue(a, db_a).await?;

    let start = Instant::now();
    smtp_source(a.lmtp, 1, 1, &rcpt).await?;
    wait_injected(&db_b, 1, a, &b).await?;
    let first = start.elapsed().as_secs_f64();

    let mark = last_outbound_id(db_a).await?;
    let start = tokio::time::Instant::now();
    for i in 0..SPACED {
        tokio::time::sleep_until(start + SPACING * i as u32).await;
        smtp_source(a.lmtp, 1, 1, &rcpt).await?;
    }
    wait_injected(&db_b, 1 + SPACED, a, &b).await?;
    let spaced = samples(db_a, &db_b, mark).await?;

    let mark = last_outbound_id(db_a).await?;
    smtp_source(a.lmtp, 1, BURST, &rcpt).await?;
    wait_injected(&db_b, 1 + SPACED + BURST, a, &b).await?;
    let burst = samples(db_a, &db_b, mark).await?;

    print_latency(first, &spaced, &burst);
    Ok(())
}

async fn last_outbound_id(db: &Client) -> Result<i64> {
    let sql = "SELECT coalesce(max(id), 0) FROM outbound";
    Ok(db.query_one(sql, &[]).await?.get(0))
}

/// Polls B's database until `n` messages are injected.
async fn wait_injected(db_b: &Client, n: usize, a: &Site, b: &Site) -> Result<()> {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let sql = "SELECT count(*) FROM inbound WHERE state = 'injected'";
    while count_rows(db_b, sql).await? < n as i64 {
        if Instant::now() > deadline {
            let logs = format!(
                "A:\n{}\nB:\n{}",
                tail(&a.bridge_log()),
                tail(&b.bridge_log())
            );
            return Err(format!("{n} messages not injected at B in time\n{logs}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Joins A's rows queued after `mark` with B's injected rows by message id. Both databases run
/// on this machine, so their clocks are the same clock.
async fn samples(db_a: &Client, db_b: &Client, mark: i64) -> Result<Vec<Sample>> {
    let sent = db_a
        .query(
            "SELECT message_id, extract(epoch FROM created)::float8 FROM outbound WHERE id > $1",
            &[&mark],
        )
        .await?;
    let got = db_b
        .query(
            "SELECT message_id, extract(epoch FROM received)::float8, \
             extract(epoch FROM injected_at)::float8 FROM inbound WHERE state = 'injected'",
            &[],
        )
        .await?;
    let at_b: HashMap<Vec<u8>, (f64, f64)> = got
        .iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), (r.get(1), r.get(2))))
        .collect();
    let mut samples = Vec::new();
    for row in &sent {
        let id: Vec<u8> = row.get(0);
        let committed: f64 = row.get(1);
        let (received, injected) = at_b.get(&id).ok_or("a message is missing at B")?;
        samples.push(Sample {
            total: (injected - committed) * 1e3,
            transfer: (received - committed) * 1e3,
            injection: (injected - received) * 1e3,
        });
    }
    Ok(samples)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(samples: &[Sample], leg: fn(&Sample) -> f64) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().map(leg).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn print_latency(first: f64, spaced: &[Sample], burst: &[Sample]) {
    println!("\nEnd to end, peer online: first delivery (friend request, connect) {first:.1} s");
    println!("\nLatency, A's commit → injected into B's Postfix, ms\n");
    println!(
        "| variant | messages | p50 | p90 | p99 | max | over 1 s | p50 A→stored at B | \
         p50 stored→injected |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let spacing = SPACING.as_millis();
    for (name, samples) in [
        (format!("spaced {spacing} ms"), spaced),
        ("burst".into(), burst),
    ] {
        let total = sorted(samples, |s| s.total);
        let transfer = sorted(samples, |s| s.transfer);
        let injection = sorted(samples, |s| s.injection);
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.0} | {:.0} |",
            samples.len(),
            percentile(&total, 0.5),
            percentile(&total, 0.9),
            percentile(&total, 0.99),
            total[total.len() - 1],
            total.iter().filter(|ms| **ms > 1000.0).count(),
            percentile(&transfer, 0.5),
            percentile(&injection, 0.5),
        );
    }
}

/// The last lines of a log, for error messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Samples the bridge's RSS every 200 ms until dropped; `peak()` is the highest seen.
struct RssWatch {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(site: &Site) -> RssWatch {
        let config = site.config.clone();
        let peak_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (peak, halt) = (peak_kb.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Some(mb) = rss_mb_of(&config) {
                    peak.fetch_max((mb * 1024.0) as u64, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        RssWatch {
            peak_kb,
            stop,
            thread: Some(thread),
        }
    }

    fn peak_mb(&self) -> f64 {
        self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// RSS of the `toxmail-bridge run` process started with `config`, MB.
fn rss_mb_of(config: &Path) -> Option<f64> {
    let config = config.as_os_str().as_encoded_bytes();
    let proc_dir = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.contains(&config) && args.contains(&&b"run"[..])).then(|| entry.path())
        })?;
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Issue 12: memory and start-up with `n` copies queued for one offline peer, then the drain.
async fn queue_bench(n: usize) -> Result<()> {
    let root = tempfile::tempdir()?;
    let boot = BootstrapDaemon::start(root.path())?;
    let mut a = block_in_place(|| {
        Site::prepare(root.path(), spec("site-a", "alice", "a.test"), &boot.node)
    });
    let db_a = connect(&a).await?;
    let b =
        block_in_place(|| Site::prepare(root.path(), spec("site-b", "bob", "b.test"), &boot.node));
    let mut b = b;
    let db_b = connect(&b).await?;
    let rcpt = format!("{}@tox", b.identities["bob@b.test"]);

    // Fill: the peer is offline (site B prepared, its bridge not started).
    block_in_place(|| a.start_bridge());
    let watch = RssWatch::start(&a);
    let start = Instant::now();
    smtp_source(a.lmtp, QUEUE_SESSIONS, n, &rcpt)
        .await
        .map_err(|e| format!("{e}\nbridge log:\n{}", tail(&a.bridge_log())))?;
    let fill = start.elapsed().as_secs_f64();
    let queued = count_rows(
        &db_a,
        "SELECT count(*) FROM outbound WHERE state = 'queued'",
    )
    .await?;
    if queued != n as i64 {
        return Err(format!("{queued} of {n} copies queued").into());
    }
    let ingest_peak = watch.peak_mb();
    let ingest_end = bridge_rss_mb(&a).unwrap_or(f64::NAN);
    drop(watch);
    eprintln!("queued {n} in {fill:.1} s, RSS peak {ingest_peak:.0} MB");

    // Restart with the queue full.
    block_in_place(|| a.stop_bridge());
    let start = Instant::now();
    block_in_place(|| a.start_bridge());
    let startup = start.elapsed().as_secs_f64();
    let watch = RssWatch::start(&a);
    tokio::time::sleep(SETTLE).await;
    let settled = bridge_rss_mb(&a).unwrap_or(f64::NAN);
    let settle_peak = watch.peak_mb();
    drop(watch);
    eprintln!("restart {startup:.2} s, RSS after {SETTLE:?} {settled:.0} MB");

    // The peer comes online: every copy delivered, once.
    let watch = RssWatch::start(&a);
    let start = Instant::now();
    block_in_place(|| b.start_bridge());
    let delivered_sql = "SELECT count(*) FROM outbound WHERE state = 'delivered'";
    let mut last_report = Instant::now();
    loop {
        let delivered = count_rows(&db_a, delivered_sql).await?;
        if delivered >= n as i64 {
            break;
        }
        if start.elapsed() > DRAIN_TIMEOUT {
            return Err(format!("{delivered} of {n} delivered in {DRAIN_TIMEOUT:?}").into());
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "  {delivered} delivered after {secs:.0} s, peak RSS {:.0} MB",
                watch.peak_mb()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drain = start.elapsed().as_secs_f64();
    let drain_peak = watch.peak_mb();
    drop(watch);
    let failed = count_rows(
        &db_a,
        "SELECT count(*) FROM outbound WHERE state <> 'delivered'",
    )
    .await?;
    let stored = count_rows(&db_b, "SELECT count(*) FROM inbound").await?;
    let distinct = count_rows(&db_b, "SELECT count(DISTINCT message_id) FROM inbound").await?;
    println!("\nQueue memory: {n} × 10 KB copies queued for one offline peer (issue 12)\n");
    println!("| phase | figure |");
    println!("|---|---|");
    println!(
        "| fill over LMTP ({QUEUE_SESSIONS} sessions) | {fill:.1} s ({:.0} msg/s) |",
        n as f64 / fill
    );
    println!("| RSS while filling: peak / at the end | {ingest_peak:.0} / {ingest_end:.0} MB |");
    println!("| restart: until it runs and LMTP answers | {startup:.2} s |");
    println!(
        "| RSS 20 s after the restart (peak in those 20 s) | {settled:.0} MB ({settle_peak:.0}) |"
    );
    println!(
        "| peer online → all {n} delivered | {drain:.1} s ({:.0} msg/s) |",
        n as f64 / drain
    );
    println!("| peak RSS while delivering | {drain_peak:.0} MB |");
    println!(
        "| copies at the peer: rows / distinct ids; not delivered at A | {stored} / {distinct}; {failed} |"
    );
    if stored != n as i64 || distinct != n as i64 || failed != 0 {
        return Err("not every copy delivered exactly once".into());
    }
    if std::env::var_os(KEEP_ENV).is_some() {
        drop((a, b));
        eprintln!("{KEEP_ENV}: kept {}", root.keep().display());
    }
    Ok(())
}
