//! The per-member outbox of index changes: what adds and removes entries, delivery on heartbeats
//! until acknowledged, the bound and the resync, and incarnations.

use std::collections::BTreeMap;

use super::*;
use crate::msg::IndexChange;

/// key -> (segment, offset, len): what a service that applies every change holds.
type Held = BTreeMap<String, (u32, u64, u64)>;

/// A local service that applies what its heartbeats bring, as `LocalCore` does.
struct Service {
    rank: u32,
    incarnation: u64,
    applied: u64,
    held: Held,
}

impl Service {
    fn new(c: &mut MetaCore, rank: Option<u32>) -> Service {
        let (rank, incarnation) = register(c, rank, 64 * MIB);
        Service {
            rank,
            incarnation,
            applied: 0,
            held: Held::new(),
        }
    }

    /// One heartbeat; `apply: false` = its reply is lost. Returns the reply's changes.
    fn heartbeat(&mut self, c: &mut MetaCore, apply: bool) -> (u64, Vec<IndexChange>, bool) {
        let hb = Request::Heartbeat {
            rank: self.rank,
            incarnation: self.incarnation,
            index_seq: self.applied,
            index_resync: false,
            repaired: Vec::new(),
        };
        let Reply::Heartbeat {
            index_first_seq: first,
            index_changes: changes,
            index_more: more,
            ..
        } = c.handle(c.now_ms_last, hb)
        else {
            panic!("heartbeat refused");
        };
        c.check_invariants();
        if apply {
            for (i, change) in changes.iter().enumerate() {
                let seq = first + i as u64;
                if seq <= self.applied {
                    continue;
                }
                assert!(
                    seq == self.applied + 1 || *change == IndexChange::Reset,
                    "gap before {seq}"
                );
                match change {
                    IndexChange::Reset => self.held.clear(),
                    IndexChange::Added {
                        key,
                        segment,
                        offset,
                        len,
                        ..
                    } => {
                        let was = self.held.insert(key.clone(), (*segment, *offset, *len));
                        assert!(was.is_none(), "{key} added twice");
                    }
                    IndexChange::Removed {
                        key,
                        segment,
                        offset,
                    } => {
                        let was = self.held.remove(key).expect("removed unknown key");
                        assert_eq!((was.0, was.1), (*segment, *offset));
                    }
                }
                self.applied = seq;
            }
        }
        (first, changes, more)
    }

    /// Heartbeat until nothing more waits.
    fn sync(&mut self, c: &mut MetaCore) {
        for _ in 0..10_000 {
            let (_, _, more) = self.heartbeat(c, true);
            if !more && self.up_to_date(c) {
                return;
            }
        }
        panic!("never caught up");
    }

    fn up_to_date(&self, c: &MetaCore) -> bool {
        let view = c.index_outbox(self.rank).expect("a member");
        !view.resyncing && view.last_seq() == self.applied
    }

    /// What the directory says this service holds.
    fn expected(&self, c: &MetaCore) -> Held {
        c.committed_objects()
            .into_iter()
            .filter_map(|o| {
                let r = o.replicas.iter().find(|r| r.rank == self.rank)?;
                Some((o.key, (r.segment, r.offset, r.len)))
            })
            .collect()
    }
}

