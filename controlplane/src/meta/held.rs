//! Per-segment indexes kept up to date as objects change, so that no request walks the directory
//! (issue 13: no O(objects) work on the request path):
//!
//! - Each segment's LRU: the visible objects (committed, linked) with a replica there, by
//!   recency. Eviction takes the oldest unleased object from the segments it may free space in
//!   (O(segments), plus the leased objects it skips); a pause or a resume moves nothing, since only
//!   live segments are ever evicted from (an object whose every replica is paused is out of reach
//!   by construction); dropping a member reads its own segments' LRUs, not the directory.
//! - Each segment's bytes by what could free them: held by pending puts, by read leases, by
//!   repairs in flight. Admission (`rooms`) reads them instead of summing every object's replicas.
//!
//! [`MetaCore::check_invariants`] recomputes both from the objects.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;

use super::{MetaCore, Segment, State};

/// What one segment's bytes are held by, besides visible unleased objects (evictable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Held {
    /// Reserved by pending puts (abandoned ones too).
    pub pending: u64,
    /// Reserved by committed objects under a read lease (unlinked ones too).
    pub leased: u64,
    /// Reserved by repairs and demotions in flight.
    pub repairing: u64,
}

/// The per-segment indexes.
#[derive(Default)]
pub(super) struct SegIndex {
    /// (recency, oid) of the visible objects with a replica in the segment.
    pub lru: BTreeSet<(u64, u64)>,
    pub held: Held,
}

/// Which counter of [`Held`] a change applies to.
#[derive(Clone, Copy, Debug)]
pub(super) enum Hold {
    Pending,
    Leased,
}

impl MetaCore {
    /// Segment `id`, live or paused.
    pub(super) fn seg_any_mut(&mut self, id: u32) -> Option<&mut Segment> {
        match self.segments.get_mut(&id) {
            Some(s) => Some(s),
            None => self.paused_segments.get_mut(&id),
        }
    }

    /// Object `oid` just became visible (or gained replicas while visible): into the LRU of each
    /// of its replicas' segments, at its recency.
    pub(super) fn lru_insert(&mut self, oid: u64) {
        let obj = self.objects.get_mut(&oid).expect("a live object");
        debug_assert!(obj.state == State::Committed && !obj.removed);
        let recency = *obj.recency.get_mut();
        obj.queued = recency;
        let segs: Vec<u32> = obj.replicas.iter().map(|(r, _)| r.segment).collect();
        for id in segs {
            let seg = self
                .seg_any_mut(id)
                .expect("replicas lie on live or paused segments");
            let fresh = seg.index.lru.insert((recency, oid));
            assert!(fresh, "object {oid} already in segment {id}'s LRU");
        }
    }

    /// Object `oid` is no longer visible (or is about to move to another recency): out of the
    /// LRU of each of its replicas' segments.
    pub(super) fn lru_remove(&mut self, oid: u64) {
        let obj = &self.objects[&oid];
        let recency = obj.queued;
        let segs: Vec<u32> = obj.replicas.iter().map(|(r, _)| r.segment).collect();
        for id in segs {
            let seg = self
                .seg_any_mut(id)
                .expect("replicas lie on live or paused segments");
            let was = seg.index.lru.remove(&(recency, oid));
            assert!(was, "visible object {oid} missing from segment {id}'s LRU");
        }
    }

    /// Count (`add`) or stop counting the bytes of every replica of `oid` as `hold`.
    pub(super) fn hold(&mut self, oid: u64, hold: Hold, add: bool) {
        let reserved: Vec<(u32, u64)> = self.objects[&oid]
            .replicas
            .iter()
            .map(|(r, s)| (r.segment, s.reserved))
            .collect();
        for (id, bytes) in reserved {
            self.hold_segment(id, hold, bytes, add);
        }
    }

    /// Count (`add`) or stop counting `bytes` of segment `id` as `hold`.
    pub(super) fn hold_segment(&mut self, id: u32, hold: Hold, bytes: u64, add: bool) {
        let seg = self
            .seg_any_mut(id)
            .expect("replicas lie on live or paused segments");
        let counter = match hold {
            Hold::Pending => &mut seg.index.held.pending,
            Hold::Leased => &mut seg.index.held.leased,
        };
        *counter = if add {
            counter.checked_add(bytes)
        } else {
            counter.checked_sub(bytes)
        }
        .expect("held bytes stay within the segment");
    }

