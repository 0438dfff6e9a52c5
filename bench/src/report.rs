//! Result rows, the printed tables (results and targets) and the JSON report.

use std::time::Duration;

use serde::Serialize;

/// Systems a row can measure.
pub const MMC: &str = "memcache";
pub const MEMCPY: &str = "memcpy";
pub const TCP_STREAM: &str = "tcp-stream";
pub const TCP_PINGPONG: &str = "tcp-pingpong";
pub const REDIS: &str = "redis";
pub const MEMCACHED: &str = "memcached";
pub const MOONCAKE: &str = "mooncake";

/// Placements: where the data lives relative to the caller.
pub const OWN: &str = "own";
pub const HOST: &str = "host";
pub const TCP: &str = "tcp";

/// How the caller waited for replies (`Row::wait`).
pub const BLOCKING: &str = "blocking";
pub const BUSY_POLL: &str = "busy-poll";

/// How the serving local service ran its data connections (`Row::data_server`): the default
/// (a thread per connection), or shard threads (`mmc-local --data-shards N`).
pub const THREADS: &str = "thread-per-connection";
pub const SHARDS: &str = "2 shards";
/// A thread per connection, every connection (meta and data) over mutual TLS 1.3.
pub const TLS_THREADS: &str = "TLS 1.3";
/// The shard data server waiting with io_uring instead of mio.
pub const SHARDS_URING: &str = "2 uring shards";

/// One measured operation.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// "4k", "batch-1m", "batch-8m", "deepseek-r1", "exist", "first-write".
    pub workload: String,
    /// "put", "get", "exist", "batch_exist", "put cold", "put warm", "copy", "send", "ping-pong".
    pub op: String,
    /// `MMC`, `MEMCPY`, `REDIS`, ...
    pub system: String,
    /// `OWN`, `HOST`, `TCP`, or "-" for baselines that have none.
    pub placement: String,
    /// What one call does, e.g. "16 x 8 MiB" or "1 key".
    pub shape: String,
    /// Objects moved (or keys checked), summed over every call.
    pub objects: u64,
    /// Bytes moved, summed over every call.
    pub bytes: u64,
    pub calls: u64,
    /// Time inside the measured calls only (filling and verifying excluded).
    pub seconds: f64,
    pub gbps: f64,
    /// `objects / seconds`.
    pub rate: f64,
    /// "ops/s" or "keys/s".
    pub rate_unit: &'static str,
    /// Whether GB/s (bulk) or the rate is the headline figure.
    pub bulk: bool,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// How the caller waited: `BLOCKING`, or `BUSY_POLL` (client and the serving local service
    /// spin up to N us before blocking; its own rows, next to the blocking ones).
    pub wait: &'static str,
    /// MemCache rows: how the serving local service ran its data connections (`THREADS`, the
    /// default, or `SHARDS`); "-" for other systems.
    pub data_server: &'static str,
    /// The headline divided by the same workload's baseline (memcpy for own/host, the TCP
    /// stream for tcp; for 4 KiB latency: p50 in ping-pong round trips). Filled by `add_ratios`.
    pub ratio: Option<f64>,
    pub ratio_vs: Option<String>,
    /// 4 KiB rows: heap allocations per call of the calling thread (after a warm-up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocs_per_call: Option<f64>,
    /// meta-scale rows: bytes of meta memory per object (the larger of heap and resident).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_object: Option<f64>,
}

impl Row {
    /// A row from per-call latencies; `objects` and `bytes` are totals over those calls.
    #[allow(clippy::too_many_arguments)]
    pub fn from_calls(
        workload: &str,
        op: &str,
        system: &str,
        placement: &str,
        shape: &str,
        objects: u64,
        bytes: u64,
        calls: &[Duration],
        bulk: bool,
    ) -> Row {
        let seconds: f64 = calls.iter().map(Duration::as_secs_f64).sum();
        let secs = seconds.max(1e-9);
        let mut us: Vec<f64> = calls.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        Row {
            workload: workload.to_string(),
            op: op.to_string(),
            system: system.to_string(),
            placement: placement.to_string(),
            shape: shape.to_string(),
            objects,
            bytes,
            calls: calls.len() as u64,
            seconds,
            gbps: bytes as f64 / secs / 1e9,
            rate: objects as f64 / secs,
            rate_unit: if op.contains("exist") {
                "keys/s"
            } else {
                "ops/s"
            },
            bulk,
            p50_us: percentile(&us, 50.0),
            p99_us: percentile(&us, 99.0),
            wait: BLOCKING,
            data_server: if system == MMC { THREADS } else { "-" },
            ratio: None,
            ratio_vs: None,
            allocs_per_call: None,
            bytes_per_object: None,
        }
    }

