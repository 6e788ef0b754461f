//! The link's life and the faults (cuts, restarts, full queues), running a world until it
//! settles, and the invariants checked at the end.

use std::fmt::Write as _;
use std::time::Duration;

use toxmail_protocol::MessageId;

use super::short;
use super::tox::Tox;
use super::world::{Ev, World};

/// How the run went, for the report.
#[derive(Debug, Default, Clone)]
pub(super) struct Outcome {
    /// Virtual time when every delivery had its verdict.
    pub settled: Duration,
    pub events: u64,
    pub messages: usize,
    /// Of the last events, to compare two runs of one seed.
    pub digest: u64,
    pub coverage: std::collections::BTreeMap<&'static str, u64>,
}

impl World {
    /// The link is up when no cut is on and both sites run.
    fn wanted(&self) -> bool {
        self.now >= self.cut_until && self.sites.iter().all(|s| s.running())
    }

    /// Takes the link down (each side notices on its own, a little later) or brings it up
    /// (after a reconnection delay) as the faults require.
    pub(super) fn reeval(&mut self) {
        let want = self.wanted();
        if self.link_up && !want {
            self.link_up = false;
            self.epoch += 1;
            self.trace.push(self.now, "-", "link down".into());
            for s in 0..2 {
                if self.sites[s].running() && self.sites[s].tox.online {
                    let at = self.now + self.rng.millis(50, 15_000);
                    let epoch = self.epoch;
                    self.at(at, Ev::Notice { site: s, epoch });
                }
            }
        } else if !self.link_up && want && !self.up_pending {
            self.up_pending = true;
            let at = self.now + self.rng.millis(200, 3000);
            self.at(at, Ev::TryUp);
        }
    }

    fn bring_up(&mut self) {
        for s in 0..2 {
            if self.sites[s].tox.online {
                self.sites[s].tox.go_offline(); // noticed now at the latest
                self.drain(s);
            }
        }
        self.epoch += 1;
        self.link_up = true;
        self.trace.push(self.now, "-", "link up".into());
        for s in 0..2 {
            self.sites[s].tox.go_online(self.now);
            self.drain(s);
        }
    }

