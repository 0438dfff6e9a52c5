//! `mmc status` (members, health, capacity bars, objects; `--watch`, `--json`) and `mmc top`
//! (live rates from two samples).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mmc_controlplane::msg::{media_name, Status, MEDIA_DRAM, MEDIA_HBM};
use mmc_controlplane::Error;
use mmc_dataplane::Client;
use serde_json::{json, Value};

/// Width of a capacity bar in characters.
const BAR: usize = 30;

fn pct(used: u64, cap: u64) -> f64 {
    if cap == 0 {
        0.0
    } else {
        used as f64 * 100.0 / cap as f64
    }
}

/// `[#########.....]` for `used` of `cap`.
fn bar(used: u64, cap: u64) -> String {
    let filled = ((pct(used, cap) / 100.0) * BAR as f64).round() as usize;
    let filled = filled.min(BAR);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

fn human(bytes: u64) -> String {
    mmc_config::format_size(bytes)
}

/// (capacity, used) of the live segments of `media`.
fn tier(s: &Status, media: u16) -> (u64, u64) {
    s.segments
        .iter()
        .filter(|g| g.media == media && g.alive)
        .fold((0, 0), |(c, u), g| (c + g.capacity, u + g.used))
}

/// The status as JSON (stable field names, for scripts).
pub fn to_json(s: &Status) -> Value {
    let mut members: BTreeMap<u32, Vec<&mmc_controlplane::msg::SegmentStatus>> = BTreeMap::new();
    for g in &s.segments {
        members.entry(g.rank).or_default().push(g);
    }
    let members: Vec<Value> = members
        .iter()
        .map(|(rank, segs)| {
            let first = segs[0];
            json!({
                "rank": rank,
                "create_id": first.create_id,
                "host": first.host,
                "endpoint": first.data_endpoint,
                "alive": segs.iter().all(|g| g.alive),
                "health": if segs.iter().all(|g| g.alive) { "live" } else { "paused" },
                "objects": segs.iter().map(|g| g.objects).sum::<u64>(),
                "segments": segs.iter().map(|g| json!({
                    "segment": g.segment,
                    "media": media_name(g.media),
                    "capacity_bytes": g.capacity,
                    "used_bytes": g.used,
                    "objects": g.objects,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let media: Vec<Value> = [MEDIA_HBM, MEDIA_DRAM]
        .into_iter()
        .map(|m| (m, tier(s, m)))
        .filter(|(_, (cap, _))| *cap > 0)
        .map(|(m, (cap, used))| {
            json!({
                "media": media_name(m),
                "capacity_bytes": cap,
                "used_bytes": used,
                "used_percent": (pct(used, cap) * 10.0).round() / 10.0,
            })
        })
        .collect();
    let live = s
        .segments
        .iter()
        .filter(|g| g.alive)
        .map(|g| g.rank)
        .collect::<BTreeSet<_>>()
        .len();
    json!({
        "local_services": members.len(),
        "live_local_services": live,
        "members": members,
        "media": media,
        "objects": s.objects,
        "pending_puts": s.pending,
        "read_leases": s.leases,
        "evicted_total": s.evicted_total,
        "evict_threshold_high": s.evict_threshold_high,
        "evict_threshold_low": s.evict_threshold_low,
    })
}

/// The status for people: one line per member, a bar per media, the totals.
pub fn to_text(s: &Status) -> String {
    let mut out = String::new();
    let ranks: BTreeSet<u32> = s.segments.iter().map(|g| g.rank).collect();
    let live: BTreeSet<u32> = s
        .segments
        .iter()
        .filter(|g| g.alive)
        .map(|g| g.rank)
        .collect();
    // Rank and segment first, as before health and bars were added (scripts parse them).
    out.push_str(&format!(
        "{:>5} {:>8} {:>6} {:>5} {:>10} {:>10} {:>6} {:>9}  endpoint (host)\n",
        "rank", "segment", "health", "media", "capacity", "used", "use%", "objects"
    ));
    for g in &s.segments {
        out.push_str(&format!(
            "{:>5} {:>8} {:>6} {:>5} {:>10} {:>10} {:>5.1}% {:>9}  {} ({})\n",
            g.rank,
            g.segment,
            if g.alive { "live" } else { "PAUSED" },
            media_name(g.media),
            human(g.capacity),
            human(g.used),
            pct(g.used, g.capacity),
            g.objects,
            g.data_endpoint,
            g.host.get(..12).unwrap_or(&g.host),
        ));
    }
    for media in [MEDIA_HBM, MEDIA_DRAM] {
        let (cap, used) = tier(s, media);
        if cap > 0 {
            out.push_str(&format!(
                "{:<5} {} {:>5.1}%  {} of {} used (evicts above {}%, down to {}%)\n",
                media_name(media),
                bar(used, cap),
                pct(used, cap),
                human(used),
                human(cap),
                s.evict_threshold_high,
                s.evict_threshold_low
            ));
        }
    }
    out.push_str(&format!(
        "local services {} ({} live, {} paused), objects {}, pending puts {}, read leases {}, evicted {}\n",
        ranks.len(),
        live.len(),
        ranks.len() - live.len(),
        s.objects,
        s.pending,
        s.leases,
        s.evicted_total,
    ));
    out
}

/// Print the status once, or every `watch` seconds until interrupted.
pub fn run(client: &Client, json: bool, watch: Option<u64>) -> Result<(), Error> {
    loop {
        let s = client.status()?;
        let mut stdout = std::io::stdout().lock();
        let written = if json {
            writeln!(stdout, "{}", to_json(&s))
        } else {
            if watch.is_some() {
                // Clear the screen and go home, as `watch` does.
                let _ = write!(stdout, "\x1b[H\x1b[2J");
            }
            write!(stdout, "{}", to_text(&s))
        };
        written
            .and_then(|()| stdout.flush())
            .map_err(|e| Error::io("write the status", e))?;
        match watch {
            None => return Ok(()),
            Some(secs) => std::thread::sleep(Duration::from_secs(secs.max(1))),
        }
    }
}

/// Samples of a metrics endpoint: series -> value.
type Samples = BTreeMap<String, f64>;

/// GET http://`addr`/metrics and keep its samples.
fn scrape(addr: &str) -> Result<Samples, Error> {
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let fail = |e: std::io::Error| Error::io(format!("scrape http://{addr}/metrics"), e);
    let mut s = TcpStream::connect(addr).map_err(fail)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(fail)?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").map_err(fail)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(fail)?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect())
}

/// Sum of the samples of `name` whose series contains `with`.
fn sum(s: &Samples, name: &str, with: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && k.contains(with))
        .map(|(_, v)| v)
        .sum()
}

/// The operations `mmc top` shows: (column, meta request type; puts also count `put_leased`).
const TOP_OPS: [(&str, &str); 6] = [
    ("puts/s", "alloc"),
    ("gets/s", "lookup"),
    ("exists/s", "exist"),
    ("removes/s", "remove"),
    ("queries/s", "query"),
    ("beats/s", "heartbeat"),
];

/// `mmc top`: every `interval` seconds, the rates between the last two samples: keys per
/// operation and failed keys from the meta service's `/metrics` (when `metrics` is given), and
/// from the status: objects, evictions and used bytes. `count` samples after the first, or
/// until interrupted.
pub fn top(
    client: &Client,
    metrics: Option<&str>,
    interval: u64,
    count: Option<u64>,
) -> Result<(), Error> {
    let interval = Duration::from_secs(interval.max(1));
    let sample = || -> Result<(Instant, Status, Option<Samples>), Error> {
        let m = metrics.map(scrape).transpose()?;
        Ok((Instant::now(), client.status()?, m))
    };
    let mut last = sample()?;
    let mut header = String::new();
    if metrics.is_some() {
        for (col, _) in TOP_OPS {
            header.push_str(&format!("{col:>10}"));
        }
        header.push_str(&format!("{:>10}", "failed/s"));
    }
    header.push_str(&format!(
        "{:>10}{:>12}{:>12}{:>14}",
        "objects", "objects/s", "evicted/s", "used B/s"
    ));
    out!("{header}");
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        std::thread::sleep(interval);
        let now = sample()?;
        let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
        let mut line = String::new();
        if let (Some(a), Some(b)) = (&last.2, &now.2) {
            let rate = |name: &str, with: &str| (sum(b, name, with) - sum(a, name, with)) / secs;
            for (_, op) in TOP_OPS {
                let with = format!("op=\"{op}\"");
                let mut keyed = rate("mmc_meta_keys_ok_total", &with)
                    + rate("mmc_meta_keys_failed_total", &with);
                if op == "alloc" {
                    // Small puts into leased slots commit with one `put_leased`, no `alloc`.
                    let leased = "op=\"put_leased\"";
                    keyed += rate("mmc_meta_keys_ok_total", leased)
                        + rate("mmc_meta_keys_failed_total", leased);
                }
                let v = if op == "heartbeat" {
                    rate("mmc_meta_requests_total", &with)
                } else {
                    keyed
                };
                line.push_str(&format!("{v:>10.1}"));
            }
            line.push_str(&format!("{:>10.1}", rate("mmc_meta_keys_failed_total", "")));
        }
        let used = |s: &Status| tier(s, MEDIA_DRAM).1 + tier(s, MEDIA_HBM).1;
        line.push_str(&format!(
            "{:>10}{:>12.1}{:>12.1}{:>14.0}",
            now.1.objects,
            (now.1.objects as f64 - last.1.objects as f64) / secs,
            now.1.evicted_total.saturating_sub(last.1.evicted_total) as f64 / secs,
            (used(&now.1) as f64 - used(&last.1) as f64) / secs,
        ));
        out!("{line}");
        let _ = std::io::stdout().flush();
        last = now;
        n += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_with_use() {
        assert_eq!(bar(0, 100), format!("[{}]", ".".repeat(BAR)));
        assert_eq!(bar(100, 100), format!("[{}]", "#".repeat(BAR)));
        assert_eq!(bar(50, 100).matches('#').count(), BAR / 2);
        assert_eq!(bar(7, 0).matches('#').count(), 0);
    }
}
