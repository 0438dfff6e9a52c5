//! The separately driven phases of a put (stage, finish) and the lease-only lookup.

use super::tests::{addr, meta, replica};
use super::*;
use mmc_controlplane::msg::{AllocItem, LookupItem, Reply};
use mmc_controlplane::Code;

#[test]
fn stage_allocates_without_writing_or_committing() {
    let opts = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    let mut op = PutOp::stage(&["a", "b", ""], &[8, 8, 8], &opts, None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    let Request::Alloc(a) = &req else {
        panic!("alloc first")
    };
    assert_eq!(a.items.len(), 2, "the bad key never leaves");
    op.on_meta(
        1,
        req,
        Ok(Reply::Alloc {
            items: vec![
                AllocItem {
                    code: 0,
                    retry: false,
                    token: 7,
                    replicas: vec![replica(1, 10, 64, 8), replica(2, 20, 0, 8)],
                },
                AllocItem {
                    code: Code::DuplicatedObject.as_i32(),
                    retry: false,
                    token: 0,
                    replicas: Vec::new(),
                },
            ],
            services: vec![addr(1, 5), addr(2, 6), addr(3, 9)],
        }),
    );
    assert!(matches!(op.poll(1), Action::Done), "no transfer, no commit");
    let staged = op.take_staged();
    assert_eq!(staged.len(), 1);
    assert_eq!(
        (staged[0].item, staged[0].token, staged[0].at_ms),
        (0, 7, 1)
    );
    assert_eq!(staged[0].replicas.len(), 2);
    let ranks: Vec<u32> = staged[0].services.iter().map(|s| s.rank).collect();
    assert_eq!(ranks, vec![1, 2], "only the services of its replicas");
    let r = op.results().unwrap();
    assert!(r[0].is_ok());
    assert_eq!(r[1].as_ref().unwrap_err().code(), Code::DuplicatedObject);
    assert_eq!(r[2].as_ref().unwrap_err().code(), Code::InvalidParam);
}

#[test]
fn stage_commits_a_bad_placement_as_failed() {
    let mut op = PutOp::stage(&["a"], &[8], &PutOptions::default(), None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    // A replica of the wrong size: the key cannot be staged and its allocation is given back.
    op.on_meta(
        1,
        req,
        Ok(Reply::Alloc {
            items: vec![AllocItem {
                code: 0,
                retry: false,
                token: 7,
                replicas: vec![replica(1, 10, 0, 4)],
            }],
            services: vec![addr(1, 5)],
        }),
    );
    let req = meta(op.poll(1));
    let Request::Commit { items } = &req else {
        panic!("the bad placement is committed as failed")
    };
    assert_eq!((items[0].1.token, items[0].1.ok), (7, false));
    op.on_meta(2, req, Ok(Reply::Commit { codes: vec![0] }));
    assert!(matches!(op.poll(2), Action::Done));
    assert!(op.take_staged().is_empty());
    assert!(matches!(
        op.results().unwrap()[0],
        Err(mmc_controlplane::Error::Protocol(_))
    ));
}

#[test]
fn finish_commits_and_sends_again_while_busy() {
    let mut op = FinishOp::new(&["a", "b"], &[7, 8], &[true, false], &[11, 0], 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(
        1,
        req,
        Ok(Reply::Busy {
            retry_ms: 50,
            message: "rebuilding".into(),
        }),
    );
    assert!(matches!(op.poll(2), Action::Sleep { until_ms: 51 }));
    let req = meta(op.poll(51));
    let Request::Commit { items } = &req else {
        panic!("the same commit again")
    };
    assert_eq!(items.len(), 2);
    assert_eq!((items[0].1.ok, items[0].1.crc), (true, 11));
    assert!(!items[1].1.ok);
    op.on_meta(
        52,
        req,
        Ok(Reply::Commit {
            codes: vec![0, -3007],
        }),
    );
    assert!(matches!(op.poll(52), Action::Done));
    let r = op.results();
    assert!(r[0].is_ok());
    assert_eq!(r[1].as_ref().unwrap_err().code(), Code::ObjectNotExists);
}

#[test]
fn finish_times_out_every_key() {
    let mut op = FinishOp::new(&["a"], &[7], &[true], &[1], 0, 100).unwrap();
    let _req = meta(op.poll(0));
    assert!(matches!(op.poll(100), Action::Done));
    assert_eq!(op.results()[0].as_ref().unwrap_err().code(), Code::Timeout);
    assert!(FinishOp::new(&["a"], &[7, 8], &[true], &[1], 0, 100).is_err());
}

#[test]
fn lease_lookup_counts_the_lease_from_the_send() {
    let mut op = MetaOp::new(MetaKind::Lease, &["a", "b"], 0, 1000).unwrap();
    let req = meta(op.poll(10));
    assert!(matches!(req, Request::Lookup { .. }));
    op.on_meta(
        30,
        req,
        Ok(Reply::Lookup {
            lease_ms: 500,
            items: vec![
                LookupItem {
                    code: 0,
                    size: 8,
                    crc: 9,
                    lease: 42,
                    replicas: vec![replica(1, 10, 0, 8)],
                },
                LookupItem {
                    code: Code::ObjectNotExists.as_i32(),
                    size: 0,
                    crc: 0,
                    lease: 0,
                    replicas: Vec::new(),
                },
            ],
            services: vec![addr(1, 5)],
        }),
    );
    assert_eq!(op.services().len(), 1);
    assert!(matches!(op.poll(30), Action::Done));
    let r = op.results().unwrap();
    let a = r[0].as_ref().unwrap();
    assert_eq!((a.lease, a.crc, a.size, a.lease_until_ms), (42, 9, 8, 510));
    assert_eq!(r[1].as_ref().unwrap_err().code(), Code::ObjectNotExists);
}
