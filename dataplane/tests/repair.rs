//! Replica repair through real processes: with `replica_policy = best_effort`, puts asking for two
//! replicas on a one-service cluster store one, and the meta service copies the second onto a
//! service that joins later; under the default (strict) policy, objects that lost a replica with
//! a killed service get it back on a live one. Each repaired replica is then the only one left and
//! every object still reads back exact. Prints the figures.

mod common;

use std::time::{Duration, Instant};

use common::{pattern, wait_until, Cluster};
use mmc_dataplane::{Client, PutOptions};

const OBJECTS: usize = 100;
const OBJECT_BYTES: usize = 64 * 1024;

fn two() -> PutOptions {
    PutOptions {
        replicas: 2,
        ..PutOptions::default()
    }
}

fn key(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:03}")
}

/// Replica count of every object.
fn replica_counts(c: &Client, prefix: &str) -> Vec<usize> {
    let keys: Vec<String> = (0..OBJECTS).map(|i| key(prefix, i)).collect();
    let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    c.batch_query(&refs)
        .unwrap()
        .into_iter()
        .map(|r| r.map_or(0, |info| info.replicas.len()))
        .collect()
}

/// Every object reads back exact: (read, wrong); other outcomes panic.
fn read_all(c: &Client, prefix: &str) -> usize {
    (0..OBJECTS)
        .map(|i| {
            let k = key(prefix, i);
            let bytes = c.get(&k).unwrap_or_else(|e| panic!("get {k}: {e}"));
            assert!(bytes == pattern(&k, OBJECT_BYTES), "wrong bytes for {k}");
        })
        .count()
}

#[test]
fn best_effort_puts_store_fewer_replicas_and_repair_adds_the_rest() {
    let mut cluster = Cluster::start(
        &["64MB"],
        &[
            "--replica-policy",
            "best_effort",
            "--member-timeout-ms",
            "1000",
        ],
    );
    let c = cluster.client();
    for i in 0..OBJECTS {
        let k = key("be", i);
        c.put(&k, &pattern(&k, OBJECT_BYTES), &two())
            .unwrap_or_else(|e| panic!("best-effort put {k}: {e}"));
    }
    assert!(
        replica_counts(&c, "be").iter().all(|n| *n == 1),
        "one live service: one replica"
    );
    // A second service joins: repair copies every object onto it.
    let joined = Instant::now();
    cluster.add_local("64MB");
    let took = wait_until(
        "every object repaired to 2 replicas",
        Duration::from_secs(20),
        || replica_counts(&c, "be").iter().all(|n| *n == 2),
    );
    println!("best effort: {OBJECTS} puts with 2 replicas on 1 service stored 1 each; a second service joined and all {OBJECTS} had 2 replicas {took:.2?} later ({:.2?} after the join)", joined.elapsed());
    // The repaired replicas hold the bytes: kill the first service, read everything back.
    cluster.kill_local(0);
    wait_until(
        "the killed service out of the directory's answers",
        Duration::from_secs(10),
        || c.get(&key("be", 0)).is_ok(),
    );
    assert_eq!(read_all(&c, "be"), OBJECTS);
    println!("  first service killed: {OBJECTS} of {OBJECTS} read back from the repaired replicas");
}

#[test]
fn under_the_strict_policy_a_lost_replica_is_repaired_on_a_live_service() {
    // The meta service's probe drops a killed service within about 0.2 s (no grace: should the
    // probe not confirm it, the member timeout does). A paused one's replicas still count, since
    // it may come back with them.
    let mut cluster = Cluster::start(
        &["64MB", "64MB", "64MB"],
        &["--member-timeout-ms", "1000", "--member-grace-ms", "0"],
    );
    let c = cluster.client();
    for i in 0..OBJECTS {
        let k = key("st", i);
        c.put(&k, &pattern(&k, OBJECT_BYTES), &two()).unwrap();
    }
    // Kill one service: the objects that had a replica there are repaired onto the third.
    let victim = cluster.locals[0].rank;
    let had: usize = {
        let keys: Vec<String> = (0..OBJECTS).map(|i| key("st", i)).collect();
        let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        c.batch_query(&refs)
            .unwrap()
            .into_iter()
            .filter(|r| {
                r.as_ref()
                    .is_ok_and(|i| i.replicas.iter().any(|r| r.rank == victim))
            })
            .count()
    };
    let killed = Instant::now();
    cluster.kill_local(0);
    let dropped = wait_until(
        "the killed service dropped",
        Duration::from_secs(10),
        || {
            c.status()
                .is_ok_and(|s| s.segments.iter().all(|seg| seg.rank != victim))
        },
    );
    let took = wait_until(
        "every object back to 2 replicas",
        Duration::from_secs(40),
        || {
            let counts = replica_counts(&c, "st");
            counts.iter().all(|n| *n == 2)
        },
    );
    println!(
        "strict: {had} of {OBJECTS} objects had a replica on the killed service, dropped {dropped:.2?} after the kill; all {OBJECTS} had 2 live replicas again {took:.2?} later ({:.2?} after the kill)",
        killed.elapsed()
    );
    // The repaired replicas hold the bytes: kill a second service, read everything back.
    cluster.kill_local(1);
    wait_until(
        "reads succeed with one service left",
        Duration::from_secs(10),
        || c.get(&key("st", 0)).is_ok(),
    );
    assert_eq!(read_all(&c, "st"), OBJECTS);
    println!("  a second service killed: {OBJECTS} of {OBJECTS} read back");
}
