//! The transfer engine's pure core: every per-peer and per-transfer state, and every decision.
//! No FFI, no clock, no I/O: it takes [`Input`]s (c-toxcore callbacks, frames, results of the
//! work it asked for, ticks) with an explicit `now` and returns [`Action`]s (send a frame, start,
//! accept or cancel a file, write a chunk, ask the inbox, complete a delivery, tell subscribers).
//! The engine task (`engine.rs`) only translates between these and the node, the spool and the
//! inbox; the simulation in `sim.rs` drives two cores over a simulated link instead.
//!
//! Concerns, one file each: `sending.rs` (our deliveries), `receiving.rs` (offers and files
//! coming in), `deposits.rs` (the relay roles), `checks.rs` (pure checks of envelope headers).

mod checks;
mod deposits;
mod files;
mod io;
#[cfg(test)]
mod props;
#[cfg(test)]
mod props_world;
mod receiving;
mod sending;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_levels;
#[cfg(test)]
mod tests_receiving;
#[cfg(test)]
mod tests_repeats;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use toxmail_protocol::{Frame, Hello, MessageId, PROTOCOL_VERSION, PublicKey, RelayFrame};

use super::{DeliveryError, PeerEvent, TransferStats};
use crate::event::{FileNumber, FriendNumber};

pub(crate) use checks::{check_deposit_header, check_header, resume_offset, resumed_refusal};
pub(crate) use io::{AcceptOutcome, Action, Input, OfferOutcome};
use receiving::PeerBound;

/// One delivery: to which peer, which message (one message may go to a peer and its relays).
pub(crate) type OutKey = (PublicKey, MessageId);
/// One file transfer as c-toxcore numbers it (per friend and direction, reused once it ended).
pub(crate) type FileKey = (FriendNumber, FileNumber);

/// Our hello goes again while the peer's is missing this long after ours went out (a frame that
/// fails to send is lost, and nothing else would make us say hello again before a reconnection),
/// and in answer to a repeated hello of the peer (it repeats because it lacks ours).
pub(crate) const HELLO_RETRY: Duration = Duration::from_secs(5);

/// What the core needs of [`super::TransferConfig`].
#[derive(Clone, Debug)]
pub(crate) struct CoreConfig {
    pub max_envelope: u64,
    pub ack_timeout: Duration,
    pub max_peer_bytes: u64,
    pub trusted_relays: HashSet<PublicKey>,
}

pub(crate) struct Peer {
    pub(crate) friend: FriendNumber,
    pub(crate) online: bool,
    /// When our hello last went out on this connection.
    hello_sent: Option<Instant>,
    pub(crate) hello: Option<Hello>,
}

pub(crate) struct Core {
    config: CoreConfig,
    /// Our own key, for envelopes that reach us through a relay.
    self_key: Option<PublicKey>,
    stats: Arc<TransferStats>,
    pub(crate) peers: HashMap<PublicKey, Peer>,
    sending: sending::Sending,
    receiving: receiving::Receiving,
    actions: Vec<Action>,
    now: Instant,
}

impl Core {
    pub(crate) fn new(
        config: CoreConfig,
        self_key: Option<PublicKey>,
        stats: Arc<TransferStats>,
        now: Instant,
    ) -> Self {
        Core {
            config,
            self_key,
            stats,
            peers: HashMap::new(),
            sending: Default::default(),
            receiving: Default::default(),
            actions: Vec::new(),
            now,
        }
    }

    /// Our own key, once the node told it (envelopes through a relay must be sealed to it).
    pub(crate) fn set_self_key(&mut self, key: PublicKey) {
        self.self_key = Some(key);
    }

    pub(crate) fn is_friend(&self, pk: &PublicKey) -> bool {
        self.peers.contains_key(pk)
    }

    /// Applies one input at `now` and returns what to do, in order.
    pub(crate) fn handle(&mut self, now: Instant, input: Input) -> Vec<Action> {
        self.now = self.now.max(now);
        match input {
            Input::Friend { pk, friend } => self.upsert_peer(pk, friend),
            Input::Unfriended(pk) => {
                if let Some(peer) = self.peers.remove(&pk) {
                    self.receiving_friend_gone(pk, peer.friend);
                }
            }
            Input::Connection { pk, friend, online } => {
                self.upsert_peer(pk, friend);
                tracing::info!(peer = %pk, online, "friend connection");
                if online {
                    self.peer_online(pk);
                } else {
                    self.peer_offline(pk, friend);
                }
            }
            Input::Packet { friend, from, data } => self.on_packet(friend, from, &data),
            Input::FileRecv {
                friend,
                from,
                file,
                kind,
                size,
                id,
            } => self.on_file_recv(friend, from, file, kind, size, id),
            Input::FileChunk {
                key,
                position,
                data,
            } => self.on_file_chunk(key, position, data),
            Input::IncomingCancelled(key) => self.incoming_cancelled(key),
            Input::FileDone { key, aborted } => self.file_done(key, aborted),
            Input::Deliver {
                to,
                id,
                envelope,
                deposit_until,
            } => self.deliver(to, id, envelope, deposit_until),
            Input::Abandoned(key) => self.abandoned(key),
            Input::TrustRelay(pk) => {
                self.config.trusted_relays.insert(pk);
            }
            Input::Offered { key, outcome } => self.offered(key, outcome),
            Input::Accepted { key, outcome } => self.accepted(key, outcome),
            Input::WriteFailed(key) => self.write_failed(key),
            Input::Checked {
                from,
                id,
                already_stored,
            } => self.offer_checked(from, id, already_stored),
            Input::Stored {
                from,
                origin,
                id,
                result,
            } => self.stored(from, origin, id, result),
            Input::DepositChecked { from, id, result } => self.deposit_checked(from, id, result),
            Input::Deposited { from, id, result } => self.deposited(from, id, result),
            Input::Tick => {
                self.tick_hellos();
                self.tick_receiving();
                self.tick_sending();
            }
        }
        std::mem::take(&mut self.actions)
    }

