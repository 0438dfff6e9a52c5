//! Caller memory for the RDMA backend. Verbs move bytes only between registered memory regions,
//! and `put_from` / `get_into` take arbitrary pointers, so every local slice of a transfer needs
//! an lkey:
//!
//! - **Buffers the application registered** (`Client::register_memory`: Python's
//!   `register_buffer`) are registered with the device on first use and kept: later calls inside
//!   them are cache hits, no verbs call. At most [`PINNED_MAX`] buffers stay registered (least
//!   recently used ones are deregistered and registered again when next used). Unregistering the
//!   buffer (`unregister_memory`, Python's `unregister_buffer`) deregisters its MR and bumps the
//!   generation: that is how the cache learns the memory may be freed, so a real NIC never reads or
//!   writes pages the application has given back.
//! - **Any other memory** is registered for the call (page-aligned ranges, merged within the
//!   call) and deregistered when the call's work requests have completed: nothing is cached that
//!   the application could free behind the cache's back.

use std::collections::BTreeMap;
use std::sync::Arc;

use mmc_hal::rdma::safe::register_local;
use mmc_hal::rdma::{Device, Mr, RdmaError};

/// Application buffers kept registered at once.
pub(crate) const PINNED_MAX: usize = 1024;

const PAGE: u64 = 4096;

/// Counters of the RDMA backend (caller memory, bounce buffers, parallel services), for tests
/// and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MrStats {
    /// Slices served by a kept registration.
    pub hits: u64,
    /// Registrations of application buffers (first use, or after an eviction).
    pub pinned_registrations: u64,
    /// Registrations made for one call.
    pub call_registrations: u64,
    /// Kept registrations dropped because their buffer was unregistered.
    pub invalidations: u64,
    /// Kept registrations dropped to stay within [`PINNED_MAX`].
    pub evictions: u64,
    /// Bumped by every unregister.
    pub generation: u64,
    /// Bounce mode (`rdma_caller_memory = bounce`): bytes copied through staging buffers.
    pub staged_bytes: u64,
    /// Bounce mode: rounds (staging buffer fills) run.
    pub staging_rounds: u64,
    /// Batches whose shares for several services ran in parallel threads.
    pub parallel_batches: u64,
    /// The most services' shares that ran at once.
    pub max_parallel_services: u64,
}

struct Buffer {
    end: u64,
    mr: Option<Mr>,
    last_use: u64,
}

/// The registrations kept for application buffers.
pub(crate) struct MrCache {
    dev: Arc<dyn Device>,
    buffers: BTreeMap<u64, Buffer>,
    pinned: usize,
    tick: u64,
    stats: MrStats,
}

impl MrCache {
    pub(crate) fn new(dev: Arc<dyn Device>) -> MrCache {
        MrCache {
            dev,
            buffers: BTreeMap::new(),
            pinned: 0,
            tick: 0,
            stats: MrStats::default(),
        }
    }

    pub(crate) fn stats(&self) -> MrStats {
        self.stats
    }

    /// The application registered `len` bytes at `addr`.
    pub(crate) fn register(&mut self, addr: u64, len: u64) {
        if len == 0 {
            return;
        }
        self.buffers.entry(addr).or_insert(Buffer {
            end: addr.saturating_add(len),
            mr: None,
            last_use: 0,
        });
    }

    /// The application unregistered the buffer at `addr` (it may free it now): its MR goes.
    pub(crate) fn unregister(&mut self, addr: u64, _len: u64) {
        self.stats.generation += 1;
        if let Some(b) = self.buffers.remove(&addr) {
            if let Some(mr) = b.mr {
                let _ = self.dev.dereg_mr(&mr);
                self.pinned -= 1;
                self.stats.invalidations += 1;
            }
        }
    }

    /// The lkey of a kept registration covering `len` bytes at `addr`, registering the
    /// application buffer that holds them on first use; `None` when no registered buffer holds
    /// them.
    fn kept(&mut self, addr: u64, len: u64) -> Result<Option<u32>, RdmaError> {
        let end = addr.saturating_add(len);
        let Some((&start, b)) = self.buffers.range_mut(..=addr).next_back() else {
            return Ok(None);
        };
        if end > b.end {
            return Ok(None);
        }
        self.tick += 1;
        b.last_use = self.tick;
        if let Some(mr) = b.mr {
            self.stats.hits += 1;
            return Ok(Some(mr.lkey));
        }
        let blen = b.end - start;
        let mr = register_local(self.dev.as_ref(), start, blen)?;
        self.buffers.get_mut(&start).expect("found above").mr = Some(mr);
        self.pinned += 1;
        self.stats.pinned_registrations += 1;
        if self.pinned > PINNED_MAX {
            self.evict_one(start);
        }
        Ok(Some(mr.lkey))
    }

