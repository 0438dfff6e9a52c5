//! The meta service's sans-IO core: the key directory, segments, placement, two-phase puts, read
//! leases, watermark eviction and membership. Messages and `now_ms` in, replies out; no sockets, no
//! clocks, deterministic. The TCP driver lives in `mmc-meta-service` (`server.rs`).

mod demote;
mod directory;
mod held;
mod index;
mod invariants;
mod membership;
mod placement;
mod read;
mod rebuild;
mod repair;
mod slab;
mod stats;
mod table;
#[cfg(test)]
mod tests;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;

use table::{Keys, Objects};

pub use index::{IndexOutboxView, INDEX_OUTBOX_MAX};
pub use rebuild::{BUSY_RETRY_MS, REJOINS_MAX};
pub use repair::REPAIRS_INFLIGHT_MAX;
pub use slab::{SLOTS_GRANT_MAX, SLOTS_PER_CLIENT_MAX, SLOT_GRANT_BYTES_MAX, SLOT_SIZE_MAX};
pub use stats::{MetaStats, TierHeld};
pub use view::CommittedView;

use mmc_hal::{Space, SpaceAllocator};
use tracing::{debug, info, warn};

use crate::error::Code;
use crate::msg::{self, Reply, Request, ServiceAddr};

/// Incarnations of one meta core run are `(epoch << INCARNATION_EPOCH_SHIFT) + n`, n = 1, 2, ...
///
/// With `epoch` in milliseconds, a later run (started at least 1 ms later by the wall clock) starts
/// above every incarnation an earlier run handed out, as long as the earlier run registered fewer
/// than 2^16 local services per millisecond of its life on average. 64 - 16 = 48 bits of
/// milliseconds last until the year 10889.
pub const INCARNATION_EPOCH_SHIFT: u32 = 16;

/// Largest `epoch` the incarnation scheme can hold without overflowing a `u64`.
pub const EPOCH_MAX: u64 = (u64::MAX >> INCARNATION_EPOCH_SHIFT) - 1;

/// Default of [`MetaParams::rebuild_window_ms`]: two default heartbeat periods.
pub const REBUILD_WINDOW_MS_DEFAULT: u64 = 2_000;

/// Default of [`MetaParams::member_grace_ms`]: four default member timeouts.
pub const MEMBER_GRACE_MS_DEFAULT: u64 = 20_000;

/// Tunables of the core, in milliseconds, percent or counts.
#[derive(Clone, Debug)]
pub struct MetaParams {
    /// When this run of the meta service started, in milliseconds since the UNIX epoch, set by the
    /// driver from the wall clock (0 in tests). Incarnations start at
    /// `(epoch << INCARNATION_EPOCH_SHIFT) + 1`, so a local service that registers again after a
    /// meta restart never gets an incarnation an earlier run handed out, and a stale client can
    /// tell the two apart. (A wall clock stepped backwards across a restart can break this.)
    /// Segment ids are *not* unique across restarts: they restart at 1 in every run; a segment is
    /// identified by (rank, incarnation, segment).
    pub epoch: u64,
    pub lease_ms: u64,
    pub pending_timeout_ms: u64,
    /// A member silent this long is *paused*: out of placement, its replicas not offered to
    /// readers, but its objects kept (see `membership.rs`).
    pub member_timeout_ms: u64,
    /// A paused member that heartbeats again (same incarnation) within this long after its
    /// timeout is re-admitted with its objects; past it, its process is taken for gone and its
    /// objects are dropped. 0 = drop at the timeout (the behaviour before pauses existed).
    pub member_grace_ms: u64,
    /// A gap longer than this between two calls into the core (`handle` or `tick`) is the meta
    /// service's own stall (a SIGSTOP, a swapped-out process): it is not counted against the
    /// members' heartbeats. Must exceed the driver's tick period.
    pub meta_stall_ms: u64,
    pub heartbeat_ms: u64,
    /// After a start, how long requests that depend on keys the directory does not know yet wait
    /// (`Busy`) for the local services to rejoin with their indexes (see `rebuild.rs`). 0 = no
    /// wait.
    pub rebuild_window_ms: u64,
    pub evict_threshold_high: u16,
    pub evict_threshold_low: u16,
    /// Most index changes one heartbeat reply carries (at most [`msg::INDEX_CHANGES_MAX`]).
    pub index_batch_max: usize,
    /// Most unacknowledged index changes kept per member; past it, the service resyncs.
    pub index_outbox_max: usize,
    /// `replica_policy = best_effort`: a put asking for more replicas than there are live services
    /// with its media stores one per live service (at least one) instead of failing with -3013;
    /// repair adds the others as services come back.
    pub best_effort_replicas: bool,
}

