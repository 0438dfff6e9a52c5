//! Demotion: HBM moves down to DRAM instead of dropping; DRAM, the last tier, drops.

use super::*;
use crate::msg::RepairDone;

const MIB: u64 = 1 << 20;

/// One service with an HBM and a DRAM segment; its (rank, incarnation).
fn tiers(c: &mut MetaCore, hbm: u64, dram: u64) -> (u32, u64) {
    let reg = Register {
        rank: None,
        create_id: 0,
        host: "h".into(),
        data_endpoint: "127.0.0.1:1".into(),
        shm_endpoint: String::new(),
        segments: vec![
            SegmentSpec {
                media: msg::MEDIA_HBM,
                capacity: hbm,
            },
            SegmentSpec {
                media: msg::MEDIA_DRAM,
                capacity: dram,
            },
        ],
    };
    match c.handle(0, Request::Register(reg)) {
        Reply::Registered {
            rank, incarnation, ..
        } => (rank, incarnation),
        other => panic!("register failed: {other:?}"),
    }
}

fn put_any(c: &mut MetaCore, now: u64, key: &str, size: u64) -> Result<msg::Replica, i32> {
    let mut req = alloc_req(&[(key, size)], None);
    req.media = msg::MEDIA_NONE;
    let item = alloc(c, now, req).remove(0);
    if item.code != 0 {
        return Err(item.code);
    }
    let commit = Request::Commit {
        items: vec![(
            key.to_string(),
            CommitItem {
                token: item.token,
                ok: true,
                crc: 7,
            },
        )],
    };
    assert!(matches!(c.handle(now, commit), Reply::Commit { .. }));
    c.check_invariants();
    Ok(item.replicas[0])
}

/// A heartbeat reporting `done`; the tasks it gets back.
fn beat(
    c: &mut MetaCore,
    now: u64,
    (rank, inc): (u32, u64),
    done: Vec<RepairDone>,
) -> Vec<msg::RepairTask> {
    let Reply::Heartbeat { repairs, .. } = c.handle(
        now,
        Request::Heartbeat {
            rank,
            incarnation: inc,
            index_seq: 0,
            index_resync: false,
            repaired: done,
        },
    ) else {
        panic!("heartbeat refused");
    };
    c.check_invariants();
    repairs
}

/// Where `key` lives (a query: no read lease).
fn media_of(c: &mut MetaCore, now: u64, key: &str) -> Option<u16> {
    let Reply::Query { mut items } = c.handle(
        now,
        Request::Query {
            keys: vec![key.to_string()],
        },
    ) else {
        panic!("query refused");
    };
    let item = items.remove(0);
    (item.code == 0).then(|| item.replicas[0].media)
}

#[test]
fn hbm_objects_move_down_to_dram_and_only_dram_drops() {
    let mut c = core();
    let me = tiers(&mut c, 10 * MIB, 8 * MIB);
    // New objects go to HBM while it has room, past its high watermark.
    for i in 0..10 {
        let r = put_any(&mut c, i, &format!("k{i}"), MIB).unwrap();
        assert_eq!(r.media, msg::MEDIA_HBM, "k{i}");
    }
    // HBM is full: the next "any" put goes to DRAM at once, an HBM put waits (retry).
    assert_eq!(
        put_any(&mut c, 20, "late", MIB).unwrap().media,
        msg::MEDIA_DRAM
    );
    let mut req = alloc_req(&[("hbm-only", MIB)], None);
    req.media = msg::MEDIA_HBM;
    let item = alloc(&mut c, 21, req).remove(0);
    assert_eq!(item.code, Code::ExceedCapacity.as_i32());
    assert!(item.retry, "an HBM put waits for demotions");
    assert_eq!(c.evicted_total(), 0, "nothing was dropped");
    // A heartbeat hands out demotions of the least recently used HBM objects, down to the low
    // watermark (80% of 10 MiB: 8 objects stay, so 2 move).
    let tasks = beat(&mut c, 100, me, vec![]);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks.iter().all(|t| t.len == MIB && t.crc == 7));
    // Until they are done the objects stay on HBM.
    assert_eq!(media_of(&mut c, 101, "k0"), Some(msg::MEDIA_HBM));
    let done: Vec<RepairDone> = tasks
        .iter()
        .map(|t| RepairDone {
            token: t.token,
            ok: true,
        })
        .collect();
    assert!(
        beat(&mut c, 200, me, done).is_empty(),
        "under the low watermark now"
    );
    assert_eq!(c.demoted_total(), 2);
    assert_eq!(media_of(&mut c, 201, "k0"), Some(msg::MEDIA_DRAM));
    assert_eq!(media_of(&mut c, 202, "k1"), Some(msg::MEDIA_DRAM));
    assert_eq!(media_of(&mut c, 203, "k2"), Some(msg::MEDIA_HBM));
    // The HBM put fits now.
    let mut req = alloc_req(&[("hbm-only", MIB)], None);
    req.media = msg::MEDIA_HBM;
    assert_eq!(alloc(&mut c, 210, req).remove(0).code, 0);
    // Fill DRAM (3 used of 8), then keep demoting: DRAM makes room by dropping its oldest.
    for i in 0..5 {
        put_any(&mut c, 300 + i, &format!("d{i}"), MIB).unwrap();
    }
    let mut now = 400;
    for _ in 0..10 {
        let tasks = beat(&mut c, now, me, vec![]);
        let done = tasks
            .iter()
            .map(|t| RepairDone {
                token: t.token,
                ok: true,
            })
            .collect();
        beat(&mut c, now + 10, me, done);
        now += 100;
    }
    assert!(c.evicted_total() > 0, "DRAM, the last tier, dropped");
    assert!(c.demoted_total() > 2);
    // Dropped objects are gone for good; the most recent ones live on.
    let keys: Vec<String> = (0..10)
        .map(|i| format!("k{i}"))
        .chain((0..5).map(|i| format!("d{i}")))
        .chain(["late".to_string()])
        .collect();
    let gone = keys
        .iter()
        .filter(|k| media_of(&mut c, now, k).is_none())
        .count();
    assert_eq!(
        gone as u64,
        c.evicted_total(),
        "every dropped object, and only those, is gone"
    );
    assert!(media_of(&mut c, now + 1, "d4").is_some());
    let (cap, used) = c.tier_usage(msg::MEDIA_HBM);
    assert!(
        used * 100 <= cap * 90,
        "HBM back under its high watermark: {used} of {cap}"
    );
}