    fn evict_one(&mut self, keep: u64) {
        let victim = self
            .buffers
            .iter()
            .filter(|(s, b)| **s != keep && b.mr.is_some())
            .min_by_key(|(_, b)| b.last_use)
            .map(|(s, _)| *s);
        if let Some(s) = victim {
            let b = self.buffers.get_mut(&s).expect("just found");
            if let Some(mr) = b.mr.take() {
                let _ = self.dev.dereg_mr(&mr);
            }
            self.pinned -= 1;
            self.stats.evictions += 1;
        }
    }
}

/// The registrations of one call: kept ones looked up in the cache, the others made for the call
/// and deregistered when it drops (after the call's work requests completed).
pub(crate) struct CallMrs<'c> {
    cache: &'c mut MrCache,
    /// (start, end, MR) registered for this call.
    own: Vec<(u64, u64, Mr)>,
}

impl<'c> CallMrs<'c> {
    pub(crate) fn new(cache: &'c mut MrCache) -> CallMrs<'c> {
        CallMrs {
            cache,
            own: Vec::new(),
        }
    }

    /// The lkey for `len` bytes at `addr`.
    pub(crate) fn lkey(&mut self, addr: u64, len: u64) -> Result<u32, RdmaError> {
        if let Some(k) = self.cache.kept(addr, len)? {
            return Ok(k);
        }
        let end = addr.saturating_add(len);
        if let Some((_, _, mr)) = self.own.iter().find(|(s, e, _)| *s <= addr && end <= *e) {
            return Ok(mr.lkey);
        }
        let start = addr / PAGE * PAGE;
        let stop = end.div_ceil(PAGE) * PAGE;
        let mr = register_local(self.cache.dev.as_ref(), start, stop - start)?;
        self.cache.stats.call_registrations += 1;
        self.own.push((start, stop, mr));
        Ok(mr.lkey)
    }
}

impl Drop for CallMrs<'_> {
    fn drop(&mut self) {
        for (_, _, mr) in self.own.drain(..) {
            let _ = self.cache.dev.dereg_mr(&mr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmc_hal::rdma::sim::SimDevice;

    #[test]
    fn registered_buffers_hit_others_register_per_call_unregister_invalidates() {
        let dev = SimDevice::open("mr-cache-test");
        let mut c = MrCache::new(dev);
        let buf = vec![0u8; 64 << 10];
        let other = [0u8; 100];
        let (b, o) = (buf.as_ptr() as u64, other.as_ptr() as u64);
        c.register(b, buf.len() as u64);
        {
            let mut call = CallMrs::new(&mut c);
            let k1 = call.lkey(b + 10, 100).unwrap();
            let k2 = call.lkey(b + 4096, 4096).unwrap();
            assert_eq!(k1, k2, "one MR for the whole buffer");
            call.lkey(o, 50).unwrap();
            call.lkey(o + 50, 50).unwrap(); // same pages: the call's MR again
        }
        let s = c.stats();
        assert_eq!(
            (s.pinned_registrations, s.hits, s.call_registrations),
            (1, 1, 1)
        );
        {
            let mut call = CallMrs::new(&mut c);
            call.lkey(b, 1).unwrap();
            call.lkey(o, 1).unwrap();
        }
        let s = c.stats();
        assert_eq!(
            (s.pinned_registrations, s.hits, s.call_registrations),
            (1, 2, 2)
        );
        c.unregister(b, buf.len() as u64);
        let s = c.stats();
        assert_eq!((s.invalidations, s.generation), (1, 1));
        {
            let mut call = CallMrs::new(&mut c);
            call.lkey(b, 1).unwrap();
        }
        assert_eq!(
            c.stats().call_registrations,
            3,
            "no longer a registered buffer"
        );
    }

    #[test]
    fn the_least_recently_used_buffer_is_evicted_past_the_bound() {
        let dev = SimDevice::open("mr-cache-test");
        let mut c = MrCache::new(dev);
        let mem = vec![0u8; (PINNED_MAX + 1) * 64];
        let base = mem.as_ptr() as u64;
        for i in 0..=PINNED_MAX as u64 {
            c.register(base + i * 64, 64);
        }
        let mut call = CallMrs::new(&mut c);
        for i in 0..=PINNED_MAX as u64 {
            call.lkey(base + i * 64, 64).unwrap();
        }
        drop(call);
        let s = c.stats();
        assert_eq!(s.evictions, 1);
        assert_eq!(c.pinned, PINNED_MAX);
        // The first one went (least recently used): using it registers it again.
        let mut call = CallMrs::new(&mut c);
        call.lkey(base, 64).unwrap();
        drop(call);
        assert_eq!(c.stats().pinned_registrations, PINNED_MAX as u64 + 2);
    }
}
