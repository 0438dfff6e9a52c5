//! The epoch fence. A local service's pools are reused across its incarnations (a re-registration
//! after a meta restart or a missed heartbeat keeps the same memory), but the meta service forgets
//! every object of the old incarnation. A copy planned under incarnation N must therefore never
//! touch the pools once incarnation N+1 may have placed new objects there.
//!
//! Every transfer carries a [`Fence`] (rank, incarnation, segment). The local service publishes its
//! state in a [`FenceWord`]: the current incarnation (0 while closed) and the number of copies in
//! flight. A copy [`FenceWord::enter`]s (the incarnation must match), copies, checks
//! [`FenceGuard::still`] (a read whose fence moved returns an error, never the bytes) and leaves.
//! Before registering again the service [`FenceWord::close`]s the fence and waits until no copy is
//! in flight, so no writer of incarnation N is still copying when N+1's first object is placed.
//!
//! The word is two atomics; the real service keeps them in a [`SharedFence`], a memfd page that
//! same-host clients map (their copies enter the same word), the simulator in plain memory.

use std::sync::atomic::{AtomicU64, Ordering};

// The shared page (feature `os`) maps a memfd; the word itself is plain atomics, which is all the
// sans-IO cores and the simulator need.
#[cfg(feature = "os")]
use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd},
};

#[cfg(feature = "os")]
use memmap2::{MmapOptions, MmapRaw};

#[cfg(feature = "os")]
use crate::HalError;

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

/// Bytes of a [`SharedFence`]'s page (the word uses the first 16).
#[cfg(feature = "os")]
pub const FENCE_PAGE_BYTES: u64 = 4096;

/// A [`FenceWord`] in a 4 KiB memfd page mapped read-write and `MAP_SHARED`: the local service
/// creates it, same-host clients map the descriptor it hands them with the pools', and every copy
/// on either side enters the same word. (Atomics in a shared mapping are the standard way to share
/// them between processes: the page is the same physical memory in each.)
#[cfg(feature = "os")]
#[derive(Debug)]
pub struct SharedFence {
    map: MmapRaw,
    file: File,
}

#[cfg(feature = "os")]
impl SharedFence {
    /// A fresh page: a closed fence with nothing in flight (the page starts zeroed).
    pub fn new(name: &str) -> Result<SharedFence, HalError> {
        let cname = CString::new(name.replace('\0', "_"))
            .map_err(|_| HalError::InvalidSize(format!("fence name {name:?}")))?;
        // SAFETY: `cname` is a valid NUL-terminated C string that outlives the call; memfd_create
        // has no other preconditions.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(HalError::Io {
                context: format!("memfd_create of the fence page {name}"),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just returned by memfd_create, is open, and nothing else owns it.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(FENCE_PAGE_BYTES)
            .map_err(|source| HalError::Io {
                context: format!("sizing the fence page {name}"),
                source,
            })?;
        let fence = SharedFence::map(file)?;
        assert_eq!(fence.incarnation(), 0, "a fresh fence starts closed");
        assert_eq!(fence.inflight(), 0);
        Ok(fence)
    }

    /// Map the page another process created and handed over. Refuses a file smaller than a page.
    pub fn from_fd(fd: OwnedFd) -> Result<SharedFence, HalError> {
        let file = File::from(fd);
        let size = file
            .metadata()
            .map_err(|source| HalError::Io {
                context: "fstat of the handed-over fence page".into(),
                source,
            })?
            .len();
        if size < FENCE_PAGE_BYTES {
            return Err(HalError::InvalidSize(format!(
                "a fence page of {size} bytes, {FENCE_PAGE_BYTES} expected"
            )));
        }
        SharedFence::map(file)
    }

    fn map(file: File) -> Result<SharedFence, HalError> {
        let map = MmapOptions::new()
            .len(FENCE_PAGE_BYTES as usize)
            .map_raw(&file)
            .map_err(|e| HalError::Map {
                bytes: FENCE_PAGE_BYTES,
                reason: format!("mmap of the fence page: {e}"),
            })?;
        // What deref relies on: a page-aligned mapping of at least one word.
        assert!(map.len() >= std::mem::size_of::<FenceWord>());
        assert_eq!(map.as_ptr() as usize % std::mem::align_of::<FenceWord>(), 0);
        Ok(SharedFence { map, file })
    }

    /// The page's first byte (the [`FenceWord`]: the incarnation at byte 0, the copies in flight
    /// at byte 8), for registering it with an RDMA device: peers then read the incarnation and
    /// enter and leave with 8-byte atomics, as same-host clients do through their mapping.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

#[cfg(feature = "os")]
impl std::ops::Deref for SharedFence {
    type Target = FenceWord;

    fn deref(&self) -> &FenceWord {
        // SAFETY: the mapping is page-aligned (asserted in `map`), at least a page long, readable
        // and writable, and lives as long as `self`. `FenceWord` is `repr(C)` of two `AtomicU64`,
        // for which every bit pattern is valid, and all access to the page, in this process and in
        // the others that map it, goes through those atomics, so shared references are sound.
        unsafe { &*(self.map.as_ptr() as *const FenceWord) }
    }
}

#[cfg(feature = "os")]
impl AsFd for SharedFence {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "os")]
    #[test]
    fn a_shared_fence_is_one_word_in_two_mappings() {
        let a = SharedFence::new("mmc-fence-test").unwrap();
        let fd = a.as_fd().try_clone_to_owned().unwrap();
        let b = SharedFence::from_fd(fd).unwrap();
        assert_eq!(b.incarnation(), 0, "fresh page: closed");
        a.publish(5);
        let g = b.enter(5).expect("the other mapping sees the publication");
        assert_eq!(a.inflight(), 1, "and the service sees the copy in flight");
        a.close();
        assert!(g.still(5).is_err());
        drop(g);
        assert_eq!(a.inflight(), 0);
        let short = SharedFence::new("short").unwrap();
        short.file.set_len(16).unwrap();
        let fd = short.as_fd().try_clone_to_owned().unwrap();
        assert!(SharedFence::from_fd(fd).is_err(), "a short page is refused");
    }

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
