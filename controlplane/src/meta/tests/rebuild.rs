//! A restarted meta core rebuilds its directory from rejoining services: objects at their places,
//! replicas merged, disagreements settled by version, bad entries refused (and the service told),
//! lookups of unknown keys answered `Busy` while the rebuild window lasts.

use super::*;
use crate::msg::{Rejoin, RejoinEntry};

const EPOCH: u64 = 7;
/// An incarnation handed out by an earlier run.
const OLD: u64 = (1 << INCARNATION_EPOCH_SHIFT) + 3;

fn restarted() -> MetaCore {
    MetaCore::new(MetaParams {
        epoch: EPOCH,
        ..MetaParams::default()
    })
}

fn spec(endpoint: &str) -> Register {
    Register {
        rank: Some(0),
        create_id: 0,
        host: "h".into(),
        data_endpoint: endpoint.into(),
        shm_endpoint: String::new(),
        segments: vec![SegmentSpec {
            media: msg::MEDIA_DRAM,
            capacity: MIB,
        }],
    }
}

fn entry(key: &str, offset: u64, len: u64, version: u64) -> RejoinEntry {
    RejoinEntry {
        key: key.into(),
        pool: 0,
        offset,
        len,
        version,
        crc: 9,
        want: 1,
    }
}

/// One rejoin in one chunk; returns (rank, incarnation, segment).
fn rejoin(
    c: &mut MetaCore,
    now: u64,
    rank: u32,
    previous: u64,
    entries: Vec<RejoinEntry>,
) -> (u32, u64, u32) {
    let mut register = spec(&format!("127.0.0.1:{}", 100 + rank));
    register.rank = Some(rank);
    let j = Rejoin {
        register,
        previous,
        chunk: 0,
        last: true,
        entries,
    };
    match c.handle(now, Request::Rejoin(j)) {
        Reply::Registered {
            rank,
            incarnation,
            segments,
            ..
        } => (rank, incarnation, segments[0]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn objects_come_back_at_their_places_and_replicas_merge() {
    let mut c = restarted();
    assert!(
        matches!(
            c.handle(
                0,
                Request::Lookup {
                    keys: vec!["a".into()]
                }
            ),
            Reply::Busy { .. }
        ),
        "an unknown key waits while services may still rejoin"
    );
    let (r0, inc, seg0) = rejoin(
        &mut c,
        10,
        0,
        OLD,
        vec![entry("a", 0, 100, 50), entry("b", 128, 64, 51)],
    );
    assert!(inc > OLD, "a new incarnation");
    let (r1, _, seg1) = rejoin(&mut c, 20, 1, OLD + 1, vec![entry("b", 4096, 64, 51)]);
    c.check_invariants();
    let items = lookup(&mut c, 30, &["a", "b"]);
    assert_eq!(items[0].replicas.len(), 1);
    assert_eq!(
        (
            items[0].replicas[0].rank,
            items[0].replicas[0].segment,
            items[0].replicas[0].offset
        ),
        (r0, seg0, 0)
    );
    assert_eq!((items[0].size, items[0].crc), (100, 9));
    let mut b: Vec<(u32, u32, u64)> = items[1]
        .replicas
        .iter()
        .map(|r| (r.rank, r.segment, r.offset))
        .collect();
    b.sort();
    assert_eq!(
        b,
        vec![(r0, seg0, 128), (r1, seg1, 4096)],
        "one object, two replicas"
    );
    // Still rebuilding: an unknown key waits, a known one answers.
    assert!(matches!(
        c.handle(
            40,
            Request::Exist {
                keys: vec!["zz".into()]
            }
        ),
        Reply::Busy { .. }
    ));
    assert_eq!(
        codes(c.handle(
            40,
            Request::Exist {
                keys: vec!["a".into()]
            }
        )),
        vec![0]
    );
    // Puts go ahead during the rebuild, around the rebuilt objects, with later versions.
    // (`put` checks the invariants: no allocation overlaps a rebuilt one.)
    let placed = put(&mut c, 50, "new", 4000, None).unwrap();
    for p in placed {
        let taken: &[(u64, u64)] = if p.rank == r1 {
            &[(4096, 64)]
        } else {
            &[(0, 100), (128, 64)]
        };
        assert!(taken
            .iter()
            .all(|&(o, l)| p.offset >= o + l || p.offset + 4000 <= o));
    }
    // After the window, an unknown key is simply not there.
    advance(&mut c, 50, 2_100);
    assert_eq!(
        codes(c.handle(
            2_100,
            Request::Exist {
                keys: vec!["zz".into()]
            }
        )),
        vec![-3007]
    );
}

#[test]
fn the_later_version_wins_and_the_loser_is_told() {
    let mut c = restarted();
    // Service 0 missed the removal of "k" (version 5) before the crash; "k" was put again
    // (version 8) on service 1.
    let (r0, _, seg0) = rejoin(
        &mut c,
        0,
        0,
        OLD,
        vec![entry("k", 0, 64, 5), entry("x", 64, 64, 6)],
    );
    let (r1, _, _) = rejoin(&mut c, 1, 1, OLD + 1, vec![entry("k", 0, 128, 8)]);
    c.check_invariants();
    let items = lookup(&mut c, 2, &["k"]);
    assert_eq!(
        (
            items[0].size,
            items[0].replicas.len(),
            items[0].replicas[0].rank
        ),
        (128, 1, r1)
    );
    // The older replica's holder hears of it as a removal.
    let outbox = c.index_outbox(r0).unwrap();
    assert!(outbox.changes.iter().any(|ch| matches!(ch,
        msg::IndexChange::Removed { key, segment, offset: 0 } if key == "k" && *segment == seg0)));
    // An older version arriving later is refused the same way.
    let (r2, _, _) = rejoin(&mut c, 3, 2, OLD + 2, vec![entry("k", 0, 32, 7)]);
    assert_eq!(lookup(&mut c, 4, &["k"])[0].size, 128);
    assert_eq!(c.index_outbox(r2).unwrap().changes.len(), 1);
    c.check_invariants();
}

#[test]
fn bad_entries_are_refused_and_a_service_this_run_dropped_starts_empty() {
    let mut c = restarted();
    let (r0, _, _) = rejoin(
        &mut c,
        0,
        0,
        OLD,
        vec![
            entry("ok", 0, 64, 1),
            entry("overlap", 32, 64, 2),
            entry("outside", MIB, 64, 3),
            entry("", 256, 64, 4),
        ],
    );
    c.check_invariants();
    assert_eq!(c.committed_objects().len(), 1);
    assert_eq!(
        c.index_outbox(r0).unwrap().changes.len(),
        3,
        "three removals"
    );
    // A service whose previous incarnation this run handed out was dropped by this run: its
    // index is stale and is reset.
    let (_, inc, _) = rejoin(&mut c, 1, 1, OLD + 1, vec![]);
    let (r1, _, _) = rejoin(&mut c, 2, 1, inc, vec![entry("stale", 0, 64, 9)]);
    assert!(!exists(&mut c, 2_500, "stale"));
    assert_eq!(
        c.index_outbox(r1).unwrap().changes.front(),
        Some(&msg::IndexChange::Reset)
    );
    c.check_invariants();
}

#[test]
fn a_rejoin_in_chunks_must_come_in_order() {
    let mut c = restarted();
    let chunk = |n: u32, last: bool| {
        Request::Rejoin(Rejoin {
            register: spec("127.0.0.1:9"),
            previous: OLD,
            chunk: n,
            last,
            entries: vec![entry(&format!("c{n}"), u64::from(n) * 64, 64, 1)],
        })
    };
    assert_eq!(c.handle(0, chunk(0, false)), Reply::Ack { code: 0 });
    assert!(
        matches!(c.handle(0, chunk(2, true)), Reply::Error { .. }),
        "a chunk skipped"
    );
    assert!(
        matches!(c.handle(0, chunk(1, true)), Reply::Error { .. }),
        "started over"
    );
    assert_eq!(c.handle(0, chunk(0, false)), Reply::Ack { code: 0 });
    assert!(matches!(
        c.handle(0, chunk(1, true)),
        Reply::Registered { .. }
    ));
    assert_eq!(c.committed_objects().len(), 2);
    c.check_invariants();
}

#[test]
fn a_rebuilt_object_missing_replicas_is_repaired() {
    let mut c = restarted();
    // Two replicas were asked for; only one service rejoins with it.
    let mut e = entry("two", 0, 64, 3);
    e.want = 2;
    let (r0, inc0, _) = rejoin(&mut c, 0, 0, OLD, vec![e]);
    let (r1, inc1, _) = rejoin(&mut c, 1, 1, OLD + 1, vec![]);
    c.check_invariants();
    let hb = |rank, incarnation| Request::Heartbeat {
        rank,
        incarnation,
        index_seq: 0,
        index_resync: false,
        repaired: Vec::new(),
    };
    let Reply::Heartbeat { repairs, .. } = c.handle(10, hb(r1, inc1)) else {
        panic!("heartbeat refused");
    };
    assert_eq!(
        repairs.len(),
        1,
        "the second replica is repaired onto the other service"
    );
    assert_eq!((repairs[0].source.rank, repairs[0].len), (r0, 64));
    c.check_invariants();
    let done = Request::Heartbeat {
        rank: r1,
        incarnation: inc1,
        index_seq: 0,
        index_resync: false,
        repaired: vec![msg::RepairDone {
            token: repairs[0].token,
            ok: true,
        }],
    };
    assert!(matches!(c.handle(20, done), Reply::Heartbeat { .. }));
    assert_eq!(lookup(&mut c, 30, &["two"])[0].replicas.len(), 2);
    // Nothing more to repair.
    let Reply::Heartbeat { repairs, .. } = c.handle(40, hb(r0, inc0)) else {
        panic!("heartbeat refused");
    };
    assert!(repairs.is_empty());
    c.check_invariants();
}

#[test]
fn remove_all_unlinks_every_committed_object_and_waits_for_the_rebuild() {
    let mut c = restarted();
    assert!(
        matches!(c.handle(0, Request::RemoveAll), Reply::Busy { .. }),
        "services may still rejoin with objects"
    );
    rejoin(
        &mut c,
        1,
        0,
        OLD,
        vec![entry("a", 0, 64, 1), entry("b", 64, 64, 2)],
    );
    let leased = lookup(&mut c, 2, &["a"])[0].lease;
    let pending = alloc(&mut c, 3, alloc_req(&[("p", 64)], None));
    assert_eq!(pending[0].code, 0);
    // Past the rebuild window.
    advance(&mut c, 3, 2_100);
    assert_eq!(
        c.handle(2_100, Request::RemoveAll),
        Reply::Removed { count: 2 }
    );
    c.check_invariants();
    assert!(!exists(&mut c, 2_100, "a") && !exists(&mut c, 2_100, "b"));
    // The pending put is untouched; the leased object goes at its release.
    assert_eq!(c.committed_objects().len(), 0);
    assert_eq!(c.pending.len(), 1);
    c.handle(
        2_200,
        Request::Release {
            leases: vec![leased],
        },
    );
    c.check_invariants();
    assert_eq!(
        c.handle(2_300, Request::RemoveAll),
        Reply::Removed { count: 0 }
    );
}
