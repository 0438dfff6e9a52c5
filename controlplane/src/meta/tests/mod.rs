//! Tests of the meta core: helpers and the keyed operations here, membership and simulations
//! in their own files.

mod admission;
mod demote;
mod held;
mod index;
mod membership;
mod pause;
mod probe;
mod rebuild;
mod simulation;
mod slab;
mod suspect;
mod writer;

use super::*;
use crate::msg::{AllocRequest, CommitItem, Register, SegmentSpec};

const MIB: u64 = 1024 * 1024;

/// A core whose members never time out, for tests that let hours pass.
fn core() -> MetaCore {
    MetaCore::new(MetaParams {
        member_timeout_ms: u64::MAX / 4,
        ..MetaParams::default()
    })
}

/// Default tunables, except that a member silent past its timeout is dropped at once.
fn no_grace() -> MetaParams {
    MetaParams {
        member_grace_ms: 0,
        ..MetaParams::default()
    }
}

/// Let time pass from `from` to `to` in ticks of 100 ms, as the driver's ticker does (one jump
/// would be the core's own stall, which counts against nobody).
fn advance(core: &mut MetaCore, from: u64, to: u64) {
    assert!(from <= to);
    let mut t = from;
    while t < to {
        t = (t + 100).min(to);
        core.tick(t);
    }
    core.check_invariants();
}

fn register(core: &mut MetaCore, rank: Option<u32>, dram: u64) -> (u32, u64) {
    register_at(core, 0, rank, dram)
}

fn register_at(core: &mut MetaCore, now: u64, rank: Option<u32>, dram: u64) -> (u32, u64) {
    match core.handle(
        now,
        Request::Register(Register {
            rank,
            create_id: 0,
            host: "h".into(),
            data_endpoint: "127.0.0.1:1".into(),
            shm_endpoint: String::new(),
            segments: vec![SegmentSpec {
                media: msg::MEDIA_DRAM,
                capacity: dram,
            }],
        }),
    ) {
        Reply::Registered {
            rank, incarnation, ..
        } => (rank, incarnation),
        other => panic!("register failed: {other:?}"),
    }
}

fn alloc_req(items: &[(&str, u64)], writer: Option<u32>) -> AllocRequest {
    AllocRequest {
        writer_rank: writer,
        client_id: 0,
        media: msg::MEDIA_DRAM,
        policy: msg::NATIVE_AFFINITY,
        replicas: 1,
        preferred: vec![],
        items: items.iter().map(|(k, s)| (k.to_string(), *s)).collect(),
    }
}

fn alloc(core: &mut MetaCore, now: u64, req: AllocRequest) -> Vec<msg::AllocItem> {
    match core.handle(now, Request::Alloc(req)) {
        Reply::Alloc { items, .. } => items,
        other => panic!("{other:?}"),
    }
}

fn put(
    core: &mut MetaCore,
    now: u64,
    key: &str,
    size: u64,
    writer: Option<u32>,
) -> Result<Vec<msg::Replica>, i32> {
    let item = alloc(core, now, alloc_req(&[(key, size)], writer)).remove(0);
    if item.code != 0 {
        return Err(item.code);
    }
    let commit = Request::Commit {
        items: vec![(
            key.to_string(),
            CommitItem {
                token: item.token,
                ok: true,
                crc: 0,
            },
        )],
    };
    match core.handle(now, commit) {
        Reply::Commit { codes } => assert_eq!(codes, vec![0]),
        other => panic!("{other:?}"),
    }
    core.check_invariants();
    Ok(item.replicas)
}

fn codes(reply: Reply) -> Vec<i32> {
    match reply {
        Reply::Codes { codes } => codes,
        other => panic!("{other:?}"),
    }
}

fn exists(core: &mut MetaCore, now: u64, key: &str) -> bool {
    codes(core.handle(
        now,
        Request::Exist {
            keys: vec![key.into()],
        },
    ))[0]
        == 0
}

fn lookup(core: &mut MetaCore, now: u64, keys: &[&str]) -> Vec<msg::LookupItem> {
    match core.handle(
        now,
        Request::Lookup {
            keys: keys.iter().map(|k| k.to_string()).collect(),
        },
    ) {
        Reply::Lookup { items, .. } => items,
        other => panic!("{other:?}"),
    }
}

fn used(core: &MetaCore) -> u64 {
    core.tier_usage(msg::MEDIA_DRAM).1
}

/// Pending puts with a replica on `rank`: what dropping that member must clean up.
fn pending_on(core: &MetaCore, rank: u32) -> usize {
    core.objects
        .values()
        .filter(|o| matches!(o.state, State::Pending { .. }))
        .filter(|o| o.replicas.iter().any(|(r, _)| r.rank == rank))
        .count()
}

