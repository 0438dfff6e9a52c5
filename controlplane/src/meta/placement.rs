//! Placement of replicas and watermark eviction, per media tier.

use mmc_hal::Space;
use tracing::{info, warn};

use super::{MetaCore, State};
use crate::error::Code;
use crate::msg::{self, AllocRequest, Replica};

impl MetaCore {
    /// Choose segments for every replica of one object and reserve space in them, evicting least
    /// recently used objects of the tier first when the watermark says so.
    pub(super) fn place(
        &mut self,
        a: &AllocRequest,
        key: &str,
        size: u64,
    ) -> Result<Vec<(Replica, Space)>, Code> {
        debug_assert!(size > 0 && a.replicas as usize <= msg::REPLICAS_MAX);
        let media = self.resolve_media(a.media, size);
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
        if a.policy == msg::PREFERRED_AFFINITY && !preferred.is_empty() {
            if preferred.len() > msg::REPLICAS_MAX {
                return Err(Code::InvalidParam);
            }
            self.evict_for_watermark(media, size.saturating_mul(preferred.len() as u64));
            let mut placed = Vec::with_capacity(preferred.len());
            for rank in preferred {
                let Some(seg) = self.segment_of(rank, media) else {
                    warn!(
                        key,
                        rank,
                        media = msg::media_name(media),
                        "preferred local service has no such segment"
                    );
                    self.undo(placed);
                    return Err(Code::ExceedCapacity);
                };
                loop {
                    if let Some(p) = self.reserve(seg, size) {
                        placed.push(p);
                        break;
                    }
                    if !self.evict_one(|r| r.segment == seg) {
                        warn!(
                            key,
                            rank, size, "preferred local service is full even after eviction"
                        );
                        self.undo(placed);
                        return Err(Code::ExceedCapacity);
                    }
                }
            }
            return Ok(placed);
        }

        let copies = a.replicas.max(1) as usize;
        self.evict_for_watermark(media, size.saturating_mul(copies as u64));
        loop {
            let candidates = self.candidates(media, a.writer_rank);
            if candidates.len() < copies {
                warn!(
                    key,
                    copies,
                    services = candidates.len(),
                    media = msg::media_name(media),
                    "not enough local services for the replicas asked"
                );
                return Err(Code::ExceedCapacity);
            }
            let mut placed = Vec::with_capacity(copies);
            for seg in candidates {
                if placed.len() == copies {
                    break;
                }
                if let Some(p) = self.reserve(seg, size) {
                    placed.push(p);
                }
            }
            if placed.len() == copies {
                return Ok(placed);
            }
            self.undo(placed);
            if !self.evict_one(|r| r.media == media) {
                warn!(
                    key,
                    size,
                    media = msg::media_name(media),
                    "no space even after eviction"
                );
                return Err(Code::ExceedCapacity);
            }
        }
    }

    /// `MEDIA_NONE` means the highest tier with room: HBM while it stays under its high watermark.
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

    /// (capacity, used) bytes of a tier's live segments.
    pub(super) fn tier_usage(&self, media: u16) -> (u64, u64) {
        self.segments
            .values()
            .filter(|s| s.media == media)
            .fold((0, 0), |(c, u), s| {
                (c + s.space.capacity_bytes(), u + s.space.used_bytes())
            })
    }

    fn segment_of(&self, rank: u32, media: u16) -> Option<u32> {
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
            if !self.evict_one(|r| r.media == media) {
                warn!(media = msg::media_name(media), used, capacity = cap,
                    "eviction cannot reach the low watermark: every remaining object is leased or pending");
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

    /// Evict the least recently used committed, unleased object with a replica matching `pred`.
    fn evict_one(&mut self, pred: impl Fn(&Replica) -> bool) -> bool {
        let victim = self.lru.values().copied().find(|oid| {
            let o = &self.objects[oid];
            debug_assert_eq!(o.state, State::Committed);
            o.leases == 0 && o.replicas.iter().any(|(r, _)| pred(r))
        });
        match victim {
            Some(oid) => {
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

/// `bytes <= capacity * percent / 100`, without overflow for any `bytes` a request can carry.
fn under_percent(bytes: u64, capacity: u64, percent: u16) -> bool {
    debug_assert!(percent <= 100);
    u128::from(bytes) * 100 <= u128::from(capacity) * u128::from(percent)
}