impl Default for MetaParams {
    fn default() -> Self {
        MetaParams {
            epoch: 0,
            lease_ms: 10_000,
            pending_timeout_ms: 30_000,
            member_timeout_ms: 5_000,
            member_grace_ms: MEMBER_GRACE_MS_DEFAULT,
            meta_stall_ms: 2_500,
            heartbeat_ms: 1_000,
            rebuild_window_ms: REBUILD_WINDOW_MS_DEFAULT,
            evict_threshold_high: 90,
            evict_threshold_low: 80,
            index_batch_max: msg::INDEX_CHANGES_MAX,
            index_outbox_max: INDEX_OUTBOX_MAX,
            best_effort_replicas: false,
        }
    }
}

struct Member {
    incarnation: u64,
    create_id: i32,
    host: String,
    data_endpoint: String,
    shm_endpoint: String,
    segments: Vec<u32>,
    last_seen_ms: u64,
    /// Index changes for this incarnation's service, not yet acknowledged.
    index: index::Outbox,
}

struct Segment {
    rank: u32,
    media: u16,
    space: SpaceAllocator,
    objects: u64,
    /// Its LRU and its bytes by holder (see `held.rs`).
    index: held::SegIndex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Allocated, being written, invisible; holds its key so a second put of it is refused.
    Pending { deadline_ms: u64 },
    /// Visible (unless `removed`) and immutable.
    Committed,
}

struct Object {
    key: Box<str>,
    size: u64,
    /// One replica inline (the common case): no heap block per object.
    replicas: Replicas,
    state: State,
    /// When it was last used (a put's commit, a lookup, a query, an exist): written by readers
    /// under a shared lock, so atomic. Its segments' LRUs hold it at `queued`, which lags behind
    /// after reads; eviction moves a lagging entry to its true recency when it reaches the front
    /// (see `held.rs`), so a read costs one store instead of two B-tree updates.
    recency: AtomicU64,
    /// Where its LRU entries are (<= `recency`), while visible.
    queued: u64,
    leases: u32,
    /// Unlinked from the directory (removed or evicted) but still leased: freed at the last release.
    removed: bool,
    /// The writer's session while pending (0 = unknown), for `client_gone`.
    client_id: u64,
    /// Orders puts of one key across meta restarts (the put's token, which grows with the run's
    /// epoch; a rebuilt object keeps the version it was put with).
    version: u64,
    /// CRC-32C of the bytes, from the writer's commit (0 while pending).
    crc: u32,
    /// Replicas its put asked for: repair adds replicas (on live services with room) while it
    /// has fewer.
    want: u16,
}

/// An object's replicas with their spaces.
type Replicas = smallvec::SmallVec<[(msg::Replica, Space); 1]>;

/// The meta service's whole state.
pub struct MetaCore {
    params: MetaParams,
    /// Live members: heard from within `member_timeout_ms`.
    members: BTreeMap<u32, Member>,
    /// Paused members: silent past their timeout, within their grace (ranks disjoint from
    /// `members`).
    paused: BTreeMap<u32, Member>,
    /// The live members' segments: all that placement, watermarks and eviction see.
    segments: BTreeMap<u32, Segment>,
    /// The paused members' segments, with their allocators, until they return or are dropped.
    paused_segments: BTreeMap<u32, Segment>,
    next_segment: u32,
    next_incarnation: u64,
    keys: Keys,
    objects: Objects,
    next_oid: u64,
    next_recency: AtomicU64,
    leases: HashMap<u64, (u64, u64)>,
    lease_expiry: BTreeSet<(u64, u64)>,
    pending: BTreeSet<(u64, u64)>,
    next_lease: u64,
    evicted_total: u64,
    /// Whether HBM is being demoted now (past its high watermark, until its low one).
    demoting: bool,
    /// The latest `now_ms` seen: the driver's clock never runs backwards.
    now_ms_last: u64,
    /// When the core last woke from its own stall: peers may have given up on it and closed
    /// their connections, so closes seen soon after say nothing about their health.
    stall_end_ms: Option<u64>,
    /// Pending puts of writers that are gone: unlinked (`removed`), space held until their
    /// deadline.
    abandoned: usize,
    /// Repairs in flight, the objects that may lack replicas, the scan's cursor.
    repairs: repair::Repairs,
    under: BTreeSet<u64>,
    repair_cursor: u64,
    /// Rejoins whose last chunk has not arrived yet.
    rejoins: rebuild::Rejoins,
    rebuild: rebuild::Rebuild,
    /// Counts for `/metrics`.
    stats: MetaStats,
    /// Space leased to clients ahead of their puts (see `slab.rs`).
    slab: slab::Slab,
}

