use super::*;
use mmc_controlplane::msg::{AllocItem, CommitItem, LookupItem, Replica, Reply};
use mmc_controlplane::{Code, Error};

pub(super) fn addr(rank: u32, incarnation: u64) -> ServiceAddr {
    ServiceAddr {
        rank,
        incarnation,
        host: "h".into(),
        data_endpoint: format!("127.0.0.1:{}", 9000 + rank),
        shm_endpoint: String::new(),
    }
}

pub(super) fn replica(rank: u32, segment: u32, offset: u64, len: u64) -> Replica {
    Replica {
        rank,
        segment,
        media: 1,
        offset,
        len,
    }
}

/// The request of an [`Action::Meta`].
pub(super) fn meta(a: Action) -> Request {
    match a {
        Action::Meta(r) => r,
        other => panic!("expected a meta request, got {other:?}"),
    }
}

#[test]
fn runs_split_a_range_over_parts() {
    let r: Vec<_> = runs([4u64, 4, 4], 2, 7).collect();
    assert_eq!(r, vec![(0, 2, 2), (1, 0, 4), (2, 0, 1)]);
    let r: Vec<_> = runs([4u64, 0, 4], 4, 4).collect();
    assert_eq!(r, vec![(2, 0, 4)]);
    assert_eq!(runs([4u64], 0, 0).count(), 0);
}

#[test]
fn put_allocates_writes_every_replica_then_commits() {
    let opts = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    let mut op = PutOp::new(
        &["a", "", "b"],
        &[8, 8, 0],
        Some(&[1, 2, 3]),
        &opts,
        Some(1),
        0,
        1000,
    )
    .unwrap();
    let req = meta(op.poll(0));
    let Request::Alloc(a) = &req else {
        panic!("alloc first")
    };
    assert_eq!(a.items, vec![("a".to_string(), 8)], "bad keys never leave");
    op.on_meta(
        1,
        req,
        Ok(Reply::Alloc {
            items: vec![AllocItem {
                code: 0,
                retry: false,
                token: 77,
                replicas: vec![replica(1, 10, 0, 8), replica(2, 20, 64, 8)],
            }],
            services: vec![addr(1, 5), addr(2, 6)],
        }),
    );
    assert!(matches!(op.poll(1), Action::Transfer));
    let t = op.transfers();
    assert_eq!(t.len(), 2);
    assert_eq!(
        t[1].fence,
        Fence {
            rank: 2,
            incarnation: 6,
            segment: 20
        }
    );
    assert_eq!((t[1].offset, t[1].len, t[1].item), (64, 8, 0));
    op.on_transfers(2, vec![Ok(()), Ok(())]);
    let req = meta(op.poll(2));
    let Request::Commit { items } = &req else {
        panic!("commit after the writes")
    };
    assert_eq!(items.len(), 1);
    assert!(items[0].1.ok);
    op.on_meta(3, req, Ok(Reply::Commit { codes: vec![0] }));
    assert!(matches!(op.poll(3), Action::Done));
    let r = op.results().unwrap();
    assert!(r[0].is_ok());
    assert_eq!(r[1].as_ref().unwrap_err().code(), Code::InvalidParam);
    assert_eq!(r[2].as_ref().unwrap_err().code(), Code::InvalidParam);
}

/// An allocation of one key of 8 bytes on `rank` (incarnation `rank + 6`), token `token`.
fn placed_on(rank: u32, token: u64) -> Result<Reply, Error> {
    Ok(Reply::Alloc {
        items: vec![AllocItem {
            code: 0,
            retry: false,
            token,
            replicas: vec![replica(rank, rank, 0, 8)],
        }],
        services: vec![addr(rank, rank as u64 + 6)],
    })
}

fn unreachable() -> Result<(), Error> {
    Err(Error::LocalUnreachable {
        endpoint: "x".into(),
        reason: "connection refused".into(),
    })
}

