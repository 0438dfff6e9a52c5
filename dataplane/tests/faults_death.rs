//! Death detection through real processes: a local service killed (SIGKILL) under a paced put
//! load leaves placement within a second (its meta connection closes; clients that cannot reach
//! it report it), long before its heartbeat lease (5 s by default) runs out. Prints its figures.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pattern, Cluster};
use mmc_dataplane::PutOptions;

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