    /// A row from figures another program measured (the Mooncake script).
    #[allow(clippy::too_many_arguments)]
    pub fn from_figures(
        workload: &str,
        op: &str,
        system: &str,
        placement: &str,
        shape: &str,
        objects: u64,
        bytes: u64,
        calls: u64,
        seconds: f64,
        p50_us: Option<f64>,
        p99_us: Option<f64>,
        bulk: bool,
    ) -> Row {
        let mut r = Row::from_calls(workload, op, system, placement, shape, 0, 0, &[], bulk);
        let secs = seconds.max(1e-9);
        r.objects = objects;
        r.bytes = bytes;
        r.calls = calls;
        r.seconds = seconds;
        r.gbps = bytes as f64 / secs / 1e9;
        r.rate = objects as f64 / secs;
        r.p50_us = p50_us;
        r.p99_us = p99_us;
        r
    }

    /// "mmc own", "redis tcp", "memcpy", "mmc tcp busy-poll", "mmc tcp 2 shards", ...
    pub fn who(&self) -> String {
        let mut s = if self.placement == "-" || self.placement.is_empty() {
            self.system.clone()
        } else if self.system == MMC {
            format!("mmc {}", self.placement)
        } else {
            format!("{} {}", self.system, self.placement)
        };
        if self.wait != BLOCKING {
            s = format!("{s} {}", self.wait);
        }
        if self.data_server != THREADS && self.data_server != "-" {
            s = format!("{s} {}", self.data_server);
        }
        s
    }

    /// A row of the default set-up: blocking calls, default data server.
    pub fn standard(&self) -> bool {
        self.wait == BLOCKING && (self.data_server == THREADS || self.data_server == "-")
    }

    /// Matches a standard row (blocking, default data server) only; see `find_busy`.
    pub fn is(&self, system: &str, placement: &str, workload: &str, op: &str) -> bool {
        self.standard() && self.matches(system, placement, workload, op)
    }

    fn matches(&self, system: &str, placement: &str, workload: &str, op: &str) -> bool {
        self.system == system
            && (placement.is_empty() || self.placement == placement)
            && self.workload == workload
            && self.op == op
    }
}

/// Nearest-rank percentile of sorted values; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The first row matching.
pub fn find<'a>(
    rows: &'a [Row],
    system: &str,
    placement: &str,
    workload: &str,
    op: &str,
) -> Option<&'a Row> {
    rows.iter().find(|r| r.is(system, placement, workload, op))
}

/// The first busy-poll row matching.
pub fn find_busy<'a>(
    rows: &'a [Row],
    system: &str,
    placement: &str,
    workload: &str,
    op: &str,
) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.wait == BUSY_POLL && r.matches(system, placement, workload, op))
}

/// Fill every row's `ratio`: bulk MemCache/peer rows against memcpy (own, host) or the TCP stream
/// (tcp and the TCP peers); 4 KiB latency against the ping-pong round trip of the same wait
/// (blocking rows against the blocking ping-pong, busy-poll rows against the busy-poll one).
pub fn add_ratios(rows: &mut [Row]) {
    let snapshot = rows.to_vec();
    for r in rows.iter_mut() {
        if r.system == MEMCPY || r.system == TCP_STREAM || r.system == TCP_PINGPONG {
            continue;
        }
        if r.bulk {
            let (base, base_op) = if r.placement == TCP {
                (TCP_STREAM, "send")
            } else if r.op == "get" {
                (MEMCPY, "copy out")
            } else {
                (MEMCPY, "copy in")
            };
            // A baseline measured for this placement (fresh) first, else the shared one.
            let of = |b: &&Row| b.system == base && b.op == base_op && b.workload == r.workload;
            let b = snapshot
                .iter()
                .filter(of)
                .find(|b| b.placement == r.placement)
                .or_else(|| snapshot.iter().find(of));
            if let Some(b) = b.filter(|b| b.gbps > 0.0) {
                r.ratio = Some(r.gbps / b.gbps);
                r.ratio_vs = Some(base.to_string());
            }
        } else if r.workload == "4k" && (r.op == "put" || r.op == "get") {
            let b = snapshot
                .iter()
                .find(|b| b.system == TCP_PINGPONG && b.wait == r.wait);
            if let (Some(p50), Some(rtt)) = (r.p50_us, b.and_then(|b| b.p50_us)) {
                if rtt > 0.0 {
                    r.ratio = Some(p50 / rtt);
                    r.ratio_vs = Some(if r.wait == BLOCKING {
                        "rtt".into()
                    } else {
                        format!("{} rtt", r.wait)
                    });
                }
            }
        }
    }
}

/// One target of the issue: met, short, or not measured in this run.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    /// What was compared, with the figures.
    pub detail: String,
    /// `None` = not measured in this run (the detail says why).
    pub pass: Option<bool>,
}

pub fn human_bytes(bytes: u64) -> String {
    mmc_config::format_size(bytes)
}

pub fn human_us(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.1}us")
    } else if us < 1_000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

