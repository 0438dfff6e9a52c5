//! The RDMA backend: one-sided verbs between the caller's memory and a service's pools.
//!
//! Per service (rank) it keeps reliable-connected queue pairs, connected with a
//! `DataRequest::RdmaConnect` on the service's data endpoint (the client's QPN and GID out, the
//! service's QPN, GID and rkeys back). A batch's jobs for one service run as:
//!
//! 1. caller memory gets lkeys (`rdma_caller_memory = mr_cache`, [`super::mr_cache`]: buffers
//!    the application registered are cached, other memory is registered for the call), or is
//!    copied through the queue pair's registered staging buffer in rounds
//!    (`rdma_caller_memory = bounce`, [`super::rdma_bounce`]);
//! 2. the epoch fence is entered: a FETCH_ADD of 1 on the service's in-flight word, then a
//!    fenced READ of its incarnation, which must be the jobs' (else the jobs fail with -3018);
//! 3. the jobs' transfers, cut at the service's MR boundaries, are lowered
//!    ([`mmc_hal::rdma::lower`]) to chains of WRITEs (put) or READs (get) and executed;
//! 4. a fenced READ of the incarnation (the fence held across the copy, else the jobs fail:
//!    bytes read are not the object's, bytes written are never committed) and a FETCH_ADD of -1.
//!
//! An error completion (remote access, retry exceeded, flush) fails the batch's jobs for that
//! service (those that completed before it were not followed by the fence check) with -3018 (`Error::Remote` with `NotConnectLocal`, naming the status; not a
//! suspect hint: a completion error proves no death), so a get falls over to the next replica
//! and a put fails; the queue pair is reset and a new one is connected (which also leaves the
//! fence). Completions are waited for by spinning `busy_poll_us` on the completion queue, then
//! (at once when it is 0) sleeping on its completion channel ([`execute`]). A batch spanning
//! several services runs each service's share on a thread of its own; with the MR cache every
//! share's lkeys are planned first and the cache stays locked to the batch's last completion.
//! A connection that cannot be made is `LocalUnreachable` (-3018, a suspect hint). A deadline passed mid-chain is -3004 and resets the
//! queue pair the same way. On the simulated NIC the service's memory is reached through its
//! memfds (the shm hand-over), so the simulated fabric spans one host.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mmc_config::RdmaCallerMemory;
use mmc_controlplane::msg::{RdmaHello, RdmaPeer, ServiceAddr};
use mmc_controlplane::{Error, Result};
use mmc_core::client::{CloneError, Dir};
use mmc_core::transport::{Completions, Job, Mem};
use mmc_hal::rdma::lower::{lower, Limits, Piece, Way, Xfer};
use mmc_hal::rdma::safe::{execute, Executed, LocalMem, Scratch};
use mmc_hal::rdma::{
    access, sim, Device, Opcode, QpEndpoint, QueuePair, RdmaError, Sge, WorkRequest,
};
use tracing::{debug, warn};

use super::mr_cache::{CallMrs, MrCache, MrStats};
use super::rdma_bounce::{gather, rounds, scatter, Seg, Staging, STAGING_BYTES};
use super::rdma_plan::{caller_xfers, remote_xfers};
use super::shm::ShmMap;
use super::tcp::DataConn;

/// Send queue depth of a client queue pair (chains are cut here).
const SQ_DEPTH: u32 = 256;
/// Signal every this many work requests.
const SIGNAL_EVERY: u32 = 16;
/// Idle queue pairs kept per service.
const IDLE_MAX: usize = 8;
/// A service that refused RDMA is asked again after this long (a refusal may be transient).
const RETRY_REFUSED: Duration = Duration::from_secs(10);
/// Work request ids of the fence operations (data work requests count from 0).
const FENCE_WR: u64 = 1 << 62;

/// What one service's share of a batch runs.
enum Plan {
    /// MR cache: the lowered chains, from and into the caller's slices.
    Lowered(mmc_hal::rdma::lower::Lowered),
    /// Bounce buffers: the bytes per job (0: failed before) to move in staging rounds.
    Bounce(Vec<u64>),
}

/// One service's share of a batch.
struct Task<'s, 'a> {
    addr: &'s ServiceAddr,
    jobs: Vec<Job<'a>>,
    conn: Option<Conn>,
    failed: Vec<Option<Error>>,
    plan: Plan,
}