/// Status after every step: its counters are where an orphaned index underflows.
fn status(core: &mut MetaCore, now: u64) -> msg::Status {
    match core.handle(now, Request::Status) {
        Reply::Status(s) => {
            assert!(s.objects as usize <= core.keys.len(), "status {s:?}");
            s
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn put_is_invisible_until_commit_and_create_only() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let item = alloc(&mut c, 0, alloc_req(&[("k", 100)], None)).remove(0);
    assert_eq!(item.code, 0);
    assert!(!exists(&mut c, 0, "k"));
    assert_eq!(
        lookup(&mut c, 0, &["k"])[0].code,
        Code::ObjectNotExists.as_i32()
    );
    // A second put of a key being written is refused, as is one of a committed key.
    assert_eq!(
        alloc(&mut c, 0, alloc_req(&[("k", 100)], None))[0].code,
        -3006
    );
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
    c.handle(0, commit);
    assert!(exists(&mut c, 0, "k"));
    assert_eq!(
        alloc(&mut c, 0, alloc_req(&[("k", 5)], None))[0].code,
        -3006
    );
    assert_eq!(lookup(&mut c, 0, &["k"])[0].size, 100);
    c.check_invariants();
}

#[test]
fn invalid_keys_and_sizes_are_refused_per_key() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let long = "x".repeat(256);
    let ok255 = "y".repeat(255);
    let items = alloc(
        &mut c,
        0,
        alloc_req(&[("", 1), (&long, 1), ("z", 0), (&ok255, 1)], None),
    );
    let got: Vec<i32> = items.iter().map(|i| i.code).collect();
    assert_eq!(got, vec![-3000, -3000, -3000, 0]);
    assert_eq!(
        codes(c.handle(
            0,
            Request::Exist {
                keys: vec![long.clone(), String::new()]
            }
        )),
        vec![-3000, -3000]
    );
    c.check_invariants();
}

#[test]
fn native_affinity_prefers_writer_then_most_free() {
    let mut c = core();
    let (a, _) = register(&mut c, None, 64 * MIB);
    let (b, _) = register(&mut c, None, 128 * MIB);
    assert_ne!(a, b);
    assert_eq!(put(&mut c, 0, "w", MIB, Some(a)).unwrap()[0].rank, a);
    // No writer: the service with the most free space.
    assert_eq!(put(&mut c, 0, "x", MIB, None).unwrap()[0].rank, b);
}

#[test]
fn replicas_land_on_distinct_services_and_need_enough_services() {
    let mut c = core();
    let (a, _) = register(&mut c, None, 64 * MIB);
    let (b, _) = register(&mut c, None, 64 * MIB);
    let mut req = alloc_req(&[("r", MIB)], Some(a));
    req.replicas = 2;
    let item = alloc(&mut c, 0, req.clone()).remove(0);
    assert_eq!(item.code, 0);
    let mut ranks: Vec<u32> = item.replicas.iter().map(|r| r.rank).collect();
    ranks.sort();
    assert_eq!(ranks, vec![a.min(b), a.max(b)]);
    req.items = vec![("r3".into(), MIB)];
    req.replicas = 3;
    assert_eq!(alloc(&mut c, 0, req)[0].code, Code::ExceedCapacity.as_i32());
    c.check_invariants();
}

#[test]
fn preferred_affinity_uses_listed_services() {
    let mut c = core();
    let (a, _) = register(&mut c, None, 64 * MIB);
    let (b, _) = register(&mut c, None, 64 * MIB);
    let mut req = alloc_req(&[("p", MIB)], Some(a));
    req.policy = msg::PREFERRED_AFFINITY;
    req.preferred = vec![-1, b as i32];
    let item = alloc(&mut c, 0, req.clone()).remove(0);
    assert_eq!(item.replicas.len(), 1);
    assert_eq!(item.replicas[0].rank, b);
    req.preferred = vec![77];
    req.items = vec![("q".into(), MIB)];
    assert_eq!(alloc(&mut c, 0, req)[0].code, Code::ExceedCapacity.as_i32());
}

#[test]
fn eviction_keeps_use_under_high_watermark_in_lru_order() {
    let mut c = core();
    register(&mut c, None, 100 * MIB);
    for i in 0..85 {
        put(&mut c, i, &format!("k{i}"), MIB, None).unwrap();
    }
    // Touch k0 so it becomes most recent; k1 is then the oldest.
    assert!(exists(&mut c, 100, "k0"));
    let cap = c.tier_usage(msg::MEDIA_DRAM).0;
    for i in 85..400 {
        put(&mut c, 100 + i, &format!("k{i}"), MIB, None).unwrap();
        assert!(
            used(&c) * 100 <= cap * 90,
            "use {} over high watermark after put {i}",
            used(&c)
        );
    }
    assert!(exists(&mut c, 500, "k399"));
    assert!(!exists(&mut c, 500, "k1"), "oldest evicted first");
    match c.handle(500, Request::Status) {
        Reply::Status(s) => assert!(s.evicted_total > 0),
        other => panic!("{other:?}"),
    }
    c.check_invariants();
}

#[test]
fn first_eviction_goes_down_to_low_watermark() {
    let mut c = core();
    register(&mut c, None, 100 * MIB);
    let mut i = 0;
    let cap = c.tier_usage(msg::MEDIA_DRAM).0;
    while (used(&c) + MIB) * 100 <= cap * 90 {
        put(&mut c, i, &format!("k{i}"), MIB, None).unwrap();
        i += 1;
    }
    put(&mut c, i, "trigger", MIB, None).unwrap();
    assert!(
        used(&c) * 100 <= cap * 80,
        "after eviction use {} must be under low",
        used(&c)
    );
}

#[test]
fn a_lease_blocks_reuse_until_released_or_expired() {
    let mut c = core();
    register(&mut c, None, 4 * MIB);
    let r = put(&mut c, 0, "a", 2 * MIB, None).unwrap()[0];
    let lease = lookup(&mut c, 0, &["a"]).remove(0);
    assert_eq!(lease.code, 0);
    // Removed while leased: invisible at once, but its space is not reused.
    assert_eq!(
        codes(c.handle(
            1,
            Request::Remove {
                keys: vec!["a".into()]
            }
        )),
        vec![0]
    );
    assert!(!exists(&mut c, 1, "a"));
    let b = put(&mut c, 1, "b", MIB, None).unwrap()[0];
    assert!(
        b.offset >= r.offset + r.len || b.offset + b.len <= r.offset,
        "space of a leased object reused"
    );
    // Leased objects are not evicted either: 3 MiB never fits beside the leased 2 MiB.
    assert_eq!(
        put(&mut c, 1, "big", 3 * MIB, None),
        Err(Code::ExceedCapacity.as_i32())
    );
    c.handle(
        2,
        Request::Release {
            leases: vec![lease.lease],
        },
    );
    c.check_invariants();
    assert!(put(&mut c, 2, "big", 3 * MIB, None).is_ok());
    assert!(put(&mut c, 2, "c", MIB, None).is_ok());

    // Expiry frees too.
    let lease = lookup(&mut c, 3, &["c"]).remove(0);
    assert_eq!(lease.code, 0);
    c.handle(
        4,
        Request::Remove {
            keys: vec!["c".into()],
        },
    );
    let before = used(&c);
    c.tick(3 + c.params().lease_ms + 1);
    assert!(used(&c) < before);
    c.check_invariants();
}

#[test]
fn pending_puts_are_reclaimed_after_their_timeout() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let item = alloc(&mut c, 0, alloc_req(&[("p", MIB)], None)).remove(0);
    assert!(used(&c) >= MIB);
    let t = c.params().pending_timeout_ms;
    c.tick(t - 1);
    assert!(used(&c) >= MIB);
    c.tick(t + 1);
    assert_eq!(used(&c), 0);
    // A late commit is refused and nothing becomes visible; the key is free again.
    let late = Request::Commit {
        items: vec![(
            "p".into(),
            CommitItem {
                token: item.token,
                ok: true,
                crc: 0,
            },
        )],
    };
    match c.handle(t + 2, late) {
        Reply::Commit { codes } => assert_eq!(codes, vec![Code::Timeout.as_i32()]),
        other => panic!("{other:?}"),
    }
    assert!(!exists(&mut c, t + 2, "p"));
    assert!(put(&mut c, t + 2, "p", 1, None).is_ok());
}

#[test]
fn aborted_commit_frees_and_unlinks() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let item = alloc(&mut c, 0, alloc_req(&[("p", MIB)], None)).remove(0);
    c.handle(
        0,
        Request::Commit {
            items: vec![(
                "p".into(),
                CommitItem {
                    token: item.token,
                    ok: false,
                    crc: 0,
                },
            )],
        },
    );
    assert_eq!(used(&c), 0);
    assert!(put(&mut c, 0, "p", 1, None).is_ok());
}

#[test]
fn batch_lookup_mixes_present_and_missing() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    put(&mut c, 0, "a", 10, None).unwrap();
    let items = lookup(&mut c, 0, &["a", "missing", "a"]);
    let got: Vec<i32> = items.iter().map(|i| i.code).collect();
    assert_eq!(got, vec![0, -3007, 0]);
    assert_ne!(items[0].lease, items[2].lease);
    c.check_invariants();
}
