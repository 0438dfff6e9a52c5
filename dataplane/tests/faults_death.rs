//! Death detection through real processes: a local service killed (SIGKILL) under a paced put
//! load leaves placement within a second (its meta connection closes; clients that cannot reach
//! it report it), long before its heartbeat lease (5 s by default) runs out; the meta service's
//! probe (its data endpoint refuses connections) then drops it with its objects, long before its
//! grace (20 s) runs out. A frozen service (SIGSTOP: its kernel still accepts connections) is
//! paused by a report but not dropped by the probe. Each test prints its figures.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pattern, wait_until, Cluster};
use mmc_controlplane::msg::{Reply, Request, PREFERRED_AFFINITY};
use mmc_dataplane::{Client, PutOptions};
use mmc_meta_service::rpc::MetaConn;

const PUTS_PER_S: u64 = 20;
const LOAD_MS: u64 = 4_000;
const KILL_AT_MS: u64 = 1_500;
const OBJECT_BYTES: usize = 64 * 1024;

#[test]
fn a_killed_local_service_is_out_of_placement_within_a_second() {
    // Default member timeout (5 s) and grace: only the hints can explain a fast exclusion.
    let mut cluster = Cluster::start(&["64MB", "64MB"], &[]);
    let victim = cluster.locals[0].rank;
    let loader = cluster.client();
    let watcher = cluster.client();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let period = Duration::from_millis(1_000 / PUTS_PER_S);
            let mut outcomes = Vec::new();
            let mut i = 0u64;
            while started.elapsed() < Duration::from_millis(LOAD_MS)
                && !stop.load(Ordering::Acquire)
            {
                let key = format!("death-{i:04}");
                let at = started.elapsed();
                let r = loader.put(&key, &pattern(&key, OBJECT_BYTES), &PutOptions::default());
                outcomes.push((at, key, r.map_err(|e| e.code().as_i32())));
                i += 1;
                let next = period * i as u32;
                if let Some(wait) = next.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            (loader, outcomes)
        })
    };
    std::thread::sleep(Duration::from_millis(KILL_AT_MS).saturating_sub(started.elapsed()));
    let victim_alive = |c: &mmc_dataplane::Client| {
        c.status()
            .unwrap()
            .segments
            .iter()
            .any(|s| s.rank == victim && s.alive)
    };
    assert!(
        victim_alive(&watcher),
        "both services placed on before the kill"
    );
    cluster.kill_local(0);
    let killed = Instant::now();
    let killed_at = started.elapsed();
    while victim_alive(&watcher) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the killed service never left placement"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let excluded = killed.elapsed();
    let (loader, outcomes) = load.join().expect("load thread");
    stop.store(true, Ordering::Release);
    // Where each successful put after the exclusion landed: never on the victim.
    let mut failed: BTreeMap<i32, usize> = BTreeMap::new();
    let mut after_kill = 0;
    let mut on_victim_after_exclusion = 0;
    for (at, key, r) in &outcomes {
        if *at >= killed_at {
            after_kill += 1;
        }
        match r {
            Err(code) => *failed.entry(*code).or_default() += 1,
            Ok(()) if *at >= killed_at + excluded => {
                let info = loader.query(key).unwrap();
                if info.replicas.iter().any(|r| r.rank == victim) {
                    on_victim_after_exclusion += 1;
                }
            }
            Ok(()) => {}
        }
    }
    let failures: usize = failed.values().sum();
    println!(
        "death: {} puts of {OBJECT_BYTES} bytes at {PUTS_PER_S}/s ({after_kill} after the kill \
         at {:.2} s); failed {failures} (by code: {failed:?}); killed service out of placement \
         {:.1} ms after SIGKILL (and reaping) (member timeout 5 s); puts placed on it after that: \
         {on_victim_after_exclusion}",
        outcomes.len(),
        killed_at.as_secs_f64(),
        excluded.as_secs_f64() * 1e3,
    );
    assert!(
        excluded < Duration::from_secs(1),
        "out of placement within 1 s, took {excluded:?}"
    );
    assert_eq!(on_victim_after_exclusion, 0, "no put placed on a suspect");
    assert!(failures <= 2, "at most 2 failed puts, got {failed:?}");
}

const PROBED_OBJECTS: usize = 20;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The meta service's `/metrics` text.
fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the metric line that starts with `name` (labels included), 0 when absent.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

fn pinned(rank: u32) -> PutOptions {
    PutOptions {
        policy: PREFERRED_AFFINITY,
        preferred: vec![rank as i32],
        ..PutOptions::default()
    }
}

