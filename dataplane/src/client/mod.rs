//! The MemCache client: the Rust API that the C and Python layers wrap.
//!
//! Every call is bounded by the configured timeout. A batch costs one meta round trip per phase
//! (alloc + commit for puts, lookup for gets); bytes move directly between the caller's buffers and
//! the local services that hold them, through the transport backends (`crate::transport`: the
//! client's own embedded service, same-host mapped pools, TCP), chosen per service.

mod device;
mod get;
mod put;
mod staged;

pub use staged::{Leased, PoolRange, StagedPut, STAGED_WRITE_MS};

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mmc_controlplane::msg::{self, AllocRequest, Replica, Reply, Request};
use mmc_controlplane::{Error, Result};
use mmc_meta_service::rpc::MetaConn;
use mmc_meta_service::MetaLocator;
use tracing::{debug, info, warn};

use crate::local::LocalService;
use crate::transport::Transports;
use mmc_config::{ClientConfig, LocalConfig};
use mmc_core::client::{unexpected, Action, Info, MetaKind, MetaOp, Operation};
/// Idle connections kept to the meta service.
const META_CONNS_IDLE_MAX: usize = 16;

pub use mmc_core::client::PutOptions;

/// What `query` tells about an object (`mmc_data_info` / `mmc_location_t`).
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    pub size: u64,
    pub replicas: Vec<Replica>,
}

/// A connected client. Cheap to share between threads (`&Client` is enough for every call).
pub struct Client {
    /// Where the operations' millisecond clock starts.
    started: Instant,
    /// The meta service: a fixed address, or the leader etcd names (followed on failure).
    meta: MetaLocator,
    timeout: Duration,
    meta_conns: Mutex<Vec<MetaConn>>,
    /// This client's session id (random, nonzero), sent with every put's allocation: when every
    /// meta connection that carried it has closed, the meta service reclaims its pending puts.
    pub(crate) client_id: u64,
    /// A meta connection held open for the client's life and never used for calls, that has
    /// announced `client_id`: pooled connections come and go (one over the pool's bound is
    /// closed), and the close of the one that carried a put's allocation must not read as the
    /// client's death. Dropped with the client (or by the process's death). Opened again before
    /// the next put once a meta call found the meta service restarted (`session_stale`).
    session: Mutex<Option<MetaConn>>,
    session_stale: std::sync::atomic::AtomicBool,
    /// The backends that move bytes, and the chooser that picks one per service.
    transports: Transports,
    busy_poll: Duration,
    /// `verify_reads`: check each get's bytes against the object's CRC-32C after the copy.
    verify_reads: bool,
    /// Test hook run between a meta reply and the first byte moved (see
    /// [`Client::set_transfer_hook`]); unset in production, where checking it is one atomic load.
    transfer_hook: OnceLock<TransferHook>,
}

/// A random, nonzero client session id: std's per-process random hash keys, mixed with the
/// process id and the clock (no extra dependency).
fn session_id() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish().max(1)
}

/// What [`Client::set_transfer_hook`] takes.
type TransferHook = Box<dyn Fn() + Send + Sync>;

impl Client {
    /// A pure client: it contributes no memory.
    pub fn connect(config: &ClientConfig) -> Result<Client> {
        Client::build(config, None)
    }

    /// A client with a local service inside its own process, contributing `local`'s pools; writes
    /// placed there (the default for this writer) are plain memory copies.
    pub fn with_local_service(config: &ClientConfig, local: &LocalConfig) -> Result<Client> {
        let svc = LocalService::start(local)?;
        Client::build(config, Some(Arc::new(svc)))
    }

    /// A client that shares a local service already running in this process (the C API starts
    /// services and the client separately); the service stops when its last user drops it.
    pub fn with_shared_local_service(
        config: &ClientConfig,
        local: Arc<LocalService>,
    ) -> Result<Client> {
        Client::build(config, Some(local))
    }

