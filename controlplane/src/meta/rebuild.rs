//! A restarted meta service rebuilds its directory from the local services (DESIGN.md,
//! "Recovery"). Every local service keeps the index of the committed objects it holds (key, place,
//! size, version, checksum); when a meta service that does not know its incarnation answers its
//! heartbeat, the service closes its fence, checks every entry against its checksum, and rejoins:
//! a registration carrying the index, in chunks ([`Request::Rejoin`](crate::msg::Request)).
//!
//! - The last chunk makes the service a member under a **new incarnation** (a put that was in
//!   flight when the old meta service died may still write late into space this run does not
//!   know is taken; the new incarnation fences it out) and rebuilds its segments' allocators with
//!   every entry exactly where it lies ([`SpaceAllocator::rebuild`]).
//! - An entry becomes an object, or a replica of one another service already reported. Two
//!   services that disagree about a key (one missed a removal before the crash) are settled by
//!   version: the larger wins, the other replica is refused. An entry is also refused when its
//!   place is invalid or taken, or a put of its key is pending in this run. The service is told
//!   of every refusal as an ordinary `Removed` index change.
//! - A service whose previous incarnation was handed out by *this* run was dropped by this run
//!   (past its grace, or replaced): its index is stale, so it registers afresh and its index is
//!   reset.
//! - For `rebuild_window_ms` after the start, requests whose answer depends on a key the
//!   directory does not know (lookups, queries, exists, removes of unknown keys) are answered
//!   [`Reply::Busy`]: the caller retries within its own deadline instead of hearing -3007 for an
//!   object that exists. Puts go ahead: a put of a key that a service has not reported yet gets a
//!   later version, so it replaces that object when the service rejoins (instead of -3006). The
//!   window closes early when a brand-new service registers before any service rejoined: a fresh
//!   cluster, not a restart.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use mmc_hal::{Space, SpaceAllocator};
use tracing::{debug, info, warn};

use super::{check_key, check_segments, error_reply, fresh_spaces, MetaCore, Object, State};
use crate::error::Code;
use crate::msg::{self, IndexChange, Rejoin, RejoinEntry, Reply, Request};

/// Most rejoins buffered at once (each until its last chunk, or a member timeout of silence).
pub const REJOINS_MAX: usize = 64;
/// How soon a caller answered `Busy` tries again, at most.
pub const BUSY_RETRY_MS: u64 = 50;
/// The largest version a rejoin entry may carry: the ids of runs started before the year 4200
/// (epoch < 2^46 ms). A larger one is refused: raising the next id to it would leave too few ids
/// above it, and the next put, repair or rebuilt object would overflow the id counter.
pub const VERSION_MAX: u64 = 1 << 62;

/// The chunks of one rejoin received so far.
pub(super) struct RejoinBuf {
    register: msg::Register,
    next_chunk: u32,
    entries: Vec<RejoinEntry>,
    last_seen_ms: u64,
}

/// Where the rebuild after a start stands.
#[derive(Default)]
pub(super) struct Rebuild {
    /// The first `now_ms` the core saw.
    started_ms: Option<u64>,
    /// A service that was never a member registered.
    fresh: bool,
    /// Services that rejoined with an index from an earlier run.
    rejoined: u64,
}

impl MetaCore {
    pub(super) fn rebuild_started(&mut self, now_ms: u64) {
        self.rebuild.started_ms.get_or_insert(now_ms);
    }

    /// Whether the directory may still be missing objects that local services hold.
    pub fn rebuilding(&self, now_ms: u64) -> bool {
        let Some(started) = self.rebuild.started_ms else {
            return true;
        };
        now_ms < started.saturating_add(self.params.rebuild_window_ms)
            && !(self.rebuild.fresh && self.rebuild.rejoined == 0)
    }

    pub(super) fn note_fresh_registration(&mut self) {
        self.rebuild.fresh = true;
    }

    /// `Busy` for a request whose answer depends on keys not known yet, while rebuilding.
    pub(super) fn busy_while_rebuilding(&self, now_ms: u64, req: &Request) -> Option<Reply> {
        if !self.rebuilding(now_ms) {
            return None;
        }
        let unknown = |keys: &[String]| {
            keys.iter()
                .any(|k| !self.keys.contains_key(&self.objects, k))
        };
        let busy = match req {
            Request::Lookup { keys }
            | Request::Query { keys }
            | Request::Exist { keys }
            | Request::Remove { keys } => unknown(keys),
            // Objects of services that have not rejoined yet would survive it.
            Request::RemoveAll => true,
            _ => false,
        };
        busy.then(busy_reply)
    }

    /// Forget rejoins silent for a member timeout (their service died or gave up).
    pub(super) fn expire_rejoins(&mut self, now_ms: u64) {
        let timeout = self.params.member_timeout_ms;
        self.rejoins.retain(|previous, b| {
            let keep = now_ms - b.last_seen_ms <= timeout;
            if !keep {
                warn!(
                    previous,
                    chunks = b.next_chunk,
                    "rejoin abandoned mid-way: forgotten"
                );
            }
            keep
        });
    }

