//! Result rows, placement summaries, the printed table and the JSON report.

use std::collections::BTreeMap;
use std::time::Duration;

use mmc_controlplane::msg::{media_name, Status};
use serde::Serialize;

/// One measured operation.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub op: String,
    /// Objects moved (or keys checked), summed over every call.
    pub objects: u64,
    /// Bytes moved, summed over every call.
    pub bytes: u64,
    /// Client calls made.
    pub calls: u64,
    /// Time inside the client calls only (filling and verifying excluded).
    pub seconds: f64,
    pub gbps: f64,
    /// `objects / seconds`.
    pub rate: f64,
    /// What `rate` counts: "ops/s" or "keys/s".
    pub rate_unit: &'static str,
    /// Whether the table shows GB/s (bulk transfers) or the rate (small objects, metadata).
    pub show_gbps: bool,
    /// Per-call latency.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// GB/s divided by the memcpy baseline's (bulk transfers only).
    pub vs_memcpy: Option<f64>,
}

impl Row {
    /// A row from per-call latencies; `objects` and `bytes` are totals over those calls.
    pub fn from_calls(
        workload: &str,
        op: &str,
        objects: u64,
        bytes: u64,
        calls: &[Duration],
        bulk: bool,
        memcpy_gbps: f64,
    ) -> Row {
        let seconds: f64 = calls.iter().map(Duration::as_secs_f64).sum();
        let secs = seconds.max(1e-9);
        let gbps = bytes as f64 / secs / 1e9;
        let mut us: Vec<f64> = calls.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        Row {
            workload: workload.to_string(),
            op: op.to_string(),
            objects,
            bytes,
            calls: calls.len() as u64,
            seconds,
            gbps,
            rate: objects as f64 / secs,
            rate_unit: if op.contains("exist") {
                "keys/s"
            } else {
                "ops/s"
            },
            show_gbps: bulk,
            p50_us: percentile(&us, 50.0),
            p99_us: percentile(&us, 99.0),
            vs_memcpy: (bulk && memcpy_gbps > 0.0).then(|| gbps / memcpy_gbps),
        }
    }
}

