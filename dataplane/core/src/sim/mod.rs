//! The whole-cluster deterministic simulation: one meta core, N simulated local services and M
//! clients running the real client operations, on a simulated network and clock, from a seed.
//!
//! Faults: message loss, delay and reordering; local-service death, freeze and restart; meta
//! restart; client death mid-operation; partitions between a local service and the meta service.
//! After every step the checker asserts the invariants of DESIGN.md (see `oracle.rs`); a failure
//! names the seed and the step, and `MMC_SIM_SEED`/`--seed` replays it exactly.
//!
//! Same-host clients copy through the service's fence word in two events (enter + copy at the
//! start, `still` + leave at the end), so a re-registration can fall between them, as it can
//! between a real shm client's check and its copy.

mod client;
mod index_check;
mod local;
mod observe;
mod oracle;
mod pause_check;
mod rdma;
mod rebuild_check;
mod repair;
mod rng;
mod transport;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use mmc_controlplane::meta::{MetaCore, MetaParams};
use mmc_controlplane::msg::{Reply, Request};
use mmc_controlplane::{Error, Result};

use crate::client::Transfer;
use client::SimClient;
use local::SimLocal;
use oracle::Oracle;
pub use rng::Rng;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub steps: u64,
    /// Break one protection on purpose (local services and same-host copies skip the epoch
    /// fence): the run must then fail.
    pub canary: bool,
    pub locals: usize,
    pub clients: usize,
    pub keys: usize,
    pub pool_bytes: u64,
    pub timeout_ms: u64,
    /// Half the copies to other hosts go one-sided, as the RDMA transport lowers them
    /// (`mmc-sim --rdma`; see `sim/rdma.rs`).
    pub rdma: bool,
}

impl SimConfig {
    pub fn new(seed: u64, steps: u64) -> SimConfig {
        SimConfig {
            seed,
            steps,
            canary: false,
            locals: 3,
            clients: 4,
            keys: 24,
            pool_bytes: 48 << 10,
            timeout_ms: 300,
            rdma: false,
        }
    }
}

/// How a run went.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub steps: u64,
    pub sim_ms: u64,
    pub ops: u64,
    pub ops_ok: u64,
    pub gets_verified: u64,
    pub checks: u64,
    pub faults: u64,
    pub meta_restarts: u64,
    pub reregistrations: u64,
    /// Steps at which a local service's index was checked equal to the directory.
    pub index_exact_checks: u64,
    /// Index resets (outbox overflows and resyncs) the meta core sent.
    pub index_resets: u64,
    /// Alloc requests of objects larger than any pool: each refused without evicting.
    pub oversize_refused: u64,
    /// Local freezes within the grace that the pause invariant watched.
    pub pauses_watched: u64,
    /// ... of which the meta core paused the service and re-admitted it with its objects.
    pub pauses_readmitted: u64,
    /// Objects those re-admitted services kept across their pause.
    pub pause_objects_kept: u64,
    /// Services that rejoined a restarted meta core with their index, and the objects rebuilt.
    pub rejoins: u64,
    pub objects_rebuilt: u64,
    /// Repair tasks run by local services, and those that held.
    pub repairs_run: u64,
    pub repairs_ok: u64,
    /// ... that read bytes not matching the checksum (the source object was gone meanwhile).
    pub repairs_mismatched: u64,
    /// `--rdma`: one-sided copies, their work requests executed, and error completions.
    pub rdma_copies: u64,
    pub rdma_wrs: u64,
    pub rdma_error_completions: u64,
}

/// An invariant that did not hold.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub now_ms: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} step {} ({} ms): {}",
            self.seed, self.step, self.now_ms, self.what
        )
    }
}

/// Who sent a meta request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    Local(usize),
    Client(usize),
}

/// One copy between a client and a local service, in flight.
pub(crate) struct CopyReq {
    pub client: usize,
    pub gen: u64,
    pub local: usize,
    pub local_gen: u64,
    pub seq: u64,
    pub idx: usize,
    pub t: Transfer,
    pub data: Option<Vec<u8>>,
}

