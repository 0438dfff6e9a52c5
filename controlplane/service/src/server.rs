//! The meta service's driver: a TCP listener, one thread per connection, and a ticker, around the
//! sans-IO [`MetaCore`]. Optionally an HTTP endpoint with `/health` and `/metrics`.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rkyv::util::AlignedVec;
use tracing::{debug, info, warn};

use mmc_config::{parse_tcp_url, MetaConfig};
use mmc_controlplane::error::{Error, Result};
use mmc_controlplane::meta::{MetaCore, MetaParams, EPOCH_MAX};
use mmc_controlplane::msg::{ArchivedRequest, Reply, Request};
use mmc_controlplane::wire::{self, Kind, WireError};

use crate::metrics::{self, OpStats, Snapshot};
use crate::obs::{self, HttpEndpoint, Scrape, Source};
use crate::probe::{self, Outcome, ProbeSettings, Prober};
use mmc_tls::{secure, Stream, TlsContext};

/// How often the ticker expires leases, reclaims pending puts and checks heartbeats.
const TICK_MS: u64 = 100;
/// Open connections (each has a thread); more are refused until some close.
const CONNS_MAX: usize = 4096;

struct Shared {
    /// Written by every request but `Exist` and `Query`, which read it together (see the core's
    /// `read.rs`).
    core: RwLock<MetaCore>,
    started: Instant,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
    /// rank -> (connection id, incarnation) of the connection that last carried the rank's
    /// registration or heartbeat. When that connection closes, the core hears that the member's
    /// connection was lost; a connection the service has since replaced is not counted.
    carriers: Mutex<HashMap<u32, (u64, u64)>>,
    /// client session id -> how many open connections carried it (an allocation naming it).
    /// When the last one closes the client is gone and the core reclaims its pending puts.
    clients: Mutex<HashMap<u64, usize>>,
    /// `suspect_on_close`: a closed heartbeat connection pauses its member.
    suspect_on_close: bool,
    /// Probes of members paused by a hint (`probe_dead`).
    prober: Prober,
    /// `[tls]`: every connection must complete a mutual TLS handshake first.
    tls: Option<Arc<TlsContext>>,
    /// Requests are served until this many ms after `started` (u64::MAX: always). An elected
    /// leader sets it to where its etcd lease may have lapsed, so a leader frozen past its lease
    /// closes the connections it finds on waking instead of answering (see [`crate::ha`]).
    serve_until_ms: AtomicU64,
    /// Requests by type and outcome, and their latency (for `/metrics`).
    ops: OpStats,
}

/// What a poisoned core lock means: crash rather than serve a half-updated directory.
const POISONED: &str = "meta core lock poisoned: a panic left the meta core half-updated";

impl Shared {
    /// Milliseconds since start. Read it while holding the core's lock, so the core never sees
    /// time run backwards between two calls.
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Run `f` on the core at the current time, under its lock.
    fn with_core<T>(&self, f: impl FnOnce(&mut MetaCore, u64) -> T) -> T {
        let mut core = self.core.write().expect(POISONED);
        let now = self.now_ms();
        f(&mut core, now)
    }

    /// Run `f` on a shared borrow of the core, under the read side of its lock (with other
    /// readers).
    fn with_core_read<T>(&self, f: impl FnOnce(&MetaCore, u64) -> T) -> T {
        let core = self.core.read().expect(POISONED);
        let now = self.now_ms();
        f(&core, now)
    }
}

/// This run's epoch for incarnation numbers: wall-clock milliseconds since the UNIX epoch, so
/// incarnations handed out after a restart are above every one handed out before it.
pub fn epoch_now() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => u64::try_from(d.as_millis())
            .unwrap_or(u64::MAX)
            .min(EPOCH_MAX),
        Err(e) => {
            warn!(error = %e, "wall clock before 1970: incarnations may repeat those of an earlier run");
            0
        }
    }
}

