//! Requests found by the `meta_requests` fuzz target (fuzz/) that broke the meta core, replayed
//! through its public interface as the meta service's driver calls it.

use mmc_controlplane::meta::{MetaCore, MetaParams};
use mmc_controlplane::msg::{Register, Reply, Request, SegmentSpec, MEDIA_DRAM};

fn register(rank: u32, host: &str, data_endpoint: &str) -> Request {
    Request::Register(Register {
        rank: Some(rank),
        create_id: 0,
        host: host.into(),
        data_endpoint: data_endpoint.into(),
        shm_endpoint: String::new(),
        segments: vec![SegmentSpec {
            media: MEDIA_DRAM,
            capacity: 1 << 20,
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