pub(crate) enum Ev {
    MetaReq {
        from: Peer,
        gen: u64,
        seq: u64,
        req: Request,
    },
    MetaRep {
        to: Peer,
        gen: u64,
        seq: u64,
        reply: Result<Reply>,
    },
    /// A data request arrives at a local service (the TCP path).
    DataReq(CopyReq),
    DataRep {
        client: usize,
        gen: u64,
        seq: u64,
        idx: usize,
        out: Result<Option<Vec<u8>>>,
    },
    /// The second half of a same-host copy.
    ShmEnd(CopyReq),
    ClientWake {
        client: usize,
        gen: u64,
    },
    LocalTimer {
        local: usize,
        gen: u64,
    },
    MetaTick,
    Fault,
    LocalRestart(usize),
    ClientRestart(usize),
    /// A repair task runs at a local service.
    Repair {
        local: usize,
        gen: u64,
        incarnation: u64,
        task: mmc_controlplane::msg::RepairTask,
    },
    /// The next step of a one-sided RDMA copy (`--rdma`).
    Rdma(Box<rdma::RdmaCopy>),
}

pub(crate) struct Node<T> {
    pub state: Option<T>,
    pub gen: u64,
    pub frozen_until: u64,
}

impl<T> Node<T> {
    fn new(state: T) -> Node<T> {
        Node {
            state: Some(state),
            gen: 1,
            frozen_until: 0,
        }
    }
}

pub struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) rng: Rng,
    pub(crate) now: u64,
    pub(crate) step: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    free: Vec<usize>,
    order: u64,
    pub(crate) meta: MetaCore,
    pub(crate) meta_gen: u64,
    meta_frozen_until: u64,
    pub(crate) locals: Vec<Node<SimLocal>>,
    pub(crate) clients: Vec<Node<SimClient>>,
    pub(crate) oracle: Oracle,
    pub(crate) summary: Summary,
    /// Rejoin chunks seen, for the rebuild invariant (`rebuild_check.rs`).
    pub(crate) rejoins: rebuild_check::Rejoins,
    /// A local service cut off from the meta service until the given time.
    cut: Option<(usize, u64)>,
    loss_per_million: u64,
    next_seq: u64,
    pub(crate) next_version: u64,
    /// The commit request the meta core is handling (its reply's codes are read against it).
    pending_commit: Option<Vec<(String, mmc_controlplane::msg::CommitItem)>>,
    pub(crate) failure: Option<String>,
    /// Frozen local services under the pause invariant (`pause_check.rs`).
    pause_watches: Vec<pause_check::PauseWatch>,
    /// `MMC_SIM_TRACE=1`: print every meta request, reply and copy to stderr.
    pub(crate) trace: bool,
}

pub(crate) fn meta_params(epoch: u64) -> MetaParams {
    MetaParams {
        epoch,
        lease_ms: 200,
        pending_timeout_ms: 400,
        member_timeout_ms: 150,
        member_grace_ms: MEMBER_GRACE_MS,
        meta_stall_ms: 75,
        heartbeat_ms: 30,
        rebuild_window_ms: 100,
        evict_threshold_high: 90,
        evict_threshold_low: 80,
        // Small, so that batches split and outboxes overflow into resyncs.
        index_batch_max: 4,
        index_outbox_max: 16,
        // The first run stores fewer replicas when services are missing; restarted ones refuse.
        best_effort_replicas: epoch % 2 == 1,
    }
}