/// `PROBED_OBJECTS` objects of 1 replica on each of the first two services: (victim's keys,
/// survivor's keys).
fn fill(cluster: &Cluster, c: &Client, tag: &str) -> (Vec<String>, Vec<String>) {
    let mut sets = (Vec::new(), Vec::new());
    for (i, set) in [&mut sets.0, &mut sets.1].into_iter().enumerate() {
        let rank = cluster.locals[i].rank;
        for n in 0..PROBED_OBJECTS {
            let key = format!("{tag}-{rank}-{n:02}");
            c.put(&key, &pattern(&key, OBJECT_BYTES), &pinned(rank))
                .unwrap();
            assert_eq!(c.query(&key).unwrap().replicas[0].rank, rank);
            set.push(key);
        }
    }
    sets
}

/// Whether `rank` has a segment in the status: `None` if not listed (dropped), else whether it
/// is alive (in placement).
fn listed(c: &Client, rank: u32) -> Option<bool> {
    let s = c.status().unwrap();
    let mine: Vec<bool> = s
        .segments
        .iter()
        .filter(|g| g.rank == rank)
        .map(|g| g.alive)
        .collect();
    (!mine.is_empty()).then(|| mine.iter().all(|a| *a))
}

#[test]
fn a_killed_local_service_is_dropped_by_the_probe_within_a_second() {
    // Default member timeout (5 s) and grace (20 s): only the hints and the probe can explain a
    // drop within seconds.
    let port = free_port();
    let mut cluster = Cluster::start(
        &["64MB", "64MB"],
        &["--metrics", &format!("127.0.0.1:{port}")],
    );
    let victim = cluster.locals[0].rank;
    let c = cluster.client();
    let (lost, kept) = fill(&cluster, &c, "probe");
    // A reader keeps getting every object, the dead service's too, 1 get per 5 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let reader = {
        let (stop, client) = (stop.clone(), cluster.client());
        let keys: Vec<String> = lost.iter().chain(&kept).cloned().collect();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            let mut wrong = 0;
            let mut i = 0;
            while !stop.load(Ordering::Acquire) && started.elapsed() < Duration::from_secs(20) {
                let key = &keys[i % keys.len()];
                let at = started.elapsed();
                let r = client.get(key);
                if matches!(&r, Ok(v) if *v != pattern(key, OBJECT_BYTES)) {
                    wrong += 1;
                }
                outcomes.push((
                    at,
                    key.clone(),
                    r.map(|_| ()).map_err(|e| e.code().as_i32()),
                ));
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (outcomes, wrong)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(listed(&c, victim), Some(true));
    let killed_at = started.elapsed();
    let killed = Instant::now();
    cluster.kill_local(0);
    let reaped = killed.elapsed();
    // Out of placement (paused) first, then dropped (no longer listed).
    let mut paused = None;
    let dropped = loop {
        let state = listed(&c, victim);
        if paused.is_none() && state != Some(true) {
            paused = Some(killed.elapsed());
        }
        if state.is_none() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the killed service was never dropped (paused after {paused:?})"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let paused = paused.expect("paused before dropped");
    let dropped_at = killed_at + dropped;
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let (outcomes, wrong) = reader.join().expect("reader thread");
    // After the drop its objects are gone (not found), the others are all there, and its keys
    // are free for new puts.
    for key in &lost {
        assert_eq!(c.get(key).unwrap_err().code().as_i32(), -3007, "{key}");
    }
    for key in &kept {
        assert_eq!(c.get(key).unwrap(), pattern(key, OBJECT_BYTES), "{key}");
    }
    let again = &lost[0];
    let value = pattern("again", OBJECT_BYTES);
    c.put(again, &value, &PutOptions::default()).unwrap();
    assert_eq!(c.get(again).unwrap(), value);
    let m = metrics(port);
    let refused = metric(&m, "mmc_member_probes_total{outcome=\"refused\"}");
    let by_probe = metric(&m, "mmc_members_dropped_by_probe_total");

    // Gets of the dead service's objects, by when they started.
    let mut before: BTreeMap<i32, usize> = BTreeMap::new();
    let mut between: BTreeMap<i32, usize> = BTreeMap::new();
    let mut after: BTreeMap<i32, usize> = BTreeMap::new();
    let mut kept_failed = 0;
    for (at, key, r) in &outcomes {
        let code = r.err().unwrap_or(0);
        if !lost.contains(key) {
            kept_failed += usize::from(code != 0);
            continue;
        }
        let phase = if *at < killed_at {
            &mut before
        } else if *at < dropped_at {
            &mut between
        } else {
            &mut after
        };
        *phase.entry(code).or_default() += 1;
    }
    println!(
        "probe: kill -9 of a service holding {PROBED_OBJECTS} of {} objects (1 replica), {} gets \
         at 1 per 5 ms; reaped after {:.1} ms; out of placement {:.1} ms after the kill, dropped \
         (probe: refused) {:.1} ms after it (member timeout 5 s, grace 20 s); its objects' gets \
         by code: before the kill {before:?}, kill to drop {between:?}, after the drop {after:?}; \
         failed gets of the survivor's objects {kept_failed}; wrong bytes {wrong}; probes \
         refused {refused}, members dropped by a probe {by_probe}",
        2 * PROBED_OBJECTS,
        outcomes.len(),
        reaped.as_secs_f64() * 1e3,
        paused.as_secs_f64() * 1e3,
        dropped.as_secs_f64() * 1e3,
    );
    assert_eq!(wrong, 0, "no wrong bytes");
    assert_eq!(kept_failed, 0, "the survivor's objects are always readable");
    assert_eq!(before.keys().copied().collect::<Vec<_>>(), vec![0]);
    assert!(
        after.keys().all(|c| *c == -3007),
        "not found once dropped: {after:?}"
    );
    assert!(
        between.keys().all(|c| [0, -3018, -3007].contains(c)),
        "{between:?}"
    );
    assert!(refused >= 1 && by_probe == 1, "dropped by the probe:\n{m}");
    // Generous: the lease and grace alone would take 25 s.
    assert!(
        dropped < Duration::from_secs(3),
        "dropped after {dropped:?}"
    );
}

#[test]
fn a_frozen_local_service_is_paused_but_not_dropped_by_the_probe() {
    let port = free_port();
    let cluster = Cluster::start(
        &["64MB", "64MB"],
        &["--metrics", &format!("127.0.0.1:{port}")],
    );
    let victim = cluster.locals[0].rank;
    let c = cluster.client();
    let (frozen, _) = fill(&cluster, &c, "frozen");
    // The victim's incarnation, as a client learns it from a lookup.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = MetaConn::connect(cluster.meta_addr.parse().unwrap(), deadline).unwrap();
    let reply = conn
        .call(
            &Request::Lookup {
                keys: vec![frozen[0].clone()],
            },
            deadline,
        )
        .unwrap();
    let Reply::Lookup {
        items, services, ..
    } = reply
    else {
        panic!("lookup answered {reply:?}")
    };
    let incarnation = services
        .iter()
        .find(|s| s.rank == victim)
        .expect("the victim's address")
        .incarnation;
    let leases = items.iter().map(|i| i.lease).collect();
    conn.send_oneway(&Request::Release { leases }, deadline)
        .unwrap();

    cluster.signal_local(0, "STOP");
    let stopped = Instant::now();
    // A client reports it (as one whose transfer to it failed would): paused at once, then
    // probed: its kernel still accepts connections, so the probe confirms nothing.
    conn.send_oneway(
        &Request::Suspect {
            rank: victim,
            incarnation,
        },
        deadline,
    )
    .unwrap();
    let paused = wait_until("the pause", Duration::from_secs(5), || {
        listed(&c, victim) == Some(false)
    });
    let accepted = "mmc_member_probes_total{outcome=\"accepted\"}";
    let probed = wait_until("the probe", Duration::from_secs(5), || {
        metric(&metrics(port), accepted) >= 1
    });
    // Well past the probe: still a (paused) member, its objects kept but not reachable.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(listed(&c, victim), Some(false), "paused, not dropped");
    assert_eq!(c.exist(&frozen[0]).unwrap_err().code().as_i32(), -3018);
    let m = metrics(port);
    assert_eq!(metric(&m, "mmc_members_dropped_by_probe_total"), 0, "{m}");
    assert_eq!(
        metric(&m, "mmc_member_probes_total{outcome=\"refused\"}"),
        0,
        "{m}"
    );
    let stop_ms = stopped.elapsed();
    cluster.signal_local(0, "CONT");
    let back = wait_until("re-admission", Duration::from_secs(10), || {
        listed(&c, victim) == Some(true)
    });
    for key in &frozen {
        assert_eq!(c.get(key).unwrap(), pattern(key, OBJECT_BYTES), "{key}");
    }
    println!(
        "probe: SIGSTOP of a service holding {PROBED_OBJECTS} objects, reported by a client: \
         paused {:.1} ms after the report, probed (accepted) within {:.1} ms; still a member \
         after {:.2} s stopped; re-admitted {:.1} ms after SIGCONT; {PROBED_OBJECTS} of \
         {PROBED_OBJECTS} read back",
        paused.as_secs_f64() * 1e3,
        probed.as_secs_f64() * 1e3 + paused.as_secs_f64() * 1e3,
        stop_ms.as_secs_f64(),
        back.as_secs_f64() * 1e3,
    );
}
