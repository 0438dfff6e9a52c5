//! High availability through etcd, with real processes: etcd, three `mmc-meta` electing a leader
//! through an etcd lease, two `mmc-local` and two clients under a paced put/get load, all finding
//! the leader through etcd. The leader is killed (kill -9): a standby is elected when its lease
//! expires, the local services follow it and rejoin with their indexes, and it rebuilds the
//! directory from them. Prints the takeover time (kill to new leader serving, and kill to every
//! object readable), operations and errors by code per phase, objects lost and wrong bytes. The old
//! leader, started again, stands by. Skipped (with a printed reason) when etcd is not installed
//! (`apt-get install etcd-server`; scripts/test.sh installs it).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ha::HaCluster;
use common::load::{self, Kind, Load, Spec};
use mmc_config::DataOpType;
use mmc_dataplane::Client;

const OBJECT_BYTES: usize = 4096;
/// Objects put before the kill: half with one replica, half with two.
const OBJECTS: usize = 400;
const TIMEOUT_MS: u64 = 5_000;
/// The leader's etcd lease: a standby takes over at most this long after the kill (plus a poll).
const LEASE_S: u64 = 2;
const KILL_AT_MS: u64 = 1_500;
/// How long the load runs on after the kill.
const AFTER_MS: u64 = 8_000;
/// The local services' heartbeat period (their index lags the directory by up to one).
const HEARTBEAT_MS: u64 = 1_000;

