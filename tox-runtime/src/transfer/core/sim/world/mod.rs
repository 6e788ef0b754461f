//! The world: two sites, the link between them, and the event queue in (time, sequence) order;
//! what a site's shell does with the core's actions is in `shell.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toxmail_protocol::{MAX_ENVELOPE_SIZE, MessageId, PublicKey};

mod shell;

use super::super::{Core, CoreConfig, Input};
use super::site::Site;
use super::tox::{FRIEND, Item};
use super::{Params, Rng, Trace};
use crate::transfer::Refusal;

/// How often c-toxcore iterates while it has work.
const ITERATE: Duration = Duration::from_millis(10);
const SECOND: Duration = Duration::from_secs(1);
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// The bridge retries a temporary refusal after this long.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What happens next, at its time.
pub(super) enum Ev {
    /// A packet of the link's epoch `epoch` reaches site `to`.
    Arrive {
        to: usize,
        epoch: u64,
        item: Item,
    },
    /// The peer's acknowledgement of packet `packet` reaches its sender.
    Ack {
        site: usize,
        epoch: u64,
        packet: u64,
    },
    /// `tox_iterate`, when the site's c-toxcore has work.
    Iterate {
        site: usize,
        life: u64,
        at: Duration,
    },
    /// An input on one of the engine's channels.
    Input {
        site: usize,
        life: u64,
        input: Input,
    },
    /// The inbox `contains` task finishes.
    Check {
        site: usize,
        life: u64,
        from: PublicKey,
        id: MessageId,
    },
    /// The store task finishes: header checked (or refused) when it read the spool.
    Commit {
        site: usize,
        life: u64,
        from: PublicKey,
        id: MessageId,
        resumed: bool,
        read: Result<(PublicKey, Vec<u8>), Refusal>,
    },
    Tick {
        site: usize,
        life: u64,
    },
    /// Mail reaches the site's bridge.
    Submit {
        site: usize,
        ids: Vec<MessageId>,
    },
    /// A delivery completed: the bridge's lane has room.
    FillLane {
        site: usize,
        life: u64,
    },
    /// The bridge retries a temporary refusal.
    Redeliver {
        site: usize,
        id: MessageId,
    },
    /// The bridge gives a delivery up.
    Abandon {
        site: usize,
        id: MessageId,
    },
    /// The link is cut for `length`.
    Cut {
        length: Duration,
    },
    /// A cut ends: the link comes back if nothing else keeps it down.
    Reeval,
    /// The friends reconnect.
    TryUp,
    /// The site's c-toxcore notices the friend gone (`epoch`: the link's down period).
    Notice {
        site: usize,
        epoch: u64,
    },
    /// The site's process dies, and comes `Back` after `down`.
    Restart {
        site: usize,
        down: Duration,
    },
    Back {
        site: usize,
        life: u64,
    },
    /// The site's send queue is full for `length`.
    Congest {
        site: usize,
        length: Duration,
    },
}

pub(super) struct Scheduled {
    pub at: Duration,
    seq: u64,
    pub ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub(super) struct Msg {
    pub from: usize,
    pub envelope: Arc<[u8]>,
}

pub(super) struct World {
    pub seed: u64,
    base: Instant,
    pub now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    pub p: Params,
    pub rng: Rng,
    pub sites: [Site; 2],
    pub link_up: bool,
    pub epoch: u64,
    pub cut_until: Duration,
    pub up_pending: bool,
    pub trace: Trace,
    pub failures: Vec<String>,
    pub msgs: BTreeMap<MessageId, Msg>,
    /// Messages whose last byte c-toxcore handed over at least once.
    pub complete_sent: BTreeSet<MessageId>,
    /// Events run.
    pub events: u64,
    /// How often the interesting paths were taken.
    pub coverage: BTreeMap<&'static str, u64>,
}

impl World {
    pub(super) fn new(seed: u64, p: Params) -> Self {
        let mut rng = Rng::new(seed);
        let (secret_a, key_a) = super::keypair(&mut rng);
        let (secret_b, key_b) = super::keypair(&mut rng);
        let mut world = World {
            seed,
            base: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            p,
            rng,
            sites: [
                Site::new("A", secret_a, key_a, key_b),
                Site::new("B", secret_b, key_b, key_a),
            ],
            link_up: false,
            epoch: 0,
            cut_until: Duration::ZERO,
            up_pending: false,
            trace: Trace::new(400),
            failures: Vec::new(),
            msgs: BTreeMap::new(),
            complete_sent: BTreeSet::new(),
            events: 0,
            coverage: BTreeMap::new(),
        };
        world.at(Duration::ZERO, Ev::Back { site: 0, life: 0 });
        world.at(Duration::ZERO, Ev::Back { site: 1, life: 0 });
        world
    }

