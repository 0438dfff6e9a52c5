//! Slot leases on the client side: the pool's refills, use-by times and give-backs, and a put
//! into a slot from its writes to its one `PutLeased`.

use super::tests::{addr, meta, replica};
use super::*;
use mmc_controlplane::msg::{self, AllocItem, Reply};
use mmc_controlplane::{Code, Error};

const CLIENT: u64 = 9;

fn class() -> SlotClass {
    SlotClass::of(4096, &PutOptions::default()).expect("a 4 KiB put uses slots")
}

fn grant(tokens: std::ops::Range<u64>, incarnation: u64) -> Reply {
    Reply::Slots {
        lease_ms: 30_000,
        items: tokens
            .map(|t| AllocItem {
                code: 0,
                retry: false,
                token: t,
                replicas: vec![replica(1, 3, t * 4096, 4096)],
            })
            .collect(),
        services: vec![addr(1, incarnation)],
    }
}

#[test]
fn classes_round_up_and_skip_what_slots_cannot_hold() {
    let c = class();
    assert_eq!((c.size, c.replicas, c.preferred), (4096, 1, -1));
    assert_eq!(
        SlotClass::of(1, &PutOptions::default()).unwrap().size,
        SLOT_CLASS_MIN
    );
    assert_eq!(
        SlotClass::of(5000, &PutOptions::default()).unwrap().size,
        8192
    );
    assert!(SlotClass::of(SLOT_PUT_MAX + 1, &PutOptions::default()).is_none());
    let two = PutOptions {
        policy: msg::PREFERRED_AFFINITY,
        preferred: vec![1, 2],
        ..PutOptions::default()
    };
    assert!(SlotClass::of(4096, &two).is_none(), "two preferred ranks");
    let one = PutOptions {
        preferred: vec![-1, 2],
        ..two
    };
    assert_eq!(SlotClass::of(4096, &one).unwrap().preferred, 2);
}

#[test]
fn the_pool_refills_when_empty_and_gives_back_what_it_cannot_use() {
    let mut pool = SlotPool::new(CLIENT, None);
    let c = class();
    let Some(Request::LeaseSlots(r)) = pool.refill(0, c) else {
        panic!("an empty class asks for slots")
    };
    assert_eq!((r.client_id, r.size, r.count), (CLIENT, 4096, SLOTS_ASK));
    pool.on_refill(0, 1, c, Ok(grant(10..13, 7)));
    assert_eq!(pool.len(), 3);
    assert!(pool.refill(1, c).is_none(), "slots left: no refill");
    let (slot, services) = pool.take(1, c).unwrap();
    assert_eq!(services[0].incarnation, 7);
    assert!(
        slot.usable_until_ms == 15_000,
        "half the lease after the ask"
    );
    // Past half its lease a slot is not used: it goes back.
    assert!(pool.take(15_000, c).is_none());
    match pool.give_back() {
        Some(Request::PutLeased { client_id, items }) => {
            assert_eq!(client_id, CLIENT);
            assert_eq!(items.len(), 2);
            assert!(items.iter().all(|i| !i.ok && i.key.is_empty()));
        }
        other => panic!("{other:?}"),
    }
    // An empty grant (or a refusal): the normal path for a while.
    pool.on_refill(20_000, 20_000, c, Ok(grant(0..0, 7)));
    assert!(pool.refill(20_500, c).is_none());
    assert!(pool.refill(20_000 + 1_000, c).is_some());
    pool.on_refill(
        21_000,
        21_000,
        c,
        Err(Error::Remote {
            code: Code::InvalidParam,
            context: "an older meta service".into(),
        }),
    );
    assert!(pool.refill(21_500, c).is_none());
    // Client id 0 never asks (the meta service would refuse).
    assert!(SlotPool::new(0, None).refill(0, c).is_none());
}

fn leased_op(pool: &mut SlotPool, scratch: LeasedScratch) -> LeasedPutOp {
    let (slot, _) = pool.take(1, class()).unwrap();
    LeasedPutOp::new("k", 4000, 0xC, slot, CLIENT, 1, 1_000, scratch)
}

