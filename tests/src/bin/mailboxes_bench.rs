//! Idle cost of many Tox identities in one process (docs/benchmarks.md, "A thousand mailboxes").
//! For each count a child process starts that many nodes the way the bridge starts its identities
//! (no TCP relay, IPv6 and LAN discovery off), all bootstrapping from one private `tox-bootstrapd`
//! on 127.0.0.1; it waits `--settle` seconds, then measures its own RSS, CPU (% of one core) and
//! threads over `--window` seconds from /proc/self, and prints one table row.
//! Usage: toxmail-mailboxes-bench [--settle S] [--window S] [COUNTS...]   (default 1 100 1000)

use std::time::{Duration, Instant};

use clap::Parser;
use tox_runtime::{Connection, Node, Options};
use toxmail_tests::bootstrapd::BootstrapDaemon;

#[derive(Parser)]
struct Args {
    /// Seconds between the last node started and the start of the window.
    #[arg(long, default_value_t = 60)]
    settle: u64,
    /// Seconds CPU time is measured over.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Owner threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    owner_threads: usize,
    /// Measure one count in this process (used by the parent for each count).
    #[arg(long, hide = true)]
    child: bool,
    /// Identity counts to measure, each in a fresh process.
    counts: Vec<usize>,
}

/// First UDP port of the identities; the bench runs in its own network namespace.
const FIRST_PORT: u16 = 40000;

fn proc_status(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// UDP datagrams sent in this network namespace (the bench runs in its own).
fn udp_out() -> u64 {
    let text = std::fs::read_to_string("/proc/self/net/snmp").unwrap();
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "OutDatagrams")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// Bytes sent on `lo`, the namespace's only interface.
fn lo_bytes_out() -> u64 {
    let text = std::fs::read_to_string("/proc/self/net/dev").unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("lo:"))
        .unwrap();
    let fields: Vec<&str> = line.split(':').nth(1).unwrap().split_whitespace().collect();
    fields[8].parse().unwrap() // receive has 8 fields, then transmit bytes
}

/// User plus system CPU time of this process, in clock ticks (1/100 s on Linux).
fn cpu_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state field (3) here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

async fn measure(count: usize, settle: u64, window: u64) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = BootstrapDaemon::start(dir.path()).expect("tox-bootstrapd (toxcore-utils)");
    let mut nodes = Vec::with_capacity(count);
    let started = Instant::now();
    for _ in 0..count {
        let mut o = Options::loopback().bootstrap_from(daemon.node.clone());
        o.start_port = FIRST_PORT;
        o.end_port = FIRST_PORT + u16::try_from(count).unwrap() + 99;
        nodes.push(Node::start(o).await.unwrap());
    }
    let start_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let (t0, c0, u0, b0) = (Instant::now(), cpu_ticks(), udp_out(), lo_bytes_out());
    tokio::time::sleep(Duration::from_secs(window)).await;
    let ticks = cpu_ticks() - c0;
    let packets = (udp_out() - u0) as f64 / t0.elapsed().as_secs_f64();
    let bytes = (lo_bytes_out() - b0) as f64 / t0.elapsed().as_secs_f64();
    let cpu = ticks as f64 / t0.elapsed().as_secs_f64(); // ticks/s = % of one core
    let rss_mb = proc_status("VmRSS:") as f64 / 1024.0;
    let threads = proc_status("Threads:");
    let online = nodes
        .iter()
        .filter(|n| n.handle.stats().connection() != Connection::None)
        .count();
    println!(
        "| {count} | {rss_mb:.1} | {cpu:.1} | {threads} | {online} | {start_secs:.1} | {:.0} | {:.3} | {:.1} | {:.0} |",
        rss_mb * 1024.0 / count as f64,
        cpu / count as f64,
        packets / count as f64,
        bytes / count as f64,
    );
    for node in nodes {
        node.kill().await;
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let counts = if args.counts.is_empty() {
        vec![1, 100, 1000]
    } else {
        args.counts
    };
    if args.child {
        tox_runtime::set_owner_threads(args.owner_threads);
        return measure(counts[0], args.settle, args.window).await;
    }
    println!(
        "idle, private DHT (one tox-bootstrapd on 127.0.0.1), settle {} s, window {} s, \
         owner threads {} (0: one per core)",
        args.settle, args.window, args.owner_threads
    );
    println!(
        "| identities | RSS MB | CPU % of one core | threads | online | start s | KB per identity | CPU % per identity | UDP datagrams/s sent per identity | bytes/s sent per identity |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let me = std::env::current_exe().unwrap();
    for count in counts {
        let status = std::process::Command::new(&me)
            .args(["--child", "--settle", &args.settle.to_string()])
            .args(["--window", &args.window.to_string()])
            .args(["--owner-threads", &args.owner_threads.to_string()])
            .arg(count.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "measuring {count} identities failed");
    }
}
