//! Lowering: a transfer list becomes chains of one-sided work requests. A pure function of the
//! transfers and the device's limits; no verbs calls, no I/O.
//!
//! - Each transfer is a contiguous remote range (rkey, address) and the caller's registered
//!   pieces, in order, whose lengths add up to the range's.
//! - Pieces are split at the maximum message size (and at 4 GiB, the largest scatter-gather
//!   entry); empty pieces vanish.
//! - Up to `max_sge` local pieces are gathered into one work request while the remote range stays
//!   contiguous; adjacent local pieces (same lkey, one after the other in memory) coalesce into one
//!   entry, and a transfer whose remote range continues the previous one's continues its work
//!   request.
//! - Every `signal_every`-th work request of a chain is signaled, and the last one of every chain,
//!   so the completion queue holds at most `ceil(sq_depth / signal_every)` entries per chain;
//!   chains are cut at `sq_depth` work requests (a driver posts a chain once the previous one has
//!   completed, or keeps at most `sq_depth` outstanding).
//! - Order: work requests keep the transfers' order; on a reliable connection completions come in
//!   posting order, so a signaled success proves every earlier work request of the queue pair
//!   succeeded, and the last work request (always signaled) completing proves the whole list
//!   landed: a put commits only after that.

use super::{Opcode, Sge, WorkRequest};

/// The device limits and queue settings the lowering obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Scatter-gather entries per work request (>= 1).
    pub max_sge: u32,
    /// Bytes per work request (>= 1).
    pub max_msg_sz: u64,
    /// Work requests per chain: the send queue's depth (>= 1).
    pub sq_depth: u32,
    /// Signal every this many work requests (>= 1); the last of a chain always is.
    pub signal_every: u32,
    /// WRITEs of at most this many bytes are sent inline.
    pub max_inline: u32,
}

/// Which way the bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Local pieces -> remote range (RDMA WRITE).
    Put,
    /// Remote range -> local pieces (RDMA READ).
    Get,
}

/// A piece of the caller's memory, registered under `lkey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Address.
    pub addr: u64,
    /// Length.
    pub len: u64,
    /// The MR that holds it.
    pub lkey: u32,
}

/// One transfer: a contiguous remote range inside one remote MR, and the caller's pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xfer {
    /// The remote MR's key.
    pub rkey: u32,
    /// The range's first byte, in the peer's address space.
    pub remote_addr: u64,
    /// The caller's pieces, in order; the range is as long as they are together.
    pub pieces: Vec<Piece>,
}

/// The lowered list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lowered {
    /// Chains of at most `sq_depth` work requests, in order; `wr_id`s count from 0 across them.
    pub chains: Vec<Vec<WorkRequest>>,
    /// Per transfer, the `wr_id` of the last work request carrying its bytes (`None`: it has no
    /// byte). A transfer succeeded when every work request up to that one did.
    pub last_wr: Vec<Option<u64>>,
}

impl Lowered {
    /// Work requests in all chains.
    pub fn wrs(&self) -> usize {
        self.chains.iter().map(Vec::len).sum()
    }
}

/// Largest scatter-gather entry (its length is a u32).
const SGE_MAX: u64 = u32::MAX as u64;

/// Lower `xfers` (all one way) to work-request chains under `limits`.
pub fn lower(way: Way, xfers: &[Xfer], limits: Limits) -> Lowered {
    assert!(
        limits.max_sge >= 1 && limits.max_msg_sz >= 1 && limits.sq_depth >= 1,
        "limits must allow one entry, one byte and one work request: {limits:?}"
    );
    let opcode = match way {
        Way::Put => Opcode::Write,
        Way::Get => Opcode::Read,
    };
    let mut wrs: Vec<WorkRequest> = Vec::new();
    let mut last_wr = Vec::with_capacity(xfers.len());
    // The open work request: its remote end (where the next byte must go to continue it).
    let mut open: Option<u64> = None;
    for x in xfers {
        let mut remote = x.remote_addr;
        let mut last = None;
        for p in x.pieces.iter().filter(|p| p.len > 0) {
            let (mut addr, mut left) = (p.addr, p.len);
            while left > 0 {
                let continues =
                    open == Some(remote) && wrs.last().is_some_and(|w| w.rkey == x.rkey);
                if !continues || wrs.last().is_some_and(|w| w.len() >= limits.max_msg_sz) {
                    wrs.push(WorkRequest {
                        wr_id: wrs.len() as u64,
                        opcode,
                        sges: Vec::new(),
                        remote_addr: remote,
                        rkey: x.rkey,
                        signaled: false,
                        fence: false,
                        inline: false,
                    });
                }
                let wr = wrs.last_mut().expect("one is open");
                let room = limits.max_msg_sz - wr.len();
                let n = left.min(room);
                let coalesce = wr.sges.last().is_some_and(|s| {
                    s.lkey == p.lkey && s.addr + s.len as u64 == addr && s.len as u64 + n <= SGE_MAX
                });
                let n = if coalesce {
                    let s = wr.sges.last_mut().expect("checked");
                    s.len += n as u32;
                    n
                } else if wr.sges.len() < limits.max_sge as usize {
                    let n = n.min(SGE_MAX);
                    wr.sges.push(Sge {
                        addr,
                        len: n as u32,
                        lkey: p.lkey,
                    });
                    n
                } else {
                    // Out of entries: the next bytes start a new work request.
                    open = None;
                    continue;
                };
                addr += n;
                left -= n;
                remote += n;
                open = Some(remote);
                last = Some(wr.wr_id);
            }
        }
        last_wr.push(last);
    }
    let mut chains: Vec<Vec<WorkRequest>> = Vec::new();
    let depth = limits.sq_depth as usize;
    let every = limits.signal_every.max(1) as usize;
    let mut it = wrs.into_iter().peekable();
    while it.peek().is_some() {
        let mut chain: Vec<WorkRequest> = it.by_ref().take(depth).collect();
        let n = chain.len();
        for (i, wr) in chain.iter_mut().enumerate() {
            wr.signaled = (i + 1) % every == 0 || i + 1 == n;
            wr.inline = way == Way::Put && wr.len() <= limits.max_inline as u64;
        }
        chains.push(chain);
    }
    Lowered { chains, last_wr }
}

#[cfg(test)]
#[path = "lower_tests.rs"]
mod tests;
