//! The meta service's metrics: request counters and latency histograms kept with atomics on the
//! request path, and everything else read from the core when a scrape comes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use mmc_controlplane::meta::{MetaStats, TierHeld};
use mmc_controlplane::msg::{self, Reply, Request, Status};

use crate::obs::{Labels, LatencyHistogram, Scrape};
use crate::probe::ProbeCounts;

/// Request types, in the order of [`op_index`].
pub const OPS: [&str; 16] = [
    "register",
    "rejoin",
    "heartbeat",
    "unregister",
    "alloc",
    "commit",
    "lookup",
    "release",
    "query",
    "exist",
    "remove",
    "remove_all",
    "status",
    "suspect",
    "lease_slots",
    "put_leased",
];

/// Index of `req`'s type in [`OPS`].
/// [`op_index`] of `Query` and `Exist`.
pub const OP_QUERY: usize = 8;
pub const OP_EXIST: usize = 9;

pub fn op_index(req: &Request) -> usize {
    match req {
        Request::Register(_) => 0,
        Request::Rejoin(_) => 1,
        Request::Heartbeat { .. } => 2,
        Request::Unregister { .. } => 3,
        Request::Alloc(_) => 4,
        Request::Commit { .. } => 5,
        Request::Lookup { .. } => 6,
        Request::Release { .. } => 7,
        Request::Query { .. } => OP_QUERY,
        Request::Exist { .. } => OP_EXIST,
        Request::Remove { .. } => 10,
        Request::RemoveAll => 11,
        Request::Status => 12,
        Request::Suspect { .. } => 13,
        Request::LeaseSlots(_) => 14,
        Request::PutLeased { .. } => 15,
    }
}