    fn build(config: &ClientConfig, embedded: Option<Arc<LocalService>>) -> Result<Client> {
        let timeout = Duration::from_millis(if config.timeout_ms == 0 {
            60_000
        } else {
            config.timeout_ms
        });
        let tls = mmc_tls::TlsContext::from_config(&config.tls)
            .map_err(|e| Error::Config(e.to_string()))?;
        let meta = MetaLocator::new(&config.meta_url)?.with_tls(tls.clone());
        let mut client = Client {
            started: Instant::now(),
            meta,
            timeout,
            meta_conns: Mutex::new(Vec::new()),
            client_id: session_id(),
            session: Mutex::new(None),
            session_stale: std::sync::atomic::AtomicBool::new(false),
            transports: Transports::new(
                embedded,
                config.transport,
                timeout,
                Duration::from_micros(config.busy_poll_us),
                config.rdma_provider,
                config.rdma_caller_memory,
                tls.clone(),
            ),
            busy_poll: Duration::from_micros(config.busy_poll_us),
            verify_reads: config.verify_reads,
            transfer_hook: OnceLock::new(),
        };
        // Prove the meta service answers now, so init fails early and clearly.
        let deadline = Instant::now() + timeout.min(Duration::from_secs(10));
        let conn = client.connect_meta(deadline).inspect_err(|e| {
            warn!(url = %config.meta_url, error = %e, "client init: meta service unreachable");
        })?;
        let meta_addr = conn.addr();
        client.put_meta_conn(conn);
        *client.session.get_mut().expect("not shared yet") = client.open_session(deadline);
        info!(meta = %meta_addr, url = %config.meta_url, rank = config.rank_id, timeout_ms = timeout.as_millis() as u64,
            embedded = client.local_rank(), verify_reads = client.verify_reads, "client connected");
        Ok(client)
    }

    /// The rank of this client's embedded local service, if it has one.
    pub fn local_rank(&self) -> Option<u32> {
        self.transports.embedded().map(|s| s.rank())
    }

    /// Test hook, not an API: `hook` runs in every put and get batch after the meta service
    /// answered (placement or lookup, with the incarnations it names) and before any byte moves.
    /// Fault tests use it to re-register or restart services while a transfer is "in flight".
    /// Set once; returns false if a hook was already set.
    #[doc(hidden)]
    pub fn set_transfer_hook(&self, hook: Box<dyn Fn() + Send + Sync>) -> bool {
        self.transfer_hook.set(hook).is_ok()
    }

