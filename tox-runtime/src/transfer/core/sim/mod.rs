//! A deterministic simulation of the transfer engine: two sites, each a real [`Core`] driven by a
//! simulated shell that answers its actions as `engine.rs` does (an in-memory spool that survives
//! restarts, an inbox, a bridge that delivers through lanes of 16 and re-delivers after a
//! restart), over a simulated c-toxcore (file numbers, file controls, chunks paced by a window of
//! packets in flight, the owner thread's packet queue) and one ordered lossless stream per
//! direction with latency and bandwidth. Time is virtual (a base `Instant` plus a `Duration`, never slept); events run in
//! (time, sequence) order and every random choice comes from one seeded generator, so a seed
//! replays exactly. Faults: disconnects, full send queues, restarts of either site.
//!
//! Files: `tox/` (c-toxcore and the owner thread), `site.rs` (spool, inbox, bridge), `world/`
//! (the event queue and the shell's answers to actions), `faults.rs` (the link's life, the
//! faults, running to the end and the invariants), `tests.rs` (the scenarios).
//!
//! `SIM_TRACE=1` prints every traced event as it happens (`SIM_TRACE=wire` also file requests
//! and controls on the wire); `SIM_SEED=n` or `SIM_SEEDS=a..b` with the ignored test `one_seed`
//! replays seeds.

mod faults;
mod site;
mod tests;
mod tox;
mod world;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use toxmail_protocol::{
    Frame, Letter, MessageId, Metadata, PublicKey, SecretKey, public_key_of, seal_with_nonce,
};

#[cfg(doc)]
use super::Core;

/// splitmix64: small, fast, and the same on every platform.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    pub(super) fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    pub(super) fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }

    pub(super) fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.next() as usize % from.len()]
    }

    pub(super) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
        out
    }
}

/// The link and the shells' speeds for one run.
#[derive(Clone, Debug)]
pub(super) struct Params {
    /// One way.
    pub latency: Duration,
    pub bytes_per_sec: u64,
    /// Packets unacknowledged at most before file data waits (congestion control).
    pub window: usize,
    /// From the owner thread to the engine task.
    pub channel_delay: Duration,
    /// An inbox `contains` query, in ms.
    pub check_ms: (u64, u64),
    /// Reading the spool and committing the envelope, in ms.
    pub store_ms: (u64, u64),
    /// The bare c-toxcore refusal of a custom packet when the send queue is full, instead of
    /// the owner's queueing (offers then fail with `FrameNotSent`, other frames are lost).
    pub refuse_when_full: bool,
}

impl Params {
    pub(super) fn healthy() -> Self {
        Params {
            latency: Duration::from_millis(20),
            bytes_per_sec: 2_000_000,
            window: 256,
            channel_delay: Duration::from_micros(200),
            check_ms: (1, 3),
            store_ms: (5, 20),
            refuse_when_full: false,
        }
    }

    pub(super) fn random(rng: &mut Rng) -> Self {
        let slow = rng.percent(20); // TCP relays, a busy engine, a slow database
        Params {
            latency: if slow {
                rng.millis(150, 800)
            } else {
                rng.millis(2, 150)
            },
            bytes_per_sec: rng.pick(&[150_000, 1_000_000, 5_000_000, 20_000_000]),
            window: rng.pick(&[8, 32, 128, 512]),
            channel_delay: Duration::from_micros(rng.range(0, if slow { 30_000 } else { 3000 })),
            check_ms: (1, rng.range(1, if slow { 500 } else { 40 })),
            store_ms: (2, rng.range(5, if slow { 3000 } else { 400 })),
            refuse_when_full: rng.percent(30),
        }
    }
}

/// `SIM_TRACE` set: every trace line is printed as it happens.
static ECHO: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// `SIM_TRACE=wire`: file requests and controls arriving are traced too.
pub(super) fn wire_trace() -> bool {
    static WIRE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WIRE.get_or_init(|| std::env::var("SIM_TRACE").is_ok_and(|v| v == "wire"))
}

/// The last things that happened, for a failure report.
pub(super) struct Trace {
    lines: VecDeque<String>,
    keep: usize,
}

impl Trace {
    pub(super) fn new(keep: usize) -> Self {
        Trace {
            lines: VecDeque::with_capacity(keep),
            keep,
        }
    }

    pub(super) fn push(&mut self, now: Duration, site: &str, what: String) {
        if self.lines.len() == self.keep {
            self.lines.pop_front();
        }
        let ms = now.as_secs_f64() * 1000.0;
        let line = format!("{ms:>11.3} ms {site} {what}");
        if *ECHO.get_or_init(|| std::env::var_os("SIM_TRACE").is_some()) {
            eprintln!("{line}");
        }
        self.lines.push_back(line);
    }

    pub(super) fn last(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        let lines: Vec<&str> = self.lines.iter().skip(skip).map(String::as_str).collect();
        lines.join("\n")
    }

    /// A digest of everything kept, to compare two runs of one seed.
    pub(super) fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.lines.iter().flat_map(|l| l.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        h
    }
}

/// A site's key pair, made from the seed.
pub(super) fn keypair(rng: &mut Rng) -> (SecretKey, PublicKey) {
    let secret = SecretKey::from(rng.bytes::<32>());
    let public = public_key_of(&secret);
    (secret, public)
}

/// A sealed envelope from `sender` to `recipient` around a body of `body` random bytes.
pub(super) fn envelope(
    rng: &mut Rng,
    sender: &SecretKey,
    recipient: &PublicKey,
    body: usize,
) -> (MessageId, Arc<[u8]>) {
    let id = MessageId(rng.bytes());
    let mut message = Vec::with_capacity(body);
    while message.len() < body {
        message.extend_from_slice(&rng.next().to_le_bytes());
    }
    message.truncate(body);
    let letter = Letter {
        message_id: id,
        metadata: Metadata {
            envelope_sender: "a@sim.example".into(),
            recipient: "b@sim.example".into(),
            queue_id: "SIM".into(),
            created: 1_700_000_000,
            expires: 1_800_000_000,
            extensions: Default::default(),
        },
        message,
    };
    let sealed = seal_with_nonce(&letter, sender, recipient, rng.bytes()).expect("seals");
    (id, sealed.into())
}

/// A body size: mostly small, now and then a few hundred KB.
pub(super) fn body_size(rng: &mut Rng) -> usize {
    if rng.percent(8) {
        rng.range(100_000, 300_000) as usize
    } else {
        rng.range(100, 20_000) as usize
    }
}

/// A message id, short, for traces.
pub(super) fn short(id: &MessageId) -> String {
    format!("{:02x}{:02x}{:02x}", id.0[0], id.0[1], id.0[2])
}

pub(super) fn frame_str(frame: &Frame) -> String {
    match frame {
        Frame::Hello(_) => "Hello".into(),
        Frame::Offer(o) => format!("Offer {} ({} B)", short(&o.message_id), o.size),
        Frame::Ack(id) => format!("Ack {}", short(id)),
        Frame::Nack(n) => format!("Nack {} {:?} {:?}", short(&n.message_id), n.class, n.code),
        Frame::Relay(_) => "Relay".into(),
    }
}

/// Percentile `p` (0..=100) of sorted `values`.
pub(super) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * p / 100]
}
