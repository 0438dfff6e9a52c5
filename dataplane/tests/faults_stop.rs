//! Frozen processes under a paced put/get load, through real processes: a local service stopped
//! (SIGSTOP) for 1 s (under its member timeout) and for 10 s (past it, within its grace), and the
//! meta service stopped for 10 s. Nothing is lost, no member is dropped, and every call either
//! succeeds or fails within its timeout. Each test prints its figures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load::{self, Kind, Load, Spec};
use common::{pattern, wait_until, Cluster};
use mmc_config::DataOpType;
use mmc_dataplane::{Client, PutOptions};

const OBJECT_BYTES: usize = 64 * 1024;
const PRELOAD: usize = 100;
/// 1 s is under it, 10 s well past it (and within the grace).
const MEMBER_TIMEOUT_MS: u64 = 2_000;
const MEMBER_GRACE_MS: u64 = 20_000;
/// The loads' client timeout.
const TIMEOUT_MS: u64 = 3_000;
const STOP_AT_MS: u64 = 1_500;
/// How long the load runs on after SIGCONT.
const AFTER_MS: u64 = 3_000;
/// The key an impatient writer puts while the meta service is stopped.
const KEY: &str = "impatient";

fn spec(prefix: &str, max: Duration) -> Spec {
    Spec {
        prefix: prefix.into(),
        puts_per_s: 10,
        gets_per_s: 25,
        object_bytes: OBJECT_BYTES,
        replicas: 2,
        max,
    }
}

/// (segment id, alive) of every segment.
fn segments(c: &Client) -> Vec<(u32, bool)> {
    let s = c.status().unwrap();
    s.segments.iter().map(|s| (s.segment, s.alive)).collect()
}

