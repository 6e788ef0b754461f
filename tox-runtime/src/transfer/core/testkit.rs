//! Helpers shared by the core's tests: a test configuration, a core with a fake clock, keys and
//! ids from one byte, frames as packets, fake envelopes with a valid header, and filters over
//! the actions a step returned.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use toxmail_protocol::{
    ENVELOPE_VERSION, Frame, HEADER_SIZE, Hello, MessageId, PROTOCOL_VERSION, PublicKey,
};

use super::{Action, Core, CoreConfig, FileKey, Input, OutKey};
use crate::event::{FileNumber, FriendNumber};
use crate::transfer::TransferStats;

pub(crate) const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest envelope the core under test accepts.
pub(crate) const MAX_ENVELOPE: u64 = 1 << 20;
/// Bytes one peer may have offered at once to the core under test.
pub(crate) const MAX_PEER_BYTES: u64 = 2 << 20;
/// The key of the core under test.
pub(crate) const SELF_KEY: PublicKey = PublicKey([0xee; 32]);

pub(crate) fn test_config() -> CoreConfig {
    CoreConfig {
        max_envelope: MAX_ENVELOPE,
        ack_timeout: ACK_TIMEOUT,
        max_peer_bytes: MAX_PEER_BYTES,
        trusted_relays: HashSet::new(),
    }
}

pub(crate) fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

pub(crate) fn msg(n: u8) -> MessageId {
    MessageId([n; 32])
}

/// c-toxcore's number for the `n`th incoming file of a friend (outgoing ones count from 0).
pub(crate) fn incoming(n: u32) -> FileNumber {
    (n + 1) << 16
}

/// A frame from `from` as the lossless packet it arrives in.
pub(crate) fn packet(friend: FriendNumber, from: PublicKey, frame: &Frame) -> Input {
    Input::Packet {
        friend,
        from,
        data: frame.encode(),
    }
}

/// A peer's hello speaking our version, taking envelopes up to `max_envelope` bytes.
pub(crate) fn hello(max_envelope: u64) -> Frame {
    Frame::Hello(Hello {
        version_min: PROTOCOL_VERSION,
        version_max: PROTOCOL_VERSION,
        max_envelope,
    })
}

/// `len` bytes (at least a header) whose cleartext header names `id`, `sender` and `recipient`;
/// the rest is zeros (the core never opens an envelope).
pub(crate) fn envelope(
    id: MessageId,
    sender: PublicKey,
    recipient: PublicKey,
    len: usize,
) -> Arc<[u8]> {
    let mut bytes = Vec::with_capacity(len.max(HEADER_SIZE));
    bytes.extend_from_slice(b"TXM1");
    bytes.extend_from_slice(&[ENVELOPE_VERSION, 0, 0, 0]);
    bytes.extend_from_slice(&id.0);
    bytes.extend_from_slice(&sender.0);
    bytes.extend_from_slice(&recipient.0);
    bytes.resize(len.max(HEADER_SIZE), 0);
    bytes.into()
}

/// A core with a fake clock: every input is handled at `base + elapsed`.
pub(crate) struct Harness {
    pub(crate) core: Core,
    pub(crate) base: Instant,
    pub(crate) elapsed: Duration,
}

impl Harness {
    pub(crate) fn new() -> Self {
        let base = Instant::now();
        let stats = Arc::new(TransferStats::default());
        let core = Core::new(test_config(), Some(SELF_KEY), stats, base);
        Harness {
            core,
            base,
            elapsed: Duration::ZERO,
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    pub(crate) fn input(&mut self, input: Input) -> Vec<Action> {
        self.core.handle(self.base + self.elapsed, input)
    }

    /// Lets `d` pass, then handles `input`.
    pub(crate) fn after(&mut self, d: Duration, input: Input) -> Vec<Action> {
        self.elapsed += d;
        self.input(input)
    }

    /// Lets `d` pass, then ticks.
    pub(crate) fn tick_after(&mut self, d: Duration) -> Vec<Action> {
        self.after(d, Input::Tick)
    }

    /// `pk` becomes friend `friend`, comes online and says hello (taking up to 64 MiB).
    pub(crate) fn connect(&mut self, pk: PublicKey, friend: FriendNumber) -> Vec<Action> {
        self.input(Input::Friend { pk, friend });
        let mut actions = self.input(Input::Connection {
            pk,
            friend,
            online: true,
        });
        actions.extend(self.input(packet(friend, pk, &hello(64 << 20))));
        actions
    }
}

/// The frames sent to `to`.
pub(crate) fn frames_to(actions: &[Action], to: PublicKey) -> Vec<&Frame> {
    let sent = actions.iter().filter_map(|a| match a {
        Action::Send { to: t, frame, .. } if *t == to => Some(frame),
        _ => None,
    });
    sent.collect()
}

pub(crate) fn cancels(actions: &[Action]) -> Vec<FileKey> {
    let keys = actions.iter().filter_map(|a| match a {
        Action::Cancel(key) => Some(*key),
        _ => None,
    });
    keys.collect()
}

pub(crate) fn closes(actions: &[Action]) -> Vec<FileKey> {
    let keys = actions.iter().filter_map(|a| match a {
        Action::Close(key) => Some(*key),
        _ => None,
    });
    keys.collect()
}

/// The deliveries offered (offer frame and file handed to the shell).
pub(crate) fn offers(actions: &[Action]) -> Vec<OutKey> {
    let keys = actions.iter().filter_map(|a| match a {
        Action::Offer { key, .. } => Some(*key),
        _ => None,
    });
    keys.collect()
}

/// The files accepted: key and the message id they were accepted as.
pub(crate) fn accepts(actions: &[Action]) -> Vec<(FileKey, MessageId)> {
    let keys = actions.iter().filter_map(|a| match a {
        Action::Accept { key, id, .. } => Some((*key, *id)),
        _ => None,
    });
    keys.collect()
}

/// The deliveries completed, and whether they succeeded.
pub(crate) fn completes(actions: &[Action]) -> Vec<(OutKey, bool)> {
    let done = actions.iter().filter_map(|a| match a {
        Action::Complete { key, result } => Some((*key, result.is_ok())),
        _ => None,
    });
    done.collect()
}