impl Task<'_, '_> {
    /// MR cache: the caller's slices get lkeys, the transfers are cut at the service's MRs and
    /// lowered.
    fn plan_registered(&mut self, net: &RdmaNet, call: &mut CallMrs<'_>) {
        let hello = &self.conn.as_ref().expect("planned before running").hello;
        let mut xfers: Vec<Xfer> = Vec::new();
        for (j, job) in self.jobs.iter().enumerate() {
            match caller_xfers(hello, job, call) {
                Ok(xs) => xfers.extend(xs),
                Err(e) => self.failed[j] = Some(e),
            }
        }
        let way = match self.jobs.first().map(|j| j.t.dir) {
            Some(Dir::Read) => Way::Get,
            _ => Way::Put,
        };
        self.plan = Plan::Lowered(lower(way, &xfers, net.limits));
    }

    /// Bounce buffers: each job's range checked against the service's MRs.
    fn plan_bounce(&mut self) {
        let hello = &self.conn.as_ref().expect("planned before running").hello;
        let mut lens = Vec::with_capacity(self.jobs.len());
        for (j, job) in self.jobs.iter().enumerate() {
            let t = &job.t;
            match remote_xfers(hello, t, t.offset, t.len, Vec::new()) {
                Ok(_) => lens.push(t.len),
                Err(e) => {
                    self.failed[j] = Some(e);
                    lens.push(0);
                }
            }
        }
        self.plan = Plan::Bounce(lens);
    }
}

/// One connected queue pair to one service incarnation.
struct Conn {
    incarnation: u64,
    qp: Box<dyn QueuePair>,
    hello: RdmaHello,
    scratch: Scratch,
    /// The simulated NIC's view of the service's memory (its memfds, mapped).
    map: Option<Arc<ShmMap>>,
    /// Bounce mode: the registered staging buffer (made at first use).
    staging: Option<Staging>,
}

/// The RDMA backend's state, kept between batches. A batch holds the MR cache's lock from its
/// registrations to its last completion (so no kept MR is evicted under work requests in
/// flight): one RDMA batch at a time per client.
pub(crate) struct RdmaNet {
    dev: Arc<dyn Device>,
    limits: Limits,
    busy_poll: Duration,
    idle: Mutex<HashMap<u32, Vec<Conn>>>,
    /// Ranks whose incarnation refused RDMA (no device, another fabric, or the connection
    /// failed), and when: TCP serves them until the incarnation changes or [`RETRY_REFUSED`]
    /// passes.
    refused: Mutex<HashMap<u32, (u64, Instant)>>,
    cache: Mutex<MrCache>,
    /// `[tls]`: the connection set-up over the data endpoint uses TLS too.
    tls: Option<Arc<mmc_tls::TlsContext>>,
    /// `rdma_caller_memory`: register caller memory (MR cache) or copy it (bounce buffers).
    caller_memory: RdmaCallerMemory,
    /// Bounce mode: bytes copied through staging buffers, and rounds.
    staged_bytes: AtomicU64,
    staging_rounds: AtomicU64,
    /// Batches whose services ran in parallel threads; services' shares running now, and the
    /// most at once.
    parallel_batches: AtomicU64,
    running: AtomicU64,
    max_running: AtomicU64,
}

fn unreachable(addr: &ServiceAddr, reason: impl std::fmt::Display) -> Error {
    Error::LocalUnreachable {
        endpoint: addr.data_endpoint.clone(),
        reason: format!("RDMA: {reason}"),
    }
}

fn all_err(e: &Error, n: usize) -> Vec<Result<()>> {
    (0..n).map(|_| Err(e.clone_error())).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock()
        .expect("lock poisoned: a panic left this state half-updated")
}

