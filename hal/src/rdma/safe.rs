//! Safe wrappers over the verbs traits' two unsafe calls (`reg_mr`, `post_send`), for crates
//! that forbid `unsafe` (the data plane):
//!
//! - [`Registered`]: shared memory ([`Region`]: a pool [`Arena`], the [`SharedFence`] page)
//!   registered with remote access; it holds the memory (an `Arc`) and deregisters before
//!   releasing it.
//! - [`register_local`]: caller memory registered for local access only (no peer can name it);
//!   a stale registration is harmless to memory safety: the simulated NIC touches local memory only
//!   through entries [`execute`] checked against borrowed slices, and a real NIC pins the pages it
//!   registered (a stale MR reads or writes the old pages, which is why the transport's MR cache
//!   invalidates entries).
//! - [`Scratch`]: a few registered words for FETCH_ADD results and fence reads.
//! - [`execute`]: posts chains whose every local entry lies in memory borrowed by a [`LocalMem`]
//!   (writable where the NIC writes) and returns only when every posted work request has
//!   completed, or the queue pair was reset.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{access, Completion, Device, Mr, Opcode, QueuePair, RdmaError, WcStatus, WorkRequest};
use crate::fence::{SharedFence, FENCE_PAGE_BYTES};
use crate::Arena;

/// Memory that may be registered with remote access: mapped for as long as the value lives, and
/// shared memory that other processes may read and write concurrently anyway.
///
/// # Safety
/// `region()` must name memory that stays mapped while `self` lives and that tolerates writes by
/// peers at any time (no Rust reference to it may assume exclusive access).
pub unsafe trait Region: Send + Sync {
    /// (first byte's address, length).
    fn region(&self) -> (u64, u64);
}

// SAFETY: an arena is a shared memfd mapping for its whole life, accessed only through raw
// copies (its API hands out no references into it), and written by other processes already.
unsafe impl Region for Arena {
    fn region(&self) -> (u64, u64) {
        (self.as_mut_ptr() as u64, self.len())
    }
}

// SAFETY: the fence page is a shared memfd mapping for its whole life, accessed only through
// atomics, by this process and by same-host clients.
unsafe impl Region for SharedFence {
    fn region(&self) -> (u64, u64) {
        (self.as_mut_ptr() as u64, FENCE_PAGE_BYTES)
    }
}

/// A region registered with a device (split at its `max_mr_size`); deregistered on drop, before
/// the region is released.
pub struct Registered {
    dev: Arc<dyn Device>,
    mrs: Vec<Mr>,
    base: u64,
    _mem: Arc<dyn Region>,
}

impl Registered {
    /// Register all of `mem` with `access`.
    pub fn new(
        dev: Arc<dyn Device>,
        mem: Arc<dyn Region>,
        access: u32,
    ) -> Result<Registered, RdmaError> {
        let (base, len) = mem.region();
        // SAFETY: `mem` is a Region (mapped while it lives, tolerates peers' writes); this value
        // holds it until the MRs are deregistered in drop.
        let mrs = unsafe { super::register_region(dev.as_ref(), base, len, access)? };
        Ok(Registered {
            dev,
            mrs,
            base,
            _mem: mem,
        })
    }

    /// The MRs, in address order.
    pub fn mrs(&self) -> &[Mr] {
        &self.mrs
    }

    /// The region's first byte.
    pub fn base(&self) -> u64 {
        self.base
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        for mr in &self.mrs {
            if let Err(e) = self.dev.dereg_mr(mr) {
                tracing::warn!(error = %e, "deregistering an MR failed");
            }
        }
    }
}

/// Register `len` bytes at `addr` for local access only (the NIC reads them for a WRITE and
/// writes them for a READ, only as [`execute`] allows). An unmapped range is the provider's error.
pub fn register_local(dev: &dyn Device, addr: u64, len: u64) -> Result<Mr, RdmaError> {
    // SAFETY: no remote access: no peer can name this MR. Local access happens only through
    // `execute`, which checks every entry against memory borrowed for the call (the simulated NIC
    // copies through those entries only; a real NIC pins the registered pages, so even a stale MR
    // never touches memory this process unmapped).
    unsafe { dev.reg_mr(addr, len, access::LOCAL_WRITE) }
}

/// Words registered for FETCH_ADD results and fence reads.
pub struct Scratch {
    words: Box<UnsafeCell<[u64; 8]>>,
    mr: Mr,
    dev: Arc<dyn Device>,
}

// SAFETY: the words are touched only through &mut self (execute) or after completions.
unsafe impl Send for Scratch {}

impl Scratch {
    /// Eight registered words.
    pub fn new(dev: Arc<dyn Device>) -> Result<Scratch, RdmaError> {
        let words = Box::new(UnsafeCell::new([0u64; 8]));
        let addr = words.get() as u64;
        let mr = register_local(dev.as_ref(), addr, 64)?;
        Ok(Scratch { words, mr, dev })
    }

    /// Word `i`'s address.
    pub fn addr(&self, i: usize) -> u64 {
        assert!(i < 8);
        self.words.get() as u64 + 8 * i as u64
    }

    /// The MR's lkey.
    pub fn lkey(&self) -> u32 {
        self.mr.lkey
    }

