//! Admission before eviction: a put that can never fit evicts nothing; one that fits after
//! eviction evicts only what it needs; one that waits for leases evicts nothing.

use super::*;

/// Keys `{prefix}0..{prefix}{n}`, `size` bytes each, written by `writer`.
fn fill(
    core: &mut MetaCore,
    prefix: &str,
    n: usize,
    size: u64,
    writer: Option<u32>,
) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for key in &keys {
        put(core, core.now_ms_last, key, size, writer)
            .unwrap_or_else(|code| panic!("put {key}: {code}"));
    }
    keys
}

fn evicted_total(core: &mut MetaCore) -> u64 {
    status(core, core.now_ms_last).evicted_total
}

fn all_exist(core: &mut MetaCore, keys: &[String]) -> bool {
    let now = core.now_ms_last;
    keys.iter().all(|k| exists(core, now, k))
}

fn register_tiers(core: &mut MetaCore, hbm: u64, dram: u64) -> u32 {
    let segments = vec![
        SegmentSpec {
            media: msg::MEDIA_HBM,
            capacity: hbm,
        },
        SegmentSpec {
            media: msg::MEDIA_DRAM,
            capacity: dram,
        },
    ];
    let reg = Register {
        rank: None,
        create_id: 0,
        host: "h".into(),
        data_endpoint: "127.0.0.1:1".into(),
        shm_endpoint: String::new(),
        segments,
    };
    match core.handle(0, Request::Register(reg)) {
        Reply::Registered { rank, .. } => rank,
        other => panic!("register failed: {other:?}"),
    }
}

#[test]
fn oversized_put_evicts_nothing() {
    let mut c = core();
    register(&mut c, None, 20 * MIB);
    let sentinels = fill(&mut c, "s", 16, MIB, None);
    let used_before = used(&c);
    let cap = c.tier_usage(msg::MEDIA_DRAM).0;
    for size in [cap + 1, 21 * MIB, 1 << 40] {
        let item = alloc(&mut c, 1, alloc_req(&[("big", size)], None)).remove(0);
        assert_eq!(item.code, Code::ExceedCapacity.as_i32(), "size {size}");
        assert!(
            !item.retry && item.replicas.is_empty(),
            "size {size}: {item:?}"
        );
        c.check_invariants();
    }
    assert_eq!(evicted_total(&mut c), 0);
    assert_eq!(used(&c), used_before, "nothing evicted, nothing reserved");
    assert!(all_exist(&mut c, &sentinels));
    // The whole pool fits once every sentinel (all evictable) is gone: admitted, evicts them all.
    put(&mut c, 2, "fits", cap, None).unwrap();
    assert_eq!(evicted_total(&mut c), 16);
}

#[test]
fn too_few_services_for_the_replicas_evicts_nothing() {
    let mut c = core();
    let (a, _) = register(&mut c, None, 16 * MIB);
    let (b, _) = register(&mut c, None, 4 * MIB);
    let sentinels = fill(&mut c, "s", 14, MIB, Some(a));
    // Three copies on two services; two copies of 8 MiB when b holds 4 MiB.
    for (replicas, size) in [(3, MIB), (2, 8 * MIB)] {
        let mut req = alloc_req(&[("r", size)], Some(a));
        req.replicas = replicas;
        let item = alloc(&mut c, 1, req).remove(0);
        assert_eq!(item.code, Code::ExceedCapacity.as_i32());
        assert!(!item.retry);
    }
    // Preferred affinity on a service too small for the object.
    let mut req = alloc_req(&[("p", 8 * MIB)], Some(a));
    req.policy = msg::PREFERRED_AFFINITY;
    req.preferred = vec![a as i32, b as i32];
    assert_eq!(alloc(&mut c, 1, req)[0].code, Code::ExceedCapacity.as_i32());
    assert_eq!(evicted_total(&mut c), 0);
    assert!(all_exist(&mut c, &sentinels));
    c.check_invariants();
}

#[test]
fn put_over_the_high_watermark_evicts_to_the_low_one_only() {
    let mut c = core();
    register(&mut c, None, 20 * MIB);
    let sentinels = fill(&mut c, "s", 16, MIB, None);
    // 16 + 3 MiB passes 90% of 20 MiB: evict the oldest until 3 MiB more stay under 80% (16 MiB).
    put(&mut c, 1, "three", 3 * MIB, None).unwrap();
    assert_eq!(evicted_total(&mut c), 3);
    assert!(
        !exists(&mut c, 2, "s2") && exists(&mut c, 2, "s3"),
        "oldest first"
    );
    assert!(all_exist(&mut c, &sentinels[3..]));
    c.check_invariants();
}

