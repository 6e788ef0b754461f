//! The world the property tests run one core in: two peers as c-toxcore reports them, a shell
//! that answers the core's calls (at once, or later when a step says so), an inbox, a relay
//! store and a spool, and the invariants checked after every input.

use std::collections::{HashMap, HashSet, VecDeque};

use toxmail_protocol::{MessageId, PublicKey};

use super::testkit::*;
use super::{AcceptOutcome, FileKey, Input, OutKey};
use crate::event::FriendNumber;

mod checks;
mod shell;

/// Expiry the relay store confirms for deposits.
const HELD_UNTIL: u64 = 5000;

/// A call of the core the shell has yet to answer.
#[derive(Debug)]
enum Due {
    /// Answers the accept of generation `.1` of the file (none if it was replaced since).
    Accepted(FileKey, u64, AcceptOutcome),
    Check(PublicKey, MessageId),
    CheckDeposit(PublicKey, MessageId),
    Store(PublicKey, MessageId, bool),
    /// An event c-toxcore raised and the core has not seen yet.
    Late(Input),
}

pub(super) struct PeerModel {
    pub(super) pk: PublicKey,
    pub(super) friend: FriendNumber,
    pub(super) online: bool,
    pub(super) hello: bool,
}

/// A file the core accepted and has not closed, stored or cancelled since.
struct Incoming {
    from: PublicKey,
    id: MessageId,
    size: u64,
    /// Set once the shell reported the accept.
    received: Option<u64>,
    generation: u64,
}

pub(super) struct World {
    pub(super) h: Harness,
    pub(super) peers: Vec<PeerModel>,
    due: Vec<Due>,
    /// Envelopes the inbox holds, deposits the relay store holds, spool file lengths.
    inbox: HashSet<(PublicKey, MessageId)>,
    held: HashSet<(PublicKey, MessageId)>,
    spool: HashMap<(PublicKey, MessageId), u64>,
    /// Deliveries given to the core and neither completed nor abandoned.
    outstanding: HashSet<OutKey>,
    /// Deliveries that must be offered (or completed) when their peer next says hello.
    offer_at_hello: HashSet<OutKey>,
    /// The message id of the latest file c-toxcore announced under each number.
    last_recv: HashMap<FileKey, MessageId>,
    /// Incoming files c-toxcore still has.
    live_in: HashSet<FileKey>,
    /// Our files c-toxcore still sends, and for which delivery.
    live_out: HashMap<FileKey, OutKey>,
    accepted: HashMap<FileKey, Incoming>,
    storing: HashSet<(PublicKey, MessageId)>,
    generation: u64,
    offers_made: u32,
    /// Healing: every call answered at once and well, every file sent, every delivery acked.
    ideal: bool,
    defer: bool,
    luck: u8,
}

impl World {
    pub(super) fn new(peers: usize) -> Self {
        let mut h = Harness::new();
        let peers: Vec<PeerModel> = (0..peers)
            .map(|n| PeerModel {
                pk: key(n as u8 + 1),
                friend: n as FriendNumber,
                online: false,
                hello: false,
            })
            .collect();
        for p in &peers {
            h.input(Input::Friend {
                pk: p.pk,
                friend: p.friend,
            });
        }
        World {
            h,
            peers,
            due: Vec::new(),
            inbox: HashSet::new(),
            held: HashSet::new(),
            spool: HashMap::new(),
            outstanding: HashSet::new(),
            offer_at_hello: HashSet::new(),
            last_recv: HashMap::new(),
            live_in: HashSet::new(),
            live_out: HashMap::new(),
            accepted: HashMap::new(),
            storing: HashSet::new(),
            generation: 0,
            offers_made: 0,
            ideal: false,
            defer: false,
            luck: 0,
        }
    }

    pub(super) fn set_step(&mut self, defer: bool, luck: u8) {
        (self.defer, self.luck) = (defer, luck);
    }

    fn peer(&self, pk: PublicKey) -> &PeerModel {
        self.peers.iter().find(|p| p.pk == pk).expect("a peer")
    }

