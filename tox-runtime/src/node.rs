//! `Node`: starts an instance on one of the owner threads (`pool.rs`) and gives async code a
//! cloneable [`Handle`] (commands with replies) and a typed event stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use toxmail_protocol::{PublicKey, ToxId};

use crate::error::{Result, RuntimeError};
use crate::event::{Connection, Event, FileNumber, FriendNumber};
use crate::options::{BootstrapNode, Options};
use crate::owner::{Command, Reply};
use crate::pool::{self, Route, Start};
use crate::savedata::{Plain, SavedataFile};

/// Who a node is and where it listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// Full Tox ID, nospam included: what others befriend.
    pub address: ToxId,
    pub public_key: PublicKey,
    /// DHT key and UDP port: what others bootstrap from.
    pub dht_key: PublicKey,
    pub udp_port: Option<u16>,
}

impl NodeInfo {
    /// This node as a bootstrap node on 127.0.0.1.
    pub fn as_loopback_bootstrap(&self) -> Option<BootstrapNode> {
        Some(BootstrapNode {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], self.udp_port?)),
            dht_key: self.dht_key,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FriendInfo {
    pub friend: FriendNumber,
    pub public_key: PublicKey,
    pub connection: Connection,
}

/// What the owner thread knows of its node, for metrics, tests and benchmarks.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Bytes handed to c-toxcore in answer to chunk requests (re-sent bytes count again).
    pub chunk_bytes_sent: AtomicU64,
    pub chunk_bytes_received: AtomicU64,
    /// Savedata files written (each a full rewrite with fsync).
    pub savedata_writes: AtomicU64,
    /// The node's own connection to the network: 0 none, 1 TCP, 2 UDP.
    connection: AtomicU8,
    friends: AtomicU64,
    friends_online: AtomicU64,
}

impl NodeStats {
    pub(crate) fn set_connection(&self, c: Connection) {
        let v = match c {
            Connection::None => 0,
            Connection::Tcp => 1,
            Connection::Udp => 2,
        };
        self.connection.store(v, Ordering::Relaxed);
    }

    /// The node's own connection as c-toxcore last reported it.
    pub fn connection(&self) -> Connection {
        match self.connection.load(Ordering::Relaxed) {
            1 => Connection::Tcp,
            2 => Connection::Udp,
            _ => Connection::None,
        }
    }

    pub(crate) fn set_friends(&self, total: usize, online: usize) {
        self.friends.store(total as u64, Ordering::Relaxed);
        self.friends_online.store(online as u64, Ordering::Relaxed);
    }

    /// (friends, friends online) as of the last friend or connection change.
    pub fn friends(&self) -> (u64, u64) {
        (
            self.friends.load(Ordering::Relaxed),
            self.friends_online.load(Ordering::Relaxed),
        )
    }
}

/// A cloneable handle to a running node. Every call is a command executed between iterations.
#[derive(Clone, Debug)]
pub struct Handle {
    pub(crate) route: Route,
    stats: Arc<NodeStats>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Handle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        if !self.route.send(make(tx)) {
            return Err(RuntimeError::Stopped);
        }
        rx.await.map_err(|_| RuntimeError::Stopped)?
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    pub async fn info(&self) -> Result<NodeInfo> {
        self.call(Command::Info).await
    }

    /// The long-term secret key (for opening envelopes sealed to this node). Never log it.
    pub async fn secret_key(&self) -> Result<toxmail_protocol::SecretKey> {
        self.call(Command::SecretKey).await
    }

    pub async fn bootstrap(&self, node: &BootstrapNode) -> Result<()> {
        let host = node.addr.ip().to_string();
        self.call(|r| Command::Bootstrap(host, node.addr.port(), node.dht_key, r))
            .await
    }

    /// Sends a friend request carrying `message` (1..=1016 bytes). Persisted before it returns.
    pub async fn friend_add(&self, id: ToxId, message: Vec<u8>) -> Result<FriendNumber> {
        self.call(|r| Command::FriendAdd(id, message, r)).await
    }

    /// Accepts a friend request (or adds a friend without one). Persisted before it returns.
    pub async fn friend_add_norequest(&self, pk: PublicKey) -> Result<FriendNumber> {
        self.call(|r| Command::FriendAddNorequest(pk, r)).await
    }

    pub async fn friend_delete(&self, pk: PublicKey) -> Result<()> {
        self.call(|r| Command::FriendDelete(pk, r)).await
    }

    pub async fn friends(&self) -> Result<Vec<FriendInfo>> {
        self.call(Command::Friends).await
    }

