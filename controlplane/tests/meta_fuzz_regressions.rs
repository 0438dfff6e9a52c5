//! Requests found by the `meta_requests` fuzz target (fuzz/) that broke the meta core, replayed
//! through its public interface as the meta service's driver calls it.

use mmc_controlplane::meta::{MetaCore, MetaParams};
use mmc_controlplane::msg::{
    AllocRequest, CommitItem, Register, Rejoin, RejoinEntry, Reply, Request, SegmentSpec,
    MEDIA_DRAM, MEDIA_NONE,
};

fn register(rank: u32, host: &str, data_endpoint: &str) -> Request {
    register_with(rank, host, data_endpoint, 1 << 20)
}

fn register_with(rank: u32, host: &str, data_endpoint: &str, capacity: u64) -> Request {
    Request::Register(Register {
        rank: Some(rank),
        create_id: 0,
        host: host.into(),
        data_endpoint: data_endpoint.into(),
        shm_endpoint: String::new(),
        segments: vec![SegmentSpec {
            media: MEDIA_DRAM,
            capacity,
        }],
    })
}

/// A paused member keeps its objects when a service on *another host* registers with the same
/// data endpoint string (only the same host and endpoint mean the paused process is gone). The
/// debug assertion after dropping paused members at an address checked the endpoint alone, so
/// such a registration panicked the meta service in debug builds.
#[test]
fn a_registration_at_a_paused_members_endpoint_on_another_host_keeps_it() {
    let mut core = MetaCore::new(MetaParams::default());
    let first = core.handle(0, register(0, "host-a", "10.0.0.1:7000"));
    assert!(
        matches!(first, Reply::Registered { rank: 0, .. }),
        "{first:?}"
    );
    // Silent past its member timeout, in steps shorter than a meta stall: paused, not dropped.
    let timeout = MetaParams::default().member_timeout_ms;
    let mut now = 0;
    while now <= timeout + 1000 {
        now += 1000;
        core.handle(now, Request::Status);
    }
    assert!(
        core.member_paused(0),
        "rank 0 is paused after {now} ms of silence"
    );
    let second = core.handle(now, register(1, "host-b", "10.0.0.1:7000"));
    assert!(
        matches!(second, Reply::Registered { rank: 1, .. }),
        "{second:?}"
    );
    core.check_invariants();
    assert!(
        core.member_paused(0),
        "another host's registration leaves rank 0 paused"
    );
    // The same host at the same endpoint is the paused process's successor: rank 0 is dropped.
    let third = core.handle(now, register(2, "host-a", "10.0.0.1:7000"));
    assert!(
        matches!(third, Reply::Registered { rank: 2, .. }),
        "{third:?}"
    );
    core.check_invariants();
    assert!(!core.member_paused(0));
    assert_eq!(core.member_incarnation(0), None);
}

/// Segments whose capacities add up past 2^64 bytes (two registrations of 2^63 bytes each):
/// summing a tier's capacity overflowed, which panicked a debug meta service at the next put and
/// wrapped to a tiny capacity in release builds (a tier "over its watermark" evicts). The sums
/// saturate now.
#[test]
fn capacities_adding_up_past_u64_do_not_overflow() {
    let mut core = MetaCore::new(MetaParams::default());
    for rank in 0..2 {
        let r = core.handle(
            0,
            register_with(rank, "h", &format!("10.0.0.{rank}:7000"), 1 << 63),
        );
        assert!(matches!(r, Reply::Registered { .. }), "{r:?}");
    }
    let alloc = core.handle(
        1,
        Request::Alloc(AllocRequest {
            writer_rank: None,
            client_id: 1,
            media: MEDIA_NONE,
            policy: 0,
            replicas: 2,
            preferred: vec![],
            items: vec![("k".into(), 4096)],
        }),
    );
    let Reply::Alloc { items, .. } = &alloc else {
        panic!("{alloc:?}");
    };
    assert_eq!(items[0].code, 0, "{alloc:?}");
    let token = items[0].token;
    let commit = core.handle(
        2,
        Request::Commit {
            items: vec![(
                "k".into(),
                CommitItem {
                    token,
                    ok: true,
                    crc: 0,
                },
            )],
        },
    );
    assert!(
        matches!(&commit, Reply::Commit { codes } if codes == &[0]),
        "{commit:?}"
    );
    core.check_invariants();
    assert!(matches!(core.handle(3, Request::Status), Reply::Status(_)));
}

/// A rejoining service reported an object with version u64::MAX: the next id was raised past it
/// (saturating at u64::MAX), so making the next object overflowed the id counter (a panic in debug
/// builds; ids wrapping to 0 in release). Versions past the ids any run hands out are refused now;
/// the service's other objects are rebuilt and puts go on.
#[test]
fn a_rejoin_entry_with_a_version_past_every_id_is_refused() {
    let mut core = MetaCore::new(MetaParams {
        epoch: 1,
        ..MetaParams::default()
    });
    let Request::Register(register) = register(0, "host-a", "10.0.0.1:7000") else {
        unreachable!()
    };
    let entry = |key: &str, offset, version| RejoinEntry {
        key: key.into(),
        pool: 0,
        offset,
        len: 4096,
        version,
        crc: 7,
        want: 1,
    };
    let rejoined = core.handle(
        0,
        Request::Rejoin(Rejoin {
            register,
            previous: 5,
            chunk: 0,
            last: true,
            entries: vec![entry("bad", 0, u64::MAX), entry("good", 4096, 3)],
        }),
    );
    assert!(matches!(rejoined, Reply::Registered { .. }), "{rejoined:?}");
    core.check_invariants();
    let keys: Vec<String> = core
        .committed_objects()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["good"]);
    // The ids go on: a put after the rebuild commits.
    let alloc = core.handle(
        1,
        Request::Alloc(AllocRequest {
            writer_rank: Some(0),
            client_id: 1,
            media: MEDIA_NONE,
            policy: 0,
            replicas: 1,
            preferred: vec![],
            items: vec![("new".into(), 100)],
        }),
    );
    let Reply::Alloc { items, .. } = &alloc else {
        panic!("{alloc:?}");
    };
    assert_eq!(items[0].code, 0, "{alloc:?}");
    let commit = core.handle(
        2,
        Request::Commit {
            items: vec![(
                "new".into(),
                CommitItem {
                    token: items[0].token,
                    ok: true,
                    crc: 0,
                },
            )],
        },
    );
    assert!(
        matches!(&commit, Reply::Commit { codes } if codes == &[0]),
        "{commit:?}"
    );
    core.check_invariants();
}
