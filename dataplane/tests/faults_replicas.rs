//! A local service killed (SIGKILL) under a paced put/get load, through real processes: with 2
//! replicas no get fails (a get whose first replica's owner is dead falls over to the live one
//! inside the call); with 1 replica the gets of the dead service's objects fail with a code, never
//! with wrong bytes and never past their timeout. Each test prints its figures.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::load::{self, Kind, Load, Spec};
use common::{pattern, wait_until, Cluster};
use mmc_config::DataOpType;
use mmc_dataplane::{Client, PutOptions};

const OBJECT_BYTES: usize = 64 * 1024;
/// The load's client timeout: a get that hangs shows as one that took this long.
const TIMEOUT_MS: u64 = 5_000;
const PRELOAD: usize = 100;
const LOAD_MS: u64 = 6_000;
const KILL_AT_MS: u64 = 2_000;

fn spec(prefix: &str, replicas: u16) -> Spec {
    Spec {
        prefix: prefix.into(),
        puts_per_s: 10,
        gets_per_s: 25,
        object_bytes: OBJECT_BYTES,
        replicas,
        max: Duration::from_millis(LOAD_MS),
    }
}

/// Two loads, one through same-host shared memory and one over TCP, each putting and getting;
/// kill local service `victim` at [`KILL_AT_MS`]; returns (shm report, tcp report, kill time).
fn load_and_kill(
    cluster: &mut Cluster,
    victim: usize,
    replicas: u16,
    preloaded: &[String],
) -> (load::Report, load::Report, Duration) {
    let shm = Arc::new(cluster.client_with(TIMEOUT_MS, None));
    let tcp = Arc::new(cluster.client_with(TIMEOUT_MS, Some(DataOpType::Tcp)));
    let a = Load::start(
        shm.clone(),
        shm,
        spec(&format!("shm-r{replicas}"), replicas),
        preloaded.to_vec(),
    );
    let b = Load::start(
        tcp.clone(),
        tcp,
        spec(&format!("tcp-r{replicas}"), replicas),
        preloaded.to_vec(),
    );
    std::thread::sleep(Duration::from_millis(KILL_AT_MS).saturating_sub(a.now()));
    // Taken before SIGKILL: operations that fail from here on may be its doing.
    let killed_at = a.now();
    cluster.kill_local(victim);
    std::thread::sleep(Duration::from_millis(LOAD_MS).saturating_sub(a.now()));
    (a.finish(), b.finish(), killed_at)
}

/// Print the figures of one load; returns (failed gets, wrong bytes, longest get).
fn figures(name: &str, r: &load::Report, killed_at: Duration) -> (usize, usize, Duration) {
    let gets = r.all(Kind::Get);
    println!(
        "  {name}: puts before the kill {}; after {}",
        r.tally(Kind::Put, Duration::ZERO, killed_at),
        r.tally(Kind::Put, killed_at, Duration::MAX)
    );
    println!(
        "  {name}: gets before the kill {}; after {}; wrong bytes {}",
        r.tally(Kind::Get, Duration::ZERO, killed_at),
        r.tally(Kind::Get, killed_at, Duration::MAX),
        r.wrong_bytes
    );
    (gets.failures(), r.wrong_bytes, gets.max)
}

#[test]
fn with_two_replicas_no_get_fails_when_an_owner_is_killed() {
    let mut cluster = Cluster::start(&["64MB", "64MB", "64MB"], &[]);
    let c = cluster.client();
    let preloaded = load::preload(&c, "r2", PRELOAD, OBJECT_BYTES, 2);
    let victim_rank = cluster.locals[0].rank;
    let on_victim = preloaded
        .iter()
        .filter(|k| {
            c.query(k)
                .unwrap()
                .replicas
                .iter()
                .any(|r| r.rank == victim_rank)
        })
        .count();
    let (shm, tcp, killed_at) = load_and_kill(&mut cluster, 0, 2, &preloaded);
    println!(
        "kill -9 with 2 replicas on 3 services ({OBJECT_BYTES} B objects, 10 puts/s + 25 gets/s \
         per client, timeout {TIMEOUT_MS} ms; killed at {:.2} s; {on_victim} of {PRELOAD} \
         preloaded objects had a replica on it):",
        killed_at.as_secs_f64()
    );
    let (shm_failed, shm_wrong, shm_max) = figures("shm client", &shm, killed_at);
    let (tcp_failed, tcp_wrong, tcp_max) = figures("tcp client", &tcp, killed_at);
    let mut lost = std::collections::BTreeMap::<i32, usize>::new();
    let mut wrong = 0;
    let mut objects = 0;
    for r in [&shm, &tcp] {
        let (l, w) = r.read_back(&c);
        objects += r.committed.len();
        wrong += w;
        for (code, n) in l {
            *lost.entry(code).or_default() += n;
        }
    }
    println!("  read back after the load: {objects} objects, lost {lost:?}, wrong bytes {wrong}");
    assert_eq!(shm_wrong + tcp_wrong + wrong, 0, "never wrong bytes");
    assert_eq!(
        (shm_failed, tcp_failed),
        (0, 0),
        "no get fails with 2 replicas"
    );
    assert!(lost.is_empty(), "nothing lost with 2 replicas: {lost:?}");
    let bound = Duration::from_millis(TIMEOUT_MS + 2_000);
    assert!(shm_max < bound && tcp_max < bound, "no get hangs");
}

