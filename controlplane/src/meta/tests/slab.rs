//! Space leases (`slab.rs`): slots granted ahead of puts, bound and committed in one request.

use super::*;
use crate::msg::{LeasedPut, SlotRequest};

const CLIENT: u64 = 77;

fn slot_req(client_id: u64, size: u64, count: u32, replicas: u16) -> SlotRequest {
    SlotRequest {
        writer_rank: None,
        client_id,
        media: msg::MEDIA_DRAM,
        policy: msg::NATIVE_AFFINITY,
        replicas,
        size,
        count,
        preferred: Vec::new(),
    }
}

fn lease(core: &mut MetaCore, now: u64, req: SlotRequest) -> Vec<msg::AllocItem> {
    let items = match core.handle(now, Request::LeaseSlots(req)) {
        Reply::Slots {
            items, lease_ms, ..
        } => {
            assert_eq!(lease_ms, core.params().pending_timeout_ms);
            items
        }
        other => panic!("{other:?}"),
    };
    core.check_invariants();
    items
}

fn put_leased(core: &mut MetaCore, now: u64, client_id: u64, items: Vec<LeasedPut>) -> Vec<i32> {
    let codes = match core.handle(now, Request::PutLeased { client_id, items }) {
        Reply::Commit { codes } => codes,
        other => panic!("{other:?}"),
    };
    core.check_invariants();
    codes
}

fn item(token: u64, key: &str, size: u64) -> LeasedPut {
    LeasedPut {
        token,
        key: key.into(),
        size,
        crc: 9,
        ok: true,
    }
}

#[test]
fn a_leased_put_commits_in_one_request() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let slots = lease(&mut c, 0, slot_req(CLIENT, 4096, 8, 1));
    assert_eq!(slots.len(), 8);
    assert_eq!(c.slots_live(), 8);
    // Slots are invisible, keyless and held like pending puts (never room, never evictable).
    assert_eq!(status(&mut c, 0).objects, 0);
    let held = c.tier_held(msg::MEDIA_DRAM);
    assert_eq!((held.pending, held.evictable), (8 * 4096, 0));
    // Ranges never overlap: each slot is its own allocation.
    let mut ranges: Vec<(u64, u64)> = slots
        .iter()
        .map(|s| (s.replicas[0].offset, s.replicas[0].len))
        .collect();
    ranges.sort_unstable();
    assert!(ranges.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
    // A smaller object fits a slot; it is visible at once with its own size and CRC.
    assert_eq!(
        put_leased(&mut c, 1, CLIENT, vec![item(slots[0].token, "k", 4000)]),
        vec![0]
    );
    let got = lookup(&mut c, 1, &["k"]).remove(0);
    assert_eq!((got.code, got.size, got.crc), (0, 4000, 9));
    assert_eq!(got.replicas[0].offset, slots[0].replicas[0].offset);
    assert_eq!(c.slots_live(), 7);
    assert_eq!(status(&mut c, 1).objects, 1);
    // The object is in the service's index like any committed put; the slots are not.
    assert_eq!(c.committed_objects().len(), 1);
    // Giving slots back frees them at once.
    let back: Vec<LeasedPut> = slots[1..]
        .iter()
        .map(|s| LeasedPut {
            ok: false,
            ..item(s.token, "", 0)
        })
        .collect();
    assert_eq!(put_leased(&mut c, 2, CLIENT, back), vec![0; 7]);
    assert_eq!(c.slots_live(), 0);
    assert_eq!(used(&c), 4096);
}

#[test]
fn a_slot_is_used_once_by_its_client_only() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let slots = lease(&mut c, 0, slot_req(CLIENT, 4096, 4, 1));
    let (a, b, d, e) = (
        slots[0].token,
        slots[1].token,
        slots[2].token,
        slots[3].token,
    );
    // Another client cannot use it, and its attempt does not spend it.
    assert_eq!(
        put_leased(&mut c, 0, CLIENT + 1, vec![item(a, "x", 10)]),
        vec![-3000]
    );
    assert_eq!(
        put_leased(&mut c, 0, CLIENT, vec![item(a, "x", 10)]),
        vec![0]
    );
    // A second put into the same slot (two objects on one range) is refused.
    assert_eq!(
        put_leased(&mut c, 0, CLIENT, vec![item(a, "y", 10)]),
        vec![-3004]
    );
    assert!(!exists(&mut c, 0, "y"));
    // Too large for the slot, or a key that exists: refused, and the slot is used up.
    assert_eq!(
        put_leased(&mut c, 0, CLIENT, vec![item(b, "z", 4097)]),
        vec![-3000]
    );
    assert_eq!(
        put_leased(&mut c, 0, CLIENT, vec![item(d, "x", 10)]),
        vec![-3006]
    );
    assert_eq!(
        put_leased(&mut c, 0, CLIENT, vec![item(b, "z", 10)]),
        vec![-3004]
    );
    assert_eq!(c.slots_live(), 1);
    // A normal put of a key, then a leased put of the same key: create-only.
    put(&mut c, 0, "n", 100, None).unwrap();
    assert_eq!(
        put_leased(&mut c, 0, CLIENT, vec![item(e, "n", 10)]),
        vec![-3006]
    );
    assert_eq!(c.slots_live(), 0);
    // Bad requests are refused whole.
    for bad in [
        slot_req(0, 4096, 4, 1),
        slot_req(CLIENT, 0, 4, 1),
        slot_req(CLIENT, SLOT_SIZE_MAX + 1, 4, 1),
        slot_req(CLIENT, 4096, SLOTS_GRANT_MAX + 1, 1),
        slot_req(CLIENT, 4096, 4, 9),
    ] {
        assert!(matches!(
            c.handle(0, Request::LeaseSlots(bad)),
            Reply::Error { code: -3000, .. }
        ));
    }
}

