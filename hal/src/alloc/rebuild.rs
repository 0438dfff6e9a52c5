//! [`SpaceAllocator::rebuild`]: an allocator whose live allocations are given ranges, for a meta
//! service that rebuilds its directory from what the local services report after a restart.
//!
//! The TLSF allocator underneath only hands out ranges it chooses, so the rebuild lays the segment
//! out front to back in one fresh allocator: from a single free region, every allocation is taken
//! at the region's start, so allocating each gap, then each reported range, in offset order puts
//! every range exactly where it was; then the gaps are freed. The allocator is made larger than
//! the segment by a power-of-two tail, held for good, so that the remaining region always has
//! room to spare (TLSF rounds a request up to its size class, and the region down to its own: a
//! request that fills the region to its last byte would otherwise not be served).

use offset_allocator::Allocator;

use super::{RawAllocation, Space, SpaceAllocator};

/// Why a reported range was not rebuilt (the fields say which range and which limit).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RebuildRefusal {
    #[error("offset {offset} is not a multiple of the {unit}-byte unit")]
    Misaligned { offset: u64, unit: u64 },
    #[error("range {offset}+{len} is empty or outside the segment of {capacity} bytes")]
    Outside {
        offset: u64,
        len: u64,
        capacity: u64,
    },
    #[error("range at {offset} overlaps the range before it, or is out of offset order")]
    Overlap { offset: u64 },
    #[error("the allocator's table of {max_allocs} nodes is full")]
    Full { max_allocs: u32 },
}

impl SpaceAllocator {
    /// An allocator over `capacity_bytes` whose live allocations are `ranges` (offset, len), in
    /// offset order, each exactly where it is: one outcome per range. A range that is misaligned,
    /// outside the segment, overlapping the previous accepted one (or out of order), or past the
    /// node table is refused and its space left free.
    ///
    /// # Errors
    ///
    /// As [`SpaceAllocator::new`].
    pub fn rebuild(
        capacity_bytes: u64,
        ranges: &[(u64, u64)],
    ) -> Result<(SpaceAllocator, Vec<Result<Space, RebuildRefusal>>), crate::error::HalError> {
        let mut a = SpaceAllocator::new(capacity_bytes)?;
        let cap = a.capacity_units;
        // A power of two is its own size class; at least half the segment leaves every request
        // room to spare; cap + tail <= 2^31 + 2^30 fits a u32.
        let tail =
            u32::try_from(u64::from(cap).div_ceil(2).next_power_of_two()).expect("at most 2^30");
        let total = cap.checked_add(tail).expect("at most 3 * 2^30 units");
        // One node more for the tail.
        a.inner = Allocator::with_max_allocs(total, a.max_allocs + 1);
        let capacity = a.capacity_bytes();
        let unit = a.unit_bytes;
        let mut pos: u32 = 0;
        let mut gaps = Vec::new();
        let mut out = Vec::with_capacity(ranges.len());
        for &(offset, len) in ranges {
            let outcome = (|| {
                if offset % unit != 0 {
                    return Err(RebuildRefusal::Misaligned { offset, unit });
                }
                let units = len.div_ceil(unit).max(1);
                let start = offset >> a.unit_shift;
                let end = start
                    .checked_add(units)
                    .filter(|e| len > 0 && *e <= u64::from(cap));
                let Some(end) = end else {
                    return Err(RebuildRefusal::Outside {
                        offset,
                        len,
                        capacity,
                    });
                };
                if start < u64::from(pos) {
                    return Err(RebuildRefusal::Overlap { offset });
                }
                let full = RebuildRefusal::Full {
                    max_allocs: a.max_allocs,
                };
                // Nodes: live ones, the gaps held until the end, the remaining region, the tail.
                if a.count + gaps.len() as u64 + 3 > u64::from(a.max_allocs) {
                    return Err(full);
                }
                let start = start as u32;
                if start > pos {
                    let gap = a.inner.allocate(start - pos).ok_or(full.clone())?;
                    assert_eq!(gap.offset, pos, "a fresh region is taken from its start");
                    gaps.push(gap);
                }
                let units = (end - u64::from(start)) as u32;
                let alloc = a.inner.allocate(units).ok_or(full)?;
                assert_eq!(
                    alloc.offset, start,
                    "a fresh region is taken from its start"
                );
                pos = start + units;
                Ok(a.adopt(alloc, len))
            })();
            out.push(outcome);
        }
        // The rest of the segment, then the tail, held for good; then the gaps come back.
        let rest = (pos < cap).then(|| a.inner.allocate(cap - pos).expect("room to spare"));
        let held = a
            .inner
            .allocate(tail)
            .expect("the tail is the whole remaining region");
        assert_eq!(held.offset, cap, "the tail lies past the segment");
        for gap in gaps.into_iter().chain(rest) {
            a.inner.free(gap);
        }
        a.tail = Some(held);
        debug_assert_eq!(
            a.used_bytes(),
            out.iter().flatten().map(|s| s.reserved).sum::<u64>()
        );
        Ok((a, out))
    }

