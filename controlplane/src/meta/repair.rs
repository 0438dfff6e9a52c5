//! Replica repair: an object with fewer replicas than its put asked for (stored that way under
//! `replica_policy = best_effort`, or left so by a member that died) gets them back when a live
//! service without one has room. The meta service reserves the space on that service and hands it
//! a [`RepairTask`] on a heartbeat reply; the service copies a live replica over the data path,
//! checks its CRC-32C, and reports on a later heartbeat. Only then is the replica added (and the
//! service's index told); a failed, late or stale repair frees the space.
//!
//! Bounded: at most [`REPAIRS_MAX`] tasks per reply, [`REPAIRS_INFLIGHT_MAX`] in flight, each
//! expiring at `pending_timeout_ms`; at most one in flight per object.

use std::collections::BTreeMap;

use mmc_hal::Space;
use tracing::{debug, info, warn};

use super::held::Hold;
use super::{MetaCore, State};
use crate::msg::{self, RepairDone, RepairTask, Replica, ServiceAddr, REPAIRS_MAX};

/// Most repairs in flight at once.
pub const REPAIRS_INFLIGHT_MAX: usize = 256;
/// Most under-replicated objects looked at per heartbeat.
const SCAN_MAX: usize = 256;

/// A repair in flight: space reserved for one more replica of object `oid` (or, for a demotion,
/// for the DRAM replica that replaces its HBM replica `demote`).
pub(super) struct Repair {
    pub(super) oid: u64,
    pub(super) version: u64,
    pub(super) replica: Replica,
    pub(super) space: Space,
    pub(super) deadline_ms: u64,
    pub(super) demote: Option<Replica>,
}

/// Repairs in flight, by token.
pub(super) type Repairs = BTreeMap<u64, Repair>;

impl MetaCore {
    /// Note that `oid` may lack replicas (after a commit, or a member's drop).
    pub(super) fn note_replicas(&mut self, oid: u64) {
        let Some(obj) = self.objects.get(&oid) else {
            return;
        };
        if obj.state == State::Committed && !obj.removed && obj.replicas.len() < obj.want as usize {
            self.under.insert(oid);
        } else {
            self.under.remove(&oid);
        }
    }

    /// Repair tasks for `rank`'s service, reserving their space now.
    pub(super) fn repairs_for(&mut self, now_ms: u64, rank: u32) -> Vec<RepairTask> {
        let mut tasks = Vec::new();
        if self.under.is_empty() || !self.members.contains_key(&rank) {
            return tasks;
        }
        // Round-robin over the under-replicated objects, from a cursor.
        let after = self.repair_cursor;
        let scan: Vec<u64> = self
            .under
            .range(after + 1..)
            .chain(self.under.range(..=after))
            .take(SCAN_MAX)
            .copied()
            .collect();
        for oid in scan {
            if tasks.len() >= REPAIRS_MAX || self.repairs.len() >= REPAIRS_INFLIGHT_MAX {
                break;
            }
            self.repair_cursor = oid;
            self.note_replicas(oid);
            if !self.under.contains(&oid) || self.repairs.values().any(|r| r.oid == oid) {
                continue;
            }
            let obj = &self.objects[&oid];
            if obj.replicas.iter().any(|(r, _)| r.rank == rank) {
                continue;
            }
            let Some(source) = obj
                .replicas
                .iter()
                .map(|(r, _)| *r)
                .find(|r| self.members.contains_key(&r.rank))
            else {
                continue;
            };
            let (size, version, crc, media) = (obj.size, obj.version, obj.crc, source.media);
            let Some(seg) = self.segment_of(rank, media) else {
                continue;
            };
            let Some(space) = self
                .segments
                .get_mut(&seg)
                .and_then(|s| s.space.alloc(size))
            else {
                continue;
            };
            let replica = Replica {
                rank,
                segment: seg,
                media,
                offset: space.offset,
                len: size,
            };
            let t = self.start_repair(now_ms, (oid, version, crc), source, replica, space, None);
            tasks.push(t);
        }
        if !tasks.is_empty() {
            debug!(rank, tasks = tasks.len(), "repair tasks handed out");
        }
        tasks
    }

