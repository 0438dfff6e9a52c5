//! `Busy` answers (the meta service rebuilding its directory) in every operation, and
//! `verify_reads` in the get.

use super::tests::{addr, lookup, meta, replica};
use super::*;
use mmc_controlplane::msg::{AllocItem, LookupItem, Reply};
use mmc_controlplane::{Code, Error};

fn busy(retry_ms: u64) -> mmc_controlplane::Result<Reply> {
    Ok(Reply::Busy {
        retry_ms,
        message: "rebuilding: 2 of 3 members rejoined".into(),
    })
}

/// The timeout error of a key whose deadline passed while the meta service was busy.
fn assert_busy_timeout(r: &mmc_controlplane::Result<impl std::fmt::Debug>) {
    let e = r.as_ref().unwrap_err();
    assert_eq!(e.code(), Code::Timeout, "{e}");
    let text = e.to_string();
    assert!(text.contains("rebuilding its directory"), "{text}");
    assert!(
        text.contains("2 of 3 members"),
        "the meta service's words: {text}"
    );
}

/// Answer every request `Busy { retry_ms }`, sleeping as told, until the operation is done;
/// returns how many requests it sent, checking each sleep is bounded and ends by `deadline`.
fn busy_until_done(op: &mut impl Operation, retry_ms: u64, deadline: u64) -> usize {
    let mut now = 0;
    let mut sent = 0;
    loop {
        match op.poll(now) {
            Action::Meta(req) => {
                sent += 1;
                op.on_meta(now, req, busy(retry_ms));
            }
            Action::Sleep { until_ms } => {
                assert!(until_ms > now, "a sleep moves time on");
                assert!(until_ms - now <= BUSY_RETRY_MAX_MS, "sleeps are capped");
                assert!(until_ms <= deadline, "never sleeps past the deadline");
                now = until_ms;
            }
            Action::Done => return sent,
            other => panic!("unexpected {other:?}: no lease, no transfer after Busy"),
        }
    }
}

#[test]
fn busy_back_off_is_bounded_below_above_and_by_the_deadline() {
    assert_eq!(busy_until(10, 0, 1000), 11, "at least 1 ms");
    assert_eq!(busy_until(10, 30, 1000), 40);
    assert_eq!(busy_until(10, 60_000, 1000), 10 + BUSY_RETRY_MAX_MS);
    assert_eq!(busy_until(900, 150, 1000), 1000, "never past the deadline");
}