    fn peer_mut(&mut self, pk: PublicKey) -> &mut PeerModel {
        self.peers.iter_mut().find(|p| p.pk == pk).expect("a peer")
    }

    /// Accepted files whose accept the shell reported, in a stable order.
    pub(super) fn receiving_files(&self) -> Vec<FileKey> {
        let mut keys: Vec<FileKey> = self
            .accepted
            .iter()
            .filter(|(_, t)| t.received.is_some())
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Where the next chunk of `key` starts, and how many bytes are left.
    pub(super) fn progress(&self, key: FileKey) -> (u64, u64) {
        let t = &self.accepted[&key];
        let at = t.received.unwrap_or(0);
        (at, t.size.saturating_sub(at))
    }

    pub(super) fn is_live(&self, key: FileKey) -> bool {
        self.live_in.contains(&key)
    }

    /// c-toxcore ends the `pick`th file of ours to `friend` (every byte sent, or `aborted`);
    /// the core learns it now or, when `late`, only once the event's turn comes.
    pub(super) fn end_file(
        &mut self,
        friend: FriendNumber,
        pick: usize,
        aborted: bool,
        late: bool,
    ) {
        let mut files: Vec<FileKey> = self
            .live_out
            .keys()
            .filter(|k| k.0 == friend)
            .copied()
            .collect();
        files.sort_unstable();
        let Some(&key) = files.get(pick % files.len().max(1)) else {
            return;
        };
        self.live_out.remove(&key);
        let done = Input::FileDone { key, aborted };
        if late {
            self.due.push(Due::Late(done));
        } else {
            self.feed(done);
        }
    }

    /// Answers the `pick`th call still due.
    pub(super) fn answer_due(&mut self, pick: usize) {
        if !self.due.is_empty() {
            let due = self.due.remove(pick % self.due.len());
            if let Some(input) = self.answer(due) {
                self.feed(input);
            }
        }
    }

    /// Feeds `input` and then the shell's immediate answers, checking the invariants after.
    pub(super) fn feed(&mut self, input: Input) {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            self.before(&input);
            for action in self.h.input(input) {
                self.after(action, &mut queue);
            }
        }
        self.check();
    }

    /// What c-toxcore and the shell know once `input` happened.
    fn before(&mut self, input: &Input) {
        match *input {
            Input::Connection { pk, friend, online } => {
                let peer = self.peer_mut(pk);
                peer.online = online;
                if !online {
                    peer.hello = false;
                    self.live_in.retain(|k| k.0 != friend);
                    self.live_out.retain(|k, _| k.0 != friend);
                    let gone = self.outstanding.iter().filter(|k| k.0 == pk);
                    self.offer_at_hello.extend(gone);
                }
            }
            Input::FileRecv {
                friend, file, id, ..
            } => {
                self.last_recv.insert((friend, file), id);
                self.live_in.insert((friend, file));
            }
            Input::FileChunk { key, ref data, .. } if data.is_empty() => {
                self.live_in.remove(&key);
            }
            Input::IncomingCancelled(key)
            | Input::Accepted {
                key,
                outcome: AcceptOutcome::NotAccepted,
            } => {
                self.live_in.remove(&key);
            }
            Input::Accepted {
                key,
                outcome: AcceptOutcome::Accepted { offset },
            } => {
                if let Some(t) = self.accepted.get_mut(&key) {
                    t.received = Some(offset);
                }
            }
            Input::Deliver { to, id, .. } => {
                self.outstanding.insert((to, id));
                let peer = self.peer(to);
                if !(peer.online && peer.hello) {
                    self.offer_at_hello.insert((to, id));
                }
            }
            Input::Abandoned(key) => {
                self.outstanding.remove(&key);
                self.offer_at_hello.remove(&key);
            }
            Input::Stored {
                from,
                id,
                ref result,
                ..
            } => {
                self.storing.remove(&(from, id));
                if result.is_ok() {
                    self.inbox.insert((from, id));
                }
            }
            Input::Deposited {
                from,
                id,
                ref result,
            } => {
                self.storing.remove(&(from, id));
                if result.is_ok() {
                    self.held.insert((from, id));
                }
            }
            _ => {}
        }
    }
}
