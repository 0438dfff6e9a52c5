//! Per member, the outbox of changes to the index of objects its local service holds (DESIGN.md,
//! "Recovery": the services keep the index, so that a restarted meta service can rebuild its
//! directory from them).
//!
//! Commits add an entry on every replica's member and unlinking (remove, eviction) removes it; a
//! pending put never adds one. Changes are numbered per incarnation from 1 and ride on heartbeat
//! replies, at most `index_batch_max` per reply; they stay queued until a later heartbeat
//! acknowledges them, since replies get lost. The outbox is bounded: past `index_outbox_max` it is
//! dropped for a `Reset`, and a snapshot of the member's objects follows in key order, read from
//! the directory a batch at a time as room frees up. While the snapshot is under way, a change to
//! a key the snapshot has not reached yet is not queued: the snapshot reads that key later.
//! The outbox lives in its member, so it dies with it: an old incarnation's changes never reach
//! a new one.

use std::collections::VecDeque;

use tracing::{debug, warn};

use super::{MetaCore, State};
use crate::msg::{self, IndexChange, Reply};

/// A snapshot entry: key, replica, version, checksum, wanted replicas.
type SnapshotEntry = (String, msg::Replica, u64, u32, u16);

/// Default bound of one member's outbox of unacknowledged index changes.
pub const INDEX_OUTBOX_MAX: usize = 65_536;

/// One member's unacknowledged index changes.
pub(super) struct Outbox {
    /// Sequence number of `changes[0]` (or of the next change, when empty); those before were
    /// acknowledged, or dropped for a `Reset`.
    first_seq: u64,
    changes: VecDeque<IndexChange>,
    /// A snapshot is being queued.
    resyncing: bool,
    /// The last key the snapshot queued (`None`: none yet); set only while `resyncing`.
    snapshot_after: Option<String>,
}

/// A read-only view of one member's outbox, for checkers.
#[derive(Debug)]
pub struct IndexOutboxView<'a> {
    pub incarnation: u64,
    /// Sequence number of the first unacknowledged change.
    pub first_seq: u64,
    /// Unacknowledged changes, numbered from `first_seq`.
    pub changes: &'a VecDeque<IndexChange>,
    /// A snapshot is still being queued: applying every change does not bring the service up to
    /// date yet.
    pub resyncing: bool,
}

impl IndexOutboxView<'_> {
    /// Sequence number of the latest change queued (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.changes.len() as u64 - 1
    }
}

impl Outbox {
    pub(super) fn new() -> Outbox {
        Outbox {
            first_seq: 1,
            changes: VecDeque::new(),
            resyncing: false,
            snapshot_after: None,
        }
    }

    fn last_seq(&self) -> u64 {
        self.first_seq + self.changes.len() as u64 - 1
    }

    /// Whether a change to `key` must be queued: always, except past a snapshot's cursor.
    fn wants(&self, key: &str) -> bool {
        !self.resyncing
            || self
                .snapshot_after
                .as_deref()
                .is_some_and(|after| key <= after)
    }

    /// Drop every queued change for a `Reset`, and start a snapshot.
    pub(super) fn reset(&mut self) {
        let next = self.last_seq() + 1;
        self.changes.clear();
        self.changes.push_back(IndexChange::Reset);
        self.first_seq = next;
        self.resyncing = true;
        self.snapshot_after = None;
        assert_eq!(self.last_seq(), next, "a reset takes the next number");
    }

    /// The service applied every change up to `seq`: forget them.
    fn ack(&mut self, seq: u64) {
        debug_assert!(
            seq <= self.last_seq(),
            "acknowledged beyond the last change"
        );
        if seq < self.first_seq {
            // Nothing new: a heartbeat overtaken by a later one, or one before a reset.
            return;
        }
        let done = (seq - self.first_seq + 1) as usize;
        self.changes.drain(..done);
        self.first_seq = seq + 1;
        assert_eq!(
            self.last_seq() + 1,
            self.first_seq + self.changes.len() as u64
        );
    }

