//! One-sided RDMA copies in the simulated cluster (`mmc-sim --rdma`): a copy to a service on
//! another host goes, with probability 1/2 (a mixed pool), the way the real RDMA transport moves
//! it instead of as a data request: lowered by the real lowering
//! ([`mmc_hal::rdma::lower`], small simulated NIC limits so an object becomes several work
//! requests and chains) and executed as one event per work request at the service, without its
//! CPU (a frozen service's memory is still read and written):
//!
//! 1. enter the fence: FETCH_ADD +1 of the in-flight word and a fenced READ of the incarnation,
//!    which must be the copy's (else FETCH_ADD -1 and the copy fails);
//! 2. each WRITE or READ, in order, bounds-checked against the pool like an rkey's MR (a write
//!    is checked by the oracle when it lands);
//! 3. leave: a fenced READ of the incarnation (a copy that straddled a re-registration fails)
//!    and FETCH_ADD -1.
//!
//! Now and then a work request fails with an error completion (retry exceeded): the client
//! resets the queue pair, leaves the fence and the copy fails (a get then tries another
//! replica). A service that died fails the copy; a client that died leaves its count in the
//! word (the drain is bounded). `--canary` skips the fence here too.

use mmc_hal::rdma::lower::{lower, Limits, Piece, Way, Xfer};
use mmc_hal::rdma::Opcode;

use super::transport::local_error;
use super::{CopyReq, Ev, Sim};
use crate::client::Dir;

/// The simulated NIC's limits: 512-byte messages, 2 entries, chains of 6 work requests.
const LIMITS: Limits = Limits {
    max_sge: 2,
    max_msg_sz: 512,
    sq_depth: 6,
    signal_every: 2,
    max_inline: 0,
};

/// Error completions per million work requests.
const WR_ERRORS_PER_MILLION: u64 = 2_000;

/// Where a one-sided copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Enter,
    /// The next work request (index into `wrs`).
    Data(usize),
    Leave,
}

/// A one-sided copy in flight.
pub(crate) struct RdmaCopy {
    pub req: CopyReq,
    /// The lowered work requests: (offset in the pool, length), in order.
    pub wrs: Vec<(u64, u64)>,
    pub phase: Phase,
    /// Entered the fence (so an error must leave it).
    pub entered: bool,
    /// A read's bytes so far.
    pub read: Vec<u8>,
}

/// The lowered work requests of a copy of `len` bytes at `offset` of the pool: (offset, len).
pub(crate) fn lowered(dir: Dir, offset: u64, len: u64) -> Vec<(u64, u64)> {
    let way = match dir {
        Dir::Write => Way::Put,
        Dir::Read => Way::Get,
    };
    let x = [Xfer {
        rkey: 1,
        remote_addr: offset,
        pieces: vec![Piece {
            addr: 1 << 40,
            len,
            lkey: 1,
        }],
    }];
    let l = lower(way, &x, LIMITS);
    l.chains
        .iter()
        .flatten()
        .map(|w| {
            debug_assert!(matches!(w.opcode, Opcode::Write | Opcode::Read));
            (w.remote_addr, w.len())
        })
        .collect()
}

impl Sim {
    /// Start a one-sided copy: the first work requests reach the service after the wire's delay.
    pub(crate) fn rdma_start(&mut self, req: CopyReq) {
        let wrs = lowered(req.t.dir, req.t.offset, req.t.len);
        self.summary.rdma_copies += 1;
        let delay = self.rng.range(0, 2);
        self.at(
            delay,
            Ev::Rdma(Box::new(RdmaCopy {
                req,
                wrs,
                phase: Phase::Enter,
                entered: false,
                read: Vec::new(),
            })),
        );
    }