#[test]
fn with_two_replicas_on_two_services_gets_survive_and_puts_are_refused() {
    let mut cluster = Cluster::start(&["64MB", "64MB"], &[]);
    let c = cluster.client();
    let preloaded = load::preload(&c, "r2of2", PRELOAD, OBJECT_BYTES, 2);
    let (shm, tcp, killed_at) = load_and_kill(&mut cluster, 0, 2, &preloaded);
    println!(
        "kill -9 with 2 replicas on 2 services ({OBJECT_BYTES} B objects, killed at {:.2} s):",
        killed_at.as_secs_f64()
    );
    let (shm_failed, shm_wrong, _) = figures("shm client", &shm, killed_at);
    let (tcp_failed, tcp_wrong, _) = figures("tcp client", &tcp, killed_at);
    // What a put with 2 replicas says when one service is left.
    let refused = c.put(
        "r2of2-after",
        &pattern("r2of2-after", OBJECT_BYTES),
        &PutOptions {
            replicas: 2,
            ..PutOptions::default()
        },
    );
    let message = match &refused {
        Ok(()) => "stored".to_string(),
        Err(e) => format!("{} ({e})", e.code().as_i32()),
    };
    println!("  a put with 2 replicas and 1 live service: {message}");
    let e = refused.expect_err("2 replicas need 2 live services");
    assert_eq!(e.code().as_i32(), -3013);
    assert!(
        e.to_string().contains("2 replicas"),
        "the error says why: {e}"
    );
    let (lost, wrong) = shm.read_back(&c);
    let (lost_tcp, wrong_tcp) = tcp.read_back(&c);
    println!(
        "  read back: lost {lost:?} / {lost_tcp:?}, wrong bytes {}",
        wrong + wrong_tcp
    );
    assert_eq!(
        shm_wrong + tcp_wrong + wrong + wrong_tcp,
        0,
        "never wrong bytes"
    );
    assert_eq!(
        (shm_failed, tcp_failed),
        (0, 0),
        "no get fails with 2 replicas"
    );
    assert!(lost.is_empty() && lost_tcp.is_empty(), "nothing lost");
}

#[test]
fn with_one_replica_gets_of_a_killed_service_fail_with_a_code() {
    let mut cluster = Cluster::start(&["64MB", "64MB"], &[]);
    let c = cluster.client();
    let preloaded = load::preload(&c, "r1", PRELOAD, OBJECT_BYTES, 1);
    let victim_rank = cluster.locals[0].rank;
    let on_victim: Vec<&String> = preloaded
        .iter()
        .filter(|k| c.query(k).unwrap().replicas[0].rank == victim_rank)
        .collect();
    let (shm, tcp, killed_at) = load_and_kill(&mut cluster, 0, 1, &preloaded);
    println!(
        "kill -9 with 1 replica on 2 services ({OBJECT_BYTES} B objects, killed at {:.2} s; {} of \
         {PRELOAD} preloaded objects only on it):",
        killed_at.as_secs_f64(),
        on_victim.len()
    );
    let (_, shm_wrong, shm_max) = figures("shm client", &shm, killed_at);
    let (_, tcp_wrong, tcp_max) = figures("tcp client", &tcp, killed_at);
    let (lost, wrong) = shm.read_back(&c);
    let (lost_tcp, wrong_tcp) = tcp.read_back(&c);
    println!(
        "  read back: shm load's {} objects lost {lost:?}, tcp load's {} lost {lost_tcp:?}, \
         wrong bytes {}",
        shm.committed.len(),
        tcp.committed.len(),
        wrong + wrong_tcp
    );
    assert_eq!(
        shm_wrong + tcp_wrong + wrong + wrong_tcp,
        0,
        "never wrong bytes"
    );
    // Failures only with the documented codes, only for the dead service's objects.
    for r in [&shm, &tcp] {
        for o in r.ops.iter().filter(|o| o.kind == Kind::Get && o.code != 0) {
            assert!(
                [-3018, -3007].contains(&o.code),
                "get of {} failed with {}",
                o.key,
                o.code
            );
            assert!(o.at + o.took >= killed_at, "a get failed before the kill");
        }
    }
    let preloaded_lost = preloaded.iter().filter(|k| c.get(k).is_err()).count();
    assert_eq!(
        preloaded_lost,
        on_victim.len(),
        "exactly the dead service's objects"
    );
    let bound = Duration::from_millis(TIMEOUT_MS + 2_000);
    assert!(shm_max < bound && tcp_max < bound, "no get hangs");
}

