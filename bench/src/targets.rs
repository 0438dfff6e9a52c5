//! The targets, judged on the rows of this run: pass, short (with the figures), or not
//! measured (with why).

use crate::report::{
    find, find_busy, human_rate, human_us, Row, Target, HOST, MEMCACHED, MEMCPY, MMC, MOONCAKE,
    OWN, REDIS, TCP, TCP_PINGPONG, TCP_STREAM,
};

fn t(name: String, detail: String, pass: Option<bool>) -> Target {
    Target { name, detail, pass }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// Every target, in the order. `busy_poll` = whether this run meant to measure busy-poll
/// rows.
pub fn judge(rows: &[Row], busy_poll: bool) -> Vec<Target> {
    let mut out = Vec::new();

    // Same host: 16 x 8 MiB and the DeepSeek block at >= 85% of memcpy of the same bytes.
    for pl in [OWN, HOST] {
        for w in ["batch-8m", "deepseek-r1"] {
            for op in ["put", "get"] {
                let copy = if op == "get" { "copy out" } else { "copy in" };
                let (Some(r), Some(b)) =
                    (find(rows, MMC, pl, w, op), find(rows, MEMCPY, "", w, copy))
                else {
                    continue;
                };
                let x = r.gbps / b.gbps;
                out.push(t(
                    format!("{pl}: {w} {op} >= 85% of memcpy"),
                    format!(
                        "{:.2} GB/s = {} of memcpy {:.2} GB/s",
                        r.gbps,
                        pct(x),
                        b.gbps
                    ),
                    Some(x >= 0.85),
                ));
            }
        }
    }

    // Over TCP: >= 90% of raw TCP streams (as many as the client uses) of the same bytes.
    for w in ["batch-1m", "batch-8m", "deepseek-r1"] {
        for op in ["put", "get"] {
            let (Some(r), Some(b)) = (
                find(rows, MMC, TCP, w, op),
                find(rows, TCP_STREAM, "", w, "send"),
            ) else {
                continue;
            };
            let x = r.gbps / b.gbps;
            out.push(t(
                format!("tcp: {w} {op} >= 90% of raw TCP, same streams"),
                format!("{:.2} GB/s = {} of {:.2} GB/s", r.gbps, pct(x), b.gbps),
                Some(x >= 0.9),
            ));
        }
    }

    // Over TCP: >= 2.5x Mooncake's TCP path.
    let mut any_mooncake = false;
    for w in ["batch-1m", "batch-8m"] {
        for op in ["put", "get"] {
            let (Some(r), Some(m)) = (
                find(rows, MMC, TCP, w, op),
                find(rows, MOONCAKE, TCP, w, op),
            ) else {
                continue;
            };
            any_mooncake = true;
            let x = r.gbps / m.gbps;
            out.push(t(
                format!("tcp: {w} {op} >= 2.5x Mooncake over TCP"),
                format!("{:.2} GB/s = {x:.2}x Mooncake's {:.2} GB/s", r.gbps, m.gbps),
                Some(x >= 2.5),
            ));
        }
    }
    if !any_mooncake {
        out.push(t(
            "tcp: >= 2.5x Mooncake over TCP".into(),
            "Mooncake not measured in this run (mmc-bench --peers mooncake)".into(),
            None,
        ));
    }

    // 4 KiB put, get and exist in one round trip: p50 <= 1.3x the blocking ping-pong of this run
    // (busy-poll separately, below), and no heap allocation per call in the steady state.
    let rtt = find(rows, TCP_PINGPONG, "", "4k", "ping-pong").and_then(|r| r.p50_us);
    for pl in [OWN, HOST, TCP] {
        for op in ["put", "get", "exist"] {
            let (Some(r), Some(rtt)) = (find(rows, MMC, pl, "4k", op), rtt) else {
                continue;
            };
            let p50 = r.p50_us.unwrap_or(f64::NAN);
            out.push(t(
                format!("{pl}: 4 KiB {op} p50 <= 1.3x ping-pong (one round trip, blocking)"),
                format!(
                    "p50 {} = {:.2} x ping-pong p50 {} (blocking)",
                    human_us(p50),
                    p50 / rtt,
                    human_us(rtt)
                ),
                Some(p50 <= 1.3 * rtt),
            ));
        }
        let counts: Vec<(&str, f64)> = ["put", "get", "exist"]
            .into_iter()
            .filter_map(|op| {
                let a = find(rows, MMC, pl, "4k", op)?.allocs_per_call?;
                Some((op, a))
            })
            .collect();
        if !counts.is_empty() {
            out.push(t(
                format!("{pl}: 0 heap allocations per 4 KiB put / get / exist (client thread)"),
                counts
                    .iter()
                    .map(|(op, a)| format!("{op} {a:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + " allocations per call",
                Some(counts.iter().all(|(_, a)| *a < 0.05)),
            ));
        }
    }
    // Busy-poll: the busy-poll rows against the busy-poll ping-pong (both ends spinning); the
    // blocking ping-pong shown alongside.
    let brtt = find_busy(rows, TCP_PINGPONG, "", "4k", "ping-pong").and_then(|r| r.p50_us);
    let mut any_busy = false;
    for pl in [HOST, TCP] {
        for op in ["put", "get"] {
            let (Some(r), Some(brtt)) = (find_busy(rows, MMC, pl, "4k", op), brtt) else {
                continue;
            };
            any_busy = true;
            let p50 = r.p50_us.unwrap_or(f64::NAN);
            out.push(t(
                format!("{pl}: 4 KiB {op} p50 <= 3 round trips (busy-poll)"),
                format!(
                    "p50 {} = {:.1} x busy-poll ping-pong p50 {}{}",
                    human_us(p50),
                    p50 / brtt,
                    human_us(brtt),
                    match rtt {
                        Some(rtt) => format!(" ({:.1} x the blocking one)", p50 / rtt),
                        None => String::new(),
                    }
                ),
                Some(p50 <= 3.0 * brtt),
            ));
        }
    }
    if !any_busy {
        out.push(t(
            "4 KiB p50 <= 3 round trips (busy-poll)".into(),
            if busy_poll {
                "busy-poll rows or the busy-poll ping-pong missing (see the notes)".into()
            } else {
                "busy-poll not measured in this run (mmc-bench --busy-poll; on in full runs)".into()
            },
            None,
        ));
    }

    // exist >= 5x Mooncake's single-key rate.
    let mm = find(rows, MOONCAKE, TCP, "4k", "exist")
        .or_else(|| find(rows, MOONCAKE, OWN, "4k", "exist"));
    let me = find(rows, MMC, HOST, "4k", "exist").or_else(|| find(rows, MMC, "", "4k", "exist"));
    match (me, mm) {
        (Some(r), Some(m)) => out.push(t(
            "exist >= 5x Mooncake's single-key rate".into(),
            format!(
                "mmc {} {} = {:.2}x Mooncake's {} (1 key a call)",
                r.placement,
                human_rate(r.rate, "ops/s"),
                r.rate / m.rate,
                human_rate(m.rate, "ops/s")
            ),
            Some(r.rate >= 5.0 * m.rate),
        )),
        _ => out.push(t(
            "exist >= 5x Mooncake's single-key rate".into(),
            "Mooncake not measured in this run (mmc-bench --peers mooncake)".into(),
            None,
        )),
    }

    // batch_is_exist >= 3 M keys/s.
    if let Some(r) = find(rows, MMC, HOST, "exist", "batch_exist")
        .or_else(|| find(rows, MMC, "", "exist", "batch_exist"))
    {
        out.push(t(
            "batch_exist >= 3 M keys/s".into(),
            format!(
                "{} ({} placement, 1000 keys a call)",
                human_rate(r.rate, "keys/s"),
                r.placement
            ),
            Some(r.rate >= 3e6),
        ));
    }

    // Redis and memcached beaten on every workload they ran (against MemCache on the same host,
    // another process: the same deployment as theirs).
    for peer in [REDIS, MEMCACHED] {
        let mut won = 0;
        let mut lost = Vec::new();
        for p in rows.iter().filter(|r| r.system == peer) {
            let Some(m) = find(rows, MMC, HOST, &p.workload, &p.op) else {
                continue;
            };
            let (ok, what) = if p.bulk {
                (
                    m.gbps > p.gbps,
                    format!(
                        "{} {} {:.2} vs {:.2} GB/s",
                        p.workload, p.op, m.gbps, p.gbps
                    ),
                )
            } else if p.workload == "4k" {
                let (a, b) = (m.p50_us.unwrap_or(f64::NAN), p.p50_us.unwrap_or(f64::NAN));
                (
                    a < b,
                    format!("4k {} p50 {} vs {}", p.op, human_us(a), human_us(b)),
                )
            } else {
                (
                    m.rate > p.rate,
                    format!(
                        "{} {} vs {}",
                        p.op,
                        human_rate(m.rate, p.rate_unit),
                        human_rate(p.rate, p.rate_unit)
                    ),
                )
            };
            if ok {
                won += 1;
            } else {
                lost.push(what);
            }
        }
        let n = won + lost.len();
        if n == 0 {
            out.push(t(
                format!("{peer} beaten on every workload"),
                format!("{peer} not measured in this run"),
                None,
            ));
        } else {
            out.push(t(
                format!("{peer} beaten on every workload (mmc host)"),
                if lost.is_empty() {
                    format!("won {won} of {n}")
                } else {
                    format!("won {won} of {n}; lost: {}", lost.join("; "))
                },
                Some(lost.is_empty()),
            ));
        }
    }

    // First write into never-used space of a pool larger than the huge-page reserve >= 90% of
    // memcpy into fresh memory of the pool's size, measured just before.
    for (pl, op, when) in [
        (OWN, "put", ""),
        (HOST, "put", " (mapping populated)"),
        (HOST, crate::fresh::AT_MAPPING, " (right after mapping it)"),
    ] {
        let (Some(r), Some(b)) = (
            find(rows, MMC, pl, "fresh", op),
            find(rows, MEMCPY, pl, "fresh", "copy in"),
        ) else {
            continue;
        };
        let x = r.gbps / b.gbps;
        out.push(t(
            format!("{pl}: first write into never-used space >= 90% of memcpy{when}"),
            format!(
                "{:.2} GB/s = {} of memcpy into a fresh pre-faulted arena {:.2} GB/s (16 x 8 \
                 MiB rounds, pool > huge-page reserve)",
                r.gbps,
                pct(x),
                b.gbps
            ),
            Some(x >= 0.9),
        ));
    }

    // The same, against puts into reused space of the same pool (the put path's own speed).
    for pl in [OWN, HOST] {
        let (Some(r), Some(w)) = (
            find(rows, MMC, pl, "fresh", "put"),
            find(rows, MMC, pl, "fresh", crate::fresh::REUSED),
        ) else {
            continue;
        };
        let x = r.gbps / w.gbps;
        out.push(t(
            format!("{pl}: first write into never-used space >= 90% of a put into reused space"),
            format!(
                "{:.2} GB/s = {} of {:.2} GB/s into the same pool's reused space",
                r.gbps,
                pct(x),
                w.gbps
            ),
            Some(x >= 0.9),
        ));
    }

    out.extend(crate::steady::judge(rows));

    // First write into a fresh pool >= 80% of a warm one.
    for pl in [OWN, HOST, TCP] {
        let (Some(c), Some(w)) = (
            find(rows, MMC, pl, "first-write", "put cold"),
            find(rows, MMC, pl, "first-write", "put warm"),
        ) else {
            continue;
        };
        let x = c.gbps / w.gbps;
        out.push(t(
            format!("{pl}: first write into a fresh pool >= 80% of warm"),
            format!(
                "{:.2} GB/s = {} of warm {:.2} GB/s (16 x 8 MiB)",
                c.gbps,
                pct(x),
                w.gbps
            ),
            Some(x >= 0.8),
        ));
    }
    // The meta service at scale: bytes of meta memory per object at 10 M objects, 50 M in 16 GiB.
    let scale = |n: u64| {
        rows.iter()
            .find(|r| r.workload == "meta-scale" && r.objects == n)
            .and_then(|r| r.bytes_per_object)
    };
    if rows.iter().any(|r| r.workload == "meta-scale") {
        out.push(match scale(10_000_000) {
            Some(b) => t(
                "meta: <= 200 B of meta memory per object (10 M objects)".into(),
                format!("{b:.0} B per object"),
                Some(b <= 200.0),
            ),
            None => t(
                "meta: <= 200 B of meta memory per object (10 M objects)".into(),
                "not measured: 10 M objects run only in full runs".into(),
                None,
            ),
        });
        out.push(match scale(50_000_000) {
            Some(b) => {
                let gib = b * 50e6 / (1u64 << 30) as f64;
                t(
                    "meta: 50 M objects in under 16 GiB".into(),
                    format!("{gib:.1} GiB ({b:.0} B per object)"),
                    Some(gib < 16.0),
                )
            }
            None => t(
                "meta: 50 M objects in under 16 GiB".into(),
                match scale(10_000_000) {
                    Some(b) => format!(
                        "not measured (too little free memory here; see the notes); at the 10 M \
                         run's {b:.0} B per object, 50 M would take {:.1} GiB",
                        b * 50e6 / (1u64 << 30) as f64
                    ),
                    None => "not measured (full runs only)".into(),
                },
                None,
            ),
        });
    }
    out
}
