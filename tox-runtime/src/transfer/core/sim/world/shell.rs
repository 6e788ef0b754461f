//! A site's shell: it answers the core's actions as `engine.rs` and `receive.rs` do (offers,
//! accepts and cancels through its c-toxcore, answers fed back before anything else happens;
//! spool writes; inbox calls as tasks whose results come back later; replies to its bridge),
//! and its bridge hands deliveries to the core through a lane.

use toxmail_protocol::{Frame, MessageId, NackCode, PublicKey};

use super::super::super::{
    AcceptOutcome, Action, Input, OfferOutcome, check_header, resume_offset, resumed_refusal,
};
use super::super::site::Spool;
use super::super::{frame_str, short};
use super::{Ev, RETRY_AFTER, World};
use crate::transfer::Refusal;

impl World {
    /// Counts the interesting paths an input takes, for the coverage summary.
    pub(super) fn cover_input(&mut self, s: usize, input: &Input) {
        let what = match input {
            Input::FileRecv { from, id, .. } => {
                let core = self.sites[s].core.as_ref();
                match core.map(|c| c.receiving.offers.get(&(*from, *id)).map(|o| o.checked)) {
                    Some(None) => "file before its offer",
                    Some(Some(false)) => "file before the check of its offer",
                    _ => return,
                }
            }
            Input::Offered { outcome, .. } => match outcome {
                OfferOutcome::FrameNotSent => "offer frame not sent",
                OfferOutcome::FileNotStarted => "file not started",
                OfferOutcome::Started(_) => "file started",
            },
            Input::Accepted { outcome, .. } => match outcome {
                AcceptOutcome::Accepted { offset: 0 } => "accepted from 0",
                AcceptOutcome::Accepted { .. } => "accepted, resuming",
                _ => "accept refused by c-toxcore",
            },
            Input::Checked {
                already_stored: true,
                ..
            } => "offer of a message already stored",
            Input::Stored { result: Err(_), .. } => "store refused",
            Input::FileDone { aborted: true, .. } => "outgoing file aborted",
            Input::IncomingCancelled(_) => "file cancelled by the peer",
            Input::Packet { data, .. } => match Frame::decode(data) {
                Ok(Frame::Nack(_)) => "nack received",
                Ok(Frame::Hello(_)) => "hello received",
                _ => return,
            },
            Input::Abandoned(_) => "delivery abandoned",
            _ => return,
        };
        self.count(what);
    }