    pub(super) fn at(&mut self, at: Duration, ev: Ev) {
        self.seq += 1;
        let seq = self.seq;
        self.queue.push(Reverse(Scheduled { at, seq, ev }));
    }

    pub(super) fn pop(&mut self) -> Option<Scheduled> {
        self.queue.pop().map(|Reverse(s)| s)
    }

    pub(super) fn note(&mut self, site: usize, what: String) {
        self.trace.push(self.now, self.sites[site].name, what);
    }

    pub(super) fn count(&mut self, what: &'static str) {
        *self.coverage.entry(what).or_default() += 1;
    }

    pub(super) fn fail(&mut self, what: String) {
        self.trace.push(self.now, "!", what.clone());
        self.failures.push(what);
    }

    /// Seals `bodies` from `from` to the other site, submitted to its bridge at `at`.
    pub(super) fn submit(&mut self, from: usize, bodies: &[usize], at: Duration) -> Vec<MessageId> {
        let mut ids = Vec::new();
        for &body in bodies {
            let (sender, recipient) = (&self.sites[from].secret, self.sites[1 - from].key);
            let (id, envelope) = super::envelope(&mut self.rng, sender, &recipient, body);
            self.msgs.insert(id, Msg { from, envelope });
            ids.push(id);
        }
        self.at(
            at,
            Ev::Submit {
                site: from,
                ids: ids.clone(),
            },
        );
        ids
    }

    pub(super) fn dispatch(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Arrive { to, epoch, item } => {
                if self.link_up && epoch == self.epoch && self.sites[to].running() {
                    if super::wire_trace() && !matches!(item, Item::Data { .. } | Item::Packet(_)) {
                        self.note(to, format!("wire: {item:?}"));
                    }
                    self.sites[to].tox.receive(now, &self.p, item);
                    self.drain(to);
                }
            }
            Ev::Ack {
                site,
                epoch,
                packet,
            } => {
                if self.link_up && epoch == self.epoch {
                    self.sites[site].tox.acked(packet);
                    self.drain(site);
                }
            }
            Ev::Iterate { site, life, at } => {
                let s = &mut self.sites[site];
                if s.life == life && s.iterate_at == Some(at) {
                    s.iterate_at = None;
                    s.tox.iterate(now, &self.p);
                    self.drain(site);
                }
            }
            Ev::Input { site, life, input } => {
                if self.alive(site, life) {
                    self.feed(site, input);
                }
            }
            Ev::Check {
                site,
                life,
                from,
                id,
            } => {
                if self.alive(site, life) {
                    let already_stored = self.sites[site].inbox.contains(from, id);
                    let input = Input::Checked {
                        from,
                        id,
                        already_stored,
                    };
                    self.feed(site, input);
                }
            }
            Ev::Commit {
                site,
                life,
                from,
                id,
                resumed,
                read,
            } => {
                if self.alive(site, life) {
                    self.commit(site, from, id, resumed, read);
                }
            }
            Ev::Tick { site, life } => {
                if self.alive(site, life) {
                    self.feed(site, Input::Tick);
                    self.at(now + SECOND, Ev::Tick { site, life });
                }
            }
            Ev::Submit { site, ids } => {
                let bridge = &mut self.sites[site].bridge;
                bridge.outbox.extend(&ids);
                bridge.waiting.extend(&ids);
                self.fill_lane(site);
            }
            Ev::FillLane { site, life } => {
                if self.alive(site, life) {
                    self.fill_lane(site);
                }
            }
            Ev::Redeliver { site, id } => {
                self.sites[site].bridge.requeue(id);
                self.fill_lane(site);
            }
            Ev::Abandon { site, id } => self.abandon(site, id),
            fault => self.fault(fault),
        }
    }

