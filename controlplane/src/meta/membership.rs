//! Membership over time: live members, paused ones, dropped ones, and the meta service's own
//! stalls (DESIGN.md, "Membership" and "Recovery": a pause is not a death).
//!
//! - A member silent for `member_timeout_ms` is *paused*. Its segments move to `paused_segments`,
//!   so placement, watermarks and eviction never see them: no new put lands there. Readers are
//!   offered only the replicas on live members; an object whose every replica is paused is out
//!   of eviction's reach (its LRU entries are in the paused segments' LRUs, which eviction never
//!   reads: evicting it would free no live space) and answers -3018 (not reachable) to lookups,
//!   queries and exists, as a get of it answered before the pause was noticed. Its key stays
//!   taken, and it can still be removed. Puts pending on it are left alone: they commit, or time
//!   out at `pending_timeout_ms` as before.
//! - A heartbeat of the same incarnation within `member_grace_ms` after the timeout re-admits it
//!   with every object, at the same incarnation: plans made before the pause stay valid.
//! - Its objects are dropped only once its process is known gone: it registers again (the same
//!   rank, or any registration from its host and data endpoint: one process serves an address),
//!   it unregisters, the driver's probe after a hint finds nothing listening at its data endpoint
//!   (`member_dead`), or the grace runs out.
//! - A gap longer than `meta_stall_ms` between two calls into the core is the core's own stall:
//!   every member's `last_seen_ms` moves forward by it, so the stall counts against nobody.

use tracing::{debug, info, warn};

use super::{MetaCore, Object};
use crate::error::Code;
use crate::msg::Reply;

/// Why a member was paused, as logged (and counted: missed heartbeats apart from hints).
const MISSED_HEARTBEATS: &str = "missed its heartbeats";
const LEAVING: &str = "is leaving";

impl MetaCore {
    /// The membership part of `tick`: forgive the core's own stall of `gap_ms`, then pause the
    /// members silent past their timeout and drop the paused ones past their grace.
    pub(super) fn tick_members(&mut self, gap_ms: u64, now_ms: u64) {
        let known = self.members.len() + self.paused.len();
        if gap_ms > self.params.meta_stall_ms && known > 0 {
            warn!(
                stall_ms = gap_ms,
                members = known,
                "the meta service itself stalled: the stall is not counted against heartbeats"
            );
            for m in self.members.values_mut().chain(self.paused.values_mut()) {
                m.last_seen_ms = m.last_seen_ms.saturating_add(gap_ms).min(now_ms);
            }
            self.stall_end_ms = Some(now_ms);
        }
        let timeout = self.params.member_timeout_ms;
        let silent: Vec<u32> = self
            .members
            .iter()
            .filter(|(_, m)| now_ms - m.last_seen_ms > timeout)
            .map(|(r, _)| *r)
            .collect();
        for rank in silent {
            self.pause(rank, MISSED_HEARTBEATS);
        }
        let grace = self.params.member_grace_ms;
        let gone: Vec<u32> = self
            .paused
            .iter()
            .filter(|(_, m)| now_ms - m.last_seen_ms > timeout.saturating_add(grace))
            .map(|(r, _)| *r)
            .collect();
        for rank in gone {
            warn!(
                rank,
                timeout_ms = timeout,
                grace_ms = grace,
                "paused local service did not come back within its grace: declared dead"
            );
            self.drop_member(rank);
        }
        debug_assert!(self
            .members
            .values()
            .all(|m| now_ms - m.last_seen_ms <= timeout));
    }

    /// The connection that carried the heartbeats of `rank` at `incarnation` closed (EOF or an
    /// error): a killed process's socket is closed by its kernel at once, so this is a strong
    /// hint that the process is gone. The member is paused now, as if its lease had run out (out
    /// of placement, objects kept); a heartbeat at the same incarnation (after reconnecting)
    /// re-admits it, and its grace still counts from its last heartbeat. Ignored within a member
    /// timeout after the core's own stall. Returns whether it was paused.
    pub fn member_connection_lost(&mut self, now_ms: u64, rank: u32, incarnation: u64) -> bool {
        self.tick(now_ms);
        // A service whose heartbeat timed out during the core's own stall closed its connection
        // to start afresh: within a member timeout of the stall, a close is no hint (the lease
        // and the clients' reports still are).
        let window_ms = self.params.member_timeout_ms;
        if self
            .stall_end_ms
            .is_some_and(|end| now_ms <= end.saturating_add(window_ms))
        {
            debug!(
                rank,
                incarnation, "meta connection closed soon after the core's own stall: no hint"
            );
            return false;
        }
        self.suspect(rank, incarnation, "its meta connection closed")
    }

    /// Where the driver may probe `rank` to confirm that its process is gone: the data endpoint
    /// of a member paused at `incarnation` (None when it is live, paused at another incarnation,
    /// unknown, or has no data endpoint). The driver asks after a hint (a lost connection, a
    /// client's report), never after a plain lease timeout, which may be a partition.
    pub fn probe_target(&self, rank: u32, incarnation: u64) -> Option<&str> {
        self.paused
            .get(&rank)
            .filter(|m| m.incarnation == incarnation && !m.data_endpoint.is_empty())
            .map(|m| m.data_endpoint.as_str())
    }

