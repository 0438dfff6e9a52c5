//! The per-segment indexes (`held.rs`): held bytes follow puts, leases and releases; eviction
//! and member drops read the segments' own LRUs, never the whole directory.

use super::*;

fn held(c: &MetaCore) -> TierHeld {
    c.tier_held(msg::MEDIA_DRAM)
}

#[test]
fn held_bytes_follow_puts_leases_and_releases() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let item = alloc(&mut c, 0, alloc_req(&[("k", MIB)], None)).remove(0);
    assert_eq!(item.code, 0);
    let h = held(&c);
    assert_eq!((h.pending, h.leased, h.evictable), (MIB, 0, 0));
    let commit = Request::Commit {
        items: vec![(
            "k".into(),
            CommitItem {
                token: item.token,
                ok: true,
                crc: 0,
            },
        )],
    };
    assert!(matches!(c.handle(0, commit), Reply::Commit { .. }));
    let h = held(&c);
    assert_eq!((h.pending, h.leased, h.evictable), (0, 0, MIB));
    // Two readers: leased once, until the last one gives it back.
    let a = lookup(&mut c, 0, &["k"]).remove(0);
    let b = lookup(&mut c, 0, &["k"]).remove(0);
    c.check_invariants();
    let h = held(&c);
    assert_eq!((h.pending, h.leased, h.evictable), (0, MIB, 0));
    // Removed while read: invisible at once, its bytes leased until the last release.
    assert_eq!(
        codes(c.handle(
            0,
            Request::Remove {
                keys: vec!["k".into()]
            }
        )),
        vec![0]
    );
    assert!(!exists(&mut c, 0, "k"));
    assert_eq!(held(&c).leased, MIB);
    c.handle(
        0,
        Request::Release {
            leases: vec![a.lease],
        },
    );
    c.check_invariants();
    assert_eq!(held(&c).leased, MIB);
    c.handle(
        0,
        Request::Release {
            leases: vec![b.lease],
        },
    );
    c.check_invariants();
    assert_eq!(
        held(&c),
        TierHeld {
            capacity: 64 * MIB,
            free: 64 * MIB,
            ..TierHeld::default()
        }
    );
}

#[test]
fn eviction_takes_the_oldest_unleased_object_of_the_segment_that_needs_room() {
    let mut c = core();
    // b is large: the tier stays under its watermark, only a's segment lacks room.
    let (a, _) = register(&mut c, None, 8 * MIB);
    let (b, _) = register(&mut c, None, 64 * MIB);
    // The oldest objects are on b; a fills up later.
    for i in 0..4 {
        put(&mut c, 0, &format!("b{i}"), 2 * MIB, Some(b)).unwrap();
    }
    for i in 0..4 {
        put(&mut c, 0, &format!("a{i}"), 2 * MIB, Some(a)).unwrap();
    }
    // a0 is being read: eviction skips it.
    let lease = lookup(&mut c, 0, &["a0"]).remove(0);
    assert_eq!(lease.code, 0);
    // A put that must land on a (preferred) evicts a's oldest unleased object, a1, and nothing
    // of b's, although b's are older.
    let mut req = alloc_req(&[("new", 2 * MIB)], Some(a));
    req.policy = msg::PREFERRED_AFFINITY;
    req.preferred = vec![a as i32];
    let item = alloc(&mut c, 0, req).remove(0);
    assert_eq!(item.code, 0, "{item:?}");
    assert_eq!(item.replicas[0].rank, a);
    c.check_invariants();
    for (key, there) in [("a0", true), ("a1", false), ("a2", true), ("a3", true)] {
        assert_eq!(exists(&mut c, 0, key), there, "{key}");
    }
    for i in 0..4 {
        assert!(exists(&mut c, 0, &format!("b{i}")));
    }
    assert_eq!(c.evicted_total(), 1);
}

#[test]
fn dropping_a_member_drops_exactly_its_objects_pending_and_leased_ones_too() {
    let mut c = core();
    let (a, inc_a) = register(&mut c, None, 64 * MIB);
    let (b, _) = register(&mut c, None, 64 * MIB);
    for i in 0..50 {
        put(&mut c, 0, &format!("a{i}"), 4096, Some(a)).unwrap();
        put(&mut c, 0, &format!("b{i}"), 4096, Some(b)).unwrap();
    }
    // On a: a pending put, and an object unlinked while a reader holds it.
    let pending = alloc(&mut c, 0, alloc_req(&[("pending", 4096)], Some(a))).remove(0);
    assert_eq!(pending.replicas[0].rank, a);
    let read = lookup(&mut c, 0, &["a0"]).remove(0);
    c.handle(
        0,
        Request::Remove {
            keys: vec!["a0".into()],
        },
    );
    c.check_invariants();
    assert_eq!(pending_on(&c, a), 1);
    assert!(matches!(
        c.handle(
            0,
            Request::Unregister {
                rank: a,
                incarnation: inc_a
            }
        ),
        Reply::Ack { code: 0 }
    ));
    c.check_invariants();
    assert_eq!(pending_on(&c, a), 0);
    assert_eq!(c.objects.len(), 50, "only b's objects are left");
    for i in 0..50 {
        assert!(!exists(&mut c, 0, &format!("a{i}")));
        assert!(exists(&mut c, 0, &format!("b{i}")));
    }
    // The key of the dropped pending put is free; the reader's late release is ignored.
    assert!(put(&mut c, 0, "pending", 4096, Some(b)).is_ok());
    c.handle(
        0,
        Request::Release {
            leases: vec![read.lease],
        },
    );
    c.check_invariants();
}

#[test]
fn reads_keep_objects_from_eviction_though_their_lru_entries_move_only_at_eviction() {
    // One eviction per put: 4 objects of 2 MiB fill 8 of 9 MiB, the watermarks at 100/99 %.
    let mut c = MetaCore::new(MetaParams {
        member_timeout_ms: u64::MAX / 4,
        evict_threshold_high: 100,
        evict_threshold_low: 99,
        ..MetaParams::default()
    });
    let (a, _) = register(&mut c, None, 9 * MIB);
    for i in 0..4 {
        put(&mut c, 0, &format!("k{i}"), 2 * MIB, Some(a)).unwrap();
    }
    // k0 is read by an exist, k1 by a get, after k3 was put: both more recent than k2 now.
    assert!(exists(&mut c, 0, "k0"));
    let l = lookup(&mut c, 0, &["k1"]).remove(0);
    c.handle(
        0,
        Request::Release {
            leases: vec![l.lease],
        },
    );
    c.check_invariants();
    for (i, key) in ["k2", "k3", "k0", "k1"].iter().enumerate() {
        put(&mut c, 0, &format!("new{i}"), 2 * MIB, Some(a)).unwrap();
        assert!(!exists(&mut c, 0, key), "{key} evicted in LRU order");
        c.check_invariants();
    }
}