/// A client whose next armed get stops between its lookup and its first copy until the test
/// lets it go on (after killing a service).
struct Gate {
    armed: Arc<Mutex<bool>>,
    reached: mpsc::Receiver<()>,
    go: mpsc::Sender<()>,
}

fn gated(client: &Client) -> Gate {
    let armed = Arc::new(Mutex::new(false));
    let (reached_tx, reached) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let (reached_tx, go_rx) = (Mutex::new(reached_tx), Mutex::new(go_rx));
    let hook_armed = armed.clone();
    assert!(client.set_transfer_hook(Box::new(move || {
        let mut armed = hook_armed.lock().unwrap();
        if *armed {
            *armed = false;
            reached_tx.lock().unwrap().send(()).unwrap();
            go_rx.lock().unwrap().recv().unwrap();
        }
    })));
    Gate { armed, reached, go }
}

/// Put `key` with 2 replicas, then get it through `client` while the owner of its first
/// replica is killed between the lookup and the copy; returns (result, how long the get took).
fn get_across_a_kill(
    cluster: &mut Cluster,
    client: Client,
    key: &str,
) -> (Result<Vec<u8>, i32>, Duration, u32) {
    let gate = gated(&client);
    let first = cluster.client().query(key).unwrap().replicas[0].rank;
    *gate.armed.lock().unwrap() = true;
    let key = key.to_string();
    let getter = std::thread::spawn(move || {
        let start = Instant::now();
        let r = client.get(&key).map_err(|e| e.code().as_i32());
        (r, start.elapsed())
    });
    gate.reached
        .recv_timeout(Duration::from_secs(20))
        .expect("the get reached its copy");
    let victim = cluster.local_of(first);
    cluster.kill_local(victim);
    gate.go.send(()).unwrap();
    let (r, took) = getter.join().unwrap();
    (r, took, first)
}

#[test]
fn a_get_falls_over_when_its_first_replica_dies_mid_call() {
    let mut cluster = Cluster::start(&["64MB", "64MB", "64MB"], &[]);
    let c = cluster.client();
    let opts = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    let mut lines = Vec::new();
    for (name, transport) in [("tcp", Some(DataOpType::Tcp)), ("shm", None)] {
        let key = format!("mid-call-{name}");
        c.put(&key, &pattern(&key, OBJECT_BYTES), &opts).unwrap();
        let client = cluster.client_with(TIMEOUT_MS, transport);
        let (r, took, killed) = get_across_a_kill(&mut cluster, client, &key);
        // Out of placement (its meta connection closed) before the next put.
        wait_until("the kill seen", Duration::from_secs(10), || {
            c.status()
                .unwrap()
                .segments
                .iter()
                .all(|s| s.rank != killed || !s.alive)
        });
        lines.push(format!(
            "{name}: first replica's owner (rank {killed}) killed between lookup and copy -> {} \
             in {:.1} ms",
            match &r {
                Ok(_) => "read from the other replica".to_string(),
                Err(code) => format!("failed {code}"),
            },
            took.as_secs_f64() * 1e3
        ));
        let bytes = r.unwrap_or_else(|code| panic!("{name} get failed with {code}"));
        assert!(bytes == pattern(&key, OBJECT_BYTES), "{name}: wrong bytes");
        assert!(
            took < Duration::from_millis(TIMEOUT_MS),
            "within the call's timeout"
        );
    }
    println!("fallover inside one get: {}", lines.join("; "));
}
