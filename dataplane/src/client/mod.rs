//! The MemCache client: the Rust API that the C and Python layers wrap.
//!
//! Every call is bounded by the configured timeout. A batch costs one meta round trip per phase
//! (alloc + commit for puts, lookup for gets); bytes move directly between the caller's buffers and
//! the local services that hold them: plain copies for the client's own embedded local service,
//! one vectored TCP request per other local service, those in parallel.

mod get;
mod put;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mmc_controlplane::config::parse_tcp_url;
use mmc_controlplane::msg::{self, Replica, Reply, Request, ServiceAddr};
use mmc_controlplane::rpc::MetaConn;
use mmc_controlplane::{Code, Error, Result};
use tracing::{debug, info, warn};

use crate::config::DataOpType;
use crate::config::{ClientConfig, LocalConfig};
use crate::local::LocalService;
use crate::shm::ShmMap;
use crate::transfer::DataConn;
use mmc_core::fence::Fence;

/// Idle connections kept per local service.
const DATA_CONNS_IDLE_MAX: usize = 16;
/// Idle connections kept to the meta service.
const META_CONNS_IDLE_MAX: usize = 16;

/// TCP connections one batch may use in parallel towards one local service.
const TCP_LANES: usize = 2;
/// A service's first lane carries at least this many bytes of a batch before a second one opens:
/// small batches stay on one connection, large ones use more than one TCP stream.
const LANE_BYTES_MIN: u64 = 4 << 20;

/// Spreads the objects of one batch bound for one service over up to [`TCP_LANES`] connections,
/// balancing their bytes.
#[derive(Default)]
pub(crate) struct Lanes {
    bytes: HashMap<u32, [u64; TCP_LANES]>,
}

impl Lanes {
    /// The lane for the next object of `size` bytes bound for `rank`.
    pub(crate) fn pick(&mut self, rank: u32, size: u64) -> usize {
        let lanes = self.bytes.entry(rank).or_default();
        let lane = if lanes[0] < LANE_BYTES_MIN {
            0
        } else {
            (0..TCP_LANES).min_by_key(|l| lanes[*l]).unwrap_or(0)
        };
        lanes[lane] += size;
        lane
    }
}

/// Where and how to place a put (`mmc_put_options`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOptions {
    /// `MEDIA_HBM`, `MEDIA_DRAM`, or `MEDIA_NONE` (the highest tier with room).
    pub media: u16,
    /// `NATIVE_AFFINITY` or `PREFERRED_AFFINITY`.
    pub policy: u16,
    /// 0 or 1 = one copy; at most 8, each on a different local service.
    pub replicas: u16,
    /// Local service ids for `PREFERRED_AFFINITY` (negative entries ignored).
    pub preferred: Vec<i32>,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            media: msg::MEDIA_NONE,
            policy: msg::NATIVE_AFFINITY,
            replicas: 1,
            preferred: Vec::new(),
        }
    }
}

/// What `query` tells about an object (`mmc_data_info` / `mmc_location_t`).
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectInfo {
    pub size: u64,
    pub replicas: Vec<Replica>,
}

/// A connected client. Cheap to share between threads (`&Client` is enough for every call).
pub struct Client {
    meta_addr: SocketAddr,
    timeout: Duration,
    meta_conns: Mutex<Vec<MetaConn>>,
    data_conns: Mutex<HashMap<String, Vec<DataConn>>>,
    embedded: Option<Arc<LocalService>>,
    transport: Option<DataOpType>,
    busy_poll: Duration,
    host: String,
    /// Same-host local services' pools, mapped: rank -> (incarnation, mapping or None if it failed).
    shm_maps: Mutex<HashMap<u32, ShmEntry>>,
    /// Test hook run between a meta reply and the first byte moved (see
    /// [`Client::set_transfer_hook`]); unset in production, where checking it is one atomic load.
    transfer_hook: OnceLock<TransferHook>,
}

/// What [`Client::set_transfer_hook`] takes.
type TransferHook = Box<dyn Fn() + Send + Sync>;

/// A same-host service's incarnation and its mapped pools (`None`: mapping failed, use TCP).
type ShmEntry = (u64, Option<Arc<ShmMap>>);

