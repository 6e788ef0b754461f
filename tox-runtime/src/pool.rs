//! The owner threads: a small fixed pool (one per core unless [`set_owner_threads`] says otherwise),
//! each the only code touching the instances placed on it. A thread iterates each instance at that
//! instance's own `tox_iteration_interval` (a heap of deadlines) and, between iterations, executes
//! the commands handles sent over the thread's one channel, which is also what wakes it. A panic
//! while serving one instance is caught and logged: that instance is killed without a save, its
//! handles get `Stopped` and its event stream ends; the other instances go on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::callbacks::Sink;
use crate::error::{Result, RuntimeError};
use crate::event::{Connection, Event};
use crate::instance::Instance;
use crate::node::{NodeInfo, NodeStats};
use crate::options::Options;
use crate::owner::{Command, Owner};
use crate::savedata::{Plain, SavedataFile};

/// An instance due within this much of now is iterated in the same pass: a few milliseconds
/// early is harmless to c-toxcore (its timers are its own) and saves a wake-up per instance.
const SLACK: Duration = Duration::from_millis(5);

/// At most this many messages are handled before due instances are iterated again.
const MAX_BATCH: usize = 1024;

pub(crate) type NodeId = u64;

pub(crate) enum Message {
    Start(Box<Start>),
    Command(NodeId, Command),
}

/// What a thread needs to create an instance. The savedata was read and decrypted by the caller,
/// so that scrypt does not hold up the other instances of the thread.
pub(crate) struct Start {
    /// Set by [`place`].
    pub(crate) id: NodeId,
    pub(crate) options: Options,
    pub(crate) file: Option<SavedataFile>,
    pub(crate) saved: Option<Plain>,
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) stats: Arc<NodeStats>,
    pub(crate) ready: oneshot::Sender<Result<NodeInfo>>,
    /// Dropped once the instance is gone: its port freed and its last save written.
    pub(crate) done: oneshot::Sender<()>,
}

/// Where a node lives: its thread's channel and its number there (never reused).
#[derive(Clone, Debug)]
pub(crate) struct Route {
    thread: Sender<Message>,
    id: NodeId,
}

impl Route {
    /// False when the thread is gone (it only stops by panicking outside any one instance).
    pub(crate) fn send(&self, command: Command) -> bool {
        self.thread.send(Message::Command(self.id, command)).is_ok()
    }
}

struct Thread {
    tx: Sender<Message>,
    /// Instances placed on it and not yet removed.
    load: Arc<AtomicUsize>,
}

/// Owner threads to run; 0 means one per core.
static SIZE: AtomicUsize = AtomicUsize::new(0);
static THREADS: Mutex<Vec<Thread>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Sets how many owner threads iterate this process's Tox instances (default: one per core).
/// Takes effect for threads not yet started; threads start as nodes start, up to this number.
pub fn set_owner_threads(n: usize) {
    SIZE.store(n, Ordering::Relaxed);
}

