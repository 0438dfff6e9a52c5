//! [`SpaceAllocator`]: hands out disjoint byte ranges of one segment.
//!
//! Built on [`offset_allocator::Allocator`] (Sebastian Aaltonen's two-level
//! bitmap TLSF allocator, O(1) alloc/free), which counts in `u32` *units*.
//! To manage segments of many GiB, one unit is `unit_bytes` bytes:
//!
//! ```text
//! unit_bytes     = max(64, next_power_of_two(ceil(capacity_bytes / 2^31)))
//! capacity_units = floor(capacity_bytes / unit_bytes)          (<= 2^31)
//! max_allocs     = clamp(capacity_units, 1024, 2^20)
//! ```
//!
//! Because `unit_bytes >= ceil(capacity / 2^31)`, `capacity_units <= 2^31`
//! always fits in a `u32`. Every offset is a multiple of `unit_bytes`, hence
//! at least 64-byte aligned. Bytes past `capacity_units * unit_bytes` (less
//! than one unit) are never handed out. `max_allocs` bounds the allocator's
//! node table (about 32 bytes per node, so at most ~32 MiB of metadata);
//! nodes are used by live allocations *and* free regions, so at most
//! `max_allocs - 1` allocations can be live at once.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use offset_allocator::{Allocation, Allocator};

use crate::error::HalError;

mod rebuild;

pub use rebuild::RebuildRefusal;

/// Smallest allocation unit (and alignment) in bytes.
pub const MIN_UNIT_BYTES: u64 = 64;

/// Largest number of units one allocator manages (`2^31`).
const MAX_UNITS: u64 = 1 << 31;

/// Lower bound of the node table size.
const MIN_MAX_ALLOCS: u64 = 1024;

/// Upper bound of the node table size.
const MAX_MAX_ALLOCS: u64 = 1 << 20;

/// Source of per-allocator ids, so a [`Space`] freed into the wrong
/// allocator is detected.
static NEXT_ALLOCATOR_ID: AtomicU64 = AtomicU64::new(1);

/// The raw allocator handle, wrapped to provide `Debug`/`PartialEq`
/// (`offset_allocator::Allocation` implements neither).
#[derive(Clone, Copy)]
struct RawAllocation {
    alloc: Allocation,
    allocator_id: u64,
}

impl fmt::Debug for RawAllocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawAllocation")
            .field("offset_units", &self.alloc.offset)
            .field("allocator_id", &self.allocator_id)
            .finish()
    }
}

impl PartialEq for RawAllocation {
    fn eq(&self, other: &Self) -> bool {
        // Live allocations of one allocator have distinct offsets.
        self.alloc.offset == other.alloc.offset && self.allocator_id == other.allocator_id
    }
}

impl Eq for RawAllocation {}

/// A byte range of a segment handed out by [`SpaceAllocator::alloc`].
///
/// Give it back with [`SpaceAllocator::free`] on the same allocator, exactly
/// once. It is neither `Copy` nor `Clone`, so the type system rules out a
/// double free: whoever holds it owns the range. Dropping it without freeing
/// leaks the range (right when the allocator itself is dropped too, e.g. when
/// its segment's owner died).
#[derive(Debug, PartialEq, Eq)]
pub struct Space {
    /// Byte offset in the segment (a multiple of the allocator's unit, so
    /// at least 64-byte aligned).
    pub offset: u64,
    /// Requested length in bytes.
    pub len: u64,
    /// Bytes actually reserved (`len` rounded up to whole units; >= `len`,
    /// and at least one unit).
    pub reserved: u64,
    raw: RawAllocation,
}

/// Manages the byte space of one segment: hands out non-overlapping
/// [`Space`]s and takes them back.
///
/// Not thread-safe by itself (`&mut self`); wrap it in a lock to share.
pub struct SpaceAllocator {
    inner: Allocator,
    id: u64,
    unit_bytes: u64,
    /// `log2(unit_bytes)`.
    unit_shift: u32,
    capacity_units: u32,
    max_allocs: u32,
    used_units: u64,
    count: u64,
    /// Units past the segment held for good by [`SpaceAllocator::rebuild`] (never freed).
    tail: Option<Allocation>,
    /// Live allocations (offset units -> reserved units), debug builds only,
    /// to assert non-overlap and catch unknown frees.
    #[cfg(debug_assertions)]
    live: std::collections::BTreeMap<u32, u32>,
}

