//! The local service: owns the pools (a DRAM arena, and an HBM pool in device memory through the
//! process's device backend, see `pool`), registers them with the meta service as segments,
//! heartbeats, and serves scatter-gather reads and writes against them on its own TCP data
//! endpoint.
//!
//! It runs as its own process (`mmc-local`) or inside a client's process (embedded): then the
//! client copies into its own pools directly, with no socket in between.

mod data_server;
mod member;
mod metrics;
pub(crate) mod pool;
pub(crate) mod rdma_server;
mod repair;
mod shards;
pub(crate) mod shm_server;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mmc_config::{parse_tcp_url, DataOpType};
use mmc_controlplane::msg::{self, Register, SegmentSpec};
use mmc_controlplane::{Code, Error, Result};
use mmc_core::fence::{Fence, SharedFence, Stale};
use mmc_core::local::{LocalCore, LocalParams, Membership, Refused};
use mmc_hal::device::{BackendChoice, BackendKind};
use mmc_hal::Arena;
use mmc_meta_service::obs::{self, HttpEndpoint};
use pool::{DevicePool, PoolMem, Staging, STAGING_BUFFERS};
use tracing::{info, warn};

use metrics::{Dir, Transport};

use mmc_config::LocalConfig;
use mmc_tls::TlsContext;

/// How long start-up waits for the meta service to answer the registration.
const REGISTER_TIMEOUT_MS: u64 = 10_000;
/// A meta request of the running service with no answer after this long has failed.
const REQUEST_TIMEOUT_MS: u64 = 1_000;
/// How long a re-registration waits for copies of the old incarnation to leave the fence.
const DRAIN_TIMEOUT_MS: u64 = 2_000;

/// One pool and the segment id the meta service gave it.
pub(crate) struct Pool {
    pub(crate) media: u16,
    pub(crate) mem: PoolMem,
}

pub(crate) struct Inner {
    pub(crate) pools: Vec<Pool>,
    /// Bytes of each pool, in pool order (what [`LocalCore::resolve`] checks ranges against).
    pub(crate) pool_lens: Vec<u64>,
    /// Registration, incarnations and request checks; written only by the member driver.
    pub(crate) core: RwLock<LocalCore>,
    /// The epoch fence every copy into or out of the pools enters, in a page same-host clients
    /// map too.
    pub(crate) fence: Arc<SharedFence>,
    pub(crate) stop: AtomicBool,
    /// Held by the member driver for each of its steps and by `member::stop`: a stop waits for a
    /// step in flight (a registration included) to end, and no step starts after it.
    pub(crate) driver_turn: Mutex<()>,
    pub(crate) conns: Mutex<HashMap<u64, TcpStream>>,
    /// Busy-poll for each next request this long before blocking.
    pub(crate) busy_poll: Duration,
    /// The meta service: a fixed address, or the leader etcd names (followed on failure).
    pub(crate) meta: mmc_meta_service::MetaLocator,
    /// The core's clock starts here.
    started: Instant,
    /// The repair worker's queue (set once it runs).
    repairs: std::sync::OnceLock<std::sync::mpsc::SyncSender<repair::Queued>>,
    /// The RDMA device with the pools registered, when there is one.
    pub(crate) rdma: Option<rdma_server::RdmaServer>,
    /// Counters for `/metrics`.
    pub(crate) stats: metrics::LocalStats,
    /// `[tls]`: the data endpoint takes only mutual-TLS peers, and this service's own connections
    /// (to the meta service, to other services for repairs) use TLS.
    pub(crate) tls: Option<Arc<TlsContext>>,
    /// The secret same-host peers must send for the pools (None: no shared memory offered);
    /// renewed with every registration sent, so one per incarnation.
    pub(crate) shm_secret: Option<shm_server::Secret>,
}

impl Inner {
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The current membership; `None` while registering again.
    pub(crate) fn membership(&self) -> Option<Membership> {
        self.core
            .read()
            .expect("local core lock poisoned: a core step panicked")
            .membership()
            .cloned()
    }
}

/// The error a copy refused by the fence or the request checks fails with.
pub(crate) fn refused(endpoint: &str, why: Refused) -> Error {
    match why.code() {
        Code::NotConnectLocal => {
            warn!(endpoint, reason = %why, "transfer refused by the epoch fence");
            Error::LocalUnreachable {
                endpoint: endpoint.to_string(),
                reason: why.to_string(),
            }
        }
        code => Error::Remote {
            code,
            context: format!("{endpoint}: {why}"),
        },
    }
}