/// A pool this client copies into and out of itself, and the fence the copies are checked
/// against (the rank and incarnation the meta service named; the segment is per copy).
pub(crate) enum Direct<'a> {
    /// The client's own embedded local service.
    Embedded(&'a LocalService, Fence),
    /// A same-host local service's pools, mapped.
    Shm(Arc<ShmMap>, Fence),
}

impl Direct<'_> {
    pub(crate) fn copy_in(&self, segment: u32, offset: u64, src: &[u8]) -> Result<()> {
        match self {
            Direct::Embedded(svc, f) => svc.copy_in(Fence { segment, ..*f }, offset, src),
            Direct::Shm(map, f) => map.copy_in(Fence { segment, ..*f }, offset, src),
        }
    }

    pub(crate) fn copy_out(&self, segment: u32, offset: u64, dst: &mut [u8]) -> Result<()> {
        match self {
            Direct::Embedded(svc, f) => svc.copy_out(Fence { segment, ..*f }, offset, dst),
            Direct::Shm(map, f) => map.copy_out(Fence { segment, ..*f }, offset, dst),
        }
    }
}

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
        let meta_addr =
            parse_tcp_url(&config.meta_url).map_err(|e| Error::Config(e.to_string()))?;
        let timeout = Duration::from_millis(if config.timeout_ms == 0 {
            60_000
        } else {
            config.timeout_ms
        });
        let client = Client {
            meta_addr,
            timeout,
            meta_conns: Mutex::new(Vec::new()),
            data_conns: Mutex::new(HashMap::new()),
            embedded,
            transport: config.transport,
            busy_poll: Duration::from_micros(config.busy_poll_us),
            host: crate::local::host_id(),
            shm_maps: Mutex::new(HashMap::new()),
            transfer_hook: OnceLock::new(),
        };
        // Prove the meta service answers now, so init fails early and clearly.
        let deadline = Instant::now() + timeout.min(Duration::from_secs(10));
        let conn = MetaConn::connect(meta_addr, deadline).inspect_err(|e| {
            warn!(url = %config.meta_url, error = %e, "client init: meta service unreachable");
        })?;
        client.put_meta_conn(conn);
        info!(meta = %meta_addr, rank = config.rank_id, timeout_ms = timeout.as_millis() as u64,
            embedded = client.embedded.as_ref().map(|s| s.rank()), "client connected");
        Ok(client)
    }

    /// The rank of this client's embedded local service, if it has one.
    pub fn local_rank(&self) -> Option<u32> {
        self.embedded.as_ref().map(|s| s.rank())
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

    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// One request, one reply, on a pooled connection. A stale pooled connection (the meta service
    /// restarted) is replaced once.
    pub(crate) fn meta_call(&self, req: &Request, deadline: Instant) -> Result<Reply> {
        let pooled = self
            .meta_conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
                let mut conn = self.connect_meta(deadline)?;
                let reply = conn.call(req, deadline)?;
                self.put_meta_conn(conn);
                Ok(reply)
            }
            Err(e @ Error::Remote { .. }) => {
                self.put_meta_conn(conn);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn connect_meta(&self, deadline: Instant) -> Result<MetaConn> {
        let mut conn = MetaConn::connect(self.meta_addr, deadline)?;
        conn.set_busy_poll(self.busy_poll);
        Ok(conn)
    }

    fn put_meta_conn(&self, conn: MetaConn) {
        let mut pool = self.meta_conns.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < META_CONNS_IDLE_MAX {
            pool.push(conn);
        }
    }

    /// Fire-and-forget lease release.
    pub(crate) fn release(&self, leases: Vec<u64>) {
        if leases.is_empty() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let pooled = self
            .meta_conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match pooled {
            Some(c) => Ok(c),
            None => self.connect_meta(deadline),
        };
        match conn.and_then(|mut c| {
            c.send_oneway(&Request::Release { leases }, deadline)
                .map(|_| c)
        }) {
            Ok(c) => self.put_meta_conn(c),
            // The leases expire on their own; nothing is lost but reuse of space for a while.
            Err(e) => debug!(error = %e, "lease release not sent"),
        }
    }

    pub(crate) fn take_data_conn(&self, endpoint: &str, deadline: Instant) -> Result<DataConn> {
        let pooled = self
            .data_conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(endpoint)
            .and_then(|v| v.pop());
        match pooled {
            Some(c) => Ok(c),
            None => DataConn::connect(endpoint, deadline, self.busy_poll),
        }
    }

    pub(crate) fn give_data_conn(&self, conn: DataConn) {
        let mut pool = self.data_conns.lock().unwrap_or_else(|p| p.into_inner());
        let v = pool.entry(conn.endpoint().to_string()).or_default();
        if v.len() < DATA_CONNS_IDLE_MAX {
            v.push(conn);
        }
    }

    /// Ranks of the same-host local services whose pools this client has mapped (and uses instead
    /// of TCP).
    pub fn mapped_services(&self) -> Vec<u32> {
        let maps = self.shm_maps.lock().unwrap_or_else(|p| p.into_inner());
        let mut ranks: Vec<u32> = maps
            .iter()
            .filter(|(_, (_, m))| m.is_some())
            .map(|(r, _)| *r)
            .collect();
        ranks.sort_unstable();
        ranks
    }

    /// The fastest way to reach `rank`'s `segment` without a socket, if there is one: the client's
    /// own pool, or (same host, unless the transport is forced to TCP) the service's mapped pools.
    /// `alive` holds the ranks whose liveness this call already confirmed: one probe per service
    /// per batch, not one per key.
    pub(crate) fn direct(
        &self,
        rank: u32,
        segment: u32,
        services: &[ServiceAddr],
        alive: &mut Vec<u32>,
    ) -> Option<Direct<'_>> {
        let addr = services.iter().find(|s| s.rank == rank)?;
        let fence = Fence {
            rank,
            incarnation: addr.incarnation,
            segment,
        };
        if let Some(svc) = self.embedded.as_deref().filter(|s| s.rank() == rank) {
            return Some(Direct::Embedded(svc, fence));
        }
        if self.transport == Some(DataOpType::Tcp) {
            return None;
        }
        if addr.host != self.host || addr.shm_endpoint.is_empty() {
            return None;
        }
        let mut maps = self.shm_maps.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = match maps.get(&rank) {
            Some((inc, map)) if *inc == addr.incarnation => map.clone(),
            _ => {
                let map = match ShmMap::open(addr, self.timeout.min(Duration::from_secs(5))) {
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
        let map = fresh?;
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
            return Some(Direct::Shm(map, fence));
        }
        if !alive.contains(&rank) {
            if !map.alive() {
                // The service is gone: unmap, and let TCP report it unreachable.
                maps.remove(&rank);
                return None;
            }
            alive.push(rank);
        }
        map.arena(segment)?;
        Some(Direct::Shm(map, fence))
    }

    // ---- Keyed metadata operations -------------------------------------------------------------

    /// Size and replicas of each key.
    pub fn batch_query(&self, keys: &[&str]) -> Result<Vec<Result<ObjectInfo>>> {
        let checked = check_keys(keys)?;
        let deadline = self.deadline();
        let valid: Vec<String> = checked.iter().flatten().map(|k| k.to_string()).collect();
        let mut items = match self.meta_call(&Request::Query { keys: valid }, deadline)? {
            Reply::Query { items } => items.into_iter(),
            other => return Err(unexpected(&other)),
        };
        Ok(checked
            .iter()
            .map(|k| match k {
                Err(e) => Err(e.clone_error()),
                Ok(key) => {
                    let item = items.next().expect("one item per key");
                    match item.code {
                        0 => Ok(ObjectInfo {
                            size: item.size,
                            replicas: item.replicas,
                        }),
                        code => Err(key_error(code, key)),
                    }
                }
            })
            .collect())
    }

    pub fn query(&self, key: &str) -> Result<ObjectInfo> {
        self.batch_query(&[key])?.remove(0)
    }

    /// `Ok(())` per key when present, `Err(NotFound)` when not.
    pub fn batch_exist(&self, keys: &[&str]) -> Result<Vec<Result<()>>> {
        self.batch_codes(keys, |keys| Request::Exist { keys })
    }

    pub fn exist(&self, key: &str) -> Result<()> {
        self.batch_exist(&[key])?.remove(0)
    }

    pub fn batch_remove(&self, keys: &[&str]) -> Result<Vec<Result<()>>> {
        self.batch_codes(keys, |keys| Request::Remove { keys })
    }

    pub fn remove(&self, key: &str) -> Result<()> {
        self.batch_remove(&[key])?.remove(0)
    }

    fn batch_codes(
        &self,
        keys: &[&str],
        req: impl FnOnce(Vec<String>) -> Request,
    ) -> Result<Vec<Result<()>>> {
        let checked = check_keys(keys)?;
        let valid: Vec<String> = checked.iter().flatten().map(|k| k.to_string()).collect();
        let mut codes = match self.meta_call(&req(valid), self.deadline())? {
            Reply::Codes { codes } => codes.into_iter(),
            other => return Err(unexpected(&other)),
        };
        Ok(checked
            .iter()
            .map(|k| match k {
                Err(e) => Err(e.clone_error()),
                Ok(key) => match codes.next().expect("one code per key") {
                    0 => Ok(()),
                    code => Err(key_error(code, key)),
                },
            })
            .collect())
    }

    /// Local services, their pools and use, and object counts.
    pub fn status(&self) -> Result<msg::Status> {
        match self.meta_call(&Request::Status, self.deadline())? {
            Reply::Status(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }
}

/// Keys of one batch: `Err` for a key the contract refuses; `Err` for the whole batch when it has
/// too many keys.
pub(crate) fn check_keys<'a>(keys: &[&'a str]) -> Result<Vec<Result<&'a str>>> {
    if keys.len() > msg::BATCH_KEYS_MAX {
        warn!(
            keys = keys.len(),
            max = msg::BATCH_KEYS_MAX,
            "batch refused: too many keys"
        );
        return Err(Error::InvalidParam(format!(
            "{} keys in one batch, the limit is {}",
            keys.len(),
            msg::BATCH_KEYS_MAX
        )));
    }
    Ok(keys.iter().map(|k| check_key(k).map(|_| *k)).collect())
}

pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > msg::KEY_BYTES_MAX {
        warn!(key, len = key.len(), "invalid key: must be 1 to 255 bytes");
        return Err(Error::InvalidParam(format!(
            "key of {} bytes: keys are 1 to 255 bytes",
            key.len()
        )));
    }
    Ok(())
}