impl fmt::Debug for SpaceAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpaceAllocator")
            .field("capacity_bytes", &self.capacity_bytes())
            .field("unit_bytes", &self.unit_bytes)
            .field("used_bytes", &self.used_bytes())
            .field("allocation_count", &self.count)
            .field("max_allocs", &self.max_allocs)
            .finish()
    }
}

impl Space {
    /// A second handle to `self`, for tests that must provoke a double free.
    #[cfg(test)]
    fn duplicate(&self) -> Space {
        Space { ..*self }
    }
}

impl SpaceAllocator {
    /// Creates an allocator over `capacity_bytes` bytes (see the module docs
    /// for the unit arithmetic). No memory of the segment is touched.
    ///
    /// # Errors
    ///
    /// [`HalError::InvalidSize`] if `capacity_bytes` is smaller than one
    /// 64-byte unit (in particular zero).
    pub fn new(capacity_bytes: u64) -> Result<Self, HalError> {
        if capacity_bytes < MIN_UNIT_BYTES {
            return Err(HalError::InvalidSize(format!(
                "allocator capacity {capacity_bytes} is smaller than the minimum unit of \
                 {MIN_UNIT_BYTES} bytes"
            )));
        }
        let unit_bytes = capacity_bytes
            .div_ceil(MAX_UNITS)
            .next_power_of_two()
            .max(MIN_UNIT_BYTES);
        let unit_shift = unit_bytes.trailing_zeros();
        let capacity_units = capacity_bytes >> unit_shift;
        assert!(unit_bytes.is_power_of_two() && unit_bytes >= MIN_UNIT_BYTES);
        assert!(
            (1..=MAX_UNITS).contains(&capacity_units),
            "capacity_units {capacity_units} must be in 1..=2^31"
        );
        assert!(capacity_units * unit_bytes <= capacity_bytes);
        assert!(capacity_bytes - capacity_units * unit_bytes < unit_bytes);
        let max_allocs = capacity_units.clamp(MIN_MAX_ALLOCS, MAX_MAX_ALLOCS);
        // offset-allocator requires max_allocs < u32::MAX - 1.
        assert!(max_allocs < u64::from(u32::MAX) - 1);
        let capacity_units = capacity_units as u32;
        let max_allocs = max_allocs as u32;
        let id = NEXT_ALLOCATOR_ID.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            capacity_bytes,
            unit_bytes,
            capacity_units,
            max_allocs,
            allocator_id = id,
            "created space allocator"
        );
        Ok(SpaceAllocator {
            inner: Allocator::with_max_allocs(capacity_units, max_allocs),
            id,
            unit_bytes,
            unit_shift,
            capacity_units,
            max_allocs,
            used_units: 0,
            count: 0,
            tail: None,
            #[cfg(debug_assertions)]
            live: std::collections::BTreeMap::new(),
        })
    }

    /// Reserves space for `bytes` bytes (0 is treated as one unit).
    ///
    /// Returns `None` if `bytes` exceeds the capacity, no free region is
    /// large enough, or the allocator's node table is exhausted.
    pub fn alloc(&mut self, bytes: u64) -> Option<Space> {
        if bytes > self.capacity_bytes() {
            return None;
        }
        let units = bytes.max(1).div_ceil(self.unit_bytes);
        // `units <= capacity_units <= 2^31`.
        let units = u32::try_from(units).ok()?;
        let alloc = self.inner.allocate(units)?;
        let reserved_units = self.inner.allocation_size(alloc);
        debug_assert!(reserved_units >= units);
        let offset_units = alloc.offset;
        debug_assert!(
            u64::from(offset_units) + u64::from(reserved_units) <= u64::from(self.capacity_units),
            "allocation [{offset_units}, +{reserved_units}) outside capacity {}",
            self.capacity_units
        );
        #[cfg(debug_assertions)]
        {
            use std::ops::Bound::{Excluded, Unbounded};
            let end = offset_units + reserved_units;
            if let Some((&prev, &prev_len)) = self.live.range(..=offset_units).next_back() {
                debug_assert!(
                    prev + prev_len <= offset_units,
                    "overlaps previous allocation"
                );
            }
            if let Some((&next, _)) = self.live.range((Excluded(offset_units), Unbounded)).next() {
                debug_assert!(end <= next, "overlaps next allocation");
            }
            self.live.insert(offset_units, reserved_units);
        }
        self.used_units += u64::from(reserved_units);
        self.count += 1;
        Some(Space {
            offset: u64::from(offset_units) << self.unit_shift,
            len: bytes,
            reserved: u64::from(reserved_units) << self.unit_shift,
            raw: RawAllocation {
                alloc,
                allocator_id: self.id,
            },
        })
    }

    /// Returns `space` to the allocator.
    ///
    /// Freeing a space that this allocator did not hand out (or that was
    /// already freed) is a logic error: it panics in debug builds. In
    /// release builds a space from another allocator, or whose fields do not
    /// match the allocator's record, is logged with `tracing::error!` and
    /// ignored; an exact double free may still panic inside
    /// `offset_allocator`.
    pub fn free(&mut self, space: Space) {
        let raw = space.raw;
        let offset_units = raw.alloc.offset;
        let reserved_units = (space.reserved >> self.unit_shift) as u32;
        let known = raw.allocator_id == self.id
            && self.inner.allocation_size(raw.alloc) == reserved_units
            && u64::from(offset_units) << self.unit_shift == space.offset;
        #[cfg(debug_assertions)]
        let known = known && self.live.get(&offset_units) == Some(&reserved_units);
        if !known {
            debug_assert!(false, "free of unknown space {space:?}");
            tracing::error!(
                ?space,
                allocator_id = self.id,
                "ignoring free of unknown space"
            );
            return;
        }
        #[cfg(debug_assertions)]
        self.live.remove(&offset_units);
        self.inner.free(raw.alloc);
        self.used_units = self
            .used_units
            .checked_sub(u64::from(reserved_units))
            .expect("used units cover every live allocation");
        self.count = self
            .count
            .checked_sub(1)
            .expect("allocation count covers every live allocation");
    }

    /// Bytes this allocator can hand out: `capacity_units * unit_bytes`
    /// (the requested capacity rounded down to whole units).
    pub fn capacity_bytes(&self) -> u64 {
        u64::from(self.capacity_units) << self.unit_shift
    }

    /// Bytes reserved by live allocations (sum of [`Space::reserved`]).
    pub fn used_bytes(&self) -> u64 {
        self.used_units << self.unit_shift
    }

    /// `capacity_bytes() - used_bytes()` (possibly fragmented).
    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes() - self.used_bytes()
    }

    /// Size of the largest allocation that is currently guaranteed to
    /// succeed, in bytes (from the allocator's bin report; a lower bound of
    /// the largest free region). 0 when the node table is exhausted.
    pub fn largest_free_bytes(&self) -> u64 {
        u64::from(self.inner.storage_report().largest_free_region) << self.unit_shift
    }

    /// Allocation unit (and minimum alignment) in bytes.
    pub fn unit_bytes(&self) -> u64 {
        self.unit_bytes
    }

    /// Number of live allocations.
    pub fn allocation_count(&self) -> u64 {
        self.count
    }

    /// Size of the allocator's node table (bounds live allocations plus
    /// free regions).
    pub fn max_allocs(&self) -> u32 {
        self.max_allocs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// Tiny xorshift64* generator for reproducible randomized tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn test_seed() -> u64 {
        let seed = std::env::var("MMC_TEST_SEED")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0x5EED_1234_ABCD_0001);
        eprintln!("MMC_TEST_SEED={seed}");
        seed.max(1)
    }

    #[test]
    fn zero_and_tiny_capacity_rejected() {
        assert!(matches!(
            SpaceAllocator::new(0),
            Err(HalError::InvalidSize(_))
        ));
        assert!(SpaceAllocator::new(63).is_err());
        let a = SpaceAllocator::new(64).unwrap();
        assert_eq!(a.capacity_bytes(), 64);
    }

    #[test]
    fn unit_arithmetic() {
        let a = SpaceAllocator::new(GIB).unwrap();
        assert_eq!(a.unit_bytes(), 64);
        assert_eq!(a.capacity_bytes(), GIB);
        let a = SpaceAllocator::new(128 * GIB).unwrap();
        assert_eq!(a.unit_bytes(), 64);
        let a = SpaceAllocator::new(128 * GIB + 1).unwrap();
        assert_eq!(a.unit_bytes(), 128);
        let a = SpaceAllocator::new(1000).unwrap();
        assert_eq!(a.capacity_bytes(), 960, "rounded down to whole units");
        assert_eq!(a.max_allocs(), 1024);
        let a = SpaceAllocator::new(64 * GIB).unwrap();
        assert_eq!(a.max_allocs(), 1 << 20);
    }

    #[test]
    fn alloc_free_reuse() {
        let mut a = SpaceAllocator::new(1 << 20).unwrap();
        let s = a.alloc(1000).unwrap();
        assert_eq!(s.offset % 64, 0);
        assert_eq!(s.len, 1000);
        assert!(s.reserved >= 1000);
        let offset = s.offset;
        a.free(s);
        assert_eq!(a.used_bytes(), 0);
        assert_eq!(a.allocation_count(), 0);
        let t = a.alloc(1000).unwrap();
        assert_eq!(t.offset, offset, "space is reused");
        a.free(t);
    }

    #[test]
    fn small_allocations_reserve_one_unit() {
        let mut a = SpaceAllocator::new(1 << 20).unwrap();
        for bytes in [0u64, 1, 63, 64] {
            let s = a.alloc(bytes).unwrap();
            assert_eq!(s.len, bytes);
            assert_eq!(s.reserved, a.unit_bytes(), "bytes={bytes}");
            a.free(s);
        }
        let s = a.alloc(65).unwrap();
        assert_eq!(s.reserved, 128);
        a.free(s);
    }

    #[test]
    fn used_bytes_accounting() {
        let mut a = SpaceAllocator::new(16 << 20).unwrap();
        let mut live = Vec::new();
        let mut sum = 0;
        for i in 1..100u64 {
            let s = a.alloc(i * 777).unwrap();
            sum += s.reserved;
            live.push(s);
            assert_eq!(a.used_bytes(), sum);
            assert_eq!(a.free_bytes(), a.capacity_bytes() - sum);
        }
        assert_eq!(a.allocation_count(), 99);
        for s in live.drain(..).step_by(1) {
            sum -= s.reserved;
            a.free(s);
            assert_eq!(a.used_bytes(), sum);
        }
        assert_eq!(a.used_bytes(), 0);
        assert_eq!(a.free_bytes(), a.capacity_bytes());
        assert!(a.largest_free_bytes() > 0);
        assert!(a.largest_free_bytes() <= a.capacity_bytes());
    }

    #[test]
    fn large_capacity_without_touching_memory() {
        let mut a = SpaceAllocator::new(64 * GIB).unwrap();
        assert_eq!(a.capacity_bytes(), 64 * GIB);
        let big = a.alloc(10 * GIB).unwrap();
        assert_eq!(big.reserved, 10 * GIB);
        let small = a.alloc(4096).unwrap();
        let s2 = a.alloc(40 * GIB).unwrap();
        for s in [&big, &small, &s2] {
            assert!(s.offset + s.reserved <= 64 * GIB);
        }
        assert!(a.alloc(65 * GIB).is_none());
        a.free(big);
        a.free(small);
        a.free(s2);
        assert_eq!(a.used_bytes(), 0);

        let mut huge = SpaceAllocator::new(1 << 40).unwrap();
        assert_eq!(huge.unit_bytes(), 512);
        let s = huge.alloc(300 * GIB).unwrap();
        assert_eq!(s.offset % 512, 0);
        huge.free(s);
    }

    #[test]
    fn exhaustion_then_success_after_free() {
        let mut a = SpaceAllocator::new(64 * 1024).unwrap();
        let mut live = Vec::new();
        while let Some(s) = a.alloc(4096) {
            live.push(s);
        }
        assert_eq!(live.len(), 16);
        assert_eq!(a.free_bytes(), 0);
        assert!(a.alloc(1).is_none());
        assert!(a.alloc(u64::MAX).is_none());
        let s = live.swap_remove(3);
        let offset = s.offset;
        a.free(s);
        let again = a.alloc(4096).unwrap();
        assert_eq!(again.offset, offset);
        live.push(again);
        for s in live {
            a.free(s);
        }
        assert_eq!(a.allocation_count(), 0);
        // After everything is freed, large allocations work again.
        let s = a.alloc(32 * 1024).unwrap();
        a.free(s);
    }

    #[test]
    fn node_table_exhaustion_returns_none() {
        // Nodes are shared by live allocations and free regions.
        let mut b = SpaceAllocator::new(64 * 2048).unwrap();
        assert_eq!(b.max_allocs(), 2048);
        let mut live = Vec::new();
        while let Some(s) = b.alloc(64) {
            live.push(s);
        }
        assert!(live.len() >= 2046, "{}", live.len());
        for s in live {
            b.free(s);
        }
        assert_eq!(b.used_bytes(), 0);
        let s = b.alloc(64 * 2048).unwrap();
        b.free(s);
    }

    #[test]
    fn randomized_allocations_never_overlap() {
        let seed = test_seed();
        let mut rng = XorShift(seed);
        let capacity = 8 << 20;
        let mut a = SpaceAllocator::new(capacity).unwrap();
        let mut live: Vec<Space> = Vec::new();
        for step in 0..20_000u32 {
            if live.is_empty() || rng.below(100) < 55 {
                let bytes = match rng.below(10) {
                    0 => rng.below(256 * 1024),
                    1..=3 => rng.below(16 * 1024),
                    _ => rng.below(2048),
                };
                if let Some(s) = a.alloc(bytes) {
                    assert!(s.reserved >= bytes.max(1), "seed {seed} step {step}");
                    assert_eq!(s.offset % a.unit_bytes(), 0);
                    assert!(s.offset + s.reserved <= a.capacity_bytes());
                    live.push(s);
                }
            } else {
                let idx = rng.below(live.len() as u64) as usize;
                a.free(live.swap_remove(idx));
            }
            if step % 500 == 0 {
                let mut sorted: Vec<_> = live.iter().map(|s| (s.offset, s.reserved)).collect();
                sorted.sort_unstable();
                for w in sorted.windows(2) {
                    assert!(
                        w[0].0 + w[0].1 <= w[1].0,
                        "overlap {w:?} (seed {seed}, step {step})"
                    );
                }
                let sum: u64 = live.iter().map(|s| s.reserved).sum();
                assert_eq!(a.used_bytes(), sum, "seed {seed} step {step}");
                assert_eq!(a.allocation_count(), live.len() as u64);
            }
        }
        for s in live {
            a.free(s);
        }
        assert_eq!(a.used_bytes(), 0);
        assert_eq!(a.free_bytes(), capacity);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "unknown space")]
    fn double_free_panics_in_debug() {
        let mut a = SpaceAllocator::new(1 << 20).unwrap();
        let s = a.alloc(100).unwrap();
        let again = s.duplicate();
        a.free(s);
        a.free(again);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "unknown space")]
    fn foreign_free_panics_in_debug() {
        let mut a = SpaceAllocator::new(1 << 20).unwrap();
        let mut b = SpaceAllocator::new(1 << 20).unwrap();
        let s = a.alloc(100).unwrap();
        b.free(s);
    }

    #[test]
    fn space_equality() {
        let mut a = SpaceAllocator::new(1 << 20).unwrap();
        let s = a.alloc(100).unwrap();
        let t = s.duplicate();
        assert_eq!(s, t);
        let u = a.alloc(100).unwrap();
        assert_ne!(s, u);
        assert!(format!("{s:?}").contains("offset"));
        a.free(s);
        a.free(u);
    }
}