    /// One chunk of a rejoin.
    pub(super) fn rejoin(&mut self, now_ms: u64, j: Rejoin) -> Reply {
        if let Err(reply) = check_segments(&j.register) {
            return reply;
        }
        if j.entries.len() > msg::INDEX_CHANGES_MAX {
            return error_reply(
                Code::InvalidParam,
                "a rejoin chunk carries too many entries",
            );
        }
        if j.chunk == 0 {
            self.rejoins.remove(&j.previous);
            if self.rejoins.len() >= REJOINS_MAX {
                return Reply::Busy {
                    retry_ms: self.params.heartbeat_ms,
                    message: format!("{REJOINS_MAX} services are rejoining: try again"),
                };
            }
            self.rejoins.insert(
                j.previous,
                RejoinBuf {
                    register: j.register.clone(),
                    next_chunk: 0,
                    entries: Vec::new(),
                    last_seen_ms: now_ms,
                },
            );
        }
        let Some(buf) = self.rejoins.get_mut(&j.previous) else {
            return error_reply(Code::UnmatchedState, "rejoin chunk without its first chunk");
        };
        // Entries one service may hold: its index's own bound.
        let bound: u64 = j
            .register
            .segments
            .iter()
            .map(|s| (s.capacity / mmc_hal::alloc::MIN_UNIT_BYTES).clamp(1, 1 << 20))
            .sum();
        if buf.next_chunk != j.chunk
            || buf.register != j.register
            || (buf.entries.len() + j.entries.len()) as u64 > bound
        {
            self.rejoins.remove(&j.previous);
            return error_reply(
                Code::UnmatchedState,
                "rejoin chunk out of order, of another registration, or over the pools' bound",
            );
        }
        buf.entries.extend(j.entries);
        buf.next_chunk += 1;
        buf.last_seen_ms = now_ms;
        if !j.last {
            return Reply::Ack { code: 0 };
        }
        let buf = self.rejoins.remove(&j.previous).expect("looked up above");
        self.finish_rejoin(now_ms, buf.register, j.previous, buf.entries)
    }