    /// The driver's probe found nothing listening at the data endpoint of `rank` (every connect
    /// refused: the host answered, no process listens there), so the process that served it at
    /// `incarnation` is gone: drop the member and its objects now rather than at the end of its
    /// grace. Applied only if `rank` is still paused at `incarnation`: a member re-admitted
    /// meanwhile (its heartbeat came back), registered again or already dropped is left alone.
    /// Returns whether it was dropped.
    pub fn member_dead(&mut self, now_ms: u64, rank: u32, incarnation: u64) -> bool {
        self.tick(now_ms);
        let Some(endpoint) = self.probe_target(rank, incarnation).map(str::to_owned) else {
            debug!(
                rank,
                incarnation,
                "probe result for a member no longer paused at that incarnation: ignored"
            );
            return false;
        };
        warn!(
            rank,
            incarnation,
            endpoint = %endpoint,
            "nothing listens at the paused local service's data endpoint (connection refused): \
             its process is gone, dropping it"
        );
        self.drop_member(rank);
        debug_assert!(!self.is_member(rank));
        true
    }

    /// Pause the live member `rank` if `incarnation` is its current one: a hint that its process
    /// is gone (connection lost, a client's report). Returns whether it was paused.
    pub(super) fn suspect(&mut self, rank: u32, incarnation: u64, why: &'static str) -> bool {
        let live = self
            .members
            .get(&rank)
            .is_some_and(|m| m.incarnation == incarnation);
        if !live {
            debug!(
                rank,
                incarnation, why, "suspicion of no live member: ignored"
            );
            return false;
        }
        warn!(
            rank,
            incarnation, why, "local service suspected gone: pausing it now"
        );
        self.pause(rank, why);
        debug_assert!(!self.members.contains_key(&rank) && self.paused.contains_key(&rank));
        true
    }

    /// Whether `rank` is a member, live or paused.
    pub(super) fn is_member(&self, rank: u32) -> bool {
        self.members.contains_key(&rank) || self.paused.contains_key(&rank)
    }

    /// Whether `obj` has a replica on a live member: readers may be offered it, and (committed
    /// and not removed) it is in the LRU.
    pub(super) fn has_live_replica(&self, obj: &Object) -> bool {
        obj.replicas
            .iter()
            .any(|(r, _)| self.members.contains_key(&r.rank))
    }

    /// Take a silent live member out of placement and out of readers' sight, keeping its objects.
    fn pause(&mut self, rank: u32, why: &'static str) {
        let member = self.members.remove(&rank).expect("pause of a live member");
        match why {
            MISSED_HEARTBEATS => self.stats.paused_missed_heartbeats += 1,
            LEAVING => {}
            _ => self.stats.paused_by_hint += 1,
        }
        for id in &member.segments {
            let seg = self.segments.remove(id).expect("a member's segments exist");
            assert_eq!(seg.rank, rank);
            self.paused_segments.insert(*id, seg);
        }
        let incarnation = member.incarnation;
        // Its segments' objects leave placement and eviction with the segments (only live
        // segments are evicted from): nothing to move, whatever their number.
        let held_objects: u64 = member
            .segments
            .iter()
            .map(|id| self.paused_segments[id].objects)
            .sum();
        let previous = self.paused.insert(rank, member);
        assert!(previous.is_none(), "rank {rank} paused twice");
        warn!(
            rank,
            incarnation,
            timeout_ms = self.params.member_timeout_ms,
            grace_ms = self.params.member_grace_ms,
            objects = held_objects,
            why,
            "local service paused (out of placement, objects kept)"
        );
    }

    /// Re-admit a paused member that heartbeated at its own incarnation, with its objects.
    fn resume(&mut self, now_ms: u64, rank: u32) {
        let mut member = self
            .paused
            .remove(&rank)
            .expect("resume of a paused member");
        let silent_ms = now_ms - member.last_seen_ms;
        member.last_seen_ms = now_ms;
        // Its segments come back with their LRUs: their objects are evictable again, at their
        // old recency.
        let mut back = 0u64;
        for id in &member.segments {
            let seg = self
                .paused_segments
                .remove(id)
                .expect("a paused member's segments are parked");
            back += seg.objects;
            self.segments.insert(*id, seg);
        }
        info!(
            rank,
            incarnation = member.incarnation,
            silent_ms,
            objects_back = back,
            "paused local service is back with its memory: re-admitted with its objects"
        );
        let previous = self.members.insert(rank, member);
        assert!(previous.is_none(), "rank {rank} both live and paused");
    }

