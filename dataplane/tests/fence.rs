//! The epoch fence through real processes. A local service that registers again (it missed its
//! heartbeats, or the meta service restarted) keeps its pools, while the meta service forgets every
//! object of the old incarnation and places new ones in the same space. A transfer planned under
//! the old incarnation must then fail (-3018), never read another object's bytes as success nor
//! write over another object. The same-host shared-memory path is the one that used to miss it: it
//! copied through the mapping it had cached under the old incarnation.
//!
//! The client's calls are synchronous, so "in flight" is made with its test hook, which runs after
//! the meta service answered and before any byte moves: the hook makes the service register again
//! and has another client put an object over the space the planned transfer points at.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{pattern, Cluster};
use mmc_config::DataOpType;
use mmc_dataplane::{Client, ClientConfig, PutOptions};

/// The object the stale transfer is about: small, near the start of the pool.
const SIZE: usize = 256 * 1024;
/// The object placed after the re-registration: from offset 0, it covers the stale one's space.
const OVER_SIZE: usize = 4 << 20;
/// Members silent this long are dead (short, so a SIGSTOP re-registers within a second or two).
const MEMBER_TIMEOUT_MS: &str = "600";
/// No grace: a member silent past its timeout is dropped at once, so that SIGCONT brings it back
/// to a meta service that forgot it, and it registers again (a pause within a grace would keep
/// its incarnation; `pause.rs` tests that).
const MEMBER_GRACE_MS: &str = "0";

/// How the local service comes to register again while a transfer is planned.
#[derive(Clone, Copy, Debug)]
enum Again {
    /// SIGSTOP past the member timeout, then SIGCONT: same meta service, new incarnation.
    MissedHeartbeats,
    /// kill -9 of the meta service and a fresh one on the same address: ids restart at 1.
    MetaRestart,
}

/// Wait for `cond`, bounded.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client(cluster: &Cluster, transport: Option<DataOpType>) -> Client {
    Client::connect(&ClientConfig {
        transport,
        timeout_ms: 20_000,
        ..cluster.client_config()
    })
    .expect("client connects")
}

/// One `mmc-local` of 16 MB, a same-host client (shared memory) and a TCP-only observer.
fn setup() -> (Arc<Mutex<Cluster>>, Client, Arc<Client>) {
    let cluster = Cluster::start(
        &["16MB"],
        &[
            "--member-timeout-ms",
            MEMBER_TIMEOUT_MS,
            "--member-grace-ms",
            MEMBER_GRACE_MS,
        ],
    );
    let shm = client(&cluster, None);
    let observer = Arc::new(client(&cluster, Some(DataOpType::Tcp)));
    (Arc::new(Mutex::new(cluster)), shm, observer)
}

/// Make the only local service register again, then put `over` (which lands at offset 0 of its
/// fresh segment, over whatever the old incarnation held there). `held` is a key the old
/// incarnation holds: it disappears when the meta service declares the service dead.
///
/// The observer waits on keys and puts, not on `status`: the meta service's status counts objects
/// as keys minus pending puts, which underflows while a dropped member's pending put is listed.
fn register_again_and_overwrite(
    cluster: &Mutex<Cluster>,
    observer: &Client,
    held: &str,
    again: Again,
) {
    let mut cluster = cluster.lock().expect("cluster lock");
    match again {
        Again::MissedHeartbeats => {
            cluster.signal_local(0, "STOP");
            wait_for("death detection", Duration::from_secs(10), || {
                observer.exist(held).is_err()
            });
            cluster.signal_local(0, "CONT");
        }
        Again::MetaRestart => cluster.restart_meta(),
    }
    let over = pattern("over", OVER_SIZE);
    wait_for("re-registration", Duration::from_secs(10), || {
        observer.put("over", &over, &PutOptions::default()).is_ok()
    });
    let info = observer.query("over").expect("query over");
    assert_eq!(
        info.replicas[0].offset, 0,
        "the new incarnation's first object starts its segment"
    );
}