impl RdmaNet {
    pub(crate) fn new(
        dev: Arc<dyn Device>,
        busy_poll: Duration,
        caller_memory: RdmaCallerMemory,
        tls: Option<Arc<mmc_tls::TlsContext>>,
    ) -> RdmaNet {
        let a = dev.attr().clone();
        let sq_depth = SQ_DEPTH.min(a.max_qp_wr).max(4);
        let limits = Limits {
            max_sge: a.max_sge.min(30),
            max_msg_sz: a.max_msg_sz,
            // Room for the fence operations around a chain.
            sq_depth: sq_depth - 2,
            signal_every: SIGNAL_EVERY.min(sq_depth - 2),
            max_inline: a.max_inline,
        };
        RdmaNet {
            tls,
            caller_memory,
            staged_bytes: AtomicU64::new(0),
            staging_rounds: AtomicU64::new(0),
            parallel_batches: AtomicU64::new(0),
            running: AtomicU64::new(0),
            max_running: AtomicU64::new(0),
            cache: Mutex::new(MrCache::new(dev.clone())),
            dev,
            limits,
            busy_poll,
            idle: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn fabric(&self) -> &str {
        &self.dev.attr().fabric
    }

    pub(crate) fn register_memory(&self, addr: u64, len: u64) {
        lock(&self.cache).register(addr, len);
    }

    pub(crate) fn unregister_memory(&self, addr: u64, len: u64) {
        lock(&self.cache).unregister(addr, len);
    }

    pub(crate) fn mr_stats(&self) -> MrStats {
        let mut s = lock(&self.cache).stats();
        s.staged_bytes = self.staged_bytes.load(Ordering::Relaxed);
        s.staging_rounds = self.staging_rounds.load(Ordering::Relaxed);
        s.parallel_batches = self.parallel_batches.load(Ordering::Relaxed);
        s.max_parallel_services = self.max_running.load(Ordering::Relaxed);
        s
    }

    /// True when transfers to `addr` can go over RDMA: a queue pair to its incarnation is idle,
    /// or one connects now. A refusal is remembered for the incarnation (TCP serves it).
    pub(crate) fn usable(&self, addr: &ServiceAddr, timeout: Duration) -> bool {
        if let Some((inc, at)) = lock(&self.refused).get(&addr.rank) {
            if *inc == addr.incarnation && at.elapsed() < RETRY_REFUSED {
                return false;
            }
        }
        {
            let mut idle = lock(&self.idle);
            if let Some(v) = idle.get_mut(&addr.rank) {
                v.retain(|c| c.incarnation == addr.incarnation);
                if !v.is_empty() {
                    return true;
                }
            }
        }
        match self.connect(addr, Instant::now() + timeout) {
            Ok(c) => {
                self.give(addr.rank, c);
                true
            }
            Err(e) => {
                warn!(rank = addr.rank, error = %e, "RDMA unavailable for this local service: using shared memory or TCP");
                lock(&self.refused).insert(addr.rank, (addr.incarnation, Instant::now()));
                false
            }
        }
    }

    fn take(&self, addr: &ServiceAddr, deadline: Instant) -> Result<Conn> {
        let pooled = lock(&self.idle).get_mut(&addr.rank).and_then(|v| {
            v.retain(|c| c.incarnation == addr.incarnation);
            v.pop()
        });
        match pooled {
            Some(c) => Ok(c),
            None => self.connect(addr, deadline),
        }
    }

    fn give(&self, rank: u32, c: Conn) {
        let mut idle = lock(&self.idle);
        let v = idle.entry(rank).or_default();
        if v.len() < IDLE_MAX {
            v.push(c);
        }
    }

    /// A new queue pair, connected to the service's through its data endpoint.
    fn connect(&self, addr: &ServiceAddr, deadline: Instant) -> Result<Conn> {
        let rd = |e: RdmaError| unreachable(addr, e);
        let mut qp = self
            .dev
            .create_qp(SQ_DEPTH.min(self.dev.attr().max_qp_wr))
            .map_err(rd)?;
        let ep = qp.endpoint();
        let mut dc = DataConn::connect(
            &addr.data_endpoint,
            self.tls.as_ref(),
            deadline,
            self.busy_poll,
        )?;
        let peer = RdmaPeer {
            qpn: ep.qpn,
            psn: ep.psn,
            lid: ep.lid,
            gid: ep.gid,
            fabric: self.fabric().to_string(),
        };
        let hello = dc.rdma_connect(addr.rank, addr.incarnation, peer, deadline)?;
        let map = if self.fabric().starts_with("sim:") {
            Some(self.attach_sim(addr, &hello)?)
        } else {
            None
        };
        let remote = QpEndpoint {
            qpn: hello.peer.qpn,
            psn: hello.peer.psn,
            lid: hello.peer.lid,
            gid: hello.peer.gid,
        };
        qp.connect(&remote).map_err(rd)?;
        let scratch = Scratch::new(self.dev.clone()).map_err(rd)?;
        debug!(
            rank = addr.rank,
            qpn = ep.qpn,
            peer_qpn = remote.qpn,
            mrs = hello.mrs.len(),
            "RDMA queue pair connected"
        );
        Ok(Conn {
            incarnation: addr.incarnation,
            qp,
            hello,
            scratch,
            map,
            staging: None,
        })
    }

    /// The simulated NIC reaches the service's MRs through its memfds, mapped here.
    fn attach_sim(&self, addr: &ServiceAddr, hello: &RdmaHello) -> Result<Arc<ShmMap>> {
        if addr.shm_endpoint.is_empty() {
            return Err(unreachable(
                addr,
                "the simulated NIC needs the service's shm endpoint",
            ));
        }
        let map = Arc::new(ShmMap::open(addr, Duration::from_secs(5))?);
        let mut windows = Vec::with_capacity(hello.mrs.len() + 1);
        for mr in &hello.mrs {
            let Some(arena) = map.arena_arc(mr.segment) else {
                return Err(unreachable(
                    addr,
                    format!("segment {} is not mapped", mr.segment),
                ));
            };
            windows.push(sim::RegionWindow {
                region: arena,
                offset: mr.seg_offset,
                len: mr.len,
                remote_addr: mr.addr,
                rkey: mr.rkey,
                access: access::REMOTE_READ | access::REMOTE_WRITE,
            });
        }
        windows.push(sim::RegionWindow {
            region: map.fence_arc(),
            offset: 0,
            len: hello.fence.len,
            remote_addr: hello.fence.addr,
            rkey: hello.fence.rkey,
            access: access::REMOTE_READ | access::REMOTE_ATOMIC,
        });
        sim::attach_regions(hello.peer.gid, windows).map_err(|e| unreachable(addr, e))?;
        Ok(map)
    }

    /// Carry out each service's `jobs` and report each job. Several services run in parallel,
    /// one thread each (a queue pair per service); with the MR cache, the caller's slices of
    /// every service get their lkeys first, and the cache stays locked until the last
    /// completion of the batch.
    pub(crate) fn submit_all(
        &self,
        work: Vec<(&ServiceAddr, Vec<Job<'_>>)>,
        done: &mut Completions,
        deadline: Instant,
    ) {
        let mut tasks: Vec<Task<'_, '_>> = Vec::with_capacity(work.len());
        for (addr, jobs) in work {
            match self.take(addr, deadline) {
                Ok(conn) => tasks.push(Task {
                    addr,
                    failed: (0..jobs.len()).map(|_| None).collect(),
                    jobs,
                    conn: Some(conn),
                    plan: Plan::Bounce(Vec::new()),
                }),
                Err(e) => {
                    for (job, o) in jobs.iter().zip(all_err(&e, jobs.len())) {
                        let fresh = done.set(job.idx, o);
                        debug_assert!(fresh, "one outcome per job");
                    }
                }
            }
        }
        let outcomes = match self.caller_memory {
            RdmaCallerMemory::MrCache => {
                let mut cache = lock(&self.cache);
                let mut call = CallMrs::new(&mut cache);
                for t in &mut tasks {
                    t.plan_registered(self, &mut call);
                }
                // `call` (the per-call MRs) and the cache lock outlive every completion.
                self.run_tasks(&mut tasks, deadline)
            }
            RdmaCallerMemory::Bounce => {
                for t in &mut tasks {
                    t.plan_bounce();
                }
                self.run_tasks(&mut tasks, deadline)
            }
        };
        for (t, outs) in tasks.iter().zip(outcomes) {
            for (job, o) in t.jobs.iter().zip(outs) {
                let fresh = done.set(job.idx, o);
                debug_assert!(fresh, "one outcome per job");
            }
        }
    }

    /// Run the planned tasks, in parallel threads when there are several.
    fn run_tasks(&self, tasks: &mut [Task<'_, '_>], deadline: Instant) -> Vec<Vec<Result<()>>> {
        let counted = |t: &mut Task<'_, '_>| {
            let now = self.running.fetch_add(1, Ordering::Relaxed) + 1;
            self.max_running.fetch_max(now, Ordering::Relaxed);
            let out = self.exec(t, deadline);
            self.running.fetch_sub(1, Ordering::Relaxed);
            out
        };
        if let [t] = tasks {
            return vec![counted(t)];
        }
        self.parallel_batches.fetch_add(1, Ordering::Relaxed);
        std::thread::scope(|s| {
            let handles: Vec<_> = tasks
                .iter_mut()
                .map(|t| s.spawn(move || counted(t)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an RDMA service thread panicked"))
                .collect()
        })
    }

    /// One service's share: the fence entered, the planned work requests, the fence left.
    fn exec(&self, t: &mut Task<'_, '_>, deadline: Instant) -> Vec<Result<()>> {
        let addr = t.addr;
        let conn = t.conn.take().expect("taken once");
        let jobs = &mut t.jobs[..];
        if conn.map.as_ref().is_some_and(|m| !m.alive()) {
            return all_err(&unreachable(addr, "the service closed its end"), jobs.len());
        }
        let way = match jobs.first().map(|j| j.t.dir) {
            Some(Dir::Read) => Way::Get,
            _ => Way::Put,
        };
        let incarnation = jobs
            .first()
            .map_or(addr.incarnation, |j| j.t.fence.incarnation);
        let failed = std::mem::take(&mut t.failed);
        let busy_poll = self.busy_poll;
        match &t.plan {
            Plan::Lowered(lowered) => {
                let mut mem = LocalMem::new();
                for (j, job) in jobs.iter_mut().enumerate() {
                    match &mut job.mem {
                        _ if failed[j].is_some() => {}
                        Mem::Src(s) => s.iter().for_each(|s| mem.src(s)),
                        Mem::Dst(d) => d.iter_mut().for_each(|d| mem.dst(d)),
                        Mem::DevSrc(_) | Mem::DevDst(_) => unreachable!("staged"),
                    }
                }
                let data = |c: &mut Conn| {
                    execute(c.qp.as_mut(), &lowered.chains, &mem, deadline, busy_poll)
                };
                self.fenced(addr, conn, incarnation, failed, deadline, data)
            }
            Plan::Bounce(lens) => {
                let data = |c: &mut Conn| self.bounce(c, jobs, lens, way, deadline);
                self.fenced(addr, conn, incarnation, failed, deadline, data)
            }
        }
    }

    /// Bounce mode: the jobs' bytes in rounds through the queue pair's staging buffer.
    fn bounce(
        &self,
        c: &mut Conn,
        jobs: &mut [Job<'_>],
        lens: &[u64],
        way: Way,
        deadline: Instant,
    ) -> std::result::Result<Executed, RdmaError> {
        if c.staging.is_none() {
            c.staging = Some(Staging::new(self.dev.clone(), STAGING_BYTES)?);
        }
        let staging = c.staging.as_mut().expect("made above");
        let (base, lkey) = (staging.addr(), staging.lkey());
        let mut total = Executed::default();
        for round in rounds(lens, staging.len() as u64) {
            let mut xfers = Vec::with_capacity(round.len());
            for s in &round {
                let t = &jobs[s.job].t;
                let piece = Piece {
                    addr: base + s.stage_off,
                    len: s.len,
                    lkey,
                };
                let xs = remote_xfers(&c.hello, t, t.offset + s.job_off, s.len, vec![piece])
                    .map_err(|e| RdmaError::Call {
                        call: "staging",
                        reason: e.to_string(),
                    })?;
                xfers.extend(xs);
            }
            let used = round.last().map_or(0, |s| (s.stage_off + s.len) as usize);
            let bytes = staging.bytes();
            let at = |s: &Seg| s.stage_off as usize..(s.stage_off + s.len) as usize;
            if way == Way::Put {
                for s in &round {
                    if let Mem::Src(src) = &jobs[s.job].mem {
                        gather(src, s.job_off, &mut bytes[at(s)]);
                    }
                }
            }
            let lowered = lower(way, &xfers, self.limits);
            let mut mem = LocalMem::new();
            match way {
                Way::Put => mem.src(&bytes[..used]),
                Way::Get => mem.dst(&mut bytes[..used]),
            }
            let x = execute(
                c.qp.as_mut(),
                &lowered.chains,
                &mem,
                deadline,
                self.busy_poll,
            )?;
            drop(mem);
            total.posted += x.posted;
            if x.error.is_some() || x.timed_out {
                total.error = x.error;
                total.timed_out = x.timed_out;
                return Ok(total);
            }
            if way == Way::Get {
                for s in &round {
                    if let Mem::Dst(d) = &mut jobs[s.job].mem {
                        scatter(d, s.job_off, &bytes[at(s)]);
                    }
                }
            }
            self.staged_bytes.fetch_add(used as u64, Ordering::Relaxed);
            self.staging_rounds.fetch_add(1, Ordering::Relaxed);
        }
        Ok(total)
    }

    /// Enter the epoch fence, run `data` (the jobs' work requests) when the incarnation is the
    /// jobs', leave the fence; one outcome per job (`failed`: those that failed before).
    fn fenced(
        &self,
        addr: &ServiceAddr,
        mut conn: Conn,
        incarnation: u64,
        mut failed: Vec<Option<Error>>,
        deadline: Instant,
        data: impl FnOnce(&mut Conn) -> std::result::Result<Executed, RdmaError>,
    ) -> Vec<Result<()>> {
        let n = failed.len();
        let fence_mr = conn.hello.fence;
        let fence_op =
            |id: u64, op: Opcode, word: u64, local: u64, signaled: bool, lkey: u32| WorkRequest {
                wr_id: FENCE_WR + id,
                opcode: op,
                sges: vec![Sge {
                    addr: local,
                    len: 8,
                    lkey,
                }],
                remote_addr: fence_mr.addr + word,
                rkey: fence_mr.rkey,
                signaled,
                fence: matches!(op, Opcode::Read),
                inline: false,
            };
        let lkey = conn.scratch.lkey();
        let (s0, s1, s2, s3) = (
            conn.scratch.addr(0),
            conn.scratch.addr(1),
            conn.scratch.addr(2),
            conn.scratch.addr(3),
        );
        let enter = vec![
            fence_op(0, Opcode::FetchAdd { add: 1 }, 8, s0, false, lkey),
            fence_op(1, Opcode::Read, 0, s1, true, lkey),
        ];
        let leave = vec![
            fence_op(2, Opcode::Read, 0, s2, false, lkey),
            fence_op(3, Opcode::FetchAdd { add: u64::MAX }, 8, s3, true, lkey),
        ];
        // Enter the fence.
        let mut scratch_mem = LocalMem::new();
        scratch_mem.scratch(&mut conn.scratch);
        let entered = execute(
            conn.qp.as_mut(),
            &[enter],
            &scratch_mem,
            deadline,
            self.busy_poll,
        );
        drop(scratch_mem);
        let entered = match entered {
            Ok(x) if x.error.is_none() && !x.timed_out => true,
            Ok(x) => {
                let e = self.completion_error(addr, &x);
                self.recover(addr, conn, false, deadline);
                return all_err(&e, n);
            }
            Err(e) => {
                self.recover(addr, conn, false, deadline);
                return all_err(&unreachable(addr, e), n);
            }
        };
        debug_assert!(entered);
        let current = conn.scratch.get(1);
        let data = if current != incarnation {
            None
        } else {
            Some(data(&mut conn))
        };
        let data = match data {
            None => {
                let why = format!("fence: the copy was planned for incarnation {incarnation}, the service is at {current} (0 = re-registering)");
                warn!(endpoint = %addr.data_endpoint, reason = %why, "transfer refused by the epoch fence");
                self.leave(addr, conn, leave, deadline);
                return all_err(&unreachable(addr, why), n);
            }
            Some(Err(e)) => {
                // Refused before posting (a local entry outside the call's memory: a bug).
                self.leave(addr, conn, leave, deadline);
                return all_err(&Error::Internal(e.to_string()), n);
            }
            Some(Ok(x)) => x,
        };
        let broken = data.error.is_some() || data.timed_out;
        let data_err = broken.then(|| self.completion_error(addr, &data));
        let (conn, held) = if broken {
            (self.recover(addr, conn, true, deadline), None)
        } else {
            let mut c = conn;
            let mut sm = LocalMem::new();
            sm.scratch(&mut c.scratch);
            let r = execute(c.qp.as_mut(), &[leave], &sm, deadline, self.busy_poll);
            drop(sm);
            match r {
                Ok(x) if x.error.is_none() && !x.timed_out => {
                    let now = c.scratch.get(2);
                    (Some(c), Some(now))
                }
                Ok(x) => {
                    let e = self.completion_error(addr, &x);
                    warn!(error = %e, "RDMA: leaving the fence failed");
                    (self.recover(addr, c, true, deadline), Some(0))
                }
                Err(e) => {
                    warn!(error = %e, "RDMA: leaving the fence failed");
                    (self.recover(addr, c, true, deadline), Some(0))
                }
            }
        };
        if let Some(c) = conn {
            self.give(addr.rank, c);
        }
        // Each job: its own failure; else, after an error completion or a timeout, that error
        // for every job (work requests that did complete were not followed by the fence check, so
        // none of the batch counts: a get reads another replica, a put fails); else the fence
        // check after the copy.
        (0..n)
            .map(|j| {
                if let Some(e) = failed[j].take() {
                    return Err(e);
                }
                if let Some(e) = &data_err {
                    return Err(e.clone_error());
                }
                match held {
                    Some(now) if now == incarnation => Ok(()),
                    now => Err(unreachable(
                        addr,
                        format!(
                            "fence: the service moved from incarnation {incarnation} to {} during the copy",
                            now.unwrap_or(0)
                        ),
                    )),
                }
            })
            .collect()
    }

    fn completion_error(&self, addr: &ServiceAddr, x: &Executed) -> Error {
        match x.error {
            _ if x.timed_out => Error::Timeout {
                ms: 0,
                what: format!("RDMA transfer with local service {}", addr.data_endpoint),
            },
            // Not `LocalUnreachable`: a completion error proves no death (no suspect hint);
            // the meta service's lease decides that.
            Some((wr, status)) => Error::Remote {
                code: mmc_controlplane::Code::NotConnectLocal,
                context: format!(
                    "local service {}: RDMA {status:?} completion of work request {wr}",
                    addr.data_endpoint
                ),
            },
            None => unreachable(addr, "no completion"),
        }
    }

    /// After an error or timeout: reset the queue pair, connect a new one and, when the fence
    /// was entered, leave it there. The new connection, if any, is returned for reuse.
    fn recover(
        &self,
        addr: &ServiceAddr,
        mut conn: Conn,
        entered: bool,
        deadline: Instant,
    ) -> Option<Conn> {
        let _ = conn.qp.reset();
        drop(conn);
        // A recovery gets at least a second even when the call's deadline has passed.
        let deadline = deadline.max(Instant::now() + Duration::from_secs(1));
        match self.connect(addr, deadline) {
            Ok(mut c) => {
                if entered {
                    let lkey = c.scratch.lkey();
                    let w = WorkRequest {
                        wr_id: FENCE_WR + 3,
                        opcode: Opcode::FetchAdd { add: u64::MAX },
                        sges: vec![Sge {
                            addr: c.scratch.addr(3),
                            len: 8,
                            lkey,
                        }],
                        remote_addr: c.hello.fence.addr + 8,
                        rkey: c.hello.fence.rkey,
                        signaled: true,
                        fence: false,
                        inline: false,
                    };
                    let mut sm = LocalMem::new();
                    sm.scratch(&mut c.scratch);
                    let r = execute(c.qp.as_mut(), &[vec![w]], &sm, deadline, self.busy_poll);
                    drop(sm);
                    if !matches!(r, Ok(x) if x.error.is_none() && !x.timed_out) {
                        warn!(rank = addr.rank, "RDMA: could not leave the fence after an error (the service's drain is bounded)");
                        return None;
                    }
                }
                debug!(rank = addr.rank, "RDMA queue pair reset and reconnected");
                Some(c)
            }
            Err(e) => {
                warn!(rank = addr.rank, error = %e, "RDMA: reconnecting failed");
                None
            }
        }
    }

    fn leave(&self, addr: &ServiceAddr, mut c: Conn, leave: Vec<WorkRequest>, deadline: Instant) {
        let mut sm = LocalMem::new();
        sm.scratch(&mut c.scratch);
        let r = execute(c.qp.as_mut(), &[leave], &sm, deadline, self.busy_poll);
        drop(sm);
        match r {
            Ok(x) if x.error.is_none() && !x.timed_out => self.give(addr.rank, c),
            _ => {
                let _ = self
                    .recover(addr, c, true, deadline)
                    .map(|c| self.give(addr.rank, c));
            }
        }
    }
}
