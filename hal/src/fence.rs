//! The epoch fence. A local service's pools are reused across its incarnations (a re-registration
//! after a meta restart or a missed heartbeat keeps the same memory), but the meta service forgets
//! every object of the old incarnation. A copy planned under incarnation N must therefore never
//! touch the pools once incarnation N+1 may have placed new objects there.
//!
//! Every transfer carries a [`Fence`] (rank, incarnation, segment). The local service publishes its
//! state in a [`FenceWord`]: the current incarnation (0 while closed) and the number of copies in
//! flight. A copy [`FenceWord::enter`]s (the incarnation must match), copies, checks
//! [`FenceWord::still`] (a read whose fence moved returns an error, never the bytes) and leaves.
//! Before registering again the service [`FenceWord::close`]s the fence and waits until no copy is
//! in flight, so no writer of incarnation N is still copying when N+1's first object is placed.
//!
//! The word is two atomics; the real service keeps them in a shared page that same-host clients
//! map (their copies enter the same word), the simulator in plain memory.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a transfer is fenced on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The local service's rank.
    pub rank: u32,
    /// The incarnation the meta service handed out with the placement or lookup (never 0).
    pub incarnation: u64,
    /// The segment (one pool of the service).
    pub segment: u32,
}

/// Why a fenced copy was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("fence: the copy was planned for incarnation {expected}, the service is at {current} (0 = re-registering)")]
pub struct Stale {
    /// The incarnation the copy was planned for.
    pub expected: u64,
    /// The incarnation the service publishes now.
    pub current: u64,
}

/// A local service's published fence state.
#[derive(Debug, Default)]
#[repr(C)]
pub struct FenceWord {
    incarnation: AtomicU64,
    inflight: AtomicU64,
}

impl FenceWord {
    /// A closed fence (no incarnation yet).
    pub const fn new() -> FenceWord {
        FenceWord {
            incarnation: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
        }
    }

    /// The published incarnation; 0 while closed.
    pub fn incarnation(&self) -> u64 {
        self.incarnation.load(Ordering::SeqCst)
    }

    /// Copies in flight.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::SeqCst)
    }

    /// Start a copy planned for `incarnation`. The count goes up before the check (both SeqCst),
    /// so either [`FenceWord::close`]'s drain sees this copy, or this copy sees the fence closed.
    pub fn enter(&self, incarnation: u64) -> Result<FenceGuard<'_>, Stale> {
        assert_ne!(
            incarnation, 0,
            "a transfer is never planned for a closed fence"
        );
        self.inflight.fetch_add(1, Ordering::SeqCst);
        let guard = FenceGuard { word: self };
        let current = self.incarnation();
        if current != incarnation {
            return Err(Stale {
                expected: incarnation,
                current,
            });
        }
        Ok(guard)
    }

    /// [`FenceWord::enter`] for a driver that holds a copy across events (the simulator, a copy
    /// split over completions): on `Ok` the caller must call [`FenceWord::leave`] exactly once.
    pub fn enter_detached(&self, incarnation: u64) -> Result<(), Stale> {
        let guard = self.enter(incarnation)?;
        std::mem::forget(guard);
        Ok(())
    }

    /// End a copy begun with [`FenceWord::enter_detached`].
    pub fn leave(&self) {
        let before = self.inflight.fetch_sub(1, Ordering::SeqCst);
        assert!(before > 0, "fence left more often than entered");
    }

    /// Close the fence: copies that have not entered yet are refused. The caller then waits until
    /// [`FenceWord::inflight`] is 0 (bounded) before registering again.
    pub fn close(&self) {
        self.incarnation.store(0, Ordering::SeqCst);
    }

    /// Open the fence at a new incarnation.
    pub fn publish(&self, incarnation: u64) {
        assert_ne!(incarnation, 0);
        let old = self.incarnation.swap(incarnation, Ordering::SeqCst);
        assert!(
            old == 0 || old == incarnation,
            "publish {incarnation} over an open fence at {old}: close and drain first"
        );
    }
}

/// A copy in flight; dropping it leaves the fence.
#[must_use = "the copy is fenced only while the guard lives"]
#[derive(Debug)]
pub struct FenceGuard<'a> {
    word: &'a FenceWord,
}

impl FenceGuard<'_> {
    /// After the copy: did the fence hold all along? A read that fails this returns no bytes.
    pub fn still(&self, incarnation: u64) -> Result<(), Stale> {
        let current = self.word.incarnation();
        if current == incarnation {
            Ok(())
        } else {
            Err(Stale {
                expected: incarnation,
                current,
            })
        }
    }
}

impl Drop for FenceGuard<'_> {
    fn drop(&mut self) {
        let before = self.word.inflight.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "fence in-flight count underflow");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_matches_incarnation_and_close_refuses_new_copies() {
        let w = FenceWord::new();
        assert!(w.enter(7).is_err(), "closed fence refuses");
        assert_eq!(w.inflight(), 0, "a refused copy leaves no count behind");
        w.publish(7);
        let g = w.enter(7).expect("open at 7");
        assert_eq!(w.inflight(), 1);
        assert!(w.enter(8).is_err());
        w.close();
        assert!(g.still(7).is_err(), "a read across a close is refused");
        assert!(w.enter(7).is_err());
        assert_eq!(
            w.inflight(),
            1,
            "the drain still waits for the copy that entered"
        );
        drop(g);
        assert_eq!(w.inflight(), 0);
        w.publish(9);
        assert!(w.enter(9).is_ok());
    }
}
