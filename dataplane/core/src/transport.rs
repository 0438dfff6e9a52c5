//! The transport seam: how an operation's [`Transfer`]s become bytes moved, whatever moves them.
//!
//! An operation ([`PutOp`](crate::client::PutOp), [`GetOp`](crate::client::GetOp)) asks for a
//! list of transfers; its driver resolves each one against the caller's memory into a [`Job`],
//! hands the jobs to the [`Transport`] backend chosen for their service, and feeds the outcomes,
//! one per transfer and in transfer order, back to `on_transfers` once [`Completions`] holds them
//! all. The operation logic never sees which backend moved the bytes.
//!
//! # Caller memory
//!
//! A transfer names the caller's memory (key `item`, byte `item_offset` into that key's value,
//! whose parts are concatenated) instead of pointing at it. [`write_jobs`] and [`read_jobs`] turn
//! the names into the caller's own slices, split at part boundaries with [`runs`]: a backend
//! copies straight between those slices and the pool (one `memcpy` per run, or the runs as one
//! vectored socket call). Nothing is copied to build a job and nothing is allocated per byte; a
//! job holds one small list of slices.
//!
//! # What every backend provides
//!
//! - `submit(jobs, done)`: start every job; report exactly one outcome per job under its `idx`
//!   through [`Completions::set`], before `submit` returns (a backend that blocks) or later, as
//!   completions arrive (the simulator). An `Err` names whose fault it was (the fence refused the
//!   copy: `LocalUnreachable`; the service refused the range: `Remote`; the deadline: `Timeout`).
//! - The epoch fence, checked before and after the copy: the job's `t.fence` (rank, incarnation,
//!   segment) must still be the service's when the copy starts and when it ends, else the copy's
//!   outcome is an error and the bytes (a read's) are not the object's.
//! - Nothing past the job: a backend moves `t.len` bytes between the job's slices and `t.offset`
//!   of `t.fence.segment`, and touches no other memory.
//! - A backend that completes later may not keep the borrowed slices past `submit`: it copies what
//!   it sends (the simulator's messages) and delivers what it reads when the completion comes; a
//!   hardware backend that reads and writes the caller's memory asynchronously (RDMA verbs, device
//!   copies) must have its driver keep that memory registered and alive until every job of the
//!   batch has completed, as the blocking driver does by waiting for them.
//!
//! # Backends
//!
//! | backend | where | provides | refuses |
//! |---|---|---|---|
//! | embedded | `mmc-dataplane` `transport/embedded.rs` | memcpy into the client's own local service's pools, inside its fence, at once | every other rank |
//! | shm | `mmc-dataplane` `transport/shm.rs` | memcpy into a same-host service's pools mapped from its memfds, inside its shared fence word, at once | a job for another incarnation than the mapping's (the fence, -3018); the chooser sends it only same-host ranks it could map |
//! | tcp | `mmc-dataplane` `transport/tcp.rs` | one vectored request per (service, lane), lanes and services in parallel threads; the service checks the fence | ranks without an address |
//! | sim | `mmc-core` `sim/transport.rs` | simulated copies: same-host ones enter the fence word and finish in a later event, others are messages | nothing: faults come from the simulated cluster |
//!
//! A new backend (device copies to and from HBM, RDMA verbs) implements [`Transport`] and gets a
//! branch in the driver's chooser (`mmc-dataplane`'s `transport::Chooser`), which picks one
//! backend per service; the operations and the other backends do not change.

use mmc_controlplane::Result;

use crate::client::{runs, Dir, Transfer};

/// One transfer with the caller's memory it copies from or into, resolved to slices.
#[derive(Debug)]
pub struct Job<'a> {
    /// The transfer's index in the operation's `transfers()`: its outcome is reported under it.
    pub idx: usize,
    pub t: Transfer,
    pub mem: Mem<'a>,
}

/// The caller's memory of one job: the slices, in order, whose lengths add up to `t.len`.
#[derive(Debug)]
pub enum Mem<'a> {
    /// A write's source (the value's bytes, straight from the caller).
    Src(Vec<&'a [u8]>),
    /// A read's destination (the caller's buffers, filled in place).
    Dst(Vec<&'a mut [u8]>),
    /// A write's source in device memory (the caller's device buffers: never dereferenced on the
    /// host; a backend copies with the device backend, or stages through host memory).
    DevSrc(Vec<DevSpan>),
    /// A read's destination in device memory.
    DevDst(Vec<DevSpan>),
}

/// A range of device memory (an address the device backend resolves, and a length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevSpan {
    /// Device address of the first byte.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
}

