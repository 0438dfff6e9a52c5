//! The client's transport backends, behind `mmc-core`'s seam ([`mmc_core::transport`]: a
//! [`Transport`] takes [`Job`]s, the operation's transfers resolved to the caller's slices, and
//! reports one outcome per transfer), and the chooser that picks one backend per service.
//!
//! | backend | provides | refuses |
//! |---|---|---|
//! | [`embedded`] | memcpy between the caller's slices and the client's own local service's pools, inside its fence, at once | every rank but the embedded service's |
//! | [`shm`] | memcpy between the caller's slices and a same-host service's pools mapped from its memfds, inside its shared fence word, at once | other hosts; `transport = tcp`; a failed mapping (remembered per incarnation); a service whose socket closed |
//! | [`rdma`] | one-sided verbs (WRITE/READ chains, the fence entered with FETCH_ADD) between the caller's registered slices (or registered staging buffers: `rdma_caller_memory = bounce`) and the service's registered pools; services of a batch in parallel threads; blocks (busy-polls, then sleeps on the completion channel) until every completion | services whose `RdmaConnect` was refused (no device, another fabric, a failed connection), remembered per incarnation for 10 s |
//! | [`tcp`] | one vectored request per (service, lane) on pooled connections, raw bytes straight from and into the caller's slices; lanes and services in parallel threads; the service checks the fence | ranks the meta reply gave no address |
//!
//! [`Transports::run`] routes each job (the order below is the chooser), submits each backend's
//! share, and returns the outcomes in transfer order. Every backend here completes before `submit`
//! returns, so the caller's borrowed memory outlives every copy. A device-copy backend
//! implements [`Transport`] in a file of its own and gets a [`Route`] and a branch in
//! [`Transports::route`]; the put and get drivers do not change.

pub(crate) mod embedded;
pub(crate) mod mr_cache;
pub(crate) mod rdma;
pub(crate) mod rdma_bounce;
pub(crate) mod rdma_plan;
pub(crate) mod shm;
pub(crate) mod tcp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mmc_controlplane::msg::ServiceAddr;
use mmc_controlplane::Result;
use mmc_core::client::{CloneError, Transfer};
use mmc_core::fence::Fence;
use mmc_core::transport::{Completions, DevSpan, Job, Mem, Transport};
use mmc_hal::device::Batch;
use tracing::{debug, warn};

use crate::local::LocalService;
use mmc_config::DataOpType;
use shm::ShmMap;

/// A same-host service's incarnation and its mapped pools (`None`: mapping failed, use TCP).
type ShmEntry = (u64, Option<Arc<ShmMap>>);

/// Which backend carries the transfers to one service.
pub(crate) enum Route {
    /// The client's own embedded local service.
    Embedded,
    /// A same-host local service's pools, mapped.
    Shm(Arc<ShmMap>),
    /// One-sided verbs (both sides have an RDMA device on one fabric).
    Rdma,
    /// Everything else.
    Tcp,
}

/// The client's backends and what they keep between batches (mappings, idle connections).
pub(crate) struct Transports {
    embedded: Option<Arc<LocalService>>,
    /// `transport = tcp` in the config: no shared memory, even on the same host.
    tcp_only: bool,
    host: String,
    /// How long mapping a same-host service's pools may take.
    map_timeout: Duration,
    /// Same-host local services' pools, mapped: rank -> (incarnation, mapping or None if it failed).
    shm_maps: Mutex<HashMap<u32, ShmEntry>>,
    tcp: tcp::Pool,
    /// The RDMA backend, when this client has a device.
    rdma: Option<rdma::RdmaNet>,
    /// `transport = rdma`: RDMA before same-host shared memory.
    rdma_forced: bool,
}

