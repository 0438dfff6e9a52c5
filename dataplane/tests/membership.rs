//! Membership through real processes: death detection, re-registration after a meta restart,
//! and the metrics endpoint.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, pattern, Cluster};
use mmc_controlplane::msg::PREFERRED_AFFINITY;
use mmc_dataplane::PutOptions;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait for `cond`, bounded.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_dead_local_service_leaves_placement() {
    // The slow path alone: no hint from the closed connection and no probe, so only its silence
    // (the lease) pauses it and only the grace drops it.
    let mut cluster = Cluster::start(
        &["16MB", "16MB"],
        &[
            "--member-timeout-ms",
            "600",
            "--member-grace-ms",
            "1500",
            "--suspect-on-close",
            "false",
            "--probe-dead",
            "false",
        ],
    );
    let c = cluster.client();
    let victim = cluster.locals[0].rank;
    let on_victim = PutOptions {
        policy: PREFERRED_AFFINITY,
        preferred: vec![victim as i32],
        ..PutOptions::default()
    };
    c.put("lost", b"gone with its service", &on_victim).unwrap();
    let killed = Instant::now();
    cluster.kill_local(0);
    let alive = |c: &mmc_dataplane::Client| {
        let s = c.status().unwrap();
        s.segments.iter().filter(|s| s.alive).count()
    };
    wait_for("silence detection", Duration::from_secs(10), || {
        alive(&c) == 1
    });
    // Its last heartbeat was at most one period (120 ms) before the kill: nothing but the lease
    // (600 ms) paused it. (With `suspect_on_close` its closed connection pauses it at once.)
    let paused = killed.elapsed();
    assert!(
        paused >= Duration::from_millis(400),
        "paused {paused:?} after the kill: by a hint, not its lease"
    );
    // Paused first: out of placement, its objects kept but not reachable. Every new put lands
    // on the survivor.
    assert!(matches!(
        c.exist("lost").map_err(|e| e.code().as_i32()),
        Err(-3018) | Err(-3007)
    ));
    for i in 0..20 {
        c.put(
            &format!("after-{i}"),
            &pattern("a", 1000),
            &PutOptions::default(),
        )
        .unwrap();
        let info = c.query(&format!("after-{i}")).unwrap();
        assert_eq!(info.replicas[0].rank, cluster.locals[1].rank);
    }
    // Past the grace it is dead: its segment and its objects are gone.
    wait_for("death past the grace", Duration::from_secs(10), || {
        c.status().unwrap().segments.len() == 1
    });
    assert_eq!(c.exist("lost").unwrap_err().code().as_i32(), -3007);
}

#[test]
fn local_services_register_again_after_a_meta_restart() {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let start_meta = || {
        Command::new(bin("mmc-meta"))
            .args(["--listen", &url, "--log-level", "warn"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut meta = start_meta();
    let config = mmc_dataplane::ClientConfig {
        meta_url: url.clone(),
        timeout_ms: 5000,
        ..Default::default()
    };
    let mut c = None;
    wait_for("meta start", Duration::from_secs(10), || {
        c = mmc_dataplane::Client::connect(&config).ok();
        c.is_some()
    });
    let mut local = Command::new(bin("mmc-local"))
        .args(["--meta", &url, "--dram", "16MB", "--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let c = c.unwrap();
    wait_for("registration", Duration::from_secs(10), || {
        c.status().map(|s| s.segments.len() == 1).unwrap_or(false)
    });
    meta.kill().unwrap();
    meta.wait().unwrap();
    let mut meta = start_meta();
    // The same client reconnects on its own; the local service registers again on its own.
    wait_for("re-registration", Duration::from_secs(15), || {
        c.status().map(|s| s.segments.len() == 1).unwrap_or(false)
    });
    // Between the meta service's answer and the service opening its fence at the new
    // incarnation, a copy is refused (-3018, never misplaced): wait for the first put to land.
    wait_for("a put after the restart", Duration::from_secs(10), || {
        c.put("after-restart", b"v", &PutOptions::default()).is_ok()
    });
    assert_eq!(c.get("after-restart").unwrap(), b"v");
    let _ = local.kill();
    let _ = local.wait();
    let _ = meta.kill();
    let _ = meta.wait();
}

/// A local service learns what it holds from its heartbeat replies: puts appear in its index,
/// removes leave it.
#[test]
fn a_local_service_keeps_the_index_of_what_it_holds() {
    let cluster = Cluster::start(&[], &[]);
    let local = mmc_dataplane::LocalService::start(&mmc_dataplane::LocalConfig {
        meta_url: cluster.meta_url(),
        data_url: "tcp://127.0.0.1:0".into(),
        dram_bytes: 16 << 20,
        heartbeat_ms: 50,
        ..mmc_dataplane::LocalConfig::default()
    })
    .unwrap();
    let c = cluster.client();
    let keys: Vec<String> = (0..50).map(|i| format!("held-{i:02}")).collect();
    for key in &keys {
        c.put(key, &pattern(key, 3000), &PutOptions::default())
            .unwrap();
    }
    wait_for(
        "the index to hold every put",
        Duration::from_secs(10),
        || local.index().len() == keys.len(),
    );
    let index = local.index();
    for key in &keys {
        let info = c.query(key).unwrap();
        let e = index[key.as_str()];
        let r = &info.replicas[0];
        assert_eq!(
            (e.segment, e.offset, e.len),
            (r.segment, r.offset, 3000),
            "{key}"
        );
    }
    c.remove(&keys[0]).unwrap();
    wait_for(
        "the index to drop a removed key",
        Duration::from_secs(10),
        || !local.index().contains_key(keys[0].as_str()),
    );
    assert_eq!(local.index().len(), keys.len() - 1);
    local.stop();
}

#[test]
fn metrics_and_health_endpoints() {
    let port = free_port();
    let cluster = Cluster::start(&["16MB"], &["--metrics", &format!("127.0.0.1:{port}")]);
    let c = cluster.client();
    c.put("m", b"v", &PutOptions::default()).unwrap();
    let get = |path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let health = get("/health");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("\r\n\r\nok "),
        "{health}"
    );
    let metrics = get("/metrics");
    assert!(metrics.contains("mmc_objects 1"), "{metrics}");
    assert!(metrics.contains("mmc_segment_capacity_bytes{"), "{metrics}");
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
}
