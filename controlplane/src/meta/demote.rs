//! Demotion: eviction that moves down a tier. When a lower tier (DRAM) exists, HBM is never
//! dropped from: past the HBM high watermark, its least recently used objects are copied to DRAM
//! (on the same local service or another) and only then is their HBM space freed, until HBM use
//! is back under the low watermark. DRAM, the last tier, drops as before (also to make room for
//! demotions). With no DRAM tier, HBM is the last tier and drops.
//!
//! A demotion is a repair ([`super::repair`]) with the HBM replica it replaces: the meta service
//! reserves DRAM space and hands the DRAM holder a `RepairTask` (copy the HBM replica over the
//! data path, check its CRC-32C) on a heartbeat reply; when the holder reports success, the DRAM
//! replica takes the HBM replica's place in the object (the HBM holder's index loses the key, the
//! DRAM holder's gains it) and the HBM space is freed. An object read meanwhile (a lease) or
//! changed meanwhile keeps its HBM replica; its DRAM space is freed and a later pass tries again.
//!
//! A put that asks for HBM while HBM has no room waits (a retryable refusal, as for leased space)
//! for demotions to free it, instead of dropping objects that DRAM could hold.

use tracing::{debug, info};

use super::{MetaCore, State};
use crate::msg::{self, IndexChange, RepairTask, Replica, REPAIRS_MAX};

impl MetaCore {
    /// Whether HBM has a lower tier to move down to (some live service offers DRAM).
    pub(super) fn hbm_demotes(&self) -> bool {
        self.tier_usage(msg::MEDIA_DRAM).0 > 0 && self.tier_usage(msg::MEDIA_HBM).0 > 0
    }

    /// Objects moved from HBM to DRAM since this core started.
    pub fn demoted_total(&self) -> u64 {
        self.stats.demoted
    }

    /// Whether HBM use calls for demotions: past the high watermark, then until the low one
    /// (counting what demotions in flight will free).
    fn demotion_wanted(&mut self) -> bool {
        let (cap, used) = self.tier_usage(msg::MEDIA_HBM);
        if cap == 0 {
            return false;
        }
        let inflight: u64 = self
            .repairs
            .values()
            .filter_map(|r| r.demote.map(|d| d.len))
            .sum();
        let pct = |p: u16| u128::from(cap) * u128::from(p);
        let now = u128::from(used.saturating_sub(inflight)) * 100;
        if now > pct(self.params.evict_threshold_high) {
            self.demoting = true;
        } else if now <= pct(self.params.evict_threshold_low) {
            self.demoting = false;
        }
        self.demoting
    }

    /// Demotion tasks for `rank` (the DRAM holder), reserving their DRAM space now (evicting
    /// DRAM's least recently used objects for it if need be); at most `budget`.
    pub(super) fn demotions_for(
        &mut self,
        now_ms: u64,
        rank: u32,
        budget: usize,
    ) -> Vec<RepairTask> {
        let mut tasks = Vec::new();
        if budget == 0 || !self.hbm_demotes() || !self.members.contains_key(&rank) {
            return tasks;
        }
        let Some(dram) = self.segment_of(rank, msg::MEDIA_DRAM) else {
            return tasks;
        };
        // Oldest first: the fronts of the live HBM segments' LRUs.
        let hbm: Vec<u32> = self
            .segments
            .iter()
            .filter(|(_, s)| s.media == msg::MEDIA_HBM)
            .map(|(id, _)| *id)
            .collect();
        let mut oldest: Vec<(u64, u64)> = Vec::new();
        for id in hbm {
            oldest.extend(self.lru_oldest(id, 4 * REPAIRS_MAX, |_| true));
        }
        oldest.sort_unstable();
        oldest.dedup();
        let candidates: Vec<u64> = oldest
            .into_iter()
            .map(|(_, oid)| oid)
            .take(4 * REPAIRS_MAX)
            .collect();
        for oid in candidates {
            if tasks.len() >= budget.min(REPAIRS_MAX)
                || self.repairs.len() >= super::repair::REPAIRS_INFLIGHT_MAX
                || !self.demotion_wanted()
            {
                break;
            }
            let Some(obj) = self.objects.get(&oid) else {
                continue;
            };
            if obj.state != State::Committed
                || obj.removed
                || obj.leases > 0
                || self.repairs.values().any(|r| r.oid == oid)
            {
                continue;
            }
            // The HBM replica to move, on a live member; the target may be its own service, but
            // no other replica of the object may already be on `rank`.
            let Some(upper) = obj
                .replicas
                .iter()
                .map(|(r, _)| *r)
                .find(|r| r.media == msg::MEDIA_HBM && self.members.contains_key(&r.rank))
            else {
                continue;
            };
            if obj
                .replicas
                .iter()
                .any(|(r, _)| r.rank == rank && r.segment != upper.segment)
            {
                continue;
            }
            let (size, version, crc) = (obj.size, obj.version, obj.crc);
            let Some(space) = self.dram_space(dram, size) else {
                debug!(
                    rank,
                    size, "no DRAM room for a demotion, even after eviction"
                );
                break;
            };
            let replica = Replica {
                rank,
                segment: dram,
                media: msg::MEDIA_DRAM,
                offset: space.offset,
                len: size,
            };
            let task = self.start_repair(
                now_ms,
                (oid, version, crc),
                upper,
                replica,
                space,
                Some(upper),
            );
            tasks.push(task);
        }
        if !tasks.is_empty() {
            debug!(rank, tasks = tasks.len(), "demotion tasks handed out");
        }
        tasks
    }