impl MetaCore {
    /// A core with no members; `params` come from a validated config (asserted here).
    pub fn new(params: MetaParams) -> MetaCore {
        assert!(params.evict_threshold_low < params.evict_threshold_high);
        assert!(params.evict_threshold_high <= 100);
        assert!(
            params.lease_ms > 0 && params.pending_timeout_ms > 0 && params.member_timeout_ms > 0
        );
        assert!(
            params.meta_stall_ms > 0,
            "a stall is a gap of at least 1 ms"
        );
        assert!(
            params.index_batch_max > 0
                && params.index_batch_max <= msg::INDEX_CHANGES_MAX
                && params.index_batch_max <= params.index_outbox_max,
            "index batches of 1 to {} changes, within the outbox",
            msg::INDEX_CHANGES_MAX
        );
        assert!(
            params.epoch <= EPOCH_MAX,
            "epoch {} ms is past the incarnation scheme's range",
            params.epoch
        );
        let next_incarnation = (params.epoch << INCARNATION_EPOCH_SHIFT) + 1;
        info!(
            epoch = params.epoch,
            first_incarnation = next_incarnation,
            "meta core started"
        );
        MetaCore {
            params,
            members: BTreeMap::new(),
            paused: BTreeMap::new(),
            segments: BTreeMap::new(),
            paused_segments: BTreeMap::new(),
            next_segment: 1,
            next_incarnation,
            keys: Keys::new(),
            objects: Objects::new(),
            // Put tokens and lease ids follow the same scheme: a commit or release left over from
            // an earlier run never names an object or lease of this one.
            next_oid: next_incarnation,
            next_recency: AtomicU64::new(1),
            leases: HashMap::new(),
            lease_expiry: BTreeSet::new(),
            pending: BTreeSet::new(),
            next_lease: next_incarnation,
            evicted_total: 0,
            demoting: false,
            now_ms_last: 0,
            stall_end_ms: None,
            abandoned: 0,
            repairs: repair::Repairs::new(),
            under: BTreeSet::new(),
            repair_cursor: 0,
            rejoins: rebuild::Rejoins::new(),
            rebuild: rebuild::Rebuild::default(),
            stats: MetaStats::default(),
            slab: slab::Slab::default(),
        }
    }

    pub fn params(&self) -> &MetaParams {
        &self.params
    }

    /// Handle one request at time `now_ms`. One-way requests return a reply the driver drops.
    pub fn handle(&mut self, now_ms: u64, req: Request) -> Reply {
        self.tick(now_ms);
        if let Some(busy) = self.busy_while_rebuilding(now_ms, &req) {
            return busy;
        }
        match req {
            Request::Register(r) => {
                self.note_fresh_registration();
                self.register(now_ms, r)
            }
            Request::Rejoin(j) => self.rejoin(now_ms, j),
            Request::Heartbeat {
                rank,
                incarnation,
                index_seq,
                index_resync,
                repaired,
            } => self.heartbeat(
                now_ms,
                rank,
                incarnation,
                index_seq,
                index_resync,
                &repaired,
            ),
            Request::Unregister { rank, incarnation } => self.unregister(rank, incarnation),
            Request::Alloc(a) => self.alloc(now_ms, a),
            Request::Commit { items } => self.commit(items),
            Request::Lookup { keys } => self.lookup(now_ms, keys),
            Request::Release { leases } => {
                for id in leases {
                    self.release(id);
                }
                Reply::Ack { code: 0 }
            }
            Request::Query { keys } => self.query(keys),
            Request::Exist { keys } => self.exist(keys),
            Request::Remove { keys } => self.remove(keys),
            Request::RemoveAll => self.remove_all(),
            Request::Status => self.status(),
            Request::Suspect { rank, incarnation } => {
                self.suspect(rank, incarnation, "a client could not reach it");
                Reply::Ack { code: 0 }
            }
            Request::LeaseSlots(r) => self.lease_slots(now_ms, r),
            Request::PutLeased { client_id, items } => self.put_leased(client_id, items),
        }
    }