impl Transports {
    pub(crate) fn new(
        embedded: Option<Arc<LocalService>>,
        transport: Option<DataOpType>,
        timeout: Duration,
        busy_poll: Duration,
        rdma_provider: mmc_config::RdmaProvider,
        caller_memory: mmc_config::RdmaCallerMemory,
        tls: Option<Arc<mmc_tls::TlsContext>>,
    ) -> Transports {
        let rdma_forced = transport == Some(DataOpType::Rdma);
        let kind = crate::local::rdma_server::provider_kind(rdma_provider);
        let rdma = match mmc_hal::rdma::provider(kind, &crate::local::host_id()) {
            _ if transport == Some(DataOpType::Tcp) => None,
            Ok(Some(dev)) => Some(rdma::RdmaNet::new(
                dev,
                busy_poll,
                caller_memory,
                tls.clone(),
            )),
            Ok(None) => None,
            Err(e) => {
                warn!(error = %e, "RDMA unavailable: using the own pool, same-host shared memory or TCP");
                None
            }
        };
        if rdma.is_some() && tls.is_some() {
            warn!(
                "TLS is on, but RDMA transfers are not encrypted (one-sided verbs carry objects \
                in the clear on the fabric; only their set-up goes over TLS): set transport = tcp \
                where the fabric is not trusted"
            );
        }
        if rdma_forced && rdma.is_none() {
            warn!("transport = rdma but this client has no RDMA device (rdma_provider = sim selects the simulated NIC): using the own pool, same-host shared memory or TCP");
        }
        Transports {
            rdma,
            rdma_forced,
            embedded,
            tcp_only: transport == Some(DataOpType::Tcp),
            host: crate::local::host_id(),
            map_timeout: timeout.min(Duration::from_secs(5)),
            shm_maps: Mutex::new(HashMap::new()),
            tcp: tcp::Pool::new(busy_poll, tls),
        }
    }

    pub(crate) fn embedded(&self) -> Option<&Arc<LocalService>> {
        self.embedded.as_ref()
    }

