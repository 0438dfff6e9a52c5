//! Placement of replicas, admission and eviction, per media tier.
//!
//! A put is admitted before anything is evicted: eviction runs only when the put can fit once
//! evictable objects (committed, unleased) are gone, on enough distinct services. A put that
//! cannot fit even then is refused at once and evicts nothing, so one oversized (or mutated)
//! request never wipes the cache.

use mmc_hal::Space;
use tracing::{debug, info, warn};

use super::{MetaCore, State};
use crate::error::Code;
use crate::msg::{self, AllocRequest, Replica};

/// Why a put got no space: the per-key code and whether waiting may help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: Code,
    /// Space held by read leases may come back and the object would fit then.
    pub retry: bool,
    /// Refused by admission: nothing was evicted or reserved.
    pub admission: bool,
}

impl Refusal {
    fn invalid() -> Refusal {
        Refusal {
            code: Code::InvalidParam,
            retry: false,
            admission: true,
        }
    }
}

/// Where the replicas of one put must go.
enum Wanted {
    /// These services, one replica each (preferred affinity).
    Ranks(Vec<u32>),
    /// This many distinct services, chosen by placement.
    Copies(usize),
}

impl Wanted {
    fn copies(&self) -> usize {
        match self {
            Wanted::Ranks(ranks) => ranks.len(),
            Wanted::Copies(n) => *n,
        }
    }
}

/// The verdict of admission, taken before anything is evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admission {
    /// Enough services have room now or once evictable objects are gone.
    Admit,
    /// Only once read leases give their objects back.
    Wait,
    /// Not even with every evictable and leased object gone.
    Never,
}

/// Bytes of one segment of a tier, by what could free them.
#[derive(Clone, Copy, Debug)]
pub(super) struct Room {
    segment: u32,
    rank: u32,
    pub(super) free: u64,
    /// Held by committed, visible, unleased objects: eviction can free them now.
    pub(super) evictable: u64,
    /// Held by committed objects under a read lease: free (or evictable) once released.
    pub(super) leased: u64,
    /// Held by pending puts: reported, never counted as room.
    pub(super) pending: u64,
}

impl Room {
    fn evict_room(&self) -> u64 {
        self.free.saturating_add(self.evictable)
    }

    fn release_room(&self) -> u64 {
        self.evict_room().saturating_add(self.leased)
    }
}

impl MetaCore {
    /// Objects evicted since this core started (the simulation checks that refused puts evict
    /// none).
    pub fn evicted_total(&self) -> u64 {
        self.evicted_total
    }

    /// Choose segments for every replica of one object and reserve space in them. A put that
    /// fits is placed as it is; one that needs room is admitted first, then evicts least recently
    /// used objects (to the low watermark when the tier passed its high one, then only from the
    /// segments that still lack room); one that cannot fit evicts nothing.
    pub(super) fn place(
        &mut self,
        a: &AllocRequest,
        key: &str,
        size: u64,
    ) -> Result<Vec<(Replica, Space)>, Refusal> {
        debug_assert!(size > 0 && a.replicas as usize <= msg::REPLICAS_MAX);
        // Distinct ranks in the caller's order: replicas land on distinct services.
        let preferred: Vec<u32> = {
            let mut v: Vec<u32> = Vec::with_capacity(a.preferred.len().min(msg::REPLICAS_MAX + 1));
            for r in a.preferred.iter().filter(|r| **r >= 0).map(|r| *r as u32) {
                if !v.contains(&r) {
                    v.push(r);
                }
                if v.len() > msg::REPLICAS_MAX {
                    break;
                }
            }
            v
        };
        let wanted = if a.policy == msg::PREFERRED_AFFINITY && !preferred.is_empty() {
            if preferred.len() > msg::REPLICAS_MAX {
                return Err(Refusal::invalid());
            }
            Wanted::Ranks(preferred)
        } else {
            Wanted::Copies(a.replicas.max(1) as usize)
        };
        let media = self.resolve_media(a.media, size);
        let wanted = match wanted {
            Wanted::Copies(n) if n > 1 && self.params.best_effort_replicas => {
                let live = self.candidates(media, a.writer_rank).len();
                if live < n {
                    debug!(
                        key,
                        asked = n,
                        live,
                        "best effort: fewer replicas, repaired later"
                    );
                }
                Wanted::Copies(n.min(live).max(1))
            }
            w => w,
        };
        match self.place_on(media, &wanted, a.writer_rank, key, size) {
            // "Highest tier with room": HBM without room now (it is demoting) yields to DRAM.
            Err(r)
                if r.retry
                    && a.media == msg::MEDIA_NONE
                    && media == msg::MEDIA_HBM
                    && self.hbm_demotes() =>
            {
                self.place_on(msg::MEDIA_DRAM, &wanted, a.writer_rank, key, size)
            }
            // "Highest tier with room": a tier that can never hold the put yields to the other.
            Err(r) if r.admission && !r.retry && a.media == msg::MEDIA_NONE => {
                let other = other_tier(media);
                if self.tier_usage(other).0 == 0 {
                    return Err(r);
                }
                debug!(
                    key,
                    size,
                    tier = msg::media_name(other),
                    "put fits no segment of the first tier"
                );
                self.place_on(other, &wanted, a.writer_rank, key, size)
            }
            placed => placed,
        }
    }