/// A device backend's failure (-3000: the device memory given was not usable, or no backend).
pub(crate) fn device_error(e: mmc_hal::HalError) -> Error {
    warn!(error = %e, "device copy failed");
    Error::InvalidParam(e.to_string())
}

/// Start the process's device backend (`MMC_DEVICE_BACKEND`, else `device_backend`).
pub(crate) fn device_backend(config: &LocalConfig) -> Result<&'static dyn mmc_hal::device::Device> {
    let choice: BackendChoice = config
        .device_backend
        .parse()
        .map_err(|e: mmc_hal::HalError| Error::Config(e.to_string()))?;
    mmc_hal::device::init(choice).map_err(|e| Error::Config(e.to_string()))
}

/// The HBM pool: `bytes` of device memory on `device_id`.
fn hbm_pool(config: &LocalConfig, bytes: u64) -> Result<DevicePool> {
    let dev = device_backend(config)?;
    if dev.kind() == BackendKind::None {
        return Err(Error::Config(format!(
            "hbm_size = {bytes} needs device memory, but no device backend is loaded \
             (device_backend / MMC_DEVICE_BACKEND = cuda, ascend or sim)"
        )));
    }
    let staging = std::sync::Arc::new(Staging::new(dev, STAGING_BUFFERS));
    let pool = DevicePool::alloc(dev, config.device_id, bytes, staging)
        .map_err(|e| Error::Memory(format!("HBM pool on device {}: {e}", config.device_id)))?;
    info!(bytes, device = config.device_id, backend = %dev.kind(), "HBM pool in device memory");
    Ok(pool)
}

/// The error a copy fails with when the fence moved before or during it (-3018).
pub(crate) fn stale(endpoint: &str, why: Stale) -> Error {
    warn!(endpoint, reason = %why, "transfer refused by the epoch fence");
    Error::LocalUnreachable {
        endpoint: endpoint.to_string(),
        reason: why.to_string(),
    }
}

/// A running local service. Dropping it unregisters, stops its threads and frees its pools.
pub struct LocalService {
    inner: Arc<Inner>,
    data_addr: SocketAddr,
    /// The shm socket's file (empty: none), to wake its accept loop at the end.
    shm_path: std::path::PathBuf,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// `/metrics` and `/health` (when `metrics_url` is set).
    metrics: Mutex<Option<HttpEndpoint>>,
}

