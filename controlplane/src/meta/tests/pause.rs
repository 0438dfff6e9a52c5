//! A pause is not a death: members silent past their timeout are paused (out of placement, their
//! objects kept) and re-admitted within their grace; the core's own stall counts against nobody.

use super::*;

const NOT_REACHABLE: i32 = -3018;

/// Tick every 100 ms from `from` to `to`, heartbeating the `live` members (rank, incarnation) at
/// every tick; the others stay silent.
fn advance_with(core: &mut MetaCore, from: u64, to: u64, live: &[(u32, u64)]) {
    assert!(from <= to);
    let mut t = from;
    while t < to {
        t = (t + 100).min(to);
        for &(rank, incarnation) in live {
            assert!(
                matches!(
                    heartbeat(core, t, rank, incarnation),
                    Reply::Heartbeat { .. }
                ),
                "rank {rank} stays a member"
            );
        }
        core.tick(t);
    }
    core.check_invariants();
}

fn heartbeat(core: &mut MetaCore, now: u64, rank: u32, incarnation: u64) -> Reply {
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

fn exist_code(core: &mut MetaCore, now: u64, key: &str) -> i32 {
    codes(core.handle(
        now,
        Request::Exist {
            keys: vec![key.into()],
        },
    ))[0]
}

/// Two members, `n` objects on the first and one on the second.
fn two_members(n: usize) -> (MetaCore, (u32, u64), (u32, u64)) {
    let mut c = MetaCore::new(MetaParams::default());
    let a = register(&mut c, None, 64 * MIB);
    let b = register(&mut c, None, 64 * MIB);
    for i in 0..n {
        let placed = put(&mut c, 0, &format!("on-a-{i}"), 4096, Some(a.0)).unwrap();
        assert_eq!(placed[0].rank, a.0);
    }
    assert_eq!(
        put(&mut c, 0, "on-b", 4096, Some(b.0)).unwrap()[0].rank,
        b.0
    );
    (c, a, b)
}

#[test]
fn a_pause_shorter_than_the_grace_keeps_every_object() {
    let (mut c, a, b) = two_members(50);
    let p = c.params().clone();
    let down_at = p.member_timeout_ms + 100;
    advance_with(&mut c, 0, down_at, &[b]);
    assert!(c.member_paused(a.0), "silent past its timeout");
    // Out of readers' sight, but kept: the key is taken and the directory still lists it.
    assert_eq!(exist_code(&mut c, down_at, "on-a-0"), NOT_REACHABLE);
    assert_eq!(lookup(&mut c, down_at, &["on-a-1"])[0].code, NOT_REACHABLE);
    assert_eq!(c.committed_objects().len(), 51);
    let back_at = down_at + p.member_grace_ms - 200;
    advance_with(&mut c, down_at, back_at, &[b]);
    // The same incarnation heartbeats again: re-admitted, with an ordinary heartbeat reply.
    assert!(matches!(
        heartbeat(&mut c, back_at, a.0, a.1),
        Reply::Heartbeat { .. }
    ));
    assert!(!c.member_paused(a.0));
    assert_eq!(c.member_incarnation(a.0), Some(a.1), "same incarnation");
    let items = lookup(
        &mut c,
        back_at,
        &(0..50)
            .map(|i| format!("on-a-{i}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(items
        .iter()
        .all(|i| i.code == 0 && i.replicas[0].rank == a.0));
    c.check_invariants();
}

#[test]
fn a_pause_longer_than_the_grace_drops_the_objects() {
    let (mut c, a, b) = two_members(10);
    let p = c.params().clone();
    let gone_at = p.member_timeout_ms + p.member_grace_ms + 100;
    advance_with(&mut c, 0, gone_at, &[b]);
    assert_eq!(c.member_incarnation(a.0), None, "dropped past its grace");
    assert_eq!(exist_code(&mut c, gone_at, "on-a-0"), -3007);
    // Too late: the old incarnation is refused and must register again.
    match heartbeat(&mut c, gone_at, a.0, a.1) {
        Reply::Ack { code } => assert_eq!(code, Code::LinkNotFound.as_i32()),
        other => panic!("{other:?}"),
    }
    assert!(exists(&mut c, gone_at, "on-b"));
    c.check_invariants();
}

#[test]
fn the_meta_services_own_stall_drops_nobody() {
    let (mut c, a, b) = two_members(10);
    let p = c.params().clone();
    advance_with(&mut c, 0, 1_000, &[a, b]);
    // Frozen past every member's timeout and grace: no tick, no request; then a request first.
    let woke = 1_000 + p.member_timeout_ms + p.member_grace_ms + 1_000;
    assert!(woke - 1_000 > p.member_timeout_ms + p.member_grace_ms);
    assert!(exists(&mut c, woke, "on-a-0"));
    assert!(!c.member_paused(a.0) && !c.member_paused(b.0));
    // The stall is forgiven, not the silence after it: a is paused one timeout later.
    advance_with(&mut c, woke, woke + p.member_timeout_ms + 100, &[b]);
    assert!(c.member_paused(a.0) && !c.member_paused(b.0));
    assert_eq!(c.committed_objects().len(), 11);
}

#[test]
fn a_paused_member_gets_no_new_puts() {
    let (mut c, a, b) = two_members(1);
    let down_at = c.params().member_timeout_ms + 100;
    advance_with(&mut c, 0, down_at, &[b]);
    // a's own writer is placed on b; a preferred placement on a, or two replicas, fail.
    assert_eq!(
        put(&mut c, down_at, "new", 4096, Some(a.0)).unwrap()[0].rank,
        b.0
    );
    let mut on_a = alloc_req(&[("pinned", 4096)], Some(a.0));
    on_a.policy = msg::PREFERRED_AFFINITY;
    on_a.preferred = vec![a.0 as i32];
    assert_eq!(
        alloc(&mut c, down_at, on_a)[0].code,
        Code::ExceedCapacity.as_i32()
    );
    let mut two = alloc_req(&[("two", 4096)], None);
    two.replicas = 2;
    assert_eq!(
        alloc(&mut c, down_at, two)[0].code,
        Code::ExceedCapacity.as_i32()
    );
    // Status lists the paused segment, not alive.
    match c.handle(down_at, Request::Status) {
        Reply::Status(s) => {
            let alive: Vec<bool> = s.segments.iter().map(|s| s.alive).collect();
            assert_eq!(alive.len(), 2);
            assert_eq!(alive.iter().filter(|a| **a).count(), 1);
        }
        other => panic!("{other:?}"),
    }
    c.check_invariants();
}

#[test]
fn readers_see_only_live_replicas_and_dormant_objects_can_be_removed() {
    let (mut c, a, b) = two_members(1);
    let mut two = alloc_req(&[("both", 4096)], None);
    two.replicas = 2;
    let item = alloc(&mut c, 0, two).remove(0);
    let commit = Request::Commit {
        items: vec![(
            "both".into(),
            CommitItem {
                token: item.token,
                ok: true,
                crc: 0,
            },
        )],
    };
    assert_eq!(codes_of_commit(c.handle(0, commit)), vec![0]);
    let down_at = c.params().member_timeout_ms + 100;
    advance_with(&mut c, 0, down_at, &[b]);
    let seen = lookup(&mut c, down_at, &["both"]).remove(0);
    assert_eq!(seen.code, 0);
    assert_eq!(
        seen.replicas.iter().map(|r| r.rank).collect::<Vec<_>>(),
        vec![b.0],
        "only the live replica is offered"
    );
    // An object on the paused member only can still be removed; its space comes back there.
    let removed = codes(c.handle(
        down_at,
        Request::Remove {
            keys: vec!["on-a-0".into()],
        },
    ));
    assert_eq!(removed, vec![0]);
    c.check_invariants();
    assert!(matches!(
        heartbeat(&mut c, down_at + 100, a.0, a.1),
        Reply::Heartbeat { .. }
    ));
    assert_eq!(exist_code(&mut c, down_at + 100, "on-a-0"), -3007);
    c.check_invariants();
}

fn codes_of_commit(reply: Reply) -> Vec<i32> {
    match reply {
        Reply::Commit { codes } => codes,
        other => panic!("{other:?}"),
    }
}

#[test]
fn pending_puts_on_a_paused_member_commit_or_time_out() {
    let mut c = MetaCore::new(MetaParams {
        pending_timeout_ms: 8_000,
        ..MetaParams::default()
    });
    let a = register(&mut c, None, 64 * MIB);
    let items = alloc(
        &mut c,
        0,
        alloc_req(&[("late", 4096), ("never", 4096)], None),
    );
    assert!(items
        .iter()
        .all(|i| i.code == 0 && i.replicas[0].rank == a.0));
    let down_at = c.params().member_timeout_ms + 100;
    advance_with(&mut c, 0, down_at, &[]);
    assert!(c.member_paused(a.0));
    // The writer reached the service though the meta service did not hear from it: the commit
    // holds; readers see the object once the service is back. The other put times out.
    let commit = Request::Commit {
        items: vec![(
            "late".into(),
            CommitItem {
                token: items[0].token,
                ok: true,
                crc: 0,
            },
        )],
    };
    assert_eq!(codes_of_commit(c.handle(down_at, commit)), vec![0]);
    assert_eq!(exist_code(&mut c, down_at, "late"), NOT_REACHABLE);
    let back_at = down_at + 3_000;
    advance_with(&mut c, down_at, back_at, &[]);
    assert!(matches!(
        heartbeat(&mut c, back_at, a.0, a.1),
        Reply::Heartbeat { .. }
    ));
    assert!(exists(&mut c, back_at, "late"));
    assert_eq!(exist_code(&mut c, back_at, "never"), -3007);
    c.check_invariants();
}

#[test]
fn a_new_process_at_a_paused_members_rank_or_address_drops_it_at_once() {
    for same_rank in [true, false] {
        let (mut c, a, b) = two_members(3);
        let down_at = c.params().member_timeout_ms + 100;
        advance_with(&mut c, 0, down_at, &[b]);
        assert!(c.member_paused(a.0));
        // The helper registers every service at the same address: a new registration from it
        // is a new process there, whatever rank it asks for.
        let rank = same_rank.then_some(a.0);
        let (_, inc) = register_at(&mut c, down_at, rank, 64 * MIB);
        assert!(inc > a.1, "a new incarnation");
        assert_eq!(exist_code(&mut c, down_at, "on-a-0"), -3007, "{same_rank}");
        assert_ne!(
            c.member_incarnation(a.0),
            Some(a.1),
            "the paused one is gone"
        );
        c.check_invariants();
    }
}

#[test]
fn a_paused_member_that_unregisters_takes_its_objects() {
    let (mut c, a, b) = two_members(3);
    let down_at = c.params().member_timeout_ms + 100;
    advance_with(&mut c, 0, down_at, &[b]);
    let bye = Request::Unregister {
        rank: a.0,
        incarnation: a.1,
    };
    assert!(matches!(c.handle(down_at, bye), Reply::Ack { code: 0 }));
    assert_eq!(exist_code(&mut c, down_at, "on-a-0"), -3007);
    assert_eq!(c.committed_objects().len(), 1);
    c.check_invariants();
}