    /// Place on one tier: at once if there is room under the high watermark, else admit, then
    /// evict.
    fn place_on(
        &mut self,
        media: u16,
        wanted: &Wanted,
        writer: Option<u32>,
        key: &str,
        size: u64,
    ) -> Result<Vec<(Replica, Space)>, Refusal> {
        let incoming = size.saturating_mul(wanted.copies() as u64);
        if media == msg::MEDIA_HBM && self.hbm_demotes() {
            // HBM moves down to DRAM instead of dropping: place in free space, or wait for
            // demotions to free some (see `demote.rs`).
            if let Some(placed) = self.reserve_all(media, wanted, writer, size) {
                return Ok(placed);
            }
            // Demotion can free what eviction could: a put that fits nowhere even then is
            // refused for good (and "any tier" goes on to DRAM).
            let never = admit(&self.rooms(media), wanted, size) == Admission::Never;
            debug!(
                key,
                size, never, "HBM full: the put waits for demotions to DRAM"
            );
            return Err(Refusal {
                code: Code::ExceedCapacity,
                retry: !never,
                admission: never,
            });
        }
        let (cap, used) = self.tier_usage(media);
        let over_high = cap > 0
            && !under_percent(
                used.saturating_add(incoming),
                cap,
                self.params.evict_threshold_high,
            );
        if !over_high {
            if let Some(placed) = self.reserve_all(media, wanted, writer, size) {
                return Ok(placed);
            }
        }
        let rooms = self.rooms(media);
        let admission = admit(&rooms, wanted, size);
        if admission != Admission::Admit {
            let sum = |f: fn(&Room) -> u64| rooms.iter().map(f).fold(0u64, u64::saturating_add);
            warn!(
                key,
                size,
                copies = wanted.copies(),
                media = msg::media_name(media),
                capacity = cap,
                used,
                evictable = sum(|r| r.evictable),
                leased = sum(|r| r.leased),
                pending = sum(|r| r.pending),
                segment_room_max = rooms.iter().map(Room::release_room).max().unwrap_or(0),
                retry = admission == Admission::Wait,
                "put refused before any eviction: no room on enough services even with every \
                 evictable object gone (retry: read leases hold the missing space)"
            );
            self.stats.refused_no_room += 1;
            return Err(Refusal {
                code: Code::ExceedCapacity,
                retry: admission == Admission::Wait,
                admission: true,
            });
        }
        if over_high {
            self.evict_for_watermark(media, incoming);
            if let Some(placed) = self.reserve_all(media, wanted, writer, size) {
                return Ok(placed);
            }
        }
        self.evict_until_placed(media, wanted, writer, key, size)
    }