impl LocalService {
    pub fn start(config: &LocalConfig) -> Result<LocalService> {
        config
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if config.dram_bytes == 0 && config.hbm_bytes == 0 {
            return Err(Error::Config(
                "a local service needs a DRAM or HBM size above 0".into(),
            ));
        }
        let tls = TlsContext::from_config(&config.tls).map_err(|e| Error::Config(e.to_string()))?;
        let meta = mmc_meta_service::MetaLocator::new(&config.meta_url)?.with_tls(tls.clone());
        let listen = parse_tcp_url(&config.data_url).map_err(|e| Error::Config(e.to_string()))?;
        if config.device_backend != "auto" {
            // Chosen explicitly: start it now (a bad choice fails here, not at the first copy).
            device_backend(config)?;
        }
        check_host_memory(config)?;
        let mut pools = Vec::new();
        for (media, bytes) in [
            (msg::MEDIA_DRAM, config.dram_bytes),
            (msg::MEDIA_HBM, config.hbm_bytes),
        ] {
            if bytes == 0 {
                continue;
            }
            if media == msg::MEDIA_HBM {
                pools.push(Pool {
                    media,
                    mem: PoolMem::Device(hbm_pool(config, bytes)?),
                });
                continue;
            }
            let name = format!(
                "mmc-{}-{}-{}",
                msg::media_name(media).to_lowercase(),
                std::process::id(),
                config.create_id
            );
            let arena = Arena::new(&name, bytes, config.prefault)
                .map_err(|e| Error::Memory(e.to_string()))?;
            pools.push(Pool {
                media,
                mem: PoolMem::Host(Arc::new(arena)),
            });
        }
        let listener = TcpListener::bind(listen)
            .map_err(|e| Error::io(format!("bind the data endpoint {listen}"), e))?;
        let data_addr = listener
            .local_addr()
            .map_err(|e| Error::io("local_addr", e))?;
        let advertise = advertised(config, data_addr, || {
            meta.resolve(Instant::now() + Duration::from_millis(REGISTER_TIMEOUT_MS))
        })?;
        // `protocol = tcp` offers TCP only: no shm socket, so same-host clients use TCP. Without
        // a private folder for its socket the service offers no shared memory either.
        let bound = if config.protocol == Some(DataOpType::Tcp) {
            info!("protocol = tcp: same-host shared memory not offered");
            None
        } else {
            shm_server::bind()
                .inspect_err(|e| warn!(error = %e, "no same-host shared memory: the shm socket cannot be bound privately"))
                .ok()
        };
        let (shm, shm_secret) = match bound {
            Some((bound, secret)) => (Some(bound), Some(secret)),
            None => (None, None),
        };
        // The secret here is replaced by a fresh one in each registration the driver sends.
        let shm_endpoint = shm_secret
            .as_ref()
            .map(shm_server::Secret::endpoint)
            .unwrap_or_default();
        let shm_path = shm.as_ref().map(|b| b.path.clone()).unwrap_or_default();
        let register = Register {
            rank: config.rank_id,
            create_id: config.create_id,
            host: host_id(),
            data_endpoint: advertise,
            shm_endpoint,
            segments: pools
                .iter()
                .map(|p| SegmentSpec {
                    media: p.media,
                    capacity: p.mem.len(),
                })
                .collect(),
        };
        let fence = SharedFence::new(&format!(
            "mmc-fence-{}-{}",
            std::process::id(),
            config.create_id
        ))
        .map_err(|e| Error::Memory(e.to_string()))
        .map(Arc::new)?;
        let params = LocalParams {
            register,
            heartbeat_ms: config.heartbeat_ms.max(10),
            drain_timeout_ms: DRAIN_TIMEOUT_MS,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
        };
        let rdma =
            rdma_server::RdmaServer::open(config.rdma_provider, config.protocol, &pools, &fence);
        if rdma.is_some() && tls.is_some() {
            warn!(
                "TLS is on, but RDMA transfers are not encrypted (peers' one-sided verbs read \
                and write the pools in the clear on the fabric; only their set-up goes over TLS)"
            );
        }
        let inner = Inner {
            rdma,
            pool_lens: pools.iter().map(|p| p.mem.len()).collect(),
            pools,
            core: RwLock::new(LocalCore::new(params, 0)),
            fence,
            stop: AtomicBool::new(false),
            driver_turn: Mutex::new(()),
            conns: Mutex::new(HashMap::new()),
            busy_poll: Duration::from_micros(config.busy_poll_us),
            meta,
            started: Instant::now(),
            repairs: std::sync::OnceLock::new(),
            stats: metrics::LocalStats::default(),
            tls,
            shm_secret,
        };
        let mut driver = member::Driver::new();
        let membership = driver.start(&inner, Duration::from_millis(REGISTER_TIMEOUT_MS))?;
        info!(rank = membership.rank, incarnation = membership.incarnation, %data_addr,
            segments = ?membership.segments, "local service registered with the meta service");
        let inner = Arc::new(inner);
        let mut threads = Vec::new();
        let i = inner.clone();
        let shard_count = config.data_shards.min(256) as usize;
        let shards = if shard_count > 0 {
            let (shards, shard_threads) = shards::start(&inner, shard_count, config.data_poller)
                .map_err(|e| Error::io("start the data shards", e))?;
            threads.extend(shard_threads);
            shards
        } else {
            Vec::new()
        };
        threads.push(spawn("mmc-local-accept", move || {
            data_server::accept_loop(listener, i, shards)
        }));
        if let Some(shm) = shm {
            let i = inner.clone();
            threads.push(spawn("mmc-local-shm", move || {
                shm_server::accept_loop(shm, i)
            }));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(repair::QUEUE);
        let _ = inner.repairs.set(tx);
        let i = inner.clone();
        threads.push(spawn("mmc-local-repair", move || repair::run(i, rx)));
        let i = inner.clone();
        threads.push(spawn("mmc-local-member", move || driver.run(&i)));
        let svc = LocalService {
            inner,
            data_addr,
            shm_path,
            threads: Mutex::new(threads),
            metrics: Mutex::new(None),
        };
        if !config.metrics_url.is_empty() {
            let addr = mmc_config::parse_metrics_url(&config.metrics_url)
                .map_err(|e| Error::Config(e.to_string()))?;
            let registry = obs::registry_of(Arc::new(metrics::LocalSource(svc.inner.clone())));
            let endpoint = HttpEndpoint::start(
                addr,
                "mmc-local-metrics",
                registry,
                metrics::health(svc.inner.clone()),
                svc.inner.tls.clone(),
            )
            .map_err(|e| Error::io(format!("bind metrics to {addr}"), e))?;
            *svc.metrics.lock().expect("metrics lock poisoned") = Some(endpoint);
        }
        Ok(svc)
    }

    /// The rank the meta service knows this service by.
    pub fn rank(&self) -> u32 {
        self.inner
            .core
            .read()
            .expect("local core lock poisoned: a core step panicked")
            .rank()
            .expect("a started service has registered once")
    }

    /// A copy of the index of the objects this service holds (key -> where in its pools), as of
    /// the last change the meta service sent; empty while registering for the first time.
    pub fn index(&self) -> std::collections::BTreeMap<String, mmc_core::local::IndexEntry> {
        let core = self
            .inner
            .core
            .read()
            .expect("local core lock poisoned: a core step panicked");
        core.index().entries().clone()
    }

    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// Whether this local service registers with the meta service that `meta_url` names.
    pub fn uses_meta(&self, meta_url: &str) -> bool {
        self.inner.meta.same_as(meta_url)
    }

    /// Where `/metrics` and `/health` are served, when `metrics_url` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .lock()
            .expect("metrics lock poisoned")
            .as_ref()
            .map(HttpEndpoint::addr)
    }

