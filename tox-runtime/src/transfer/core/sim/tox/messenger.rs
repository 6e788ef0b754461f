//! c-toxcore at work: one iteration (chunk requests served by the owner, its queues flushed),
//! and packets arriving from the friend (`m_handle_packet`, `handle_filecontrol`).

use std::time::Duration;

use super::super::super::Input;
use super::super::Params;
use super::{
    Control, FRIEND, Item, MAX_FILE_DATA, MIN_SLOTS_FREE, Status, Tox, Transfer, WriteError,
    control_item, incoming_number,
};
use crate::event::FileNumber;
use toxmail_protocol::MessageId;

impl Tox {
    /// One `tox_iterate` for this friend, and what the owner does right after it: chunk
    /// requests (`do_reqchunk_filecb`) served from memory, chunks that met a full queue
    /// retried, queued packets flushed.
    pub(in super::super) fn iterate(&mut self, now: Duration, p: &Params) {
        if !self.online {
            return;
        }
        enum Request {
            Done(u8),
            Chunk(u8, u64, usize),
        }
        let mut requests = Vec::new();
        let mut free = self.chunk_room(now, p);
        'rounds: for _ in 0..128 {
            let mut progress = false;
            let slots: Vec<u8> = self.sending.keys().copied().collect();
            for slot in slots {
                if free == 0 {
                    break 'rounds;
                }
                let acked = self.acked;
                let t = self.sending.get_mut(&slot).expect("listed");
                match t.status {
                    Status::Finished if acked >= t.last_packet => {
                        self.sending.remove(&slot);
                        requests.push(Request::Done(slot));
                        progress = true;
                    }
                    Status::Transferring if t.requested < t.size => {
                        let len = (t.size - t.requested).min(MAX_FILE_DATA as u64) as usize;
                        requests.push(Request::Chunk(slot, t.requested, len));
                        t.requested += len as u64;
                        free -= 1;
                        progress = true;
                    }
                    _ => {}
                }
            }
            if !progress {
                break;
            }
        }
        for request in requests {
            match request {
                Request::Done(slot) => {
                    if self.outgoing.remove(&slot).is_some() {
                        let key = (FRIEND, FileNumber::from(slot));
                        self.events.push(Input::FileDone {
                            key,
                            aborted: false,
                        });
                    }
                }
                Request::Chunk(slot, position, len) => {
                    self.serve_chunk(now, p, slot, position, len)
                }
            }
        }
        for (slot, position, len) in std::mem::take(&mut self.retry) {
            self.serve_chunk(now, p, slot, position, len);
        }
        while let Some(data) = self.pending.pop_front() {
            match self.writable(now) {
                Ok(()) => {
                    self.write(now, p, Item::Packet(data));
                }
                Err(WriteError::Full) => {
                    self.pending.push_front(data);
                    break;
                }
                Err(WriteError::Offline) => {
                    self.pending.clear();
                    break;
                }
            }
        }
    }

    /// `Owner::serve_chunk` and c-toxcore's `send_file_data`.
    fn serve_chunk(&mut self, now: Duration, p: &Params, slot: u8, position: u64, len: usize) {
        let Some(data) = self.outgoing.get(&slot) else {
            return;
        };
        let start = position as usize;
        let Some(chunk) = data.get(start..start + len).map(<[u8]>::to_vec) else {
            return;
        };
        let free = self.free_slots(now);
        let Some(t) = self.sending.get(&slot) else {
            return;
        };
        if !self.online
            || t.status != Status::Transferring
            || position != t.transferred
            || t.requested <= position
        {
            return; // the transfer is gone, or the chunk is out of order: dropped
        }
        if free < MIN_SLOTS_FREE {
            self.retry.push((slot, position, len));
            return;
        }
        let packet = self.write(now, p, Item::Data { slot, data: chunk });
        let t = self.sending.get_mut(&slot).expect("checked");
        t.transferred += len as u64;
        if len != MAX_FILE_DATA || t.transferred == t.size {
            t.status = Status::Finished;
            t.last_packet = packet;
            self.finished.push(t.id);
        }
    }

    /// A packet from the friend arrived (`m_handle_packet`).
    pub(in super::super) fn receive(&mut self, now: Duration, p: &Params, item: Item) {
        if !self.online {
            return;
        }
        let (friend, from) = (FRIEND, self.peer);
        match item {
            Item::Packet(data) => self.events.push(Input::Packet { friend, from, data }),
            Item::FileRequest { slot, size, id } => {
                if self.receiving.contains_key(&slot) {
                    return; // still in use here: the request is ignored
                }
                let transfer = Transfer {
                    status: Status::NotAccepted,
                    size,
                    requested: 0,
                    transferred: 0,
                    last_packet: 0,
                    id,
                };
                self.receiving.insert(slot, transfer);
                self.events.push(Input::FileRecv {
                    friend,
                    from,
                    file: incoming_number(slot),
                    kind: 0,
                    size,
                    id: MessageId(id),
                });
            }
            Item::Control {
                senders_file,
                slot,
                control,
            } => self.on_control(now, p, senders_file, slot, control),
            Item::Data { slot, data } => {
                let Some(t) = self
                    .receiving
                    .get_mut(&slot)
                    .filter(|t| t.status == Status::Transferring)
                else {
                    return; // not accepted (or gone): dropped
                };
                let key = (friend, incoming_number(slot));
                let position = t.transferred;
                let len = data.len().min((t.size - t.transferred) as usize);
                let mut data = data;
                data.truncate(len);
                t.transferred += len as u64;
                let end = len == 0 || t.transferred >= t.size || len != MAX_FILE_DATA;
                let transferred = t.transferred;
                if len > 0 {
                    self.events.push(Input::FileChunk {
                        key,
                        position,
                        data,
                    });
                }
                if end {
                    self.receiving.remove(&slot);
                    self.events.push(Input::FileChunk {
                        key,
                        position: transferred,
                        data: Vec::new(),
                    });
                }
            }
        }
    }

    /// `handle_filecontrol`.
    fn on_control(&mut self, now: Duration, p: &Params, senders_file: bool, slot: u8, c: Control) {
        let table = if senders_file {
            &mut self.sending
        } else {
            &mut self.receiving
        };
        let Some(t) = table.get_mut(&slot) else {
            // "file transfer does not exist; telling the other to kill it"
            let _ = self.try_write(now, p, control_item(!senders_file, slot, Control::Kill));
            return;
        };
        match c {
            Control::Accept => {
                if senders_file && t.status == Status::NotAccepted {
                    t.status = Status::Transferring;
                }
            }
            Control::Seek(position) => {
                if senders_file && t.status == Status::NotAccepted && position < t.size {
                    t.requested = position;
                    t.transferred = position;
                }
            }
            Control::Kill => {
                table.remove(&slot);
                let number = if senders_file {
                    FileNumber::from(slot)
                } else {
                    incoming_number(slot)
                };
                if senders_file && self.outgoing.remove(&slot).is_some() {
                    let key = (FRIEND, number);
                    self.events.push(Input::FileDone { key, aborted: true });
                }
                self.events.push(Input::IncomingCancelled((FRIEND, number)));
            }
        }
    }
}
