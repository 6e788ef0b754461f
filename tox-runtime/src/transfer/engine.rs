//! The engine task: one per node, owning all transfer state. It reacts to node events, delivery
//! commands, results of inbox calls (run as separate tasks), and a one-second tick for timeouts.
//! This file holds the sending side and the dispatch; `incoming.rs` holds the receiving side.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use toxmail_protocol::{
    Frame, Hello, MessageId, NackClass, NackCode, Offer, PROTOCOL_VERSION, PublicKey,
    friend_request_message,
};

use super::incoming::Incoming;
use super::policy::Verdict;
use super::strangers::Strangers;
use super::{
    Command, DeliveryError, DepositRefusal, Destination, Inbox, PeerEvent, Refusal, TransferConfig,
    TransferStats,
};
use crate::event::{Event, FileControl, FileNumber, FriendNumber};
use crate::node::{Handle, Node};

/// After an outgoing file was cancelled with no verdict following, wait this long, then re-offer.
const ABORT_GRACE: Duration = Duration::from_secs(1);
const SECOND: Duration = Duration::from_secs(1);
/// The spool is swept at least this often (more often when its maximum age is short).
const SWEEP_MAX_INTERVAL: Duration = Duration::from_secs(600);

pub(super) struct Peer {
    pub(super) friend: FriendNumber,
    pub(super) online: bool,
    hello_sent: bool,
    hello: Option<Hello>,
}

#[derive(Debug)]
enum OutState {
    /// Waiting for the friend to be online and to have said hello.
    Waiting,
    /// The file is being sent, since then.
    Sending { file: FileNumber, since: Instant },
    /// Every byte went out (or the file was cancelled): waiting for a verdict since then.
    AwaitingVerdict { since: Instant, aborted: bool },
}

type OutKey = (PublicKey, MessageId);

/// One delivery; its peer is the first half of its key.
struct Outbound {
    envelope: Arc<[u8]>,
    /// `Some(expires)`: a deposit with the relay `to`.
    deposit_until: Option<u64>,
    reply: oneshot::Sender<Result<(), DeliveryError>>,
    state: OutState,
}

/// Results of work the engine spawned.
pub(super) enum Internal {
    OfferChecked {
        from: PublicKey,
        id: MessageId,
        already_stored: bool,
    },
    Stored {
        from: PublicKey,
        /// Who sealed the envelope: `from` itself, or someone else when `from` is a relay.
        origin: PublicKey,
        id: MessageId,
        result: Result<(), Refusal>,
    },
    DepositChecked {
        from: PublicKey,
        id: MessageId,
        result: Result<Option<u64>, DepositRefusal>,
    },
    Deposited {
        from: PublicKey,
        id: MessageId,
        result: Result<u64, DepositRefusal>,
    },
}

pub(crate) struct Engine<I> {
    pub(super) node: Node,
    pub(super) handle: Handle,
    pub(super) inbox: Arc<I>,
    pub(super) config: TransferConfig,
    pub(super) stats: Arc<TransferStats>,
    pub(super) peers: HashMap<PublicKey, Peer>,
    /// Keyed by peer and message id: one message may go to a peer and to its relays at once.
    outbound: HashMap<OutKey, Outbound>,
    pub(super) incoming: Incoming,
    pub(super) internal: mpsc::UnboundedSender<Internal>,
    /// Our own public key, for envelopes that reach us through a relay.
    pub(super) self_key: Option<PublicKey>,
    subscribers: Vec<mpsc::UnboundedSender<PeerEvent>>,
    /// Friends accepted from strangers this run, until they prove themselves.
    pub(super) strangers: Strangers,
    /// Keys the operator vouched for (contacts) or we chose (relays): never strangers.
    known: std::collections::HashSet<PublicKey>,
    /// Keys the operator blocked: their friend requests are ignored.
    blocked: std::collections::HashSet<PublicKey>,
    last_sweep: Instant,
    /// Our files whose envelope the peer acknowledged before c-toxcore reported the file sent:
    /// left to finish on their own (a kill now could cross the peer's own end of the transfer
    /// and reach the next file given the same, reused number), cancelled only if they never do.
    finishing: HashMap<(FriendNumber, FileNumber), Instant>,
}

