//! Seeded randomized runs and the simulated cluster: invariants after every step.

use super::*;

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
    // (rank, incarnation) -> the last index change applied, as a service keeps it.
    let mut index_seq: std::collections::HashMap<(u32, u64), u64> = Default::default();
    for step in 0..6000 {
        now += next() % 30;
        // Live members heartbeat on time; one the core declared dead registers again, as a real
        // local service does.
        for (i, (rank, inc, alive)) in members.iter_mut().enumerate() {
            if *alive {
                let seq = index_seq.entry((*rank, *inc)).or_default();
                let hb = Request::Heartbeat {
                    rank: *rank,
                    incarnation: *inc,
                    index_seq: *seq,
                    index_resync: false,
                    repaired: Vec::new(),
                };
                let at_risk = pending_on(&c, *rank);
                match c.handle(now, hb) {
                    Reply::Heartbeat {
                        index_first_seq,
                        index_changes,
                        ..
                    } => *seq = index_first_seq + index_changes.len() as u64 - 1,
                    Reply::Ack { code } => {
                        assert_ne!(code, 0, "a refused heartbeat");
                        // Declared dead by the tick inside `handle`: its pending puts went too.
                        dropped_pending += at_risk;
                        let (r, new_inc) =
                            register_at(&mut c, now, Some(*rank), (8 + i as u64 * 4) * MIB);
                        (*rank, *inc) = (r, new_inc);
                    }
                    other => panic!("{other:?}"),
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
                                            crc: 0,
                                        },
                                    )],
                                },
                            );
                        }
                        _ => {
                            let ok = CommitItem {
                                token: item.token,
                                ok: true,
                                crc: 0,
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
                        items: vec![(
                            k,
                            CommitItem {
                                token,
                                ok: true,
                                crc: 0,
                            },
                        )],
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
