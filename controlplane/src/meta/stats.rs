//! Counters the meta core keeps for the driver's `/metrics`, and the bytes of a tier by what
//! could free them (why eviction can or cannot make room).

use super::MetaCore;

/// Monotonic counts since this core started (read by the driver; never reset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaStats {
    /// Live members paused because their heartbeats stopped for `member_timeout_ms`.
    pub paused_missed_heartbeats: u64,
    /// Live members paused by a hint (their connection closed, a client's report).
    pub paused_by_hint: u64,
    /// Members dropped with their segments (dead, left, replaced, or past their grace).
    pub members_dropped: u64,
    /// Local services that rejoined this run with their index (directory rebuilds).
    pub rejoins: u64,
    /// Objects or replicas taken back into the directory from rejoins.
    pub rebuilt_entries: u64,
    /// Rejoin entries refused (stale, overlapping, or the service had been dropped this run).
    pub rebuild_refused: u64,
    /// Watermark evictions that stopped above the low watermark: everything left was leased or
    /// pending.
    pub evict_blocked_held: u64,
    /// Puts refused before any eviction: even with every evictable object gone there would be
    /// no room on enough services.
    pub refused_no_room: u64,
    /// Puts refused after eviction: the free space was fragmented.
    pub refused_fragmented: u64,
    /// Objects moved down from HBM to DRAM (see `demote.rs`).
    pub demoted: u64,
    /// Demotions given up (the copy failed, or the object was read or changed meanwhile); the
    /// object stayed on HBM and is tried again.
    pub demotions_abandoned: u64,
}

/// Bytes of one tier's live segments by what could free them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TierHeld {
    pub capacity: u64,
    pub free: u64,
    /// Committed, unleased: eviction can free them now.
    pub evictable: u64,
    /// Committed under a read lease: free (or evictable) once released.
    pub leased: u64,
    /// Pending puts and repairs in flight: never counted as room.
    pub pending: u64,
}

impl MetaCore {
    pub fn stats(&self) -> &MetaStats {
        &self.stats
    }

    /// The bytes of `media`'s live segments by what could free them (one pass over the objects:
    /// for scrapes, not for hot paths).
    pub fn tier_held(&self, media: u16) -> TierHeld {
        let mut t = TierHeld::default();
        for r in self.rooms(media) {
            t.free = t.free.saturating_add(r.free);
            t.evictable = t.evictable.saturating_add(r.evictable);
            t.leased = t.leased.saturating_add(r.leased);
            t.pending = t.pending.saturating_add(r.pending);
        }
        t.capacity = self.tier_usage(media).0;
        t
    }

    /// Live (not paused) local services.
    pub fn live_members(&self) -> usize {
        self.members.len()
    }

    /// Whether the core is still waiting for local services to rejoin after a start.
    pub fn rebuilding_now(&self) -> bool {
        self.rebuilding(self.now_ms_last)
    }
}
