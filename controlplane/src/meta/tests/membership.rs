//! Membership: members that die, leave or restart, and incarnations across meta restarts.

use super::*;

#[test]
fn dead_members_leave_placement_and_take_their_objects() {
    let mut c = MetaCore::new(no_grace());
    let (a, inc_a) = register(&mut c, None, 64 * MIB);
    let (b, _) = register(&mut c, None, 64 * MIB);
    put(&mut c, 0, "on-a", MIB, Some(a)).unwrap();
    put(&mut c, 0, "on-b", MIB, Some(b)).unwrap();
    let t = c.params().member_timeout_ms;
    advance(&mut c, 0, t);
    c.handle(
        t,
        Request::Heartbeat {
            rank: a,
            incarnation: inc_a,
            index_seq: 0,
            index_resync: false,
            repaired: Vec::new(),
        },
    );
    advance(&mut c, t, t + 10);
    assert!(exists(&mut c, t + 10, "on-a"));
    assert!(!exists(&mut c, t + 10, "on-b"), "b missed its heartbeats");
    assert_eq!(put(&mut c, t + 10, "new", MIB, Some(b)).unwrap()[0].rank, a);
    // An old incarnation's heartbeat is refused.
    match c.handle(
        t + 10,
        Request::Heartbeat {
            rank: b,
            incarnation: 2,
            index_seq: 0,
            index_resync: false,
            repaired: Vec::new(),
        },
    ) {
        Reply::Ack { code } => assert_eq!(code, Code::LinkNotFound.as_i32()),
        other => panic!("{other:?}"),
    }
    c.check_invariants();
}

/// A put still pending when its member goes away (clean leave, restart under the same rank, or
/// missed heartbeats) must leave no trace: no pending entry, no key, and a status that counts
/// zero objects rather than underflowing.
#[test]
fn pending_puts_of_a_dropped_member_leave_no_orphans() {
    for how in ["unregister", "re-register", "timeout"] {
        let mut c = MetaCore::new(no_grace());
        let (rank, inc) = register(&mut c, Some(3), 64 * MIB);
        let items = alloc(&mut c, 0, alloc_req(&[("a", MIB), ("b", MIB)], Some(rank)));
        assert!(items.iter().all(|i| i.code == 0), "{how}: {items:?}");
        let now = match how {
            "unregister" => {
                let bye = Request::Unregister {
                    rank,
                    incarnation: inc,
                };
                c.handle(1, bye);
                1
            }
            "re-register" => {
                register_at(&mut c, 1, Some(rank), 64 * MIB);
                1
            }
            _ => {
                let t = c.params().member_timeout_ms + 1;
                advance(&mut c, 1, t);
                t
            }
        };
        c.check_invariants();
        match c.handle(now, Request::Status) {
            Reply::Status(s) => {
                assert_eq!((s.objects, s.pending), (0, 0), "{how}: status {s:?}");
            }
            other => panic!("{other:?}"),
        }
        // The keys are free again, and the old tokens commit nothing.
        let late = Request::Commit {
            items: vec![(
                "a".into(),
                CommitItem {
                    token: items[0].token,
                    ok: true,
                    crc: 0,
                },
            )],
        };
        match c.handle(now, late) {
            Reply::Commit { codes } => assert_eq!(codes, vec![Code::Timeout.as_i32()], "{how}"),
            other => panic!("{other:?}"),
        }
        if how != "re-register" {
            register_at(&mut c, now, Some(rank), 64 * MIB);
        }
        assert!(put(&mut c, now, "a", 1, None).is_ok(), "{how}");
        c.check_invariants();
    }
}

/// A meta restart (a new core with a later epoch) never hands out an incarnation the previous run
/// did, so a heartbeat of the old incarnation is refused even though the rank is the same.
#[test]
fn incarnations_grow_across_meta_restarts() {
    let epoch = 1_700_000_000_000; // a wall clock in ms, as the driver sets it
    let mut old = MetaCore::new(MetaParams {
        epoch,
        ..MetaParams::default()
    });
    let mut last = 0;
    for _ in 0..1000 {
        let (_, inc) = register(&mut old, Some(0), 64 * MIB);
        assert!(inc > last, "strictly increasing within a run");
        last = inc;
    }
    assert_eq!(last, (epoch << INCARNATION_EPOCH_SHIFT) + 1000);
    // Restarted 1 ms later: above everything the old run handed out.
    let mut new = MetaCore::new(MetaParams {
        epoch: epoch + 1,
        ..MetaParams::default()
    });
    let (rank, inc) = register(&mut new, Some(0), 64 * MIB);
    assert!(inc > last, "{inc} after {last}");
    let stale = Request::Heartbeat {
        rank,
        incarnation: last,
        index_seq: 0,
        index_resync: false,
        repaired: Vec::new(),
    };
    match new.handle(0, stale) {
        Reply::Ack { code } => assert_eq!(code, Code::LinkNotFound.as_i32()),
        other => panic!("{other:?}"),
    }
    // The scheme holds until the year 10889, and refuses epochs past it.
    let far = MetaParams {
        epoch: EPOCH_MAX,
        ..MetaParams::default()
    };
    let (_, inc) = register(&mut MetaCore::new(far), None, MIB);
    assert_eq!(inc, (EPOCH_MAX << INCARNATION_EPOCH_SHIFT) + 1);
    new.check_invariants();
}

#[test]
#[should_panic(expected = "epoch")]
fn epoch_past_the_scheme_is_refused() {
    MetaCore::new(MetaParams {
        epoch: EPOCH_MAX + 1,
        ..MetaParams::default()
    });
}
