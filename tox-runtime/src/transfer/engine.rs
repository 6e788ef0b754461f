//! The engine task: one per node. It owns the pure [`Core`] and translates: node events, delivery
//! commands and results of inbox calls become core inputs; core actions become node calls, spool
//! reads and writes, inbox calls (run as separate tasks), replies and subscriber events. Friend
//! requests and the operator's friendship decisions are in `friends.rs`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use toxmail_protocol::{Frame, MessageId, NackCode, PublicKey, ToxId};

use super::core::{Action, Core, CoreConfig, FileKey, Input, OfferOutcome, OutKey};
use super::strangers::Strangers;
use super::{Command, DeliveryError, Destination, Inbox, PeerEvent, TransferConfig, TransferStats};
use crate::event::{Event, FileControl};
use crate::node::{Handle, Node};

const SECOND: Duration = Duration::from_secs(1);
/// The spool is swept at least this often (more often when its maximum age is short).
const SWEEP_MAX_INTERVAL: Duration = Duration::from_secs(600);

pub(crate) struct Engine<I> {
    pub(super) node: Node,
    pub(super) handle: Handle,
    pub(super) inbox: Arc<I>,
    pub(super) config: TransferConfig,
    pub(super) stats: Arc<TransferStats>,
    pub(super) core: Core,
    /// Callers waiting for their delivery's verdict.
    replies: HashMap<OutKey, oneshot::Sender<Result<(), DeliveryError>>>,
    /// Spool files of transfers coming in, open while the transfer lives.
    pub(super) spools: HashMap<FileKey, File>,
    /// Results of inbox calls, back into the core.
    pub(super) internal: mpsc::UnboundedSender<Input>,
    subscribers: Vec<mpsc::UnboundedSender<PeerEvent>>,
    /// Friends accepted from strangers this run, until they prove themselves.
    pub(super) strangers: Strangers,
    /// Keys the operator vouched for (contacts) or we chose (relays): never strangers.
    pub(super) known: HashSet<PublicKey>,
    /// Keys the operator blocked: their friend requests are ignored.
    pub(super) blocked: HashSet<PublicKey>,
    pub(super) last_sweep: Instant,
    /// What `Courier::peer_level` reads.
    levels: super::PeerLevels,
    /// Full addresses of peers we were asked to deliver to: what a friend request needs.
    pub(super) addresses: HashMap<PublicKey, ToxId>,
    /// When each friend was last online, went offline, or was sent a friend request by us (the
    /// engine's start for friends not seen since): see `refriend_silent`.
    pub(super) heard: HashMap<PublicKey, Instant>,
    pub(super) started: Instant,
    pub(super) last_refriend_check: Instant,
    /// How often each friend was asked again without coming online since: the wait before the
    /// next request doubles each time.
    pub(super) asked_again: HashMap<PublicKey, u32>,
    /// Keys whose friend request we ignored this run (blocked, not a contact, a bound):
    /// c-toxcore drops their further requests unseen, so a later change of mind must clear that
    /// (`forget_ignored_request`).
    pub(super) ignored: VecDeque<PublicKey>,
    /// `Courier::reach` callers waiting for a peer to come online and say hello.
    reach: HashMap<PublicKey, Vec<oneshot::Sender<Result<(), DeliveryError>>>>,
}

impl<I: Inbox> Engine<I> {
    pub(crate) fn new(
        node: Node,
        inbox: Arc<I>,
        config: TransferConfig,
        stats: Arc<TransferStats>,
        levels: super::PeerLevels,
    ) -> Self {
        let handle = node.handle.clone();
        let (internal, _) = mpsc::unbounded_channel();
        let core_config = CoreConfig {
            max_envelope: config.max_envelope,
            ack_timeout: config.ack_timeout,
            max_peer_bytes: config.max_peer_bytes,
            trusted_relays: config.trusted_relays.clone(),
        };
        let core = Core::new(core_config, None, stats.clone(), Instant::now());
        Engine {
            node,
            handle,
            inbox,
            strangers: Strangers::new(config.strangers),
            config,
            stats,
            core,
            replies: HashMap::new(),
            spools: HashMap::new(),
            internal,
            subscribers: Vec::new(),
            known: Default::default(),
            blocked: Default::default(),
            last_sweep: Instant::now(),
            levels,
            addresses: HashMap::new(),
            heard: HashMap::new(),
            started: Instant::now(),
            last_refriend_check: Instant::now(),
            asked_again: HashMap::new(),
            ignored: VecDeque::new(),
            reach: HashMap::new(),
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
            Ok(info) => self.core.set_self_key(info.public_key),
            Err(e) => tracing::error!(error = %e, "cannot read our own key; relayed mail refused"),
        }
        self.load_friends().await;
        let (_, dummy) = mpsc::unbounded_channel();
        let mut events = std::mem::replace(&mut self.node.events, dummy);
        let mut tick = tokio::time::interval(SECOND);
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

    /// Feeds one input to the core and carries out what it asks, feeding the results of node
    /// calls back before anything else happens.
    pub(super) async fn feed(&mut self, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for action in self.core.handle(Instant::now(), input) {
                if let Some(result) = self.perform(action).await {
                    inputs.push_back(result);
                }
            }
        }
    }