    pub(super) fn fault(&mut self, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Cut { length } => {
                self.count("cut");
                self.trace.push(now, "-", format!("cut for {length:?}"));
                self.cut_until = self.cut_until.max(now + length);
                let until = self.cut_until;
                self.at(until, Ev::Reeval);
                self.reeval();
            }
            Ev::Reeval => self.reeval(),
            Ev::TryUp => {
                self.up_pending = false;
                if self.wanted() && !self.link_up {
                    self.bring_up();
                }
            }
            Ev::Notice { site, epoch } => {
                let s = &mut self.sites[site];
                if !self.link_up && epoch == self.epoch && s.running() && s.tox.online {
                    s.tox.go_offline();
                    self.drain(site);
                }
            }
            Ev::Restart { site, down } => {
                if !self.sites[site].running() {
                    return;
                }
                self.count("restart");
                let s = &mut self.sites[site];
                s.life += 1;
                s.core = None;
                s.tox = Tox::new(s.peer);
                s.spool.open.clear();
                s.iterate_at = None;
                s.channel_at = now;
                s.bridge.restart();
                let life = s.life;
                self.note(site, format!("restart, down for {down:?}"));
                self.at(now + down, Ev::Back { site, life });
                self.reeval();
            }
            Ev::Back { site, life } => {
                if self.sites[site].life == life && !self.sites[site].running() {
                    self.start(site);
                    self.reeval();
                }
            }
            Ev::Congest { site, length } => {
                self.count("send queue full");
                self.note(site, format!("send queue full for {length:?}"));
                let tox = &mut self.sites[site].tox;
                tox.congested_until = tox.congested_until.max(now + length);
                let until = tox.congested_until;
                self.ensure_iterate(site, until);
            }
            _ => unreachable!("not a fault"),
        }
    }

    /// Random cuts, restarts and full queues within `window`; returns when the last one ends.
    pub(super) fn random_faults(&mut self, window: Duration) -> Duration {
        let mut end = Duration::ZERO;
        let w = window.as_millis() as u64;
        for _ in 0..self.rng.range(0, 4) {
            let at = self.rng.millis(0, w);
            let length = self.rng.millis(300, 40_000);
            end = end.max(at + length);
            self.at(at, Ev::Cut { length });
        }
        for _ in 0..self.rng.range(0, 3) {
            let (site, at) = (self.rng.range(0, 1) as usize, self.rng.millis(0, w));
            let down = self.rng.millis(100, 20_000);
            end = end.max(at + down);
            self.at(at, Ev::Restart { site, down });
        }
        for _ in 0..self.rng.range(0, 4) {
            let (site, at) = (self.rng.range(0, 1) as usize, self.rng.millis(0, w));
            let length = self.rng.millis(50, 8_000);
            end = end.max(at + length);
            self.at(at, Ev::Congest { site, length });
        }
        end
    }

    /// Every message submitted and given its verdict (or given up).
    fn settled(&self) -> bool {
        self.msgs.iter().all(|(id, m)| {
            let bridge = &self.sites[m.from].bridge;
            bridge.done.contains_key(id) || bridge.abandoned.contains_key(id)
        })
    }

    /// Runs until every delivery has its verdict and nothing is left of the faults after
    /// `quiet`, then `grace` more (late duplicates show there); fails past `limit`.
    pub(super) fn run(
        &mut self,
        quiet: Duration,
        grace: Duration,
        limit: Duration,
    ) -> Result<Outcome, String> {
        let mut settled_at = None;
        while let Some(next) = self.pop() {
            if next.at > limit {
                return Err(self.report(&format!("not settled after {limit:?}")));
            }
            self.now = next.at;
            self.events += 1;
            self.dispatch(next.ev);
            if !self.failures.is_empty() {
                return Err(self.report("failed"));
            }
            if settled_at.is_none() && self.now >= quiet && self.settled() {
                settled_at = Some(self.now);
            }
            if settled_at.is_some_and(|t| self.now >= t + grace) {
                break;
            }
        }
        self.verify()?;
        Ok(Outcome {
            settled: settled_at.unwrap_or_default(),
            events: self.events,
            messages: self.msgs.len(),
            digest: self.trace.digest(),
            coverage: self.coverage.clone(),
        })
    }

    /// Each message stored once, with its bytes, at its recipient (unless given up before its
    /// last byte left), and nothing else stored.
    fn verify(&mut self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (id, m) in &self.msgs {
            let (sender, recipient) = (&self.sites[m.from], &self.sites[1 - m.from]);
            let key = (sender.key, *id);
            let stored = recipient.inbox.stored.get(&key);
            let calls = recipient.inbox.calls.get(&key).copied().unwrap_or(0);
            let abandoned = sender.bridge.abandoned.get(id).copied();
            match (stored, abandoned) {
                (Some(_), Some(false)) => problems.push(format!(
                    "{} stored, though given up before its last byte was sent",
                    short(id)
                )),
                (None, None) => problems.push(format!("{} never stored", short(id))),
                (Some(bytes), _) if bytes[..] != m.envelope[..] => {
                    problems.push(format!("{} stored with other bytes", short(id)))
                }
                _ => {}
            }
            if calls > 1 {
                problems.push(format!("{} handed to the inbox {calls} times", short(id)));
            }
        }
        for site in &self.sites {
            for (from, id) in site.inbox.stored.keys() {
                if self
                    .msgs
                    .get(id)
                    .is_none_or(|m| self.sites[m.from].key != *from)
                {
                    problems.push(format!(
                        "{}: stored {} which nobody sent",
                        site.name,
                        short(id)
                    ));
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        self.failures.extend(problems);
        Err(self.report("invariants broken"))
    }

    /// The seed, the parameters, what went wrong, where each open delivery stands, and the
    /// last events.
    pub(super) fn report(&self, what: &str) -> String {
        let mut out = format!(
            "seed {}: {what} at {:?}\nparams: {:?}\n",
            self.seed, self.now, self.p
        );
        for f in &self.failures {
            let _ = writeln!(out, "  - {f}");
        }
        for site in &self.sites {
            let open: Vec<&MessageId> = site
                .bridge
                .outbox
                .iter()
                .filter(|id| !site.bridge.done.contains_key(id))
                .filter(|id| !site.bridge.abandoned.contains_key(id))
                .collect();
            let _ = writeln!(out, "{}: {} open deliveries", site.name, open.len());
            for id in open.iter().take(10) {
                let state = site
                    .core
                    .as_ref()
                    .and_then(|c| c.sending.out.get(&(site.peer, **id)))
                    .map(|o| format!("{:?}", o.state));
                let _ = writeln!(out, "  {} {state:?}", short(id));
            }
        }
        let _ = write!(out, "last events:\n{}", self.trace.last(80));
        out
    }
}