    /// `size` bytes of DRAM segment `dram`: free space, else room made by dropping DRAM's least
    /// recently used objects there (DRAM is the last tier).
    fn dram_space(&mut self, dram: u32, size: u64) -> Option<mmc_hal::Space> {
        loop {
            if let Some(s) = self
                .segments
                .get_mut(&dram)
                .and_then(|s| s.space.alloc(size))
            {
                return Some(s);
            }
            if !self.evict_one(|id, _| id == dram) {
                return None;
            }
        }
    }

    /// A demotion's copy succeeded: the DRAM replica replaces the HBM one, unless the object
    /// changed, lost that replica or is being read (then the DRAM space is given back).
    pub(super) fn demotion_done(&mut self, rep: super::repair::Repair, upper: Replica) {
        let fits = self.objects.get(&rep.oid).is_some_and(|o| {
            o.state == State::Committed
                && !o.removed
                && o.version == rep.version
                && o.leases == 0
                && o.replicas.iter().any(|(r, _)| *r == upper)
                && !o
                    .replicas
                    .iter()
                    .any(|(r, _)| r.rank == rep.replica.rank && *r != upper)
        });
        if !fits {
            debug!(
                oid = rep.oid,
                "demoted object changed or is being read: DRAM space freed, retried later"
            );
            self.free_repair(rep);
            self.stats.demotions_abandoned += 1;
            return;
        }
        // Out of the HBM segment's LRU, into the DRAM one's (at the same recency) below.
        self.lru_remove(rep.oid);
        self.hold_repair(rep.replica.segment, rep.space.reserved, false);
        let obj = self.objects.get_mut(&rep.oid).expect("checked above");
        let at = obj
            .replicas
            .iter()
            .position(|(r, _)| *r == upper)
            .expect("checked above");
        let (_, old_space) = std::mem::replace(&mut obj.replicas[at], (rep.replica, rep.space));
        let (key, version, crc, want) = (obj.key.clone(), obj.version, obj.crc, obj.want);
        let old = self
            .segments
            .get_mut(&upper.segment)
            .or(self.paused_segments.get_mut(&upper.segment))
            .expect("the HBM replica's segment lives with its member");
        old.space.free(old_space);
        old.objects = old.objects.checked_sub(1).expect("segment counts replicas");
        let new = self
            .segments
            .get_mut(&rep.replica.segment)
            .expect("the DRAM holder reported from a live segment");
        new.objects += 1;
        self.lru_insert(rep.oid);
        // Index: the HBM holder forgets the key first (the DRAM holder may be the same service).
        self.index_record(upper.rank, &key, || IndexChange::Removed {
            key: key.to_string(),
            segment: upper.segment,
            offset: upper.offset,
        });
        let r = rep.replica;
        self.index_add_replica(&key, r, (version, crc, want));
        self.stats.demoted += 1;
        info!(
            key,
            from = upper.rank,
            to = r.rank,
            bytes = r.len,
            "demoted from HBM to DRAM"
        );
    }
}