    /// Reserve every replica without evicting, or nothing.
    fn reserve_all(
        &mut self,
        media: u16,
        wanted: &Wanted,
        writer: Option<u32>,
        size: u64,
    ) -> Option<Vec<(Replica, Space)>> {
        let segments: Vec<u32> = match wanted {
            Wanted::Ranks(ranks) => ranks
                .iter()
                .map(|rank| self.segment_of(*rank, media))
                .collect::<Option<_>>()?,
            Wanted::Copies(_) => self.candidates(media, writer),
        };
        let copies = wanted.copies();
        let mut placed = Vec::with_capacity(copies);
        for seg in segments {
            if placed.len() == copies {
                break;
            }
            match self.reserve(seg, size) {
                Some(p) => placed.push(p),
                None if matches!(wanted, Wanted::Ranks(_)) => break,
                None => {}
            }
        }
        if placed.len() == copies {
            debug_assert!(distinct_ranks(&placed), "replicas on distinct services");
            return Some(placed);
        }
        self.undo(placed);
        None
    }

    /// Evict least recently used objects from the target segments that still lack room, one at
    /// a time, until every replica is reserved. Admission said the targets can make room.
    fn evict_until_placed(
        &mut self,
        media: u16,
        wanted: &Wanted,
        writer: Option<u32>,
        key: &str,
        size: u64,
    ) -> Result<Vec<(Replica, Space)>, Refusal> {
        let targets = targets(&self.rooms(media), wanted, writer, size);
        assert_eq!(targets.len(), wanted.copies(), "admitted: enough targets");
        let mut evicted = 0u64;
        loop {
            let mut placed = Vec::with_capacity(targets.len());
            let mut lacking = Vec::new();
            for &seg in &targets {
                match self.reserve(seg, size) {
                    Some(p) => placed.push(p),
                    None => lacking.push(seg),
                }
            }
            if lacking.is_empty() {
                debug_assert!(distinct_ranks(&placed), "replicas on distinct services");
                if evicted > 0 {
                    info!(key, size, objects = evicted, "evicted to make room");
                }
                return Ok(placed);
            }
            self.undo(placed);
            if !self.evict_one(|id, _| lacking.contains(&id)) {
                // Admission counts bytes; the allocator may still find no contiguous range.
                warn!(
                    key,
                    size,
                    media = msg::media_name(media),
                    evicted,
                    "no space even after eviction: the free space is fragmented"
                );
                self.stats.refused_fragmented += 1;
                return Err(Refusal {
                    code: Code::ExceedCapacity,
                    retry: !self.leases.is_empty(),
                    admission: false,
                });
            }
            evicted += 1;
        }
    }

    /// Every segment of a tier with the bytes its objects hold, by what could free them: read
    /// from the segments' counters (`held.rs`), O(segments).
    pub(super) fn rooms(&self, media: u16) -> Vec<Room> {
        self.segments
            .iter()
            .filter(|(_, s)| s.media == media)
            .map(|(id, s)| {
                let h = s.index.held;
                let used = s.space.used_bytes();
                // Every used byte is pending, leased, being repaired, or evictable.
                let held = h.pending + h.leased + h.repairing;
                let evictable = used.checked_sub(held).expect("held bytes are used bytes");
                Room {
                    segment: *id,
                    rank: s.rank,
                    free: s.space.free_bytes(),
                    evictable,
                    leased: h.leased,
                    pending: h.pending + h.repairing,
                }
            })
            .collect()
    }

    /// `MEDIA_NONE` means the highest tier with room: HBM while it has free space when DRAM is
    /// there to demote to, else HBM while it stays under its high watermark.
    /// A tier that no live local service offers at all falls back to the other one, so that a zeroed
    /// `mmc_put_options` (media 0 = HBM) works on a DRAM-only cluster.
    fn resolve_media(&self, media: u16, size: u64) -> u16 {
        if media == msg::MEDIA_HBM || media == msg::MEDIA_DRAM {
            let other = if media == msg::MEDIA_HBM {
                msg::MEDIA_DRAM
            } else {
                msg::MEDIA_HBM
            };
            if self.tier_usage(media).0 == 0 && self.tier_usage(other).0 > 0 {
                tracing::debug!(
                    asked = msg::media_name(media),
                    "tier absent: using the other one"
                );
                return other;
            }
            return media;
        }
        if media != msg::MEDIA_NONE {
            return media;
        }
        if self.hbm_demotes() {
            // New objects go to HBM while it has free space; demotion moves the least recently
            // used down to DRAM (and a put finding no HBM room goes to DRAM at once).
            return msg::MEDIA_HBM;
        }
        let (cap, used) = self.tier_usage(msg::MEDIA_HBM);
        if cap > 0
            && under_percent(
                used.saturating_add(size),
                cap,
                self.params.evict_threshold_high,
            )
        {
            return msg::MEDIA_HBM;
        }
        let (dram_cap, _) = self.tier_usage(msg::MEDIA_DRAM);
        if dram_cap > 0 {
            msg::MEDIA_DRAM
        } else {
            msg::MEDIA_HBM
        }
    }

