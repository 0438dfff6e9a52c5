use super::*;

const SEG: u32 = 7;
const POOL: u64 = 4096;

fn index() -> Index {
    let mut i = Index::default();
    i.start([(SEG, POOL), (SEG + 1, 128)]);
    i
}

fn added(key: &str, segment: u32, offset: u64, len: u64) -> IndexChange {
    IndexChange::Added {
        key: key.into(),
        segment,
        offset,
        len,
        version: 1,
        crc: 0,
        want: 1,
    }
}

fn removed(key: &str, segment: u32, offset: u64) -> IndexChange {
    IndexChange::Removed {
        key: key.into(),
        segment,
        offset,
    }
}

#[test]
fn changes_apply_in_order_exactly_once() {
    let mut i = index();
    i.apply(1, &[added("a", SEG, 0, 100), added("b", SEG, 128, 10)])
        .unwrap();
    // A batch that overlaps the last one: its first change is not applied twice.
    i.apply(2, &[added("b", SEG, 128, 10), removed("a", SEG, 0)])
        .unwrap();
    assert_eq!(i.applied_seq(), 3);
    assert_eq!(i.entries().keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(
        i.get("b"),
        Some(&IndexEntry {
            segment: SEG,
            offset: 128,
            len: 10,
            version: 1,
            crc: 0,
            want: 1,
        })
    );
    // An empty batch changes nothing; a new incarnation starts empty.
    i.apply(4, &[]).unwrap();
    assert_eq!((i.applied_seq(), i.len()), (3, 1));
    i.start([(SEG, POOL)]);
    assert!(i.is_empty() && i.applied_seq() == 0 && !i.resync_wanted());
}

#[test]
fn a_gap_asks_for_a_resync_and_only_a_reset_ends_it() {
    let mut i = index();
    i.apply(1, &[added("a", SEG, 0, 100)]).unwrap();
    let gap = i.apply(3, &[added("c", SEG, 256, 1)]);
    assert_eq!(gap, Err(IndexError::Gap { seq: 3, applied: 1 }));
    assert!(i.resync_wanted() && i.len() == 1);
    // Waiting for the reset: later changes are ignored, not applied.
    i.apply(2, &[added("b", SEG, 128, 1)]).unwrap();
    assert_eq!((i.applied_seq(), i.len()), (1, 1));
    // A reset may follow a gap; it clears the index and the snapshot follows.
    i.apply(9, &[IndexChange::Reset, added("z", SEG, 0, 64)])
        .unwrap();
    assert!(!i.resync_wanted());
    assert_eq!(i.applied_seq(), 10);
    assert_eq!(i.entries().keys().collect::<Vec<_>>(), ["z"]);
}

#[test]
fn changes_that_do_not_fit_are_refused() {
    let long = "k".repeat(msg::KEY_BYTES_MAX + 1);
    let cases = [
        (added("", SEG, 0, 1), "BadKey"),
        (added(&long, SEG, 0, 1), "BadKey"),
        (added("x", 99, 0, 1), "UnknownSegment"),
        (added("x", SEG, POOL - 1, 2), "OutsidePool"),
        (added("x", SEG, u64::MAX, 2), "OutsidePool"),
        (added("x", SEG, 0, 0), "OutsidePool"),
        (added("a", SEG, 512, 1), "Duplicate"),
        (added("x", SEG, 50, 1), "Overlap"),
        (added("x", SEG, 0, 1), "Overlap"),
        (added("x", SEG, 90, 20), "Overlap"),
        (removed("a", SEG, 64), "NotHeld"),
        (removed("nope", SEG, 0), "NotHeld"),
        (added("x", SEG + 1, 64, 64), "Full"),
    ];
    for (change, what) in cases {
        let mut i = index();
        // "a" at 0..100 in the big pool; the small pool (128 bytes) holds 2 entries at most.
        i.apply(1, &[added("a", SEG, 0, 100), added("s", SEG + 1, 0, 1)])
            .unwrap();
        i.apply(3, &[added("t", SEG + 1, 1, 1)]).unwrap();
        let before = i.entries().clone();
        let e = i.apply(4, std::slice::from_ref(&change)).unwrap_err();
        assert!(format!("{e:?}").starts_with(what), "{change:?}: {e:?}");
        assert!(i.resync_wanted(), "{change:?}");
        assert_eq!(i.entries(), &before, "{change:?} left the index as it was");
    }
    let mut i = index();
    let many = vec![IndexChange::Reset; msg::INDEX_CHANGES_MAX + 1];
    assert_eq!(
        i.apply(1, &many),
        Err(IndexError::TooMany(msg::INDEX_CHANGES_MAX + 1))
    );
    assert_eq!(i.applied_seq(), 0);
}
