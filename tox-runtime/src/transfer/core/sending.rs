//! Our deliveries: each is waiting for its peer, being offered, sending its file, or awaiting the
//! peer's verdict; it ends with the verdict ([`Action::Complete`]) or when its caller gives up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use toxmail_protocol::{
    Frame, Hello, MessageId, Nack, NackClass, NackCode, Offer, PROTOCOL_LEVEL, PROTOCOL_VERSION,
    PublicKey,
};

use super::{Action, Core, FileKey, OfferOutcome, OutKey};
use crate::event::FileNumber;
use crate::transfer::DeliveryError;

/// After an outgoing file was cancelled with no verdict following, wait this long, then re-offer.
pub(crate) const ABORT_GRACE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Waiting for the friend to be online and to have said hello.
    Waiting,
    /// The offer was handed to the shell, whose answer ([`super::Input::Offered`]) is due.
    Offering { since: Instant },
    /// The file is being sent, since then.
    Sending { file: FileNumber, since: Instant },
    /// Every byte went out (or the file was cancelled, `aborted`): waiting for a verdict since
    /// then; re-offered after the ack timeout (after [`ABORT_GRACE`] when aborted).
    AwaitingVerdict { since: Instant, aborted: bool },
}

pub(crate) struct Outbound {
    pub(crate) envelope: Arc<[u8]>,
    /// `Some(expires)`: a deposit with the relay `to`.
    pub(crate) deposit_until: Option<u64>,
    pub(crate) state: OutState,
}

#[derive(Default)]
pub(crate) struct Sending {
    pub(crate) out: HashMap<OutKey, Outbound>,
    /// Our files whose envelope the peer acknowledged before c-toxcore reported the file sent:
    /// left to finish on their own (a cancel now could cross the peer's own end of the transfer
    /// and reach the next file given the same, reused number), cancelled only if they never do.
    pub(crate) finishing: HashMap<FileKey, Instant>,
}

impl Core {
    pub(super) fn deliver(
        &mut self,
        to: PublicKey,
        id: MessageId,
        envelope: Arc<[u8]>,
        deposit_until: Option<u64>,
    ) {
        if !self.peers.contains_key(&to) {
            let result = Err(DeliveryError::UnknownFriend(to));
            return self.act(Action::Complete {
                key: (to, id),
                result,
            });
        }
        let key = (to, id);
        if let Some(out) = self.sending.out.get_mut(&key) {
            // Delivered again while under way: the transfer in progress answers this one too.
            out.envelope = envelope;
            out.deposit_until = deposit_until;
            if out.state != OutState::Waiting {
                return;
            }
        } else {
            let state = OutState::Waiting;
            let out = Outbound {
                envelope,
                deposit_until,
                state,
            };
            self.sending.out.insert(key, out);
        }
        if self.peers[&to].hello.is_some() {
            self.offer(key);
        }
    }

    /// Asks the shell to send the offer and start the file (when the peer is online and said
    /// hello); a delivery too large for the peer ends here.
    fn offer(&mut self, key: OutKey) {
        let (to, id) = key;
        let Some(out) = self.sending.out.get(&key) else {
            return;
        };
        let Some(peer) = self.peers.get(&to).filter(|p| p.online) else {
            return;
        };
        let (friend, envelope, size) =
            (peer.friend, out.envelope.clone(), out.envelope.len() as u64);
        if let Some(limit) = peer
            .hello
            .as_ref()
            .map(|h| h.max_envelope)
            .filter(|l| size > *l)
        {
            return self.verdict(to, id, Err(DeliveryError::TooLarge { size, limit }));
        }
        let level = peer
            .hello
            .as_ref()
            .map_or(PROTOCOL_VERSION, |h| h.version_max);
        if let Some(nack) = cannot_open(id, &envelope, level) {
            return self.verdict(to, id, Err(DeliveryError::Refused(nack)));
        }
        let frame = match out.deposit_until {
            None => Frame::Offer(Offer {
                message_id: id,
                size,
            }),
            Some(expires) => match super::deposits::deposit_frame(id, &envelope, expires) {
                Ok(frame) => frame,
                Err(e) => return self.verdict(to, id, Err(e)),
            },
        };
        let since = self.now;
        if let Some(out) = self.sending.out.get_mut(&key) {
            out.state = OutState::Offering { since };
        }
        self.act(Action::Offer {
            key,
            friend,
            frame,
            envelope,
        });
    }