    /// This service's TLS context (None with TLS off); an embedded client uses it too.
    pub fn tls(&self) -> Option<&Arc<TlsContext>> {
        self.inner.tls.as_ref()
    }

    /// Copy `src` into the pool that holds `f.segment` (the embedded client's fast path), inside
    /// the epoch fence: refused (-3018) unless the service is at `f`'s rank and incarnation.
    pub(crate) fn copy_in(&self, f: Fence, offset: u64, src: &[u8]) -> Result<()> {
        let started = Instant::now();
        let r = self.copy_in_fenced(f, offset, src);
        self.inner.stats.record(
            Transport::Embedded,
            Dir::Write,
            code_of(&r),
            src.len() as u64,
            started.elapsed(),
        );
        r
    }

    fn copy_in_fenced(&self, f: Fence, offset: u64, src: &[u8]) -> Result<()> {
        let endpoint = "the embedded local service";
        let guard = self
            .inner
            .fence
            .enter(f.incarnation)
            .map_err(|s| stale(endpoint, s))?;
        let pool = self.pool(f, offset, src.len() as u64)?;
        pool.mem
            .copy_in(offset, src)
            .map_err(|e| Error::Internal(e.to_string()))?;
        guard.still(f.incarnation).map_err(|s| stale(endpoint, s))
    }

    /// Copy out of the pool that holds `f.segment` into `dst`, inside the epoch fence; bytes
    /// copied while the fence moved are reported as an error, never as the object's.
    pub(crate) fn copy_out(&self, f: Fence, offset: u64, dst: &mut [u8]) -> Result<()> {
        let started = Instant::now();
        let len = dst.len() as u64;
        let r = self.copy_out_fenced(f, offset, dst);
        self.inner.stats.record(
            Transport::Embedded,
            Dir::Read,
            code_of(&r),
            len,
            started.elapsed(),
        );
        r
    }

    fn copy_out_fenced(&self, f: Fence, offset: u64, dst: &mut [u8]) -> Result<()> {
        let endpoint = "the embedded local service";
        let guard = self
            .inner
            .fence
            .enter(f.incarnation)
            .map_err(|s| stale(endpoint, s))?;
        let pool = self.pool(f, offset, dst.len() as u64)?;
        pool.mem
            .copy_out(offset, dst)
            .map_err(|e| Error::Internal(e.to_string()))?;
        guard.still(f.incarnation).map_err(|s| stale(endpoint, s))
    }

    /// Run device copies between the pool of `f.segment` and device memory, `(offset, device
    /// address, len)` each (`write`: into the pool), with one synchronization, inside the epoch
    /// fence.
    pub(crate) fn dev_copies(
        &self,
        f: Fence,
        write: bool,
        items: &[(u64, u64, u64)],
    ) -> Result<()> {
        let endpoint = "the embedded local service";
        let guard = self
            .inner
            .fence
            .enter(f.incarnation)
            .map_err(|s| stale(endpoint, s))?;
        let mut batch = mmc_hal::device::Batch::new();
        for &(offset, addr, len) in items {
            let pool = self.pool(f, offset, len)?;
            pool.mem
                .dev_copy(&mut batch, offset, addr, len, write)
                .map_err(device_error)?;
        }
        batch.run_active().map_err(device_error)?;
        guard.still(f.incarnation).map_err(|s| stale(endpoint, s))
    }

    /// The pool of `f.segment`, checked against the current incarnation and the range.
    fn pool(&self, f: Fence, offset: u64, len: u64) -> Result<&Pool> {
        let core = self
            .inner
            .core
            .read()
            .expect("local core lock poisoned: a core step panicked");
        let i = core
            .check_fence(f.rank, f.incarnation)
            .and_then(|m| LocalCore::resolve(m, f.segment, offset, len, &self.inner.pool_lens))
            .map_err(|why| refused("the embedded local service", why))?;
        Ok(&self.inner.pools[i])
    }