    /// Time passes: expire leases, reclaim pending puts, pause silent members and drop those
    /// past their grace (a gap that is the core's own stall excepted).
    pub fn tick(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.now_ms_last,
            "time ran backwards: {now_ms} ms after {} ms",
            self.now_ms_last
        );
        let gap_ms = now_ms - self.now_ms_last;
        self.now_ms_last = now_ms;
        self.rebuild_started(now_ms);
        self.expire_rejoins(now_ms);
        self.expire_repairs(now_ms);
        while let Some(&(until, id)) = self.lease_expiry.first() {
            if until > now_ms {
                break;
            }
            debug!(lease = id, "read lease expired");
            self.release(id);
        }
        while let Some(&(deadline, oid)) = self.pending.first() {
            if deadline > now_ms {
                break;
            }
            let obj = &self.objects[&oid];
            assert_eq!(
                obj.state,
                State::Pending {
                    deadline_ms: deadline
                }
            );
            if !obj.removed {
                warn!(key = %obj.key, "put was never committed: reclaiming its space");
                let linked = self.keys.remove(&self.objects, &obj.key);
                assert_eq!(linked, Some(oid), "a pending object holds its key");
            }
            // Also drops the pending entry.
            self.free_object(oid);
        }
        self.tick_members(gap_ms, now_ms);
    }

    /// Every meta connection that carried `client_id` has closed: its writer is gone, so the keys
    /// of its pending puts are free again now rather than at `pending_timeout_ms` (a late commit
    /// of one answers as for any reclaimed put). Their space stays held until the pending
    /// deadline: bytes the writer sent before it died may still be on their way to a local
    /// service (queued in a socket, or behind a frozen service), and must not land on an object
    /// placed there since. Id 0 (unknown) is ignored. Returns how many puts were abandoned.
    /// Costs one pass over the pending puts.
    pub fn client_gone(&mut self, now_ms: u64, client_id: u64) -> usize {
        if client_id == 0 {
            return 0;
        }
        self.tick(now_ms);
        let gone: Vec<u64> = self
            .pending
            .iter()
            .map(|&(_, oid)| oid)
            .filter(|oid| self.objects[oid].client_id == client_id && !self.objects[oid].removed)
            .collect();
        for &oid in &gone {
            let key = &self.objects[&oid].key;
            warn!(key = %key, client_id, "writer gone: its key is free again, its space held until the pending deadline");
            let linked = self.keys.remove(&self.objects, key);
            assert_eq!(linked, Some(oid), "a pending object holds its key");
            self.objects.get_mut(&oid).expect("listed above").removed = true;
            self.abandoned += 1;
        }
        gone.len()
    }

    fn register(&mut self, now_ms: u64, r: msg::Register) -> Reply {
        let spaces = match fresh_spaces(&r) {
            Ok(spaces) => spaces,
            Err(reply) => return reply,
        };
        let (rank, incarnation, segments) = self.admit(now_ms, r, spaces);
        Reply::Registered {
            rank,
            incarnation,
            segments,
            heartbeat_ms: self.params.heartbeat_ms,
        }
    }

    /// Make `r` a live member with one segment per `(media, allocator)` (checked by
    /// [`fresh_spaces`] or rebuilt); returns its rank, new incarnation and segment ids. A paused
    /// member at the same address, and a member holding the requested rank, are dropped first.
    fn admit(
        &mut self,
        now_ms: u64,
        r: msg::Register,
        spaces: Vec<(u16, SpaceAllocator)>,
    ) -> (u32, u64, Vec<u32>) {
        assert_eq!(spaces.len(), r.segments.len(), "one allocator per segment");
        self.drop_paused_at(&r.host, &r.data_endpoint);
        let rank = match r.rank {
            Some(rank) => {
                if self.is_member(rank) {
                    info!(
                        rank,
                        "rank re-registered: the previous incarnation's objects are dropped"
                    );
                    self.drop_member(rank);
                }
                rank
            }
            None => (0..).find(|k| !self.is_member(*k)).unwrap_or(0),
        };
        assert!(!self.is_member(rank), "rank {rank} is free now");
        let mut ids = Vec::with_capacity(spaces.len());
        for (media, space) in spaces {
            let id = self.next_segment;
            self.next_segment = id.checked_add(1).expect("segment ids exhausted");
            let segment = Segment {
                rank,
                media,
                space,
                objects: 0,
                index: held::SegIndex::default(),
            };
            let previous = self.segments.insert(id, segment);
            assert!(previous.is_none(), "segment id {id} handed out twice");
            ids.push(id);
        }
        let incarnation = self.next_incarnation;
        self.next_incarnation = incarnation.checked_add(1).expect("incarnations exhausted");
        info!(rank, incarnation, create_id = r.create_id, host = %r.host, endpoint = %r.data_endpoint,
            segments = ?r.segments, "local service registered");
        self.members.insert(
            rank,
            Member {
                incarnation,
                create_id: r.create_id,
                host: r.host,
                data_endpoint: r.data_endpoint,
                shm_endpoint: r.shm_endpoint,
                segments: ids.clone(),
                last_seen_ms: now_ms,
                index: index::Outbox::new(),
            },
        );
        (rank, incarnation, ids)
    }

    fn service_addrs(&self, ranks: impl Iterator<Item = u32>) -> Vec<ServiceAddr> {
        let mut seen: Vec<u32> = ranks.collect();
        seen.sort_unstable();
        seen.dedup();
        seen.into_iter()
            .filter_map(|rank| {
                self.members.get(&rank).map(|m| ServiceAddr {
                    rank,
                    incarnation: m.incarnation,
                    host: m.host.clone(),
                    data_endpoint: m.data_endpoint.clone(),
                    shm_endpoint: m.shm_endpoint.clone(),
                })
            })
            .collect()
    }

    fn status(&self) -> Reply {
        // Paused members' segments are listed, not alive.
        let segments = self
            .segments
            .iter()
            .chain(&self.paused_segments)
            .map(|(id, s)| {
                let m = self.members.get(&s.rank);
                let owner = m.or_else(|| self.paused.get(&s.rank));
                msg::SegmentStatus {
                    segment: *id,
                    rank: s.rank,
                    create_id: owner.map(|m| m.create_id).unwrap_or(0),
                    media: s.media,
                    capacity: s.space.capacity_bytes(),
                    used: s.space.used_bytes(),
                    objects: s.objects,
                    alive: m.is_some(),
                    host: owner.map(|m| m.host.clone()).unwrap_or_default(),
                    data_endpoint: owner.map(|m| m.data_endpoint.clone()).unwrap_or_default(),
                }
            })
            .collect();
        // Every pending object holds its key (asserted by `check_invariants`), so this never
        // underflows; a bug that breaks it crashes here rather than report ~2^64 objects.
        let objects = self
            .keys
            .len()
            .checked_sub(self.pending.len() - self.abandoned)
            .expect("more pending puts than keys: a pending entry outlived its object");
        Reply::Status(msg::Status {
            segments,
            objects: objects as u64,
            pending: self.pending.len() as u64,
            leases: self.leases.len() as u64,
            evicted_total: self.evicted_total,
            evict_threshold_high: self.params.evict_threshold_high,
            evict_threshold_low: self.params.evict_threshold_low,
        })
    }
}