    /// (capacity, used) bytes of a tier's live segments. Saturating: registrations may claim
    /// capacities that add up past 2^64 bytes.
    pub(super) fn tier_usage(&self, media: u16) -> (u64, u64) {
        self.segments
            .values()
            .filter(|s| s.media == media)
            .fold((0u64, 0u64), |(c, u), s| {
                (
                    c.saturating_add(s.space.capacity_bytes()),
                    u.saturating_add(s.space.used_bytes()),
                )
            })
    }

    pub(super) fn segment_of(&self, rank: u32, media: u16) -> Option<u32> {
        self.members
            .get(&rank)?
            .segments
            .iter()
            .copied()
            .find(|id| self.segments[id].media == media)
    }

    /// One segment per local service on this tier: the writer's own first, then most free space.
    fn candidates(&self, media: u16, writer: Option<u32>) -> Vec<u32> {
        let mut segs: Vec<(bool, u64, u32)> = self
            .segments
            .iter()
            .filter(|(_, s)| s.media == media)
            .map(|(id, s)| (Some(s.rank) == writer, s.space.free_bytes(), *id))
            .collect();
        segs.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        let mut ranks_seen = Vec::with_capacity(segs.len());
        segs.into_iter()
            .filter(|(_, _, id)| {
                let rank = self.segments[id].rank;
                if ranks_seen.contains(&rank) {
                    false
                } else {
                    ranks_seen.push(rank);
                    true
                }
            })
            .map(|(_, _, id)| id)
            .collect()
    }

    fn reserve(&mut self, seg_id: u32, size: u64) -> Option<(Replica, Space)> {
        let seg = self.segments.get_mut(&seg_id)?;
        let space = seg.space.alloc(size)?;
        assert!(space.len == size && space.reserved >= size);
        assert!(space.offset + space.reserved <= seg.space.capacity_bytes());
        Some((
            Replica {
                rank: seg.rank,
                segment: seg_id,
                media: seg.media,
                offset: space.offset,
                len: size,
            },
            space,
        ))
    }

    /// Give back the spaces of a placement that could not complete (no object counts them yet).
    fn undo(&mut self, placed: Vec<(Replica, Space)>) {
        for (r, space) in placed {
            // Placement runs within one step: no member can have left since `reserve`.
            let seg = self
                .segments
                .get_mut(&r.segment)
                .expect("reserved on a live segment");
            let used = seg.space.used_bytes();
            let reserved = space.reserved;
            seg.space.free(space);
            assert_eq!(seg.space.used_bytes() + reserved, used);
        }
    }

    /// When `incoming` more bytes would push the tier over its high watermark, evict least recently
    /// used objects until the tier, with the incoming bytes, is under its low watermark.
    fn evict_for_watermark(&mut self, media: u16, incoming: u64) {
        let (cap, used) = self.tier_usage(media);
        let (high, low) = (
            self.params.evict_threshold_high,
            self.params.evict_threshold_low,
        );
        if cap == 0 || under_percent(used.saturating_add(incoming), cap, high) {
            return;
        }
        let (mut count, before) = (0u64, used);
        loop {
            let (_, used) = self.tier_usage(media);
            if under_percent(used.saturating_add(incoming), cap, low) {
                break;
            }
            if !self.evict_one(|_, s| s.media == media) {
                warn!(media = msg::media_name(media), used, capacity = cap,
                    "eviction cannot reach the low watermark: every remaining object is leased or pending");
                self.stats.evict_blocked_held += 1;
                break;
            }
            count += 1;
        }
        let (_, after) = self.tier_usage(media);
        assert!(after <= before, "eviction only frees");
        info!(
            media = msg::media_name(media),
            objects = count,
            freed = before - after,
            used = after,
            capacity = cap,
            "watermark eviction"
        );
    }

