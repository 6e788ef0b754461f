//! What a site keeps besides its core: the spool (files on disk: they survive a restart; the
//! open handles do not), the inbox (`contains` and an idempotent `store`, as the bridge's
//! `INSERT ... ON CONFLICT DO NOTHING`), and the bridge's outbound queue (deliveries through a
//! lane of [`MAX_IN_FLIGHT_PER_PEER`], everything not yet acknowledged delivered again after a
//! restart, temporary refusals retried).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use toxmail_protocol::{MessageId, NackCode, PublicKey, SecretKey};

use super::super::{Core, FileKey};
use super::tox::Tox;
use crate::transfer::{MAX_IN_FLIGHT_PER_PEER, Refusal, TransferStats};

pub(super) type SpoolFile = Rc<RefCell<Vec<u8>>>;

#[derive(Default)]
pub(super) struct Spool {
    /// The directory: a file per (sender, message id).
    pub files: BTreeMap<(PublicKey, MessageId), SpoolFile>,
    /// Files open for transfers coming in (an unlinked file stays writable through its handle).
    pub open: BTreeMap<FileKey, SpoolFile>,
}

impl Spool {
    pub(super) fn write_at(file: &SpoolFile, position: u64, data: &[u8]) {
        let mut bytes = file.borrow_mut();
        let start = position as usize;
        if bytes.len() < start + data.len() {
            bytes.resize(start + data.len(), 0);
        }
        bytes[start..start + data.len()].copy_from_slice(data);
    }
}

#[derive(Default)]
pub(super) struct Inbox {
    pub stored: BTreeMap<(PublicKey, MessageId), Vec<u8>>,
    /// `store` calls per message: more than one means the core stored a message twice.
    pub calls: BTreeMap<(PublicKey, MessageId), u32>,
    /// Envelopes that reached the inbox with other bytes than their sender sealed.
    pub corrupt: u32,
}

impl Inbox {
    pub(super) fn contains(&self, from: PublicKey, id: MessageId) -> bool {
        self.stored.contains_key(&(from, id))
    }

    /// Stores `bytes`; `sealed` is what the sender really sealed under this id (the real inbox
    /// opens the envelope, and other bytes would not open: a forgery, refused for good).
    pub(super) fn store(
        &mut self,
        from: PublicKey,
        id: MessageId,
        bytes: Vec<u8>,
        sealed: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        *self.calls.entry((from, id)).or_default() += 1;
        if sealed != Some(&bytes[..]) {
            self.corrupt += 1;
            return Err(Refusal::new(NackCode::Forged, "does not open (simulated)"));
        }
        self.stored.entry((from, id)).or_insert(bytes);
        Ok(())
    }
}

/// The sending bridge: its PostgreSQL queue of outbound mail for the other site.
#[derive(Default)]
pub(super) struct Bridge {
    /// Every message, in the order submitted.
    pub outbox: Vec<MessageId>,
    /// Waiting for room in the lane.
    pub waiting: VecDeque<MessageId>,
    /// Delivered to the current core (since then), not completed yet.
    pub lane: BTreeMap<MessageId, Duration>,
    /// Acknowledged, when.
    pub done: BTreeMap<MessageId, Duration>,
    /// Given up by the bridge (`Input::Abandoned`), and whether the last byte of a file
    /// carrying it had been handed to c-toxcore by then.
    pub abandoned: BTreeMap<MessageId, bool>,
    /// Deliver → Complete(Ok), per message.
    pub latencies: Vec<Duration>,
}

impl Bridge {
    fn open(&self, id: &MessageId) -> bool {
        !self.done.contains_key(id) && !self.abandoned.contains_key(id)
    }

    /// The next message to hand to the core, if the lane has room.
    pub(super) fn next(&mut self, now: Duration) -> Option<MessageId> {
        while self.lane.len() < MAX_IN_FLIGHT_PER_PEER {
            let id = self.waiting.pop_front()?;
            if self.open(&id) && !self.lane.contains_key(&id) {
                self.lane.insert(id, now);
                return Some(id);
            }
        }
        None
    }

    /// Queued again (a temporary refusal, retried later), unless under way or finished.
    pub(super) fn requeue(&mut self, id: MessageId) {
        if self.open(&id) && !self.lane.contains_key(&id) && !self.waiting.contains(&id) {
            self.waiting.push_back(id);
        }
    }

    /// The process restarted: everything not acknowledged is delivered again.
    pub(super) fn restart(&mut self) {
        self.lane.clear();
        let open: Vec<MessageId> = self
            .outbox
            .iter()
            .filter(|id| self.open(id))
            .copied()
            .collect();
        self.waiting = open.into();
    }
}

pub(super) struct Site {
    pub name: &'static str,
    pub key: PublicKey,
    pub secret: SecretKey,
    pub peer: PublicKey,
    /// `None` while the site is down.
    pub core: Option<Core>,
    /// Bumped at each restart: events of an earlier life are dropped.
    pub life: u64,
    pub tox: Tox,
    pub spool: Spool,
    pub inbox: Inbox,
    pub bridge: Bridge,
    /// When the last event queued on the owner → engine channel comes out (kept in order).
    pub channel_at: Duration,
    pub iterate_at: Option<Duration>,
    pub stats: Arc<TransferStats>,
}

impl Site {
    pub(super) fn new(
        name: &'static str,
        secret: SecretKey,
        key: PublicKey,
        peer: PublicKey,
    ) -> Self {
        Site {
            name,
            key,
            secret,
            peer,
            core: None,
            life: 0,
            tox: Tox::new(peer),
            spool: Spool::default(),
            inbox: Inbox::default(),
            bridge: Bridge::default(),
            channel_at: Duration::ZERO,
            iterate_at: None,
            stats: Arc::default(),
        }
    }

    pub(super) fn running(&self) -> bool {
        self.core.is_some()
    }
}