    fn alive(&self, site: usize, life: u64) -> bool {
        self.sites[site].life == life && self.sites[site].running()
    }

    /// Schedules what the site's c-toxcore put on the wire and raised for its engine.
    pub(super) fn drain(&mut self, s: usize) {
        let now = self.now;
        for sent in std::mem::take(&mut self.sites[s].tox.sent) {
            if self.link_up {
                let (epoch, packet) = (self.epoch, sent.packet);
                let item = sent.item;
                self.at(
                    sent.arrival,
                    Ev::Arrive {
                        to: 1 - s,
                        epoch,
                        item,
                    },
                );
                self.at(
                    sent.ack_at,
                    Ev::Ack {
                        site: s,
                        epoch,
                        packet,
                    },
                );
            }
        }
        for id in std::mem::take(&mut self.sites[s].tox.finished) {
            self.complete_sent.insert(MessageId(id));
        }
        let life = self.sites[s].life;
        for input in std::mem::take(&mut self.sites[s].tox.events) {
            let at = self.sites[s].channel_at.max(now + self.p.channel_delay);
            self.sites[s].channel_at = at;
            self.at(
                at,
                Ev::Input {
                    site: s,
                    life,
                    input,
                },
            );
        }
        if self.sites[s].tox.busy() {
            self.ensure_iterate(s, now + ITERATE);
        }
    }

    pub(super) fn ensure_iterate(&mut self, s: usize, at: Duration) {
        let site = &mut self.sites[s];
        if site.iterate_at.is_none_or(|t| t > at) {
            site.iterate_at = Some(at);
            let life = site.life;
            self.at(at, Ev::Iterate { site: s, life, at });
        }
    }

    /// `Engine::feed`: one input, and the results of the node calls it caused, in order.
    pub(super) fn feed(&mut self, s: usize, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            if let Some(what) = shell::describe_input(&input) {
                self.note(s, what);
            }
            self.cover_input(s, &input);
            let now = self.base + self.now;
            let Some(core) = self.sites[s].core.as_mut() else {
                return;
            };
            for action in core.handle(now, input) {
                if let Some(result) = self.perform(s, action) {
                    inputs.push_back(result);
                }
            }
        }
        self.drain(s);
    }

    pub(super) fn core_config() -> CoreConfig {
        CoreConfig {
            max_envelope: MAX_ENVELOPE_SIZE as u64,
            ack_timeout: ACK_TIMEOUT,
            max_peer_bytes: 256 * 1024 * 1024,
            trusted_relays: Default::default(),
        }
    }

    /// A site (re)starts: a core as from savedata (its friend known, offline), its bridge
    /// delivering again what was not acknowledged.
    pub(super) fn start(&mut self, s: usize) {
        let now = self.base + self.now;
        let site = &mut self.sites[s];
        let core = Core::new(Self::core_config(), Some(site.key), site.stats.clone(), now);
        site.core = Some(core);
        let (pk, life) = (site.peer, site.life);
        self.note(s, format!("started (life {life})"));
        self.feed(s, Input::Friend { pk, friend: FRIEND });
        let first_tick = self.now + self.rng.millis(1, 1000);
        self.at(first_tick, Ev::Tick { site: s, life });
        self.fill_lane(s);
    }
}