/// Check a registration's segments and make an empty allocator for each. Nothing changes on a
/// refusal: no half-registered segments, no dropped predecessor.
fn check_segments(r: &msg::Register) -> Result<(), Reply> {
    if r.segments.is_empty() || r.segments.len() > 4 {
        return Err(error_reply(
            Code::InvalidParam,
            "a local service registers 1 to 4 segments",
        ));
    }
    for s in &r.segments {
        if s.capacity == 0 || !matches!(s.media, msg::MEDIA_HBM | msg::MEDIA_DRAM) {
            return Err(error_reply(
                Code::InvalidParam,
                "segment media must be HBM or DRAM with capacity > 0",
            ));
        }
    }
    Ok(())
}

/// An empty allocator for each of a registration's segments, checked.
fn fresh_spaces(r: &msg::Register) -> Result<Vec<(u16, SpaceAllocator)>, Reply> {
    check_segments(r)?;
    r.segments
        .iter()
        .map(|s| match SpaceAllocator::new(s.capacity) {
            Ok(space) => Ok((s.media, space)),
            Err(e) => Err(error_reply(Code::InvalidParam, &e.to_string())),
        })
        .collect()
}

fn error_reply(code: Code, message: &str) -> Reply {
    warn!(code = code.as_i32(), message, "request refused");
    Reply::Error {
        code: code.as_i32(),
        message: message.to_string(),
    }
}

/// The per-key validity check of every keyed request.
fn check_key(key: &str) -> Result<(), Code> {
    if key.is_empty() || key.len() > msg::KEY_BYTES_MAX {
        Err(Code::InvalidParam)
    } else {
        Ok(())
    }
}
