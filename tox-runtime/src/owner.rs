//! The owner of one `Instance`, the only code that touches it, always on the same owner thread
//! (`pool.rs`), which calls [`Owner::step`] at the instance's `tox_iteration_interval` and
//! [`Owner::execute`] for commands from async handles between iterations. It answers chunk
//! requests of outgoing files from memory, and persists the savedata: before it replies for
//! changes a caller relies on (a friend request sent, the nospam), within `SAVE_BATCH` for
//! friendships accepted or ended (a flood of them costs one write per batch, not one each), every
//! `PERIODIC_SAVE`, and at a stop that asks for it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc::UnboundedSender, oneshot};
use toxmail_protocol::{PublicKey, ToxId};

use crate::callbacks::{RawEvent, Sink};
use crate::error::{Result, RuntimeError};
use crate::event::{Event, FileNumber, FriendNumber};
use crate::instance::{ChunkError, Connection, FileControl, Instance};
use crate::node::{FriendInfo, NodeInfo, NodeStats};
use crate::savedata::SavedataFile;

/// DHT node lists change without events; save them this often as well.
const PERIODIC_SAVE: Duration = Duration::from_secs(300);

/// Friendships accepted or ended are written at most this long after the first unsaved one. A
/// crash in between loses them: a contact is added again by the bridge's roster at start, a
/// stranger sends its request again.
pub(crate) const SAVE_BATCH: Duration = Duration::from_secs(1);

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

pub(crate) enum Command {
    Info(Reply<NodeInfo>),
    SecretKey(Reply<toxmail_protocol::SecretKey>),
    Bootstrap(String, u16, PublicKey, Reply<()>),
    FriendAdd(ToxId, Vec<u8>, Reply<FriendNumber>),
    FriendAddNorequest(PublicKey, Reply<FriendNumber>),
    FriendDelete(PublicKey, Reply<()>),
    Friends(Reply<Vec<FriendInfo>>),
    SendPacket(FriendNumber, Vec<u8>, Reply<()>),
    FileSend {
        friend: FriendNumber,
        file_id: [u8; 32],
        data: Arc<[u8]>,
        name: Vec<u8>,
        reply: Reply<FileNumber>,
    },
    FileAccept(FriendNumber, FileNumber, u64, Reply<()>),
    FileCancel(FriendNumber, FileNumber, Reply<()>),
    SetNospam(u32, Reply<ToxId>),
    Save(Reply<()>),
    /// A bug in the owner's code, for the test that one instance's panic spares the others.
    #[cfg(test)]
    Panic,
    /// Stop; persist the savedata first when the flag is true. Handled by the thread (`pool.rs`).
    Stop(bool),
}

struct Outgoing {
    data: Arc<[u8]>,
}

pub(crate) struct Owner {
    tox: Instance,
    events: UnboundedSender<Event>,
    savedata: Option<SavedataFile>,
    stats: Arc<NodeStats>,
    outgoing: HashMap<(FriendNumber, FileNumber), Outgoing>,
    /// Lossless packets that met a full send queue, per friend in order, sent after iterations.
    packets: HashMap<FriendNumber, VecDeque<Vec<u8>>>,
    /// Chunk requests that met a full send queue, retried after the next iteration.
    retry_chunks: Vec<(FriendNumber, FileNumber, u64, usize)>,
    last_save: Instant,
    /// When the oldest change not yet written was made.
    unsaved_since: Option<Instant>,
}

impl Owner {
    pub(crate) fn new(
        tox: Instance,
        events: UnboundedSender<Event>,
        savedata: Option<SavedataFile>,
        stats: Arc<NodeStats>,
    ) -> Self {
        Owner {
            tox,
            events,
            savedata,
            stats,
            outgoing: HashMap::new(),
            packets: HashMap::new(),
            retry_chunks: Vec::new(),
            last_save: Instant::now(),
            unsaved_since: None,
        }
    }

    pub(crate) fn info(&self) -> NodeInfo {
        let address = self.tox.address();
        NodeInfo {
            address,
            public_key: address.public_key(),
            dht_key: self.tox.dht_id(),
            udp_port: self.tox.udp_port(),
        }
    }