    /// `Engine::perform`.
    pub(super) fn perform(&mut self, s: usize, action: Action) -> Option<Input> {
        let now = self.now;
        if let Some(what) = describe_action(&action) {
            self.note(s, what);
        }
        let site = &mut self.sites[s];
        match action {
            Action::Send { frame, .. } => {
                let hello = matches!(frame, Frame::Hello(_));
                site.tox.send_packet(now, &self.p, frame.encode());
                if hello {
                    self.count("hello sent");
                }
            }
            Action::Offer {
                key,
                frame,
                envelope,
                ..
            } => {
                let outcome = if !site.tox.send_packet(now, &self.p, frame.encode()) {
                    OfferOutcome::FrameNotSent
                } else {
                    match site.tox.file_send(now, &self.p, key.1.0, envelope) {
                        Some(file) => OfferOutcome::Started(file),
                        None => OfferOutcome::FileNotStarted,
                    }
                };
                return Some(Input::Offered { key, outcome });
            }
            Action::Cancel((_, file)) => {
                site.tox.file_cancel(now, &self.p, file);
                self.count("file cancelled");
            }
            Action::Accept {
                key,
                from,
                id,
                size,
            } => {
                let file = site.spool.files.entry((from, id)).or_default().clone();
                let held = file.borrow().len() as u64;
                let offset = resume_offset(held, size).unwrap_or_else(|| {
                    file.borrow_mut().clear();
                    0
                });
                let outcome = if site.tox.file_accept(now, &self.p, key.1, offset) {
                    site.spool.open.insert(key, file);
                    AcceptOutcome::Accepted { offset }
                } else {
                    AcceptOutcome::NotAccepted
                };
                return Some(Input::Accepted { key, outcome });
            }
            Action::Write {
                key,
                position,
                data,
                ..
            } => match site.spool.open.get(&key) {
                Some(file) => Spool::write_at(file, position, &data),
                None => return Some(Input::WriteFailed(key)),
            },
            Action::Close(key) => {
                site.spool.open.remove(&key);
            }
            Action::Check { from, id } => {
                let (lo, hi) = self.p.check_ms;
                let at = now + self.rng.millis(lo, hi);
                let life = site.life;
                self.at(
                    at,
                    Ev::Check {
                        site: s,
                        life,
                        from,
                        id,
                    },
                );
            }
            Action::Store {
                key,
                from,
                id,
                resumed,
                relayed_to,
                deposit,
            } => {
                site.spool.open.remove(&key);
                if deposit.is_some() {
                    let name = site.name;
                    self.fail(format!("{name}: a deposit stored, but no site relays"));
                    return None;
                }
                let read = match site.spool.files.get(&(from, id)) {
                    Some(file) => {
                        let bytes = file.borrow().clone();
                        check_header(&bytes, from, id, relayed_to).map(|origin| (origin, bytes))
                    }
                    None => Err(Refusal::new(NackCode::StorageFailure, "spool read: gone")),
                };
                let life = site.life;
                if resumed {
                    self.count("store of a resumed transfer");
                }
                let (lo, hi) = self.p.store_ms;
                let at = now + self.rng.millis(lo, hi);
                self.at(
                    at,
                    Ev::Commit {
                        site: s,
                        life,
                        from,
                        id,
                        resumed,
                        read,
                    },
                );
            }
            Action::RemoveSpool { from, id } => {
                site.spool.files.remove(&(from, id));
            }
            Action::Emit(_) => {}
            Action::CheckDeposit { .. } => {
                let name = site.name;
                self.fail(format!("{name}: a deposit checked, but no site relays"));
            }
            Action::Complete { key, result } => self.complete(s, key.1, result),
        }
        None
    }

    /// The store task: the inbox call, then its answer back to the core.
    pub(super) fn commit(
        &mut self,
        s: usize,
        from: PublicKey,
        id: MessageId,
        resumed: bool,
        read: Result<(PublicKey, Vec<u8>), Refusal>,
    ) {
        let (origin, result) = match read {
            Ok((origin, bytes)) => {
                let sealed = self
                    .msgs
                    .get(&id)
                    .filter(|m| self.sites[m.from].key == origin)
                    .map(|m| m.envelope.clone());
                let inbox = &mut self.sites[s].inbox;
                (origin, inbox.store(origin, id, bytes, sealed.as_deref()))
            }
            Err(refusal) => (from, Err(refusal)),
        };
        let result = result.map_err(|r| resumed_refusal(r, resumed));
        let input = Input::Stored {
            from,
            origin,
            id,
            result,
        };
        self.feed(s, input);
    }

    /// The reply to the bridge's delivery.
    fn complete(
        &mut self,
        s: usize,
        id: MessageId,
        result: Result<(), crate::transfer::DeliveryError>,
    ) {
        let now = self.now;
        let name = self.sites[s].name;
        let bridge = &mut self.sites[s].bridge;
        match bridge.lane.remove(&id) {
            None if bridge.abandoned.contains_key(&id) => {}
            None => self.fail(format!(
                "{name}: Complete for {} which is not under way (a second Complete?)",
                short(&id)
            )),
            Some(since) => match result {
                Ok(()) => {
                    bridge.latencies.push(now - since);
                    if bridge.done.insert(id, now).is_some() {
                        self.fail(format!("{name}: {} completed Ok twice", short(&id)));
                    }
                }
                Err(e) if e.is_temporary() => {
                    self.at(now + RETRY_AFTER, Ev::Redeliver { site: s, id });
                }
                Err(e) => self.fail(format!("{name}: {} failed for good: {e}", short(&id))),
            },
        }
        let life = self.sites[s].life;
        self.at(now, Ev::FillLane { site: s, life });
    }

