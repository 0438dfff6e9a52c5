//! The simulator's transport backend: the [`Transport`] seam the real client's backends implement,
//! over the simulated network and clock.
//!
//! | path | provides | completes |
//! |---|---|---|
//! | same host (client and service on one simulated host) | enters the service's fence word at submit, copies and checks the word in a later event (`ShmEnd`), as a real shm client's check, copy and re-check can straddle a re-registration | after about 1 ms per KiB, sometimes much later (a descheduled thread) |
//! | other hosts, one-sided (`--rdma`, half of them; `sim/rdma.rs`) | lowered to work requests; the fence entered with FETCH_ADD + READ, each WRITE / READ an event at the service (no service CPU), the fence checked and left | after the last work request; an error completion fails it |
//! | other hosts (the TCP-like path) | a `DataReq` message carrying a write's bytes; the service enters and leaves its fence around the copy and replies (`DataRep`, carrying a read's bytes) | when the reply arrives; lost messages never complete (the operation's deadline ends it) |
//!
//! It refuses at once (an outcome at submit) a rank that does not exist or whose service is down
//! (the socket is gone). A write's bytes are copied into its message at submit (the simulated
//! wire); a read's bytes are delivered into the client's buffer when its completion arrives
//! ([`Sim::client_transfer_done`]), so no borrow of the caller's memory outlives `submit`.
//! `--canary` skips the fence on both paths: the run must then fail.

use mmc_controlplane::{Error, Result};

use super::{CopyReq, Ev, Sim};
use crate::client::{Dir, Transfer};
use crate::transport::{Completions, Job, Mem, Transport};

/// The simulated transport for one client's batch of transfers (`seq`).
pub(crate) struct SimTransport<'s> {
    pub sim: &'s mut Sim,
    pub client: usize,
    pub gen: u64,
    pub seq: u64,
}

pub(crate) fn local_error(rank: u32, why: &str) -> Error {
    Error::LocalUnreachable {
        endpoint: format!("rank {rank}"),
        reason: why.to_string(),
    }
}

impl Transport for SimTransport<'_> {
    fn submit(&mut self, jobs: Vec<Job<'_>>, done: &mut Completions) {
        for job in jobs {
            let data = match job.mem {
                Mem::Src(src) => Some(src.concat()),
                // Delivered into the client's buffer when the copy completes.
                Mem::Dst(_) => None,
                Mem::DevSrc(_) | Mem::DevDst(_) => {
                    unreachable!("the simulated cluster moves host memory only")
                }
            };
            debug_assert_eq!(data.is_some(), job.t.dir == Dir::Write);
            if let Err(e) = self.start(job.idx, job.t, data) {
                let fresh = done.set(job.idx, Err(e));
                debug_assert!(fresh, "one outcome per job");
            }
        }
    }
}

impl SimTransport<'_> {
    /// Start one copy; `Err` is its outcome at once.
    fn start(&mut self, idx: usize, t: Transfer, data: Option<Vec<u8>>) -> Result<()> {
        let (client, gen, seq) = (self.client, self.gen, self.seq);
        let sim = &mut *self.sim;
        let canary = sim.cfg.canary;
        let local = t.fence.rank as usize;
        let host = sim.clients[client].state.as_ref().expect("alive").host;
        let Some(node) = sim.locals.get(local) else {
            return Err(local_error(t.fence.rank, "no such rank"));
        };
        let local_gen = node.gen;
        let Some(l) = node.state.as_ref() else {
            // A same-host client sees the socket close; a remote one gets connection refused.
            return Err(local_error(t.fence.rank, "service is gone"));
        };
        let req = CopyReq {
            client,
            gen,
            local,
            local_gen,
            seq,
            idx,
            t,
            data,
        };
        if l.host != host {
            if sim.cfg.rdma && sim.rng.chance(500_000) {
                sim.rdma_start(req);
            } else {
                sim.send(Ev::DataReq(req));
            }
            return Ok(());
        }
        // Same host: enter the service's fence word, copy later.
        if !canary {
            l.fence
                .enter_detached(t.fence.incarnation)
                .map_err(|e| local_error(t.fence.rank, &e.to_string()))?;
        }
        // A copy takes about 1 ms per KiB here, and now and then its thread is descheduled for a
        // while (but less than the service's drain bound: a copy that outlives the drain is one
        // whose client died, and a dead client writes nothing).
        let mut delay = sim.rng.range(0, 2) + t.len / 1024;
        if sim.rng.chance(50_000) {
            delay += sim.rng.range(20, 80);
        }
        sim.at(delay, Ev::ShmEnd(req));
        Ok(())
    }
}

impl Sim {
    /// The incarnation under which the meta core places objects in `rank`'s pool now, if the
    /// service runs it (else writes there cannot touch what the directory describes).
    pub(crate) fn placing_incarnation(&self, rank: u32) -> Option<u64> {
        let inc = self.meta.member_incarnation(rank)?;
        let l = self.locals.get(rank as usize)?.state.as_ref()?;
        match &l.membership {
            Some((i, _)) if *i == inc => Some(inc),
            _ => None,
        }
    }

