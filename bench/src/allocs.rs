//! Heap allocations per operation: a counting global allocator.
//!
//! Counts, per thread, every `alloc`, `alloc_zeroed` and `realloc` (a `realloc` may move: it is
//! an allocation as far as the hot path is concerned). The 4 KiB rows report the allocations of
//! the calling thread during each call, divided by the calls: the client's own work on the hot
//! path. Threads of the meta service and of an embedded local service in this process are not
//! counted (their work is not the client's); a thread the client spawns for a call is, in the
//! allocations its spawning makes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: allocations while the thread's locals are torn down are not counted.
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every method forwards to the system allocator with the same arguments; counting
// touches only a const-initialised thread-local `Cell` (no allocation, no reentry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations this thread made so far.
pub fn count() -> u64 {
    COUNT.with(Cell::get)
}

/// Run `f`, returning its result and the allocations this thread made meanwhile.
pub fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = count();
    let out = f();
    (out, count() - before)
}

/// Allocations per call, over the steady state: the first `warm` calls (connections opened,
/// buffers grown, leases taken) are left out.
pub fn per_call(counts: &[u64], warm: usize) -> f64 {
    let steady = counts.get(warm..).unwrap_or(&[]);
    if steady.is_empty() {
        return 0.0;
    }
    steady.iter().sum::<u64>() as f64 / steady.len() as f64
}
