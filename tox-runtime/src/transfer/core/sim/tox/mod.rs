//! c-toxcore and the owner thread as the engine sees them, one per site, after `Messenger.c`
//! (0.2.18) and `owner.rs`: file numbers are the lowest free of 256 per direction (incoming ones
//! as `(n + 1) << 16`), free again once the transfer ended (sender: last chunk acknowledged or
//! killed; receiver: last byte in, or killed); a file request for a receiving slot still in use is
//! ignored, data for a file not accepted is dropped, a control for a transfer that does not exist
//! answers with a kill; chunks go out while the packet buffer keeps `MIN_SLOTS_FREE` slots free
//! and fewer than `window` packets are unacknowledged (congestion control); the buffer refuses
//! everything while the send queue is full (a simulated congestion episode);
//! the owner queues custom packets that meet a full queue and flushes them after iterations (or,
//! with `refuse_when_full`, the refusal reaches the caller); a friend going offline kills every
//! transfer and the owner reports each outgoing one aborted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use toxmail_protocol::PublicKey;

mod messenger;

use super::super::Input;
use super::Params;
use crate::event::FileNumber;

/// c-toxcore's `MAX_FILE_DATA_SIZE`: every chunk but the last has exactly this many bytes.
pub(super) const MAX_FILE_DATA: usize = 1371;
const MAX_FILES: u8 = 255; // slots 0..=255
/// net_crypto's `CRYPTO_PACKET_BUFFER_SIZE`: full only in the simulated congestion episodes.
const QUEUE: usize = 32_768;
/// Messenger's `MIN_SLOTS_FREE` (`CRYPTO_MIN_QUEUE_LENGTH / 4`): kept free of file data.
const MIN_SLOTS_FREE: usize = 16;
/// Wire bytes per packet beyond its payload (headers, encryption).
const OVERHEAD: u64 = 60;
/// The friend number of the other site, on both sites.
pub(super) const FRIEND: u32 = 0;