    /// Check this outbox's own invariants (for [`MetaCore::check_invariants`]).
    pub(super) fn check(&self, outbox_max: usize, segments: &[u32]) {
        assert!(self.first_seq >= 1, "sequence numbers start at 1");
        assert!(self.changes.len() <= outbox_max, "outbox over its bound");
        assert!(self
            .first_seq
            .checked_add(self.changes.len() as u64)
            .is_some());
        assert!(self.resyncing || self.snapshot_after.is_none());
        for (i, change) in self.changes.iter().enumerate() {
            let (key, segment) = match change {
                IndexChange::Reset => {
                    assert_eq!(i, 0, "a reset drops every change before it");
                    continue;
                }
                IndexChange::Added { key, segment, .. }
                | IndexChange::Removed { key, segment, .. } => (key, *segment),
            };
            assert!(
                segments.contains(&segment),
                "change on a segment of another member"
            );
            if self.resyncing {
                assert!(
                    self.snapshot_after
                        .as_deref()
                        .is_some_and(|a| key.as_str() <= a),
                    "a change to {key:?} queued ahead of the snapshot"
                );
            }
        }
    }
}

impl MetaCore {
    /// Queue `change` of `key` for `rank`'s service; past the bound, reset its outbox instead.
    pub(super) fn index_record(
        &mut self,
        rank: u32,
        key: &str,
        change: impl FnOnce() -> IndexChange,
    ) {
        let outbox_max = self.params.index_outbox_max;
        // A paused member's outbox keeps filling: it is sent when the member returns.
        let member = self
            .members
            .get_mut(&rank)
            .or(self.paused.get_mut(&rank))
            .expect("replicas lie on live or paused members");
        let outbox = &mut member.index;
        if !outbox.wants(key) {
            return;
        }
        if outbox.changes.len() >= outbox_max {
            warn!(
                rank,
                outbox_max, "index outbox full (the service does not keep up): resync"
            );
            outbox.reset();
            // The new snapshot reads this key from the directory.
            debug_assert!(!outbox.wants(key));
            return;
        }
        outbox.changes.push_back(change());
        assert!(outbox.changes.len() <= outbox_max);
    }

    /// Object `oid` was just committed: every replica's service holds it now.
    pub(super) fn index_added(&mut self, oid: u64) {
        let obj = &self.objects[&oid];
        assert!(obj.state == State::Committed && !obj.removed);
        let key = obj.key.clone();
        let (version, crc, want) = (obj.version, obj.crc, obj.want);
        let replicas: Vec<msg::Replica> = obj.replicas.iter().map(|(r, _)| *r).collect();
        for r in replicas {
            debug_assert_eq!(r.len, self.objects[&oid].size);
            self.index_add_replica(&key, r, (version, crc, want));
        }
    }

    /// Replica `r` of `key` (at `(version, crc, want)`) is now held by its service.
    pub(super) fn index_add_replica(
        &mut self,
        key: &str,
        r: msg::Replica,
        (version, crc, want): (u64, u32, u16),
    ) {
        self.index_record(r.rank, key, || IndexChange::Added {
            key: key.to_string(),
            segment: r.segment,
            offset: r.offset,
            len: r.len,
            version,
            crc,
            want,
        });
    }

    /// Object `oid`, committed and visible, is being unlinked: no service holds it for the
    /// directory any more (its space comes back now, or at its last reader's release).
    pub(super) fn index_removed(&mut self, oid: u64) {
        let obj = &self.objects[&oid];
        assert!(obj.state == State::Committed && !obj.removed);
        let key = obj.key.clone();
        let replicas: Vec<msg::Replica> = obj.replicas.iter().map(|(r, _)| *r).collect();
        for r in replicas {
            self.index_record(r.rank, &key, || IndexChange::Removed {
                key: key.to_string(),
                segment: r.segment,
                offset: r.offset,
            });
        }
    }

