//! Hints of death: a member whose meta connection closed, or that a client reports unreachable,
//! is paused at once (out of placement, objects kept) and re-admitted by its next heartbeat.

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

/// Two members, one object on the first.
fn two_members() -> (MetaCore, (u32, u64), (u32, u64)) {
    let mut c = MetaCore::new(MetaParams::default());
    let a = register(&mut c, None, 64 * MIB);
    let b = register(&mut c, None, 64 * MIB);
    assert_eq!(
        put(&mut c, 0, "on-a", 4096, Some(a.0)).unwrap()[0].rank,
        a.0
    );
    (c, a, b)
}

#[test]
fn a_lost_connection_pauses_at_once_and_a_heartbeat_readmits() {
    let (mut c, a, b) = two_members();
    assert!(c.member_connection_lost(10, a.0, a.1));
    assert!(c.member_paused(a.0) && !c.member_paused(b.0));
    c.check_invariants();
    // Out of placement at once, long before the lease would have run out.
    for i in 0..10 {
        let placed = put(&mut c, 20, &format!("new-{i}"), 4096, Some(a.0)).unwrap();
        assert_eq!(placed[0].rank, b.0, "no put lands on a suspect");
    }
    assert_eq!(lookup(&mut c, 20, &["on-a"])[0].code, -3018);
    assert_eq!(c.committed_objects().len(), 11, "objects kept");
    // It reconnects and heartbeats with the same incarnation: back with its objects.
    assert!(matches!(heartbeat(&mut c, 300, a), Reply::Heartbeat { .. }));
    assert!(!c.member_paused(a.0));
    assert_eq!(lookup(&mut c, 300, &["on-a"])[0].code, 0);
    c.check_invariants();
}

#[test]
fn a_suspect_report_pauses_only_the_current_incarnation() {
    let (mut c, a, b) = two_members();
    // A stale incarnation, an unknown rank: ignored.
    let stale = Request::Suspect {
        rank: a.0,
        incarnation: a.1 + 100,
    };
    assert!(matches!(c.handle(5, stale), Reply::Ack { code: 0 }));
    let unknown = Request::Suspect {
        rank: 77,
        incarnation: 1,
    };
    assert!(matches!(c.handle(5, unknown), Reply::Ack { code: 0 }));
    assert!(!c.member_paused(a.0) && !c.member_paused(b.0));
    let report = Request::Suspect {
        rank: a.0,
        incarnation: a.1,
    };
    c.handle(6, report.clone());
    assert!(c.member_paused(a.0));
    // Reported twice (two clients): still paused once, nothing else changes.
    c.handle(7, report);
    assert!(c.member_paused(a.0) && !c.member_paused(b.0));
    c.check_invariants();
    assert!(matches!(heartbeat(&mut c, 8, a), Reply::Heartbeat { .. }));
    assert!(!c.member_paused(a.0));
    c.check_invariants();
}

#[test]
fn a_suspect_that_never_returns_is_dropped_at_its_grace() {
    let (mut c, a, b) = two_members();
    let p = c.params().clone();
    assert!(c.member_connection_lost(0, a.0, a.1));
    assert!(!c.member_connection_lost(1, a.0, a.1), "already paused");
    // b keeps heartbeating; a is dropped once its lease and grace have run out, not before.
    let mut t = 0;
    let gone = p.member_timeout_ms + p.member_grace_ms;
    while t < gone + 200 {
        t += 100;
        assert!(matches!(heartbeat(&mut c, t, b), Reply::Heartbeat { .. }));
        c.tick(t);
        if t < gone {
            assert!(c.member_paused(a.0), "kept within its grace at {t} ms");
        }
    }
    assert_eq!(c.member_incarnation(a.0), None, "dropped past its grace");
    assert!(!exists(&mut c, t, "on-a"));
    c.check_invariants();
}

#[test]
fn a_lost_connection_of_an_old_incarnation_is_ignored() {
    let (mut c, a, _b) = two_members();
    // a registered again (a restart): the old connection's close names the old incarnation.
    let again = register_at(&mut c, 50, Some(a.0), 64 * MIB);
    assert_ne!(again.1, a.1);
    assert!(!c.member_connection_lost(60, a.0, a.1));
    assert!(!c.member_paused(a.0));
    c.check_invariants();
}

#[test]
fn a_lost_connection_right_after_the_cores_own_stall_is_no_hint() {
    let (mut c, a, b) = two_members();
    let p = c.params().clone();
    c.tick(100);
    // Frozen for longer than a stall; on waking, a's old connection (closed by a's driver when
    // its heartbeat timed out) is seen closed.
    let woke = 100 + p.meta_stall_ms + 1_000;
    assert!(!c.member_connection_lost(woke, a.0, a.1));
    assert!(!c.member_paused(a.0));
    // A client's report still counts.
    c.handle(
        woke + 10,
        Request::Suspect {
            rank: b.0,
            incarnation: b.1,
        },
    );
    assert!(c.member_paused(b.0));
    // Later closes are hints again (time passes in ticks, a heartbeating: no second stall).
    let mut t = woke + 10;
    while t <= woke + p.member_timeout_ms {
        t += 100;
        assert!(matches!(heartbeat(&mut c, t, a), Reply::Heartbeat { .. }));
    }
    assert!(c.member_connection_lost(t + 1, a.0, a.1));
    c.check_invariants();
}
