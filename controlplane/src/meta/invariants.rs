//! The invariants of DESIGN.md, checked over the whole core. Tests (and the simulation) call
//! [`MetaCore::check_invariants`] after every step; it is O(state), so the driver never does.

use std::collections::HashMap;

use super::{MetaCore, State};

impl MetaCore {
    /// Check every invariant the core relies on; panics naming the first one broken.
    pub fn check_invariants(&self) {
        self.check_members_and_segments();
        self.check_objects_and_space();
        self.check_pending();
        self.check_leases();
        self.check_lru();
        self.check_index_outboxes();
        self.check_slab();
    }

    /// Every member's index outbox is bounded, numbered from 1, starts with its only `Reset` if
    /// it has one, names only the member's segments, and queues nothing past a snapshot's cursor.
    /// Outboxes live in their members, so only members (live or paused) have one.
    fn check_index_outboxes(&self) {
        for m in self.members.values().chain(self.paused.values()) {
            m.index.check(self.params.index_outbox_max, &m.segments);
        }
        // The index is keyed by key: an object has at most one replica per member.
        for (oid, obj) in &self.objects {
            let mut ranks: Vec<u32> = obj.replicas.iter().map(|(r, _)| r.rank).collect();
            ranks.sort_unstable();
            ranks.dedup();
            assert_eq!(
                ranks.len(),
                obj.replicas.len(),
                "object {oid}: two replicas on one rank"
            );
        }
    }

    /// Live members own exactly the live segments and paused members exactly the parked ones; a
    /// rank is live or paused, never both; a live member was heard from within its timeout and a
    /// paused one within its timeout and grace; ids stay below the next ones handed out.
    fn check_members_and_segments(&self) {
        let timeout = self.params.member_timeout_ms;
        let grace = self.params.member_grace_ms;
        for (rank, m) in &self.members {
            assert!(
                !self.paused.contains_key(rank),
                "rank {rank} live and paused"
            );
            assert!(m.last_seen_ms <= self.now_ms_last);
            assert!(
                self.now_ms_last - m.last_seen_ms <= timeout,
                "rank {rank}: live though silent past its timeout"
            );
        }
        for (rank, m) in &self.paused {
            assert!(m.last_seen_ms <= self.now_ms_last);
            assert!(
                self.now_ms_last - m.last_seen_ms <= timeout.saturating_add(grace),
                "rank {rank}: still paused past its grace"
            );
        }
        self.check_owners(&self.members, &self.segments);
        self.check_owners(&self.paused, &self.paused_segments);
        for (id, seg) in self.segments.iter().chain(&self.paused_segments) {
            assert!(*id < self.next_segment);
            assert!(seg.space.used_bytes() <= seg.space.capacity_bytes());
        }
    }

    /// `members` own exactly `segments`.
    fn check_owners(
        &self,
        members: &std::collections::BTreeMap<u32, super::Member>,
        segments: &std::collections::BTreeMap<u32, super::Segment>,
    ) {
        let mut owned = 0usize;
        for (rank, m) in members {
            assert!(m.incarnation < self.next_incarnation, "rank {rank}");
            assert!(
                m.incarnation > self.params.epoch << super::INCARNATION_EPOCH_SHIFT,
                "rank {rank}: incarnation from before this run's epoch"
            );
            assert!(!m.segments.is_empty() && m.segments.len() <= 4);
            for id in &m.segments {
                let seg = segments.get(id).expect("a member's segment exists");
                assert_eq!(seg.rank, *rank, "segment {id} owned by its member");
                owned += 1;
            }
        }
        assert_eq!(owned, segments.len(), "every segment has an owner");
    }

