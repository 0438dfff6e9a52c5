//! The meta service killed (kill -9) and restarted under a paced put/get load, through real
//! processes: the local services rejoin with their indexes, the new meta service rebuilds its
//! directory from them, and every object committed before the crash is readable again. Prints the
//! figures: how long after the meta port came back all objects were readable, operations and
//! errors by code before, during and after, objects lost, wrong bytes.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{self, Kind, Load, Spec};
use common::Cluster;
use mmc_config::DataOpType;

const OBJECT_BYTES: usize = 4096;
/// Objects put before the crash: half with one replica, half with two.
const OBJECTS: usize = 1_000;
/// The loads' client timeout.
const TIMEOUT_MS: u64 = 5_000;
const KILL_AT_MS: u64 = 1_500;
/// How long the meta service stays down.
const DOWN_MS: u64 = 1_000;
/// How long the load runs on after the meta service is back.
const AFTER_MS: u64 = 4_000;

#[test]
fn a_restarted_meta_service_rebuilds_every_object_from_the_local_services() {
    // Default timing: heartbeats every second, member timeout 5 s, rebuild window 2 s.
    let mut cluster = Cluster::start(&["64MB", "64MB"], &[]);
    let c = cluster.client();
    let mut keys = load::preload(&c, "one", OBJECTS / 2, OBJECT_BYTES, 1);
    keys.extend(load::preload(&c, "two", OBJECTS / 2, OBJECT_BYTES, 2));
    // The services learn what they hold on their heartbeats: wait two periods, so that the
    // indexes hold every object (a put committed within a heartbeat before a crash may be lost).
    std::thread::sleep(Duration::from_millis(2_500));

    let total = Duration::from_millis(KILL_AT_MS + DOWN_MS + AFTER_MS);
    let loads: Vec<(&'static str, Load)> = [("shm", None), ("tcp", Some(DataOpType::Tcp))]
        .into_iter()
        .map(|(t, transport)| {
            let client = Arc::new(cluster.client_with(TIMEOUT_MS, transport));
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
    let killed = clock.now();
    cluster.kill_meta();
    std::thread::sleep(Duration::from_millis(DOWN_MS));
    // Returns once the new meta service listens.
    cluster.restart_meta();
    let back = clock.now();
    let back_at = Instant::now();

    // Every object readable: one batch exist waits (Busy) while the directory is rebuilt.
    let checker = cluster.client_with(TIMEOUT_MS, None);
    let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
    let mut rebuilt_in = None;
    while back_at.elapsed() < Duration::from_secs(10) {
        let found = checker
            .batch_exist(&refs)
            .map(|r| r.iter().filter(|x| x.is_ok()).count())
            .unwrap_or(0);
        if found == OBJECTS {
            rebuilt_in = Some(back_at.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(total.saturating_sub(clock.now()));
    let reports: Vec<(&'static str, load::Report)> =
        loads.into_iter().map(|(t, l)| (t, l.finish())).collect();

    // Every object before the crash reads back exact.
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
        "meta kill -9 at {killed:.2?}, back (listening) at {back:.2?}: all {OBJECTS} objects \
         readable {:.2?} after the port came back; lost {lost}, wrong bytes {wrong}",
        rebuilt_in.unwrap_or(Duration::MAX)
    );
    let settled = back + Duration::from_millis(2_500);
    for (t, r) in &reports {
        println!(
            "  {t} client: puts before {}; down {}; rebuilding {}; after {}",
            r.tally(Kind::Put, Duration::ZERO, killed),
            r.tally(Kind::Put, killed, back),
            r.tally(Kind::Put, back, settled),
            r.tally(Kind::Put, settled, Duration::MAX)
        );
        println!(
            "  {t} client: gets before {}; down {}; rebuilding {}; after {}",
            r.tally(Kind::Get, Duration::ZERO, killed),
            r.tally(Kind::Get, killed, back),
            r.tally(Kind::Get, back, settled),
            r.tally(Kind::Get, settled, Duration::MAX)
        );
        let (lost_load, wrong_load) = r.read_back(&checker);
        println!(
            "  {t} client: wrong bytes {}, committed objects lost {lost_load:?}",
            r.wrong_bytes
        );
        assert_eq!(r.wrong_bytes + wrong_load, 0, "{t}: wrong bytes");
        let after = r.tally(Kind::Get, settled, Duration::MAX);
        assert!(
            after.ops > 0 && after.failed.is_empty(),
            "{t}: gets after the rebuild: {after}"
        );
        let after = r.tally(Kind::Put, settled, Duration::MAX);
        assert!(
            after.ops > 0 && after.failed.is_empty(),
            "{t}: puts after the rebuild: {after}"
        );
    }
    assert_eq!(wrong, 0, "wrong bytes after the rebuild");
    assert_eq!(lost, 0, "objects lost across the meta restart");
    let rebuilt_in = rebuilt_in.expect("every object readable within 10 s");
    // The target is 2 s; the bound leaves room for a loaded machine.
    assert!(
        rebuilt_in < Duration::from_secs(6),
        "rebuilt in {rebuilt_in:?}"
    );
}
