//! Read leases given back in batches: a get's `Release` is one-way, but each one is still a
//! socket write that wakes the meta service (on a loopback, about half a round trip of the
//! caller's time). Small gets defer theirs: they are sent together once [`RELEASE_DEFER_MAX`]
//! leases or [`RELEASE_DEFER_BYTES`] of objects are held, or when the oldest has waited
//! [`RELEASE_DEFER_MS`] (checked at the client's next call), or at the client's end. Holding a
//! read lease longer only delays the reuse of its object's space (a removed or evicted object is
//! freed at its last release; leases expire on their own at `lease_ms`), so deferring is safe;
//! the bounds keep the space held small.

use mmc_controlplane::msg::Request;

/// Most leases held back.
pub const RELEASE_DEFER_MAX: usize = 64;
/// Most bytes of objects whose leases are held back.
pub const RELEASE_DEFER_BYTES: u64 = 4 << 20;
/// Longest a lease is held back (as seen at the client's next call).
pub const RELEASE_DEFER_MS: u64 = 2;

/// Leases waiting to be given back.
#[derive(Debug, Default)]
pub struct ReleaseBatch {
    leases: Vec<u64>,
    bytes: u64,
    since_ms: Option<u64>,
}

impl ReleaseBatch {
    /// Hold back `leases`, of objects of `bytes` in all.
    pub fn add(&mut self, now_ms: u64, leases: &[u64], bytes: u64) {
        if leases.is_empty() {
            return;
        }
        if self.leases.capacity() == 0 {
            self.leases.reserve(RELEASE_DEFER_MAX);
        }
        self.leases.extend_from_slice(leases);
        self.bytes = self.bytes.saturating_add(bytes);
        self.since_ms.get_or_insert(now_ms);
    }

    /// The `Release` to send now, if the batch is full or old enough.
    pub fn due(&mut self, now_ms: u64) -> Option<Request> {
        let since = self.since_ms?;
        let full = self.leases.len() >= RELEASE_DEFER_MAX || self.bytes >= RELEASE_DEFER_BYTES;
        if full || now_ms.saturating_sub(since) >= RELEASE_DEFER_MS {
            return self.take_all();
        }
        None
    }

    /// Every lease held back, as one `Release`.
    pub fn take_all(&mut self) -> Option<Request> {
        self.since_ms.take()?;
        self.bytes = 0;
        debug_assert!(!self.leases.is_empty());
        Some(Request::Release {
            leases: std::mem::take(&mut self.leases),
        })
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_when_full_heavy_or_old() {
        let mut b = ReleaseBatch::default();
        assert!(b.due(0).is_none());
        for i in 0..RELEASE_DEFER_MAX as u64 - 1 {
            b.add(10, &[i], 4096);
            assert!(b.due(10).is_none(), "held back");
        }
        b.add(10, &[99], 4096);
        match b.due(10) {
            Some(Request::Release { leases }) => assert_eq!(leases.len(), RELEASE_DEFER_MAX),
            other => panic!("{other:?}"),
        }
        assert!(b.is_empty() && b.due(1_000).is_none());
        b.add(20, &[1], RELEASE_DEFER_BYTES);
        assert!(b.due(20).is_some(), "a large object's lease goes at once");
        b.add(30, &[2], 10);
        assert!(b.due(30 + RELEASE_DEFER_MS - 1).is_none());
        assert!(b.due(30 + RELEASE_DEFER_MS).is_some(), "old enough");
        b.add(40, &[3], 10);
        assert!(matches!(b.take_all(), Some(Request::Release { leases }) if leases == [3]));
        assert!(b.take_all().is_none());
    }
}