#[test]
fn put_with_a_failed_write_commits_it_as_failed_and_places_it_again() {
    let mut op = PutOp::new(&["a"], &[8], Some(&[7]), &PutOptions::default(), None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(0, req, placed_on(3, 1));
    op.poll(0);
    op.on_transfers(1, vec![unreachable()]);
    assert!(
        matches!(
            op.poll(1),
            Action::MetaOneway(Request::Suspect {
                rank: 3,
                incarnation: 9
            })
        ),
        "the unreachable service is reported before the commit"
    );
    let req = meta(op.poll(1));
    let Request::Commit { items } = &req else {
        panic!("commit frees the space")
    };
    assert_eq!(
        items[0].1,
        CommitItem {
            token: 1,
            ok: false,
            crc: 7
        }
    );
    op.on_meta(2, req, Ok(Reply::Commit { codes: vec![0] }));
    // The key is free again: placed anew (the meta service now avoids the suspect).
    let req = meta(op.poll(2));
    let Request::Alloc(a) = &req else {
        panic!("allocated again, got {req:?}")
    };
    assert_eq!(a.items, vec![("a".to_string(), 8)]);
    op.on_meta(3, req, placed_on(4, 2));
    assert!(matches!(op.poll(3), Action::Transfer));
    assert_eq!(op.transfers()[0].fence.rank, 4);
    op.on_transfers(4, vec![Ok(())]);
    let req = meta(op.poll(4));
    let Request::Commit { items } = &req else {
        panic!("commit")
    };
    assert_eq!(
        items[0].1,
        CommitItem {
            token: 2,
            ok: true,
            crc: 7
        }
    );
    op.on_meta(5, req, Ok(Reply::Commit { codes: vec![0] }));
    assert!(matches!(op.poll(5), Action::Done));
    assert!(
        op.results().unwrap()[0].is_ok(),
        "stored on the live service"
    );
}

#[test]
fn put_places_a_key_again_at_most_twice_and_only_for_unreachable_services() {
    // Unreachable every time: the first placement and REPLACE_MAX more, then the error.
    let mut op = PutOp::new(&["a"], &[8], Some(&[7]), &PutOptions::default(), None, 0, 1000).unwrap();
    let mut allocs = 0;
    let mut now = 0;
    loop {
        now += 1;
        match op.poll(now) {
            Action::Meta(req @ Request::Alloc(_)) => {
                allocs += 1;
                op.on_meta(now, req, placed_on(allocs, allocs as u64));
            }
            Action::Transfer => op.on_transfers(now, vec![unreachable()]),
            Action::MetaOneway(Request::Suspect { .. }) => {}
            Action::Meta(req @ Request::Commit { .. }) => {
                op.on_meta(now, req, Ok(Reply::Commit { codes: vec![0] }))
            }
            Action::Done => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(allocs, 1 + REPLACE_MAX as u32);
    let r = op.results().unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().code(), Code::NotConnectLocal);

    // Not when the deadline leaves no room for another round.
    let mut op = PutOp::new(&["a"], &[8], Some(&[7]), &PutOptions::default(), None, 0, 100).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(0, req, placed_on(3, 1));
    op.poll(0);
    op.on_transfers(95, vec![unreachable()]);
    op.poll(95); // the suspect report
    let req = meta(op.poll(95));
    op.on_meta(96, req, Ok(Reply::Commit { codes: vec![0] }));
    assert!(matches!(op.poll(96), Action::Done));
    let r = op.results().unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().code(), Code::NotConnectLocal);

    // Not for a write that timed out or was refused with a code.
    for failure in [
        Error::Timeout {
            ms: 5,
            what: "frozen".into(),
        },
        Error::Remote {
            code: Code::Error,
            context: "refused".into(),
        },
    ] {
        let code = failure.code();
        let mut op = PutOp::new(&["a"], &[8], Some(&[7]), &PutOptions::default(), None, 0, 1000).unwrap();
        let req = meta(op.poll(0));
        op.on_meta(0, req, placed_on(3, 1));
        op.poll(0);
        op.on_transfers(1, vec![Err(failure)]);
        let req = meta(op.poll(1));
        assert!(matches!(req, Request::Commit { .. }), "no suspect, commit");
        op.on_meta(2, req, Ok(Reply::Commit { codes: vec![0] }));
        assert!(matches!(op.poll(2), Action::Done), "not placed again");
        assert_eq!(op.results().unwrap()[0].as_ref().unwrap_err().code(), code);
    }
}

#[test]
fn put_waiting_for_leased_space_retries_then_answers_no_space() {
    let mut op = PutOp::new(&["a"], &[8], Some(&[7]), &PutOptions::default(), None, 0, 1000).unwrap();
    let no_room = || {
        Ok(Reply::Alloc {
            items: vec![AllocItem {
                code: Code::ExceedCapacity.as_i32(),
                retry: true,
                token: 0,
                replicas: vec![],
            }],
            services: vec![],
        })
    };
    let mut now = 0;
    let mut tries = 0;
    loop {
        match op.poll(now) {
            Action::Meta(req @ Request::Alloc(_)) => {
                let Request::Alloc(a) = &req else {
                    unreachable!()
                };
                assert_eq!(
                    a.items,
                    vec![("a".to_string(), 8)],
                    "the key comes back each round"
                );
                tries += 1;
                op.on_meta(now, req, no_room());
            }
            Action::Sleep { until_ms } => now = until_ms,
            Action::Done => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(tries > 10, "retried until the margin: {tries}");
    assert!(now < 1000, "answered before the deadline");
    let r = op.results().unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().code(), Code::ExceedCapacity);
}

#[test]
fn put_with_more_replicas_than_live_services_says_so() {
    let opts = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    let mut op = PutOp::new(&["a"], &[8], Some(&[7]), &opts, None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(
        0,
        req,
        Ok(Reply::Alloc {
            items: vec![AllocItem {
                code: Code::ExceedCapacity.as_i32(),
                retry: false,
                token: 0,
                replicas: vec![],
            }],
            services: vec![],
        }),
    );
    assert!(matches!(op.poll(0), Action::Done));
    let r = op.results().unwrap();
    let e = r[0].as_ref().unwrap_err();
    assert_eq!(e.code(), Code::ExceedCapacity);
    assert!(
        e.to_string().contains("2 replicas of 8 bytes"),
        "the message names the replicas: {e}"
    );
}

#[test]
fn put_past_its_deadline_times_out_unconfirmed_keys() {
    let mut op = PutOp::new(&["a"], &[8], Some(&[7]), &PutOptions::default(), None, 0, 100).unwrap();
    let req = meta(op.poll(0));
    assert!(matches!(op.poll(50), Action::Wait { deadline_ms: 100 }));
    assert!(matches!(op.poll(100), Action::Done));
    // A late reply changes nothing.
    op.on_meta(150, req, Ok(Reply::Commit { codes: vec![0] }));
    let r = op.results().unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().code(), Code::Timeout);
}

pub(super) fn lookup(items: Vec<LookupItem>, services: Vec<ServiceAddr>) -> Result<Reply, Error> {
    Ok(Reply::Lookup {
        lease_ms: 100,
        items,
        services,
    })
}

#[test]
fn get_reads_own_replica_first_and_falls_over_to_the_next() {
    let mut op = GetOp::new(&["k"], &[16], Some(2), 0, 1000).unwrap();
    let req = meta(op.poll(0));
    let Request::Lookup { keys } = &req else {
        panic!()
    };
    assert_eq!(keys, &vec!["k".to_string()]);
    op.on_meta(
        1,
        req,
        lookup(
            vec![LookupItem {
                code: 0,
                size: 8,
                crc: 0,
                lease: 42,
                replicas: vec![replica(1, 1, 0, 8), replica(2, 2, 8, 8)],
            }],
            vec![addr(1, 3), addr(2, 4)],
        ),
    );
    assert!(matches!(op.poll(1), Action::Transfer));
    assert_eq!(op.transfers()[0].fence.rank, 2, "own replica first");
    op.on_transfers(
        2,
        vec![Err(Error::LocalUnreachable {
            endpoint: "2".into(),
            reason: "fence".into(),
        })],
    );
    // The unreachable service is reported to the meta service first, once.
    assert!(matches!(
        op.poll(2),
        Action::MetaOneway(Request::Suspect {
            rank: 2,
            incarnation: 4
        })
    ));
    assert!(matches!(op.poll(2), Action::Transfer), "falls over");
    assert_eq!(
        op.transfers()[0].fence,
        Fence {
            rank: 1,
            incarnation: 3,
            segment: 1
        }
    );
    op.on_transfers(3, vec![Ok(())]);
    let Action::MetaOneway(Request::Release { leases }) = op.poll(3) else {
        panic!("release")
    };
    assert_eq!(leases, vec![42]);
    assert!(matches!(op.poll(3), Action::Done));
    assert_eq!(*op.results().unwrap()[0].as_ref().unwrap(), 8);
}

/// A lookup reply with a 10 s lease.
fn lookup_10s(items: Vec<LookupItem>, services: Vec<ServiceAddr>) -> Result<Reply, Error> {
    Ok(Reply::Lookup {
        lease_ms: 10_000,
        items,
        services,
    })
}

fn timeout() -> Result<(), Error> {
    Err(Error::Timeout {
        ms: 0,
        what: "transfer".into(),
    })
}

#[test]
fn get_gives_a_round_with_replicas_left_an_equal_share_and_falls_over_on_a_timeout() {
    let mut op = GetOp::new(&["a", "b"], &[8, 8], None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    let item = |lease, replicas| LookupItem {
        code: 0,
        size: 8,
        crc: 0,
        lease,
        replicas,
    };
    op.on_meta(
        0,
        req,
        lookup_10s(
            vec![
                item(1, vec![replica(1, 1, 0, 8), replica(2, 2, 0, 8)]),
                item(2, vec![replica(3, 3, 0, 8)]),
            ],
            vec![addr(1, 1), addr(2, 2), addr(3, 3)],
        ),
    );
    assert!(matches!(op.poll(0), Action::Transfer));
    assert_eq!(op.deadline_ms(), 1000);
    assert_eq!(
        op.transfer_deadline_ms(),
        500,
        "a has 2 replicas: half the time"
    );
    // Rank 1 is frozen: both copies of the round time out at its deadline. A timeout is not
    // reported as a suspect.
    op.on_transfers(500, vec![timeout(), timeout()]);
    assert!(
        matches!(op.poll(500), Action::Transfer),
        "no report, falls over"
    );
    let ranks: Vec<(usize, u32)> = op
        .transfers()
        .iter()
        .map(|t| (t.item, t.fence.rank))
        .collect();
    assert_eq!(
        ranks,
        vec![(0, 2), (1, 3)],
        "a on its next replica, b (cut short) on the same one again"
    );
    assert_eq!(op.transfer_deadline_ms(), 1000, "no replica left: the rest");
    op.on_transfers(510, vec![Ok(()), Ok(())]);
    let Action::MetaOneway(Request::Release { leases }) = op.poll(510) else {
        panic!("release")
    };
    assert_eq!(leases, vec![1, 2]);
    assert!(matches!(op.poll(510), Action::Done));
    let r = op.results().unwrap();
    assert_eq!((r[0].as_ref().unwrap(), r[1].as_ref().unwrap()), (&8, &8));
}

#[test]
fn get_with_one_replica_keeps_the_whole_deadline_and_a_timeout_fails_it() {
    let mut op = GetOp::new(&["a"], &[8], None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(
        10,
        req,
        lookup_10s(
            vec![LookupItem {
                code: 0,
                size: 8,
                crc: 0,
                lease: 1,
                replicas: vec![replica(1, 1, 0, 8)],
            }],
            vec![addr(1, 1)],
        ),
    );
    assert!(matches!(op.poll(10), Action::Transfer));
    assert_eq!(op.transfer_deadline_ms(), 1000);
    // A timeout before the deadline (a socket's own) is not retried: nothing was cut short.
    op.on_transfers(900, vec![timeout()]);
    assert!(matches!(
        op.poll(900),
        Action::MetaOneway(Request::Release { .. })
    ));
    assert!(matches!(op.poll(900), Action::Done));
    let r = op.results().unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().code(), Code::Timeout);

    // Three replicas: a third of the time each.
    let mut op = GetOp::new(&["a"], &[8], None, 0, 900).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(
        0,
        req,
        lookup_10s(
            vec![LookupItem {
                code: 0,
                size: 8,
                crc: 0,
                lease: 1,
                replicas: vec![
                    replica(1, 1, 0, 8),
                    replica(2, 2, 0, 8),
                    replica(3, 3, 0, 8),
                ],
            }],
            vec![addr(1, 1), addr(2, 2), addr(3, 3)],
        ),
    );
    op.poll(0);
    assert_eq!(op.transfer_deadline_ms(), 300);
    op.on_transfers(300, vec![timeout()]);
    op.poll(300);
    assert_eq!(op.transfer_deadline_ms(), 600);
    op.on_transfers(600, vec![timeout()]);
    op.poll(600);
    assert_eq!(op.transfer_deadline_ms(), 900);
    assert_eq!(op.transfers()[0].fence.rank, 3);

    // The shares end with the lease (100 ms here), past which a copy is refused anyway.
    let mut op = GetOp::new(&["a"], &[8], None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(
        0,
        req,
        lookup(
            vec![LookupItem {
                code: 0,
                size: 8,
                crc: 0,
                lease: 1,
                replicas: vec![replica(1, 1, 0, 8), replica(2, 2, 0, 8)],
            }],
            vec![addr(1, 1), addr(2, 2)],
        ),
    );
    op.poll(0);
    assert_eq!(op.transfer_deadline_ms(), 50);
}

#[test]
fn get_refuses_bytes_read_after_the_lease_ran_out() {
    let mut op = GetOp::new(&["k"], &[8], None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    op.on_meta(
        1,
        req,
        lookup(
            vec![LookupItem {
                code: 0,
                size: 8,
                crc: 0,
                lease: 1,
                replicas: vec![replica(1, 1, 0, 8)],
            }],
            vec![addr(1, 3)],
        ),
    );
    op.poll(1);
    op.on_transfers(100, vec![Ok(())]);
    assert!(matches!(op.poll(100), Action::MetaOneway(_)));
    op.poll(100);
    let r = op.results().unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().code(), Code::Timeout);
}

#[test]
fn get_with_a_small_buffer_or_a_dead_replica_fails_that_key_and_releases() {
    let mut op = GetOp::new(&["a", "b", "c"], &[4, 8, 8], None, 0, 1000).unwrap();
    let req = meta(op.poll(0));
    let item = |lease, rank| LookupItem {
        code: 0,
        size: 8,
        crc: 0,
        lease,
        replicas: vec![replica(rank, 1, 0, 8)],
    };
    op.on_meta(
        0,
        req,
        lookup(
            vec![
                item(1, 1),
                item(2, 9),
                LookupItem {
                    code: Code::ObjectNotExists.as_i32(),
                    size: 0,
                    crc: 0,
                    lease: 0,
                    replicas: vec![],
                },
            ],
            vec![addr(1, 1)],
        ),
    );
    let Action::MetaOneway(Request::Release { leases }) = op.poll(0) else {
        panic!("nothing to read")
    };
    assert_eq!(leases, vec![1, 2]);
    op.poll(0);
    let r = op.results().unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().code(), Code::InvalidParam);
    assert_eq!(r[1].as_ref().unwrap_err().code(), Code::NotConnectLocal);
    assert_eq!(r[2].as_ref().unwrap_err().code(), Code::ObjectNotExists);
}

#[test]
fn meta_ops_map_codes_per_key_and_fail_whole_on_meta_errors() {
    let mut op = MetaOp::new(MetaKind::Exist, &["a", "", "b"], 0, 100).unwrap();
    let req = meta(op.poll(0));
    let Request::Exist { keys } = &req else {
        panic!()
    };
    assert_eq!(keys.len(), 2);
    op.on_meta(
        1,
        req,
        Ok(Reply::Codes {
            codes: vec![0, Code::ObjectNotExists.as_i32()],
        }),
    );
    let r = op.results().unwrap();
    assert!(r[0].is_ok());
    assert_eq!(r[1].as_ref().unwrap_err().code(), Code::InvalidParam);
    assert_eq!(r[2].as_ref().unwrap_err().code(), Code::ObjectNotExists);

    let mut op = MetaOp::new(MetaKind::Remove, &["a"], 0, 100).unwrap();
    op.poll(0);
    assert!(matches!(op.poll(100), Action::Done));
    assert_eq!(op.results().unwrap_err().code(), Code::Timeout);
    let keys: Vec<String> = (0..16385).map(|i| i.to_string()).collect();
    assert!(MetaOp::new(MetaKind::Exist, &keys, 0, 100).is_err());
}

#[test]
fn timeouts_and_coded_refusals_are_not_reported_as_suspects() {
    let mut op = PutOp::new(
        &["a", "b"],
        &[8, 8],
        Some(&[7, 8]),
        &PutOptions::default(),
        None,
        0,
        1000,
    )
    .unwrap();
    let req = meta(op.poll(0));
    op.on_meta(
        0,
        req,
        Ok(Reply::Alloc {
            items: vec![
                AllocItem {
                    code: 0,
                    retry: false,
                    token: 1,
                    replicas: vec![replica(3, 1, 0, 8)],
                },
                AllocItem {
                    code: 0,
                    retry: false,
                    token: 2,
                    replicas: vec![replica(4, 2, 0, 8)],
                },
            ],
            services: vec![addr(3, 9), addr(4, 10)],
        }),
    );
    assert!(matches!(op.poll(0), Action::Transfer));
    op.on_transfers(
        1,
        vec![
            Err(Error::Timeout {
                ms: 5,
                what: "frozen".into(),
            }),
            Err(Error::Remote {
                code: Code::Error,
                context: "refused".into(),
            }),
        ],
    );
    assert!(
        matches!(op.poll(1), Action::Meta(Request::Commit { .. })),
        "straight to the commit"
    );
}