    pub(super) fn heartbeat(
        &mut self,
        now_ms: u64,
        rank: u32,
        incarnation: u64,
        index_seq: u64,
        index_resync: bool,
        repaired: &[crate::msg::RepairDone],
    ) -> Reply {
        if self
            .paused
            .get(&rank)
            .is_some_and(|m| m.incarnation == incarnation)
        {
            self.resume(now_ms, rank);
        }
        match self.members.get_mut(&rank) {
            Some(m) if m.incarnation == incarnation => {
                // `handle` ticks first with the same `now_ms`, so time never runs backwards here.
                debug_assert!(m.last_seen_ms <= now_ms);
                m.last_seen_ms = now_ms;
                self.repairs_done(rank, repaired);
                let mut reply = self.index_heartbeat(rank, index_seq, index_resync);
                if let Reply::Heartbeat { repairs, .. } = &mut reply {
                    *repairs = self.repairs_for(now_ms, rank);
                    let budget = crate::msg::REPAIRS_MAX - repairs.len();
                    let demotions = self.demotions_for(now_ms, rank, budget);
                    repairs.extend(demotions);
                }
                reply
            }
            _ => Reply::Ack {
                code: Code::LinkNotFound.as_i32(),
            },
        }
    }

    pub(super) fn unregister(&mut self, rank: u32, incarnation: u64) -> Reply {
        let known = self.members.get(&rank).or_else(|| self.paused.get(&rank));
        match known {
            Some(m) if m.incarnation == incarnation => {
                info!(rank, "local service left");
                self.drop_member(rank);
                Reply::Ack { code: 0 }
            }
            _ => Reply::Ack {
                code: Code::LinkNotFound.as_i32(),
            },
        }
    }

    /// A registration from `host` at `data_endpoint`: a paused member serving that address is a
    /// process that is gone (one process listens on an address), so its objects are dropped now.
    pub(super) fn drop_paused_at(&mut self, host: &str, data_endpoint: &str) {
        if data_endpoint.is_empty() {
            return;
        }
        let gone: Vec<u32> = self
            .paused
            .iter()
            .filter(|(_, m)| m.host == host && m.data_endpoint == data_endpoint)
            .map(|(r, _)| *r)
            .collect();
        for rank in gone {
            info!(
                rank,
                host,
                data_endpoint,
                "a new service registered at a paused member's address: the paused one is gone"
            );
            self.drop_member(rank);
        }
        debug_assert!(self
            .paused
            .values()
            .all(|m| m.host != host || m.data_endpoint != data_endpoint));
    }

    /// Remove a member (live or paused) and its segments; objects left with no replica are
    /// dropped.
    pub(super) fn drop_member(&mut self, rank: u32) {
        if self.members.contains_key(&rank) {
            // One path for both: first out of placement and the LRU, then gone.
            self.pause(rank, LEAVING);
        }
        if !self.paused.contains_key(&rank) {
            return;
        }
        self.drop_repairs_on(rank);
        self.stats.members_dropped += 1;
        let member = self.paused.remove(&rank).expect("checked above");
        // The objects with a replica there: the visible ones from its segments' own LRUs, the
        // pending puts and the unlinked objects still leased from their (small) indexes. Never a
        // walk over the directory.
        let mut affected: Vec<u64> = Vec::new();
        for seg in &member.segments {
            let s = self
                .paused_segments
                .remove(seg)
                .expect("a paused member's segments are parked");
            assert_eq!(s.rank, rank);
            affected.extend(s.index.lru.iter().map(|&(_, oid)| oid));
        }
        let on_rank = |oid: &u64| {
            self.objects[oid]
                .replicas
                .iter()
                .any(|(r, _)| r.rank == rank)
        };
        affected.extend(self.pending.iter().map(|&(_, oid)| oid).filter(on_rank));
        affected.extend(
            self.leases
                .values()
                .map(|&(oid, _)| oid)
                .filter(|oid| self.objects[oid].removed && on_rank(oid)),
        );
        affected.sort_unstable();
        affected.dedup();
        let mut lost = 0u64;
        for oid in affected {
            let obj = self.objects.get_mut(&oid).expect("listed above");
            // The dead segments' allocators are gone with them: their spaces are dropped, not freed.
            obj.replicas.retain(|(r, _)| r.rank != rank);
            if obj.replicas.is_empty() {
                lost += 1;
                let obj = &self.objects[&oid];
                if !obj.removed {
                    // Committed or pending, a linked object holds its key.
                    let linked = self.keys.remove(&self.objects, &obj.key);
                    assert_eq!(linked, Some(oid), "a linked object holds its key");
                }
                // Also drops its pending entry and leases; its LRU entries went with its segments.
                self.free_object(oid);
            } else {
                self.note_replicas(oid);
            }
        }
        if lost > 0 {
            warn!(rank, lost, "objects lost with their only replica");
        } else {
            debug!(rank, "member dropped; no object lost");
        }
        debug_assert!(
            self.objects
                .values()
                .all(|o| o.replicas.iter().all(|(r, _)| r.rank != rank)),
            "no replica left on rank {rank}"
        );
    }
}