#[test]
fn unused_slots_expire_and_their_space_returns() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let timeout = c.params().pending_timeout_ms;
    let slots = lease(&mut c, 0, slot_req(CLIENT, 8192, 16, 1));
    assert_eq!(used(&c), 16 * 8192);
    advance(&mut c, 0, timeout - 100);
    assert_eq!(c.slots_live(), 16, "held until the deadline");
    advance(&mut c, timeout - 100, timeout);
    assert_eq!((c.slots_live(), used(&c)), (0, 0));
    assert_eq!(
        put_leased(
            &mut c,
            timeout,
            CLIENT,
            vec![item(slots[0].token, "late", 10)]
        ),
        vec![-3004],
        "an expired slot is refused: the client puts the normal way"
    );
}

#[test]
fn a_dead_client_s_slots_are_held_until_their_deadline() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let timeout = c.params().pending_timeout_ms;
    lease(&mut c, 0, slot_req(CLIENT, 4096, 8, 1));
    // Bytes the client sent may still be on their way: nothing is reused before the deadline.
    c.client_gone(10, CLIENT);
    c.check_invariants();
    assert_eq!(c.slots_live(), 8);
    advance(&mut c, 10, timeout);
    assert_eq!((c.slots_live(), used(&c)), (0, 0));
}

#[test]
fn a_dropped_member_takes_its_slots_with_it() {
    let mut c = core();
    let (rank, incarnation) = register(&mut c, None, 64 * MIB);
    register(&mut c, None, 64 * MIB);
    let slots = lease(&mut c, 0, slot_req(CLIENT, 4096, 4, 2));
    assert!(slots.iter().all(|s| s.replicas.len() == 2));
    let bye = Request::Unregister { rank, incarnation };
    assert!(matches!(c.handle(1, bye), Reply::Ack { code: 0 }));
    c.check_invariants();
    // Slots keep their other replica; one bound now is committed with it (repair adds one).
    assert_eq!(c.slots_live(), 4);
    assert_eq!(
        put_leased(&mut c, 2, CLIENT, vec![item(slots[0].token, "k", 10)]),
        vec![0]
    );
    assert_eq!(lookup(&mut c, 2, &["k"])[0].replicas.len(), 1);
}

#[test]
fn slots_are_bounded_and_never_evicted() {
    let mut c = core();
    register(&mut c, None, 16 * MIB);
    // All slots together hold at most an eighth of the capacity.
    let mut granted = 0;
    for client in 1..=8u64 {
        granted += lease(&mut c, 0, slot_req(client, 64 << 10, 64, 1)).len();
    }
    assert_eq!(granted as u64 * (64 << 10), 16 * MIB / 8);
    // Per client: at most SLOTS_PER_CLIENT_MAX.
    let mut c = core();
    register(&mut c, None, 1024 * MIB);
    let mut mine = 0;
    for _ in 0..8 {
        mine += lease(&mut c, 0, slot_req(CLIENT, 4096, 64, 1)).len();
    }
    assert_eq!(mine, SLOTS_PER_CLIENT_MAX);

    // Under eviction pressure: the pool fills with objects; puts evict objects, never slots.
    let mut c = core();
    register(&mut c, None, 8 * MIB);
    let slots = lease(&mut c, 0, slot_req(CLIENT, 4096, 64, 1));
    assert_eq!(slots.len(), 64);
    for i in 0..200 {
        put(&mut c, 1, &format!("o{i}"), 64 << 10, None).unwrap();
    }
    assert!(c.evicted_total() > 0, "the pool was under pressure");
    assert_eq!(c.slots_live(), 64, "no slot was evicted");
    // Slots granted under pressure evict least recently used objects, as a put does.
    let more = lease(&mut c, 2, slot_req(CLIENT + 1, 64 << 10, 8, 1));
    assert_eq!(more.len(), 8);
    let codes = put_leased(
        &mut c,
        3,
        CLIENT,
        slots
            .iter()
            .enumerate()
            .map(|(i, s)| item(s.token, &format!("s{i}"), 4096))
            .collect(),
    );
    assert!(codes.iter().all(|c| *c == 0));
    assert_eq!(c.slots_live(), 8);
}

#[test]
fn slots_of_an_earlier_run_are_refused() {
    // A restarted core knows nothing of the old run's slots: their tokens are refused, and
    // nothing but committed objects is ever in an index to rebuild from.
    let mut old = core();
    register(&mut old, None, 64 * MIB);
    let slots = lease(&mut old, 0, slot_req(CLIENT, 4096, 2, 1));
    assert!(old.committed_objects().is_empty());
    let mut c = MetaCore::new(MetaParams {
        epoch: 5,
        member_timeout_ms: u64::MAX / 4,
        rebuild_window_ms: 0,
        ..MetaParams::default()
    });
    register(&mut c, None, 64 * MIB);
    assert_eq!(
        put_leased(&mut c, 0, CLIENT, vec![item(slots[0].token, "k", 10)]),
        vec![-3004]
    );
    assert!(!exists(&mut c, 0, "k"));
}

#[test]
fn slots_go_where_the_put_prefers() {
    let mut c = core();
    register(&mut c, None, 64 * MIB);
    let (rank, _) = register(&mut c, None, 64 * MIB);
    let req = SlotRequest {
        policy: msg::PREFERRED_AFFINITY,
        preferred: vec![rank as i32],
        ..slot_req(CLIENT, 4096, 8, 1)
    };
    let slots = lease(&mut c, 0, req);
    assert_eq!(slots.len(), 8);
    assert!(slots
        .iter()
        .all(|s| s.replicas.len() == 1 && s.replicas[0].rank == rank));
}
