//! A local service's metrics: transfers it serves (TCP data endpoint, the embedded client's
//! copies) counted with atomics on the data path; pools, objects and membership read when a
//! scrape comes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mmc_controlplane::msg;
use mmc_meta_service::obs::{self, Labels, LatencyHistogram, Scrape, Source};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::Inner;

/// How bytes reached or left the pools.
#[derive(Clone, Copy)]
pub(crate) enum Transport {
    /// A request on the TCP data endpoint.
    Tcp = 0,
    /// A copy by a client in this process (no socket).
    Embedded = 1,
}

const TRANSPORTS: [&str; 2] = ["tcp", "embedded"];

#[derive(Clone, Copy)]
pub(crate) enum Dir {
    Write = 0,
    Read = 1,
}

const DIRS: [&str; 2] = ["write", "read"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Failed {
    transport: &'static str,
    op: &'static str,
    code: i32,
}

/// Counts kept by the data path and the member driver.
#[derive(Default)]
pub(crate) struct LocalStats {
    ok: [[AtomicU64; 2]; 2],
    /// Refused or fenced transfers by code (rare: a family lookup, no allocation once seen).
    failed: Family<Failed, Counter>,
    bytes: [[AtomicU64; 2]; 2],
    latency: [[LatencyHistogram; 2]; 2],
    pub(crate) conns_opened: AtomicU64,
    pub(crate) conns_closed: AtomicU64,
    /// Same-host clients holding the pools' memfds now.
    pub(crate) shm_clients: AtomicU64,
    pub(crate) shm_handovers: AtomicU64,
    pub(crate) heartbeats_ok: AtomicU64,
    pub(crate) heartbeats_failed: AtomicU64,
    /// Registrations accepted: [fresh, rejoin with the index].
    pub(crate) registrations: [AtomicU64; 2],
    /// Repairs done: [ok, failed].
    pub(crate) repairs: [AtomicU64; 2],
}

impl LocalStats {
    /// One transfer of `bytes` (when it succeeded) answered `code` after `took`.
    pub(crate) fn record(&self, t: Transport, d: Dir, code: i32, bytes: u64, took: Duration) {
        let (t, d) = (t as usize, d as usize);
        if code == 0 {
            self.ok[t][d].fetch_add(1, Ordering::Relaxed);
            self.bytes[t][d].fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.failed
                .get_or_create(&Failed {
                    transport: TRANSPORTS[t],
                    op: DIRS[d],
                    code,
                })
                .inc();
        }
        self.latency[t][d].observe(took);
    }
}

/// `/metrics` of one local service.
pub(super) struct LocalSource(pub(super) Arc<Inner>);

fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Source for LocalSource {
    fn scrape(&self, out: &mut Scrape<'_, '_>) -> fmt::Result {
        let inner = &self.0;
        let s = &inner.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (membership, used, objects) = {
            let core = inner
                .core
                .read()
                .expect("local core lock poisoned: a core step panicked");
            let m = core.membership().cloned();
            let mut used = vec![0u64; inner.pools.len()];
            let mut objects = vec![0u64; inner.pools.len()];
            if let Some(m) = &m {
                for e in core.index().entries().values() {
                    if let Some(i) = m.segments.iter().position(|s| *s == e.segment) {
                        used[i] += e.len;
                        objects[i] += 1;
                    }
                }
            }
            (m, used, objects)
        };
        let rank = membership
            .as_ref()
            .map(|m| m.rank.to_string())
            .unwrap_or_default();
        let pool = |i: usize| {
            l(&[
                ("rank", &rank),
                ("media", msg::media_name(inner.pools[i].media)),
            ])
        };
        let per_pool = |v: &dyn Fn(usize) -> u64| -> Vec<(Labels, i64)> {
            (0..inner.pools.len())
                .map(|i| (pool(i), v(i) as i64))
                .collect()
        };
        out.gauges(
            "mmc_local_capacity_bytes",
            "Bytes of each pool this local service gives the cluster, by media.",
            &per_pool(&|i| inner.pool_lens[i]),
        )?;
        out.gauges(
            "mmc_local_used_bytes",
            "Bytes of committed objects in each pool (this service's index).",
            &per_pool(&|i| used[i]),
        )?;
        out.gauges(
            "mmc_local_objects",
            "Committed object replicas in each pool.",
            &per_pool(&|i| objects[i]),
        )?;
        out.gauge(
            "mmc_local_registered",
            "1 while registered with the meta service, 0 while registering (again).",
            i64::from(membership.is_some()),
        )?;
        let mut ok = Vec::new();
        let mut bytes = Vec::new();
        let mut latency = Vec::new();
        for (t, transport) in TRANSPORTS.iter().enumerate() {
            for (d, op) in DIRS.iter().enumerate() {
                let labels = l(&[("transport", transport), ("op", op)]);
                ok.push((labels.clone(), n(&s.ok[t][d])));
                bytes.push((labels.clone(), n(&s.bytes[t][d])));
                latency.push((labels, &s.latency[t][d]));
            }
        }
        out.counters(
            "mmc_local_transfers_ok",
            "Transfers served without error, by transport and direction.",
            &ok,
        )?;
        out.metric(
            "mmc_local_transfers_failed",
            "Transfers refused or fenced off, by transport, direction and code (-3018: the \
             epoch fence moved; -3000: a bad range).",
            &s.failed,
        )?;
        out.counters(
            "mmc_local_bytes",
            "Bytes moved into (write) and out of (read) the pools, by transport (same-host shm \
             clients copy by themselves and are not seen here).",
            &bytes,
        )?;
        out.histograms(
            "mmc_local_transfer_seconds",
            "Time to serve one transfer request, by transport and direction.",
            &latency,
        )?;
        let opened = n(&s.conns_opened);
        out.gauge(
            "mmc_local_data_connections",
            "Open connections on the TCP data endpoint.",
            opened.saturating_sub(n(&s.conns_closed)) as i64,
        )?;
        out.gauge(
            "mmc_local_shm_clients",
            "Same-host clients holding this service's pools mapped.",
            n(&s.shm_clients) as i64,
        )?;
        out.counter(
            "mmc_local_shm_handovers",
            "Times the pools' memfds were handed to a same-host client.",
            n(&s.shm_handovers),
        )?;
        out.counters(
            "mmc_local_heartbeats",
            "Heartbeats sent to the meta service: ok, or failed (unanswered or refused; a \
             refused one leads to a registration).",
            &[
                (l(&[("outcome", "ok")]), n(&s.heartbeats_ok)),
                (l(&[("outcome", "failed")]), n(&s.heartbeats_failed)),
            ],
        )?;
        out.counters(
            "mmc_local_registrations",
            "Registrations accepted: fresh, or rejoin (after a meta restart, with this \
             service's index, which rebuilds the directory).",
            &[
                (l(&[("kind", "fresh")]), n(&s.registrations[0])),
                (l(&[("kind", "rejoin")]), n(&s.registrations[1])),
            ],
        )?;
        out.counters(
            "mmc_local_repairs",
            "Replica copies done for the meta service's repair tasks.",
            &[
                (l(&[("outcome", "ok")]), n(&s.repairs[0])),
                (l(&[("outcome", "failed")]), n(&s.repairs[1])),
            ],
        )
    }
}

/// The `/health` answer: healthy while registered and not stopping.
pub(super) fn health(inner: Arc<Inner>) -> obs::Health {
    Box::new(move || {
        let stopping = inner.stop.load(Ordering::Acquire);
        match inner.membership() {
            Some(m) if !stopping => (
                true,
                format!("local rank={} incarnation={}", m.rank, m.incarnation),
            ),
            Some(_) => (false, "stopping".into()),
            None => (false, "registering with the meta service".into()),
        }
    })
}