    /// One step of a one-sided copy at the service.
    pub(crate) fn rdma_step(&mut self, mut c: Box<RdmaCopy>) {
        let (local, rank) = (c.req.local, c.req.t.fence.rank);
        if self.locals[local].gen != c.req.local_gen || self.locals[local].state.is_none() {
            // The service died: its memory (and fence word) with it. Retry exceeded.
            return self.rdma_done(
                &c.req,
                Err(local_error(rank, "RDMA: retry exceeded (service gone)")),
            );
        }
        if self.clients[c.req.client].gen != c.req.gen {
            // The client died: its queue pair is gone, its count stays in the word.
            return;
        }
        let canary = self.cfg.canary;
        match c.phase {
            Phase::Enter => {
                if !canary {
                    let l = self.locals[local].state.as_ref().expect("alive");
                    // FETCH_ADD +1, fenced READ of the incarnation; on a mismatch the client's
                    // FETCH_ADD -1 follows (enter_detached undoes its count).
                    if let Err(e) = l.fence.enter_detached(c.req.t.fence.incarnation) {
                        return self.rdma_done(&c.req, Err(local_error(rank, &e.to_string())));
                    }
                    c.entered = true;
                }
                c.phase = if c.wrs.is_empty() {
                    Phase::Leave
                } else {
                    Phase::Data(0)
                };
            }
            Phase::Data(i) => {
                if self.rng.chance(WR_ERRORS_PER_MILLION) {
                    self.summary.rdma_error_completions += 1;
                    return self.rdma_failed(&mut c, "RDMA: RetryExceeded completion");
                }
                let (off, len) = c.wrs[i];
                let pool_len = self.locals[local].state.as_ref().expect("alive").pool.len() as u64;
                if off + len > pool_len {
                    return self
                        .rdma_failed(&mut c, "RDMA: RemoteAccess completion (out of the MR)");
                }
                let range = off as usize..(off + len) as usize;
                match c.req.t.dir {
                    Dir::Write => {
                        let inc_now = self.placing_incarnation(rank);
                        if let Err(e) = self
                            .oracle
                            .check_write(&self.meta, self.now, rank, inc_now, off, len)
                        {
                            self.fail(e);
                        }
                        let at = (off - c.req.t.offset) as usize;
                        let data = c.req.data.as_ref().expect("a write carries its bytes");
                        let l = self.locals[local].state.as_mut().expect("alive");
                        l.pool[range].copy_from_slice(&data[at..at + len as usize]);
                    }
                    Dir::Read => {
                        let l = self.locals[local].state.as_ref().expect("alive");
                        c.read.extend_from_slice(&l.pool[range]);
                    }
                }
                self.summary.rdma_wrs += 1;
                c.phase = if i + 1 < c.wrs.len() {
                    Phase::Data(i + 1)
                } else {
                    Phase::Leave
                };
            }
            Phase::Leave => {
                let held = canary || {
                    let l = self.locals[local].state.as_ref().expect("alive");
                    let held = l.fence.incarnation() == c.req.t.fence.incarnation;
                    l.fence.leave();
                    held
                };
                c.entered = false;
                let out = if !held {
                    Err(local_error(rank, "fence moved during the copy"))
                } else if c.req.t.dir == Dir::Read {
                    Ok(Some(std::mem::take(&mut c.read)))
                } else {
                    Ok(None)
                };
                return self.rdma_done(&c.req, out);
            }
        }
        // The next work request executes shortly after (chains posted back to back).
        let delay = self.rng.range(0, 1);
        self.at(delay, Ev::Rdma(c));
    }

    /// An error completion: the queue pair is reset, the fence left, the copy fails.
    fn rdma_failed(&mut self, c: &mut RdmaCopy, why: &str) {
        if c.entered {
            let l = self.locals[c.req.local].state.as_ref().expect("alive");
            l.fence.leave();
            c.entered = false;
        }
        let e = local_error(c.req.t.fence.rank, why);
        self.rdma_done(&c.req, Err(e));
    }

    /// The copy's outcome reaches the client (its completion queue).
    fn rdma_done(&mut self, req: &CopyReq, out: mmc_controlplane::Result<Option<Vec<u8>>>) {
        let delay = self.rng.range(0, 1);
        self.at(
            delay,
            Ev::DataRep {
                client: req.client,
                gen: req.gen,
                seq: req.seq,
                idx: req.idx,
                out,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_lower_into_bounded_work_requests_covering_every_byte() {
        assert!(lowered(Dir::Write, 100, 0).is_empty());
        let w = lowered(Dir::Read, 1000, 1300);
        assert_eq!(w, vec![(1000, 512), (1512, 512), (2024, 276)]);
        let w = lowered(Dir::Write, 0, 4096);
        assert_eq!(w.len(), 8);
        assert!(w.windows(2).all(|p| p[0].0 + p[0].1 == p[1].0));
    }
}
