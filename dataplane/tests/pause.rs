//! A pause is not a death, through real processes: a local service frozen (SIGSTOP) past its
//! member timeout but within its grace comes back with every object, and a frozen meta service
//! counts its own stall against no member. Each test prints its figures.

mod common;

use std::time::{Duration, Instant};

use common::{pattern, Cluster};
use mmc_dataplane::{Client, PutOptions};

const OBJECTS: usize = 200;
const OBJECT_BYTES: usize = 16 * 1024;
const MEMBER_TIMEOUT_MS: u64 = 600;

/// Wait for `cond`, bounded; returns how long it took.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn key(i: usize) -> String {
    format!("paused-{i:03}")
}

fn put_all(c: &Client) {
    for i in 0..OBJECTS {
        c.put(
            &key(i),
            &pattern(&key(i), OBJECT_BYTES),
            &PutOptions::default(),
        )
        .unwrap();
    }
    assert_eq!(c.status().unwrap().objects, OBJECTS as u64);
}

/// How many objects read back exact (the others are lost or wrong; wrong bytes panic).
fn read_back(c: &Client) -> usize {
    let mut kept = 0;
    for i in 0..OBJECTS {
        if let Ok(bytes) = c.get(&key(i)) {
            assert!(
                bytes == pattern(&key(i), OBJECT_BYTES),
                "wrong bytes for {}",
                key(i)
            );
            kept += 1;
        }
    }
    kept
}

/// (segment id, alive) of every segment the meta service lists.
fn segments(c: &Client) -> Vec<(u32, bool)> {
    let s = c.status().unwrap();
    s.segments.iter().map(|s| (s.segment, s.alive)).collect()
}

#[test]
fn a_local_service_paused_within_its_grace_keeps_every_object() {
    let timeout = MEMBER_TIMEOUT_MS.to_string();
    let cluster = Cluster::start(
        &["64MB"],
        &[
            "--member-timeout-ms",
            &timeout,
            "--member-grace-ms",
            "20000",
        ],
    );
    let c = cluster.client();
    put_all(&c);
    let before = segments(&c);
    cluster.signal_local(0, "STOP");
    let stopped = Instant::now();
    let paused_after = wait_for("the pause", Duration::from_secs(10), || {
        segments(&c).iter().all(|(_, alive)| !alive)
    });
    // Paused: the key is held but not reachable.
    assert_eq!(c.exist(&key(0)).unwrap_err().code().as_i32(), -3018);
    // Frozen well past the timeout (several missed heartbeats), then back.
    std::thread::sleep(Duration::from_millis(3 * MEMBER_TIMEOUT_MS));
    cluster.signal_local(0, "CONT");
    let frozen = stopped.elapsed();
    let back_after = wait_for("the re-admission", Duration::from_secs(10), || {
        segments(&c) == before
    });
    let kept = read_back(&c);
    println!(
        "pause: {OBJECTS} objects of {OBJECT_BYTES} bytes; local service stopped {:.2} s \
         (member timeout {:.1} s, grace 20 s); paused {:.2} s after SIGSTOP; re-admitted \
         (same segment, same incarnation) {:.3} s after SIGCONT; kept {kept}, lost {}",
        frozen.as_secs_f64(),
        MEMBER_TIMEOUT_MS as f64 / 1e3,
        paused_after.as_secs_f64(),
        back_after.as_secs_f64(),
        OBJECTS - kept
    );
    assert_eq!(
        kept, OBJECTS,
        "every object survives a pause within the grace"
    );
}

#[test]
fn a_frozen_meta_service_drops_no_member() {
    let timeout = MEMBER_TIMEOUT_MS.to_string();
    // No grace: a member the meta service counted as silent past its timeout would be dropped at
    // once, so only the stall rule keeps the objects.
    let cluster = Cluster::start(
        &["64MB"],
        &["--member-timeout-ms", &timeout, "--member-grace-ms", "0"],
    );
    let c = cluster.client();
    put_all(&c);
    let before = segments(&c);
    cluster.signal_meta("STOP");
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_millis(5 * MEMBER_TIMEOUT_MS));
    cluster.signal_meta("CONT");
    let frozen = stopped.elapsed();
    let after = segments(&c);
    // Let a few heartbeats and ticks pass, then read everything back.
    std::thread::sleep(Duration::from_millis(MEMBER_TIMEOUT_MS));
    let later = segments(&c);
    let kept = read_back(&c);
    println!(
        "meta stall: {OBJECTS} objects; meta service stopped {:.2} s (member timeout {:.1} s, \
         grace 0); segments before {before:?}, after {after:?}, {:.1} s later {later:?}; \
         kept {kept}, lost {}",
        frozen.as_secs_f64(),
        MEMBER_TIMEOUT_MS as f64 / 1e3,
        MEMBER_TIMEOUT_MS as f64 / 1e3,
        OBJECTS - kept
    );
    assert_eq!(
        (after, later),
        (before.clone(), before),
        "no re-registration"
    );
    assert_eq!(kept, OBJECTS, "the meta service's own stall drops nothing");
}