/// A running meta service. Dropping it stops it and joins its threads.
pub struct MetaServer {
    addr: SocketAddr,
    /// `/metrics` and `/health` (when `metrics_url` is set).
    metrics: Option<HttpEndpoint>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// How the driver probes suspects, from a validated config (None: `probe_dead = false`).
pub fn probe_settings(c: &MetaConfig) -> Option<ProbeSettings> {
    c.probe_dead.then(|| ProbeSettings {
        attempts: c.probe_attempts,
        interval: Duration::from_millis(c.probe_interval_ms),
    })
}

/// The meta core's tunables from a validated config; `epoch` is 0: [`MetaServer::start`] sets it
/// from the wall clock.
pub fn meta_params(c: &MetaConfig) -> MetaParams {
    MetaParams {
        epoch: 0,
        lease_ms: c.lease_ms,
        pending_timeout_ms: c.pending_timeout_ms,
        member_timeout_ms: c.member_timeout_ms,
        member_grace_ms: c.member_grace_ms,
        rebuild_window_ms: c.rebuild_window_ms,
        best_effort_replicas: c.replica_policy == mmc_config::ReplicaPolicy::BestEffort,
        // Half a timeout, but well above the ticker's period: a late tick is not a stall.
        meta_stall_ms: (c.member_timeout_ms / 2).max(4 * TICK_MS),
        heartbeat_ms: c.heartbeat_period_ms(),
        evict_threshold_high: c.evict_threshold_high,
        evict_threshold_low: c.evict_threshold_low,
        index_batch_max: mmc_controlplane::msg::INDEX_CHANGES_MAX,
        index_outbox_max: mmc_controlplane::meta::INDEX_OUTBOX_MAX,
    }
}

impl MetaServer {
    /// A single meta service. Refused when `etcd_url` is set: a highly available one serves only
    /// while elected ([`crate::ha::run`], which `mmc-meta` runs).
    pub fn start(config: &MetaConfig) -> Result<MetaServer> {
        if !config.etcd_url.is_empty() {
            return Err(Error::Config(format!(
                "etcd_url is set ({}): a highly available meta service runs through \
                 mmc_meta_service::ha::run (mmc-meta), not as a single server",
                config.etcd_url
            )));
        }
        MetaServer::start_with_epoch(config, epoch_now())
    }