    pub(crate) fn save(&mut self) -> Result<()> {
        self.last_save = Instant::now();
        self.unsaved_since = None;
        match &mut self.savedata {
            Some(file) => {
                file.save(&self.tox.savedata())?;
                self.stats.savedata_writes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub(crate) fn bootstrap(&mut self, host: &str, port: u16, key: &PublicKey) -> Result<()> {
        self.tox.bootstrap(host, port, key)
    }

    /// One `tox_iterate` and what follows it (events, queued chunks and packets, due saves);
    /// returns how long until the next iteration is due.
    pub(crate) fn step(&mut self, sink: &mut Sink) -> Duration {
        self.tox.iterate(sink);
        if std::mem::take(&mut sink.panicked) {
            tracing::error!("a Tox callback panicked; its event was dropped");
        }
        for raw in sink.events.drain(..) {
            self.handle_raw(raw);
        }
        self.retry_pending_chunks();
        self.flush_packets();
        let batch_due = self
            .unsaved_since
            .is_some_and(|t| t.elapsed() >= SAVE_BATCH);
        if batch_due || self.last_save.elapsed() > PERIODIC_SAVE {
            self.save_logged();
        }
        Duration::from_millis(u64::from(self.tox.iteration_interval().max(1)))
    }

    pub(crate) fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Persists the savedata first when `save`; dropping `self` kills the instance.
    pub(crate) fn stop(mut self, save: bool) {
        if save {
            self.save_logged();
        }
        // Dropping `self.tox` kills the instance and frees its port.
    }

    fn save_logged(&mut self) {
        if let Err(e) = self.save() {
            tracing::error!(error = %e, "could not persist Tox savedata");
        }
    }

    fn emit(&self, event: Event) {
        // The receiver may be gone during shutdown; events are then of no use to anyone.
        let _ = self.events.send(event);
    }

    fn public_key(&self, friend: FriendNumber) -> PublicKey {
        self.tox
            .friend_public_key(friend)
            .unwrap_or(PublicKey([0; 32]))
    }

    fn handle_raw(&mut self, raw: RawEvent) {
        match raw {
            RawEvent::FileChunkRequest {
                friend,
                file,
                position,
                length,
            } => self.serve_chunk(friend, file, position, length),
            RawEvent::SelfConnection(c) => {
                self.stats.set_connection(c);
                self.emit(Event::SelfConnection(c))
            }
            RawEvent::FriendRequest {
                public_key,
                message,
            } => self.emit(Event::FriendRequest {
                public_key: PublicKey(public_key),
                message,
            }),
            RawEvent::FriendConnection { friend, status } => {
                if !status.is_online() {
                    self.abort_outgoing(friend);
                }
                self.count_friends();
                let public_key = self.public_key(friend);
                self.emit(Event::FriendConnection {
                    friend,
                    public_key,
                    status,
                });
            }
            RawEvent::Lossless { friend, data } => {
                let public_key = self.public_key(friend);
                self.emit(Event::Packet {
                    friend,
                    public_key,
                    data,
                });
            }
            RawEvent::FileRecv {
                friend,
                file,
                kind,
                size,
                name,
                file_id,
            } => self.file_recv(friend, file, kind, size, name, file_id),
            RawEvent::FileRecvChunk {
                friend,
                file,
                position,
                data,
            } => {
                self.stats
                    .chunk_bytes_received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                self.emit(Event::FileChunk {
                    friend,
                    file,
                    position,
                    data,
                });
            }
            RawEvent::FileControl {
                friend,
                file,
                control,
            } => {
                if control == FileControl::Cancel && self.outgoing.remove(&(friend, file)).is_some()
                {
                    self.emit(Event::FileSendAborted { friend, file });
                }
                self.emit(Event::FileControl {
                    friend,
                    file,
                    control,
                });
            }
        }
    }

    fn file_recv(
        &mut self,
        friend: u32,
        file: u32,
        kind: u32,
        size: u64,
        name: Vec<u8>,
        file_id: Option<[u8; 32]>,
    ) {
        let Some(file_id) = file_id else {
            tracing::warn!(friend, file, "incoming file without a file id; cancelled");
            let _ = self.tox.file_control(friend, file, FileControl::Cancel);
            return;
        };
        let public_key = self.public_key(friend);
        self.emit(Event::FileRecv {
            friend,
            public_key,
            file,
            kind,
            size,
            file_id,
            name,
        });
    }

    fn abort_outgoing(&mut self, friend: FriendNumber) {
        let gone: Vec<_> = self
            .outgoing
            .keys()
            .filter(|(f, _)| *f == friend)
            .copied()
            .collect();
        for (friend, file) in gone {
            self.outgoing.remove(&(friend, file));
            self.emit(Event::FileSendAborted { friend, file });
        }
        self.retry_chunks.retain(|(f, ..)| *f != friend);
        self.packets.remove(&friend);
    }

    /// Sends `data` now, or after earlier queued packets of this friend: order is kept.
    fn send_packet(&mut self, friend: FriendNumber, data: Vec<u8>) -> Result<()> {
        if let Some(queue) = self.packets.get_mut(&friend) {
            queue.push_back(data);
            return Ok(());
        }
        match self.tox.send_lossless(friend, &data) {
            Ok(()) => Ok(()),
            Err(ChunkError::QueueFull) => {
                self.packets.entry(friend).or_default().push_back(data);
                Ok(())
            }
            Err(ChunkError::Gone(code)) => {
                Err(RuntimeError::tox("tox_friend_send_lossless_packet", code))
            }
        }
    }

    fn flush_packets(&mut self) {
        let Owner { tox, packets, .. } = self;
        packets.retain(|&friend, queue| {
            while let Some(data) = queue.front() {
                match tox.send_lossless(friend, data) {
                    Ok(()) => drop(queue.pop_front()),
                    Err(ChunkError::QueueFull) => return true,
                    Err(ChunkError::Gone(code)) => {
                        tracing::debug!(
                            friend,
                            code,
                            dropped = queue.len(),
                            "queued packets dropped"
                        );
                        return false;
                    }
                }
            }
            false
        });
    }

    fn serve_chunk(&mut self, friend: u32, file: u32, position: u64, length: usize) {
        let Some(out) = self.outgoing.get(&(friend, file)) else {
            return;
        };
        if length == 0 {
            self.outgoing.remove(&(friend, file));
            self.emit(Event::FileSent { friend, file });
            return;
        }
        let start = usize::try_from(position).unwrap_or(usize::MAX);
        let Some(chunk) = start
            .checked_add(length)
            .and_then(|end| out.data.get(start..end))
        else {
            tracing::warn!(friend, file, position, length, "chunk request past the end");
            return;
        };
        match self.tox.file_send_chunk(friend, file, position, chunk) {
            Ok(()) => {
                self.stats
                    .chunk_bytes_sent
                    .fetch_add(length as u64, Ordering::Relaxed);
            }
            Err(ChunkError::QueueFull) => self.retry_chunks.push((friend, file, position, length)),
            Err(ChunkError::Gone(code)) => {
                tracing::debug!(friend, file, code, "chunk not sent; transfer gone");
            }
        }
    }

    fn retry_pending_chunks(&mut self) {
        for (friend, file, position, length) in std::mem::take(&mut self.retry_chunks) {
            self.serve_chunk(friend, file, position, length);
        }
    }

    /// Friends and friends online, for metrics: recounted when either can have changed.
    pub(crate) fn count_friends(&self) {
        let list = self.tox.friend_list();
        let online = list
            .iter()
            .filter(|&&n| self.tox.friend_connection(n).is_online())
            .count();
        self.stats.set_friends(list.len(), online);
    }

    fn friends(&self) -> Vec<FriendInfo> {
        self.tox
            .friend_list()
            .into_iter()
            .filter_map(|n| {
                Some(FriendInfo {
                    friend: n,
                    public_key: self.tox.friend_public_key(n)?,
                    connection: self.tox.friend_connection(n),
                })
            })
            .collect()
    }

    /// Runs `f`, then persists the savedata before the caller hears of success.
    fn durable<T>(&mut self, f: impl FnOnce(&mut Instance) -> Result<T>) -> Result<T> {
        let value = f(&mut self.tox)?;
        self.save()?;
        Ok(value)
    }

    /// Runs `f`; the savedata is persisted with the next batch (within `SAVE_BATCH`).
    fn batched<T>(&mut self, f: impl FnOnce(&mut Instance) -> Result<T>) -> Result<T> {
        let value = f(&mut self.tox)?;
        self.unsaved_since.get_or_insert_with(Instant::now);
        Ok(value)
    }

    pub(crate) fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::Info(r) => drop(r.send(Ok(self.info()))),
            Command::SecretKey(r) => drop(r.send(Ok(self.tox.secret_key()))),
            Command::Bootstrap(host, port, key, r) => {
                drop(r.send(self.tox.bootstrap(&host, port, &key)))
            }
            Command::FriendAdd(id, msg, r) => {
                let res = self.durable(|t| t.friend_add(&id, &msg));
                self.count_friends();
                drop(r.send(res))
            }
            Command::FriendAddNorequest(pk, r) => {
                let res = self.batched(|t| t.friend_add_norequest(&pk));
                self.count_friends();
                drop(r.send(res))
            }
            Command::FriendDelete(pk, r) => {
                let res = match self.tox.friend_by_public_key(&pk) {
                    Some(n) => self.batched(|t| t.friend_delete(n)),
                    None => Err(RuntimeError::NoSuchFriend),
                };
                self.count_friends();
                drop(r.send(res))
            }
            Command::Friends(r) => drop(r.send(Ok(self.friends()))),
            Command::SendPacket(friend, data, r) => drop(r.send(self.send_packet(friend, data))),
            Command::FileSend {
                friend,
                file_id,
                data,
                name,
                reply,
            } => {
                let res = self
                    .tox
                    .file_send(friend, data.len() as u64, &file_id, &name);
                if let Ok(file) = res {
                    self.outgoing.insert((friend, file), Outgoing { data });
                }
                drop(reply.send(res))
            }
            Command::FileAccept(friend, file, offset, r) => {
                let res = if offset > 0 {
                    self.tox.file_seek(friend, file, offset)
                } else {
                    Ok(())
                }
                .and_then(|()| self.tox.file_control(friend, file, FileControl::Resume));
                drop(r.send(res))
            }
            Command::FileCancel(friend, file, r) => {
                self.outgoing.remove(&(friend, file));
                drop(r.send(self.tox.file_control(friend, file, FileControl::Cancel)))
            }
            Command::SetNospam(nospam, r) => drop(r.send(self.durable(|t| {
                t.set_nospam(nospam);
                Ok(t.address())
            }))),
            Command::Save(r) => drop(r.send(self.save())),
            #[cfg(test)]
            Command::Panic => panic!("a bug in the owner (test)"),
            Command::Stop(_) => unreachable!("handled by the thread"),
        }
    }

    pub(crate) fn self_connection(&self) -> Connection {
        self.tox.self_connection()
    }
}