    /// Evict the least recently used committed, unleased object with a replica on a live
    /// segment that `want` accepts (by id and segment).
    pub(super) fn evict_one(&mut self, want: impl Fn(u32, &super::Segment) -> bool) -> bool {
        match self.oldest_unleased(want) {
            Some(oid) => {
                debug_assert_eq!(self.objects[&oid].state, State::Committed);
                tracing::debug!(key = %self.objects[&oid].key, "evicted");
                let objects = self.objects.len();
                self.unlink(oid);
                // Unleased, so unlinking freed it at once.
                assert_eq!(
                    self.objects.len() + 1,
                    objects,
                    "an evicted object is freed"
                );
                self.evicted_total += 1;
                true
            }
            None => false,
        }
    }
}

/// Whether `wanted` fits on the tier's `rooms`, first counting what eviction can free, then what
/// releases can. Preferred ranks use their first segment of the tier, as `segment_of` does.
fn admit(rooms: &[Room], wanted: &Wanted, size: u64) -> Admission {
    let fits = |room: fn(&Room) -> u64| match wanted {
        Wanted::Ranks(ranks) => ranks.iter().all(|rank| {
            rooms
                .iter()
                .find(|r| r.rank == *rank)
                .is_some_and(|r| room(r) >= size)
        }),
        Wanted::Copies(n) => {
            let mut ranks: Vec<u32> = rooms
                .iter()
                .filter(|r| room(r) >= size)
                .map(|r| r.rank)
                .collect();
            ranks.sort_unstable();
            ranks.dedup();
            ranks.len() >= *n
        }
    };
    let admission = if fits(Room::evict_room) {
        Admission::Admit
    } else if fits(Room::release_room) {
        Admission::Wait
    } else {
        Admission::Never
    };
    debug_assert!(
        admission == Admission::Never || rooms.iter().any(|r| r.release_room() >= size),
        "an admitted put fits some segment"
    );
    admission
}

/// The segments an admitted put evicts from: the preferred ranks' own, or one per service that
/// can make room, the writer's first, then those with room already, then the most free.
fn targets(rooms: &[Room], wanted: &Wanted, writer: Option<u32>, size: u64) -> Vec<u32> {
    match wanted {
        Wanted::Ranks(ranks) => ranks
            .iter()
            .filter_map(|rank| rooms.iter().find(|r| r.rank == *rank))
            .map(|r| r.segment)
            .collect(),
        Wanted::Copies(n) => {
            let mut able: Vec<&Room> = rooms.iter().filter(|r| r.evict_room() >= size).collect();
            able.sort_unstable_by_key(|r| {
                (
                    Some(r.rank) != writer,
                    r.free < size,
                    std::cmp::Reverse(r.free),
                    r.segment,
                )
            });
            let mut ranks_seen: Vec<u32> = Vec::with_capacity(able.len());
            able.into_iter()
                .filter(|r| {
                    let fresh = !ranks_seen.contains(&r.rank);
                    ranks_seen.push(r.rank);
                    fresh
                })
                .take(*n)
                .map(|r| r.segment)
                .collect()
        }
    }
}

fn other_tier(media: u16) -> u16 {
    if media == msg::MEDIA_HBM {
        msg::MEDIA_DRAM
    } else {
        msg::MEDIA_HBM
    }
}

fn distinct_ranks(placed: &[(Replica, Space)]) -> bool {
    let mut ranks: Vec<u32> = placed.iter().map(|(r, _)| r.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    ranks.len() == placed.len()
}

/// `bytes <= capacity * percent / 100`, without overflow for any `bytes` a request can carry.
fn under_percent(bytes: u64, capacity: u64, percent: u16) -> bool {
    debug_assert!(percent <= 100);
    u128::from(bytes) * 100 <= u128::from(capacity) * u128::from(percent)
}