    pub(super) fn offered(&mut self, key: OutKey, outcome: OfferOutcome) {
        let now = self.now;
        let Some(out) = self.sending.out.get_mut(&key) else {
            if let OfferOutcome::Started(file) = outcome
                && let Some(peer) = self.peers.get(&key.0)
            {
                // Given up on while its offer was under way.
                let friend = peer.friend;
                self.act(Action::Cancel((friend, file)));
            }
            return;
        };
        if !matches!(out.state, OutState::Offering { .. }) {
            return;
        }
        let retry = OutState::AwaitingVerdict {
            since: now,
            aborted: true,
        };
        match outcome {
            OfferOutcome::FrameNotSent | OfferOutcome::FileNotStarted => {
                tracing::debug!(peer = %key.0, id = %key.1, ?outcome, "offer not made; will retry");
                out.state = retry;
            }
            OfferOutcome::Started(file) => {
                tracing::debug!(peer = %key.0, id = %key.1, file, "file started");
                out.state = OutState::Sending { file, since: now };
                // c-toxcore hands out a file number only once its last transfer is over: a
                // delivery still marked as sending under it missed that end (its events are
                // still queued). Let it wait for its verdict, so it can never cancel this file.
                for (k, o) in self.sending.out.iter_mut() {
                    if *k != key
                        && k.0 == key.0
                        && matches!(o.state, OutState::Sending { file: f, .. } if f == file)
                    {
                        o.state = retry;
                    }
                }
                if let Some(peer) = self.peers.get(&key.0) {
                    self.sending.finishing.remove(&(peer.friend, file));
                }
            }
        }
    }

    /// Ack or nack from `from` for `id`: completes the delivery if it is ours to that peer;
    /// otherwise an ack is the recipient's receipt for a message we handed to a relay.
    pub(super) fn verdict(
        &mut self,
        from: PublicKey,
        id: MessageId,
        result: Result<(), DeliveryError>,
    ) {
        let Some(out) = self.sending.out.remove(&(from, id)) else {
            tracing::debug!(peer = %from, %id, "verdict for no delivery of ours");
            if result.is_ok() {
                self.emit(crate::transfer::PeerEvent::Receipt { from, id });
            }
            return;
        };
        if let OutState::Sending { file, .. } = out.state
            && let Some(peer) = self.peers.get(&from)
        {
            let key = (peer.friend, file);
            if result.is_ok() {
                // Stored: the peer has every byte, the file ends by itself.
                self.sending.finishing.insert(key, self.now);
            } else {
                self.act(Action::Cancel(key));
            }
        }
        self.act(Action::Complete {
            key: (from, id),
            result,
        });
    }

    pub(super) fn on_nack(&mut self, from: PublicKey, nack: Nack) {
        if nack.class == NackClass::Temporary && nack.code == NackCode::Malformed {
            // The receiver got other bytes than the offered envelope (a transfer mixed up under
            // load): not a verdict on the mail. Offer it again after the abort grace.
            tracing::info!(peer = %from, id = %nack.message_id, detail = %nack.detail, "transfer mixed up; offering again");
            let now = self.now;
            if let Some(out) = self.sending.out.get_mut(&(from, nack.message_id)) {
                out.state = OutState::AwaitingVerdict {
                    since: now,
                    aborted: true,
                };
            }
            return;
        }
        let id = nack.message_id;
        self.verdict(from, id, Err(DeliveryError::Refused(nack)))
    }

    /// The peer said hello: its waiting deliveries are offered, or refused when it speaks no
    /// version we speak.
    pub(super) fn offer_waiting(&mut self, from: PublicKey, hello: &Hello) {
        let compatible =
            hello.version_min <= PROTOCOL_LEVEL && hello.version_max >= PROTOCOL_VERSION;
        let mut waiting: Vec<OutKey> = self
            .sending
            .out
            .iter()
            .filter(|(k, o)| k.0 == from && o.state == OutState::Waiting)
            .map(|(key, _)| *key)
            .collect();
        waiting.sort_unstable();
        for key in waiting {
            if compatible {
                self.offer(key);
                continue;
            }
            let nack = Nack {
                message_id: key.1,
                class: NackClass::Permanent,
                code: NackCode::UnsupportedVersion,
                detail: format!(
                    "peer speaks protocol versions {}..={}, we speak {PROTOCOL_VERSION}..={PROTOCOL_LEVEL}",
                    hello.version_min, hello.version_max
                ),
            };
            self.verdict(from, key.1, Err(DeliveryError::Refused(nack)));
        }
    }

    pub(super) fn sending_peer_offline(&mut self, pk: PublicKey) {
        for (_, out) in self.sending.out.iter_mut().filter(|(k, _)| k.0 == pk) {
            out.state = OutState::Waiting;
        }
    }

    /// c-toxcore is done with our file `key`: every byte handed over, or `aborted`.
    pub(super) fn file_done(&mut self, key: FileKey, aborted: bool) {
        self.sending.finishing.remove(&key);
        let Some(pk) = self.key_of(key.0) else {
            return;
        };
        let now = self.now;
        for (_, out) in self.sending.out.iter_mut().filter(|(k, _)| k.0 == pk) {
            if matches!(out.state, OutState::Sending { file, .. } if file == key.1) {
                out.state = OutState::AwaitingVerdict {
                    since: now,
                    aborted,
                };
            }
        }
    }