#[test]
fn commits_add_and_unlinks_remove_only_visible_objects() {
    let mut c = core();
    let mut s = Service::new(&mut c, Some(0));
    put(&mut c, 0, "a", MIB, Some(0)).unwrap();
    put(&mut c, 0, "b", 2 * MIB, Some(0)).unwrap();
    // A pending put adds nothing, nor does an aborted one.
    let item = alloc(&mut c, 0, alloc_req(&[("pending", MIB)], Some(0))).remove(0);
    let abort = alloc(&mut c, 0, alloc_req(&[("aborted", MIB)], Some(0))).remove(0);
    let commit = vec![(
        "aborted".to_string(),
        CommitItem {
            token: abort.token,
            ok: false,
            crc: 0,
        },
    )];
    c.handle(0, Request::Commit { items: commit });
    s.sync(&mut c);
    assert_eq!(s.held.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(s.held, s.expected(&c));
    // A leased object leaves the index when it is removed, not at its last release.
    let lease = lookup(&mut c, 0, &["a"])[0].lease;
    codes(c.handle(
        0,
        Request::Remove {
            keys: vec!["a".into()],
        },
    ));
    s.sync(&mut c);
    assert_eq!(s.held.keys().collect::<Vec<_>>(), ["b"]);
    c.handle(
        0,
        Request::Release {
            leases: vec![lease],
        },
    );
    // The pending put is reclaimed at its deadline: still nothing to send.
    let later = c.params().pending_timeout_ms + 1;
    c.tick(later);
    assert!(!c.objects.contains_key(&item.token), "reclaimed");
    let (_, changes, more) = s.heartbeat(&mut c, true);
    assert!(changes.is_empty() && !more);
    assert_eq!(s.held, s.expected(&c));
}

#[test]
fn lost_replies_are_sent_again_until_acknowledged() {
    let mut c = core();
    let mut s = Service::new(&mut c, Some(0));
    put(&mut c, 0, "x", MIB, Some(0)).unwrap();
    let (first, lost, _) = s.heartbeat(&mut c, false);
    assert_eq!((first, lost.len()), (1, 1));
    put(&mut c, 0, "y", MIB, Some(0)).unwrap();
    let (first, again, _) = s.heartbeat(&mut c, true);
    assert_eq!(
        (first, &again[..1]),
        (1, &lost[..]),
        "the lost change comes again"
    );
    assert_eq!(s.applied, 2);
    // Acknowledged: the next reply starts after it.
    let (first, changes, more) = s.heartbeat(&mut c, true);
    assert_eq!((first, changes.len(), more), (3, 0, false));
    // A stale heartbeat (overtaken by a later one) takes nothing back.
    let stale = Request::Heartbeat {
        rank: s.rank,
        incarnation: s.incarnation,
        index_seq: 1,
        index_resync: false,
        repaired: Vec::new(),
    };
    assert!(matches!(
        c.handle(0, stale),
        Reply::Heartbeat {
            index_first_seq: 3,
            ..
        }
    ));
    assert_eq!(s.held, s.expected(&c));
}

#[test]
fn a_full_outbox_resets_and_a_snapshot_follows_in_batches() {
    let mut c = MetaCore::new(MetaParams {
        member_timeout_ms: u64::MAX / 4,
        index_batch_max: 3,
        index_outbox_max: 5,
        ..MetaParams::default()
    });
    let mut s = Service::new(&mut c, Some(0));
    put(&mut c, 0, "old", MIB, Some(0)).unwrap();
    s.sync(&mut c);
    for i in 0..12 {
        put(&mut c, 0, &format!("k{i:02}"), MIB, Some(0)).unwrap();
    }
    codes(c.handle(
        0,
        Request::Remove {
            keys: vec!["old".into()],
        },
    ));
    let view = c.index_outbox(0).unwrap();
    assert!(view.resyncing && view.changes.len() <= 5);
    assert_eq!(view.changes.front(), Some(&IndexChange::Reset));
    // The snapshot arrives in batches of 3 while the directory keeps changing.
    let (_, first_batch, more) = s.heartbeat(&mut c, true);
    assert!(first_batch.len() == 3 && more);
    put(&mut c, 0, "a-before-cursor", MIB, Some(0)).unwrap();
    put(&mut c, 0, "z-after-cursor", MIB, Some(0)).unwrap();
    codes(c.handle(
        0,
        Request::Remove {
            keys: vec!["k00".into(), "k11".into()],
        },
    ));
    s.sync(&mut c);
    assert_eq!(s.held, s.expected(&c));
    assert!(s.held.contains_key("z-after-cursor") && !s.held.contains_key("old"));
    // A bogus acknowledgement (beyond anything sent) resets too; so does a resync request, once.
    let bogus = Request::Heartbeat {
        rank: 0,
        incarnation: s.incarnation,
        index_seq: s.applied + 100,
        index_resync: false,
        repaired: Vec::new(),
    };
    let Reply::Heartbeat { index_changes, .. } = c.handle(0, bogus) else {
        panic!()
    };
    assert_eq!(
        index_changes.len(),
        3,
        "a reset, then the snapshot's first entries"
    );
    assert_eq!(index_changes[0], IndexChange::Reset);
    s.sync(&mut c);
    assert_eq!(s.held, s.expected(&c));
    let ask = |applied| Request::Heartbeat {
        rank: 0,
        incarnation: s.incarnation,
        index_seq: applied,
        index_resync: true,
        repaired: Vec::new(),
    };
    let Reply::Heartbeat {
        index_first_seq: reset_seq,
        index_changes,
        ..
    } = c.handle(0, ask(s.applied))
    else {
        panic!()
    };
    assert_eq!(index_changes[0], IndexChange::Reset);
    let Reply::Heartbeat {
        index_first_seq, ..
    } = c.handle(0, ask(s.applied))
    else {
        panic!()
    };
    assert_eq!(index_first_seq, reset_seq, "the reset is not queued twice");
    c.check_invariants();
}

#[test]
fn a_new_incarnation_starts_with_an_empty_outbox() {
    let mut c = core();
    let mut s = Service::new(&mut c, Some(0));
    put(&mut c, 0, "x", MIB, Some(0)).unwrap();
    s.heartbeat(&mut c, false);
    // Registering again drops the member, its objects and its outbox.
    let again = Service::new(&mut c, Some(0));
    assert_ne!(again.incarnation, s.incarnation);
    let view = c.index_outbox(0).unwrap();
    assert_eq!((view.first_seq, view.changes.len()), (1, 0));
    assert!(!view.resyncing);
    // The old incarnation's heartbeat is refused: its changes never reach anyone.
    let old = Request::Heartbeat {
        rank: 0,
        incarnation: s.incarnation,
        index_seq: 0,
        index_resync: false,
        repaired: Vec::new(),
    };
    assert!(matches!(c.handle(0, old), Reply::Ack { code } if code != 0));
    // Replicas on two services: each one's outbox gets the object.
    let mut b = Service::new(&mut c, Some(1));
    let mut a = again;
    let mut req = alloc_req(&[("both", MIB)], Some(0));
    req.replicas = 2;
    let item = alloc(&mut c, 0, req).remove(0);
    let commit = vec![(
        "both".to_string(),
        CommitItem {
            token: item.token,
            ok: true,
            crc: 0,
        },
    )];
    c.handle(0, Request::Commit { items: commit });
    a.sync(&mut c);
    b.sync(&mut c);
    assert!(a.held.contains_key("both") && b.held.contains_key("both"));
    assert_eq!(
        (a.held.clone(), b.held.clone()),
        (a.expected(&c), b.expected(&c))
    );
}
