//! The driver's probe of a suspect: `member_dead` drops a member only while it is paused at the
//! incarnation the probe was started for; anything else is left alone.

use super::*;

fn heartbeat(core: &mut MetaCore, now: u64, (rank, incarnation): (u32, u64)) -> Reply {
    core.handle(
        now,
        Request::Heartbeat {
            rank,
            incarnation,
            index_seq: 0,
            index_resync: false,
            repaired: Vec::new(),
        },
    )
}

/// Two members; "only-a" on the first, "on-both" on both, a pending put on the first.
fn cluster() -> (MetaCore, (u32, u64), (u32, u64), msg::AllocItem) {
    let mut c = MetaCore::new(MetaParams::default());
    let a = register(&mut c, None, 64 * MIB);
    let b = register(&mut c, None, 64 * MIB);
    assert_eq!(
        put(&mut c, 0, "only-a", 4096, Some(a.0)).unwrap()[0].rank,
        a.0
    );
    let mut both = alloc_req(&[("on-both", 4096)], Some(a.0));
    both.replicas = 2;
    let item = alloc(&mut c, 0, both).remove(0);
    assert_eq!(item.code, 0);
    let commit = Request::Commit {
        items: vec![(
            "on-both".into(),
            CommitItem {
                token: item.token,
                ok: true,
                crc: 0,
            },
        )],
    };
    assert!(matches!(c.handle(0, commit), Reply::Commit { .. }));
    let pending = alloc(&mut c, 0, alloc_req(&[("pending-a", 4096)], Some(a.0))).remove(0);
    assert_eq!(pending.code, 0);
    assert_eq!(pending.replicas[0].rank, a.0);
    c.check_invariants();
    (c, a, b, pending)
}

#[test]
fn a_suspect_confirmed_dead_is_dropped_with_its_objects() {
    let (mut c, a, b, pending) = cluster();
    assert_eq!(c.probe_target(a.0, a.1), None, "a live member is no target");
    assert!(c.member_connection_lost(10, a.0, a.1));
    assert_eq!(c.probe_target(a.0, a.1), Some("127.0.0.1:1"));
    assert_eq!(c.probe_target(a.0, a.1 + 1), None, "another incarnation");
    assert_eq!(c.probe_target(b.0, b.1), None);

    assert!(c.member_dead(300, a.0, a.1));
    c.check_invariants();
    assert_eq!(c.member_incarnation(a.0), None, "dropped");
    assert!(!c.member_paused(a.0));
    assert_eq!(c.probe_target(a.0, a.1), None);
    // Its only replicas are gone: not found (no longer not reachable), and the keys are free.
    assert_eq!(lookup(&mut c, 300, &["only-a"])[0].code, -3007);
    assert_eq!(pending_on(&c, a.0), 0, "its pending put is gone too");
    let late = Request::Commit {
        items: vec![(
            "pending-a".into(),
            CommitItem {
                token: pending.token,
                ok: true,
                crc: 0,
            },
        )],
    };
    match c.handle(310, late) {
        Reply::Commit { codes } => assert_ne!(codes, vec![0], "a dead put does not commit"),
        other => panic!("{other:?}"),
    }
    assert_eq!(put(&mut c, 320, "only-a", 4096, None).unwrap()[0].rank, b.0);
    // An object with another replica keeps it, and is readable from it.
    let item = lookup(&mut c, 330, &["on-both"]).remove(0);
    assert_eq!(item.code, 0);
    let ranks: Vec<u32> = item.replicas.iter().map(|r| r.rank).collect();
    assert_eq!(ranks, vec![b.0]);
    // A second result for the same probe changes nothing.
    assert!(!c.member_dead(340, a.0, a.1));
    c.check_invariants();
}

#[test]
fn a_live_member_is_never_dropped_by_a_probe() {
    let (mut c, a, b, _) = cluster();
    let before = c.committed_objects();
    assert!(
        !c.member_dead(10, a.0, a.1),
        "live: the probe started too late"
    );
    assert!(!c.member_dead(10, 77, 1), "unknown rank");
    assert_eq!(c.member_incarnation(a.0), Some(a.1));
    assert_eq!(c.member_incarnation(b.0), Some(b.1));
    assert_eq!(c.committed_objects(), before);
    assert_eq!(lookup(&mut c, 20, &["only-a"])[0].code, 0);
    c.check_invariants();
}

#[test]
fn a_member_readmitted_before_the_result_keeps_its_objects() {
    let (mut c, a, _b, _) = cluster();
    let before = c.committed_objects();
    // A client's report pauses it; it heartbeats again (alive, reconnected) before the probe's
    // result arrives.
    c.handle(
        10,
        Request::Suspect {
            rank: a.0,
            incarnation: a.1,
        },
    );
    assert_eq!(c.probe_target(a.0, a.1), Some("127.0.0.1:1"));
    assert!(matches!(heartbeat(&mut c, 50, a), Reply::Heartbeat { .. }));
    assert!(!c.member_dead(60, a.0, a.1));
    assert_eq!(c.member_incarnation(a.0), Some(a.1));
    assert!(!c.member_paused(a.0));
    assert_eq!(c.committed_objects(), before);
    assert_eq!(lookup(&mut c, 70, &["only-a"])[0].code, 0);
    c.check_invariants();
}

#[test]
fn a_stale_incarnation_leaves_the_new_one_alone() {
    let (mut c, a, _b, _) = cluster();
    assert!(c.member_connection_lost(10, a.0, a.1));
    // It restarted and registered again (the old incarnation's objects are dropped by that),
    // then the new incarnation is paused by a hint too: a result for the old one must not drop it.
    let again = register_at(&mut c, 20, Some(a.0), 64 * MIB);
    assert_ne!(again.1, a.1);
    put(&mut c, 30, "new-a", 4096, Some(a.0)).unwrap();
    assert!(c.member_connection_lost(40, again.0, again.1));
    assert!(!c.member_dead(50, a.0, a.1));
    assert_eq!(c.member_incarnation(a.0), Some(again.1));
    assert!(c.member_paused(a.0), "still paused, objects kept");
    assert!(c.committed_objects().iter().any(|o| o.key == "new-a"));
    c.check_invariants();
    // The result for the new incarnation drops it.
    assert!(c.member_dead(60, again.0, again.1));
    assert!(!c.committed_objects().iter().any(|o| o.key == "new-a"));
    c.check_invariants();
}

#[test]
fn a_member_paused_by_its_lease_is_dropped_only_on_a_result_for_it() {
    let (mut c, a, b, _) = cluster();
    let p = c.params().clone();
    // b heartbeats, a is silent: its lease pauses it (no hint, so the driver starts no probe,
    // but a later hint would, and its result applies the same way).
    let mut t = 0;
    while t <= p.member_timeout_ms + 100 {
        t += 100;
        assert!(matches!(heartbeat(&mut c, t, b), Reply::Heartbeat { .. }));
    }
    assert!(c.member_paused(a.0));
    assert_eq!(c.probe_target(a.0, a.1), Some("127.0.0.1:1"));
    assert!(!c.member_dead(t, b.0, b.1), "b is live");
    assert!(c.member_dead(t, a.0, a.1));
    assert_eq!(c.member_incarnation(a.0), None);
    assert_eq!(c.member_incarnation(b.0), Some(b.1));
    c.check_invariants();
}
