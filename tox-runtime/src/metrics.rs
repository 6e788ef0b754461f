//! The Tox layer's metrics, read at scrape time from the counters each node and courier keeps
//! (`NodeStats`, `TransferStats`), and `toxmail_build_info`. Both daemons register them in their
//! run's registry beside their own. Labels name states and reasons, never keys or addresses.

use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::event::Connection;
use crate::transfer::{Courier, TransferStats};

/// Every family this module exports, for the dashboard and rules checks.
pub const NAMES: &[&str] = &[
    "toxmail_build_info",
    "toxmail_tox_nodes",
    "toxmail_tox_friends",
    "toxmail_tox_friend_requests_total",
    "toxmail_tox_frames_refused_total",
    "toxmail_tox_envelope_bytes_total",
];

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
    pub fn watch(&self, courier: Courier) {
        self.couriers.lock().expect("not poisoned").push(courier);
    }

    fn refresh(&self) {
        let couriers = self.couriers.lock().expect("not poisoned");
        let mut by_connection = [0i64; 3];
        let (mut friends, mut online) = (0u64, 0u64);
        let (mut sent, mut received) = (0u64, 0u64);
        let mut totals = Totals::default();
        for courier in couriers.iter() {
            let node = courier.node().stats();
            by_connection[match node.connection() {
                Connection::None => 0,
                Connection::Tcp => 1,
                Connection::Udp => 2,
            }] += 1;
            let (f, o) = node.friends();
            friends += f;
            online += o;
            sent += TransferStats::get(&node.chunk_bytes_sent);
            received += TransferStats::get(&node.chunk_bytes_received);
            totals.add(courier.stats());
        }
        for (state, n) in ["none", "tcp", "udp"].iter().zip(by_connection) {
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
        [
            &self.nodes as &dyn Collector,
            &self.friends,
            &self.requests,
            &self.refused,
            &self.bytes,
        ]
        .into_iter()
        .flat_map(|c| c.desc())
        .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        [
            &self.nodes as &dyn Collector,
            &self.friends,
            &self.requests,
            &self.refused,
            &self.bytes,
        ]
        .into_iter()
        .flat_map(|c| c.collect())
        .collect()
    }
}

/// `toxmail_build_info{daemon,version,libtoxcore} 1` in `registry`.
pub fn register_build_info(registry: &Registry, daemon: &str, version: &str) {
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