    /// The bridge hands the core what its lane has room for.
    pub(super) fn fill_lane(&mut self, s: usize) {
        if !self.sites[s].running() {
            return;
        }
        while let Some(id) = self.sites[s].bridge.next(self.now) {
            let envelope = self.msgs[&id].envelope.clone();
            let to = self.sites[s].peer;
            self.feed(
                s,
                Input::Deliver {
                    to,
                    id,
                    envelope,
                    deposit_until: None,
                },
            );
        }
    }

    /// The bridge gives a delivery up.
    pub(super) fn abandon(&mut self, s: usize, id: MessageId) {
        let sent = self.complete_sent.contains(&id);
        let bridge = &mut self.sites[s].bridge;
        if bridge.done.contains_key(&id) {
            return;
        }
        bridge.abandoned.insert(id, sent);
        bridge.lane.remove(&id);
        bridge.waiting.retain(|w| *w != id);
        if self.sites[s].running() {
            let key = (self.sites[s].peer, id);
            self.feed(s, Input::Abandoned(key));
        }
    }
}

pub(super) fn describe_input(input: &Input) -> Option<String> {
    Some(match input {
        Input::Tick => return None,
        Input::FileChunk { data, .. } if !data.is_empty() => return None,
        Input::FileChunk { key, position, .. } => format!("chunks end #{:x} at {position}", key.1),
        Input::Packet { data, .. } => match Frame::decode(data) {
            Ok(frame) => format!("got {}", frame_str(&frame)),
            Err(e) => format!("got a bad frame: {e}"),
        },
        Input::FileRecv { file, size, id, .. } => {
            format!("FileRecv #{file:x} {} ({size} B)", short(id))
        }
        Input::Deliver { id, envelope, .. } => {
            format!("Deliver {} ({} B)", short(id), envelope.len())
        }
        Input::Abandoned(key) => format!("Abandoned {}", short(&key.1)),
        Input::Offered { key, outcome } => format!("Offered {} {outcome:?}", short(&key.1)),
        Input::Accepted { key, outcome } => format!("Accepted #{:x} {outcome:?}", key.1),
        Input::Checked {
            id, already_stored, ..
        } => format!("Checked {} already={already_stored}", short(id)),
        Input::Stored { id, result, .. } => format!("Stored {} {result:?}", short(id)),
        Input::FileDone { key, aborted } => format!("FileDone #{:x} aborted={aborted}", key.1),
        Input::IncomingCancelled(key) => format!("Cancelled by peer #{:x}", key.1),
        Input::Connection { online, .. } => format!("Connection online={online}"),
        other => format!("{other:?}"),
    })
}

fn describe_action(action: &Action) -> Option<String> {
    Some(match action {
        Action::Write { .. } | Action::Emit(_) => return None,
        Action::Send { frame, .. } => format!("send {}", frame_str(frame)),
        Action::Offer { key, .. } => format!("-> Offer {}", short(&key.1)),
        Action::Cancel(key) => format!("-> Cancel #{:x}", key.1),
        Action::Accept { key, id, .. } => format!("-> Accept #{:x} {}", key.1, short(id)),
        Action::Close(key) => format!("-> Close #{:x}", key.1),
        Action::Check { id, .. } => format!("-> Check {}", short(id)),
        Action::Store {
            key, id, resumed, ..
        } => {
            format!("-> Store #{:x} {} resumed={resumed}", key.1, short(id))
        }
        Action::RemoveSpool { id, .. } => format!("-> RemoveSpool {}", short(id)),
        Action::Complete { key, result } => format!("-> Complete {} {result:?}", short(&key.1)),
        Action::CheckDeposit { .. } => "-> CheckDeposit".into(),
    })
}