fn size() -> usize {
    match SIZE.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Places a new instance on the least loaded thread (starting one while fewer than the pool size
/// run) and returns its route; the thread answers `start.ready`.
pub(crate) fn place(mut start: Start) -> Result<Route> {
    let mut threads = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    if threads.len() < size() {
        let index = threads.len();
        threads.push(spawn(index)?);
    }
    let thread = threads
        .iter()
        .min_by_key(|t| t.load.load(Ordering::Relaxed))
        .expect("at least one thread");
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    start.id = id;
    thread.load.fetch_add(1, Ordering::Relaxed);
    if thread.tx.send(Message::Start(Box::new(start))).is_err() {
        thread.load.fetch_sub(1, Ordering::Relaxed);
        return Err(RuntimeError::New("the owner thread has stopped"));
    }
    Ok(Route {
        thread: thread.tx.clone(),
        id,
    })
}

fn spawn(index: usize) -> Result<Thread> {
    let (tx, rx) = mpsc::channel();
    let load = Arc::new(AtomicUsize::new(0));
    let worker_load = load.clone();
    std::thread::Builder::new()
        .name(format!("tox-owner-{index}"))
        .spawn(move || {
            Worker {
                rx,
                load: worker_load,
                nodes: HashMap::new(),
                timers: BinaryHeap::new(),
                generation: 0,
                sink: Sink::default(),
            }
            .run()
        })
        .map_err(|_| RuntimeError::New("could not spawn an owner thread"))?;
    Ok(Thread { tx, load })
}

struct Slot {
    owner: Owner,
    /// The generation of this instance's one live timer; older heap entries are skipped.
    generation: u64,
    done: oneshot::Sender<()>,
}

struct Worker {
    rx: Receiver<Message>,
    load: Arc<AtomicUsize>,
    nodes: HashMap<NodeId, Slot>,
    timers: BinaryHeap<Reverse<(Instant, u64, NodeId)>>,
    generation: u64,
    sink: Sink,
}

impl Worker {
    /// Runs for the life of the process: the pool keeps a sender of every thread.
    fn run(mut self) {
        loop {
            self.iterate_due();
            let message = match self.timers.peek() {
                Some(Reverse((due, ..))) => {
                    match self
                        .rx
                        .recv_timeout(due.saturating_duration_since(Instant::now()))
                    {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                },
            };
            let mut next = Some(message);
            let mut handled = 0;
            while let Some(message) = next {
                self.handle(message);
                handled += 1;
                next = (handled < MAX_BATCH)
                    .then(|| self.rx.try_recv().ok())
                    .flatten();
            }
        }
    }

    fn schedule(&mut self, id: NodeId, due: Instant) {
        let Some(slot) = self.nodes.get_mut(&id) else {
            return;
        };
        self.generation += 1;
        slot.generation = self.generation;
        self.timers.push(Reverse((due, self.generation, id)));
    }

    /// Iterates every instance due by now (plus `SLACK`), handling messages in between.
    fn iterate_due(&mut self) {
        let horizon = Instant::now() + SLACK;
        while let Some(&Reverse((due, generation, id))) = self.timers.peek() {
            if due > horizon {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.nodes.get_mut(&id) else {
                continue;
            };
            if slot.generation != generation {
                continue;
            }
            let sink = &mut self.sink;
            match catch_unwind(AssertUnwindSafe(|| slot.owner.step(sink))) {
                Ok(wait) => self.schedule(id, Instant::now() + wait),
                Err(_) => {
                    self.sink.events.clear();
                    self.fail(id, "iterating");
                }
            }
            // A pass over hundreds of instances can take long on a busy host: commands (a stop,
            // a reply someone awaits) wait at most one iteration, not the whole pass.
            while let Ok(message) = self.rx.try_recv() {
                self.handle(message);
            }
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Start(start) => self.start(*start),
            Message::Command(id, Command::Stop(save)) => self.stop(id, save),
            Message::Command(id, command) => {
                // An unknown id is a node already stopped: dropping the command drops its reply
                // sender, and the caller gets `Stopped`.
                let Some(slot) = self.nodes.get_mut(&id) else {
                    return;
                };
                match catch_unwind(AssertUnwindSafe(|| slot.owner.execute(command))) {
                    // Iterate right away, so what the command queued goes out now.
                    Ok(()) => self.schedule(id, Instant::now()),
                    Err(_) => self.fail(id, "executing a command"),
                }
            }
        }
    }

    fn start(&mut self, start: Start) {
        let Start {
            id,
            options,
            file,
            saved,
            events,
            stats,
            ready,
            done,
        } = start;
        let created = catch_unwind(AssertUnwindSafe(|| {
            create(&options, file, saved, events, stats)
        }))
        .unwrap_or(Err(RuntimeError::New("creating the instance panicked")));
        match created {
            Ok(owner) => {
                let _ = ready.send(Ok(owner.info()));
                tracing::debug!(connection = ?owner.self_connection(), "tox instance started");
                self.nodes.insert(
                    id,
                    Slot {
                        owner,
                        generation: 0,
                        done,
                    },
                );
                self.schedule(id, Instant::now());
            }
            Err(e) => {
                self.load.fetch_sub(1, Ordering::Relaxed);
                let _ = ready.send(Err(e));
            }
        }
    }

    fn stop(&mut self, id: NodeId, save: bool) {
        let Some(Slot { owner, done, .. }) = self.nodes.remove(&id) else {
            return;
        };
        self.load.fetch_sub(1, Ordering::Relaxed);
        if catch_unwind(AssertUnwindSafe(|| owner.stop(save))).is_err() {
            tracing::error!(node = id, "stopping a Tox instance panicked");
        }
        drop(done);
    }

    /// Kills an instance whose code panicked (the panic hook printed where): no save, since its
    /// state may be half-changed; the savedata keeps what was last persisted.
    fn fail(&mut self, id: NodeId, doing: &str) {
        let Some(Slot { owner, done, .. }) = self.nodes.remove(&id) else {
            return;
        };
        self.load.fetch_sub(1, Ordering::Relaxed);
        let public_key = owner.info().public_key;
        tracing::error!(
            node = id,
            %public_key,
            "a Tox instance panicked while {doing}; it is stopped without a final save \
             (its handles report Stopped), the other instances on its thread go on"
        );
        owner.mark_stopped();
        drop(owner);
        drop(done);
    }
}

/// Creates the instance and its owner; a new identity's savedata is written before it is used.
fn create(
    options: &Options,
    file: Option<SavedataFile>,
    saved: Option<Plain>,
    events: UnboundedSender<Event>,
    stats: Arc<NodeStats>,
) -> Result<Owner> {
    let is_new = saved.is_none();
    let tox = Instance::new(options, saved.as_ref().map(|s| s.as_slice()))?;
    drop(saved);
    let mut owner = Owner::new(tox, events, file, stats);
    if is_new {
        owner.save()?;
    }
    for node in &options.bootstrap {
        owner.bootstrap(&node.addr.ip().to_string(), node.addr.port(), &node.dht_key)?;
    }
    owner.count_friends();
    Ok(owner)
}

impl Owner {
    fn mark_stopped(&self) {
        self.stats().set_connection(Connection::None);
    }
}

#[cfg(test)]
mod tests {
    use crate::node::Node;
    use crate::options::Options;
    use crate::owner::Command;
    use crate::{RuntimeError, set_owner_threads};

    #[tokio::test]
    async fn a_panic_in_one_instance_stops_it_alone_and_reports_it_stopped() {
        set_owner_threads(1);
        let a = Node::start(Options::loopback()).await.unwrap();
        let mut b = Node::start(Options::loopback()).await.unwrap();
        assert!(b.handle.route.send(Command::Panic));
        assert!(matches!(b.handle.info().await, Err(RuntimeError::Stopped)));
        // Its event stream ends (after whatever it reported before).
        let drained = async { while b.events.recv().await.is_some() {} };
        tokio::time::timeout(std::time::Duration::from_secs(10), drained)
            .await
            .expect("the event stream ends");
        assert!(!b.handle.stats().connection().is_online());
        // The other instance on the thread goes on, and the thread takes new ones.
        assert_eq!(a.handle.info().await.unwrap(), a.info);
        let c = Node::start(Options::loopback()).await.unwrap();
        assert_eq!(c.handle.info().await.unwrap(), c.info);
        a.shutdown().await;
        c.shutdown().await;
        b.kill().await;
    }
}
