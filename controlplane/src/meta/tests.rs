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
                },
            )],
        },
    );
    assert_eq!(used(&c), 0);
    assert!(put(&mut c, 0, "p", 1, None).is_ok());
}

#[test]
fn dead_members_leave_placement_and_take_their_objects() {
    let mut c = MetaCore::new(MetaParams::default());
    let (a, inc_a) = register(&mut c, None, 64 * MIB);
    let (b, _) = register(&mut c, None, 64 * MIB);
    put(&mut c, 0, "on-a", MIB, Some(a)).unwrap();
    put(&mut c, 0, "on-b", MIB, Some(b)).unwrap();
    let t = c.params().member_timeout_ms;
    c.handle(
        t,
        Request::Heartbeat {
            rank: a,
            incarnation: inc_a,
        },
    );
    c.tick(t + 10);
    assert!(exists(&mut c, t + 10, "on-a"));
    assert!(!exists(&mut c, t + 10, "on-b"), "b missed its heartbeats");
    assert_eq!(put(&mut c, t + 10, "new", MIB, Some(b)).unwrap()[0].rank, a);
    // An old incarnation's heartbeat is refused.
    match c.handle(
        t + 10,
        Request::Heartbeat {
            rank: b,
            incarnation: 2,
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
        let mut c = MetaCore::new(MetaParams::default());
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
                c.tick(t);
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

#[test]
fn randomized_operations_keep_invariants() {
    let mut rng = crate::testrng::SeededRng::from_env("meta", 42);
    let mut next = move || rng.next_u64();
    let mut c = core();
    register(&mut c, None, 32 * MIB);
    register(&mut c, None, 16 * MIB);
    let mut leases = Vec::new();
    let mut now = 0;
    let mut dropped_pending = 0;
    for _ in 0..4000 {
        now += next() % 20;
        let key = format!("k{}", next() % 200);
        match next() % 6 {
            0 | 1 => {
                let _ = put(&mut c, now, &key, 1 + next() % (2 * MIB), None);
            }
            2 => leases.extend(
                lookup(&mut c, now, &[&key])
                    .into_iter()
                    .filter(|i| i.code == 0)
                    .map(|i| i.lease),
            ),
            3 => {
                c.handle(now, Request::Remove { keys: vec![key] });
            }
            4 if !leases.is_empty() => {
                let i = (next() as usize) % leases.len();
                let id = leases.swap_remove(i);
                c.handle(now, Request::Release { leases: vec![id] });
            }
            4 if next() % 4 == 0 => {
                // A member restarts under its rank: its objects and abandoned puts go with it.
                let rank = (next() % 2) as u32;
                dropped_pending += pending_on(&c, rank);
                register_at(&mut c, now, Some(rank), (32 >> rank) * MIB);
            }
            _ => {
                let _ = alloc(&mut c, now, alloc_req(&[(&key, 1 + next() % MIB)], Some(0)));
            }
        }
        c.check_invariants();
        status(&mut c, now);
    }
    assert!(dropped_pending > 0, "no member ever left with puts pending");
}

/// A simulated cluster from a seed: members come and go (missed heartbeats, restarts under a fixed
/// rank, clean leaves), writers race readers, puts are abandoned mid-way, time jumps; the core's
/// invariants hold after every step, and every committed object a reader can see points at live
/// segments inside their capacity.
#[test]
fn simulated_cluster_with_member_faults_keeps_invariants() {
    let mut rng = crate::testrng::SeededRng::from_env("meta", 7);
    let mut next = move || rng.next_u64();
    let params = MetaParams {
        member_timeout_ms: 500,
        lease_ms: 300,
        pending_timeout_ms: 400,
        ..MetaParams::default()
    };
    let mut c = MetaCore::new(params);
    // rank -> (incarnation, alive in the simulation)
    let mut members: Vec<(u32, u64, bool)> = Vec::new();
    for rank in 0..4u32 {
        let (r, inc) = register(&mut c, Some(rank), (8 + rank as u64 * 4) * MIB);
        members.push((r, inc, true));
    }
    let mut now = 0u64;
    let mut leases: Vec<u64> = Vec::new();
    let mut pending: Vec<(String, u64)> = Vec::new();
    let (mut committed, mut restarts) = (0u32, 0u32);
    // Pending puts on members that left, restarted or timed out: the orphaned-pending bug path.
    let mut dropped_pending = 0usize;
    let mut codes_seen = std::collections::BTreeMap::new();
    for step in 0..6000 {
        now += next() % 30;
        // Live members heartbeat on time; one the core declared dead registers again, as a real
        // local service does.
        for (i, (rank, inc, alive)) in members.iter_mut().enumerate() {
            if *alive {
                let hb = Request::Heartbeat {
                    rank: *rank,
                    incarnation: *inc,
                };
                let at_risk = pending_on(&c, *rank);
                if let Reply::Ack { code } = c.handle(now, hb) {
                    if code != 0 {
                        // Declared dead by the tick inside `handle`: its pending puts went too.
                        dropped_pending += at_risk;
                        let (r, new_inc) =
                            register_at(&mut c, now, Some(*rank), (8 + i as u64 * 4) * MIB);
                        (*rank, *inc) = (r, new_inc);
                    }
                }
            }
        }
        let key = format!("k{}", next() % 3000);
        match next() % 12 {
            0..=3 => {
                let mut req = alloc_req(&[(&key, 1 + next() % MIB)], Some((next() % 4) as u32));
                req.replicas = 1 + (next() % 2) as u16;
                if next() % 4 == 0 {
                    req.policy = msg::PREFERRED_AFFINITY;
                    req.preferred = vec![(next() % 5) as i32];
                }
                let item = alloc(&mut c, now, req).remove(0);
                *codes_seen.entry(item.code).or_insert(0u32) += 1;
                if item.code == 0 {
                    // Some writers commit, some give up, some vanish (reclaimed later).
                    match next() % 5 {
                        0 => pending.push((key, item.token)),
                        1 => {
                            c.handle(
                                now,
                                Request::Commit {
                                    items: vec![(
                                        key,
                                        CommitItem {
                                            token: item.token,
                                            ok: false,
                                        },
                                    )],
                                },
                            );
                        }
                        _ => {
                            let ok = CommitItem {
                                token: item.token,
                                ok: true,
                            };
                            let commit = Request::Commit {
                                items: vec![(key, ok)],
                            };
                            if let Reply::Commit { codes } = c.handle(now, commit) {
                                committed += u32::from(codes == vec![0]);
                            }
                        }
                    }
                }
            }
            4 | 5 => leases.extend(
                lookup(&mut c, now, &[&key])
                    .into_iter()
                    .filter(|i| i.code == 0)
                    .map(|i| i.lease),
            ),
            6 => {
                c.handle(now, Request::Remove { keys: vec![key] });
            }
            7 if !leases.is_empty() => {
                let id = leases.swap_remove((next() as usize) % leases.len());
                c.handle(now, Request::Release { leases: vec![id] });
            }
            8 if !pending.is_empty() => {
                let (k, token) = pending.swap_remove((next() as usize) % pending.len());
                c.handle(
                    now,
                    Request::Commit {
                        items: vec![(k, CommitItem { token, ok: true })],
                    },
                );
            }
            9 => {
                // A member falls silent (crash) or leaves cleanly.
                let i = (next() % 4) as usize;
                let (rank, inc, alive) = members[i];
                if alive && next() % 3 == 0 {
                    if next() % 2 == 0 {
                        dropped_pending += pending_on(&c, rank);
                        c.handle(
                            now,
                            Request::Unregister {
                                rank,
                                incarnation: inc,
                            },
                        );
                    }
                    members[i].2 = false;
                }
            }
            10 => {
                // A dead member restarts under its fixed rank (a new incarnation, empty pool).
                let i = (next() % 4) as usize;
                if !members[i].2 {
                    dropped_pending += pending_on(&c, members[i].0);
                    let (r, inc) =
                        register_at(&mut c, now, Some(members[i].0), (8 + i as u64 * 4) * MIB);
                    members[i] = (r, inc, true);
                    restarts += 1;
                }
            }
            _ => now += next() % 400, // time jumps: leases expire, pending puts are reclaimed
        }
        c.check_invariants();
        // Everything visible is placed on live segments, and the counters add up.
        let status = status(&mut c, now);
        assert_eq!(status.pending as usize, c.pending.len(), "step {step}");
        for s in &status.segments {
            assert!(s.used <= s.capacity, "segment {} over capacity", s.segment);
        }
    }
    // The run did what it claims: many puts landed, members died and came back, some of them
    // with puts still pending.
    assert!(
        committed > 500 && restarts > 10 && dropped_pending > 10,
        "committed {committed}, restarts {restarts}, dropped pending {dropped_pending}, \
         alloc codes {codes_seen:?}"
    );
}
