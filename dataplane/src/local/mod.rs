//! The local service: owns the pools (a DRAM arena, and an HBM pool through a host-backed stand-in
//! until device backends land), registers them with the meta service as segments, heartbeats, and
//! serves scatter-gather reads and writes against them on its own TCP data endpoint.
//!
//! It runs as its own process (`mmc-local`) or inside a client's process (embedded): then the
//! client copies into its own pools directly, with no socket in between.

mod data_server;
mod shards;
pub(crate) mod shm_server;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mmc_controlplane::config::parse_tcp_url;
use mmc_controlplane::msg::{self, Register, Reply, Request, SegmentSpec};
use mmc_controlplane::rpc::MetaConn;
use mmc_controlplane::{Code, Error, Result};
use mmc_hal::Arena;
use tracing::{info, warn};

use crate::config::LocalConfig;

/// How long start-up waits for the meta service to answer the registration.
const REGISTER_TIMEOUT_MS: u64 = 10_000;

/// One pool and the segment id the meta service gave it.
pub(crate) struct Pool {
    pub(crate) media: u16,
    pub(crate) arena: Arena,
}

#[derive(Clone, Debug)]
pub(crate) struct Membership {
    pub(crate) rank: u32,
    pub(crate) incarnation: u64,
    /// Segment id of each pool, in pool order.
    pub(crate) segments: Vec<u32>,
    /// How often the meta service wants to hear from this service.
    pub(crate) heartbeat_ms: u64,
}

pub(crate) struct Inner {
    pub(crate) pools: Vec<Pool>,
    pub(crate) membership: RwLock<Membership>,
    pub(crate) stop: AtomicBool,
    pub(crate) conns: Mutex<HashMap<u64, TcpStream>>,
    /// Busy-poll for each next request this long before blocking.
    pub(crate) busy_poll: Duration,
    meta_addr: SocketAddr,
    register: Register,
}

impl Inner {
    /// The pool index that holds `segment`, under the current membership.
    pub(crate) fn pool_index(&self, segment: u32) -> Option<usize> {
        let m = self.membership.read().unwrap_or_else(|p| p.into_inner());
        m.segments.iter().position(|s| *s == segment)
    }

    fn register(&self, deadline: Instant) -> Result<Membership> {
        let mut conn = MetaConn::connect(self.meta_addr, deadline)?;
        match conn.call(&Request::Register(self.register.clone()), deadline)? {
            Reply::Registered {
                rank,
                incarnation,
                segments,
                heartbeat_ms,
            } if segments.len() == self.pools.len() => Ok(Membership {
                rank,
                incarnation,
                segments,
                heartbeat_ms,
            }),
            other => Err(Error::Protocol(format!(
                "unexpected reply to register: {other:?}"
            ))),
        }
    }
}