/// Nearest-rank percentile of sorted values; `None` when there are fewer than two.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.len() < 2 {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Where one workload's objects landed.
#[derive(Clone, Debug, Serialize)]
pub struct Placement {
    pub workload: String,
    pub objects: u64,
    pub replicas: Vec<RankShare>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RankShare {
    pub rank: u32,
    pub media: &'static str,
    pub objects: u64,
    pub bytes: u64,
}

impl Placement {
    /// Tally `(rank, media, bytes)` per replica.
    pub fn tally(workload: &str, objects: u64, replicas: &[(u32, u16, u64)]) -> Placement {
        let mut by: BTreeMap<(u32, u16), (u64, u64)> = BTreeMap::new();
        for &(rank, media, len) in replicas {
            let e = by.entry((rank, media)).or_default();
            e.0 += 1;
            e.1 += len;
        }
        Placement {
            workload: workload.to_string(),
            objects,
            replicas: by
                .into_iter()
                .map(|((rank, media), (objects, bytes))| RankShare {
                    rank,
                    media: media_name(media),
                    objects,
                    bytes,
                })
                .collect(),
        }
    }
}

/// The meta service's view, in a serializable form.
#[derive(Clone, Debug, Serialize)]
pub struct StatusSnap {
    /// When it was taken, e.g. "after deepseek-r1 put".
    pub when: String,
    pub segments: Vec<SegmentSnap>,
    pub objects: u64,
    pub pending: u64,
    pub leases: u64,
    pub evicted_total: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentSnap {
    pub rank: u32,
    pub segment: u32,
    pub media: &'static str,
    pub capacity: u64,
    pub used: u64,
    pub objects: u64,
    pub alive: bool,
    pub endpoint: String,
}

impl StatusSnap {
    pub fn new(when: &str, s: &Status) -> StatusSnap {
        StatusSnap {
            when: when.to_string(),
            segments: s
                .segments
                .iter()
                .map(|g| SegmentSnap {
                    rank: g.rank,
                    segment: g.segment,
                    media: media_name(g.media),
                    capacity: g.capacity,
                    used: g.used,
                    objects: g.objects,
                    alive: g.alive,
                    endpoint: g.data_endpoint.clone(),
                })
                .collect(),
            objects: s.objects,
            pending: s.pending,
            leases: s.leases,
            evicted_total: s.evicted_total,
        }
    }
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
pub struct Report {
    pub meta: String,
    pub key_prefix: String,
    pub quick: bool,
    /// DRAM bytes of the client's embedded local service, if it had one.
    pub embedded_dram: Option<u64>,
    pub client_rank: Option<u32>,
    /// How latency was measured.
    pub latency_mode: &'static str,
    pub memcpy_gbps: f64,
    pub memcpy_gbps_samples: Vec<f64>,
    pub rows: Vec<Row>,
    pub placement: Vec<Placement>,
    pub status: Vec<StatusSnap>,
    pub verify_failures: u64,
    pub verify_messages: Vec<String>,
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

fn human_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn human_rate(rate: f64, unit: &str) -> String {
    if rate >= 1e6 {
        format!("{:.2} M {unit}", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k {unit}", rate / 1e3)
    } else {
        format!("{rate:.0} {unit}")
    }
}

/// The aligned table.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "workload",
        "op",
        "objects",
        "bytes",
        "time",
        "GB/s or rate",
        "p50/p99 per call",
        "vs memcpy",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.workload.clone(),
                r.op.clone(),
                r.objects.to_string(),
                if r.bytes == 0 {
                    "-".to_string()
                } else {
                    human_bytes(r.bytes)
                },
                human_secs(r.seconds),
                if r.show_gbps {
                    format!("{:.2} GB/s", r.gbps)
                } else {
                    human_rate(r.rate, r.rate_unit)
                },
                match (r.p50_us, r.p99_us) {
                    (Some(a), Some(b)) => format!("{} / {}", human_us(a), human_us(b)),
                    _ => "-".to_string(),
                },
                r.vs_memcpy
                    .map(|x| format!("{x:.2}x"))
                    .unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.len());
        }
    }
    // Text columns left-aligned, figures right-aligned.
    let left = [true, true, false, false, false, false, false, false];
    let line = |c: &[String]| -> String {
        let parts: Vec<String> = c
            .iter()
            .zip(width)
            .zip(left)
            .map(|((s, w), l)| {
                if l {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        parts.join(" | ").trim_end().to_string()
    };
    let mut out = String::new();
    out.push_str(&line(&header.map(String::from)));
    out.push('\n');
    let total: usize = width.iter().sum::<usize>() + 3 * (width.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for c in &cells {
        out.push_str(&line(c));
        out.push('\n');
    }
    out
}

pub fn placement_lines(p: &Placement) -> String {
    let shares: Vec<String> = p
        .replicas
        .iter()
        .map(|s| {
            format!(
                "rank {} {} {} objects ({})",
                s.rank,
                s.media,
                s.objects,
                human_bytes(s.bytes)
            )
        })
        .collect();
    format!(
        "{:<12} {} objects: {}",
        p.workload,
        p.objects,
        if shares.is_empty() {
            "no replicas reported".to_string()
        } else {
            shares.join(", ")
        }
    )
}

pub fn status_lines(s: &StatusSnap) -> String {
    let mut out = format!(
        "meta status {}: {} objects, {} pending puts, {} read leases, {} evicted\n",
        s.when, s.objects, s.pending, s.leases, s.evicted_total
    );
    for g in &s.segments {
        out.push_str(&format!(
            "  rank {:>2} segment {:>2} {:<4} {:>10} of {:>10} used, {:>6} objects, {}{}\n",
            g.rank,
            g.segment,
            g.media,
            human_bytes(g.used),
            human_bytes(g.capacity),
            g.objects,
            g.endpoint,
            if g.alive { "" } else { " (DEAD)" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v[..1], 50.0), None);
    }

    #[test]
    fn table_is_aligned() {
        let rows = vec![
            Row::from_calls(
                "a",
                "put",
                8,
                8 << 20,
                &[Duration::from_millis(2), Duration::from_millis(3)],
                true,
                10.0,
            ),
            Row::from_calls(
                "longer-name",
                "batch_exist",
                1000,
                0,
                &[Duration::from_micros(500)],
                false,
                10.0,
            ),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        let bars: Vec<Vec<usize>> = lines
            .iter()
            .filter(|l| !l.starts_with('-'))
            .map(|l| l.match_indices(" | ").map(|(i, _)| i).collect())
            .collect();
        assert!(bars.windows(2).all(|w| w[0] == w[1]), "{t}");
        assert!(t.contains("keys/s"), "{t}");
    }
}
