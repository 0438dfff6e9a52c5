//! Bounded memory for every peer, over real processes: headers that claim huge payloads and then
//! hold their connections open cost the servers (almost) nothing, and everyone else is served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{pattern, Cluster};
use mmc_config::DataOpType;
use mmc_controlplane::wire::{Header, Kind, META_BYTES_MAX};
use mmc_dataplane::{Client, ClientConfig, PutOptions};

const MIB: u64 = 1024 * 1024;
/// Connections to each server that claim a payload and never send it.
const HOLDERS: usize = 32;
/// What each of them claims.
const CLAIM_BYTES: u32 = 64 * MIB as u32;
/// The most both servers together may grow while they are held.
const GROWTH_BYTES_MAX: u64 = 16 * MIB;

/// A field of /proc/PID/status, in bytes for `kB` values.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} missing for {pid}"));
    let n: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a number");
    if line.ends_with("kB") {
        n * 1024
    } else {
        n
    }
}

fn rss(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:")
}

/// Wait (bounded) until `pid` runs at least `threads` threads: its connections are being served.
fn wait_threads(pid: u32, threads: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while proc_status(pid, "Threads:") < threads {
        assert!(
            Instant::now() < deadline,
            "{what} did not start serving the held connections"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Open a connection to `addr` and send a header claiming [`CLAIM_BYTES`], nothing more.
fn hold(addr: &str, kind: Kind, meta_len: u32) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = Header {
        kind,
        flags: 0,
        meta_len,
        req_id: 1,
        raw_len: 0,
    };
    s.write_all(&head.encode()).expect("send a header");
    s
}

fn put_get(c: &Client, round: usize) {
    for i in 0..8 {
        let key = format!("bounded-{round}-{i}");
        let bytes = pattern(&key, MIB as usize);
        c.put(&key, &bytes, &PutOptions::default()).unwrap();
        assert_eq!(c.get(&key).unwrap(), bytes, "{key}");
    }
}

#[test]
fn headers_claiming_huge_payloads_held_open_cost_almost_nothing() {
    let cluster = Cluster::start(&["64MB"], &[]);
    // TCP to the data endpoint, not the same-host shared memory: that is the server under test.
    let c = Client::connect(&ClientConfig {
        transport: Some(DataOpType::Tcp),
        ..cluster.client_config()
    })
    .unwrap();
    put_get(&c, 0);
    let meta_pid = cluster.meta.id();
    let local_pid = cluster.locals[0].child.id();
    let (meta_before, local_before) = (rss(meta_pid), rss(local_pid));
    let meta_threads = proc_status(meta_pid, "Threads:");
    let local_threads = proc_status(local_pid, "Threads:");

    let mut held = Vec::with_capacity(2 * HOLDERS);
    for _ in 0..HOLDERS {
        held.push(hold(&cluster.meta_addr, Kind::MetaRequest, CLAIM_BYTES));
        held.push(hold(
            &cluster.locals[0].endpoint,
            Kind::DataRequest,
            CLAIM_BYTES,
        ));
    }
    wait_threads(meta_pid, meta_threads + HOLDERS as u64, "mmc-meta");
    wait_threads(local_pid, local_threads + HOLDERS as u64, "mmc-local");
    // Everyone else is still served while the connections are held.
    put_get(&c, 1);
    // The highest RSS over a second of the servers holding them.
    let (mut meta_after, mut local_after) = (0, 0);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        meta_after = meta_after.max(rss(meta_pid));
        local_after = local_after.max(rss(local_pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let growth = (meta_after + local_after).saturating_sub(meta_before + local_before);

    // A header over the limit is cut off at once, and nothing else is affected.
    for (addr, kind) in [
        (cluster.meta_addr.as_str(), Kind::MetaRequest),
        (cluster.locals[0].endpoint.as_str(), Kind::DataRequest),
    ] {
        let mut s = hold(addr, kind, META_BYTES_MAX + 1);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 16];
        assert!(
            matches!(s.read(&mut b), Ok(0) | Err(_)),
            "{addr} cuts off a header over the limit"
        );
    }
    put_get(&c, 2);

    println!(
        "held connections: {HOLDERS} to mmc-meta and {HOLDERS} to mmc-local's data endpoint, each \
         claiming {} MiB",
        CLAIM_BYTES as u64 / MIB
    );
    println!(
        "RSS mmc-meta: {:.1} MiB before, {:.1} MiB after; mmc-local: {:.1} MiB before, {:.1} MiB \
         after; growth {:.2} MiB (limit {} MiB)",
        meta_before as f64 / MIB as f64,
        meta_after as f64 / MIB as f64,
        local_before as f64 / MIB as f64,
        local_after as f64 / MIB as f64,
        growth as f64 / MIB as f64,
        GROWTH_BYTES_MAX / MIB
    );
    assert!(
        growth < GROWTH_BYTES_MAX,
        "the servers grew by {growth} bytes for {} held connections",
        2 * HOLDERS
    );
    drop(held);
}
