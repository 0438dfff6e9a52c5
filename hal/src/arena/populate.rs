//! Background population of the page tables of an arena mapped from another process's memfd
//! ([`super::Arena::from_fd_populate`]).
//!
//! The process that created a pool pre-faulted it, so its pages exist, but a second process's
//! fresh mapping of the same memfd has no page-table entries: without help, its first write into
//! each 4 KiB page takes a minor fault (on the project's VM about 2 GB/s instead of 8+). Here a
//! thread walks the mapping in [`CHUNK`]-sized pieces with `madvise(MADV_POPULATE_READ)` (or
//! `_WRITE`) while the caller's copies may already run: a copy that gets ahead of it takes the
//! faults it would have taken anyway, and the populate then skips those pages. On a shared shmem
//! mapping a read fault maps the page writable (shmem has no write notification) and maps its
//! present neighbours too (fault-around, 16 pages by default), so `Read` takes about 16x fewer
//! faults than `Write`, and the writes after it take none (measured: see the README,
//! Performance).
//!
//! Bounded: at most [`MAX_ACTIVE`] populate threads run their chunks at once in a process (the
//! others wait, cancellably), each chunk holds the mapping lock only for its piece, and dropping
//! the arena cancels its populate between chunks and joins the thread before the mapping goes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a mapping of another process's arena gets its page tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Populate {
    /// Nothing: the first write into each page faults.
    Off,
    /// `MADV_POPULATE_READ` on a background thread (fault-around: few faults; the default).
    Read,
    /// `MADV_POPULATE_WRITE` on a background thread (one fault per page).
    Write,
}

impl Populate {
    /// From the environment variable `MMC_SHM_POPULATE` (`off`, `read`, `write`); `Read` when
    /// unset or unknown.
    pub fn from_env() -> Populate {
        match std::env::var("MMC_SHM_POPULATE").as_deref() {
            Ok("off") | Ok("0") | Ok("none") => Populate::Off,
            Ok("write") => Populate::Write,
            Ok("read") | Err(_) => Populate::Read,
            Ok(other) => {
                tracing::warn!(
                    value = other,
                    "MMC_SHM_POPULATE: unknown value (off, read, write): using read"
                );
                Populate::Read
            }
        }
    }
}

/// Bytes populated per `madvise` call: short enough that cancelling, and `mmap` / `munmap` of
/// other threads (which wait for the mapping lock), never wait long.
const CHUNK: usize = 4 << 20;

/// Populate threads of this process that run chunks at the same time.
pub const MAX_ACTIVE: usize = 2;

/// Running populate threads, and a wake-up for those waiting for a slot.
static ACTIVE: Mutex<usize> = Mutex::new(0);
static SLOT_FREED: Condvar = Condvar::new();

/// One of the [`MAX_ACTIVE`] slots, released on drop.
struct Slot;

impl Slot {
    /// Waits for a slot; `None` once `cancel` is set.
    fn take(cancel: &AtomicBool) -> Option<Slot> {
        let mut active = ACTIVE.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            if *active < MAX_ACTIVE {
                *active += 1;
                return Some(Slot);
            }
            active = SLOT_FREED
                .wait_timeout(active, Duration::from_millis(20))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *ACTIVE.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        SLOT_FREED.notify_one();
    }
}

/// A background populate of one mapping; cancelled and joined on drop.
pub(crate) struct Populator {
    cancel: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Populator {
    /// Start populating `len` bytes at `base` (a mapping that outlives the returned value: the
    /// owner drops this first). `None` when `how` is `Off` or no thread could be started (the
    /// mapping then simply faults on first touch).
    pub(crate) fn start(name: &str, base: *mut u8, len: usize, how: Populate) -> Option<Populator> {
        let advice = match how {
            Populate::Off => return None,
            Populate::Read => libc::MADV_POPULATE_READ,
            Populate::Write => libc::MADV_POPULATE_WRITE,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (c, d) = (cancel.clone(), done.clone());
        let arena = name.to_owned();
        let addr = base as usize;
        let spawned = std::thread::Builder::new()
            .name("mmc-populate".into())
            .spawn(move || {
                if let Some(_slot) = Slot::take(&c) {
                    run(&arena, addr, len, advice, &c);
                }
                d.store(true, Ordering::Release);
            });
        match spawned {
            Ok(handle) => Some(Populator {
                cancel,
                done,
                handle: Some(handle),
            }),
            Err(e) => {
                tracing::debug!(arena = name, error = %e, "no populate thread: pages fault on first touch");
                None
            }
        }
    }

    /// True once the thread finished (populated, cancelled or failed).
    pub(crate) fn finished(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

impl Drop for Populator {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The populate loop: `advice` over `[addr, addr + len)` in chunks, until done, cancelled, or the
/// kernel refuses (before 5.14 it does not know the advice: then the pages fault on first touch).
fn run(arena: &str, addr: usize, len: usize, advice: libc::c_int, cancel: &AtomicBool) {
    let t = Instant::now();
    let mut off = 0;
    while off < len {
        if cancel.load(Ordering::Relaxed) {
            tracing::debug!(arena, populated = off, "populate cancelled");
            return;
        }
        let n = CHUNK.min(len - off);
        // SAFETY: `[addr + off, addr + off + n)` lies inside the arena's live mapping: the arena
        // owns the `Populator` and drops it (cancel + join) before it unmaps. MADV_POPULATE_*
        // only faults in page-table entries (the pages of a shared memfd already exist); it
        // never changes the bytes, so copies racing with it are unaffected.
        let rc = unsafe { libc::madvise((addr + off) as *mut libc::c_void, n, advice) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::debug!(arena, error = %e, populated = off, "populate stopped: pages fault on first touch");
            return;
        }
        off += n;
    }
    tracing::debug!(
        arena,
        bytes = len,
        ms = t.elapsed().as_millis() as u64,
        "page tables populated"
    );
}