impl<I: Inbox> Engine<I> {
    pub(crate) fn new(
        node: Node,
        inbox: Arc<I>,
        config: TransferConfig,
        stats: Arc<TransferStats>,
    ) -> Self {
        let handle = node.handle.clone();
        let (internal, _) = mpsc::unbounded_channel();
        let config_strangers = config.strangers;
        Engine {
            node,
            handle,
            inbox,
            config,
            stats,
            peers: HashMap::new(),
            outbound: HashMap::new(),
            incoming: Incoming::default(),
            internal,
            self_key: None,
            subscribers: Vec::new(),
            strangers: Strangers::new(config_strangers),
            known: Default::default(),
            blocked: Default::default(),
            last_sweep: Instant::now(),
            finishing: HashMap::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut stop: oneshot::Receiver<()>,
    ) -> Node {
        let (internal_tx, mut internal_rx) = mpsc::unbounded_channel();
        self.internal = internal_tx;
        if let Err(e) = std::fs::create_dir_all(&self.config.spool_dir) {
            tracing::error!(dir = %self.config.spool_dir.display(), error = %e, "cannot create spool directory");
        }
        self.sweep_spool();
        match self.handle.info().await {
            Ok(info) => self.self_key = Some(info.public_key),
            Err(e) => tracing::error!(error = %e, "cannot read our own key; relayed mail refused"),
        }
        self.load_friends().await;
        let (_, dummy) = mpsc::unbounded_channel();
        let mut events = std::mem::replace(&mut self.node.events, dummy);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(event) = events.recv() => self.on_event(event).await,
                Some(cmd) = commands.recv() => self.on_command(cmd).await,
                Some(done) = internal_rx.recv() => self.on_internal(done).await,
                _ = tick.tick() => self.on_tick().await,
            }
        }
        self.node.events = events;
        self.node
    }

    async fn load_friends(&mut self) {
        match self.handle.friends().await {
            Ok(friends) => {
                for f in friends {
                    self.peers.insert(
                        f.public_key,
                        Peer {
                            friend: f.friend,
                            online: false,
                            hello_sent: false,
                            hello: None,
                        },
                    );
                    if f.connection.is_online() {
                        self.peer_online(f.public_key).await;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list friends"),
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Deliver {
                to,
                id,
                envelope,
                deposit_until,
                reply,
            } => self.deliver(to, id, envelope, deposit_until, reply).await,
            Command::AllowContact(pk) => {
                self.config.friend_policy.allow(pk);
                self.known.insert(pk);
                self.strangers.proven(&pk);
            }
            Command::Revoke { key, block } => self.revoke(key, block).await,
            Command::Unblock(key) => {
                self.blocked.remove(&key);
            }
            Command::Subscribe(tx) => self.subscribers.push(tx),
            Command::SendRelayFrame { to, frame, reply } => {
                let sent = self.send_frame(to, &Frame::Relay(frame)).await;
                let _ = reply.send(sent);
            }
            Command::AddRelay { relay, reply } => {
                let result = self.befriend(relay).await;
                if result.is_ok() {
                    self.config.trusted_relays.insert(relay.public_key());
                    self.known.insert(relay.public_key());
                    self.strangers.proven(&relay.public_key());
                }
                let _ = reply.send(result);
            }
        }
    }

    /// Tells every subscriber; forgets those that went away.
    pub(super) fn emit(&mut self, event: PeerEvent) {
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::FriendRequest {
                public_key,
                message,
            } => self.on_friend_request(public_key, &message).await,
            Event::FriendConnection {
                friend,
                public_key,
                status,
            } => {
                let peer = self.peers.entry(public_key).or_insert(Peer {
                    friend,
                    online: false,
                    hello_sent: false,
                    hello: None,
                });
                peer.friend = friend;
                tracing::info!(peer = %public_key, ?status, "friend connection");
                if status.is_online() {
                    self.peer_online(public_key).await;
                } else {
                    self.peer_offline(public_key, friend);
                }
            }
            Event::Packet {
                friend,
                public_key,
                data,
            } => self.on_packet(friend, public_key, &data).await,
            Event::FileRecv {
                friend,
                public_key,
                file,
                kind,
                size,
                file_id,
                ..
            } => {
                self.on_file_recv(friend, public_key, file, kind, size, MessageId(file_id))
                    .await
            }
            Event::FileChunk {
                friend,
                file,
                position,
                data,
            } => self.on_file_chunk(friend, file, position, &data).await,
            Event::FileControl {
                friend,
                file,
                control: FileControl::Cancel,
            } => self.incoming_cancelled(friend, file),
            Event::FileSent { friend, file } => self.file_done(friend, file, false),
            Event::FileSendAborted { friend, file } => self.file_done(friend, file, true),
            Event::FileControl { .. } | Event::SelfConnection(_) => {}
        }
    }

    async fn on_friend_request(&mut self, from: PublicKey, message: &[u8]) {
        if self.blocked.contains(&from) {
            self.stats
                .friend_requests_ignored
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %from, "friend request from a blocked key ignored");
            return;
        }
        let verdict = self.config.friend_policy.judge(&from, message);
        if verdict == Verdict::Accept
            && !self.known.contains(&from)
            && let Err(bound) = self.strangers.admit(from, Instant::now())
        {
            self.stats
                .friend_requests_bounded
                .fetch_add(1, Ordering::Relaxed);
            let pending = self.strangers.len();
            tracing::warn!(peer = %from, ?bound, pending, "stranger's friend request not taken: bound reached");
            return;
        }
        match verdict {
            Verdict::Accept => match self.handle.friend_add_norequest(from).await {
                Ok(friend) => {
                    tracing::info!(peer = %from, "accepted toxmail friend request");
                    self.peers.entry(from).or_insert(Peer {
                        friend,
                        online: false,
                        hello_sent: false,
                        hello: None,
                    });
                }
                Err(e) => {
                    tracing::warn!(peer = %from, error = %e, "could not accept friend request")
                }
            },
            verdict => {
                self.stats
                    .friend_requests_ignored
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %from, ?verdict, "friend request ignored");
            }
        }
    }

    async fn peer_online(&mut self, pk: PublicKey) {
        let Some(peer) = self.peers.get_mut(&pk) else {
            return;
        };
        peer.online = true;
        if !peer.hello_sent {
            peer.hello_sent = true;
            let hello = Frame::Hello(Hello {
                version_min: PROTOCOL_VERSION,
                version_max: PROTOCOL_VERSION,
                max_envelope: self.config.max_envelope,
            });
            self.send_frame(pk, &hello).await;
        }
    }

    fn peer_offline(&mut self, pk: PublicKey, friend: FriendNumber) {
        let said_hello = self
            .peers
            .get_mut(&pk)
            .and_then(|peer| {
                peer.online = false;
                peer.hello_sent = false;
                peer.hello.take()
            })
            .is_some();
        if said_hello {
            self.emit(PeerEvent::Offline(pk));
        }
        for (_, out) in self.outbound.iter_mut().filter(|(k, _)| k.0 == pk) {
            out.state = OutState::Waiting;
        }
        self.incoming_friend_gone(pk, friend);
    }

    pub(super) async fn send_frame(&self, to: PublicKey, frame: &Frame) -> bool {
        let Some(peer) = self.peers.get(&to).filter(|p| p.online) else {
            return false;
        };
        match self.handle.send_packet(peer.friend, frame.encode()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(peer = %to, error = %e, "frame not sent");
                false
            }
        }
    }

    async fn on_packet(&mut self, friend: FriendNumber, from: PublicKey, data: &[u8]) {
        if data.first() != Some(&toxmail_protocol::PACKET_ID) {
            return; // another application's lossless packet
        }
        let frame = match Frame::decode(data) {
            Ok(f) => f,
            Err(e) => {
                self.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(peer = %from, error = %e, len = data.len(), "malformed frame refused");
                return;
            }
        };
        match frame {
            Frame::Hello(hello) => self.on_hello(from, hello).await,
            Frame::Offer(offer) => self.on_offer(friend, from, offer).await,
            Frame::Ack(id) => self.verdict(from, id, Ok(())),
            Frame::Nack(nack) if is_mixed_up(&nack) => self.offer_again_soon(from, nack),
            Frame::Nack(nack) => {
                let id = nack.message_id;
                self.verdict(from, id, Err(DeliveryError::Refused(nack)))
            }
            Frame::Relay(relay) => self.on_relay_frame(friend, from, relay).await,
        }
    }

    async fn on_hello(&mut self, from: PublicKey, hello: Hello) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        let first = peer.hello.replace(hello.clone()).is_none();
        if !peer.hello_sent {
            self.peer_online(from).await;
        }
        if first {
            self.emit(PeerEvent::Online(from));
        }
        let compatible =
            hello.version_min <= PROTOCOL_VERSION && hello.version_max >= PROTOCOL_VERSION;
        let waiting: Vec<OutKey> = self
            .outbound
            .iter()
            .filter(|(k, o)| k.0 == from && matches!(o.state, OutState::Waiting))
            .map(|(key, _)| *key)
            .collect();
        for key in waiting {
            let id = key.1;
            if compatible {
                self.offer(key).await;
            } else {
                let nack = toxmail_protocol::Nack {
                    message_id: id,
                    class: NackClass::Permanent,
                    code: NackCode::UnsupportedVersion,
                    detail: format!(
                        "peer speaks protocol versions {}..={}, we speak {PROTOCOL_VERSION}",
                        hello.version_min, hello.version_max
                    ),
                };
                self.verdict(from, id, Err(DeliveryError::Refused(nack)));
            }
        }
    }

    /// The receiver got other bytes than the offered envelope (a transfer mixed up under load):
    /// not a verdict on the mail. Offer it again after the abort grace.
    fn offer_again_soon(&mut self, from: PublicKey, nack: toxmail_protocol::Nack) {
        tracing::info!(peer = %from, id = %nack.message_id, detail = %nack.detail, "transfer mixed up; offering again");
        if let Some(out) = self.outbound.get_mut(&(from, nack.message_id)) {
            out.state = OutState::AwaitingVerdict {
                since: Instant::now(),
                aborted: true,
            };
        }
    }

    /// Ack or nack from `from` for `id`: completes the delivery if it is ours to that peer.
    pub(super) fn verdict(
        &mut self,
        from: PublicKey,
        id: MessageId,
        result: Result<(), DeliveryError>,
    ) {
        if !self.outbound.contains_key(&(from, id)) {
            tracing::debug!(peer = %from, %id, "verdict for no delivery of ours");
            if result.is_ok() {
                self.emit(PeerEvent::Receipt { from, id });
            }
            return;
        }
        let out = self.outbound.remove(&(from, id)).expect("checked above");
        if let OutState::Sending { file, .. } = out.state
            && let Some(peer) = self.peers.get(&from)
        {
            if result.is_ok() {
                // Stored: the peer has every byte, the file ends by itself.
                self.finishing.insert((peer.friend, file), Instant::now());
            } else {
                self.handle.file_cancel_now(peer.friend, file);
            }
        }
        let _ = out.reply.send(result);
    }

    /// Makes `to` a friend unless it is one: first contact sends a friend request.
    async fn befriend(&mut self, to: Destination) -> Result<(), DeliveryError> {
        let pk = to.public_key();
        if self.peers.contains_key(&pk) {
            return Ok(());
        }
        let Destination::Address(address) = to else {
            return Err(DeliveryError::UnknownFriend(pk));
        };
        let hello = friend_request_message(&self.config.request_note);
        let friend = self.handle.friend_add(address, hello).await?;
        tracing::info!(peer = %pk, "friend request sent");
        self.peers.insert(
            pk,
            Peer {
                friend,
                online: false,
                hello_sent: false,
                hello: None,
            },
        );
        Ok(())
    }

    async fn deliver(
        &mut self,
        to: Destination,
        id: MessageId,
        envelope: Arc<[u8]>,
        deposit_until: Option<u64>,
        reply: oneshot::Sender<Result<(), DeliveryError>>,
    ) {
        let pk = to.public_key();
        if let Err(e) = self.befriend(to).await {
            let _ = reply.send(Err(e));
            return;
        }
        self.strangers.proven(&pk); // we chose to write to it
        self.outbound.insert(
            (pk, id),
            Outbound {
                envelope,
                deposit_until,
                reply,
                state: OutState::Waiting,
            },
        );
        if self.peers[&pk].hello.is_some() {
            self.offer((pk, id)).await;
        }
    }

    /// Sends the offer and starts the file; on any failure the delivery waits for the next chance.
    async fn offer(&mut self, key: OutKey) {
        let (to, id) = key;
        let Some(out) = self.outbound.get(&key) else {
            return;
        };
        let (envelope, deposit_until) = (out.envelope.clone(), out.deposit_until);
        let size = envelope.len() as u64;
        let Some(peer) = self.peers.get(&to).filter(|p| p.online) else {
            return;
        };
        let (friend, limit) = (peer.friend, peer.hello.as_ref().map(|h| h.max_envelope));
        if let Some(limit) = limit.filter(|l| size > *l) {
            return self.verdict(to, id, Err(DeliveryError::TooLarge { size, limit }));
        }
        let offer = match deposit_until {
            None => Frame::Offer(Offer {
                message_id: id,
                size,
            }),
            Some(expires) => match super::relay::deposit_frame(id, &envelope, expires) {
                Ok(frame) => frame,
                Err(e) => return self.verdict(to, id, Err(e)),
            },
        };
        if !self.send_frame(to, &offer).await {
            return;
        }
        let state = match self
            .handle
            .file_send(friend, id.0, envelope, b"toxmail".to_vec())
            .await
        {
            Ok(file) => {
                tracing::debug!(peer = %to, %id, file, "file started");
                // c-toxcore hands out a file number only once its last transfer is over: a
                // delivery still marked as sending under it missed that end (its events are
                // still queued). Let it wait for its verdict, so it can never cancel this file.
                for (k, o) in self.outbound.iter_mut() {
                    if *k != key
                        && k.0 == to
                        && matches!(o.state, OutState::Sending { file: f, .. } if f == file)
                    {
                        o.state = OutState::AwaitingVerdict {
                            since: Instant::now(),
                            aborted: true,
                        };
                    }
                }
                OutState::Sending {
                    file,
                    since: Instant::now(),
                }
            }
            Err(e) => {
                tracing::debug!(peer = %to, %id, error = %e, "file not started; will retry");
                OutState::AwaitingVerdict {
                    since: Instant::now(),
                    aborted: true,
                }
            }
        };
        if let Some(out) = self.outbound.get_mut(&key) {
            out.state = state;
        }
    }

    /// Deletes abandoned partial envelopes: too old, or the oldest while over the byte cap.
    fn sweep_spool(&mut self) {
        self.last_sweep = Instant::now();
        let active = self.active_spool_paths();
        let (age, cap) = (self.config.spool_max_age, self.config.spool_max_bytes);
        let dir = &self.config.spool_dir;
        match super::spool::sweep(dir, std::time::SystemTime::now(), age, cap, &active) {
            Ok(swept) if swept.files > 0 => {
                let stats = &self.stats.spool_files_swept;
                stats.fetch_add(swept.files, Ordering::Relaxed);
                tracing::info!(
                    files = swept.files,
                    bytes = swept.bytes,
                    "abandoned partial envelopes deleted"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "spool sweep failed"),
        }
    }

    /// Ends the friendship with `key` and takes back what vouched for it; with `block`, its
    /// friend requests are ignored from now on.
    async fn revoke(&mut self, key: PublicKey, block: bool) {
        if block {
            self.blocked.insert(key);
        }
        self.config.friend_policy.forbid(&key);
        self.known.remove(&key);
        self.strangers.proven(&key);
        if self.peers.remove(&key).is_some() {
            match self.handle.friend_delete(key).await {
                Ok(()) => tracing::info!(peer = %key, block, "friendship ended by the operator"),
                Err(e) => tracing::warn!(peer = %key, error = %e, "could not end a friendship"),
            }
        }
    }

    /// Unfriends strangers that delivered nothing validly sealed within their grace period.
    async fn drop_expired_strangers(&mut self) {
        for pk in self.strangers.expired(Instant::now()) {
            self.stats.strangers_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %pk, "stranger delivered nothing valid in time; unfriended");
            self.peers.remove(&pk);
            if let Err(e) = self.handle.friend_delete(pk).await {
                tracing::warn!(peer = %pk, error = %e, "could not unfriend a stranger");
            }
        }
    }

    /// A file that has been "sending" for longer than its size can explain (the receiver
    /// neither took nor refused it: a transfer lost between the two sides under load) is
    /// cancelled and offered again after the abort grace, instead of waiting forever.
    fn cancel_stalled_files(&mut self) {
        let now = Instant::now();
        for ((to, id), out) in self.outbound.iter_mut() {
            let OutState::Sending { file, since } = out.state else {
                continue;
            };
            let allowance = self.config.ack_timeout + stall_allowance(out.envelope.len());
            if now.duration_since(since) < allowance {
                continue;
            }
            tracing::info!(peer = %to, %id, file, "file made no progress; cancelled, offering again");
            if let Some(peer) = self.peers.get(to) {
                self.handle.file_cancel_now(peer.friend, file);
            }
            out.state = OutState::AwaitingVerdict {
                since: now,
                aborted: true,
            };
        }
    }

    /// Deliveries whose caller gave up (the mail expired, the bridge stops it) are forgotten, and a
    /// file still sending is cancelled: the receiver must not store a mail the sender bounced.
    fn drop_abandoned_deliveries(&mut self) {
        let abandoned: Vec<OutKey> = self
            .outbound
            .iter()
            .filter(|(_, o)| o.reply.is_closed())
            .map(|(k, _)| *k)
            .collect();
        for key in abandoned {
            let out = self.outbound.remove(&key).expect("listed above");
            if let OutState::Sending { file, .. } = out.state
                && let Some(peer) = self.peers.get(&key.0)
            {
                tracing::info!(peer = %key.0, id = %key.1, file, "delivery given up; its file cancelled");
                self.handle.file_cancel_now(peer.friend, file);
            }
        }
    }

    /// Files acknowledged long ago that c-toxcore still has not reported sent: cancelled.
    fn cancel_unfinished_files(&mut self) {
        let limit = self.config.ack_timeout;
        let stale: Vec<_> = self
            .finishing
            .iter()
            .filter(|(_, since)| since.elapsed() >= limit)
            .map(|(k, _)| *k)
            .collect();
        for (friend, file) in stale {
            self.finishing.remove(&(friend, file));
            tracing::debug!(friend, file, "acknowledged file never finished; cancelled");
            self.handle.file_cancel_now(friend, file);
        }
    }

    fn file_done(&mut self, friend: FriendNumber, file: FileNumber, aborted: bool) {
        self.finishing.remove(&(friend, file));
        let Some(pk) = self
            .peers
            .iter()
            .find(|(_, p)| p.friend == friend)
            .map(|(k, _)| *k)
        else {
            return;
        };
        for (_, out) in self.outbound.iter_mut().filter(|(k, _)| k.0 == pk) {
            if matches!(out.state, OutState::Sending { file: f, .. } if f == file) {
                out.state = OutState::AwaitingVerdict {
                    since: Instant::now(),
                    aborted,
                };
            }
        }
    }

    async fn on_tick(&mut self) {
        self.expire_orphans().await;
        self.drop_abandoned_deliveries();
        self.cancel_stalled_files();
        self.cancel_unfinished_files();
        self.drop_expired_strangers().await;
        self.expire_offers().await;
        let sweep_every = (self.config.spool_max_age / 4).clamp(SECOND, SWEEP_MAX_INTERVAL);
        if self.last_sweep.elapsed() >= sweep_every {
            self.sweep_spool();
        }
        let now = Instant::now();
        let due: Vec<OutKey> = self
            .outbound
            .iter()
            .filter(|(_, o)| match o.state {
                OutState::AwaitingVerdict { since, aborted } => {
                    let wait = if aborted {
                        ABORT_GRACE
                    } else {
                        self.config.ack_timeout + verdict_allowance(o.envelope.len())
                    };
                    now.duration_since(since) >= wait
                }
                _ => false,
            })
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            tracing::debug!(id = %key.1, "no verdict; offering again");
            self.offer(key).await;
        }
    }

    async fn on_internal(&mut self, done: Internal) {
        match done {
            Internal::OfferChecked {
                from,
                id,
                already_stored,
            } => self.offer_checked(from, id, already_stored).await,
            Internal::Stored {
                from,
                origin,
                id,
                result,
            } => self.stored(from, origin, id, result).await,
            Internal::DepositChecked { from, id, result } => {
                self.deposit_checked(from, id, result).await
            }
            Internal::Deposited { from, id, result } => self.deposited(from, id, result).await,
        }
    }
}

/// How long sending `len` bytes may take beyond the ack timeout before the file counts as
/// stalled: at 64 KiB/s, far below what a loopback or home link carries.
fn stall_allowance(len: usize) -> Duration {
    Duration::from_secs((len / (64 * 1024)) as u64)
}

/// How long the receiver may take to store `len` bytes (read the spool, open the envelope,
/// commit it) beyond the ack timeout: 1 s per MiB, for a slow disk on a small board.
fn verdict_allowance(len: usize) -> Duration {
    Duration::from_secs((len / (1024 * 1024)) as u64)
}

/// A temporary `Malformed` nack: the receiver's spool did not hold the offered envelope.
fn is_mixed_up(nack: &toxmail_protocol::Nack) -> bool {
    nack.class == NackClass::Temporary && nack.code == NackCode::Malformed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_envelopes_get_more_time_to_be_stored_and_to_be_sent() {
        let mib = 1024 * 1024;
        assert_eq!(verdict_allowance(10 * 1024), Duration::ZERO);
        assert_eq!(verdict_allowance(64 * mib), Duration::from_secs(64));
        assert_eq!(stall_allowance(64 * 1024), Duration::from_secs(1));
        assert_eq!(stall_allowance(64 * mib), Duration::from_secs(1024));
    }
}