/// Grace of a paused member: four member timeouts, longer than most freezes `fault` injects
/// (the longest ones, with a lost heartbeat, and most kills outlast it).
const MEMBER_GRACE_MS: u64 = 600;
const HEARTBEAT_MS: u64 = 30;
const LOCAL_TICK_MS: u64 = 10;
const META_TICK_MS: u64 = 10;
/// Steps between full scans of every committed object's bytes.
const DIRECTORY_SCAN_STEPS: u64 = 500;

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let locals = (0..cfg.locals)
            .map(|i| {
                Node::new(SimLocal::new(
                    i as u32,
                    (i % 2) as u32,
                    cfg.pool_bytes,
                    HEARTBEAT_MS,
                    0,
                ))
            })
            .collect();
        let clients = (0..cfg.clients)
            .map(|j| Node::new(SimClient::new(j, 0, (j % 2) as u32, rng.next_u64())))
            .collect();
        let mut sim = Sim {
            rng,
            now: 0,
            step: 0,
            queue: BinaryHeap::new(),
            events: Vec::new(),
            free: Vec::new(),
            order: 0,
            meta: MetaCore::new(meta_params(1)),
            meta_gen: 1,
            meta_frozen_until: 0,
            locals,
            clients,
            oracle: Oracle::default(),
            summary: Summary::default(),
            rejoins: rebuild_check::Rejoins::new(),
            cut: None,
            loss_per_million: 5_000,
            next_seq: 1,
            next_version: 0,
            pending_commit: None,
            failure: None,
            pause_watches: Vec::new(),
            trace: std::env::var_os("MMC_SIM_TRACE").is_some(),
            cfg,
        };
        for i in 0..sim.locals.len() {
            let sends = sim.locals[i].state.as_mut().expect("alive").start(0);
            sim.local_out(i, sends);
            let gen = sim.locals[i].gen;
            sim.at(LOCAL_TICK_MS, Ev::LocalTimer { local: i, gen });
        }
        for j in 0..sim.clients.len() {
            let gen = sim.clients[j].gen;
            sim.at(50 + j as u64, Ev::ClientWake { client: j, gen });
        }
        sim.at(META_TICK_MS, Ev::MetaTick);
        sim.at(200, Ev::Fault);
        sim
    }

    pub(crate) fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Schedule `ev` at `now + delay_ms`.
    pub(crate) fn at(&mut self, delay_ms: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.events[s] = Some(ev);
                s
            }
            None => {
                self.events.push(Some(ev));
                self.events.len() - 1
            }
        };
        self.order += 1;
        self.queue
            .push(Reverse((self.now + delay_ms, self.order, slot)));
    }

    /// Send over the network: delayed 0-2 ms (so reordered), sometimes lost.
    pub(crate) fn send(&mut self, ev: Ev) {
        if self.rng.chance(self.loss_per_million) || self.is_cut(&ev) {
            return;
        }
        let delay = self.rng.range(0, 2);
        self.at(delay, ev);
    }

    fn is_cut(&self, ev: &Ev) -> bool {
        let Some((local, until)) = self.cut else {
            return false;
        };
        until > self.now
            && match ev {
                Ev::MetaReq { from, .. } => *from == Peer::Local(local),
                Ev::MetaRep { to, .. } => *to == Peer::Local(local),
                _ => false,
            }
    }

    pub(crate) fn fail(&mut self, what: String) {
        if self.failure.is_none() {
            self.failure = Some(what);
        }
    }

    /// Run to the configured number of steps, or to the first broken invariant.
    pub fn run(mut self) -> std::result::Result<Summary, Failure> {
        while self.step < self.cfg.steps {
            let Some(Reverse((t, _, slot))) = self.queue.pop() else {
                break;
            };
            debug_assert!(t >= self.now, "time never runs backwards");
            self.now = t;
            self.step += 1;
            let ev = self.events[slot].take().expect("scheduled event");
            self.free.push(slot);
            if let Err(p) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.dispatch(ev)))
            {
                self.fail(format!("a core panicked: {}", panic_text(&*p)));
            }
            if self.failure.is_none() {
                self.check_step();
            }
            if let Some(what) = self.failure.take() {
                return Err(Failure {
                    seed: self.cfg.seed,
                    step: self.step,
                    now_ms: self.now,
                    what,
                });
            }
        }
        self.summary.steps = self.step;
        self.summary.sim_ms = self.now;
        self.summary.checks = self.oracle.checks;
        Ok(self.summary)
    }

    fn check_step(&mut self) {
        let meta = &self.meta;
        if let Err(p) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| meta.check_invariants()))
        {
            return self.fail(format!("meta core invariant: {}", panic_text(&*p)));
        }
        match index_check::check_indexes(&self.meta, &self.locals) {
            Ok(exact) => self.summary.index_exact_checks += exact,
            Err(e) => return self.fail(e),
        }
        if let Err(e) = self.pause_watch_check() {
            return self.fail(e);
        }
        let now = self.now;
        self.oracle
            .leases
            .retain(|_, l| l.iter().any(|l| l.until_ms > now));
        if self.step.is_multiple_of(DIRECTORY_SCAN_STEPS) {
            let locals = &self.locals;
            let pools = |rank: u32, inc: u64| -> Option<Vec<u8>> {
                let l = locals.get(rank as usize)?.state.as_ref()?;
                match &l.membership {
                    Some((i, _)) if *i == inc => Some(l.pool.clone()),
                    _ => None,
                }
            };
            if let Err(e) = self.oracle.check_directory(&self.meta, &pools) {
                self.fail(e);
            }
            // Not while the meta service is frozen: a call would end its stall early.
            let frozen = self.meta_frozen_until > self.now;
            let status = (!frozen).then(|| self.meta.handle(self.now, Request::Status));
            if let Some(Reply::Status(s)) = status {
                if s.objects > 1 << 40 || s.pending > 1 << 40 || s.leases > 1 << 40 {
                    self.fail(format!("meta status counters underflowed: {s:?}"));
                }
            }
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::MetaReq {
                from,
                gen,
                seq,
                req,
            } => self.on_meta_req(from, gen, seq, req),
            Ev::MetaRep {
                to,
                gen,
                seq,
                reply,
            } => match to {
                Peer::Local(i) => {
                    if self.locals[i].frozen_until > self.now {
                        let until = self.locals[i].frozen_until;
                        let ev = Ev::MetaRep {
                            to,
                            gen,
                            seq,
                            reply,
                        };
                        self.at(until - self.now, ev);
                        return;
                    }
                    if self.locals[i].gen != gen {
                        return;
                    }
                    let now = self.now;
                    if let Some(l) = self.locals[i].state.as_mut() {
                        let was = l.membership.is_some();
                        let sends = l.on_meta(seq, reply, now);
                        if was && l.membership.is_none() {
                            self.summary.reregistrations += 1;
                        }
                        self.local_out(i, sends);
                    }
                }
                Peer::Client(j) => self.client_meta_reply(j, gen, seq, reply),
            },
            Ev::DataReq(c) => {
                if self.locals[c.local].frozen_until > self.now {
                    let until = self.locals[c.local].frozen_until;
                    self.at(until - self.now, Ev::DataReq(c));
                    return;
                }
                self.serve_data(c)
            }
            Ev::DataRep {
                client,
                gen,
                seq,
                idx,
                out,
            } => self.client_transfer_done(client, gen, seq, idx, out),
            Ev::ShmEnd(c) => self.shm_end(c),
            Ev::Rdma(c) => self.rdma_step(c),
            Ev::ClientWake { client, gen } => self.client_wake(client, gen),
            Ev::LocalTimer { local, gen } => self.local_timer(local, gen),
            Ev::Repair {
                local,
                gen,
                incarnation,
                task,
            } => self.run_repair(local, gen, incarnation, task),
            Ev::MetaTick => {
                if self.meta_frozen_until <= self.now {
                    self.meta.tick(self.now);
                }
                self.at(META_TICK_MS, Ev::MetaTick);
            }
            Ev::Fault => self.fault(),
            Ev::LocalRestart(i) => {
                let node = &mut self.locals[i];
                node.gen += 1;
                let mut l = SimLocal::new(
                    i as u32,
                    (i % 2) as u32,
                    self.cfg.pool_bytes,
                    HEARTBEAT_MS,
                    self.now,
                );
                let sends = l.start(self.now);
                self.locals[i].state = Some(l);
                self.local_out(i, sends);
                let gen = self.locals[i].gen;
                self.at(LOCAL_TICK_MS, Ev::LocalTimer { local: i, gen });
            }
            Ev::ClientRestart(j) => {
                self.clients[j].gen += 1;
                let seed = self.rng.next_u64();
                let gen = self.clients[j].gen;
                self.clients[j].state = Some(SimClient::new(j, gen, (j % 2) as u32, seed));
                let gen = self.clients[j].gen;
                self.at(1, Ev::ClientWake { client: j, gen });
            }
        }
    }

    fn on_meta_req(&mut self, from: Peer, gen: u64, seq: u64, req: Request) {
        if self.meta_frozen_until > self.now {
            let until = self.meta_frozen_until;
            self.at(
                until - self.now,
                Ev::MetaReq {
                    from,
                    gen,
                    seq,
                    req,
                },
            );
            return;
        }
        if self.trace {
            eprintln!(
                "{:>6} {:>6} meta <- {from:?} seq {seq}: {req:?}",
                self.step, self.now
            );
        }
        self.observe_request(from, gen, seq, &req);
        let oneway = matches!(req, Request::Release { .. } | Request::Suspect { .. });
        // Admission before eviction: a put that no pool can hold never evicts anything.
        let oversize = matches!(&req, Request::Alloc(a) if !a.items.is_empty()
            && a.items.iter().all(|(_, size)| *size > self.cfg.pool_bytes));
        let evicted = self.meta.evicted_total();
        // Objects a remove or an eviction takes are excused from the pause invariant.
        let excusable = !self.pause_watches.is_empty()
            && matches!(req, Request::Remove { .. } | Request::Alloc(_));
        let before: Vec<String> = if excusable {
            self.meta
                .committed_objects()
                .into_iter()
                .map(|o| o.key)
                .collect()
        } else {
            Vec::new()
        };
        let rejoin = match &req {
            Request::Rejoin(j) => {
                self.rejoin_sent(j);
                Some(Request::Rejoin(j.clone()))
            }
            _ => None,
        };
        let reply = self.meta.handle(self.now, req);
        if let Some(Request::Rejoin(j)) = &rejoin {
            self.rejoin_answered(j, &reply);
        }
        if excusable {
            self.pause_watch_excuse(&before);
        }
        if oversize {
            let placed =
                matches!(&reply, Reply::Alloc { items, .. } if items.iter().any(|i| i.code == 0));
            if placed || self.meta.evicted_total() != evicted {
                self.fail(format!("an oversize put was placed or evicted: {reply:?}"));
            }
            self.summary.oversize_refused += 1;
        }
        if self.trace {
            eprintln!(
                "{:>6} {:>6} meta -> {from:?} seq {seq}: {reply:?}",
                self.step, self.now
            );
        }
        self.observe_reply(from, gen, seq, &reply);
        if oneway {
            return;
        }
        let reply = match reply {
            Reply::Error { code, message } => Err(Error::Remote {
                code: mmc_controlplane::Code::from_i32(code),
                context: message,
            }),
            r => Ok(r),
        };
        self.send(Ev::MetaRep {
            to: from,
            gen,
            seq,
            reply,
        });
    }

    /// Send the meta requests local service `i`'s core asked for (ids are the core's own).
    pub(crate) fn local_out(&mut self, i: usize, sends: Vec<(u64, Request)>) {
        self.local_repairs(i);
        let gen = self.locals[i].gen;
        for (seq, req) in sends {
            self.send(Ev::MetaReq {
                from: Peer::Local(i),
                gen,
                seq,
                req,
            });
        }
    }

    fn local_timer(&mut self, i: usize, gen: u64) {
        if self.locals[i].gen != gen || self.locals[i].state.is_none() {
            return;
        }
        if self.locals[i].frozen_until <= self.now {
            let now = self.now;
            let sends = self.locals[i].state.as_mut().expect("alive").on_timer(now);
            self.local_out(i, sends);
        }
        self.at(LOCAL_TICK_MS, Ev::LocalTimer { local: i, gen });
    }

    /// Pick and inject the next fault, then schedule the one after.
    fn fault(&mut self) {
        self.summary.faults += 1;
        let n = self.locals.len();
        match self.rng.range(0, 99) {
            0..=19 => {
                // A local service dies (kill -9) and comes back later with fresh memory.
                let i = self.rng.pick(n);
                if self.locals[i].state.take().is_some() {
                    self.locals[i].gen += 1;
                    // Sometimes past the grace: the meta core drops it before it is back.
                    let back = self.rng.range(50, 1_000);
                    self.at(back, Ev::LocalRestart(i));
                }
            }
            20..=39 => {
                // A local service freezes (SIGSTOP), sometimes past its member timeout.
                let i = self.rng.pick(n);
                let for_ms = self.rng.range(20, 400);
                self.pause_watch_start(i, for_ms);
                self.locals[i].frozen_until = self.now + for_ms;
            }
            40..=54 => {
                // The meta service restarts with an empty directory.
                self.summary.meta_restarts += 1;
                self.meta_gen += 1;
                // As the wall clock gives the real one: each run's epoch above the last's.
                self.meta = MetaCore::new(meta_params(self.meta_gen * 1_000_000));
            }
            55..=64 => {
                let for_ms = self.rng.range(20, 300);
                self.meta_frozen_until = self.now + for_ms;
            }
            65..=79 => {
                // A client dies mid-operation.
                let j = self.rng.pick(self.clients.len());
                if let Some(dead) = self.clients[j].state.take() {
                    self.clients[j].gen += 1;
                    // Its meta connections close: the meta service reclaims its pending puts
                    // at once (a frozen meta core leaves them to the pending timeout).
                    if self.meta_frozen_until <= self.now {
                        self.meta.client_gone(self.now, dead.session);
                    }
                    let back = self.rng.range(10, 300);
                    self.at(back, Ev::ClientRestart(j));
                }
            }
            80..=89 => {
                let i = self.rng.pick(n);
                let for_ms = self.rng.range(50, 500);
                self.pause_watch_void(Some(i));
                self.cut = Some((i, self.now + for_ms));
            }
            _ => {
                // A burst of loss, or calm.
                self.loss_per_million = if self.loss_per_million > 5_000 {
                    5_000
                } else {
                    self.pause_watch_void(None);
                    100_000
                };
            }
        }
        let next = self.rng.range(100, 600);
        self.at(next, Ev::Fault);
    }
}

/// Run one seed; `Err` names the step of the first broken invariant.
pub fn run(cfg: SimConfig) -> std::result::Result<Summary, Failure> {
    Sim::new(cfg).run()
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