    /// Replicas lie on live segments without overlap, each segment's `objects` and used bytes
    /// match its replicas, and `keys` links exactly the objects that are not removed.
    fn check_objects_and_space(&self) {
        let mut per_segment: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        let mut linked = 0usize;
        for (oid, obj) in &self.objects {
            assert!(*oid < self.next_oid);
            assert!(!obj.replicas.is_empty(), "object {oid} has no replica");
            for (r, space) in &obj.replicas {
                let seg = self
                    .segments
                    .get(&r.segment)
                    .or_else(|| self.paused_segments.get(&r.segment))
                    .expect("replica on a dead segment");
                assert_eq!((r.rank, r.media), (seg.rank, seg.media));
                assert_eq!((r.offset, r.len), (space.offset, obj.size));
                assert!(space.reserved >= space.len && space.len == obj.size);
                per_segment
                    .entry(r.segment)
                    .or_default()
                    .push((space.offset, space.reserved));
            }
            if obj.removed && obj.state != State::Committed {
                // A put abandoned by a writer that is gone: space held until its deadline.
                assert_eq!(obj.leases, 0);
                assert_ne!(
                    self.keys.get(&self.objects, &obj.key),
                    Some(*oid),
                    "abandoned put linked"
                );
            } else if obj.removed {
                // Unlinked and kept only for its readers.
                assert!(obj.leases > 0, "object {oid}: removed, unleased, not freed");
                assert_ne!(
                    self.keys.get(&self.objects, &obj.key),
                    Some(*oid),
                    "removed object linked"
                );
            } else {
                linked += 1;
                assert_eq!(
                    self.keys.get(&self.objects, &obj.key),
                    Some(*oid),
                    "object {oid} unlinked"
                );
            }
        }
        assert_eq!(
            linked,
            self.keys.len(),
            "keys link exactly the live objects"
        );
        for oid in self.keys.oids(&self.objects) {
            let key = &self.objects[&oid].key;
            assert_eq!(self.keys.get(&self.objects, key), Some(oid));
        }
        for (id, seg) in self.segments.iter().chain(&self.paused_segments) {
            let ranges = per_segment.remove(id).unwrap_or_default();
            assert_eq!(
                seg.objects,
                ranges.len() as u64,
                "segment {id} object count"
            );
        }
        assert!(per_segment.is_empty(), "replicas on unknown segments");
        // Repairs in flight hold space too: it overlaps nothing.
        let mut reserved: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for obj in self.objects.values() {
            for (r, space) in &obj.replicas {
                reserved
                    .entry(r.segment)
                    .or_default()
                    .push((space.offset, space.reserved));
            }
        }
        for (segment, offset, len) in self.repair_spaces() {
            assert!(
                self.segments.contains_key(&segment) || self.paused_segments.contains_key(&segment),
                "a repair on a dead segment"
            );
            reserved.entry(segment).or_default().push((offset, len));
        }
        for (id, seg) in self.segments.iter().chain(&self.paused_segments) {
            let mut ranges = reserved.remove(id).unwrap_or_default();
            let used: u64 = ranges.iter().map(|r| r.1).sum();
            assert_eq!(
                used,
                seg.space.used_bytes(),
                "segment {id} used bytes, repairs included"
            );
            ranges.sort_unstable();
            assert!(
                ranges.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0),
                "overlap in {id}"
            );
        }
    }

    /// `pending` indexes exactly the pending objects, by deadline; a pending object holds its key
    /// but is never visible and never leased.
    fn check_pending(&self) {
        for &(deadline_ms, oid) in &self.pending {
            let obj = self
                .objects
                .get(&oid)
                .expect("pending entry of a freed object");
            assert_eq!(obj.state, State::Pending { deadline_ms });
        }
        let mut pending = 0usize;
        let mut abandoned = 0usize;
        for (oid, obj) in &self.objects {
            if let State::Pending { deadline_ms } = obj.state {
                pending += 1;
                abandoned += usize::from(obj.removed);
                assert!(self.pending.contains(&(deadline_ms, *oid)));
                assert_eq!(obj.leases, 0, "pending object {oid} leased");
                assert!(
                    obj.removed || self.visible(&obj.key).is_err(),
                    "pending object {oid} visible"
                );
            }
        }
        assert_eq!(pending, self.pending.len(), "pending index size");
        assert_eq!(abandoned, self.abandoned, "abandoned puts count");
        assert!(self.pending.len() - self.abandoned <= self.keys.len());
    }

    /// `leases` and `lease_expiry` mirror each other, point at committed objects, and add up to
    /// every object's lease count.
    fn check_leases(&self) {
        assert_eq!(self.leases.len(), self.lease_expiry.len());
        let mut per_object: HashMap<u64, u32> = HashMap::new();
        for (id, (oid, until)) in &self.leases {
            assert!(*id < self.next_lease);
            assert!(self.lease_expiry.contains(&(*until, *id)), "lease {id}");
            let obj = self.objects.get(oid).expect("lease on a freed object");
            assert_eq!(
                obj.state,
                State::Committed,
                "lease {id} on a pending object"
            );
            *per_object.entry(*oid).or_default() += 1;
        }
        for (oid, obj) in &self.objects {
            assert_eq!(
                obj.leases,
                per_object.get(oid).copied().unwrap_or(0),
                "object {oid} lease count"
            );
        }
    }

    /// Each segment's LRU holds exactly the visible objects with a replica there, each at its
    /// recency, and its held bytes add up from the objects and repairs (see `held.rs`).
    fn check_lru(&self) {
        for seg in self.segments.values().chain(self.paused_segments.values()) {
            for (recency, _) in &seg.index.lru {
                assert!(*recency < self.next_recency.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
        self.check_seg_indexes();
    }
}
