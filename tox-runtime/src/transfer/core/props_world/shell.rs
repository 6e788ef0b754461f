//! The shell's side of the world: each action of the core is checked against what is known,
//! then carried out; calls are answered as the inbox, the relay store and the spool stand.

use std::collections::VecDeque;

use toxmail_protocol::{Custody, Frame, NackClass, NackCode, RelayFrame, RelayRefusal};

use super::{Due, HELD_UNTIL, Incoming, World};
use crate::transfer::core::sending::OutState;
use crate::transfer::core::testkit::*;
use crate::transfer::core::{AcceptOutcome, Action, Input, OfferOutcome};
use crate::transfer::{DepositRefusal, Refusal};

impl World {
    /// Checks one action against what is known and carries it out; answers due now are queued.
    pub(super) fn after(&mut self, action: Action, queue: &mut VecDeque<Input>) {
        let due = match action {
            Action::Send { to, ref frame, .. } => {
                assert!(self.peer(to).online, "{action:?} to an offline peer");
                match frame {
                    Frame::Ack(id) => assert!(self.inbox.contains(&(to, *id)), "ack before store"),
                    Frame::Relay(RelayFrame::Custody(c)) => {
                        assert!(
                            self.held.contains(&(to, c.message_id)),
                            "custody before store"
                        )
                    }
                    _ => {}
                }
                return;
            }
            Action::Offer {
                key, friend, frame, ..
            } => {
                assert!(
                    self.outstanding.contains(&key),
                    "offer of {key:?}, no delivery"
                );
                assert!(self.peer(key.0).online, "offer to an offline peer");
                self.offer_at_hello.remove(&key);
                self.offers_made += 1;
                // c-toxcore gives the lowest number no file of ours to that friend has.
                let free = (0..).find(|f| !self.live_out.contains_key(&(friend, *f)));
                let file = free.expect("a free number");
                if self.defer && !self.ideal {
                    // The shell never answers (and started nothing): the core offers again
                    // once it waited as long as for a lost verdict.
                    return;
                }
                let outcome = match self.luck.wrapping_add(self.offers_made as u8) % 10 {
                    _ if self.ideal => OfferOutcome::Started(file),
                    0 => OfferOutcome::FrameNotSent,
                    1 => OfferOutcome::FileNotStarted,
                    _ => OfferOutcome::Started(file),
                };
                if outcome == OfferOutcome::Started(file) {
                    self.live_out.insert((friend, file), key);
                }
                queue.push_back(Input::Offered { key, outcome });
                if self.ideal {
                    // The peer takes every byte and answers.
                    self.live_out.remove(&(friend, file));
                    let aborted = false;
                    queue.push_back(Input::FileDone {
                        key: (friend, file),
                        aborted,
                    });
                    let verdict = match frame {
                        Frame::Offer(_) => Frame::Ack(key.1),
                        _ => Frame::Relay(RelayFrame::Custody(Custody {
                            message_id: key.1,
                            expires: HELD_UNTIL,
                        })),
                    };
                    queue.push_back(packet(friend, key.0, &verdict));
                }
                return;
            }
            Action::Cancel(key) if key.1 < incoming(0) => {
                // Never the file of a delivery still sending under that number.
                if let Some(owner) = self.live_out.remove(&key) {
                    let state = self.h.core.sending.out.get(&owner).map(|o| o.state);
                    let sending =
                        matches!(state, Some(OutState::Sending { file, .. }) if file == key.1);
                    assert!(!sending, "cancelled {key:?} of {owner:?}, still sending it");
                }
                return;
            }
            Action::Cancel(key) => {
                self.accepted.remove(&key);
                self.live_in.remove(&key);
                return;
            }
            Action::Accept {
                key,
                from,
                id,
                size,
            } => {
                assert_eq!(
                    self.last_recv.get(&key),
                    Some(&id),
                    "accepted under another id"
                );
                assert!(!self.accepted.contains_key(&key), "{key:?} accepted twice");
                let same = |t: &Incoming| (t.from, t.id) == (from, id);
                assert!(
                    !self.accepted.values().any(same) && !self.storing.contains(&(from, id)),
                    "two transfers into the spool of {id}"
                );
                self.generation += 1;
                let generation = self.generation;
                let t = Incoming {
                    from,
                    id,
                    size,
                    received: None,
                    generation,
                };
                self.accepted.insert(key, t);
                let held = self.spool.get(&(from, id)).copied().unwrap_or(0);
                let offset = super::super::resume_offset(held, size).unwrap_or(0);
                let outcome = match self.luck % 12 {
                    _ if self.ideal => AcceptOutcome::Accepted { offset },
                    0 => AcceptOutcome::NotAccepted,
                    1 => AcceptOutcome::SpoolUnavailable,
                    _ => AcceptOutcome::Accepted { offset },
                };
                Due::Accepted(key, generation, outcome)
            }
            Action::Write {
                key,
                position,
                ref data,
                ..
            } => {
                let t = self
                    .accepted
                    .get_mut(&key)
                    .expect("write to a file not accepted");
                let received = t.received.expect("write before the accept");
                let end = position + data.len() as u64;
                assert!(end <= t.size, "write past the size");
                t.received = Some(received.max(end));
                let len = self.spool.entry((t.from, t.id)).or_default();
                *len = (*len).max(end);
                return;
            }
            Action::Close(key) => {
                self.accepted.remove(&key);
                return;
            }
            Action::Check { from, id } => Due::Check(from, id),
            Action::CheckDeposit { from, deposit } => Due::CheckDeposit(from, deposit.message_id),
            Action::Store {
                key,
                from,
                id,
                ref deposit,
                ..
            } => {
                let t = self
                    .accepted
                    .remove(&key)
                    .expect("store of a file not accepted");
                assert!(t.received.unwrap_or(0) >= t.size, "store of a short file");
                assert!(self.storing.insert((from, id)), "stored twice at once");
                Due::Store(from, id, deposit.is_some())
            }
            Action::RemoveSpool { from, id } => {
                self.spool.remove(&(from, id));
                return;
            }
            Action::Emit(_) => return,
            Action::Complete { key, .. } => {
                assert!(
                    self.outstanding.remove(&key),
                    "a second verdict for {key:?}"
                );
                self.offer_at_hello.remove(&key);
                return;
            }
        };
        let now = self.ideal || (!self.defer && matches!(due, Due::Accepted(..)));
        if now {
            queue.extend(self.answer(due));
        } else {
            self.due.push(due);
        }
    }