    fn upsert_peer(&mut self, pk: PublicKey, friend: FriendNumber) {
        let peer = self.peers.entry(pk).or_insert(Peer {
            friend,
            online: false,
            hello_sent: None,
            hello: None,
        });
        peer.friend = friend;
    }

    fn act(&mut self, action: Action) {
        self.actions.push(action);
    }

    fn count(&self, counter: fn(&TransferStats) -> &std::sync::atomic::AtomicU64) {
        counter(&self.stats).fetch_add(1, Ordering::Relaxed);
    }

    /// Queues `frame` to `to` if it is an online friend; false otherwise.
    fn send(&mut self, to: PublicKey, frame: Frame) -> bool {
        let Some(peer) = self.peers.get(&to).filter(|p| p.online) else {
            return false;
        };
        let friend = peer.friend;
        self.act(Action::Send { to, friend, frame });
        true
    }

    fn emit(&mut self, event: PeerEvent) {
        self.act(Action::Emit(event));
    }

    /// The public key of friend number `friend`.
    fn key_of(&self, friend: FriendNumber) -> Option<PublicKey> {
        self.peers
            .iter()
            .find(|(_, p)| p.friend == friend)
            .map(|(k, _)| *k)
    }

    fn peer_online(&mut self, pk: PublicKey) {
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        peer.online = true;
        if peer.hello_sent.is_none() {
            self.send_hello(pk);
        }
    }

    fn send_hello(&mut self, pk: PublicKey) {
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        peer.hello_sent = Some(self.now);
        let hello = Frame::Hello(Hello {
            version_min: PROTOCOL_VERSION,
            version_max: toxmail_protocol::PROTOCOL_LEVEL,
            max_envelope: self.config.max_envelope,
        });
        self.send(pk, hello);
    }

    /// Whether our last hello to `peer` went out [`HELLO_RETRY`] ago or more.
    fn hello_stale(&self, peer: &Peer) -> bool {
        peer.hello_sent
            .is_some_and(|at| self.now.duration_since(at) >= HELLO_RETRY)
    }

    /// Says hello again to online peers whose hello is still missing.
    fn tick_hellos(&mut self) {
        let mut due: Vec<PublicKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.online && p.hello.is_none() && self.hello_stale(p))
            .map(|(pk, _)| *pk)
            .collect();
        due.sort_unstable();
        for pk in due {
            tracing::debug!(peer = %pk, "no hello from the peer yet; saying hello again");
            self.send_hello(pk);
        }
    }

    fn peer_offline(&mut self, pk: PublicKey, friend: FriendNumber) {
        let said_hello = self
            .peers
            .get_mut(&pk)
            .and_then(|peer| {
                peer.online = false;
                peer.hello_sent = None;
                peer.hello.take()
            })
            .is_some();
        if said_hello {
            self.emit(PeerEvent::Offline(pk));
        }
        self.sending_peer_offline(pk);
        self.receiving_friend_gone(pk, friend);
    }

    fn on_packet(&mut self, friend: FriendNumber, from: PublicKey, data: &[u8]) {
        if data.first() != Some(&toxmail_protocol::PACKET_ID) {
            return; // another application's lossless packet
        }
        let frame = match Frame::decode(data) {
            Ok(f) => f,
            Err(e) => {
                self.count(|s| &s.frames_rejected);
                tracing::warn!(peer = %from, error = %e, len = data.len(), "malformed frame refused");
                return;
            }
        };
        match frame {
            Frame::Hello(hello) => self.on_hello(from, hello),
            Frame::Offer(offer) => self.on_offer(from, offer),
            Frame::Ack(id) => self.verdict(from, id, Ok(())),
            Frame::Nack(nack) => self.on_nack(from, nack),
            Frame::Relay(relay) => self.on_relay_frame(friend, from, relay),
        }
    }

    fn on_hello(&mut self, from: PublicKey, hello: Hello) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        let first = peer.hello.replace(hello.clone()).is_none();
        if peer.hello_sent.is_none() {
            self.peer_online(from);
        } else if !first && self.hello_stale(&self.peers[&from]) {
            // A repeated hello: the peer may lack ours.
            self.send_hello(from);
        }
        if first {
            self.emit(PeerEvent::Online(from));
        }
        self.offer_waiting(from, &hello);
    }

    fn on_relay_frame(&mut self, _friend: FriendNumber, from: PublicKey, frame: RelayFrame) {
        match frame {
            RelayFrame::Deposit(d) => self.on_deposit(from, d),
            RelayFrame::Custody(c) => self.verdict(from, c.message_id, Ok(())),
            RelayFrame::Refuse(r) if r.message_id != toxmail_protocol::REGISTER_SUBJECT => {
                let id = r.message_id;
                self.verdict(from, id, Err(DeliveryError::RelayRefused(r)))
            }
            frame => self.emit(PeerEvent::Relay { from, frame }),
        }
    }

    /// Transfers coming in whose spool must be kept (receiving or being stored).
    pub(crate) fn active_spools(&self) -> Vec<(PublicKey, MessageId)> {
        self.receiving.active()
    }
}