    /// Unregister, close every connection and join every thread.
    pub fn stop(self) {
        self.shutdown();
    }

    /// Stop serving: unregister, close every connection, join every thread. Idempotent; the pools
    /// stay mapped until the last reference to the service drops.
    pub fn shutdown(&self) {
        if self.inner.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        let rank = self.rank();
        // The metrics endpoint holds the service's state: stop it first.
        drop(
            self.metrics
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        member::stop(&self.inner, Duration::from_millis(1000));
        let _ = TcpStream::connect_timeout(&self.data_addr, Duration::from_millis(200));
        if !self.shm_path.as_os_str().is_empty() {
            shm_server::wake(&self.shm_path);
        }
        for c in self
            .inner
            .conns
            .lock()
            .expect("data connections lock poisoned")
            .drain()
        {
            let _ = c.1.shutdown(std::net::Shutdown::Both);
        }
        let threads: Vec<_> = self
            .threads
            .lock()
            .expect("service threads lock poisoned")
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
        info!(rank, "local service stopped");
    }
}

impl Drop for LocalService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The data endpoint other hosts are told: `advertise_url`; else the bound address; else, when
/// that is a wildcard (0.0.0.0, [::]), this host's address toward the meta service (the local
/// address the kernel picks for a socket connected there), or a refusal saying what to set.
fn advertised(
    config: &LocalConfig,
    bound: SocketAddr,
    meta: impl FnOnce() -> Result<SocketAddr>,
) -> Result<String> {
    if !config.advertise_url.is_empty() {
        return parse_tcp_url(&config.advertise_url)
            .map(|a| a.to_string())
            .map_err(|e| Error::Config(e.to_string()));
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    // The meta service's address now (the leader's, with etcd).
    let meta = meta()?;
    match route_toward(meta) {
        Ok(ip) if !ip.is_unspecified() => {
            let addr = SocketAddr::new(ip, bound.port());
            info!(%bound, %addr, %meta, "data endpoint bound to a wildcard address: advertising this host's address toward the meta service");
            Ok(addr.to_string())
        }
        found => Err(Error::Config(format!(
            "data_url binds the wildcard address {bound} and no address of this host toward the \
             meta service {meta} was found ({}); set advertise_url to the address other hosts \
             reach this service at",
            match found {
                Ok(ip) => format!("the route gave {ip}"),
                Err(e) => e.to_string(),
            }
        ))),
    }
}

/// The local address a socket connected to `to` gets (no packet is sent: a UDP connect only
/// picks the route).
fn route_toward(to: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let any: SocketAddr = if to.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = std::net::UdpSocket::bind(any)?;
    s.connect(to)?;
    Ok(s.local_addr()?.ip())
}

/// Refuse a DRAM pool larger than the host can give, before creating it: pre-faulting it would end
/// in the OOM killer. (The HBM pool is device memory: its backend refuses what it cannot give.)
fn check_host_memory(config: &LocalConfig) -> Result<()> {
    let wanted = config.dram_bytes;
    if wanted == 0 {
        return Ok(());
    }
    let host = mmc_hal::hostmem::HostMemory::read();
    if host.fits(&[wanted]) {
        return Ok(());
    }
    let can = host.ordinary().unwrap_or(0).max(host.hugetlb_free);
    Err(Error::Memory(format!(
        "the DRAM pool needs {wanted} bytes (dram_size {}), but this host can give only {can} \
         bytes ({}): {}; lower dram_size",
        mmc_config::format_size(wanted),
        mmc_config::format_size(can),
        host.describe()
    )))
}

/// The documented code of a copy's outcome (0 = done).
fn code_of(r: &Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.code().as_i32(),
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn a local service thread")
}

/// A stable identity for this host (spreading replicas, and same-host shared memory later).
pub(crate) fn host_id() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown-host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_bind_advertises_the_address_toward_the_meta_service() {
        let meta: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let c = LocalConfig::default();
        let any: SocketAddr = "0.0.0.0:1234".parse().unwrap();
        assert_eq!(advertised(&c, any, || Ok(meta)).unwrap(), "127.0.0.1:1234");
        let bound: SocketAddr = "127.0.0.2:1234".parse().unwrap();
        assert_eq!(
            advertised(&c, bound, || Ok(meta)).unwrap(),
            "127.0.0.2:1234"
        );
        let set = LocalConfig {
            advertise_url: "tcp://10.1.2.3:999".into(),
            ..LocalConfig::default()
        };
        assert_eq!(advertised(&set, any, || Ok(meta)).unwrap(), "10.1.2.3:999");
    }
}
