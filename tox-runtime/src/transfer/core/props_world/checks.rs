//! The invariants that hold after every input, and the healing phase after which every
//! delivery has had its verdict and nothing is left waiting.

use std::collections::HashSet;
use std::time::Duration;

use toxmail_protocol::PublicKey;

use super::World;
use crate::transfer::core::receiving::{OFFER_TTL, ORPHAN_WAIT};
use crate::transfer::core::sending::{ABORT_GRACE, OutState, stall_allowance, verdict_allowance};
use crate::transfer::core::testkit::*;
use crate::transfer::core::{FileKey, Input, OutKey};

impl World {
    /// Peer `pk` said hello: each delivery that waited for it has been offered or completed.
    pub(in crate::transfer::core) fn check_offered_at_hello(&self, pk: PublicKey) {
        let left: Vec<_> = self.offer_at_hello.iter().filter(|k| k.0 == pk).collect();
        assert!(left.is_empty(), "not offered at hello: {left:?}");
    }

    /// The invariants that hold after every input.
    pub(super) fn check(&self) {
        let core = &self.h.core;
        let now = self.h.now();
        // Every delivery given is under way until its one verdict; none is stuck.
        let keys: HashSet<OutKey> = core.sending.out.keys().copied().collect();
        assert_eq!(keys, self.outstanding, "deliveries lost or invented");
        let ack = ACK_TIMEOUT;
        for (key, out) in &core.sending.out {
            let (since, limit) = match out.state {
                OutState::Waiting => {
                    let peer = self.peer(key.0);
                    assert!(
                        !(peer.online && peer.hello),
                        "{key:?} waits for a ready peer"
                    );
                    continue;
                }
                OutState::Offering { since } => (since, ack),
                OutState::Sending { since, .. } => {
                    (since, ack + stall_allowance(out.envelope.len()))
                }
                OutState::AwaitingVerdict {
                    since,
                    aborted: true,
                } => (since, ABORT_GRACE),
                OutState::AwaitingVerdict { since, .. } => {
                    (since, ack + verdict_allowance(out.envelope.len()))
                }
            };
            assert!(now - since < limit, "{key:?} stuck in {:?}", out.state);
        }
        // No file coming in is forgotten while c-toxcore holds it paused or running, and none
        // the core still tracks has ended.
        let r = &core.receiving;
        let orphans = r.orphans.values().map(|o| o.key);
        let parked = r.offers.values().filter_map(|o| o.parked);
        let tracked: HashSet<FileKey> = orphans
            .chain(parked)
            .chain(r.files.keys().copied())
            .collect();
        assert_eq!(tracked, self.live_in, "incoming files tracked vs alive");
        for o in r.orphans.values() {
            assert!(now - o.since < ORPHAN_WAIT, "orphan kept past its wait");
        }
        for o in r.offers.values() {
            assert!(now - o.since < OFFER_TTL, "offer kept past its time");
        }
    }

    /// Peers online and hello'd, every call answered, time running long past every timeout,
    /// each peer taking every file: every delivery then has its verdict and nothing is left.
    pub(in crate::transfer::core) fn heal(&mut self) {
        self.ideal = true;
        for n in 0..self.peers.len() {
            let (pk, friend) = (self.peers[n].pk, self.peers[n].friend);
            if !self.peers[n].online {
                self.feed(Input::Connection {
                    pk,
                    friend,
                    online: true,
                });
            }
            self.peers[n].hello = true;
            self.feed(packet(friend, pk, &hello(MAX_ENVELOPE)));
            self.check_offered_at_hello(pk);
        }
        for _ in 0..(OFFER_TTL.as_secs() / 2 + 10) {
            while !self.due.is_empty() {
                self.answer_due(0);
            }
            for key in self.receiving_files() {
                if !self.accepted.contains_key(&key) {
                    continue;
                }
                let (position, left) = self.progress(key);
                let data = vec![0; left as usize];
                if left > 0 {
                    self.feed(Input::FileChunk {
                        key,
                        position,
                        data,
                    });
                }
                let position = position + left;
                self.feed(Input::FileChunk {
                    key,
                    position,
                    data: Vec::new(),
                });
            }
            self.h.elapsed += Duration::from_secs(2);
            self.feed(Input::Tick);
        }
        let core = &self.h.core;
        assert!(
            self.outstanding.is_empty(),
            "verdicts lost: {:?}",
            self.outstanding
        );
        assert!(core.sending.finishing.is_empty(), "acked files never ended");
        let r = &core.receiving;
        assert!(r.offers.is_empty() && r.orphans.is_empty() && r.files.is_empty());
        assert!(r.storing.is_empty() && self.storing.is_empty() && self.live_in.is_empty());
    }
}
