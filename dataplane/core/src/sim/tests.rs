use super::*;

#[test]
fn a_short_run_holds_every_invariant_and_does_work() {
    let s = run(SimConfig::new(7, 20_000)).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(s.steps, 20_000);
    assert!(s.ops > 100, "{s:?}");
    assert!(s.gets_verified > 10, "{s:?}");
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = run(SimConfig::new(11, 5_000)).unwrap_or_else(|f| panic!("{f}"));
    let b = run(SimConfig::new(11, 5_000)).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

#[test]
fn one_sided_rdma_copies_hold_every_invariant() {
    let mut cfg = SimConfig::new(7, 30_000);
    cfg.rdma = true;
    let s = run(cfg).unwrap_or_else(|f| panic!("{f}"));
    assert!(s.rdma_copies > 100, "{s:?}");
    assert!(
        s.rdma_wrs > s.rdma_copies,
        "objects span several work requests: {s:?}"
    );
    assert!(s.rdma_error_completions > 0, "{s:?}");
    assert!(s.gets_verified > 10, "{s:?}");
}