#[test]
fn a_read_or_a_failed_copy_keeps_the_hbm_replica() {
    let mut c = core();
    let me = tiers(&mut c, 4 * MIB, 8 * MIB);
    for i in 0..4 {
        put_any(&mut c, i, &format!("k{i}"), MIB).unwrap();
    }
    let tasks = beat(&mut c, 100, me, vec![]);
    assert!(!tasks.is_empty());
    // A failed copy frees the DRAM space; the object stays on HBM.
    let done = vec![RepairDone {
        token: tasks[0].token,
        ok: false,
    }];
    // The failed one is handed out again at once.
    let again = beat(&mut c, 110, me, done);
    assert_eq!(media_of(&mut c, 111, "k0"), Some(msg::MEDIA_HBM));
    assert_eq!(c.demoted_total(), 0);
    // A read in progress (a lease) when the copy completes: the HBM replica stays.
    let Reply::Query { items } = c.handle(
        150,
        Request::Query {
            keys: (0..4).map(|i| format!("k{i}")).collect(),
        },
    ) else {
        panic!("query refused");
    };
    assert!(
        beat(&mut c, 200, me, vec![]).is_empty(),
        "one demotion in flight is enough"
    );
    let t = &again[0];
    let i = items
        .iter()
        .position(|q| {
            (q.replicas[0].segment, q.replicas[0].offset) == (t.source_segment, t.source_offset)
        })
        .expect("the task moves one of the objects");
    let key = format!("k{i}");
    let lease = lookup(&mut c, 201, &[&key]).remove(0);
    assert_eq!(lease.code, 0);
    beat(
        &mut c,
        210,
        me,
        vec![RepairDone {
            token: t.token,
            ok: true,
        }],
    );
    assert_eq!(media_of(&mut c, 211, &key), Some(msg::MEDIA_HBM));
    assert_eq!(c.demoted_total(), 0);
    // No DRAM tier: HBM is the last tier and drops.
    let mut c = core();
    let only = {
        let reg = Register {
            rank: None,
            create_id: 0,
            host: "h".into(),
            data_endpoint: "127.0.0.1:1".into(),
            shm_endpoint: String::new(),
            segments: vec![SegmentSpec {
                media: msg::MEDIA_HBM,
                capacity: 4 * MIB,
            }],
        };
        match c.handle(0, Request::Register(reg)) {
            Reply::Registered { rank, .. } => rank,
            other => panic!("{other:?}"),
        }
    };
    let _ = only;
    for i in 0..8 {
        put_any(&mut c, i, &format!("h{i}"), MIB).unwrap();
    }
    assert!(c.evicted_total() > 0);
    assert_eq!(c.demoted_total(), 0);
}