#[test]
fn put_that_fits_after_eviction_evicts_only_its_target_segment() {
    let mut c = core();
    let ranks: Vec<u32> = (0..4).map(|_| register(&mut c, None, 16 * MIB).0).collect();
    // The writer's service is filled last: every other service's objects are older.
    let mut keys = Vec::new();
    for &rank in ranks.iter().rev() {
        let prefix = format!("r{rank}-");
        keys.insert(0, fill(&mut c, &prefix, 12, MIB, Some(rank)));
    }
    // 48 of 64 MiB: 6 MiB more stays under the high watermark, but no service has 6 MiB free.
    let a = ranks[0];
    // Make a's first ten the most recent: its last two (at the end of its pool, beside the free
    // 4 MiB) are the least recently used there. Tier-wide LRU would evict elsewhere first.
    for key in &keys[0][..10] {
        assert!(exists(&mut c, 1, key));
    }
    let replicas = put(&mut c, 2, "six", 6 * MIB, Some(a)).unwrap();
    assert_eq!(replicas[0].rank, a, "the writer's own service");
    assert_eq!(evicted_total(&mut c), 2, "just the 2 MiB missing");
    assert!(!exists(&mut c, 3, &keys[0][10]) && !exists(&mut c, 3, &keys[0][11]));
    assert!(all_exist(&mut c, &keys[0][..10]));
    for others in &keys[1..] {
        assert!(all_exist(&mut c, others), "other services untouched");
    }
    c.check_invariants();
}

#[test]
fn put_that_fits_only_after_releases_retries_and_evicts_nothing() {
    let mut c = core();
    register(&mut c, None, 16 * MIB);
    put(&mut c, 0, "leased", 8 * MIB, None).unwrap();
    let lease = lookup(&mut c, 0, &["leased"]).remove(0);
    assert_eq!(lease.code, 0);
    let small = fill(&mut c, "b", 4, MIB, None);
    // 4 MiB free + 4 MiB evictable < 12 MiB <= that + 8 MiB leased.
    let item = alloc(&mut c, 1, alloc_req(&[("big", 12 * MIB)], None)).remove(0);
    assert_eq!(item.code, Code::ExceedCapacity.as_i32());
    assert!(item.retry, "the leased space comes back");
    assert_eq!(evicted_total(&mut c), 0);
    assert!(all_exist(&mut c, &small) && exists(&mut c, 1, "leased"));
    // Past even the leased space: no retry.
    let item = alloc(&mut c, 1, alloc_req(&[("huge", 17 * MIB)], None)).remove(0);
    assert_eq!(
        (item.code, item.retry),
        (Code::ExceedCapacity.as_i32(), false)
    );
    c.handle(
        2,
        Request::Release {
            leases: vec![lease.lease],
        },
    );
    put(&mut c, 3, "big", 12 * MIB, None).unwrap();
    c.check_invariants();
}

#[test]
fn huge_sizes_never_overflow_evict_or_reserve() {
    let mut c = core();
    let a = register_tiers(&mut c, 8 * MIB, 16 * MIB);
    let (b, _) = register(&mut c, None, 16 * MIB);
    let sentinels = fill(&mut c, "s", 16, MIB, None);
    let used_before = (c.tier_usage(msg::MEDIA_HBM).1, used(&c));
    let sizes = [
        u64::MAX,
        u64::MAX - 1,
        1 << 63,
        1 << 62,
        (1 << 62) + 1,
        u64::MAX / 3,
    ];
    for size in sizes {
        for media in [msg::MEDIA_HBM, msg::MEDIA_DRAM, msg::MEDIA_NONE] {
            for replicas in [0, 1, 2, 8] {
                for preferred in [vec![], vec![a as i32], vec![a as i32, b as i32]] {
                    let mut req = alloc_req(&[("x", size), ("y", size)], Some(a));
                    req.media = media;
                    req.replicas = replicas;
                    req.policy = if preferred.is_empty() {
                        msg::NATIVE_AFFINITY
                    } else {
                        msg::PREFERRED_AFFINITY
                    };
                    req.preferred = preferred;
                    for item in alloc(&mut c, 1, req) {
                        assert_eq!(item.code, Code::ExceedCapacity.as_i32(), "size {size}");
                        assert!(!item.retry);
                    }
                }
            }
        }
    }
    assert_eq!(evicted_total(&mut c), 0);
    assert_eq!((c.tier_usage(msg::MEDIA_HBM).1, used(&c)), used_before);
    assert!(all_exist(&mut c, &sentinels));
    c.check_invariants();
}

#[test]
fn media_none_falls_to_dram_when_no_hbm_segment_can_hold_the_put() {
    let mut c = core();
    // 8 MiB of HBM over two services: 5 MiB passes the tier's watermark check, fits neither.
    let a = register_tiers(&mut c, 4 * MIB, 16 * MIB);
    register_tiers(&mut c, 4 * MIB, 16 * MIB);
    let mut hot = alloc_req(&[("hot", MIB)], Some(a));
    hot.media = msg::MEDIA_HBM;
    assert_eq!(alloc(&mut c, 0, hot)[0].code, 0);
    let mut req = alloc_req(&[("five", 5 * MIB)], Some(a));
    req.media = msg::MEDIA_NONE;
    let item = alloc(&mut c, 1, req).remove(0);
    assert_eq!(item.code, 0);
    assert_eq!(item.replicas[0].media, msg::MEDIA_DRAM);
    assert_eq!(evicted_total(&mut c), 0);
    c.check_invariants();
}