    /// Carry out `jobs` (one per transfer of a batch, in order) against `services`; one outcome
    /// per transfer, in order.
    pub(crate) fn run(
        &self,
        jobs: Vec<Job<'_>>,
        services: &[ServiceAddr],
        deadline: Instant,
    ) -> Vec<Result<()>> {
        let mut done = Completions::new(jobs.len());
        let mut own = Vec::new();
        let mut mapped: Vec<(u32, Arc<ShmMap>, Vec<Job<'_>>)> = Vec::new();
        let mut remote = Vec::new();
        let mut verbs: Vec<(u32, Vec<Job<'_>>)> = Vec::new();
        // Device memory bound for another host (RDMA or TCP) is staged through host buffers;
        // the rank it goes to over RDMA, `None` over TCP.
        let mut remote_dev = Vec::new();
        let mut dev_route: HashMap<usize, Option<u32>> = HashMap::new();
        let mut alive = Vec::new();
        for job in jobs {
            let f = job.t.fence;
            match self.route(f.rank, f.segment, services, &mut alive) {
                Route::Embedded => own.push(job),
                Route::Shm(map) => match mapped.iter_mut().find(|(r, _, _)| *r == f.rank) {
                    Some((_, _, share)) => share.push(job),
                    None => mapped.push((f.rank, map, vec![job])),
                },
                Route::Rdma if job.mem.is_device() => {
                    dev_route.insert(job.idx, Some(f.rank));
                    remote_dev.push(job);
                }
                Route::Rdma => match verbs.iter_mut().find(|(r, _)| *r == f.rank) {
                    Some((_, share)) => share.push(job),
                    None => verbs.push((f.rank, vec![job])),
                },
                Route::Tcp if job.mem.is_device() => {
                    dev_route.insert(job.idx, None);
                    remote_dev.push(job);
                }
                Route::Tcp => remote.push(job),
            }
        }
        let (mut staged, meta) = Staged::stage(&mut remote_dev, &mut done);
        debug_assert!(remote_dev.is_empty(), "every device job was staged");
        for job in staged.jobs(&meta) {
            match dev_route[&job.idx] {
                Some(rank) => match verbs.iter_mut().find(|(r, _)| *r == rank) {
                    Some((_, share)) => share.push(job),
                    None => verbs.push((rank, vec![job])),
                },
                None => remote.push(job),
            }
        }
        if !verbs.is_empty() {
            let work = verbs
                .into_iter()
                .map(|(rank, share)| {
                    let addr = services
                        .iter()
                        .find(|s| s.rank == rank)
                        .expect("routed by its address");
                    (addr, share)
                })
                .collect();
            self.rdma
                .as_ref()
                .expect("routed to RDMA")
                .submit_all(work, &mut done, deadline);
        }
        if !own.is_empty() {
            let svc = self
                .embedded
                .as_deref()
                .expect("routed to the embedded service");
            embedded::Embedded(svc).submit(own, &mut done);
        }
        for (_, map, share) in mapped {
            shm::Shm(&map).submit(share, &mut done);
        }
        if !remote.is_empty() {
            tcp::Tcp::new(&self.tcp, services, deadline).submit(remote, &mut done);
        }
        let mut outcomes = done.take();
        staged.finish(&meta, &mut outcomes);
        outcomes
    }

    /// The backend for `rank`'s `segment`: the client's own pool; else RDMA when this client has
    /// a device and the service accepts a connection (other hosts; any host with
    /// `transport = rdma`); else (same host, unless the transport is forced to TCP) the service's
    /// mapped pools; else TCP. `alive` holds the ranks
    /// whose liveness this batch already confirmed: one probe per service per batch, not per key.
    pub(crate) fn route(
        &self,
        rank: u32,
        segment: u32,
        services: &[ServiceAddr],
        alive: &mut Vec<u32>,
    ) -> Route {
        let Some(addr) = services.iter().find(|s| s.rank == rank) else {
            return Route::Tcp; // which refuses it: no address
        };
        if self.embedded.as_ref().is_some_and(|s| s.rank() == rank) {
            return Route::Embedded;
        }
        if let Some(r) = &self.rdma {
            // Same host: shared memory first, unless RDMA is forced.
            let wanted = self.rdma_forced || addr.host != self.host || addr.shm_endpoint.is_empty();
            if wanted && r.usable(addr, self.map_timeout) {
                return Route::Rdma;
            }
        }
        if self.tcp_only || addr.host != self.host || addr.shm_endpoint.is_empty() {
            return Route::Tcp;
        }
        let mut maps = self
            .shm_maps
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        let fresh = match maps.get(&rank) {
            Some((inc, map)) if *inc == addr.incarnation => map.clone(),
            _ => {
                let map = match ShmMap::open(addr, self.map_timeout) {
                    Ok(m) => Some(Arc::new(m)),
                    Err(e) => {
                        // Remembered for this incarnation: TCP serves it from now on.
                        warn!(rank, error = %e, "same-host shared memory unavailable: using TCP");
                        None
                    }
                };
                maps.insert(rank, (addr.incarnation, map.clone()));
                map
            }
        };
        let Some(map) = fresh else {
            return Route::Tcp;
        };
        debug_assert_eq!(map.incarnation, addr.incarnation);
        if !map.current() {
            // The service registered again (or is doing so): this mapping's incarnation is over.
            // Forget it, so the next plan (with the new incarnation) maps again; this copy still
            // goes to it, and its fence refuses it (-3018).
            debug!(
                rank,
                incarnation = map.incarnation,
                "stale shared-memory mapping dropped"
            );
            maps.remove(&rank);
            return Route::Shm(map);
        }
        if !alive.contains(&rank) {
            if !map.alive() {
                // The service is gone: unmap, and let TCP report it unreachable.
                maps.remove(&rank);
                return Route::Tcp;
            }
            alive.push(rank);
        }
        if map.pool(segment).is_none() {
            return Route::Tcp;
        }
        Route::Shm(map)
    }

    /// The RDMA backend, if this client has a device.
    pub(crate) fn rdma(&self) -> Option<&rdma::RdmaNet> {
        self.rdma.as_ref()
    }

    /// Mapped same-host host pools whose background populate still runs.
    pub(crate) fn pools_populating(&self) -> usize {
        let maps = self
            .shm_maps
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        maps.values()
            .filter_map(|(_, m)| m.as_ref())
            .map(|m| m.pools_populating())
            .sum()
    }

    /// Ranks of the same-host local services whose pools are mapped (and used instead of TCP).
    pub(crate) fn mapped_services(&self) -> Vec<u32> {
        let maps = self
            .shm_maps
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        let mut ranks: Vec<u32> = maps
            .iter()
            .filter(|(_, (_, m))| m.is_some())
            .map(|(r, _)| *r)
            .collect();
        ranks.sort_unstable();
        ranks
    }
}

/// What the memcpy backends copy with: a pool set (the embedded service's, or a same-host
/// service's mapped pools) whose copies check the epoch fence around them.
pub(crate) trait PoolCopies {
    /// Host bytes `src` into `f.segment` at `offset`.
    fn copy_in(&self, f: Fence, offset: u64, src: &[u8]) -> Result<()>;
    /// `f.segment` at `offset` into host bytes `dst`.
    fn copy_out(&self, f: Fence, offset: u64, dst: &mut [u8]) -> Result<()>;
    /// Device copies `(pool offset, device address, len)` between `f.segment` and device memory
    /// (`write`: into the pool), run with one synchronization.
    fn dev_copies(&self, f: Fence, write: bool, items: &[(u64, u64, u64)]) -> Result<()>;
}

/// The memcpy backends' loop: copy each host job's runs with `copy_in` / `copy_out` (which check
/// the fence around each copy), consecutive runs at consecutive pool offsets; the first failure is
/// the job's outcome. Device jobs are gathered per (segment fence, direction) and run as one
/// device batch each (one synchronization), whose outcome is each of its jobs'.
fn copy_jobs(jobs: Vec<Job<'_>>, done: &mut Completions, pools: &dyn PoolCopies) {
    type Group = (Fence, bool, Vec<usize>, Vec<(u64, u64, u64)>);
    let mut dev: Vec<Group> = Vec::new();
    for job in jobs {
        let (f, mut offset) = (job.t.fence, job.t.offset);
        let outcome = match job.mem {
            Mem::Src(src) => src.into_iter().try_for_each(|s| {
                pools.copy_in(f, offset, s)?;
                offset += s.len() as u64;
                Ok(())
            }),
            Mem::Dst(dst) => dst.into_iter().try_for_each(|d| {
                let n = d.len() as u64;
                pools.copy_out(f, offset, d)?;
                offset += n;
                Ok(())
            }),
            Mem::DevSrc(spans) | Mem::DevDst(spans) => {
                let write = job.t.dir == mmc_core::client::Dir::Write;
                let g = match dev.iter().position(|g| g.0 == f && g.1 == write) {
                    Some(i) => &mut dev[i],
                    None => {
                        dev.push((f, write, Vec::new(), Vec::new()));
                        dev.last_mut().expect("just pushed")
                    }
                };
                g.2.push(job.idx);
                for s in spans {
                    g.3.push((offset, s.addr, s.len));
                    offset += s.len;
                }
                continue;
            }
        };
        debug_assert!(outcome.is_err() || offset == job.t.offset + job.t.len);
        let fresh = done.set(job.idx, outcome);
        debug_assert!(fresh, "one outcome per job");
    }
    for (f, write, idxs, items) in dev {
        let outcome = pools.dev_copies(f, write, &items);
        for idx in idxs {
            let fresh = done.set(idx, outcome.as_ref().map_err(|e| e.clone_error()).copied());
            debug_assert!(fresh, "one outcome per job");
        }
    }
}

/// Host staging for device jobs bound for TCP: a write's device bytes are copied to host buffers
/// first (one device batch), a read lands in host buffers and is copied to the device after the
/// transfers (one device batch), for the jobs that succeeded. The buffers are allocated per batch
/// (pageable memory; the service side stages through pinned buffers it keeps).
struct Staged {
    /// Per staged job: its index, the device spans, and its host buffer.
    jobs: Vec<(usize, Vec<DevSpan>, Vec<u8>)>,
}

impl Staged {
    /// Take the device jobs out of `jobs`, staging writes now; failures are reported in `done`.
    fn stage(
        jobs: &mut Vec<Job<'_>>,
        done: &mut Completions,
    ) -> (Staged, Vec<(usize, Transfer, bool)>) {
        let mut staged = Staged { jobs: Vec::new() };
        let mut meta = Vec::new();
        let mut i = 0;
        while i < jobs.len() {
            if !jobs[i].mem.is_device() {
                i += 1;
                continue;
            }
            let job = jobs.swap_remove(i);
            let (spans, write) = match job.mem {
                Mem::DevSrc(s) => (s, true),
                Mem::DevDst(s) => (s, false),
                _ => unreachable!("a device job"),
            };
            staged
                .jobs
                .push((job.idx, spans, vec![0u8; job.t.len as usize]));
            meta.push((job.idx, job.t, write));
        }
        // Writes: device -> host buffers, one batch.
        let mut batch = Batch::new();
        for ((_, spans, buf), (_, _, write)) in staged.jobs.iter_mut().zip(&meta) {
            if *write {
                let mut rest = &mut buf[..];
                for s in spans.iter() {
                    let (head, tail) = std::mem::take(&mut rest).split_at_mut(s.len as usize);
                    batch.to_host(head, s.addr);
                    rest = tail;
                }
            }
        }
        if let Err(e) = batch.run_active() {
            // Every staged write fails with the batch; the reads go ahead.
            let e = crate::local::device_error(e);
            for (idx, _, _) in meta.iter().filter(|(_, _, write)| *write) {
                done.set(*idx, Err(e.clone_error()));
            }
            let (jobs, kept): (Vec<_>, Vec<_>) = staged
                .jobs
                .into_iter()
                .zip(meta)
                .filter(|(_, (_, _, write))| !*write)
                .unzip();
            staged.jobs = jobs;
            meta = kept;
        }
        (staged, meta)
    }

    /// Host jobs over the staging buffers.
    fn jobs<'b>(&'b mut self, meta: &[(usize, Transfer, bool)]) -> Vec<Job<'b>> {
        self.jobs
            .iter_mut()
            .zip(meta)
            .map(|((idx, _, buf), (midx, t, write))| {
                debug_assert_eq!(idx, midx);
                Job {
                    idx: *idx,
                    t: *t,
                    mem: if *write {
                        Mem::Src(vec![&buf[..]])
                    } else {
                        Mem::Dst(vec![&mut buf[..]])
                    },
                }
            })
            .collect()
    }

    /// After the transfers: reads that succeeded go host -> device, one batch; a failure there
    /// fails those reads.
    fn finish(self, meta: &[(usize, Transfer, bool)], outcomes: &mut [Result<()>]) {
        let mut batch = Batch::new();
        let mut reads = Vec::new();
        for ((idx, spans, buf), (_, _, write)) in self.jobs.iter().zip(meta) {
            if *write || outcomes[*idx].is_err() {
                continue;
            }
            let mut at = 0usize;
            for s in spans {
                batch.to_device(s.addr, &buf[at..at + s.len as usize]);
                at += s.len as usize;
            }
            reads.push(*idx);
        }
        if let Err(e) = batch.run_active() {
            let e = crate::local::device_error(e);
            for idx in reads {
                outcomes[idx] = Err(e.clone_error());
            }
        }
    }
}