/// A hook that runs `f` once, on the first transfer after it is armed.
fn arm(client: &Client, f: impl Fn() + Send + Sync + 'static) -> Arc<AtomicBool> {
    let armed = Arc::new(AtomicBool::new(false));
    let a = armed.clone();
    assert!(client.set_transfer_hook(Box::new(move || {
        if a.swap(false, Ordering::SeqCst) {
            f();
        }
    })));
    armed
}

/// A get planned under the old incarnation, copied after the re-registration.
fn stale_get(again: Again) {
    let (cluster, shm, observer) = setup();
    let rank = cluster.lock().unwrap().locals[0].rank;
    let a = pattern("a", SIZE);
    shm.put("a", &a, &PutOptions::default()).unwrap();
    assert_eq!(shm.get("a").unwrap(), a);
    assert_eq!(
        shm.mapped_services(),
        vec![rank],
        "the service is reached through shared memory"
    );
    let (c, o) = (cluster.clone(), observer.clone());
    let armed = arm(&shm, move || {
        register_again_and_overwrite(&c, &o, "a", again)
    });
    armed.store(true, Ordering::SeqCst);
    let mut out = vec![0u8; SIZE];
    let got = shm.get_into("a", &mut out);
    assert!(!armed.load(Ordering::SeqCst), "the hook ran");
    let over = pattern("over", OVER_SIZE);
    match got {
        Ok(n) => panic!(
            "{again:?}: a get planned under the old incarnation succeeded ({n} bytes){}",
            if out[..] == over[..SIZE] {
                ", returning another object's bytes"
            } else {
                ""
            }
        ),
        Err(e) => assert_eq!(e.code().as_i32(), -3018, "{again:?}: {e}"),
    }
    assert_eq!(
        observer.get("over").unwrap(),
        over,
        "the new object is intact"
    );
    // The client maps the service again under its new incarnation and works as before.
    let fresh = pattern("fresh", SIZE);
    shm.put("fresh", &fresh, &PutOptions::default()).unwrap();
    assert_eq!(shm.get("fresh").unwrap(), fresh);
    assert_eq!(shm.mapped_services(), vec![rank]);
}

/// A put placed under the old incarnation, written after the re-registration.
fn stale_put(again: Again) {
    let (cluster, shm, observer) = setup();
    let rank = cluster.lock().unwrap().locals[0].rank;
    // Map the pools under the first incarnation.
    shm.put("warm", b"w", &PutOptions::default()).unwrap();
    assert_eq!(shm.mapped_services(), vec![rank]);
    let (c, o) = (cluster.clone(), observer.clone());
    let armed = arm(&shm, move || {
        register_again_and_overwrite(&c, &o, "warm", again)
    });
    armed.store(true, Ordering::SeqCst);
    let put = shm.put("x", &pattern("x", SIZE), &PutOptions::default());
    assert!(!armed.load(Ordering::SeqCst), "the hook ran");
    let over = pattern("over", OVER_SIZE);
    let read = observer.get("over").unwrap();
    assert!(
        read == over,
        "{again:?}: a put placed under the old incarnation wrote over another object \
         (the put returned {put:?})"
    );
    let e = put.expect_err("a put placed under the old incarnation fails");
    assert_eq!(e.code().as_i32(), -3018, "{again:?}: {e}");
}

#[test]
fn a_stale_shm_get_after_missed_heartbeats_returns_no_foreign_bytes() {
    stale_get(Again::MissedHeartbeats);
}

#[test]
fn a_stale_shm_get_after_a_meta_restart_returns_no_foreign_bytes() {
    stale_get(Again::MetaRestart);
}

#[test]
fn a_stale_shm_put_after_missed_heartbeats_overwrites_nothing() {
    stale_put(Again::MissedHeartbeats);
}

#[test]
fn a_stale_shm_put_after_a_meta_restart_overwrites_nothing() {
    stale_put(Again::MetaRestart);
}