#[test]
fn a_leased_put_writes_then_commits_in_one_request() {
    let mut pool = SlotPool::new(CLIENT, None);
    pool.on_refill(0, 0, class(), Ok(grant(10..14, 7)));
    let mut op = leased_op(&mut pool, LeasedScratch::default());
    assert!(matches!(op.poll(1), Action::Transfer));
    let t = op.transfers().to_vec();
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].fence.incarnation, t[0].len, t[0].offset),
        (7, 4000, 13 * 4096)
    );
    op.on_transfers(2, &[Ok(())]);
    let req = meta(op.poll(2));
    let Request::PutLeased { client_id, items } = &req else {
        panic!("{req:?}")
    };
    assert_eq!(*client_id, CLIENT);
    assert_eq!(
        (items[0].token, items[0].key.as_str(), items[0].size),
        (13, "k", 4000)
    );
    op.on_meta(3, req, Ok(Reply::Commit { codes: vec![0] }));
    assert!(matches!(op.poll(3), Action::Done));
    let (outcome, scratch) = op.finish_op();
    assert!(matches!(outcome, Leased::Done(Ok(()))));
    // The next put reuses the request and its key's buffer.
    let mut op = leased_op(&mut pool, scratch);
    assert!(matches!(op.poll(4), Action::Transfer));
    op.on_transfers(4, &[Ok(())]);
    let req = meta(op.poll(4));
    // The key exists: the put's answer, no fallback.
    op.on_meta(5, req, Ok(Reply::Commit { codes: vec![-3006] }));
    assert!(matches!(op.poll(5), Action::Done));
    assert!(matches!(
        op.finish_op().0,
        Leased::Done(Err(Error::Exists { .. }))
    ));
}

#[test]
fn a_failed_write_or_an_unknown_slot_falls_back() {
    let mut pool = SlotPool::new(CLIENT, None);
    pool.on_refill(0, 0, class(), Ok(grant(10..14, 7)));
    // The write found its service gone: reported, the slot given back, the normal path.
    let mut op = leased_op(&mut pool, LeasedScratch::default());
    assert!(matches!(op.poll(1), Action::Transfer));
    let gone = Error::LocalUnreachable {
        endpoint: "x".into(),
        reason: "reset".into(),
    };
    op.on_transfers(2, &[Err(gone)]);
    assert!(matches!(
        op.poll(2),
        Action::MetaOneway(Request::Suspect { rank: 1, .. })
    ));
    match op.poll(2) {
        Action::MetaOneway(Request::PutLeased { items, .. }) => {
            assert!(!items[0].ok && items[0].key.is_empty() && items[0].token == 13)
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(op.poll(2), Action::Done));
    assert!(matches!(
        op.finish_op().0,
        Leased::Fallback {
            forget_class: false
        }
    ));
    // The meta service does not know the slot (expired, or an earlier run's): fall back, and
    // the pool drops the class's other slots.
    let mut op = leased_op(&mut pool, LeasedScratch::default());
    assert!(matches!(op.poll(3), Action::Transfer));
    op.on_transfers(3, &[Ok(())]);
    let req = meta(op.poll(3));
    op.on_meta(4, req, Ok(Reply::Commit { codes: vec![-3004] }));
    assert!(matches!(
        op.finish_op().0,
        Leased::Fallback { forget_class: true }
    ));
    pool.forget_class(class());
    assert_eq!(pool.len(), 0);
    assert!(matches!(pool.give_back(), Some(Request::PutLeased { items, .. }) if items.len() == 2));
}

#[test]
fn slots_of_a_service_that_registered_again_are_not_used() {
    let mut pool = SlotPool::new(CLIENT, None);
    pool.on_refill(0, 0, class(), Ok(grant(10..12, 7)));
    // A later grant names the service at a new incarnation: the old slots are given back.
    pool.on_refill(1, 1, class(), Ok(grant(20..21, 8)));
    let (slot, _) = pool.take(2, class()).unwrap();
    assert_eq!(slot.token, 20);
    assert!(pool.take(2, class()).is_none());
    assert!(matches!(pool.give_back(), Some(Request::PutLeased { items, .. }) if items.len() == 2));
}

#[test]
fn a_write_failing_at_the_deadline_is_the_put_s_answer() {
    let mut pool = SlotPool::new(CLIENT, None);
    pool.on_refill(0, 0, class(), Ok(grant(10..12, 7)));
    // The op was made at 1 ms with a 1000 ms timeout; its write fails at 950 ms (a service that
    // never answered): no time is left for the normal way.
    let mut op = leased_op(&mut pool, LeasedScratch::default());
    assert!(matches!(op.poll(1), Action::Transfer));
    let silent = Error::LocalUnreachable {
        endpoint: "x".into(),
        reason: "no answer within 1000 ms".into(),
    };
    op.on_transfers(950, &[Err(silent)]);
    assert!(matches!(
        op.poll(1_001),
        Action::MetaOneway(Request::Suspect { .. })
    ));
    assert!(matches!(
        op.poll(1_001),
        Action::MetaOneway(Request::PutLeased { .. })
    ));
    assert!(matches!(op.poll(1_001), Action::Done));
    assert!(matches!(
        op.finish_op().0,
        Leased::Done(Err(Error::LocalUnreachable { .. }))
    ));
    // A put whose write never completes times out.
    let mut op = leased_op(&mut pool, LeasedScratch::default());
    assert!(matches!(op.poll(1), Action::Transfer));
    assert!(matches!(op.poll(1_001), Action::Done));
    assert!(matches!(
        op.finish_op().0,
        Leased::Done(Err(Error::Timeout { .. }))
    ));
}
