//! Files coming in: accepted from what the spool already holds, chunks written with a sync at
//! checkpoints, the complete envelope handed to the inbox and the verdict sent back only after
//! the inbox answered.

use toxmail_protocol::{Frame, MessageId, NackClass, NackCode, PublicKey};

use super::receiving::{SPOOL_SYNC_EVERY, Transfer};
use super::{AcceptOutcome, Action, Core, FileKey};
use crate::transfer::{PeerEvent, Refusal};

impl Core {
    pub(super) fn accept_file(&mut self, key: FileKey, from: PublicKey, id: MessageId, size: u64) {
        let deposit = self
            .receiving
            .offers
            .remove(&(from, id))
            .and_then(|o| o.deposit);
        if self.receiving.storing.contains(&(from, id)) {
            // The same envelope is being stored: that verdict answers the sender.
            return self.cancel_file(key);
        }
        // Another file for an envelope still coming in: the sender gave up on the earlier one
        // (it offered again), whose transfer must not write into the same spool any more.
        let files = self.receiving.files.iter();
        let mut earlier: Vec<FileKey> = files
            .filter(|(_, t)| (t.from, t.id) == (from, id))
            .map(|(k, _)| *k)
            .collect();
        earlier.sort_unstable();
        for old in earlier {
            self.receiving.files.remove(&old);
            self.cancel_file(old);
            self.act(Action::Close(old));
        }
        tracing::debug!(friend = key.0, file = key.1, %id, "accepting file");
        let transfer = Transfer {
            from,
            id,
            size,
            deposit,
            received: None,
            resumed: false,
            synced: 0,
        };
        self.receiving.files.insert(key, transfer);
        self.act(Action::Accept {
            key,
            from,
            id,
            size,
        });
    }

    pub(super) fn accepted(&mut self, key: FileKey, outcome: AcceptOutcome) {
        let Some(t) = self
            .receiving
            .files
            .get_mut(&key)
            .filter(|t| t.received.is_none())
        else {
            return;
        };
        match outcome {
            AcceptOutcome::Accepted { offset } => {
                if offset > 0 {
                    tracing::info!(peer = %t.from, id = %t.id, offset, size = t.size, "resuming transfer");
                }
                t.received = Some(offset);
                t.resumed = offset > 0;
                t.synced = offset;
            }
            AcceptOutcome::SpoolUnavailable => {
                let t = self.receiving.files.remove(&key).expect("present");
                self.cancel_file(key);
                let refusal = Refusal::new(NackCode::StorageFailure, "receiver spool unavailable");
                self.refuse(t.from, t.id, refusal);
            }
            AcceptOutcome::NotAccepted => {
                self.receiving.files.remove(&key);
                self.act(Action::Close(key));
            }
        }
    }

    pub(super) fn on_file_chunk(&mut self, key: FileKey, position: u64, data: Vec<u8>) {
        let Some(t) = self.receiving.files.get_mut(&key) else {
            return;
        };
        let Some(received) = t.received else {
            return; // not accepted yet: c-toxcore sends nothing before the accept
        };
        if data.is_empty() {
            let t = self.receiving.files.remove(&key).expect("present");
            return self.file_complete(key, t);
        }
        let end = position.saturating_add(data.len() as u64);
        if end > t.size {
            let (from, id) = (t.from, t.id);
            self.receiving.files.remove(&key);
            self.cancel_file(key);
            self.act(Action::Close(key));
            let refusal = Refusal::new(NackCode::Malformed, "file data past the offered size");
            return self.refuse(from, id, refusal);
        }
        let received = received.max(end);
        t.received = Some(received);
        let sync = received - t.synced >= SPOOL_SYNC_EVERY;
        if sync {
            t.synced = received;
        }
        self.act(Action::Write {
            key,
            position,
            data,
            sync,
        });
    }

    pub(super) fn write_failed(&mut self, key: FileKey) {
        if self.receiving.files.remove(&key).is_some() {
            tracing::error!(
                friend = key.0,
                file = key.1,
                "spool write failed; transfer cancelled"
            );
            self.cancel_file(key);
            self.act(Action::Close(key));
        }
    }

    fn file_complete(&mut self, key: FileKey, t: Transfer) {
        if t.received.unwrap_or(0) < t.size {
            // Ended early; the spool keeps what arrived for the next offer.
            return self.act(Action::Close(key));
        }
        let (from, id) = (t.from, t.id);
        self.receiving.storing.insert((from, id));
        // Through a relay we trust, an envelope may be sealed by anyone, but only to us.
        let trusted = t.deposit.is_none() && self.config.trusted_relays.contains(&from);
        let relayed_to = if trusted { self.self_key } else { None };
        let (resumed, deposit) = (t.resumed, t.deposit);
        self.act(Action::Store {
            key,
            from,
            id,
            resumed,
            relayed_to,
            deposit,
        });
    }

    pub(super) fn stored(
        &mut self,
        from: PublicKey,
        origin: PublicKey,
        id: MessageId,
        result: Result<(), Refusal>,
    ) {
        if !self.receiving.storing.remove(&(from, id)) {
            return;
        }
        match result {
            Ok(()) => {
                self.act(Action::RemoveSpool { from, id });
                self.count(|s| &s.envelopes_stored);
                tracing::info!(peer = %from, %id, "envelope stored; acknowledging");
                self.send(from, Frame::Ack(id));
                if origin != from {
                    self.emit(PeerEvent::Relayed {
                        origin,
                        via: from,
                        id,
                    });
                }
            }
            Err(refusal) => {
                let mixed_up = refusal.code == NackCode::Malformed;
                if refusal.class == NackClass::Permanent || mixed_up {
                    self.act(Action::RemoveSpool { from, id });
                }
                self.refuse(from, id, refusal);
            }
        }
    }
}
