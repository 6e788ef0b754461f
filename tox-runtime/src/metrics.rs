//! The Tox layer's metrics, read at scrape time from the counters each node and courier keeps
//! (`NodeStats`, `TransferStats`), and `toxmail_build_info`. Both daemons register them in their
//! run's registry beside their own. Labels name states and reasons, never keys or addresses.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::event::Connection;
use crate::transfer::{Courier, TransferStats};

/// Every family this module exports, for the dashboard and rules checks.
pub fn names() -> Vec<String> {
    let mut names = family_names(ToxCollector::default().parts());
    names.push("toxmail_build_info".into());
    names
}

/// The family names of `collectors` (histograms by their base name).
pub fn family_names<'a>(collectors: impl IntoIterator<Item = &'a dyn Collector>) -> Vec<String> {
    collectors
        .into_iter()
        .flat_map(|c| c.desc())
        .map(|d| d.fq_name.clone())
        .collect()
}

// Declaring a process-wide family: made and registered in the default registry once (the
// daemons keep them in `LazyLock` statics, so a second registration is a bug).

fn registered<C: Collector + Clone + 'static>(c: C) -> C {
    prometheus::register(Box::new(c.clone())).expect("each family registered once");
    c
}

pub fn register_counter(name: &str, help: &str) -> IntCounter {
    registered(IntCounter::new(name, help).expect("valid metric"))
}

pub fn register_counter_vec(name: &str, help: &str, label: &str) -> IntCounterVec {
    registered(counter(name, help, label))
}

pub fn register_gauge(name: &str, help: &str) -> IntGauge {
    registered(IntGauge::new(name, help).expect("valid metric"))
}

pub fn register_gauge_vec(name: &str, help: &str, label: &str) -> IntGaugeVec {
    registered(gauge(name, help, label))
}

pub fn register_histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    registered(Histogram::with_opts(opts).expect("valid metric"))
}

/// The nodes' connection and friends, and their transfer counters, summed over the couriers
/// it watches.
#[derive(Debug)]
pub struct ToxCollector {
    couriers: Mutex<Vec<Courier>>,
    nodes: IntGaugeVec,
    friends: IntGaugeVec,
    requests: IntCounterVec,
    refused: IntCounterVec,
    bytes: IntCounterVec,
}

fn gauge(name: &str, help: &str, label: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric")
}

fn counter(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
}

impl Default for ToxCollector {
    fn default() -> Self {
        ToxCollector {
            couriers: Mutex::default(),
            nodes: gauge(
                "toxmail_tox_nodes",
                "Tox nodes of this daemon by their own connection to the network (none, tcp, udp).",
                "connection",
            ),
            friends: gauge(
                "toxmail_tox_friends",
                "Tox friends of this daemon's nodes, online or offline.",
                "state",
            ),
            requests: counter(
                "toxmail_tox_friend_requests_total",
                "Friend requests received, by outcome (accepted, refused: policy, block or a stranger bound).",
                "outcome",
            ),
            refused: counter(
                "toxmail_tox_frames_refused_total",
                "Frames and offers from peers refused, by reason (malformed frame, refused offer).",
                "reason",
            ),
            bytes: counter(
                "toxmail_tox_envelope_bytes_total",
                "Envelope bytes moved as Tox file chunks (re-sent bytes count again).",
                "direction",
            ),
        }
    }
}

impl ToxCollector {
    fn parts(&self) -> [&dyn Collector; 5] {
        [
            &self.nodes,
            &self.friends,
            &self.requests,
            &self.refused,
            &self.bytes,
        ]
    }

    pub fn watch(&self, courier: Courier) {
        self.couriers.lock().expect("not poisoned").push(courier);
    }

    fn refresh(&self) {
        let couriers = self.couriers.lock().expect("not poisoned");
        let mut by_connection: HashMap<&str, i64> =
            ["none", "tcp", "udp"].into_iter().map(|c| (c, 0)).collect();
        let (mut friends, mut online) = (0u64, 0u64);
        let (mut sent, mut received) = (0u64, 0u64);
        let mut totals = Totals::default();
        for courier in couriers.iter() {
            let node = courier.node().stats();
            *by_connection
                .entry(connection_label(node.connection()))
                .or_default() += 1;
            let (f, o) = node.friends();
            friends += f;
            online += o;
            sent += TransferStats::get(&node.chunk_bytes_sent);
            received += TransferStats::get(&node.chunk_bytes_received);
            totals.add(courier.stats());
        }
        for (state, n) in by_connection {
            self.nodes.with_label_values(&[state]).set(n);
        }
        let offline = friends.saturating_sub(online);
        self.friends
            .with_label_values(&["online"])
            .set(online as i64);
        self.friends
            .with_label_values(&["offline"])
            .set(offline as i64);
        advance(&self.requests, "accepted", totals.accepted);
        advance(&self.requests, "refused", totals.refused);
        advance(&self.refused, "malformed", totals.malformed);
        advance(&self.refused, "offer", totals.offers);
        advance(&self.bytes, "sent", sent);
        advance(&self.bytes, "received", received);
    }
}

#[derive(Default)]
struct Totals {
    accepted: u64,
    refused: u64,
    malformed: u64,
    offers: u64,
}

impl Totals {
    fn add(&mut self, s: &TransferStats) {
        self.accepted += TransferStats::get(&s.friend_requests_accepted);
        self.refused += TransferStats::get(&s.friend_requests_ignored)
            + TransferStats::get(&s.friend_requests_bounded);
        self.malformed += TransferStats::get(&s.frames_rejected);
        self.offers += TransferStats::get(&s.offers_refused);
    }
}

/// `connection=<none|tcp|udp> friends=<online>/<all>` of one node, for `/status`.
pub fn node_line(courier: &Courier) -> String {
    let stats = courier.node().stats();
    let (friends, online) = stats.friends();
    let connection = connection_label(stats.connection());
    format!("connection={connection} friends={online}/{friends}")
}

fn connection_label(c: Connection) -> &'static str {
    match c {
        Connection::None => "none",
        Connection::Tcp => "tcp",
        Connection::Udp => "udp",
    }
}

/// Moves a counter up to `total` (the sources only grow).
fn advance(counter: &IntCounterVec, label: &str, total: u64) {
    let c = counter.with_label_values(&[label]);
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

impl Collector for ToxCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.parts().into_iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.parts().into_iter().flat_map(|c| c.collect()).collect()
    }
}

/// `toxmail_build_info{daemon,version,libtoxcore} 1` in `registry`.
pub(crate) fn register_build_info(registry: &Registry, daemon: &str, version: &str) {
    let info = IntGaugeVec::new(
        Opts::new(
            "toxmail_build_info",
            "Always 1; labels name the daemon, its version and the libtoxcore it runs on.",
        ),
        &["daemon", "version", "libtoxcore"],
    )
    .expect("valid metric");
    let libtoxcore = crate::libtoxcore_version();
    info.with_label_values(&[daemon, version, libtoxcore.as_str()])
        .set(1);
    registry
        .register(Box::new(info))
        .expect("registered once per registry");
}