    /// The shell's answer to a call, as the inbox, relay store and spool now stand.
    pub(super) fn answer(&mut self, due: Due) -> Option<Input> {
        // Now and then the inbox or relay store refuses, unless healing.
        let bad = if self.ideal {
            None
        } else {
            Some(self.luck % 8)
        };
        Some(match due {
            Due::Late(input) => input,
            Due::Accepted(key, generation, outcome) => {
                let current = self.accepted.get(&key);
                current.filter(|t| t.generation == generation && t.received.is_none())?;
                Input::Accepted { key, outcome }
            }
            Due::Check(from, id) => {
                let already_stored = self.inbox.contains(&(from, id));
                Input::Checked {
                    from,
                    id,
                    already_stored,
                }
            }
            Due::CheckDeposit(from, id) => {
                let result = match bad {
                    Some(0) => Err(DepositRefusal::new(RelayRefusal::QuotaCount, "full")),
                    _ => Ok(self.held.contains(&(from, id)).then_some(HELD_UNTIL)),
                };
                Input::DepositChecked { from, id, result }
            }
            Due::Store(from, id, true) => {
                let result = match bad {
                    Some(0) => Err(DepositRefusal::new(RelayRefusal::StorageFailure, "disk")),
                    Some(1) => Err(DepositRefusal::new(RelayRefusal::Malformed, "no")),
                    _ => Ok(HELD_UNTIL),
                };
                Input::Deposited { from, id, result }
            }
            Due::Store(from, id, false) => {
                let result = match bad {
                    Some(0) => Err(Refusal::new(NackCode::StorageFailure, "disk")),
                    Some(1) => Err(Refusal::new(NackCode::Forged, "forged")),
                    Some(2) => Err(Refusal {
                        class: NackClass::Temporary,
                        ..Refusal::new(NackCode::Malformed, "mixed up")
                    }),
                    _ => Ok(()),
                };
                Input::Stored {
                    from,
                    origin: from,
                    id,
                    result,
                }
            }
        })
    }
}