#[test]
fn a_standby_meta_takes_over_through_etcd_and_rebuilds_every_object() {
    let lease = LEASE_S.to_string();
    let Some(mut cluster) = HaCluster::start(3, &["--etcd-lease-s", &lease]) else {
        println!("SKIPPED: no etcd binary (apt-get install etcd-server, or set MMC_ETCD)");
        return;
    };
    let first = cluster.wait_leader(None, Duration::from_secs(15));
    println!(
        "meta {first} elected first, at {:?}",
        cluster.leader_in_etcd()
    );
    cluster.add_local("64MB");
    cluster.add_local("64MB");

    let c = Client::connect(&cluster.client_config(TIMEOUT_MS)).expect("client connects");
    let mut keys = load::preload(&c, "one", OBJECTS / 2, OBJECT_BYTES, 1);
    keys.extend(load::preload(&c, "two", OBJECTS / 2, OBJECT_BYTES, 2));
    // The services learn what they hold on their heartbeats: wait two periods.
    std::thread::sleep(Duration::from_millis(2 * HEARTBEAT_MS + 500));

    let total = Duration::from_millis(KILL_AT_MS + AFTER_MS);
    let loads: Vec<(&'static str, Load)> = [("shm", None), ("tcp", Some(DataOpType::Tcp))]
        .into_iter()
        .map(|(t, transport)| {
            let cfg = mmc_dataplane::ClientConfig {
                transport,
                ..cluster.client_config(TIMEOUT_MS)
            };
            let client = Arc::new(Client::connect(&cfg).expect("load client connects"));
            let spec = Spec {
                prefix: format!("load-{t}"),
                puts_per_s: 10,
                gets_per_s: 25,
                object_bytes: OBJECT_BYTES,
                replicas: 1,
                max: total,
            };
            (t, Load::start(client.clone(), client, spec, keys.clone()))
        })
        .collect();
    let clock = &loads[0].1;
    std::thread::sleep(Duration::from_millis(KILL_AT_MS).saturating_sub(clock.now()));
    let epoch_before = cluster.epoch_in_etcd();
    let killed = clock.now();
    let killed_at = Instant::now();
    cluster.kill_meta(first);

    // A standby is elected once the lease expires.
    let second = cluster.wait_leader(Some(first), Duration::from_secs(LEASE_S + 10));
    let elected_in = killed_at.elapsed();
    assert_ne!(second, first, "the killed meta service cannot lead");
    let elected = clock.now();
    // The new leader numbers incarnations and put tokens above every one the old leader used.
    let epoch_after = cluster.epoch_in_etcd();
    assert!(
        epoch_after > epoch_before,
        "epoch {epoch_after} not above the old leader's floor {epoch_before}"
    );

    // Every object readable: one batch exist waits (Busy) while the directory is rebuilt.
    let checker = Client::connect(&cluster.client_config(TIMEOUT_MS)).expect("checker connects");
    let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let mut readable_in = None;
    while killed_at.elapsed() < Duration::from_secs(LEASE_S + 15) {
        let found = checker
            .batch_exist(&refs)
            .map(|r| r.iter().filter(|x| x.is_ok()).count())
            .unwrap_or(0);
        if found == OBJECTS {
            readable_in = Some(killed_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // The old leader comes back as a standby: it does not take the key from the new leader.
    cluster.restart_meta(first);
    std::thread::sleep(Duration::from_millis(1_500));
    let leaders = cluster.leaders();
    assert_eq!(
        leaders.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [second],
        "the restarted meta service must stand by"
    );
    let new_leader = format!("tcp://{}", leaders[0].1);
    assert_eq!(cluster.leader_in_etcd(), Some(new_leader.clone()));

    std::thread::sleep(total.saturating_sub(clock.now()));
    let reports: Vec<(&'static str, load::Report)> =
        loads.into_iter().map(|(t, l)| (t, l.finish())).collect();

    // Every object put before the kill reads back exact.
    let mut lost = 0;
    let mut wrong = 0;
    for key in &keys {
        match checker.get(key) {
            Ok(bytes) if bytes == common::pattern(key, OBJECT_BYTES) => {}
            Ok(_) => wrong += 1,
            Err(_) => lost += 1,
        }
    }
    println!(
        "leader (meta {first}) kill -9 at {killed:.2?}: meta {second} elected {elected_in:.2?} \
         later (lease {LEASE_S} s) and serving at {new_leader}; all {OBJECTS} objects readable \
         {:.2?} after the kill; lost {lost}, wrong bytes {wrong}; meta {first} restarted: standby",
        readable_in.unwrap_or(Duration::MAX)
    );
    let settled = elected + Duration::from_millis(2_500);
    for (t, r) in &reports {
        for kind in [Kind::Put, Kind::Get] {
            println!(
                "  {t} client: {kind:?}s before {}; takeover {}; rebuilding {}; after {}",
                r.tally(kind, Duration::ZERO, killed),
                r.tally(kind, killed, elected),
                r.tally(kind, elected, settled),
                r.tally(kind, settled, Duration::MAX)
            );
        }
        assert_eq!(r.wrong_bytes, 0, "{t}: wrong bytes");
        // Objects the load committed within a heartbeat of the kill may be lost: the services'
        // indexes lag the directory by up to one heartbeat. Every other one must read back.
        let window = Duration::from_millis(HEARTBEAT_MS + 500);
        let may_be_lost: HashSet<&str> = r
            .ops
            .iter()
            .filter(|o| o.kind == Kind::Put && o.code == 0)
            .filter(|o| o.at + o.took + window >= killed && o.at <= killed + window)
            .map(|o| o.key.as_str())
            .collect();
        for kind in [Kind::Put, Kind::Get] {
            let after = r.tally(kind, settled, Duration::MAX);
            let failed: Vec<_> = r
                .ops
                .iter()
                .filter(|o| o.kind == kind && o.at >= settled && o.code != 0)
                .filter(|o| !(o.code == -3007 && may_be_lost.contains(o.key.as_str())))
                .map(|o| (o.key.as_str(), o.code))
                .collect();
            assert!(
                after.ops > 0 && failed.is_empty(),
                "{t}: {kind:?}s after the takeover: {after}; not explained by the index lag: {failed:?}"
            );
        }
        let mut lost_load = Vec::new();
        let mut buf = vec![0u8; OBJECT_BYTES];
        for key in &r.committed {
            match checker.get_into(key, &mut buf) {
                Ok(n) => assert!(
                    n as usize == OBJECT_BYTES && buf == common::pattern(key, OBJECT_BYTES),
                    "{t}: wrong bytes for {key}"
                ),
                Err(e) => lost_load.push((key.clone(), e.code().as_i32())),
            }
        }
        println!(
            "  {t} client: {} committed objects, {} lost {lost_load:?} ({} committed within a \
             heartbeat of the kill)",
            r.committed.len(),
            lost_load.len(),
            may_be_lost.len()
        );
        for (key, code) in &lost_load {
            assert!(
                may_be_lost.contains(key.as_str()),
                "{t}: {key}, committed outside a heartbeat of the kill ({killed:?}), lost with {code}"
            );
        }
    }
    assert_eq!(wrong, 0, "wrong bytes after the takeover");
    assert_eq!(lost, 0, "objects lost across the takeover");
    let readable_in = readable_in.expect("every object readable after the takeover");
    // Lease expiry (2 s) plus the rebuild; the bound leaves room for a loaded machine.
    assert!(
        readable_in < Duration::from_secs(LEASE_S + 6),
        "readable again {readable_in:?} after the kill"
    );
}

/// A leader stopped by a signal releases its lease: a standby serves at once, not a lease later.
/// A leader cut off from etcd (etcd frozen) stops serving before its lease can expire, so two
/// leaders never serve at once; once etcd is back, one is elected again.
#[test]
fn a_leader_hands_over_on_stop_and_steps_down_without_etcd() {
    let Some(mut cluster) = HaCluster::start(2, &["--etcd-lease-s", &LEASE_S.to_string()]) else {
        println!("SKIPPED: no etcd binary (apt-get install etcd-server, or set MMC_ETCD)");
        return;
    };
    let first = cluster.wait_leader(None, Duration::from_secs(15));
    let stopped_at = Instant::now();
    cluster.signal_meta(first, "TERM");
    let second = cluster.wait_leader(Some(first), Duration::from_secs(LEASE_S + 10));
    let handed_over = stopped_at.elapsed();
    assert_ne!(second, first);
    println!(
        "leader (meta {first}) stopped by SIGTERM: meta {second} serving {handed_over:.2?} later"
    );
    assert!(
        handed_over < Duration::from_secs(LEASE_S),
        "a stopped leader must release its lease, not let it expire: {handed_over:?}"
    );
    cluster.kill_meta(first);

    // etcd frozen: the leader cannot renew its lease and must stop serving within 2/3 of it.
    cluster.signal_etcd("STOP");
    let stepped_down = common::wait_until(
        "the leader steps down without etcd",
        Duration::from_secs(LEASE_S + 5),
        || cluster.leaders().is_empty(),
    );
    cluster.signal_etcd("CONT");
    println!(
        "etcd frozen: the leader stopped serving {stepped_down:.2?} after the freeze (lease {LEASE_S} s)"
    );
    assert!(
        stepped_down < Duration::from_millis(LEASE_S * 1000),
        "the leader served {stepped_down:?} without renewing its {LEASE_S} s lease"
    );
    let again = cluster.wait_leader(None, Duration::from_secs(LEASE_S + 15));
    println!("etcd back: meta {again} leads again");
    let c = Client::connect(&cluster.client_config(TIMEOUT_MS)).expect("client connects");
    assert!(
        c.batch_exist(&["nothing"]).is_ok(),
        "the new leader answers"
    );
}

/// A leader frozen (SIGSTOP) past its lease: a standby takes over, and clients and the local
/// service leave the frozen one after at most one call's timeout. Woken (SIGCONT), the old leader
/// answers nothing (its lease lapsed) and stands by.
#[test]
fn a_frozen_leader_is_replaced_and_stands_by_when_it_wakes() {
    let Some(mut cluster) = HaCluster::start(2, &["--etcd-lease-s", &LEASE_S.to_string()]) else {
        println!("SKIPPED: no etcd binary (apt-get install etcd-server, or set MMC_ETCD)");
        return;
    };
    let first = cluster.wait_leader(None, Duration::from_secs(15));
    let first_addr = cluster.leader_in_etcd().expect("a leader");
    cluster.add_local("32MB");
    let timeout_ms = 2_000;
    let c = Client::connect(&cluster.client_config(timeout_ms)).expect("client connects");
    let keys = load::preload(&c, "frozen", 20, OBJECT_BYTES, 1);
    std::thread::sleep(Duration::from_millis(2 * HEARTBEAT_MS + 500));

    cluster.signal_meta(first, "STOP");
    let frozen_at = Instant::now();
    let other = 1 - first;
    let elected = common::wait_until(
        "a standby elected while the leader is frozen",
        Duration::from_secs(LEASE_S + 10),
        || {
            let named = cluster.leader_in_etcd();
            named.is_some()
                && named != Some(first_addr.clone())
                && cluster.leaders().iter().any(|(i, _)| *i == other)
        },
    );
    // The client's pooled connections lead to the frozen process, whose kernel still accepts:
    // each call may wait out its timeout once before the client asks etcd again.
    let mut failed = 0;
    let readable = common::wait_until(
        "every object readable through the new leader",
        Duration::from_secs(20),
        || {
            let ok = keys.iter().all(|k| {
                c.get(k)
                    .is_ok_and(|b| b == common::pattern(k, OBJECT_BYTES))
            });
            failed += usize::from(!ok);
            ok
        },
    );
    cluster.signal_meta(first, "CONT");
    let stood_by = common::wait_until(
        "the woken leader stands by",
        Duration::from_secs(LEASE_S + 5),
        || !cluster.leaders().iter().any(|(i, _)| *i == first),
    );
    println!(
        "leader (meta {first}) frozen: meta {other} elected {elected:.2?} later; all 20 objects \
         read back {:.2?} after the freeze ({failed} rounds failed); woken after {:.2?}, it stood \
         by within {stood_by:.2?}",
        elected + readable,
        frozen_at.elapsed()
    );
    assert_ne!(
        cluster.leader_in_etcd(),
        Some(first_addr),
        "the woken leader took the key back"
    );
    for k in &keys {
        assert_eq!(
            c.get(k).expect("get after the wake"),
            common::pattern(k, OBJECT_BYTES)
        );
    }
}
