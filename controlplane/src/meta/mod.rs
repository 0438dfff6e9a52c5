//! The meta service's sans-IO core: the key directory, segments, placement, two-phase puts, read
//! leases, watermark eviction and membership. Messages and `now_ms` in, replies out; no sockets, no
//! clocks, deterministic. The TCP driver lives in [`crate::server`].

mod directory;
mod placement;
#[cfg(test)]
mod tests;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use view::CommittedView;

use mmc_hal::{Space, SpaceAllocator};
use tracing::{debug, info, warn};

use crate::error::Code;
use crate::msg::{self, Reply, Request, ServiceAddr};

/// Tunables of the core, all in milliseconds or percent.
#[derive(Clone, Debug)]
pub struct MetaParams {
    pub lease_ms: u64,
    pub pending_timeout_ms: u64,
    pub member_timeout_ms: u64,
    pub heartbeat_ms: u64,
    pub evict_threshold_high: u16,
    pub evict_threshold_low: u16,
}

impl Default for MetaParams {
    fn default() -> Self {
        MetaParams {
            lease_ms: 10_000,
            pending_timeout_ms: 30_000,
            member_timeout_ms: 5_000,
            heartbeat_ms: 1_000,
            evict_threshold_high: 90,
            evict_threshold_low: 80,
        }
    }
}