    /// Peers we have mail for: deliveries waiting for their verdict, and `Courier::reach`
    /// callers waiting for the peer to come online (a peer may come up more than once).
    pub(super) fn waiting_peers(&self) -> impl Iterator<Item = PublicKey> + '_ {
        let delivering = self.replies.keys().map(|(pk, _)| *pk);
        delivering.chain(self.reach.keys().copied())
    }

    async fn load_friends(&mut self) {
        match self.handle.friends().await {
            Ok(friends) => {
                for f in friends {
                    let (pk, friend) = (f.public_key, f.friend);
                    self.feed(Input::Friend { pk, friend }).await;
                    if f.connection.is_online() {
                        let online = true;
                        self.feed(Input::Connection { pk, friend, online }).await;
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
            } => {
                let pk = match self.write_to(to).await {
                    Ok(pk) => pk,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                self.replies.insert((pk, id), reply);
                let to = pk;
                let input = Input::Deliver {
                    to,
                    id,
                    envelope,
                    deposit_until,
                };
                self.feed(input).await;
            }
            Command::AllowContact(pk) => {
                self.config.friend_policy.allow(pk);
                self.known.insert(pk);
                self.strangers.proven(&pk);
                self.forget_ignored_request(pk).await;
            }
            Command::Revoke { key, block } => self.revoke(key, block).await,
            Command::Unblock(key) => {
                self.blocked.remove(&key);
                self.forget_ignored_request(key).await;
            }
            Command::Subscribe(tx) => self.subscribers.push(tx),
            Command::SendRelayFrame { to, frame, reply } => {
                let sent = match self.core.peers.get(&to).filter(|p| p.online) {
                    Some(peer) => {
                        let data = Frame::Relay(frame).encode();
                        self.handle.send_packet(peer.friend, data).await.is_ok()
                    }
                    None => false,
                };
                let _ = reply.send(sent);
            }
            Command::AddRelay { relay, reply } => {
                let result = self.befriend(relay).await;
                if result.is_ok() {
                    let pk = relay.public_key();
                    self.known.insert(pk);
                    self.strangers.proven(&pk);
                    self.feed(Input::TrustRelay(pk)).await;
                }
                let _ = reply.send(result);
            }
            Command::Reach { to, reply } => self.reach(to, reply).await,
        }
    }

    /// A peer we chose to write to: befriended (first contact sends the friend request) and, so,
    /// never a stranger.
    async fn write_to(&mut self, to: Destination) -> Result<PublicKey, DeliveryError> {
        self.befriend(to).await?;
        let pk = to.public_key();
        self.strangers.proven(&pk);
        Ok(pk)
    }

    /// `Courier::reach`: befriends `to` if needed, answers at once when it is online and has
    /// said hello, else when it does (`Action::Emit(PeerEvent::Online)`).
    async fn reach(&mut self, to: Destination, reply: oneshot::Sender<Result<(), DeliveryError>>) {
        let pk = match self.write_to(to).await {
            Ok(pk) => pk,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let online = self.core.peers.get(&pk);
        if online.is_some_and(|p| p.online && p.hello.is_some()) {
            let _ = reply.send(Ok(()));
        } else {
            self.reach.entry(pk).or_default().push(reply);
        }
    }

    async fn on_event(&mut self, event: Event) {
        let input = match event {
            Event::FriendRequest {
                public_key,
                message,
            } => return self.on_friend_request(public_key, &message).await,
            Event::FriendConnection {
                friend,
                public_key,
                status,
            } => {
                self.heard.insert(public_key, Instant::now());
                if status.is_online() {
                    self.asked_again.remove(&public_key);
                }
                Input::Connection {
                    pk: public_key,
                    friend,
                    online: status.is_online(),
                }
            }
            Event::Packet {
                friend,
                public_key,
                data,
            } => Input::Packet {
                friend,
                from: public_key,
                data,
            },
            Event::FileRecv {
                friend,
                public_key,
                file,
                kind,
                size,
                file_id,
                ..
            } => Input::FileRecv {
                friend,
                from: public_key,
                file,
                kind,
                size,
                id: MessageId(file_id),
            },
            Event::FileChunk {
                friend,
                file,
                position,
                data,
            } => Input::FileChunk {
                key: (friend, file),
                position,
                data,
            },
            Event::FileControl {
                friend,
                file,
                control: FileControl::Cancel,
            } => Input::IncomingCancelled((friend, file)),
            Event::FileSent { friend, file } => Input::FileDone {
                key: (friend, file),
                aborted: false,
            },
            Event::FileSendAborted { friend, file } => Input::FileDone {
                key: (friend, file),
                aborted: true,
            },
            Event::FileControl { .. } | Event::SelfConnection(_) => return,
        };
        self.feed(input).await;
    }

    async fn on_internal(&mut self, done: Input) {
        if let Input::Stored {
            from,
            origin,
            result,
            ..
        } = &done
        {
            // A seal that verified proves a correspondent, even when the mail is refused.
            if !matches!(result, Err(r) if r.code == NackCode::Forged) {
                self.strangers.proven(from);
                self.strangers.proven(origin);
            }
        }
        self.feed(done).await;
    }

    async fn on_tick(&mut self) {
        let mut abandoned: Vec<OutKey> = self
            .replies
            .iter()
            .filter(|(_, r)| r.is_closed())
            .map(|(k, _)| *k)
            .collect();
        abandoned.sort_unstable();
        for key in abandoned {
            self.replies.remove(&key);
            self.feed(Input::Abandoned(key)).await;
        }
        self.drop_expired_strangers().await;
        self.refriend_silent().await;
        self.reach.retain(|_, waiting| {
            waiting.retain(|r| !r.is_closed());
            !waiting.is_empty()
        });
        self.feed(Input::Tick).await;
        let sweep_every = (self.config.spool_max_age / 4).clamp(SECOND, SWEEP_MAX_INTERVAL);
        if self.last_sweep.elapsed() >= sweep_every {
            self.sweep_spool();
        }
    }

    /// Carries out one action; returns the result the core asked for, if any.
    async fn perform(&mut self, action: Action) -> Option<Input> {
        match action {
            Action::Send { to, friend, frame } => {
                if let Err(e) = self.handle.send_packet(friend, frame.encode()).await {
                    tracing::debug!(peer = %to, error = %e, "frame not sent");
                }
            }
            Action::Offer {
                key,
                friend,
                frame,
                envelope,
            } => {
                let outcome = if let Err(e) = self.handle.send_packet(friend, frame.encode()).await
                {
                    tracing::debug!(peer = %key.0, error = %e, "offer not sent");
                    OfferOutcome::FrameNotSent
                } else {
                    let name = b"toxmail".to_vec();
                    match self.handle.file_send(friend, key.1.0, envelope, name).await {
                        Ok(file) => OfferOutcome::Started(file),
                        Err(e) => {
                            tracing::debug!(peer = %key.0, error = %e, "file not started");
                            OfferOutcome::FileNotStarted
                        }
                    }
                };
                return Some(Input::Offered { key, outcome });
            }
            Action::Cancel((friend, file)) => self.handle.file_cancel_now(friend, file),
            Action::Accept {
                key,
                from,
                id,
                size,
            } => {
                let outcome = self.accept(key, from, id, size).await;
                return Some(Input::Accepted { key, outcome });
            }
            Action::Write {
                key,
                position,
                data,
                sync,
            } => {
                let Some(spool) = self.spools.get(&key) else {
                    return Some(Input::WriteFailed(key));
                };
                let written = spool.write_all_at(&data, position);
                if let Err(e) = written.and_then(|()| if sync { spool.sync_data() } else { Ok(()) })
                {
                    tracing::error!(error = %e, "spool write failed");
                    return Some(Input::WriteFailed(key));
                }
            }
            Action::Close(key) => {
                self.spools.remove(&key);
            }
            Action::Check { from, id } => {
                let (inbox, internal) = (self.inbox.clone(), self.internal.clone());
                tokio::spawn(async move {
                    let already_stored = inbox.contains(from, id).await;
                    let _ = internal.send(Input::Checked {
                        from,
                        id,
                        already_stored,
                    });
                });
            }
            Action::CheckDeposit { from, deposit } => {
                let (inbox, internal) = (self.inbox.clone(), self.internal.clone());
                let id = deposit.message_id;
                tokio::spawn(async move {
                    let result = inbox.check_deposit(from, deposit).await;
                    let _ = internal.send(Input::DepositChecked { from, id, result });
                });
            }
            Action::Store {
                key,
                from,
                id,
                resumed,
                relayed_to,
                deposit,
            } => {
                self.spools.remove(&key);
                self.store(from, id, resumed, relayed_to, deposit);
            }
            Action::RemoveSpool { from, id } => {
                let _ = std::fs::remove_file(self.spool_path(&from, &id));
            }
            Action::Emit(event) => {
                if let PeerEvent::Online(pk) = event
                    && let Some(hello) = self.core.peers.get(&pk).and_then(|p| p.hello.as_ref())
                {
                    let mut levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
                    levels.insert(pk, hello.version_max);
                }
                if let PeerEvent::Online(pk) = event {
                    for reply in self.reach.remove(&pk).unwrap_or_default() {
                        let _ = reply.send(Ok(()));
                    }
                }
                self.subscribers.retain(|s| s.send(event.clone()).is_ok());
            }
            Action::Complete { key, result } => {
                if let Some(reply) = self.replies.remove(&key) {
                    let _ = reply.send(result);
                }
            }
        }
        None
    }
}