    /// Count (`add`) or stop counting `bytes` of segment `id` as reserved by a repair.
    pub(super) fn hold_repair(&mut self, id: u32, bytes: u64, add: bool) {
        let seg = self
            .seg_any_mut(id)
            .expect("a repair's segment lives with its member");
        let counter = &mut seg.index.held.repairing;
        *counter = if add {
            counter.checked_add(bytes)
        } else {
            counter.checked_sub(bytes)
        }
        .expect("repair bytes stay within the segment");
    }

    /// Move the LRU entries of `oid` from where they were queued to its last use.
    fn lru_settle(&mut self, oid: u64) {
        self.lru_remove(oid);
        self.lru_insert(oid);
    }

    /// The first (oldest) entries of live segment `id`'s LRU, up to `n` that `take` accepts,
    /// each at its object's true recency: entries of objects read since they were queued are
    /// moved to their last use on the way (each read is settled at most once per segment).
    pub(super) fn lru_oldest(
        &mut self,
        id: u32,
        n: usize,
        take: impl Fn(&super::Object) -> bool,
    ) -> Vec<(u64, u64)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut out = Vec::new();
        let mut after: Option<(u64, u64)> = None;
        while out.len() < n {
            let Some(seg) = self.segments.get(&id) else {
                break;
            };
            let next = match after {
                None => seg.index.lru.first().copied(),
                Some(a) => seg
                    .index
                    .lru
                    .range((Excluded(a), Unbounded))
                    .next()
                    .copied(),
            };
            let Some((queued, oid)) = next else {
                break;
            };
            let obj = &self.objects[&oid];
            if obj.recency.load(Relaxed) != queued {
                // Read since: it moves behind `after`, further back in this LRU.
                self.lru_settle(oid);
                continue;
            }
            if take(obj) {
                out.push((queued, oid));
            }
            after = Some((queued, oid));
        }
        out
    }

    /// The least recently used unleased visible object with a replica on a live segment that
    /// `want` accepts: the eviction victim. O(segments), plus the leased objects at the front of
    /// each LRU and the entries of objects read since they were queued.
    pub(super) fn oldest_unleased(&mut self, want: impl Fn(u32, &Segment) -> bool) -> Option<u64> {
        let ids: Vec<u32> = self
            .segments
            .iter()
            .filter(|(id, s)| want(**id, s))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.lru_oldest(id, 1, |o| o.leases == 0).pop())
            .min()
            .map(|(_, oid)| oid)
    }

    /// Check the per-segment indexes against the objects and repairs (for the invariants).
    pub(super) fn check_seg_indexes(&self) {
        let mut lru_entries = 0usize;
        for (id, seg) in self.segments.iter().chain(&self.paused_segments) {
            for &(recency, oid) in &seg.index.lru {
                let obj = self.objects.get(&oid).expect("LRU entry of a freed object");
                assert_eq!(obj.queued, recency, "object {oid}: LRU position");
                assert!(
                    obj.queued <= obj.recency.load(Relaxed),
                    "queued after its last use"
                );
                assert!(obj.state == State::Committed && !obj.removed);
                assert!(obj.replicas.iter().any(|(r, _)| r.segment == *id));
            }
            lru_entries += seg.index.lru.len();
            let mut held = Held::default();
            for obj in self.objects.values() {
                for (r, space) in obj.replicas.iter().filter(|(r, _)| r.segment == *id) {
                    match obj.state {
                        State::Pending { .. } => held.pending += space.reserved,
                        State::Committed if obj.leases > 0 => held.leased += space.reserved,
                        State::Committed => {}
                    }
                    debug_assert_eq!(r.segment, *id);
                }
            }
            for (segment, _, reserved) in self.repair_spaces() {
                if segment == *id {
                    held.repairing += reserved;
                }
            }
            assert_eq!(seg.index.held, held, "segment {id}: held bytes");
            let h = seg.index.held;
            assert!(h.pending + h.leased + h.repairing <= seg.space.used_bytes());
        }
        let visible_replicas: usize = self
            .objects
            .values()
            .filter(|o| o.state == State::Committed && !o.removed)
            .map(|o| o.replicas.len())
            .sum();
        assert_eq!(lru_entries, visible_replicas, "LRU entries");
    }
}