/// A running local service. Dropping it unregisters, stops its threads and frees its pools.
pub struct LocalService {
    inner: Arc<Inner>,
    data_addr: SocketAddr,
    shm_endpoint: String,
    threads: Mutex<Vec<JoinHandle<()>>>,
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
        let meta_addr =
            parse_tcp_url(&config.meta_url).map_err(|e| Error::Config(e.to_string()))?;
        let listen = parse_tcp_url(&config.data_url).map_err(|e| Error::Config(e.to_string()))?;
        let mut pools = Vec::new();
        for (media, bytes) in [
            (msg::MEDIA_DRAM, config.dram_bytes),
            (msg::MEDIA_HBM, config.hbm_bytes),
        ] {
            if bytes == 0 {
                continue;
            }
            if media == msg::MEDIA_HBM {
                info!(
                    bytes,
                    "HBM pool: no device backend in this build, using a host-backed stand-in"
                );
            }
            let name = format!(
                "mmc-{}-{}-{}",
                msg::media_name(media).to_lowercase(),
                std::process::id(),
                config.create_id
            );
            let arena = Arena::new(&name, bytes, config.prefault)
                .map_err(|e| Error::Memory(e.to_string()))?;
            pools.push(Pool { media, arena });
        }
        let listener = TcpListener::bind(listen)
            .map_err(|e| Error::io(format!("bind the data endpoint {listen}"), e))?;
        let data_addr = listener
            .local_addr()
            .map_err(|e| Error::io("local_addr", e))?;
        let advertise = if config.advertise_url.is_empty() {
            data_addr.to_string()
        } else {
            parse_tcp_url(&config.advertise_url)
                .map_err(|e| Error::Config(e.to_string()))?
                .to_string()
        };
        let (shm_listener, shm_endpoint) =
            shm_server::bind().map_err(|e| Error::io("bind the shm endpoint", e))?;
        let register = Register {
            rank: config.rank_id,
            create_id: config.create_id,
            host: host_id(),
            data_endpoint: advertise,
            shm_endpoint: shm_endpoint.clone(),
            segments: pools
                .iter()
                .map(|p| SegmentSpec {
                    media: p.media,
                    capacity: p.arena.len(),
                })
                .collect(),
        };
        let mut inner = Inner {
            pools,
            membership: RwLock::new(Membership {
                rank: u32::MAX,
                incarnation: 0,
                segments: Vec::new(),
                heartbeat_ms: config.heartbeat_ms,
            }),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            busy_poll: Duration::from_micros(config.busy_poll_us),
            meta_addr,
            register,
        };
        let deadline = Instant::now() + Duration::from_millis(REGISTER_TIMEOUT_MS);
        let membership = inner.register(deadline)?;
        let membership_heartbeat = membership.heartbeat_ms;
        info!(rank = membership.rank, incarnation = membership.incarnation, %data_addr,
            segments = ?membership.segments, "local service registered with the meta service");
        *inner
            .membership
            .get_mut()
            .unwrap_or_else(|p| p.into_inner()) = membership;
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
        let i = inner.clone();
        threads.push(spawn("mmc-local-shm", move || {
            shm_server::accept_loop(shm_listener, i)
        }));
        let i = inner.clone();
        // The meta service's pace wins when it is faster (a short member timeout).
        let heartbeat_ms = config.heartbeat_ms.min(membership_heartbeat).max(10);
        threads.push(spawn("mmc-local-heartbeat", move || {
            heartbeat_loop(&i, heartbeat_ms)
        }));
        Ok(LocalService {
            inner,
            data_addr,
            shm_endpoint,
            threads: Mutex::new(threads),
        })
    }

    /// The rank the meta service knows this service by.
    pub fn rank(&self) -> u32 {
        self.inner
            .membership
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .rank
    }

    pub fn data_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The meta service this local service registered with.
    pub fn meta_addr(&self) -> SocketAddr {
        self.inner.meta_addr
    }

    /// Copy `src` into the pool that holds `segment` (the embedded client's fast path).
    pub(crate) fn copy_in(&self, segment: u32, offset: u64, src: &[u8]) -> Result<()> {
        let pool = self.pool(segment)?;
        pool.arena
            .copy_in(offset, src)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Copy out of the pool that holds `segment` into `dst`.
    pub(crate) fn copy_out(&self, segment: u32, offset: u64, dst: &mut [u8]) -> Result<()> {
        let pool = self.pool(segment)?;
        pool.arena
            .copy_out(offset, dst)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    fn pool(&self, segment: u32) -> Result<&Pool> {
        let i = self
            .inner
            .pool_index(segment)
            .ok_or_else(|| Error::Remote {
                code: Code::LinkNotFound,
                context: format!("segment {segment} is not served here (re-registered?)"),
            })?;
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
        let m = self
            .inner
            .membership
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let deadline = Instant::now() + Duration::from_millis(1000);
        if let Ok(mut conn) = MetaConn::connect(self.inner.meta_addr, deadline) {
            let _ = conn.call(
                &Request::Unregister {
                    rank: m.rank,
                    incarnation: m.incarnation,
                },
                deadline,
            );
        }
        let _ = TcpStream::connect_timeout(&self.data_addr, Duration::from_millis(200));
        let _ = shm_server::connect(&self.shm_endpoint, Duration::from_millis(200));
        for c in self
            .inner
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            let _ = c.1.shutdown(std::net::Shutdown::Both);
        }
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for t in threads {
            let _ = t.join();
        }
        info!(rank = m.rank, "local service stopped");
    }
}

impl Drop for LocalService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn a local service thread")
}

/// Heartbeat until stopped; re-register when the meta service no longer knows this incarnation
/// (it restarted, or declared this service dead).
fn heartbeat_loop(inner: &Inner, heartbeat_ms: u64) {
    let mut conn: Option<MetaConn> = None;
    let tick = Duration::from_millis(heartbeat_ms);
    let mut next = Instant::now() + tick;
    while !inner.stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(20).min(tick));
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + tick;
        let deadline = Instant::now() + tick.max(Duration::from_millis(500));
        let m = inner
            .membership
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if conn.is_none() {
            conn = MetaConn::connect(inner.meta_addr, deadline).ok();
        }
        let Some(c) = conn.as_mut() else {
            warn!("meta service unreachable: heartbeat skipped");
            continue;
        };
        let req = Request::Heartbeat {
            rank: m.rank,
            incarnation: m.incarnation,
        };
        match c.call(&req, deadline) {
            Ok(Reply::Ack { code: 0 }) => {}
            Ok(Reply::Ack { code }) => {
                warn!(
                    code,
                    rank = m.rank,
                    "meta service does not know this incarnation: registering again"
                );
                match inner.register(deadline) {
                    Ok(new) => {
                        info!(
                            rank = new.rank,
                            incarnation = new.incarnation,
                            "registered again"
                        );
                        *inner.membership.write().unwrap_or_else(|p| p.into_inner()) = new;
                    }
                    Err(e) => warn!(error = %e, "re-registration failed"),
                }
            }
            Ok(other) => warn!(?other, "unexpected heartbeat reply"),
            Err(e) => {
                warn!(error = %e, "heartbeat failed");
                conn = None;
            }
        }
    }
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