    fn finish_rejoin(
        &mut self,
        now_ms: u64,
        mut r: msg::Register,
        previous: u64,
        mut entries: Vec<RejoinEntry>,
    ) -> Reply {
        let first_of_run = (self.params.epoch << super::INCARNATION_EPOCH_SHIFT) + 1;
        let ours = previous >= first_of_run;
        // Keep the rank, unless another service holds it now.
        if let Some(rank) = r.rank {
            let held = self.members.get(&rank).or_else(|| self.paused.get(&rank));
            if held.is_some_and(|m| m.host != r.host || m.data_endpoint != r.data_endpoint) {
                info!(
                    rank,
                    "rejoining service's rank is held by another: a new rank"
                );
                r.rank = None;
            }
        }
        let pools = r.segments.len();
        let mut places: Vec<Option<Space>> = (0..entries.len()).map(|_| None).collect();
        let spaces = if ours {
            warn!(
                previous,
                entries = entries.len(),
                "a service this run dropped registers again: its index is stale, reset"
            );
            match fresh_spaces(&r) {
                Ok(spaces) => spaces,
                Err(reply) => return reply,
            }
        } else {
            entries.sort_by_key(|e| (e.pool, e.offset));
            let mut spaces = Vec::with_capacity(pools);
            for (p, spec) in r.segments.iter().enumerate() {
                let at: Vec<usize> = (0..entries.len())
                    .filter(|&i| entries[i].pool as usize == p)
                    .collect();
                let ranges: Vec<(u64, u64)> = at
                    .iter()
                    .map(|&i| (entries[i].offset, entries[i].len))
                    .collect();
                let (space, outcomes) = match SpaceAllocator::rebuild(spec.capacity, &ranges) {
                    Ok(rebuilt) => rebuilt,
                    Err(e) => return error_reply(Code::InvalidParam, &e.to_string()),
                };
                for (i, outcome) in at.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(place) => places[i] = Some(place),
                        Err(why) => warn!(key = %entries[i].key, %why, "rejoin entry refused"),
                    }
                }
                spaces.push((spec.media, space));
            }
            spaces
        };
        let (rank, incarnation, ids) = self.admit(now_ms, r, spaces);
        let mut kept = 0u64;
        let mut refused = 0u64;
        if ours {
            self.members
                .get_mut(&rank)
                .expect("just admitted")
                .index
                .reset();
            refused = entries.len() as u64;
        } else {
            let max_version = entries
                .iter()
                .map(|e| e.version)
                .filter(|v| *v <= VERSION_MAX)
                .max()
                .unwrap_or(0);
            self.next_oid = self.next_oid.max(max_version.saturating_add(1));
            for (e, place) in entries.into_iter().zip(places) {
                let outcome = match place {
                    Some(space) => self.rebuild_entry(rank, &ids, &e, space),
                    None => Err("its place is invalid or overlaps another"),
                };
                match outcome {
                    Ok(()) => kept += 1,
                    Err(why) => {
                        refused += 1;
                        debug!(key = %e.key, why, "rejoin entry refused");
                        if let Some(&segment) = ids.get(e.pool as usize) {
                            self.index_record(rank, &e.key, || IndexChange::Removed {
                                key: e.key.clone(),
                                segment,
                                offset: e.offset,
                            });
                        }
                    }
                }
            }
            self.rebuild.rejoined += 1;
            self.stats.rejoins += 1;
        }
        self.stats.rebuilt_entries += kept;
        self.stats.rebuild_refused += refused;
        info!(
            rank,
            incarnation,
            previous,
            kept,
            refused,
            objects = self.objects.len(),
            "local service rejoined: directory rebuilt from its index"
        );
        Reply::Registered {
            rank,
            incarnation,
            segments: ids,
            heartbeat_ms: self.params.heartbeat_ms,
        }
    }

    /// Make entry `e`, rebuilt at `space` in segment `ids[e.pool]` of `rank`, an object or a
    /// replica of one; on a refusal its space is freed.
    fn rebuild_entry(
        &mut self,
        rank: u32,
        ids: &[u32],
        e: &RejoinEntry,
        space: Space,
    ) -> Result<(), &'static str> {
        let segment = ids[e.pool as usize];
        let outcome = self.place_entry(rank, segment, e, space);
        outcome.map_err(|(space, why)| {
            let seg = self
                .segments
                .get_mut(&segment)
                .expect("a live member's segment");
            seg.space.free(space);
            why
        })
    }

    fn place_entry(
        &mut self,
        rank: u32,
        segment: u32,
        e: &RejoinEntry,
        space: Space,
    ) -> Result<(), (Space, &'static str)> {
        if check_key(&e.key).is_err() {
            return Err((space, "empty or over-long key"));
        }
        if e.version > VERSION_MAX {
            return Err((space, "a version past the ids any run hands out"));
        }
        let media = self.segments[&segment].media;
        let replica = msg::Replica {
            rank,
            segment,
            media,
            offset: space.offset,
            len: e.len,
        };
        debug_assert_eq!(space.offset, e.offset);
        if let Some(oid) = self.keys.get(&self.objects, &e.key) {
            let obj = &self.objects[&oid];
            if obj.state != State::Committed {
                return Err((space, "a put of the key is pending"));
            }
            if obj.version > e.version {
                return Err((space, "a later version of the key is known"));
            }
            if obj.version == e.version {
                if obj.size != e.len || obj.crc != e.crc {
                    return Err((space, "another object under the same version"));
                }
                if obj.replicas.iter().any(|(r, _)| r.rank == rank) {
                    return Err((space, "the key twice in one index"));
                }
                if obj.replicas.len() >= msg::REPLICAS_MAX {
                    return Err((space, "the object has every replica it may have"));
                }
                let (recency, leased) = (obj.queued, obj.leases > 0);
                let reserved = space.reserved;
                let obj = self.objects.get_mut(&oid).expect("looked up above");
                obj.replicas.push((replica, space));
                obj.want = obj.want.max(e.want).max(obj.replicas.len() as u16);
                obj.want = obj.want.min(msg::REPLICAS_MAX as u16);
                // Visible: into the new segment's LRU too.
                let seg = self
                    .segments
                    .get_mut(&segment)
                    .expect("a live member's segment");
                let fresh = seg.index.lru.insert((recency, oid));
                assert!(fresh, "a new replica's segment did not hold the object");
                if leased {
                    self.hold_segment(segment, super::held::Hold::Leased, reserved, true);
                }
                self.count_replica(segment);
                self.note_replicas(oid);
                return Ok(());
            }
            debug!(key = %e.key, "a later version of the key replaces the one known");
            self.unlink(oid);
        }
        let oid = self.next_oid;
        self.next_oid += 1;
        let recency = self.bump_recency();
        self.objects.insert_new(
            oid,
            Object {
                key: e.key.as_str().into(),
                size: e.len,
                replicas: smallvec::smallvec![(replica, space)],
                state: State::Committed,
                recency: AtomicU64::new(recency),
                queued: 0,
                leases: 0,
                removed: false,
                client_id: 0,
                version: e.version,
                crc: e.crc,
                want: e.want.clamp(1, msg::REPLICAS_MAX as u16),
            },
        );
        let linked = self.keys.link(&self.objects, oid);
        assert!(linked, "the key was free or unlinked above");
        self.lru_insert(oid);
        self.count_replica(segment);
        // Fewer replicas reported than the put asked for: repair adds the rest.
        self.note_replicas(oid);
        Ok(())
    }

    fn count_replica(&mut self, segment: u32) {
        let seg = self
            .segments
            .get_mut(&segment)
            .expect("a live member's segment");
        seg.objects = seg.objects.checked_add(1).expect("object count overflow");
    }
}

/// The answer to a request that waits for the directory rebuild.
pub(super) fn busy_reply() -> Reply {
    debug!("request waits for the directory rebuild");
    Reply::Busy {
        retry_ms: BUSY_RETRY_MS,
        message: "the meta service restarted and is rebuilding its directory from the local \
                  services"
            .into(),
    }
}

/// The rejoins in progress, by the previous incarnation that names each.
pub(super) type Rejoins = BTreeMap<u64, RejoinBuf>;
