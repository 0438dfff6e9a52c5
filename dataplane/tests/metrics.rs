//! `/metrics` and `/health` of the meta service and of local services, scraped over HTTP from
//! real processes and parsed: the values move with puts and gets.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{pattern, wait_until, Cluster};
use mmc_config::DataOpType;
use mmc_dataplane::PutOptions;

/// A port free right now on 127.0.0.1 (the services are told to bind it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path`: (status line, content type, body).
fn http_get(port: u16, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.lines().next().unwrap_or("").to_string();
    let kind = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or("")
        .to_string();
    (status, kind, body.to_string())
}

/// One scrape: sample (name with its sorted labels, e.g. `a{x="1",y="2"}`) -> value, and the
/// declared type of each family.
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parse the text exposition; panics on a line that is neither a comment nor a sample.
    fn parse(body: &str) -> Exposition {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        assert!(
            body.trim_end().ends_with("# EOF"),
            "OpenMetrics ends with # EOF"
        );
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample: series value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let key = match series.split_once('{') {
                None => series.to_string(),
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("closing brace");
                    let mut pairs: Vec<&str> = labels.split(',').collect();
                    pairs.sort_unstable();
                    format!("{name}{{{}}}", pairs.join(","))
                }
            };
            assert!(
                samples.insert(key.clone(), value).is_none(),
                "sample {key} twice"
            );
        }
        Exposition { samples, types }
    }

    /// The value of one sample (labels sorted by name), or 0 when absent.
    fn get(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// Sum of the samples of `name` whose labels include every one of `with`.
    fn sum(&self, name: &str, with: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                k.split('{').next() == Some(name) && with.iter().all(|w| k.contains(w))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn scrape(port: u16) -> Exposition {
    let (status, kind, body) = http_get(port, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    Exposition::parse(&body)
}

#[test]
fn metrics_of_meta_and_local_services_move_with_puts_and_gets() {
    let meta_port = free_port();
    let mut cluster = Cluster::start(&[], &["--metrics", &format!("127.0.0.1:{meta_port}")]);
    let local_ports = [free_port(), free_port()];
    for port in local_ports {
        cluster.add_local_with(&["--dram", "32MB", "--metrics", &format!("127.0.0.1:{port}")]);
    }

    let (status, _, body) = http_get(meta_port, "/health");
    assert!(
        status.contains("200") && body.starts_with("ok"),
        "{status} {body}"
    );
    for port in local_ports {
        let (status, _, body) = http_get(port, "/health");
        assert!(
            status.contains("200") && body.contains("rank="),
            "{status} {body}"
        );
    }
    let (status, _, _) = http_get(meta_port, "/nope");
    assert!(status.contains("404"), "{status}");

    let before = scrape(meta_port);
    assert_eq!(
        before.types.get("mmc_objects").map(String::as_str),
        Some("gauge")
    );
    assert_eq!(
        before.types.get("mmc_evicted").map(String::as_str),
        Some("counter")
    );
    assert_eq!(before.get("mmc_objects"), 0.0);
    assert_eq!(before.get("mmc_local_services{state=\"live\"}"), 2.0);
    assert_eq!(
        before.sum("mmc_media_capacity_bytes", &["DRAM"]),
        64.0 * 1024.0 * 1024.0
    );

    // Puts and gets over TCP, so that the local services move the bytes.
    let client = cluster.client_with(10_000, Some(DataOpType::Tcp));
    const N: usize = 6;
    const LEN: usize = 64 * 1024;
    for i in 0..N {
        let key = format!("m{i}");
        client
            .put(&key, &pattern(&key, LEN), &PutOptions::default())
            .unwrap();
    }
    for i in 0..N {
        let key = format!("m{i}");
        assert!(client.get(&key).unwrap() == pattern(&key, LEN));
    }
    assert!(client.get("missing").is_err());

    let after = scrape(meta_port);
    assert_eq!(after.get("mmc_objects"), N as f64);
    // Small puts commit into leased slots with one `put_leased` each (no `alloc`).
    assert!(
        after.get("mmc_meta_requests_total{op=\"alloc\",result=\"ok\"}")
            + after.get("mmc_meta_requests_total{op=\"put_leased\",result=\"ok\"}")
            >= N as f64
    );
    assert_eq!(
        after.get("mmc_meta_keys_ok_total{code=\"0\",op=\"alloc\"}")
            + after.get("mmc_meta_keys_ok_total{code=\"0\",op=\"put_leased\"}"),
        N as f64
    );
    assert_eq!(
        after.get("mmc_meta_keys_ok_total{code=\"0\",op=\"lookup\"}"),
        N as f64
    );
    assert_eq!(
        after.get("mmc_meta_keys_failed_total{code=\"-3007\",op=\"lookup\"}"),
        1.0
    );
    assert!(
        after.get("mmc_meta_request_seconds_count{op=\"commit\"}")
            + after.get("mmc_meta_request_seconds_count{op=\"put_leased\"}")
            >= N as f64
    );
    // Cumulative buckets: +Inf holds every observation once, and no bucket holds more.
    let lookups = after.get("mmc_meta_request_seconds_count{op=\"lookup\"}");
    assert!(lookups >= N as f64);
    assert_eq!(
        after.get("mmc_meta_request_seconds_bucket{le=\"+Inf\",op=\"lookup\"}"),
        lookups
    );
    let mut buckets: Vec<(f64, f64)> = after
        .samples
        .iter()
        .filter(|(k, _)| {
            k.starts_with("mmc_meta_request_seconds_bucket{") && k.contains("op=\"lookup\"")
        })
        .map(|(k, v)| {
            let le = k.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, *v)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "cumulative: {buckets:?}"
    );
    let used = after.sum("mmc_media_used_bytes", &["DRAM"]);
    assert!(used >= (N * LEN) as f64, "used {used}");
    // The client's unused slots are allocations on the segments too.
    assert_eq!(
        after.sum("mmc_segment_objects", &[]),
        (N + client.slots_held()) as f64
    );
    assert!(after.get("mmc_meta_connections") >= 1.0);
    println!(
        "meta: {} samples; objects {}, DRAM used {used}, alloc requests {}",
        after.samples.len(),
        after.get("mmc_objects"),
        after.get("mmc_meta_requests_total{op=\"alloc\",result=\"ok\"}")
    );

    let locals: Vec<Exposition> = local_ports.iter().map(|p| scrape(*p)).collect();
    let total = |name: &str, with: &[&str]| locals.iter().map(|e| e.sum(name, with)).sum::<f64>();
    assert_eq!(
        total(
            "mmc_local_bytes_total",
            &["transport=\"tcp\"", "op=\"write\""]
        ),
        (N * LEN) as f64
    );
    assert_eq!(
        total(
            "mmc_local_bytes_total",
            &["transport=\"tcp\"", "op=\"read\""]
        ),
        (N * LEN) as f64
    );
    assert_eq!(
        total("mmc_local_transfers_ok_total", &["op=\"write\""]),
        N as f64
    );
    assert!(total("mmc_local_transfer_seconds_count", &["op=\"read\""]) >= N as f64);
    assert_eq!(
        total("mmc_local_registrations_total", &["kind=\"fresh\""]),
        2.0
    );
    assert_eq!(
        total("mmc_local_capacity_bytes", &["DRAM"]),
        64.0 * 1024.0 * 1024.0
    );
    // The services learn their objects on their next heartbeat.
    wait_until(
        "local indexes hold every object",
        Duration::from_secs(10),
        || {
            let now: Vec<Exposition> = local_ports.iter().map(|p| scrape(*p)).collect();
            let sum =
                |name: &str, with: &[&str]| now.iter().map(|e| e.sum(name, with)).sum::<f64>();
            sum("mmc_local_objects", &[]) == N as f64
                && sum("mmc_local_used_bytes", &[]) == (N * LEN) as f64
                && now
                    .iter()
                    .all(|e| e.get("mmc_local_heartbeats_total{outcome=\"ok\"}") >= 1.0)
        },
    );
    println!(
        "local services: {} + {} samples; tcp bytes written {}",
        locals[0].samples.len(),
        locals[1].samples.len(),
        total("mmc_local_bytes_total", &["op=\"write\""])
    );
}
