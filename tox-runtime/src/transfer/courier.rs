//! The handle to a running transfer engine (`Courier`) and the commands it sends the engine task.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use toxmail_protocol::{MessageId, PublicKey, RelayFrame};

use super::{
    DeliveryError, Destination, Inbox, PeerEvent, TransferConfig, TransferStats, engine, lanes,
};
use crate::node::{Handle, Node};

pub(crate) enum Command {
    Deliver {
        to: Destination,
        id: MessageId,
        envelope: Arc<[u8]>,
        /// `Some(expires)`: deposit with the relay `to` instead of delivering to it.
        deposit_until: Option<u64>,
        reply: oneshot::Sender<Result<(), DeliveryError>>,
    },
    AllowContact(PublicKey),
    /// Ends the friendship with a key and takes back its contact status; `block` also ignores
    /// its friend requests from now on.
    Revoke {
        key: PublicKey,
        block: bool,
    },
    Unblock(PublicKey),
    Subscribe(mpsc::UnboundedSender<PeerEvent>),
    SendRelayFrame {
        to: PublicKey,
        frame: RelayFrame,
        reply: oneshot::Sender<bool>,
    },
    AddRelay {
        relay: Destination,
        reply: oneshot::Sender<Result<(), DeliveryError>>,
    },
    /// Answered when `to` is online and has said hello (at once if it is already).
    Reach {
        to: Destination,
        reply: oneshot::Sender<Result<(), DeliveryError>>,
    },
}

/// A running transfer engine over one node. Cloneable; stops with [`CourierTask::shutdown`].
#[derive(Clone, Debug)]
pub struct Courier {
    commands: mpsc::UnboundedSender<Command>,
    handle: Handle,
    stats: Arc<TransferStats>,
    lanes: Arc<lanes::Lanes>,
    levels: PeerLevels,
}

/// The protocol level each peer announced in its last `Hello` this run (kept while it is
/// offline), shared between the engine task and its couriers.
pub(crate) type PeerLevels = Arc<std::sync::Mutex<std::collections::HashMap<PublicKey, u8>>>;

/// Keeps the engine task and the node so both can be stopped in order.
#[derive(Debug)]
pub struct CourierTask {
    task: JoinHandle<Node>,
    stop: oneshot::Sender<()>,
}

impl Courier {
    /// Takes over `node`'s event stream and starts the engine task.
    pub fn start<I: Inbox>(node: Node, inbox: I, config: TransferConfig) -> (Courier, CourierTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let stats = Arc::new(TransferStats::default());
        let courier = Courier {
            commands: tx,
            handle: node.handle.clone(),
            stats: stats.clone(),
            lanes: Arc::default(),
            levels: PeerLevels::default(),
        };
        let levels = courier.levels.clone();
        let engine = engine::Engine::new(node, Arc::new(inbox), config, stats, levels);
        let task = tokio::spawn(engine.run(rx, stop_rx));
        (
            courier,
            CourierTask {
                task,
                stop: stop_tx,
            },
        )
    }

    pub fn node(&self) -> &Handle {
        &self.handle
    }

    pub fn stats(&self) -> &TransferStats {
        &self.stats
    }

    /// Delivers one sealed envelope and returns once the peer acknowledged that it stored it, or
    /// refused it. Disconnects and restarts in between are ridden out; dropping the future gives up.
    /// At most [`MAX_IN_FLIGHT_PER_PEER`](super::MAX_IN_FLIGHT_PER_PEER) deliveries to one peer are under way; the others wait.
    pub async fn deliver(
        &self,
        to: impl Into<Destination>,
        id: MessageId,
        envelope: Arc<[u8]>,
    ) -> Result<(), DeliveryError> {
        self.in_lane(to.into(), id, envelope, None).await
    }