    /// Word `i` (after the work request that wrote it completed).
    pub fn get(&mut self, i: usize) -> u64 {
        self.words.get_mut()[i]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.dev.dereg_mr(&self.mr);
    }
}

/// The local memory a call's work requests may touch, borrowed for as long as this lives.
#[derive(Default)]
pub struct LocalMem<'a> {
    /// (start, end, writable).
    ranges: Vec<(u64, u64, bool)>,
    _life: PhantomData<&'a mut [u8]>,
}

impl<'a> LocalMem<'a> {
    /// Nothing yet.
    pub fn new() -> LocalMem<'a> {
        LocalMem::default()
    }

    /// A WRITE may read `s`.
    pub fn src(&mut self, s: &'a [u8]) {
        let a = s.as_ptr() as u64;
        self.ranges.push((a, a + s.len() as u64, false));
    }

    /// A READ may write `d`.
    pub fn dst(&mut self, d: &'a mut [u8]) {
        let a = d.as_mut_ptr() as u64;
        self.ranges.push((a, a + d.len() as u64, true));
    }

    /// Work requests may write the scratch words.
    pub fn scratch(&mut self, s: &'a mut Scratch) {
        let a = s.words.get() as u64;
        self.ranges.push((a, a + 64, true));
    }

    fn allows(&self, addr: u64, len: u64, write: bool) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        self.ranges
            .iter()
            .any(|&(s, e, w)| s <= addr && end <= e && (w || !write))
    }
}

/// What [`execute`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Executed {
    /// The first error completion (work request id, status); work requests before it succeeded,
    /// it and every later one did not.
    pub error: Option<(u64, WcStatus)>,
    /// The deadline passed before every completion came; the queue pair was reset.
    pub timed_out: bool,
    /// Work requests posted.
    pub posted: u64,
}

impl Executed {
    /// True when work request `wr_id` (posted by this call) succeeded.
    pub fn ok(&self, wr_id: u64) -> bool {
        !self.timed_out && self.error.is_none_or(|(e, _)| wr_id < e)
    }
}

/// Post `chains` one after the other on `qp` (the next once the previous one's last work request
/// completed) and wait for their completions, until `deadline`. Refused before anything is
/// posted when a local entry lies outside `mem` (or a READ's entry in read-only memory). After an
/// error completion no further chain is posted. Returns only when nothing posted is outstanding.
///
/// Waiting: the completion queue is polled in a spin for `busy_poll` after each post (busy-poll
/// mode); after that (at once when `busy_poll` is zero: blocking mode) the completion queue is
/// armed, polled once more, and the thread sleeps on its completion channel until an event or
/// the deadline.
pub fn execute(
    qp: &mut dyn QueuePair,
    chains: &[Vec<WorkRequest>],
    mem: &LocalMem<'_>,
    deadline: Instant,
    busy_poll: Duration,
) -> Result<Executed, RdmaError> {
    for wr in chains.iter().flatten() {
        let write = !matches!(wr.opcode, Opcode::Write);
        if let Some(s) = wr
            .sges
            .iter()
            .find(|s| !mem.allows(s.addr, s.len as u64, write))
        {
            return Err(RdmaError::Call {
                call: "post_send",
                reason: format!(
                    "work request {}: entry {:#x}+{} lies outside the call's {} memory",
                    wr.wr_id,
                    s.addr,
                    s.len,
                    if write { "writable" } else { "borrowed" }
                ),
            });
        }
    }
    let mut out = Executed::default();
    let mut cq: Vec<Completion> = Vec::with_capacity(64);
    for chain in chains {
        let Some(last) = chain.last() else { continue };
        assert!(last.signaled, "a chain ends with a signaled work request");
        // SAFETY: every entry was checked above to lie in memory `mem` borrows (writable where the
        // NIC writes), which outlives this call; this function returns only after the chain's
        // last work request completed (completions come in order, and after an error every later
        // one completes flushed) or after the queue pair was reset, so nothing outlives the borrow.
        unsafe { qp.post_send(chain)? };
        out.posted += chain.len() as u64;
        let spin_until = Instant::now() + busy_poll;
        let mut spins = 0u32;
        let mut armed = false;
        loop {
            cq.clear();
            let n = match qp.poll_cq(&mut cq, 64) {
                Ok(n) => n,
                Err(e) => {
                    let _ = qp.reset();
                    return Err(e);
                }
            };
            let mut finished = false;
            for c in &cq {
                if c.status != WcStatus::Success && out.error.is_none() {
                    out.error = Some((c.wr_id, c.status));
                }
                finished |= c.wr_id == last.wr_id;
            }
            if finished {
                break;
            }
            if n > 0 {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                out.timed_out = true;
                qp.reset()?;
                return Ok(out);
            }
            if now < spin_until {
                spins += 1;
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            // Blocking: arm, poll once more (completions added before arming raise no event),
            // then sleep on the channel.
            let waited = if armed {
                armed = false;
                qp.wait_event(deadline - now).map(|_| ())
            } else {
                armed = true;
                qp.req_notify()
            };
            if let Err(e) = waited {
                let _ = qp.reset();
                return Err(e);
            }
        }
        if out.error.is_some() {
            break;
        }
    }
    Ok(out)
}
