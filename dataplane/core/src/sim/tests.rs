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