/// Outcome of a whole request.
const RESULTS: [&str; 3] = ["ok", "busy", "error"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyCode {
    op: &'static str,
    code: i32,
}

/// What the request path counts.
#[derive(Default)]
pub struct OpStats {
    requests: [[AtomicU64; 3]; OPS.len()],
    /// Keys answered 0, per request type.
    keys_ok: [AtomicU64; OPS.len()],
    /// Keys answered with an error code (rare: a family lookup, no allocation once seen).
    keys_failed: Family<KeyCode, Counter>,
    latency: [LatencyHistogram; OPS.len()],
}

impl OpStats {
    /// Count one request of type `op` answered `reply` after `took`.
    pub fn record(&self, op: usize, reply: &Reply, took: Duration) {
        let result = match reply {
            Reply::Busy { .. } => 1,
            Reply::Error { .. } => 2,
            Reply::Ack { code } if *code != 0 => 2,
            _ => 0,
        };
        self.requests[op][result].fetch_add(1, Ordering::Relaxed);
        self.latency[op].observe(took);
        // One atomic add per request for the keys that succeeded: readers on other threads
        // count into the same counter.
        let ok = std::cell::Cell::new(0u64);
        let count = |code: i32| {
            if code == 0 {
                ok.set(ok.get() + 1);
            } else {
                self.keys_failed
                    .get_or_create(&KeyCode { op: OPS[op], code })
                    .inc();
            }
        };
        match reply {
            Reply::Alloc { items, .. } => items.iter().for_each(|i| count(i.code)),
            Reply::Lookup { items, .. } => items.iter().for_each(|i| count(i.code)),
            Reply::Query { items } => items.iter().for_each(|i| count(i.code)),
            Reply::Commit { codes } | Reply::Codes { codes } => {
                codes.iter().for_each(|c| count(*c))
            }
            _ => {}
        }
        if ok.get() > 0 {
            self.keys_ok[op].fetch_add(ok.get(), Ordering::Relaxed);
        }
    }
}

/// What a scrape reads from the core, under its lock.
pub struct Snapshot {
    pub status: Status,
    pub stats: MetaStats,
    pub held: Vec<(u16, TierHeld)>,
    pub rebuilding: bool,
    pub connections: usize,
    pub probes: ProbeCounts,
}

fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Write every meta service metric.
pub fn write(out: &mut Scrape<'_, '_>, s: &Snapshot, ops: &OpStats) -> fmt::Result {
    let st = &s.status;
    let seg = |g: &msg::SegmentStatus| {
        l(&[
            ("rank", &g.rank.to_string()),
            ("segment", &g.segment.to_string()),
            ("media", msg::media_name(g.media)),
            ("endpoint", &g.data_endpoint),
        ])
    };
    let per_seg = |f: fn(&msg::SegmentStatus) -> u64| -> Vec<(Labels, i64)> {
        st.segments.iter().map(|g| (seg(g), f(g) as i64)).collect()
    };
    out.gauges(
        "mmc_segment_capacity_bytes",
        "Capacity of each local service's pool (segment), by rank and media.",
        &per_seg(|g| g.capacity),
    )?;
    out.gauges(
        "mmc_segment_used_bytes",
        "Bytes allocated in each segment.",
        &per_seg(|g| g.used),
    )?;
    out.gauges(
        "mmc_segment_objects",
        "Object replicas in each segment.",
        &per_seg(|g| g.objects),
    )?;
    out.gauges(
        "mmc_segment_alive",
        "1 while the segment's local service is live, 0 while it is paused.",
        &per_seg(|g| u64::from(g.alive)),
    )?;
    let media = |m: u16| l(&[("media", msg::media_name(m))]);
    let per_media = |f: fn(&TierHeld) -> u64| -> Vec<(Labels, i64)> {
        s.held
            .iter()
            .map(|(m, t)| (media(*m), f(t) as i64))
            .collect()
    };
    out.gauges(
        "mmc_media_capacity_bytes",
        "Capacity of the live local services' pools, per media.",
        &per_media(|t| t.capacity),
    )?;
    out.gauges(
        "mmc_media_used_bytes",
        "Bytes allocated on live pools, per media.",
        &per_media(|t| t.capacity - t.free.min(t.capacity)),
    )?;
    let mut held = Vec::new();
    for (m, t) in &s.held {
        for (state, v) in [
            ("evictable", t.evictable),
            ("leased", t.leased),
            ("pending", t.pending),
        ] {
            held.push((
                l(&[("media", msg::media_name(*m)), ("state", state)]),
                v as i64,
            ));
        }
    }
    out.gauges(
        "mmc_media_held_bytes",
        "Allocated bytes per media by what could free them: evictable (committed, unleased), \
         leased (under a read lease) or pending (uncommitted puts, repairs). High use with \
         little evictable is why eviction cannot make room.",
        &held,
    )?;
    let alive: std::collections::BTreeSet<u32> = st
        .segments
        .iter()
        .filter(|g| g.alive)
        .map(|g| g.rank)
        .collect();
    let all: std::collections::BTreeSet<u32> = st.segments.iter().map(|g| g.rank).collect();
    out.gauges(
        "mmc_local_services",
        "Local services known to the meta service, live or paused.",
        &[
            (l(&[("state", "live")]), alive.len() as i64),
            (l(&[("state", "paused")]), (all.len() - alive.len()) as i64),
        ],
    )?;
    out.gauge("mmc_objects", "Committed objects.", st.objects as i64)?;
    out.gauge(
        "mmc_pending_puts",
        "Puts allocated but not committed yet.",
        st.pending as i64,
    )?;
    out.gauge("mmc_read_leases", "Read leases held.", st.leases as i64)?;
    out.gauge(
        "mmc_meta_connections",
        "Open connections to the meta service.",
        s.connections as i64,
    )?;
    out.gauge(
        "mmc_rebuilding",
        "1 while a restarted meta service waits for local services to rejoin with their indexes.",
        i64::from(s.rebuilding),
    )?;
    out.counter(
        "mmc_evicted",
        "Objects evicted (least recently used) to make room.",
        st.evicted_total,
    )?;
    let stats = &s.stats;
    out.counter(
        "mmc_demoted",
        "Objects moved down from HBM to DRAM (eviction that moves down a tier).",
        stats.demoted,
    )?;
    out.counter(
        "mmc_demotions_abandoned",
        "Demotions given up (copy failed, or the object was read or changed meanwhile; retried).",
        stats.demotions_abandoned,
    )?;
    out.counters(
        "mmc_eviction_blocked",
        "Times eviction could not make room: watermark = every remaining object leased or \
         pending; no_room = a put could not fit even with every evictable object gone; \
         fragmented = free bytes enough but no contiguous range.",
        &[
            (l(&[("reason", "watermark")]), stats.evict_blocked_held),
            (l(&[("reason", "no_room")]), stats.refused_no_room),
            (l(&[("reason", "fragmented")]), stats.refused_fragmented),
        ],
    )?;
    out.counters(
        "mmc_members_paused",
        "Local services paused: heartbeats_missed = silent for member_timeout_ms; hint = their \
         connection closed or a client reported them.",
        &[
            (
                l(&[("why", "heartbeats_missed")]),
                stats.paused_missed_heartbeats,
            ),
            (l(&[("why", "hint")]), stats.paused_by_hint),
        ],
    )?;
    out.counter(
        "mmc_members_dropped",
        "Local services dropped with their segments.",
        stats.members_dropped,
    )?;
    out.counter(
        "mmc_rejoins",
        "Local services that rejoined with their index after a meta restart.",
        stats.rejoins,
    )?;
    out.counters(
        "mmc_rebuild_entries",
        "Objects reported by rejoining services: kept in the directory or refused.",
        &[
            (l(&[("outcome", "kept")]), stats.rebuilt_entries),
            (l(&[("outcome", "refused")]), stats.rebuild_refused),
        ],
    )?;
    let p = &s.probes;
    out.counters(
        "mmc_member_probes",
        "Probes of a suspect's data endpoint, by outcome.",
        &[
            (l(&[("outcome", "refused")]), p.refused),
            (l(&[("outcome", "accepted")]), p.accepted),
            (l(&[("outcome", "unanswered")]), p.unanswered),
        ],
    )?;
    out.counter(
        "mmc_member_probes_skipped",
        "Hints not probed: too many probes in flight.",
        p.skipped,
    )?;
    out.counter(
        "mmc_members_dropped_by_probe",
        "Local services dropped because every probe connect was refused.",
        p.dropped,
    )?;
    let mut requests = Vec::new();
    for (i, op) in OPS.iter().enumerate() {
        for (j, result) in RESULTS.iter().enumerate() {
            let v = ops.requests[i][j].load(Ordering::Relaxed);
            if v > 0 {
                requests.push((l(&[("op", op), ("result", result)]), v));
            }
        }
    }
    out.counters(
        "mmc_meta_requests",
        "Requests to the meta service by type and outcome (busy = rebuilding, error = refused).",
        &requests,
    )?;
    let keys_ok: Vec<(Labels, u64)> = OPS
        .iter()
        .enumerate()
        .map(|(i, op)| (i, op, ops.keys_ok[i].load(Ordering::Relaxed)))
        .filter(|(_, _, v)| *v > 0)
        .map(|(_, op, v)| (l(&[("op", op), ("code", "0")]), v))
        .collect();
    out.counters(
        "mmc_meta_keys_ok",
        "Keys answered 0 (success), by request type.",
        &keys_ok,
    )?;
    out.metric(
        "mmc_meta_keys_failed",
        "Keys answered with an error code (the documented codes: -3007 missing, -3013 no \
         space, ...), by request type.",
        &ops.keys_failed,
    )?;
    let latency: Vec<(Labels, &LatencyHistogram)> = OPS
        .iter()
        .enumerate()
        .map(|(i, op)| (l(&[("op", op)]), &ops.latency[i]))
        .collect();
    out.histograms(
        "mmc_meta_request_seconds",
        "Time the meta service took to answer a request (under its lock), by type.",
        &latency,
    )
}