    /// The index part of a heartbeat from `rank` (a member at the heartbeat's incarnation).
    pub(super) fn index_heartbeat(&mut self, rank: u32, index_seq: u64, resync: bool) -> Reply {
        let batch_max = self.params.index_batch_max;
        let outbox = &mut self.members.get_mut(&rank).expect("a member").index;
        if index_seq > outbox.last_seq() {
            warn!(
                rank,
                index_seq,
                last = outbox.last_seq(),
                "service acknowledged index changes never sent: resync"
            );
            outbox.reset();
        } else {
            outbox.ack(index_seq);
            let reset_queued = outbox.changes.front() == Some(&IndexChange::Reset);
            if resync && !reset_queued {
                warn!(rank, "service asked for an index resync");
                outbox.reset();
            }
        }
        if outbox.resyncing && outbox.changes.len() < batch_max {
            let room = batch_max - outbox.changes.len();
            let after = outbox.snapshot_after.clone();
            let (next, done) = self.snapshot_next(rank, after.as_deref(), room);
            let outbox = &mut self.members.get_mut(&rank).expect("a member").index;
            if let Some((key, ..)) = next.last() {
                outbox.snapshot_after = Some(key.clone());
            }
            debug!(rank, entries = next.len(), done, "index snapshot queued");
            for (key, r, version, crc, want) in next {
                outbox.changes.push_back(IndexChange::Added {
                    key,
                    segment: r.segment,
                    offset: r.offset,
                    len: r.len,
                    version,
                    crc,
                    want,
                });
            }
            if done {
                outbox.resyncing = false;
                outbox.snapshot_after = None;
            }
            assert!(outbox.changes.len() <= batch_max);
        }
        let outbox = &self.members[&rank].index;
        let n = outbox.changes.len().min(batch_max);
        let index_changes: Vec<IndexChange> = outbox.changes.iter().take(n).cloned().collect();
        assert!(index_changes.len() <= msg::INDEX_CHANGES_MAX);
        Reply::Heartbeat {
            index_first_seq: outbox.first_seq,
            index_changes,
            index_more: n < outbox.changes.len() || outbox.resyncing,
            repairs: Vec::new(),
        }
    }

    /// The next at most `room` visible objects with a replica on `rank`, in key order after
    /// `after`, and whether they are the last. Read from the member's own segments' LRUs (which
    /// hold exactly its visible objects): O(objects on the member) per batch, not O(directory).
    fn snapshot_next(
        &self,
        rank: u32,
        after: Option<&str>,
        room: usize,
    ) -> (Vec<SnapshotEntry>, bool) {
        assert!(room > 0);
        let member = self.members.get(&rank).or_else(|| self.paused.get(&rank));
        let lrus = member
            .into_iter()
            .flat_map(|m| m.segments.iter())
            .filter_map(|id| {
                self.segments
                    .get(id)
                    .or_else(|| self.paused_segments.get(id))
            })
            .flat_map(|s| s.index.lru.iter().map(|&(_, oid)| oid));
        let mut next: Vec<(&str, msg::Replica, u64, u32, u16)> = lrus
            .filter_map(|oid| {
                let obj = &self.objects[&oid];
                let key: &str = &obj.key;
                if after.is_some_and(|a| key <= a) || obj.state != State::Committed || obj.removed {
                    return None;
                }
                let r = obj.replicas.iter().find(|(r, _)| r.rank == rank)?;
                Some((key, r.0, obj.version, obj.crc, obj.want))
            })
            .collect();
        let done = next.len() <= room;
        if !done {
            // The `room` smallest keys, in O(objects on the member).
            next.select_nth_unstable_by(room, |a, b| a.0.cmp(b.0));
            next.truncate(room);
        }
        next.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let next: Vec<SnapshotEntry> = next
            .into_iter()
            .map(|(k, r, v, c, w)| (k.to_string(), r, v, c, w))
            .collect();
        debug_assert!(next.windows(2).all(|w| w[0].0 < w[1].0));
        (next, done)
    }

    /// The outbox of index changes for `rank`'s service, if it is a member (live or paused).
    pub fn index_outbox(&self, rank: u32) -> Option<IndexOutboxView<'_>> {
        let member = self.members.get(&rank).or_else(|| self.paused.get(&rank));
        member.map(|m| IndexOutboxView {
            incarnation: m.incarnation,
            first_seq: m.index.first_seq,
            changes: &m.index.changes,
            resyncing: m.index.resyncing,
        })
    }
}