impl Mem<'_> {
    /// Bytes this job moves.
    pub fn len(&self) -> u64 {
        match self {
            Mem::Src(s) => s.iter().map(|s| s.len() as u64).sum(),
            Mem::Dst(d) => d.iter().map(|d| d.len() as u64).sum(),
            Mem::DevSrc(d) | Mem::DevDst(d) => d.iter().map(|d| d.len).sum(),
        }
    }

    /// True for device memory.
    pub fn is_device(&self) -> bool {
        matches!(self, Mem::DevSrc(_) | Mem::DevDst(_))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A backend: it moves the bytes of jobs between the caller's memory and services' pools.
pub trait Transport {
    /// Start `jobs` (all bound for services this backend was chosen for) and report one outcome
    /// per job through `done`, now or later (see the module docs for what a backend provides).
    fn submit(&mut self, jobs: Vec<Job<'_>>, done: &mut Completions);
}

/// The outcomes of one batch of transfers, one per transfer, filled in any order.
#[derive(Debug, Default)]
pub struct Completions {
    outcomes: Vec<Option<Result<()>>>,
    pending: usize,
}

impl Completions {
    /// Room for `transfers` outcomes, none in yet.
    pub fn new(transfers: usize) -> Completions {
        Completions {
            outcomes: (0..transfers).map(|_| None).collect(),
            pending: transfers,
        }
    }

    /// Record transfer `idx`'s outcome. False (and nothing recorded) if it is not of this batch or
    /// already has one: a late or duplicate completion is dropped, never counted twice.
    pub fn set(&mut self, idx: usize, outcome: Result<()>) -> bool {
        match self.outcomes.get_mut(idx) {
            Some(slot @ None) => {
                *slot = Some(outcome);
                self.pending -= 1;
                true
            }
            _ => false,
        }
    }

    /// True while transfer `idx` of this batch awaits its outcome.
    pub fn is_pending(&self, idx: usize) -> bool {
        matches!(self.outcomes.get(idx), Some(None))
    }

    /// True once every transfer has its outcome.
    pub fn is_complete(&self) -> bool {
        self.pending == 0
    }

    /// The outcomes in transfer order, for `on_transfers`; the batch must be complete.
    pub fn take(&mut self) -> Vec<Result<()>> {
        assert!(
            self.is_complete(),
            "{} transfers still pending",
            self.pending
        );
        std::mem::take(&mut self.outcomes)
            .into_iter()
            .map(|o| o.expect("complete: every slot is set"))
            .collect()
    }
}

/// Resolve write transfers against `values` (key `i`'s value is `values[i]`'s parts
/// concatenated): one job per transfer, in order, whose slices borrow the caller's bytes.
pub fn write_jobs<'a>(transfers: &[Transfer], values: &[&'a [&'a [u8]]]) -> Vec<Job<'a>> {
    transfers
        .iter()
        .enumerate()
        .map(|(idx, t)| {
            assert_eq!(t.dir, Dir::Write, "a write batch");
            let parts = values[t.item];
            let lens = parts.iter().map(|p| p.len() as u64);
            let src: Vec<&'a [u8]> = runs(lens, t.item_offset, t.len)
                .map(|(part, at, n)| &parts[part][at as usize..(at + n) as usize])
                .collect();
            debug_assert_eq!(src.iter().map(|s| s.len() as u64).sum::<u64>(), t.len);
            Job {
                idx,
                t: *t,
                mem: Mem::Src(src),
            }
        })
        .collect()
}

/// Resolve read transfers (at most one per key) against `bufs` (key `i` is read into `bufs[i]`'s
/// parts, filled in order): one job per transfer, in order, whose slices are disjoint ranges of
/// the caller's buffers.
pub fn read_jobs<'a>(transfers: &[Transfer], bufs: &'a mut [&mut [&mut [u8]]]) -> Vec<Job<'a>> {
    let mut by_item: Vec<Option<usize>> = vec![None; bufs.len()];
    for (idx, t) in transfers.iter().enumerate() {
        assert_eq!(t.dir, Dir::Read, "a read batch");
        assert!(
            by_item[t.item].replace(idx).is_none(),
            "one read per key per round"
        );
    }
    let mut jobs: Vec<Option<Job<'a>>> = (0..transfers.len()).map(|_| None).collect();
    for (item, parts) in bufs.iter_mut().enumerate() {
        let Some(idx) = by_item[item] else { continue };
        let t = transfers[idx];
        let lens: Vec<u64> = parts.iter().map(|p| p.len() as u64).collect();
        let mut dst = Vec::new();
        // Runs are in part order and disjoint: hand out each part's range once.
        let mut rest: &'a mut [&mut [u8]] = &mut parts[..];
        let mut base = 0usize;
        for (part, at, n) in runs(lens, t.item_offset, t.len) {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(part + 1 - base);
            base = part + 1;
            rest = tail;
            let p: &'a mut [u8] = head.last_mut().expect("the run's part");
            dst.push(&mut p[at as usize..(at + n) as usize]);
        }
        jobs[idx] = Some(Job {
            idx,
            t,
            mem: Mem::Dst(dst),
        });
    }
    jobs.into_iter()
        .map(|j| j.expect("every transfer names a key of the batch"))
        .collect()
}

/// Resolve transfers against device memory: `spans[i]` are key `i`'s device buffers (its value,
/// for a write; where it is read to, for a read), in order. One job per transfer, in order.
pub fn dev_jobs(transfers: &[Transfer], spans: &[&[DevSpan]]) -> Vec<Job<'static>> {
    transfers
        .iter()
        .enumerate()
        .map(|(idx, t)| {
            let parts = spans[t.item];
            let pieces: Vec<DevSpan> = runs(parts.iter().map(|p| p.len), t.item_offset, t.len)
                .map(|(part, at, n)| DevSpan {
                    addr: parts[part].addr + at,
                    len: n,
                })
                .collect();
            debug_assert_eq!(pieces.iter().map(|p| p.len).sum::<u64>(), t.len);
            Job {
                idx,
                t: *t,
                mem: match t.dir {
                    Dir::Write => Mem::DevSrc(pieces),
                    Dir::Read => Mem::DevDst(pieces),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmc_controlplane::Error;
    use mmc_hal::fence::Fence;

    fn t(dir: Dir, item: usize, item_offset: u64, len: u64) -> Transfer {
        Transfer {
            dir,
            fence: Fence {
                rank: 0,
                incarnation: 1,
                segment: 0,
            },
            offset: 0,
            len,
            item,
            item_offset,
        }
    }

    #[test]
    fn write_jobs_borrow_the_parts() {
        let a: &[&[u8]] = &[b"abc", b"defg"];
        let b: &[&[u8]] = &[b"xy"];
        let jobs = write_jobs(&[t(Dir::Write, 0, 2, 3), t(Dir::Write, 1, 0, 2)], &[a, b]);
        assert_eq!(jobs.len(), 2);
        match &jobs[0].mem {
            Mem::Src(s) => assert_eq!(s, &[&b"c"[..], &b"de"[..]]),
            _ => panic!("a write"),
        }
        assert!(std::ptr::eq(
            match &jobs[1].mem {
                Mem::Src(s) => s[0].as_ptr(),
                _ => unreachable!(),
            },
            b[0].as_ptr()
        ));
    }

    #[test]
    fn read_jobs_split_the_buffers() {
        let (mut p0, mut p1, mut q) = ([0u8; 3], [0u8; 4], [0u8; 2]);
        let mut a: [&mut [u8]; 2] = [&mut p0, &mut p1];
        let mut b: [&mut [u8]; 1] = [&mut q];
        let mut bufs: [&mut [&mut [u8]]; 2] = [&mut a, &mut b];
        // Transfer order differs from key order: jobs come back in transfer order.
        let mut jobs = read_jobs(&[t(Dir::Read, 1, 0, 2), t(Dir::Read, 0, 1, 5)], &mut bufs);
        assert_eq!((jobs[0].idx, jobs[1].idx), (0, 1));
        assert_eq!(jobs[1].mem.len(), 5);
        for job in &mut jobs {
            if let Mem::Dst(d) = &mut job.mem {
                for s in d.iter_mut() {
                    s.fill(7);
                }
            }
        }
        drop(jobs);
        assert_eq!((p0, p1, q), ([0, 7, 7], [7, 7, 7, 0], [7, 7]));
    }

    #[test]
    fn completions_count_each_transfer_once() {
        let mut done = Completions::new(2);
        assert!(done.set(1, Ok(())));
        assert!(!done.set(1, Err(Error::Internal("late".into()))));
        assert!(!done.set(2, Ok(())));
        assert!(!done.is_complete());
        assert!(done.set(0, Err(Error::Internal("x".into()))));
        let out = done.take();
        assert!(out[0].is_err() && out[1].is_ok());
    }
}