pub fn human_rate(rate: f64, unit: &str) -> String {
    if rate >= 1e6 {
        format!("{:.2} M {unit}", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k {unit}", rate / 1e3)
    } else {
        format!("{rate:.0} {unit}")
    }
}

/// The headline figure of a row as text.
pub fn headline(r: &Row) -> String {
    if r.bulk {
        format!("{:.2} GB/s", r.gbps)
    } else {
        human_rate(r.rate, r.rate_unit)
    }
}

/// An aligned text table; `left[i]` = column `i` is left-aligned.
pub fn aligned(header: &[&str], cells: &[Vec<String>], left: &[bool]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for c in cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| -> String {
        let parts: Vec<String> = c
            .iter()
            .zip(&width)
            .zip(left)
            .map(|((s, &w), &l)| {
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
    out.push_str(&line(
        &header.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    ));
    out.push('\n');
    let total: usize = width.iter().sum::<usize>() + 3 * (width.len() - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for c in cells {
        out.push_str(&line(c));
        out.push('\n');
    }
    out
}

/// The results table, grouped by workload in the order rows were measured.
pub fn table(rows: &[Row]) -> String {
    let mut order: Vec<&str> = Vec::new();
    for r in rows {
        if !order.contains(&r.workload.as_str()) {
            order.push(&r.workload);
        }
    }
    let mut cells = Vec::new();
    for w in order {
        for r in rows.iter().filter(|r| r.workload == w) {
            cells.push(vec![
                r.workload.clone(),
                r.op.clone(),
                r.who(),
                r.shape.clone(),
                headline(r),
                if r.bulk {
                    human_rate(r.rate, r.rate_unit)
                } else if r.gbps >= 0.01 {
                    format!("{:.2} GB/s", r.gbps)
                } else {
                    "-".into()
                },
                match (r.p50_us, r.p99_us) {
                    (Some(a), Some(b)) => format!("{} / {}", human_us(a), human_us(b)),
                    _ => "-".to_string(),
                },
                match (&r.ratio, &r.ratio_vs) {
                    (Some(x), Some(vs)) if vs.ends_with("rtt") => format!("{x:.1} {vs}"),
                    (Some(x), Some(vs)) => format!("{:.0}% {vs}", x * 100.0),
                    _ => "-".into(),
                },
            ]);
        }
    }
    aligned(
        &[
            "workload",
            "op",
            "who",
            "per call",
            "figure",
            "also",
            "p50 / p99 per call",
            "vs baseline",
        ],
        &cells,
        &[true, true, true, true, false, false, false, false],
    )
}

/// The targets table.
pub fn targets_table(targets: &[Target]) -> String {
    let cells: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            vec![
                match t.pass {
                    Some(true) => "pass".into(),
                    Some(false) => "SHORT".into(),
                    None => "n/a".into(),
                },
                t.name.clone(),
                t.detail.clone(),
            ]
        })
        .collect();
    aligned(
        &["result", "target", "measured"],
        &cells,
        &[true, true, true],
    )
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub quick: bool,
    pub meta: String,
    pub started_cluster: bool,
    pub machine: Machine,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    pub verify_failures: u64,
    pub verify_messages: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub mem_total: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        let mem_total = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| human_bytes(kb * 1024))
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model,
            kernel,
            mem_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v[..1], 50.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn bulk(system: &str, placement: &str, secs: u64) -> Row {
        let op = match system {
            MEMCPY => "copy out",
            TCP_STREAM => "send",
            _ => "get",
        };
        Row::from_calls(
            "batch-8m",
            op,
            system,
            placement,
            "16 x 8 MiB",
            16,
            1 << 30,
            &[Duration::from_secs(secs)],
            true,
        )
    }

    #[test]
    fn ratios_use_the_placements_baseline() {
        let mut rows = vec![
            bulk(MEMCPY, "-", 1),
            bulk(TCP_STREAM, "-", 2),
            bulk(MMC, OWN, 2),
            bulk(MMC, TCP, 4),
        ];
        add_ratios(&mut rows);
        assert_eq!(rows[2].ratio, Some(0.5));
        assert_eq!(rows[2].ratio_vs.as_deref(), Some(MEMCPY));
        assert_eq!(rows[3].ratio, Some(0.5));
        assert_eq!(rows[3].ratio_vs.as_deref(), Some(TCP_STREAM));
        assert_eq!(rows[0].ratio, None);
    }

    #[test]
    fn table_is_aligned() {
        let mut rows = vec![bulk(MEMCPY, "-", 1), bulk(MMC, HOST, 2)];
        rows.push(Row::from_calls(
            "exist",
            "batch_exist",
            MMC,
            HOST,
            "1000 keys",
            1000,
            0,
            &[Duration::from_micros(500)],
            false,
        ));
        add_ratios(&mut rows);
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        let bars: Vec<Vec<usize>> = lines
            .iter()
            .filter(|l| !l.starts_with('-'))
            .map(|l| l.match_indices(" | ").map(|(i, _)| i).collect())
            .collect();
        assert!(bars.windows(2).all(|w| w[0] == w[1]), "{t}");
        assert!(t.contains("keys/s") && t.contains("50% memcpy"), "{t}");
    }
}