    /// Account for `alloc`, just taken from `inner`, as a live allocation of `len` bytes.
    fn adopt(&mut self, alloc: offset_allocator::Allocation, len: u64) -> Space {
        let reserved_units = self.inner.allocation_size(alloc);
        #[cfg(debug_assertions)]
        self.live.insert(alloc.offset, reserved_units);
        self.used_units += u64::from(reserved_units);
        self.count += 1;
        Space {
            offset: u64::from(alloc.offset) << self.unit_shift,
            len,
            reserved: u64::from(reserved_units) << self.unit_shift,
            raw: RawAllocation {
                alloc,
                allocator_id: self.id,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_come_back_where_they_were_and_the_gaps_are_free() {
        let mut a = SpaceAllocator::new(1 << 20).unwrap();
        let spaces: Vec<Space> = (0..40).map(|i| a.alloc(1000 + i * 97).unwrap()).collect();
        let ranges: Vec<(u64, u64)> = spaces
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, s)| (s.offset, s.len))
            .collect();
        let (mut b, out) = SpaceAllocator::rebuild(1 << 20, &ranges).unwrap();
        assert_eq!(out.len(), ranges.len());
        let used: u64 = spaces
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, s)| s.reserved)
            .sum();
        assert_eq!(b.used_bytes(), used);
        let rebuilt: Vec<Space> = out.into_iter().map(|r| r.unwrap()).collect();
        for (s, &(offset, len)) in rebuilt.iter().zip(&ranges) {
            assert_eq!((s.offset, s.len), (offset, len));
        }
        // Fill what is free: nothing lands on a rebuilt range.
        let mut more = Vec::new();
        while let Some(s) = b.alloc(512) {
            for r in &rebuilt {
                assert!(s.offset + s.reserved <= r.offset || r.offset + r.reserved <= s.offset);
            }
            more.push(s);
        }
        assert!(
            b.largest_free_bytes() < 512,
            "all free space was handed out"
        );
        assert!(
            more.len() as u64 * 512 > (1 << 20) - 2 * used,
            "the gaps were freed"
        );
        for s in more.into_iter().chain(rebuilt) {
            b.free(s);
        }
        assert_eq!(b.used_bytes(), 0);
        // Whole again: one allocation of the whole segment.
        assert!(b.alloc(b.capacity_bytes()).is_some());
    }

    #[test]
    fn a_segment_filled_to_its_last_byte_is_rebuilt() {
        let cap = 10 * 4096 + 640;
        let a = SpaceAllocator::new(cap).unwrap();
        let unit = a.unit_bytes();
        let cap_bytes = a.capacity_bytes();
        let ranges = vec![(0, 4096), (4096, cap_bytes - 4096)];
        let (b, out) = SpaceAllocator::rebuild(cap, &ranges).unwrap();
        assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
        assert_eq!(b.free_bytes(), 0);
        assert_eq!(unit, 64);
    }

    #[test]
    fn bad_ranges_are_refused_and_left_free() {
        let ranges = vec![
            (0, 100),
            (64, 64),      // overlaps the first (reserved 128)
            (200, 10),     // misaligned
            (1 << 20, 64), // outside
            (128, 0),      // empty
            (256, 64),
        ];
        let (b, out) = SpaceAllocator::rebuild(1 << 16, &ranges).unwrap();
        assert!(out[0].is_ok() && out[5].is_ok());
        assert!(matches!(out[1], Err(RebuildRefusal::Overlap { .. })));
        assert!(matches!(out[2], Err(RebuildRefusal::Misaligned { .. })));
        assert!(matches!(out[3], Err(RebuildRefusal::Outside { .. })));
        assert!(matches!(out[4], Err(RebuildRefusal::Outside { .. })));
        assert_eq!(b.used_bytes(), 128 + 64);
    }
}