    /// Sends one lossless custom packet (first byte 160..=191, at most 1373 bytes).
    pub async fn send_packet(&self, friend: FriendNumber, data: Vec<u8>) -> Result<()> {
        self.call(|r| Command::SendPacket(friend, data, r)).await
    }

    /// Offers `data` as a file with id `file_id`; chunks are served from memory by the owner thread.
    pub async fn file_send(
        &self,
        friend: FriendNumber,
        file_id: [u8; 32],
        data: Arc<[u8]>,
        name: Vec<u8>,
    ) -> Result<FileNumber> {
        self.call(|reply| Command::FileSend {
            friend,
            file_id,
            data,
            name,
            reply,
        })
        .await
    }

    /// Seeks an incoming transfer to `offset` (if > 0) and resumes it, in one step.
    pub async fn file_accept(
        &self,
        friend: FriendNumber,
        file: FileNumber,
        offset: u64,
    ) -> Result<()> {
        self.call(|r| Command::FileAccept(friend, file, offset, r))
            .await
    }

    pub async fn file_cancel(&self, friend: FriendNumber, file: FileNumber) -> Result<()> {
        self.call(|r| Command::FileCancel(friend, file, r)).await
    }

    /// Queues a cancel now, without waiting for it: the owner runs it before any command sent
    /// after this call. A cancel sent from a spawned task could instead reach the owner after a
    /// later `file_send` was given the same (by then reused) file number, and kill that transfer.
    pub fn file_cancel_now(&self, friend: FriendNumber, file: FileNumber) {
        let (reply, _) = oneshot::channel();
        self.route.send(Command::FileCancel(friend, file, reply));
    }

    /// Changes the nospam (invalidating the old Tox ID for new friend requests); returns the new ID.
    pub async fn set_nospam(&self, nospam: u32) -> Result<ToxId> {
        self.call(|r| Command::SetNospam(nospam, r)).await
    }

    pub async fn save(&self) -> Result<()> {
        self.call(Command::Save).await
    }
}

/// A running Tox instance: its handle, its events, and word of when its owner let it go.
#[derive(Debug)]
pub struct Node {
    pub handle: Handle,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub info: NodeInfo,
    /// Closes once the instance is gone (its port freed, its last save written).
    done: Option<oneshot::Receiver<()>>,
}

impl Node {
    /// Loads the savedata (if any), creates the instance on an owner thread, bootstraps, and
    /// returns once the instance exists. A new identity's savedata is written before this returns.
    pub async fn start(options: Options) -> Result<Node> {
        let file = options
            .savedata_path
            .clone()
            .map(|p| SavedataFile::new(p, options.passphrase.clone()));
        // Reading and decrypting (scrypt) happen here, not on a thread other instances share.
        let (file, saved) = tokio::task::spawn_blocking(move || prepare(file))
            .await
            .map_err(|_| RuntimeError::New("reading the savedata panicked"))??;
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<NodeInfo>>();
        let (done_tx, done_rx) = oneshot::channel();
        let stats = Arc::new(NodeStats::default());
        let route = pool::place(Start {
            id: 0,
            options,
            file,
            saved,
            events: ev_tx,
            stats: stats.clone(),
            ready: ready_tx,
            done: done_tx,
        })?;
        let info = match ready_rx.await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(RuntimeError::New("owner thread died during start")),
        };
        Ok(Node {
            handle: Handle { route, stats },
            events: ev_rx,
            info,
            done: Some(done_rx),
        })
    }

    /// Persists the savedata, kills the instance and waits until it is gone.
    pub async fn shutdown(mut self) {
        self.stop(true).await
    }

    /// Kills the instance without a final save, as a crash would (the savedata keeps what was last
    /// persisted). For tests of restart behaviour.
    pub async fn kill(mut self) {
        self.stop(false).await
    }

    async fn stop(&mut self, save: bool) {
        self.handle.route.send(Command::Stop(save));
        if let Some(done) = self.done.take() {
            // An error only means the sender is gone, which is what is awaited.
            let _ = done.await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Without an explicit shutdown the instance still stops and saves; nothing waits for it.
        // After `stop` the id is unknown to its thread and this is ignored.
        self.handle.route.send(Command::Stop(true));
    }
}

/// Reads (and decrypts) the savedata; for a new encrypted identity, derives the key its first
/// save will use.
fn prepare(file: Option<SavedataFile>) -> Result<(Option<SavedataFile>, Option<Plain>)> {
    let Some(mut file) = file else {
        return Ok((None, None));
    };
    let saved = file.load()?;
    if saved.is_none() {
        file.derive_key()?;
    }
    Ok((Some(file), saved))
}