    async fn in_lane(
        &self,
        to: Destination,
        id: MessageId,
        envelope: Arc<[u8]>,
        deposit_until: Option<u64>,
    ) -> Result<(), DeliveryError> {
        let _room = self
            .lanes
            .enter(to.public_key(), envelope.len())
            .await
            .ok_or(DeliveryError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Deliver {
                to,
                id,
                envelope,
                deposit_until,
                reply,
            })
            .map_err(|_| DeliveryError::Stopped)?;
        rx.await.map_err(|_| DeliveryError::Stopped)?
    }

    /// Returns once `to` is online and has said hello: at once if it already is, otherwise when
    /// it connects (first contact sends the friend request, as [`Courier::deliver`] does). Lets a
    /// caller hold its envelopes back until the peer can take them; dropping the future gives up.
    pub async fn reach(&self, to: impl Into<Destination>) -> Result<(), DeliveryError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Reach {
            to: to.into(),
            reply,
        };
        self.commands
            .send(cmd)
            .map_err(|_| DeliveryError::Stopped)?;
        rx.await.map_err(|_| DeliveryError::Stopped)?
    }

    /// Deposits one sealed envelope with the relay `relay`, to be held until `expires` (Unix
    /// seconds) for the key it is sealed to; returns once the relay confirmed custody, or refused.
    pub async fn deposit(
        &self,
        relay: impl Into<Destination>,
        id: MessageId,
        envelope: Arc<[u8]>,
        expires: u64,
    ) -> Result<(), DeliveryError> {
        self.in_lane(relay.into(), id, envelope, Some(expires))
            .await
    }

    /// The highest protocol level `peer` announced this run (2: it opens compressed
    /// envelopes), or `None` when it has not said hello since this node started.
    pub fn peer_level(&self, peer: &PublicKey) -> Option<u8> {
        let levels = self.levels.lock().unwrap_or_else(|e| e.into_inner());
        levels.get(peer).copied()
    }

    /// Events about peers from now on; the stream ends when the engine stops.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<PeerEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.commands.send(Command::Subscribe(tx));
        rx
    }

    /// Sends one relay frame to an online friend; false if it could not be sent now.
    pub async fn send_relay_frame(&self, to: PublicKey, frame: RelayFrame) -> bool {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::SendRelayFrame { to, frame, reply };
        if self.commands.send(cmd).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Trusts `relay` to hand on envelopes sealed by others to us, befriending it first when a
    /// full address is given and it is not a friend yet.
    pub async fn add_relay(&self, relay: impl Into<Destination>) -> Result<(), DeliveryError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::AddRelay {
            relay: relay.into(),
            reply,
        };
        self.commands
            .send(cmd)
            .map_err(|_| DeliveryError::Stopped)?;
        rx.await.map_err(|_| DeliveryError::Stopped)?
    }

    /// Adds a key to the known-contacts policy (no effect under `AnyoneWithAddress`).
    pub fn allow_contact(&self, pk: PublicKey) {
        let _ = self.commands.send(Command::AllowContact(pk));
    }

    /// Ends the friendship with `pk` (a contact removed): it is a stranger again.
    pub fn revoke(&self, pk: PublicKey) {
        let _ = self.commands.send(Command::Revoke {
            key: pk,
            block: false,
        });
    }

    /// Ends the friendship with `pk` and ignores its friend requests until [`Courier::unblock`].
    pub fn block(&self, pk: PublicKey) {
        let _ = self.commands.send(Command::Revoke {
            key: pk,
            block: true,
        });
    }

    pub fn unblock(&self, pk: PublicKey) {
        let _ = self.commands.send(Command::Unblock(pk));
    }
}

impl CourierTask {
    /// Stops the engine, then the node (persisting its savedata).
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Ok(node) = self.task.await {
            node.shutdown().await;
        }
    }

    /// Stops the engine and kills the node without a final save, as a crash would.
    pub async fn kill(self) {
        let _ = self.stop.send(());
        if let Ok(node) = self.task.await {
            node.kill().await;
        }
    }
}