/// A client per transport, each running a load; `freeze` is called at [`STOP_AT_MS`] with the
/// cluster and must return (stopped at, resumed at) on the loads' clock.
fn run(
    cluster: &Cluster,
    name: &str,
    stop: Duration,
    freeze: impl FnOnce(&Load) -> (Duration, Duration),
) -> Vec<(&'static str, load::Report)> {
    let c = cluster.client();
    let preloaded = load::preload(&c, name, PRELOAD, OBJECT_BYTES, 2);
    let total = Duration::from_millis(STOP_AT_MS + AFTER_MS) + stop;
    let loads: Vec<(&'static str, Load)> = [("shm", None), ("tcp", Some(DataOpType::Tcp))]
        .into_iter()
        .map(|(t, transport)| {
            let client = Arc::new(cluster.client_with(TIMEOUT_MS, transport));
            let spec = spec(&format!("{name}-{t}"), total);
            (
                t,
                Load::start(client.clone(), client, spec, preloaded.clone()),
            )
        })
        .collect();
    let clock = &loads[0].1;
    std::thread::sleep(Duration::from_millis(STOP_AT_MS).saturating_sub(clock.now()));
    let (stopped, resumed) = freeze(clock);
    std::thread::sleep(total.saturating_sub(clock.now()));
    let reports: Vec<(&'static str, load::Report)> =
        loads.into_iter().map(|(t, l)| (t, l.finish())).collect();
    for (t, r) in &reports {
        println!(
            "  {t} client: puts before {}; during {}; after {}",
            r.tally(Kind::Put, Duration::ZERO, stopped),
            r.tally(Kind::Put, stopped, resumed),
            r.tally(Kind::Put, resumed, Duration::MAX)
        );
        println!(
            "  {t} client: gets before {}; during {}; after {}; wrong bytes {}",
            r.tally(Kind::Get, Duration::ZERO, stopped),
            r.tally(Kind::Get, stopped, resumed),
            r.tally(Kind::Get, resumed, Duration::MAX),
            r.wrong_bytes
        );
    }
    reports
}

/// Every committed object read back; asserts nothing lost, no wrong bytes, no call past its
/// timeout (with slack for a loaded machine).
fn check(c: &Client, reports: &[(&'static str, load::Report)]) {
    let bound = Duration::from_millis(TIMEOUT_MS + 3_000);
    for (t, r) in reports {
        let (lost, wrong) = r.read_back(c);
        println!(
            "  {t} client: read back {} objects after the load: lost {lost:?}, wrong bytes {wrong}",
            r.committed.len()
        );
        assert_eq!(r.wrong_bytes + wrong, 0, "{t}: never wrong bytes");
        assert!(lost.is_empty(), "{t}: nothing lost: {lost:?}");
        let longest = r.all(Kind::Get).max.max(r.all(Kind::Put).max);
        assert!(longest < bound, "{t}: a call took {longest:?}");
        for o in r.ops.iter().filter(|o| o.code != 0) {
            // A timeout, or a service out of reach; never an odd code.
            assert!(
                [-3004, -3018, -3013].contains(&o.code),
                "{t}: {:?} of {} failed with {}",
                o.kind,
                o.key,
                o.code
            );
        }
    }
}

fn stop_local(secs: u64) {
    let cluster = Cluster::start(
        &["64MB", "64MB", "64MB"],
        &[
            "--member-timeout-ms",
            &MEMBER_TIMEOUT_MS.to_string(),
            "--member-grace-ms",
            &MEMBER_GRACE_MS.to_string(),
        ],
    );
    let c = cluster.client();
    let stop = Duration::from_secs(secs);
    let before = segments(&c);
    let mut paused_seen = false;
    println!(
        "local SIGSTOP {secs} s, 2 replicas on 3 services ({OBJECT_BYTES} B objects, 10 puts/s + \
         25 gets/s per client, timeout {TIMEOUT_MS} ms, member timeout {MEMBER_TIMEOUT_MS} ms, \
         grace {MEMBER_GRACE_MS} ms):"
    );
    let reports = run(&cluster, &format!("stop{secs}"), stop, |clock| {
        cluster.signal_local(0, "STOP");
        let stopped = clock.now();
        while clock.now() < stopped + stop {
            paused_seen |= segments(&c).iter().any(|(_, alive)| !alive);
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster.signal_local(0, "CONT");
        (stopped, clock.now())
    });
    let back = wait_until("the re-admission", Duration::from_secs(10), || {
        segments(&c) == before
    });
    println!(
        "  paused during the stop: {paused_seen}; same segments and incarnations {:.2} s after \
         the load",
        back.as_secs_f64()
    );
    check(&c, &reports);
    if secs * 1_000 > MEMBER_TIMEOUT_MS * 2 {
        assert!(
            paused_seen,
            "a stop well past the member timeout pauses the service"
        );
    }
}

#[test]
fn a_local_service_stopped_for_1s_loses_nothing() {
    stop_local(1);
}

#[test]
fn a_local_service_stopped_for_10s_loses_nothing() {
    stop_local(10);
}

#[test]
fn a_meta_service_stopped_for_10s_loses_nothing_and_drops_no_member() {
    // No grace: a member counted silent past its timeout would be dropped with its objects.
    let cluster = Cluster::start(
        &["64MB", "64MB", "64MB"],
        &[
            "--member-timeout-ms",
            &MEMBER_TIMEOUT_MS.to_string(),
            "--member-grace-ms",
            "0",
        ],
    );
    let c = cluster.client();
    let before = segments(&c);
    let stop = Duration::from_secs(10);
    // A patient client: its calls wait through the stop.
    let patient = Arc::new(cluster.client_with(20_000, None));
    let waiting = {
        let p = patient.clone();
        move || p.status().map(|s| s.objects)
    };
    println!(
        "meta SIGSTOP 10 s, 2 replicas on 3 services (timeout {TIMEOUT_MS} ms; member timeout \
         {MEMBER_TIMEOUT_MS} ms, grace 0):"
    );
    // An impatient writer: its put at the stop times out; what does the key say afterwards?
    let impatient = Arc::new(cluster.client_with(TIMEOUT_MS, None));
    let mut patient_call = None;
    let mut again = None;
    let reports = run(&cluster, "metastop", stop, |clock| {
        cluster.signal_meta("STOP");
        let stopped = clock.now();
        let call = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            (waiting(), start.elapsed())
        });
        let first = impatient.put(KEY, &pattern(KEY, OBJECT_BYTES), &PutOptions::default());
        std::thread::sleep((stopped + stop).saturating_sub(clock.now()));
        cluster.signal_meta("CONT");
        let resumed = clock.now();
        patient_call = Some(call.join().unwrap());
        std::thread::sleep(Duration::from_millis(500));
        let second = impatient.put(KEY, &pattern(KEY, OBJECT_BYTES), &PutOptions::default());
        again = Some((first, second));
        (stopped, resumed)
    });
    let (answer, waited) = patient_call.unwrap();
    println!(
        "  a call with a 20 s timeout made at the stop: {} after {:.2} s",
        match &answer {
            Ok(n) => format!("answered ({n} objects)"),
            Err(e) => format!("failed {}", e.code().as_i32()),
        },
        waited.as_secs_f64()
    );
    let (first, second) = again.unwrap();
    let code = |r: &mmc_dataplane::Result<()>| r.as_ref().map_or_else(|e| e.code().as_i32(), |_| 0);
    println!(
        "  a put with a {TIMEOUT_MS} ms timeout at the stop: {}; the same put by the same client \
         0.5 s after SIGCONT: {}{}",
        code(&first),
        code(&second),
        if code(&second) == -3006 {
            " (its allocation, applied when the meta service woke, stays pending until the \
             writer's connections close or pending_timeout_ms)"
        } else {
            ""
        }
    );
    assert_eq!(code(&first), -3004, "the put at the stop times out");
    let after = segments(&c);
    println!("  segments before {before:?}, after {after:?}");
    assert!(
        answer.is_ok(),
        "a call within its timeout waits for the meta service"
    );
    assert_eq!(after, before, "no member dropped or registered again");
    check(&c, &reports);
}