    /// The caller gave up (the mail expired, the bridge stops it): the delivery is forgotten and
    /// a file still sending is cancelled, so the receiver cannot store a mail the sender bounced.
    pub(super) fn abandoned(&mut self, key: OutKey) {
        let Some(out) = self.sending.out.remove(&key) else {
            return;
        };
        if let OutState::Sending { file, .. } = out.state
            && let Some(peer) = self.peers.get(&key.0)
        {
            tracing::info!(peer = %key.0, id = %key.1, file, "delivery given up; its file cancelled");
            let friend = peer.friend;
            self.act(Action::Cancel((friend, file)));
        }
    }

    pub(super) fn tick_sending(&mut self) {
        let now = self.now;
        let ack_timeout = self.config.ack_timeout;
        // A file "sending" for longer than its size can explain (the receiver neither took nor
        // refused it: a transfer lost between the two sides under load) is cancelled and
        // offered again after the abort grace, instead of waiting forever.
        let mut cancels = Vec::new();
        for ((to, id), out) in self.sending.out.iter_mut() {
            let OutState::Sending { file, since } = out.state else {
                continue;
            };
            if now.duration_since(since) < ack_timeout + stall_allowance(out.envelope.len()) {
                continue;
            }
            tracing::info!(peer = %to, %id, file, "file made no progress; cancelled, offering again");
            if let Some(peer) = self.peers.get(to) {
                cancels.push((peer.friend, file));
            }
            out.state = OutState::AwaitingVerdict {
                since: now,
                aborted: true,
            };
        }
        // Files acknowledged long ago that c-toxcore still has not reported sent.
        self.sending.finishing.retain(|key, since| {
            let stale = now.duration_since(*since) >= ack_timeout;
            if stale {
                tracing::debug!(
                    friend = key.0,
                    file = key.1,
                    "acknowledged file never finished; cancelled"
                );
                cancels.push(*key);
            }
            !stale
        });
        cancels.sort_unstable();
        for key in cancels {
            self.act(Action::Cancel(key));
        }
        let mut due: Vec<OutKey> = self
            .sending
            .out
            .iter()
            .filter(|(_, o)| {
                let (since, wait) = match o.state {
                    OutState::AwaitingVerdict {
                        since,
                        aborted: true,
                    } => (since, ABORT_GRACE),
                    OutState::AwaitingVerdict {
                        since,
                        aborted: false,
                    } => (since, ack_timeout + verdict_allowance(o.envelope.len())),
                    // The shell never answered: offer again as after a lost verdict.
                    OutState::Offering { since } => (since, ack_timeout),
                    _ => return false,
                };
                now.duration_since(since) >= wait
            })
            .map(|(key, _)| *key)
            .collect();
        due.sort_unstable();
        for key in due {
            tracing::debug!(id = %key.1, "no verdict; offering again");
            self.offer(key);
        }
    }
}

/// A refusal when the envelope's version is one a peer speaking up to protocol `level` cannot
/// open: a compressed envelope (version 2) for a level-1 peer (sealed while it spoke level 2,
/// and it has gone back to an older release since), an envelope with an extension block
/// (versions 3 and 4: SMTPUTF8 or 8-bit mail, sealed before the peer's level was known) for a
/// peer below level 3. The copy fails with a clear reason instead of reaching a peer that would
/// refuse it or hand it on without what the extensions say.
fn cannot_open(id: MessageId, envelope: &[u8], level: u8) -> Option<Nack> {
    use toxmail_protocol::{ENVELOPE_VERSION_COMPRESSED, ENVELOPE_VERSION_EXTENDED};
    let version = toxmail_protocol::peek_header(envelope).ok()?.version;
    let what = match version {
        ENVELOPE_VERSION_COMPRESSED if level < 2 => "a compressed envelope",
        v if v >= ENVELOPE_VERSION_EXTENDED && level < 3 => {
            "an envelope with extensions (SMTPUTF8 or an 8-bit body)"
        }
        _ => return None,
    };
    Some(Nack {
        message_id: id,
        class: NackClass::Permanent,
        code: NackCode::UnsupportedVersion,
        detail: format!("the peer speaks protocol level {level} and cannot open {what}"),
    })
}

/// How long sending `len` bytes may take beyond the ack timeout before the file counts as
/// stalled: at 64 KiB/s, far below what a loopback or home link carries.
pub(crate) fn stall_allowance(len: usize) -> Duration {
    Duration::from_secs((len / (64 * 1024)) as u64)
}

/// How long the receiver may take to store `len` bytes (read the spool, open the envelope,
/// commit it) beyond the ack timeout: 1 s per MiB, for a slow disk on a small board.
pub(crate) fn verdict_allowance(len: usize) -> Duration {
    Duration::from_secs((len / (1024 * 1024)) as u64)
}