/// What travels on the lossless stream of one direction.
#[derive(Debug)]
pub(super) enum Item {
    Packet(Vec<u8>),
    FileRequest {
        slot: u8,
        size: u64,
        #[allow(dead_code)] // read through Debug, in traces
        id: [u8; 32],
    },
    /// `senders_file`: about the receiving site's own outgoing file (sent by the file's receiver).
    Control {
        senders_file: bool,
        slot: u8,
        control: Control,
    },
    Data {
        slot: u8,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Control {
    Accept,
    Kill,
    Seek(u64),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    NotAccepted,
    Transferring,
    Finished,
}

struct Transfer {
    status: Status,
    size: u64,
    requested: u64,
    transferred: u64,
    last_packet: u64,
    id: [u8; 32],
}

/// A packet handed to the wire: it arrives, and its acknowledgement comes back, at these times.
pub(super) struct Sent {
    pub arrival: Duration,
    pub ack_at: Duration,
    pub packet: u64,
    pub item: Item,
}

#[derive(Debug)]
pub(super) enum WriteError {
    Full,
    Offline,
}

pub(super) struct Tox {
    peer: PublicKey,
    pub(super) online: bool,
    sending: BTreeMap<u8, Transfer>,
    receiving: BTreeMap<u8, Transfer>,
    // net_crypto's send side of our direction
    in_flight: usize,
    next_packet: u64,
    acked: u64,
    wire_free: Duration,
    last_arrival: Duration,
    pub(super) congested_until: Duration,
    // the owner thread
    pending: VecDeque<Vec<u8>>,
    outgoing: BTreeMap<u8, Arc<[u8]>>,
    retry: Vec<(u8, u64, usize)>,
    /// Packets handed to the wire and events for the engine, drained by the world.
    pub(super) sent: Vec<Sent>,
    pub(super) events: Vec<Input>,
    /// Ids of files whose last byte was handed to the wire.
    pub(super) finished: Vec<[u8; 32]>,
}

impl Tox {
    pub(super) fn new(peer: PublicKey) -> Self {
        Tox {
            peer,
            online: false,
            sending: BTreeMap::new(),
            receiving: BTreeMap::new(),
            in_flight: 0,
            next_packet: 0,
            acked: 0,
            wire_free: Duration::ZERO,
            last_arrival: Duration::ZERO,
            congested_until: Duration::ZERO,
            pending: VecDeque::new(),
            outgoing: BTreeMap::new(),
            retry: Vec::new(),
            sent: Vec::new(),
            events: Vec::new(),
            finished: Vec::new(),
        }
    }

    /// Free slots of net_crypto's packet buffer (none while the queue is full).
    fn free_slots(&self, now: Duration) -> usize {
        if now < self.congested_until {
            return 0;
        }
        QUEUE.saturating_sub(self.in_flight)
    }

    /// Chunks that may go now: the buffer keeps `MIN_SLOTS_FREE` for other packets, and
    /// congestion control keeps at most `window` packets unacknowledged.
    fn chunk_room(&self, now: Duration, p: &Params) -> usize {
        let free = self.free_slots(now).saturating_sub(MIN_SLOTS_FREE);
        free.min(p.window.saturating_sub(self.in_flight))
    }

    /// Whether net_crypto would take one more packet now.
    fn writable(&self, now: Duration) -> Result<(), WriteError> {
        if !self.online {
            return Err(WriteError::Offline);
        }
        if self.free_slots(now) == 0 {
            return Err(WriteError::Full);
        }
        Ok(())
    }

    /// net_crypto's `write_cryptpacket`, once [`Tox::writable`] said yes: the packet is on its way.
    fn write(&mut self, now: Duration, p: &Params, item: Item) -> u64 {
        let len = match &item {
            Item::Packet(d) | Item::Data { data: d, .. } => d.len() as u64,
            Item::FileRequest { .. } => 60,
            Item::Control { .. } => 12,
        };
        self.in_flight += 1;
        self.next_packet += 1;
        let serialize = Duration::from_micros((len + OVERHEAD) * 1_000_000 / p.bytes_per_sec);
        let depart = now.max(self.wire_free) + serialize;
        self.wire_free = depart;
        let arrival = (depart + p.latency).max(self.last_arrival);
        self.last_arrival = arrival;
        let packet = self.next_packet;
        let ack_at = arrival + p.latency;
        self.sent.push(Sent {
            arrival,
            ack_at,
            packet,
            item,
        });
        packet
    }

    fn try_write(&mut self, now: Duration, p: &Params, item: Item) -> Result<u64, WriteError> {
        self.writable(now)?;
        Ok(self.write(now, p, item))
    }

    /// The peer acknowledged our packet `packet` (acknowledgements come in order).
    pub(super) fn acked(&mut self, packet: u64) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.acked = self.acked.max(packet);
    }

    /// The friend came online: a fresh connection.
    pub(super) fn go_online(&mut self, now: Duration) {
        self.online = true;
        self.in_flight = 0;
        self.wire_free = now;
        self.last_arrival = now;
        self.events.push(Input::Connection {
            pk: self.peer,
            friend: FRIEND,
            online: true,
        });
    }

    /// c-toxcore noticed the friend offline: `break_files`, and the owner's `abort_outgoing`
    /// before it reports the connection.
    pub(super) fn go_offline(&mut self) {
        self.online = false;
        self.sending.clear();
        self.receiving.clear();
        self.in_flight = 0;
        for slot in std::mem::take(&mut self.outgoing).into_keys() {
            let key = (FRIEND, FileNumber::from(slot));
            self.events.push(Input::FileDone { key, aborted: true });
        }
        self.retry.clear();
        self.pending.clear();
        self.events.push(Input::Connection {
            pk: self.peer,
            friend: FRIEND,
            online: false,
        });
    }

    /// Work left for later iterations.
    pub(super) fn busy(&self) -> bool {
        self.online
            && (!self.pending.is_empty()
                || !self.retry.is_empty()
                || self
                    .sending
                    .values()
                    .any(|t| t.status != Status::NotAccepted))
    }

    // ---- the engine's calls, through the owner thread ----

    /// `Owner::send_packet`: after the packets already queued; a full queue queues it too
    /// (or, with `refuse_when_full`, refuses it).
    pub(super) fn send_packet(&mut self, now: Duration, p: &Params, data: Vec<u8>) -> bool {
        if !self.online {
            return false;
        }
        if !self.pending.is_empty() && !p.refuse_when_full {
            self.pending.push_back(data);
            return true;
        }
        match self.writable(now) {
            Ok(()) => {
                self.write(now, p, Item::Packet(data));
                true
            }
            Err(WriteError::Full) if !p.refuse_when_full => {
                self.pending.push_back(data);
                true
            }
            Err(_) => false,
        }
    }

    /// `tox_file_send`: the lowest free slot; its request is written at once (bypassing the
    /// owner's queued packets, so it may overtake an offer queued there).
    pub(super) fn file_send(
        &mut self,
        now: Duration,
        p: &Params,
        id: [u8; 32],
        data: Arc<[u8]>,
    ) -> Option<FileNumber> {
        let slot = (0..=MAX_FILES).find(|s| !self.sending.contains_key(s))?;
        let size = data.len() as u64;
        let request = Item::FileRequest { slot, size, id };
        self.try_write(now, p, request).ok()?;
        let transfer = Transfer {
            status: Status::NotAccepted,
            size,
            requested: 0,
            transferred: 0,
            last_packet: 0,
            id,
        };
        self.sending.insert(slot, transfer);
        self.outgoing.insert(slot, data);
        Some(FileNumber::from(slot))
    }

    /// The owner's `FileAccept`: a seek first when resuming, then the accept.
    pub(super) fn file_accept(
        &mut self,
        now: Duration,
        p: &Params,
        file: FileNumber,
        offset: u64,
    ) -> bool {
        let Some(slot) = incoming_slot(file) else {
            return false;
        };
        if self.writable(now).is_err() {
            return false;
        }
        let Some(t) = self.receiving.get(&slot) else {
            return false;
        };
        if t.status != Status::NotAccepted {
            return false; // already transferring and not paused: nothing to resume
        }
        if offset > 0 {
            if offset >= t.size {
                return false; // TOX_ERR_FILE_SEEK_INVALID_POSITION
            }
            let control = Control::Seek(offset);
            self.write(now, p, control_item(true, slot, control));
            if let Some(t) = self.receiving.get_mut(&slot) {
                t.transferred = offset;
            }
            if self.writable(now).is_err() {
                return false;
            }
        }
        self.write(now, p, control_item(true, slot, Control::Accept));
        if let Some(t) = self.receiving.get_mut(&slot) {
            t.status = Status::Transferring;
        }
        true
    }

    /// The owner's `FileCancel`: forgets the data of an outgoing file, then kills the transfer
    /// (which stays when the kill cannot be written).
    pub(super) fn file_cancel(&mut self, now: Duration, p: &Params, file: FileNumber) {
        if let Ok(slot) = u8::try_from(file) {
            self.outgoing.remove(&slot);
        }
        let (inbound, slot) = match incoming_slot(file) {
            Some(slot) => (true, slot),
            None => match u8::try_from(file) {
                Ok(slot) => (false, slot),
                Err(_) => return,
            },
        };
        let table = if inbound {
            &self.receiving
        } else {
            &self.sending
        };
        if !table.contains_key(&slot) || self.writable(now).is_err() {
            return;
        }
        self.write(now, p, control_item(inbound, slot, Control::Kill));
        if inbound {
            self.receiving.remove(&slot);
        } else {
            self.sending.remove(&slot);
        }
    }
}

/// A control about our own file: `inbound` when we receive it.
fn control_item(inbound: bool, slot: u8, control: Control) -> Item {
    // What is inbound here is the peer's outgoing file.
    Item::Control {
        senders_file: inbound,
        slot,
        control,
    }
}

fn incoming_number(slot: u8) -> FileNumber {
    (FileNumber::from(slot) + 1) << 16
}

fn incoming_slot(file: FileNumber) -> Option<u8> {
    if file < 1 << 16 {
        return None;
    }
    u8::try_from((file >> 16) - 1).ok()
}