    /// Apply one copy at local `local` (fence already entered unless `canary`); the bytes read.
    fn copy(
        &mut self,
        local: usize,
        t: &Transfer,
        data: Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>> {
        let canary = self.cfg.canary;
        let inc_now = self.placing_incarnation(t.fence.rank);
        let l = self.locals[local].state.as_ref().expect("alive");
        let check = if canary {
            l.check(
                t.fence.rank,
                l.membership.as_ref().map_or(0, |m| m.0),
                t.fence.segment,
                t.offset,
                t.len,
            )
            .or_else(|e| {
                if l.membership.is_some() && (t.offset + t.len) as usize <= l.pool.len() {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        } else {
            l.check(
                t.fence.rank,
                t.fence.incarnation,
                t.fence.segment,
                t.offset,
                t.len,
            )
        };
        if self.trace {
            eprintln!(
                "{:>6} {:>6} copy at local {local}: {t:?} -> {check:?}",
                self.step, self.now
            );
        }
        check?;
        let range = t.offset as usize..(t.offset + t.len) as usize;
        match data {
            Some(bytes) => {
                let meta = &self.meta;
                if let Err(e) =
                    self.oracle
                        .check_write(meta, self.now, t.fence.rank, inc_now, t.offset, t.len)
                {
                    self.fail(e);
                }
                let l = self.locals[local].state.as_mut().expect("alive");
                l.pool[range].copy_from_slice(&bytes);
                Ok(None)
            }
            None => Ok(Some(l.pool[range].to_vec())),
        }
    }

    pub(crate) fn serve_data(&mut self, c: CopyReq) {
        let CopyReq {
            client,
            gen,
            local,
            local_gen,
            seq,
            idx,
            t,
            data,
        } = c;
        let out = if self.locals[local].gen != local_gen || self.locals[local].state.is_none() {
            Err(local_error(t.fence.rank, "connection reset"))
        } else if self.cfg.canary {
            self.copy(local, &t, data)
        } else {
            let entered = self.locals[local]
                .state
                .as_ref()
                .expect("alive")
                .fence
                .enter_detached(t.fence.incarnation);
            match entered {
                Err(e) => Err(local_error(t.fence.rank, &e.to_string())),
                Ok(()) => {
                    let out = self.copy(local, &t, data);
                    self.leave_fence(local, &t, out)
                }
            }
        };
        self.send(Ev::DataRep {
            client,
            gen,
            seq,
            idx,
            out,
        });
    }

    pub(crate) fn shm_end(&mut self, c: CopyReq) {
        let CopyReq {
            client,
            gen,
            local,
            local_gen,
            seq,
            idx,
            t,
            data,
        } = c;
        if self.locals[local].gen != local_gen || self.locals[local].state.is_none() {
            // The service died: its word went with it.
            return self.client_transfer_done(
                client,
                gen,
                seq,
                idx,
                Err(local_error(t.fence.rank, "service is gone")),
            );
        }
        if self.clients[client].gen != gen {
            // The client died mid-copy: its count stays in the word (the drain times out).
            return;
        }
        let out = self.copy(local, &t, data);
        let out = if self.cfg.canary {
            out
        } else {
            self.leave_fence(local, &t, out)
        };
        self.client_transfer_done(client, gen, seq, idx, out);
    }

    /// After a fenced copy: leave the word, and fail the copy if the fence moved meanwhile (a
    /// read's bytes are then dropped).
    fn leave_fence(
        &self,
        local: usize,
        t: &Transfer,
        out: Result<Option<Vec<u8>>>,
    ) -> Result<Option<Vec<u8>>> {
        let l = self.locals[local].state.as_ref().expect("alive");
        let held = l.fence.incarnation() == t.fence.incarnation;
        l.fence.leave();
        if held {
            out
        } else {
            Err(local_error(t.fence.rank, "fence moved during the copy"))
        }
    }

    /// A copy of client `j`'s batch `seq` completed: deliver a read's bytes into the client's
    /// buffer and record the outcome; late, stale and duplicate completions are dropped.
    pub(crate) fn client_transfer_done(
        &mut self,
        j: usize,
        gen: u64,
        seq: u64,
        idx: usize,
        out: Result<Option<Vec<u8>>>,
    ) {
        if self.clients[j].gen != gen || self.clients[j].state.is_none() {
            return;
        }
        let Some(run) = self.clients[j].state.as_mut().expect("alive").run.as_mut() else {
            return;
        };
        if run.seq != seq || !run.outcomes.is_pending(idx) {
            return;
        }
        let t = run.op.transfers()[idx];
        let out = out.map(|bytes| {
            if let Some(bytes) = bytes {
                // The buffer was sized for this read when the batch was submitted.
                let end = (t.item_offset + t.len) as usize;
                run.bufs[t.item][t.item_offset as usize..end].copy_from_slice(&bytes);
            }
        });
        run.outcomes.set(idx, out);
        if self.try_complete(j) {
            self.drive(j);
        }
    }
}