#[test]
fn get_looks_up_again_after_busy_then_reads() {
    let mut op = GetOp::new(&["k", ""], &[8, 8], None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(1, req, busy(30));
    assert!(
        matches!(op.poll(1), Action::Sleep { until_ms: 31 }),
        "sleeps, releases nothing"
    );
    assert!(matches!(op.poll(20), Action::Sleep { until_ms: 31 }));
    let req = meta(op.poll(31));
    let Request::Lookup { keys } = &req else {
        panic!("the same lookup again")
    };
    assert_eq!(
        keys,
        &vec!["k".to_string()],
        "the key came back for the retry"
    );
    op.on_meta(
        32,
        req,
        lookup(
            vec![LookupItem {
                code: 0,
                size: 8,
                crc: 0,
                lease: 5,
                replicas: vec![replica(1, 1, 0, 8)],
            }],
            vec![addr(1, 2)],
        ),
    );
    assert!(matches!(op.poll(32), Action::Transfer));
    op.on_transfers(33, vec![Ok(())]);
    let Action::MetaOneway(Request::Release { leases }) = op.poll(33) else {
        panic!("release")
    };
    assert_eq!(leases, vec![5]);
    assert!(matches!(op.poll(33), Action::Done));
    let r = op.results().unwrap();
    assert_eq!(*r[0].as_ref().unwrap(), 8);
    assert_eq!(r[1].as_ref().unwrap_err().code(), Code::InvalidParam);
}

#[test]
fn get_busy_until_the_deadline_times_out_naming_the_rebuild() {
    let mut op = GetOp::new(&["a", "b"], &[8, 8], None, 0, 500).unwrap();
    let sent = busy_until_done(&mut op, 60_000, 500);
    assert!(
        sent >= 3,
        "asked again every {BUSY_RETRY_MAX_MS} ms at most: {sent}"
    );
    let r = op.results().unwrap();
    assert_busy_timeout(&r[0]);
    assert_busy_timeout(&r[1]);
}

fn alloc_ok(token: u64) -> mmc_controlplane::Result<Reply> {
    Ok(Reply::Alloc {
        items: vec![AllocItem {
            code: 0,
            retry: false,
            token,
            replicas: vec![replica(1, 1, 0, 8)],
        }],
        services: vec![addr(1, 2)],
    })
}

#[test]
fn put_sends_alloc_and_commit_again_after_busy() {
    let mut op = PutOp::new(&["a"], &[8], Some(&[9]), &PutOptions::default(), None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(0, req, busy(0));
    assert!(matches!(op.poll(0), Action::Sleep { until_ms: 1 }));
    let req = meta(op.poll(1));
    let Request::Alloc(a) = &req else {
        panic!("allocates again")
    };
    assert_eq!(a.items, vec![("a".to_string(), 8)]);
    op.on_meta(2, req, alloc_ok(7));
    assert!(matches!(op.poll(2), Action::Transfer));
    op.on_transfers(3, vec![Ok(())]);
    let req = meta(op.poll(3));
    op.on_meta(4, req, busy(10));
    assert!(matches!(op.poll(4), Action::Sleep { until_ms: 14 }));
    let req = meta(op.poll(14));
    let Request::Commit { items } = &req else {
        panic!("the same commit again, no second write")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].0, "a");
    assert_eq!(
        (items[0].1.token, items[0].1.ok, items[0].1.crc),
        (7, true, 9)
    );
    op.on_meta(15, req, Ok(Reply::Commit { codes: vec![0] }));
    assert!(matches!(op.poll(15), Action::Done));
    assert!(op.results().unwrap()[0].is_ok());
}

#[test]
fn put_busy_until_the_deadline_times_out_naming_the_rebuild() {
    let mut op = PutOp::new(
        &["a", "b"],
        &[8, 8],
        Some(&[1, 2]),
        &PutOptions::default(),
        None,
        0,
        450,
    )
    .unwrap();
    let sent = busy_until_done(&mut op, 500, 450);
    assert!(sent >= 3, "{sent}");
    let r = op.results().unwrap();
    assert_busy_timeout(&r[0]);
    assert_busy_timeout(&r[1]);

    // A commit that stays busy: the written key times out too (its space is reclaimed as pending).
    let mut op = PutOp::new(&["a"], &[8], Some(&[9]), &PutOptions::default(), None, 0, 300).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(0, req, alloc_ok(3));
    op.poll(0);
    op.on_transfers(0, vec![Ok(())]);
    let mut now = 0;
    let mut commits = 0;
    loop {
        match op.poll(now) {
            Action::Meta(req @ Request::Commit { .. }) => {
                commits += 1;
                op.on_meta(now, req, busy(1_000));
            }
            Action::Sleep { until_ms } => now = until_ms,
            Action::Done => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(now, 300, "woke at the deadline, not after");
    assert!(commits >= 2, "{commits}");
    assert_busy_timeout(&op.results().unwrap()[0]);
}

#[test]
fn meta_ops_send_again_after_busy() {
    let mut op = MetaOp::new(MetaKind::Query, &["a", "b"], 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(5, req, busy(50));
    assert!(matches!(op.poll(5), Action::Sleep { until_ms: 55 }));
    let req = meta(op.poll(55));
    let Request::Query { keys } = &req else {
        panic!("the same query")
    };
    assert_eq!(keys, &vec!["a".to_string(), "b".to_string()]);
    op.on_meta(
        56,
        req,
        Ok(Reply::Query {
            items: vec![
                mmc_controlplane::msg::QueryItem {
                    code: 0,
                    size: 8,
                    replicas: vec![replica(1, 1, 0, 8)],
                },
                mmc_controlplane::msg::QueryItem {
                    code: Code::ObjectNotExists.as_i32(),
                    size: 0,
                    replicas: vec![],
                },
            ],
        }),
    );
    assert!(matches!(op.poll(56), Action::Done));
    let r = op.results().unwrap();
    assert_eq!(r[0].as_ref().unwrap().size, 8);
    assert_eq!(r[1].as_ref().unwrap_err().code(), Code::ObjectNotExists);
}

#[test]
fn meta_ops_busy_until_the_deadline_time_out_per_key() {
    for kind in [MetaKind::Exist, MetaKind::Query, MetaKind::Remove] {
        let mut op = MetaOp::new(kind, &["a", "", "b"], 0, 250).unwrap();
        busy_until_done(&mut op, 100, 250);
        let r = op.results().unwrap();
        assert_busy_timeout(&r[0]);
        assert_eq!(r[1].as_ref().unwrap_err().code(), Code::InvalidParam);
        assert_busy_timeout(&r[2]);
    }
}

/// A get of one 8-byte object with two replicas (ranks 1 then 2), up to its first transfer.
fn get_two_replicas(crc: u32, capacity: u64) -> GetOp {
    let mut op = GetOp::new(&["k"], &[capacity], None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(
        0,
        req,
        lookup(
            vec![LookupItem {
                code: 0,
                size: 8,
                crc,
                lease: 9,
                replicas: vec![replica(1, 3, 64, 8), replica(2, 4, 128, 8)],
            }],
            vec![addr(1, 1), addr(2, 1)],
        ),
    );
    assert!(matches!(op.poll(0), Action::Transfer));
    op
}

/// Feed the first transfer's outcome after "copying" `bytes` into the caller's buffers.
fn deliver(op: &mut GetOp, bufs: &mut [&mut [&mut [u8]]], bytes: &[u8]) {
    let mut rest = bytes;
    for part in bufs[0].iter_mut() {
        let n = part.len().min(rest.len());
        part[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    let mut outcomes = vec![Ok(())];
    op.verify(bufs, &mut outcomes);
    op.on_transfers(1, outcomes);
}

#[test]
fn verify_falls_over_from_a_corrupt_replica_to_a_good_one() {
    let good = b"abcdefgh";
    let crc = crate::checksum([&good[..]]);
    // The object lands in two pieces, the second larger than needed (its tail is not hashed).
    let mut op = get_two_replicas(crc, 12);
    assert_eq!(op.crc(0), Some(crc));
    let (mut p1, mut p2) = ([0u8; 3], [0xEEu8; 9]);
    let mut parts: [&mut [u8]; 2] = [&mut p1, &mut p2];
    let mut bufs: [&mut [&mut [u8]]; 1] = [&mut parts];
    deliver(&mut op, &mut bufs, b"abcdefgX");
    assert!(
        matches!(op.poll(1), Action::Transfer),
        "a checksum mismatch falls over like a failed copy"
    );
    assert_eq!(op.transfers()[0].fence.rank, 2);
    deliver(&mut op, &mut bufs, good);
    assert!(matches!(
        op.poll(1),
        Action::MetaOneway(Request::Release { .. })
    ));
    assert!(matches!(op.poll(1), Action::Done));
    assert_eq!(*op.results().unwrap()[0].as_ref().unwrap(), 8);
}

#[test]
fn verify_fails_the_key_when_no_replica_matches() {
    let mut op = get_two_replicas(crate::checksum([&b"abcdefgh"[..]]), 8);
    let mut buf = [0u8; 8];
    let mut parts: [&mut [u8]; 1] = [&mut buf];
    let mut bufs: [&mut [&mut [u8]]; 1] = [&mut parts];
    deliver(&mut op, &mut bufs, b"Xbcdefgh");
    assert!(matches!(op.poll(1), Action::Transfer));
    deliver(&mut op, &mut bufs, b"abcdefgY");
    let Action::MetaOneway(Request::Release { leases }) = op.poll(1) else {
        panic!("the lease is released")
    };
    assert_eq!(leases, vec![9]);
    op.poll(1);
    let r = op.results().unwrap();
    let e = r[0].as_ref().unwrap_err();
    assert_eq!(e.code(), Code::UnmatchedRet);
    assert_eq!(e.code().as_i32(), -3103);
    let Error::Checksum {
        key,
        rank,
        segment,
        offset,
        expected,
        actual,
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!((key.as_str(), *rank, *segment, *offset), ("k", 2, 4, 128));
    assert_eq!(*expected, crate::checksum([&b"abcdefgh"[..]]));
    assert_eq!(*actual, crate::checksum([&b"abcdefgY"[..]]));
}

#[test]
fn verify_leaves_failed_copies_and_matching_bytes_alone() {
    let op = get_two_replicas(crate::checksum([&b"abcdefgh"[..]]), 8);
    let mut buf = *b"abcdefgh";
    let mut parts: [&mut [u8]; 1] = [&mut buf];
    let bufs: [&mut [&mut [u8]]; 1] = [&mut parts];
    let mut outcomes = vec![Ok(())];
    op.verify(&bufs, &mut outcomes);
    assert!(outcomes[0].is_ok());
    let mut outcomes = vec![Err(Error::Timeout {
        ms: 1,
        what: "slow".into(),
    })];
    op.verify(&bufs, &mut outcomes);
    assert_eq!(outcomes[0].as_ref().unwrap_err().code(), Code::Timeout);
}