    /// Record a repair (or, with `demote`, a demotion replacing that replica) of object `oid`
    /// at `(version, crc)`: copy `source` into `replica`, whose `space` is reserved. The task for
    /// the target service.
    pub(super) fn start_repair(
        &mut self,
        now_ms: u64,
        (oid, version, crc): (u64, u64, u32),
        source: Replica,
        replica: Replica,
        space: Space,
        demote: Option<Replica>,
    ) -> RepairTask {
        let token = self.next_oid;
        self.next_oid += 1;
        let m = &self.members[&source.rank];
        let task = RepairTask {
            token,
            segment: replica.segment,
            offset: replica.offset,
            len: replica.len,
            crc,
            source: ServiceAddr {
                rank: source.rank,
                incarnation: m.incarnation,
                host: m.host.clone(),
                data_endpoint: m.data_endpoint.clone(),
                shm_endpoint: m.shm_endpoint.clone(),
            },
            source_segment: source.segment,
            source_offset: source.offset,
        };
        let deadline_ms = now_ms.saturating_add(self.params.pending_timeout_ms);
        self.hold_repair(replica.segment, space.reserved, true);
        self.repairs.insert(
            token,
            Repair {
                oid,
                version,
                replica,
                space,
                deadline_ms,
                demote,
            },
        );
        task
    }

    /// Outcomes reported by `rank`'s service (a member at the heartbeat's incarnation).
    pub(super) fn repairs_done(&mut self, rank: u32, done: &[RepairDone]) {
        for d in done.iter().take(REPAIRS_MAX) {
            let Some(rep) = self.repairs.remove(&d.token) else {
                debug!(
                    token = d.token,
                    "outcome of an unknown or expired repair: ignored"
                );
                continue;
            };
            if rep.replica.rank != rank {
                warn!(
                    token = d.token,
                    rank, "repair outcome from another service: ignored"
                );
                self.repairs.insert(d.token, rep);
                continue;
            }
            if let Some(upper) = rep.demote {
                if d.ok {
                    self.demotion_done(rep, upper);
                } else {
                    warn!(
                        token = d.token,
                        rank, "demotion copy failed: DRAM space freed"
                    );
                    self.free_repair(rep);
                }
                continue;
            }
            let fits = d.ok
                && self.objects.get(&rep.oid).is_some_and(|o| {
                    o.state == State::Committed
                        && !o.removed
                        && o.version == rep.version
                        && o.replicas.len() < msg::REPLICAS_MAX
                        && !o.replicas.iter().any(|(r, _)| r.rank == rank)
                });
            if !fits {
                if d.ok {
                    debug!(
                        token = d.token,
                        "repaired object changed meanwhile: space freed"
                    );
                } else {
                    warn!(token = d.token, rank, "repair failed: space freed");
                }
                self.free_repair(rep);
                continue;
            }
            self.hold_repair(rep.replica.segment, rep.space.reserved, false);
            let obj = self.objects.get_mut(&rep.oid).expect("checked above");
            let (key, recency, leased) = (obj.key.clone(), obj.queued, obj.leases > 0);
            let (version, crc, want) = (obj.version, obj.crc, obj.want);
            let reserved = rep.space.reserved;
            obj.replicas.push((rep.replica, rep.space));
            let seg = self
                .segments
                .get_mut(&rep.replica.segment)
                .or(self.paused_segments.get_mut(&rep.replica.segment))
                .expect("a repair's segment is its member's");
            seg.objects += 1;
            // Visible: into the new segment's LRU too.
            let fresh = seg.index.lru.insert((recency, rep.oid));
            assert!(fresh, "a new replica's segment did not hold the object");
            if leased {
                self.hold_segment(rep.replica.segment, Hold::Leased, reserved, true);
            }
            self.index_add_replica(&key, rep.replica, (version, crc, want));
            self.note_replicas(rep.oid);
            info!(key, rank, "replica repaired");
        }
    }

    /// Free the space of repairs past their deadline.
    pub(super) fn expire_repairs(&mut self, now_ms: u64) {
        let late: Vec<u64> = self
            .repairs
            .iter()
            .filter(|(_, r)| r.deadline_ms <= now_ms)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            let rep = self.repairs.remove(&token).expect("listed above");
            warn!(
                token,
                rank = rep.replica.rank,
                "repair not reported in time: space freed"
            );
            self.free_repair(rep);
        }
    }

    /// Forget the repairs whose space is on `rank`, which is being dropped with its segments.
    pub(super) fn drop_repairs_on(&mut self, rank: u32) {
        // The space goes with the member's allocators.
        self.repairs.retain(|_, r| r.replica.rank != rank);
    }

    pub(super) fn free_repair(&mut self, rep: Repair) {
        self.hold_repair(rep.replica.segment, rep.space.reserved, false);
        let seg = self
            .segments
            .get_mut(&rep.replica.segment)
            .or(self.paused_segments.get_mut(&rep.replica.segment))
            .expect("a repair's segment lives while its member does");
        seg.space.free(rep.space);
    }

    /// Spaces reserved by repairs in flight, as (segment, offset, reserved): for the invariants.
    pub(super) fn repair_spaces(&self) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
        self.repairs
            .values()
            .map(|r| (r.replica.segment, r.space.offset, r.space.reserved))
    }
}