    /// Run the test hook, if one is set.
    pub(crate) fn before_transfer(&self) {
        if let Some(hook) = self.transfer_hook.get() {
            hook();
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether gets check their bytes against each object's checksum (`verify_reads`).
    pub fn verify_reads(&self) -> bool {
        self.verify_reads
    }

    /// The driver's clock for the sans-IO operations: milliseconds since this client started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(crate) fn timeout_ms(&self) -> u64 {
        (self.timeout.as_millis() as u64).max(1)
    }

    /// The instant an operation's `deadline_ms` stands for.
    pub(crate) fn instant(&self, at_ms: u64) -> Instant {
        self.started + Duration::from_millis(at_ms)
    }

    pub(crate) fn sleep_until(&self, until_ms: u64) {
        std::thread::sleep(Duration::from_millis(
            until_ms.saturating_sub(self.now_ms()),
        ));
    }

    /// Carry out an operation's action other than a transfer or the end: a meta round trip, a
    /// one-way request, a back-off (a put waiting for leased space; any operation the meta
    /// service answered `Busy` while it rebuilds its directory).
    pub(crate) fn control_step(&self, op: &mut impl Operation, action: Action) {
        match action {
            Action::Meta(req) => {
                let reply = self.meta_call(&req, self.instant(op.deadline_ms()));
                op.on_meta(self.now_ms(), req, reply);
            }
            Action::MetaOneway(req) => self.send_oneway(req),
            Action::Sleep { until_ms } => self.sleep_until(until_ms),
            Action::Wait { .. } => unreachable!("the blocking driver feeds every reply"),
            Action::Transfer | Action::Done => unreachable!("handled by the operation's loop"),
        }
    }

    /// A one-way request an operation asks for: releasing read leases, reporting a suspect.
    pub(crate) fn send_oneway(&self, req: Request) {
        match req {
            Request::Release { leases } => self.release(leases),
            report @ Request::Suspect { .. } => self.oneway(report),
            other => unreachable!("no operation sends {other:?} one-way"),
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// One request, one reply, on a pooled connection. A stale pooled connection (the meta service
    /// restarted) is replaced once.
    pub(crate) fn meta_call(&self, req: &Request, deadline: Instant) -> Result<Reply> {
        let pooled = self
            .meta_conns
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
            .pop();
        let was_pooled = pooled.is_some();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect_meta(deadline)?,
        };
        match conn.call(req, deadline) {
            Ok(reply) => {
                self.put_meta_conn(conn);
                Ok(reply)
            }
            Err(Error::MetaUnreachable { .. }) if was_pooled => {
                debug!("pooled meta connection was stale: reconnecting");
                // Behind etcd: the leader may have changed; ask again.
                self.meta.forget(conn.addr());
                // The meta service restarted: the session connection died with it.
                self.session_stale
                    .store(true, std::sync::atomic::Ordering::Release);
                let mut conn = self.connect_meta(deadline)?;
                let reply = conn
                    .call(req, deadline)
                    .inspect_err(|_| self.meta.forget(conn.addr()))?;
                self.put_meta_conn(conn);
                Ok(reply)
            }
            Err(e @ Error::Remote { .. }) => {
                self.put_meta_conn(conn);
                Err(e)
            }
            Err(e) => {
                if matches!(e, Error::Timeout { .. } | Error::MetaUnreachable { .. }) {
                    // Behind etcd: a frozen leader may have been replaced; ask again next time.
                    self.meta.forget(conn.addr());
                }
                Err(e)
            }
        }
    }

    /// Before a put: open the session connection again if the meta service restarted since.
    pub(crate) fn renew_session(&self, deadline: Instant) {
        if !self
            .session_stale
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let renewed = self.open_session(deadline);
        if renewed.is_some() {
            debug!("client session connection opened again after a meta restart");
        } else {
            // Still down (a restart or a leader change in progress): try again before the next put.
            self.session_stale
                .store(true, std::sync::atomic::Ordering::Release);
        }
        *self
            .session
            .lock()
            .expect("lock poisoned: a panic left this state half-updated") = renewed;
    }

    /// Open the session connection: an allocation of no keys that names `client_id`. Best
    /// effort: without it, a pending put may be reclaimed early only if the pooled connection
    /// that carried it closes while the client lives (its commit then fails, never silently).
    fn open_session(&self, deadline: Instant) -> Option<MetaConn> {
        let mut conn = self.connect_meta(deadline).ok()?;
        let hello = Request::Alloc(AllocRequest {
            writer_rank: None,
            client_id: self.client_id,
            media: msg::MEDIA_NONE,
            policy: 0,
            replicas: 0,
            preferred: Vec::new(),
            items: Vec::new(),
        });
        match conn.call(&hello, deadline) {
            Ok(_) => Some(conn),
            Err(e) => {
                warn!(error = %e, "client session connection not opened");
                None
            }
        }
    }

    fn connect_meta(&self, deadline: Instant) -> Result<MetaConn> {
        let mut conn = self.meta.connect(deadline)?;
        conn.set_busy_poll(self.busy_poll);
        Ok(conn)
    }

    fn put_meta_conn(&self, conn: MetaConn) {
        let mut pool = self
            .meta_conns
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        if pool.len() < META_CONNS_IDLE_MAX {
            pool.push(conn);
        }
    }

    /// Fire-and-forget lease release.
    pub(crate) fn release(&self, leases: Vec<u64>) {
        if leases.is_empty() {
            return;
        }
        self.oneway(Request::Release { leases });
    }

    /// Fire-and-forget: the meta service acts on it or not, nothing waits for it.
    fn oneway(&self, req: Request) {
        let deadline = Instant::now() + Duration::from_secs(1);
        let pooled = self
            .meta_conns
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
            .pop();
        let conn = match pooled {
            Some(c) => Ok(c),
            None => self.connect_meta(deadline),
        };
        match conn.and_then(|mut c| c.send_oneway(&req, deadline).map(|_| c)) {
            Ok(c) => self.put_meta_conn(c),
            // Leases expire on their own, a suspect's lease runs out: nothing is lost but time.
            Err(e) => debug!(error = %e, "one-way request not sent"),
        }
    }

    /// Ranks of the same-host local services whose pools this client has mapped (and uses instead
    /// of TCP).
    pub fn mapped_services(&self) -> Vec<u32> {
        self.transports.mapped_services()
    }

    /// The RDMA device's fabric, when this client has one (`sim:<host>` for the simulated NIC).
    pub fn rdma_fabric(&self) -> Option<String> {
        self.transports.rdma().map(|r| r.fabric().to_string())
    }

    /// The application will pass memory at `addr..addr + len` to calls again and again (Python's
    /// `register_buffer`): with RDMA it is registered with the device on first use and the
    /// registration is kept (a cache hit per later call) until [`Client::unregister_memory`].
    /// Any memory works without this; other memory is registered per call.
    pub fn register_memory(&self, addr: usize, len: usize) {
        if let Some(r) = self.transports.rdma() {
            r.register_memory(addr as u64, len as u64);
        }
    }

    /// The memory given to [`Client::register_memory`] at `addr` may be freed now: its RDMA
    /// registration goes (the cache's invalidation).
    pub fn unregister_memory(&self, addr: usize, len: usize) {
        if let Some(r) = self.transports.rdma() {
            r.unregister_memory(addr as u64, len as u64);
        }
    }

    /// The RDMA backend's caller-memory counters (`None` without a device).
    pub fn rdma_mr_stats(&self) -> Option<crate::MrStats> {
        self.transports.rdma().map(|r| r.mr_stats())
    }

    /// Mapped same-host pools whose page tables are still being populated in the background
    /// (see the shm transport); 0 once every mapping is populated.
    pub fn pools_populating(&self) -> usize {
        self.transports.pools_populating()
    }

    // ---- Keyed metadata operations -------------------------------------------------------------

    /// Run one metadata call (exist, query, remove) through its sans-IO core.
    fn meta_op(&self, kind: MetaKind, keys: &[&str]) -> Result<Vec<Result<Info>>> {
        let mut op = MetaOp::new(kind, keys, self.now_ms(), self.timeout_ms())?;
        loop {
            match op.poll(self.now_ms()) {
                Action::Done => return op.results(),
                Action::Transfer => unreachable!("a metadata call moves no bytes"),
                other => self.control_step(&mut op, other),
            }
        }
    }

    /// Size and replicas of each key.
    pub fn batch_query(&self, keys: &[&str]) -> Result<Vec<Result<ObjectInfo>>> {
        Ok(self
            .meta_op(MetaKind::Query, keys)?
            .into_iter()
            .map(|r| {
                r.map(|i| ObjectInfo {
                    size: i.size,
                    replicas: i.replicas,
                })
            })
            .collect())
    }

    pub fn query(&self, key: &str) -> Result<ObjectInfo> {
        self.batch_query(&[key])?.remove(0)
    }

    /// `Ok(())` per key when present, `Err(NotFound)` when not.
    pub fn batch_exist(&self, keys: &[&str]) -> Result<Vec<Result<()>>> {
        Ok(self
            .meta_op(MetaKind::Exist, keys)?
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect())
    }

    pub fn exist(&self, key: &str) -> Result<()> {
        self.batch_exist(&[key])?.remove(0)
    }

    pub fn batch_remove(&self, keys: &[&str]) -> Result<Vec<Result<()>>> {
        Ok(self
            .meta_op(MetaKind::Remove, keys)?
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect())
    }

    pub fn remove(&self, key: &str) -> Result<()> {
        self.batch_remove(&[key])?.remove(0)
    }

    /// Remove every committed object in the cluster; returns how many. While a restarted meta
    /// service rebuilds its directory it waits (within the client's timeout), so that no object
    /// of a service that has not rejoined yet survives.
    pub fn remove_all(&self) -> Result<u64> {
        let deadline = self.deadline();
        loop {
            match self.meta_call(&Request::RemoveAll, deadline)? {
                Reply::Removed { count } => return Ok(count),
                Reply::Busy { retry_ms, message } => {
                    let wake = Instant::now() + Duration::from_millis(retry_ms.clamp(1, 200));
                    if wake >= deadline {
                        return Err(Error::Timeout {
                            ms: self.timeout.as_millis() as u64,
                            what: format!("remove_all: {message}"),
                        });
                    }
                    std::thread::sleep(wake - Instant::now());
                }
                Reply::Error { code, message } => {
                    return Err(Error::Remote {
                        code: mmc_controlplane::Code::from_i32(code),
                        context: message,
                    })
                }
                other => return Err(unexpected(&other)),
            }
        }
    }

    /// Local services, their pools and use, and object counts.
    pub fn status(&self) -> Result<msg::Status> {
        match self.meta_call(&Request::Status, self.deadline())? {
            Reply::Status(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }
}