impl MetaParams {
    pub fn from_config(c: &crate::config::MetaConfig) -> MetaParams {
        MetaParams {
            lease_ms: c.lease_ms,
            pending_timeout_ms: c.pending_timeout_ms,
            member_timeout_ms: c.member_timeout_ms,
            heartbeat_ms: (c.member_timeout_ms / 5).clamp(50, 1_000),
            evict_threshold_high: c.evict_threshold_high,
            evict_threshold_low: c.evict_threshold_low,
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
}

struct Segment {
    rank: u32,
    media: u16,
    space: SpaceAllocator,
    objects: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Pending { deadline_ms: u64 },
    Committed,
}

struct Object {
    key: String,
    size: u64,
    replicas: Vec<(msg::Replica, Space)>,
    state: State,
    /// Position in the LRU index while visible and committed.
    recency: u64,
    leases: u32,
    /// Unlinked from the directory (removed or evicted) but still leased: freed at the last release.
    removed: bool,
}

/// The meta service's whole state.
pub struct MetaCore {
    params: MetaParams,
    members: BTreeMap<u32, Member>,
    segments: BTreeMap<u32, Segment>,
    next_segment: u32,
    next_incarnation: u64,
    keys: HashMap<String, u64>,
    objects: HashMap<u64, Object>,
    next_oid: u64,
    lru: BTreeMap<u64, u64>,
    next_recency: u64,
    leases: HashMap<u64, (u64, u64)>,
    lease_expiry: BTreeSet<(u64, u64)>,
    pending: BTreeSet<(u64, u64)>,
    next_lease: u64,
    evicted_total: u64,
}

impl MetaCore {
    pub fn new(params: MetaParams) -> MetaCore {
        assert!(params.evict_threshold_low < params.evict_threshold_high);
        assert!(params.evict_threshold_high <= 100);
        assert!(
            params.lease_ms > 0 && params.pending_timeout_ms > 0 && params.member_timeout_ms > 0
        );
        MetaCore {
            params,
            members: BTreeMap::new(),
            segments: BTreeMap::new(),
            next_segment: 1,
            next_incarnation: 1,
            keys: HashMap::new(),
            objects: HashMap::new(),
            next_oid: 1,
            lru: BTreeMap::new(),
            next_recency: 1,
            leases: HashMap::new(),
            lease_expiry: BTreeSet::new(),
            pending: BTreeSet::new(),
            next_lease: 1,
            evicted_total: 0,
        }
    }

    pub fn params(&self) -> &MetaParams {
        &self.params
    }

    /// Handle one request at time `now_ms`. One-way requests return a reply the driver drops.
    pub fn handle(&mut self, now_ms: u64, req: Request) -> Reply {
        self.tick(now_ms);
        match req {
            Request::Register(r) => self.register(now_ms, r),
            Request::Heartbeat { rank, incarnation } => self.heartbeat(now_ms, rank, incarnation),
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
            Request::Status => self.status(),
        }
    }

    /// Time passes: expire leases, reclaim pending puts, declare silent members dead.
    pub fn tick(&mut self, now_ms: u64) {
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
            self.pending.pop_first();
            if let Some(obj) = self.objects.get(&oid) {
                warn!(key = %obj.key, "put was never committed: reclaiming its space");
                let key = obj.key.clone();
                self.keys.remove(&key);
                self.free_object(oid);
            }
        }
        let timeout = self.params.member_timeout_ms;
        let dead: Vec<u32> = self
            .members
            .iter()
            .filter(|(_, m)| now_ms.saturating_sub(m.last_seen_ms) > timeout)
            .map(|(r, _)| *r)
            .collect();
        for rank in dead {
            warn!(
                rank,
                timeout_ms = timeout,
                "local service missed its heartbeats: declared dead"
            );
            self.drop_member(rank);
        }
    }

    fn register(&mut self, now_ms: u64, r: msg::Register) -> Reply {
        if r.segments.is_empty() || r.segments.len() > 4 {
            return error_reply(
                Code::InvalidParam,
                "a local service registers 1 to 4 segments",
            );
        }
        for s in &r.segments {
            if s.capacity == 0 || !matches!(s.media, msg::MEDIA_HBM | msg::MEDIA_DRAM) {
                return error_reply(
                    Code::InvalidParam,
                    "segment media must be HBM or DRAM with capacity > 0",
                );
            }
        }
        let rank = match r.rank {
            Some(rank) => {
                if self.members.contains_key(&rank) {
                    info!(
                        rank,
                        "rank re-registered: the previous incarnation's objects are dropped"
                    );
                    self.drop_member(rank);
                }
                rank
            }
            None => (0..).find(|k| !self.members.contains_key(k)).unwrap_or(0),
        };
        let mut ids = Vec::with_capacity(r.segments.len());
        for s in &r.segments {
            let space = match SpaceAllocator::new(s.capacity) {
                Ok(space) => space,
                Err(e) => return error_reply(Code::InvalidParam, &e.to_string()),
            };
            let id = self.next_segment;
            self.next_segment += 1;
            self.segments.insert(
                id,
                Segment {
                    rank,
                    media: s.media,
                    space,
                    objects: 0,
                },
            );
            ids.push(id);
        }
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
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
            },
        );
        Reply::Registered {
            rank,
            incarnation,
            segments: ids,
            heartbeat_ms: self.params.heartbeat_ms,
        }
    }

    fn heartbeat(&mut self, now_ms: u64, rank: u32, incarnation: u64) -> Reply {
        match self.members.get_mut(&rank) {
            Some(m) if m.incarnation == incarnation => {
                m.last_seen_ms = now_ms;
                Reply::Ack { code: 0 }
            }
            _ => Reply::Ack {
                code: Code::LinkNotFound.as_i32(),
            },
        }
    }

    fn unregister(&mut self, rank: u32, incarnation: u64) -> Reply {
        match self.members.get(&rank) {
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

    /// Remove a member and its segments; objects left with no replica are dropped.
    fn drop_member(&mut self, rank: u32) {
        let Some(member) = self.members.remove(&rank) else {
            return;
        };
        for seg in &member.segments {
            self.segments.remove(seg);
        }
        let affected: Vec<u64> = self
            .objects
            .iter()
            .filter(|(_, o)| o.replicas.iter().any(|(r, _)| r.rank == rank))
            .map(|(oid, _)| *oid)
            .collect();
        let mut lost = 0u64;
        for oid in affected {
            let obj = self.objects.get_mut(&oid).expect("listed above");
            obj.replicas.retain(|(r, _)| r.rank != rank);
            if obj.replicas.is_empty() {
                lost += 1;
                let key = obj.key.clone();
                let visible = !obj.removed;
                if visible && self.keys.get(&key) == Some(&oid) {
                    self.keys.remove(&key);
                }
                self.free_object(oid);
            }
        }
        if lost > 0 {
            warn!(rank, lost, "objects lost with their only replica");
        }
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
        let segments = self
            .segments
            .iter()
            .map(|(id, s)| {
                let m = self.members.get(&s.rank);
                msg::SegmentStatus {
                    segment: *id,
                    rank: s.rank,
                    create_id: m.map(|m| m.create_id).unwrap_or(0),
                    media: s.media,
                    capacity: s.space.capacity_bytes(),
                    used: s.space.used_bytes(),
                    objects: s.objects,
                    alive: m.is_some(),
                    host: m.map(|m| m.host.clone()).unwrap_or_default(),
                    data_endpoint: m.map(|m| m.data_endpoint.clone()).unwrap_or_default(),
                }
            })
            .collect();
        Reply::Status(msg::Status {
            segments,
            objects: self.keys.len() as u64 - self.pending.len() as u64,
            pending: self.pending.len() as u64,
            leases: self.leases.len() as u64,
            evicted_total: self.evicted_total,
            evict_threshold_high: self.params.evict_threshold_high,
            evict_threshold_low: self.params.evict_threshold_low,
        })
    }

    /// Check the invariants of DESIGN.md; used by tests and debug builds.
    pub fn check_invariants(&self) {
        let mut per_segment: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for obj in self.objects.values() {
            for (r, space) in &obj.replicas {
                assert!(
                    self.segments.contains_key(&r.segment),
                    "replica on a dead segment"
                );
                per_segment
                    .entry(r.segment)
                    .or_default()
                    .push((space.offset, space.reserved));
            }
            if let State::Committed = obj.state {
                if !obj.removed {
                    assert_eq!(
                        self.lru.get(&obj.recency).map(|o| &self.objects[o].key),
                        Some(&obj.key)
                    );
                }
            }
        }
        for (seg, ranges) in per_segment.iter_mut() {
            ranges.sort_unstable();
            for w in ranges.windows(2) {
                assert!(
                    w[0].0 + w[0].1 <= w[1].0,
                    "allocations overlap in segment {seg}"
                );
            }
            let used: u64 = ranges.iter().map(|r| r.1).sum();
            assert_eq!(
                used,
                self.segments[seg].space.used_bytes(),
                "segment {seg} used bytes"
            );
        }
        for (key, oid) in &self.keys {
            let obj = &self.objects[oid];
            assert_eq!(&obj.key, key);
            assert!(!obj.removed);
        }
        let leased: u64 = self.objects.values().map(|o| o.leases as u64).sum();
        assert_eq!(leased, self.leases.len() as u64);
    }
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