/// The typed error for a documented per-key code.
pub(crate) fn key_error(code: i32, key: &str) -> Error {
    let e = match Code::from_i32(code) {
        Code::DuplicatedObject => Error::Exists { key: key.into() },
        Code::ObjectNotExists => Error::NotFound { key: key.into() },
        Code::InvalidParam => {
            Error::InvalidParam(format!("key {key:?} refused by the meta service"))
        }
        c => Error::Remote {
            code: c,
            context: format!("key {key:?}"),
        },
    };
    match e {
        Error::NotFound { .. } | Error::Exists { .. } => debug!(key, code, "{e}"),
        _ => warn!(key, code, "{e}"),
    }
    e
}

pub(crate) fn unexpected(reply: &Reply) -> Error {
    Error::Protocol(format!("unexpected reply from the meta service: {reply:?}"))
}

/// Errors are not `Clone` (they may hold an `io::Error`); one failure shared by many keys is
/// re-created with the same code and message.
pub(crate) trait CloneError {
    fn clone_error(&self) -> Error;
}

impl CloneError for Error {
    fn clone_error(&self) -> Error {
        match self {
            Error::InvalidParam(s) => Error::InvalidParam(s.clone()),
            Error::Exists { key } => Error::Exists { key: key.clone() },
            Error::NotFound { key } => Error::NotFound { key: key.clone() },
            Error::NoSpace { bytes, media } => Error::NoSpace {
                bytes: *bytes,
                media,
            },
            Error::Timeout { ms, what } => Error::Timeout {
                ms: *ms,
                what: what.clone(),
            },
            Error::MetaUnreachable { url, reason } => Error::MetaUnreachable {
                url: url.clone(),
                reason: reason.clone(),
            },
            Error::LocalUnreachable { endpoint, reason } => Error::LocalUnreachable {
                endpoint: endpoint.clone(),
                reason: reason.clone(),
            },
            e => Error::Remote {
                code: e.code(),
                context: e.to_string(),
            },
        }
    }
}