    /// [`MetaServer::start`] with the epoch its incarnations, put tokens and lease ids start from
    /// (an elected leader's, kept monotonic across leaders in etcd: see [`crate::ha`]).
    pub fn start_with_epoch(config: &MetaConfig, epoch: u64) -> Result<MetaServer> {
        config
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        let addr = parse_tcp_url(&config.listen_url).map_err(|e| Error::Config(e.to_string()))?;
        let tls = TlsContext::from_config(&config.tls).map_err(|e| Error::Config(e.to_string()))?;
        let listener = TcpListener::bind(addr)
            .map_err(|e| Error::io(format!("bind the meta service to {addr}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("local_addr", e))?;
        let shared = Arc::new(Shared {
            core: RwLock::new(MetaCore::new(MetaParams {
                epoch: epoch.min(EPOCH_MAX),
                ..meta_params(config)
            })),
            started: Instant::now(),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            carriers: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            suspect_on_close: config.suspect_on_close,
            prober: Prober::new(probe_settings(config)),
            tls,
            serve_until_ms: AtomicU64::new(u64::MAX),
            ops: OpStats::default(),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(spawn("mmc-meta-accept", move || accept_loop(listener, s)));
        let s = shared.clone();
        threads.push(spawn("mmc-meta-tick", move || {
            while !s.stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(TICK_MS));
                s.with_core(|core, now| core.tick(now));
            }
        }));
        let metrics = if config.metrics_url.is_empty() {
            None
        } else {
            let maddr = mmc_config::parse_metrics_url(&config.metrics_url)
                .map_err(|e| Error::Config(e.to_string()))?;
            let registry = obs::registry_of(Arc::new(MetaSource(shared.clone())));
            let s = shared.clone();
            let health: obs::Health = Box::new(move || {
                let (rebuilding, live) =
                    s.with_core(|core, _| (core.rebuilding_now(), core.live_members()));
                let stopping = s.stop.load(Ordering::Acquire);
                (
                    !stopping,
                    format!("meta live_local_services={live} rebuilding={rebuilding} stopping={stopping}"),
                )
            });
            Some(
                HttpEndpoint::start(
                    maddr,
                    "mmc-meta-metrics",
                    registry,
                    health,
                    shared.tls.clone(),
                )
                .map_err(|e| Error::io(format!("bind metrics to {maddr}"), e))?,
            )
        };
        info!(%addr, high = config.evict_threshold_high, low = config.evict_threshold_low,
            heartbeat_ms = config.heartbeat_period_ms(), member_timeout_ms = config.member_timeout_ms,
            suspect_on_close = config.suspect_on_close, probe_dead = config.probe_dead,
            tls = config.tls.enable, "meta service listening");
        Ok(MetaServer {
            addr,
            metrics,
            shared,
            threads,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(HttpEndpoint::addr)
    }

    /// Serve requests only until `until` (an elected leader's lease, see [`crate::ha`]); a
    /// request read later closes its connection unanswered, so its sender asks etcd again.
    pub fn serve_until(&self, until: Instant) {
        let ms = until
            .saturating_duration_since(self.shared.started)
            .as_millis();
        self.shared
            .serve_until_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Stop accepting, close every connection, join every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.shared.stop.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wake the blocking accept calls.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        self.metrics = None;
        for (_, c) in self
            .shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            let _ = c.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.shared.prober.join_all();
        info!(addr = %self.addr, "meta service stopped");
    }
}

impl Drop for MetaServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("spawn a meta service thread")
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conn_threads: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let open = shared.conns.lock().unwrap_or_else(|p| p.into_inner()).len();
        if open >= CONNS_MAX {
            warn!(
                ?peer,
                open,
                limit = CONNS_MAX,
                "connection refused: too many open connections"
            );
            continue;
        }
        // A peer may idle between frames, but not stall in one nor stop taking its replies.
        let idle = Some(Duration::from_millis(wire::FRAME_IDLE_MS));
        let set = stream.set_nodelay(true).and_then(|_| {
            stream.set_read_timeout(idle)?;
            stream.set_write_timeout(idle)
        });
        if let Err(e) = set {
            warn!(?peer, error = %e, "connection refused: socket options not set");
            continue;
        }
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            shared
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, clone);
        }
        let s = shared.clone();
        conn_threads.retain(|t| !t.is_finished());
        conn_threads.push(spawn("mmc-meta-conn", move || {
            let mut carried = Carried::default();
            let served = match secure(stream, s.tls.as_deref(), peer, idle, "meta") {
                Some(stream) => serve_conn(stream, &s, id, &mut carried),
                None => Ok(()),
            };
            if let Err(e) = served {
                match e {
                    WireError::Closed => debug!(?peer, "connection closed"),
                    e if e.is_timeout() => warn!(
                        ?peer,
                        error = %e,
                        limit_ms = wire::FRAME_IDLE_MS,
                        "connection cut off: stalled mid-frame or not reading"
                    ),
                    e => warn!(?peer, error = %e, "connection cut off"),
                }
            }
            s.conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let suspects = connection_lost(&s, id, &carried.ranks);
            start_probes(&s, suspects);
            clients_lost(&s, &carried.clients);
        }));
    }
    for t in conn_threads {
        let _ = t.join();
    }
}

/// Most ranks one connection is remembered to carry (a local service's connection carries one;
/// a peer that heartbeats for many ranks is remembered for the latest ones only).
const CARRIED_MAX: usize = 64;

/// Most client session ids one connection is remembered to carry. A client's connection carries
/// one; past the bound the oldest is forgotten (oldest first): its count drops as if the
/// connection had closed, but it is not declared gone, so its puts fall back to the pending
/// timeout rather than being reclaimed early.
const CLIENTS_MAX: usize = 64;

/// What one connection carried: members' ranks, client session ids.
#[derive(Default)]
struct Carried {
    ranks: Vec<u32>,
    clients: Vec<u64>,
}

/// Connection closed: each client session it carried that no other open connection carries is
/// gone; the core reclaims that client's pending puts.
fn clients_lost(shared: &Shared, carried: &[u64]) {
    if carried.is_empty() || shared.stop.load(Ordering::Acquire) {
        return;
    }
    shared.with_core(|core, now| {
        let mut clients = shared.clients.lock().unwrap_or_else(|p| p.into_inner());
        for id in carried {
            let Some(open) = clients.get_mut(id) else {
                continue;
            };
            *open -= 1;
            if *open == 0 {
                clients.remove(id);
                let reclaimed = core.client_gone(now, *id);
                if reclaimed > 0 {
                    info!(
                        client_id = id,
                        reclaimed, "client's meta connections closed: its pending puts reclaimed"
                    );
                }
            }
        }
    });
}

/// Remember that this connection carried client session `client_id` (called under the core's
/// lock, like `note_carrier`).
fn note_client(shared: &Shared, client_id: u64, carried: &mut Vec<u64>) {
    if client_id == 0 || carried.contains(&client_id) {
        return;
    }
    let mut clients = shared.clients.lock().unwrap_or_else(|p| p.into_inner());
    if carried.len() == CLIENTS_MAX {
        let oldest = carried.remove(0);
        if let Some(open) = clients.get_mut(&oldest) {
            *open -= 1;
            if *open == 0 {
                clients.remove(&oldest);
            }
        }
    }
    carried.push(client_id);
    *clients.entry(client_id).or_insert(0) += 1;
    debug_assert!(carried.len() <= CLIENTS_MAX);
}

/// A member to probe: rank, incarnation, data endpoint.
type Suspect = (u32, u64, String);

/// Connection `id` closed: tell the core about each member whose heartbeats it carried last
/// (when `suspect_on_close`). Returns the members to probe: those paused now at that
/// incarnation, by this hint or an earlier one.
fn connection_lost(shared: &Shared, id: u64, carried: &[u32]) -> Vec<Suspect> {
    if carried.is_empty() || shared.stop.load(Ordering::Acquire) {
        return Vec::new();
    }
    shared.with_core(|core, now| {
        let mut carriers = shared.carriers.lock().unwrap_or_else(|p| p.into_inner());
        let mut suspects = Vec::new();
        for rank in carried {
            match carriers.get(rank) {
                Some(&(conn, incarnation)) if conn == id => {
                    carriers.remove(rank);
                    if !shared.suspect_on_close {
                        debug!(
                            rank,
                            incarnation, "meta connection closed: no hint (suspect_on_close off)"
                        );
                        continue;
                    }
                    if core.member_connection_lost(now, *rank, incarnation) {
                        info!(
                            rank,
                            incarnation, "local service's meta connection closed: paused"
                        );
                    }
                    if let Some(endpoint) = core.probe_target(*rank, incarnation) {
                        suspects.push((*rank, incarnation, endpoint.to_owned()));
                    }
                }
                _ => {}
            }
        }
        suspects
    })
}

/// Probe each suspect's data endpoint on a thread of its own (at most one per member, rank and incarnation, in flight,
/// [`probe::PROBES_MAX`] in all), outside the core's lock; a probe whose every connect is refused
/// drops the member if it is still paused at that incarnation.
fn start_probes(shared: &Arc<Shared>, suspects: Vec<Suspect>) {
    for (rank, incarnation, endpoint) in suspects {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Some(settings) = shared.prober.claim(rank, incarnation) else {
            continue;
        };
        let addr: SocketAddr = match endpoint.parse() {
            Ok(a) => a,
            Err(e) => {
                warn!(rank, incarnation, %endpoint, error = %e, "suspect's data endpoint is no ip:port: not probed");
                shared.prober.release(rank, incarnation);
                continue;
            }
        };
        debug!(rank, incarnation, %addr, "probing a suspect's data endpoint");
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("mmc-meta-probe".into())
            .spawn(move || {
                let started = Instant::now();
                let outcome = probe::probe(addr, settings, &s.stop);
                let probe_ms = started.elapsed().as_millis() as u64;
                let dropped = outcome == Outcome::Refused
                    && !s.stop.load(Ordering::Acquire)
                    && s.with_core(|core, now| core.member_dead(now, rank, incarnation));
                s.prober.record(outcome, dropped);
                match outcome {
                    Outcome::Refused if dropped => info!(rank, incarnation, %addr, probe_ms,
                        "probe: connection refused every time: the local service is gone, dropped"),
                    Outcome::Refused => debug!(rank, incarnation, %addr, probe_ms,
                        "probe: refused, but the member is no longer paused at that incarnation"),
                    Outcome::Accepted => info!(rank, incarnation, %addr, probe_ms,
                        "probe: a process accepts at the suspect's endpoint (alive, perhaps frozen): it stays paused"),
                    Outcome::Unanswered => info!(rank, incarnation, %addr, probe_ms,
                        "probe: no answer (partition or host down?): it stays paused, its lease and grace decide"),
                    Outcome::Cancelled => {}
                }
                s.prober.release(rank, incarnation);
            });
        match spawned {
            Ok(t) => shared.prober.keep(t),
            Err(e) => {
                warn!(rank, error = %e, "probe thread not started: the suspect is left to its grace");
                shared.prober.release(rank, incarnation);
            }
        }
    }
}

/// Remember that connection `id` carries `rank` at `incarnation`, if the core took the request
/// as the member's (a registration or an accepted heartbeat).
fn note_carrier(shared: &Shared, id: u64, reply: &Reply, req: &Request, carried: &mut Vec<u32>) {
    let (rank, incarnation) = match (req, reply) {
        (
            _,
            Reply::Registered {
                rank, incarnation, ..
            },
        ) => (*rank, *incarnation),
        (
            Request::Heartbeat {
                rank, incarnation, ..
            },
            Reply::Heartbeat { .. },
        ) => (*rank, *incarnation),
        _ => return,
    };
    shared
        .carriers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(rank, (id, incarnation));
    if !carried.contains(&rank) {
        if carried.len() == CARRIED_MAX {
            carried.remove(0);
        }
        carried.push(rank);
    }
    debug_assert!(carried.len() <= CARRIED_MAX);
}

fn serve_conn(
    mut stream: Stream,
    shared: &Arc<Shared>,
    id: u64,
    carried: &mut Carried,
) -> std::result::Result<(), WireError> {
    let mut buf = AlignedVec::new();
    loop {
        let Some(header) = wire::read_request(&mut stream, &mut buf)? else {
            continue; // idle between frames
        };
        if header.raw_len != 0 || !matches!(header.kind, Kind::MetaRequest | Kind::MetaOneway) {
            return Err(WireError::Payload(format!(
                "meta service takes requests without raw bytes, got {:?} with {} raw bytes",
                header.kind, header.raw_len
            )));
        }
        let archived = wire::access_payload::<Request>(&buf)?;
        if shared.now_ms() >= shared.serve_until_ms.load(Ordering::Acquire) {
            debug!("request after this leader's lease may have lapsed: connection closed");
            return Err(WireError::Closed);
        }
        let started = Instant::now();
        // Exist and Query: under the read lock, from the archived keys (no copy of them); every
        // other request is deserialized and handled under the write lock.
        let (op, reply, suspects) = match archived {
            ArchivedRequest::Exist { keys } => (
                metrics::OP_EXIST,
                shared.with_core_read(|core, now| core.exist_shared(now, keys)),
                Vec::new(),
            ),
            ArchivedRequest::Query { keys } => (
                metrics::OP_QUERY,
                shared.with_core_read(|core, now| core.query_shared(now, keys)),
                Vec::new(),
            ),
            _ => {
                let req: Request = wire::deserialize_archived(archived)?;
                let op = metrics::op_index(&req);
                let (reply, suspects) = handle_write(shared, id, carried, req);
                (op, reply, suspects)
            }
        };
        shared.ops.record(op, &reply, started.elapsed());
        start_probes(shared, suspects);
        if header.kind == Kind::MetaOneway {
            continue;
        }
        wire::encode_payload(&reply, &mut buf)?;
        wire::write_frame(&mut stream, Kind::MetaReply, header.req_id, &buf, 0)?;
    }
}

/// A request that changes the core, under the write lock; its reply and the members to probe.
fn handle_write(
    shared: &Arc<Shared>,
    id: u64,
    carried: &mut Carried,
    req: Request,
) -> (Reply, Vec<Suspect>) {
    let membership = matches!(req, Request::Register(_) | Request::Heartbeat { .. });
    let mut suspects = Vec::new();
    let reply = shared.with_core(|core, now| {
        if let Request::Suspect { rank, incarnation } = req {
            // A client's report: probe the member if it is paused at that incarnation now.
            let reply = core.handle(now, req);
            if let Some(endpoint) = core.probe_target(rank, incarnation) {
                suspects.push((rank, incarnation, endpoint.to_owned()));
            }
            reply
        } else if membership {
            // Noted under the core's lock, so a close seen later finds the latest carrier.
            let reply = core.handle(now, req.clone());
            note_carrier(shared, id, &reply, &req, &mut carried.ranks);
            reply
        } else if let Request::Alloc(a) = &req {
            // Noted before the allocation, under the same lock: a close seen later finds it.
            note_client(shared, a.client_id, &mut carried.clients);
            core.handle(now, req)
        } else {
            core.handle(now, req)
        }
    });
    (reply, suspects)
}

/// The meta service's `/metrics`: the core read under its lock, then written out.
struct MetaSource(Arc<Shared>);

impl Source for MetaSource {
    fn scrape(&self, out: &mut Scrape<'_, '_>) -> std::fmt::Result {
        let shared = &self.0;
        let snapshot = shared.with_core(|core, now| {
            let Reply::Status(status) = core.handle(now, Request::Status) else {
                unreachable!("a status request is answered with a status");
            };
            Snapshot {
                status,
                stats: core.stats().clone(),
                held: [
                    mmc_controlplane::msg::MEDIA_HBM,
                    mmc_controlplane::msg::MEDIA_DRAM,
                ]
                .into_iter()
                .map(|m| (m, core.tier_held(m)))
                .filter(|(_, t)| t.capacity > 0)
                .collect(),
                rebuilding: core.rebuilding(now),
                connections: 0,
                probes: shared.prober.counts(),
            }
        });
        let connections = shared.conns.lock().unwrap_or_else(|p| p.into_inner()).len();
        metrics::write(
            out,
            &Snapshot {
                connections,
                ..snapshot
            },
            &shared.ops,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn death_detection_settings_reach_the_core_and_the_prober() {
        let defaults = MetaConfig::default();
        assert_eq!(meta_params(&defaults).heartbeat_ms, 1_000);
        assert_eq!(
            probe_settings(&defaults),
            Some(ProbeSettings {
                attempts: 3,
                interval: Duration::from_millis(100),
            })
        );
        let tuned = MetaConfig {
            member_timeout_ms: 1_000,
            heartbeat_ms: 300,
            probe_attempts: 5,
            probe_interval_ms: 20,
            ..MetaConfig::default()
        };
        tuned.validate().unwrap();
        assert_eq!(meta_params(&tuned).heartbeat_ms, 300);
        assert_eq!(
            probe_settings(&tuned),
            Some(ProbeSettings {
                attempts: 5,
                interval: Duration::from_millis(20),
            })
        );
        let derived = MetaConfig {
            member_timeout_ms: 1_000,
            ..MetaConfig::default()
        };
        assert_eq!(meta_params(&derived).heartbeat_ms, 200);
        let off = MetaConfig {
            probe_dead: false,
            ..MetaConfig::default()
        };
        assert_eq!(probe_settings(&off), None);
    }
}
