//! The layer-wise path's phases, each a call of its own (vllm-ascend's `batch_alloc`,
//! `batch_copy`, `batch_write_finish`, `batch_add_lease`, `batch_remove_lease`): stage puts
//! (allocate only: [`mmc_core::client::PutOp::stage`]), copy bytes to or from ranges of the pools
//! they name (through the same transports as every put and get: own pool, same-host mapped pools,
//! TCP), finish them ([`mmc_core::client::FinishOp`]); take read leases without reading
//! ([`MetaKind::Lease`]) and give them back.
//!
//! The caller keeps track of what it staged and leased and copies only inside those ranges: the
//! pool ranges here are not checked against any object (the Python layer does that).

use std::time::Instant;

use mmc_controlplane::msg::{Replica, ServiceAddr};
use mmc_controlplane::Result;
use mmc_core::client::{check_lengths, Action, Dir, FinishOp, MetaKind, PutOp, Transfer};
use mmc_core::transport::{DevSpan, Job, Mem};
use mmc_hal::fence::Fence;

pub use mmc_core::client::STAGED_WRITE_MS;

use super::{Client, PutOptions};

/// A put allocated and not yet finished: its bytes go to every replica.
#[derive(Clone, Debug)]
pub struct StagedPut {
    pub token: u64,
    pub size: u64,
    pub replicas: Vec<Replica>,
    pub services: Vec<ServiceAddr>,
    /// When it was allocated; writes are safe until `allocated + STAGED_WRITE_MS`.
    pub allocated: Instant,
}

/// A read lease held by the caller: the object cannot be freed or its space reused under it
/// until it is released or `until` passes.
#[derive(Clone, Debug)]
pub struct Leased {
    pub lease: u64,
    pub size: u64,
    pub crc: u32,
    pub replicas: Vec<Replica>,
    pub services: Vec<ServiceAddr>,
    /// When the lease ends (counted from when the lookup was sent).
    pub until: Instant,
}

/// A byte range of one pool of one local service incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolRange {
    pub rank: u32,
    pub incarnation: u64,
    pub segment: u32,
    pub offset: u64,
}

impl Client {
    /// Allocate `keys` (create-only) without writing them: one result per key.
    pub fn stage_puts(
        &self,
        keys: &[&str],
        sizes: &[u64],
        opts: &PutOptions,
    ) -> Result<Vec<Result<StagedPut>>> {
        check_lengths(keys.len(), sizes.len(), "sizes")?;
        self.renew_session(self.deadline());
        let mut op = PutOp::stage(
            keys,
            sizes,
            opts,
            self.local_rank(),
            self.now_ms(),
            self.timeout_ms(),
        )?
        .with_client_id(self.client_id);
        loop {
            match op.poll(self.now_ms()) {
                Action::Done => break,
                Action::Transfer => unreachable!("staging moves no bytes"),
                other => self.control_step(&mut op, other),
            }
        }
        let mut staged = op.take_staged().into_iter().peekable();
        let results = op.results()?;
        Ok(results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r?;
                let s = staged
                    .next_if(|s| s.item == i)
                    .expect("a key staged without error has its placement");
                Ok(StagedPut {
                    token: s.token,
                    size: sizes[i],
                    replicas: s.replicas,
                    services: s.services,
                    allocated: self.instant(s.at_ms),
                })
            })
            .collect())
    }

    /// Commit staged puts as written (`ok`, with the CRC-32C of their bytes) or free them.
    pub fn finish_puts(
        &self,
        keys: &[&str],
        tokens: &[u64],
        ok: &[bool],
        crcs: &[u32],
    ) -> Result<Vec<Result<()>>> {
        let mut op = FinishOp::new(keys, tokens, ok, crcs, self.now_ms(), self.timeout_ms())?;
        loop {
            match op.poll(self.now_ms()) {
                Action::Done => return Ok(op.results()),
                Action::Transfer => unreachable!("a commit moves no bytes"),
                other => self.control_step(&mut op, other),
            }
        }
    }

    /// Take a read lease on each key (committed objects only) without reading it.
    pub fn lease(&self, keys: &[&str]) -> Result<Vec<Result<Leased>>> {
        let mut op =
            mmc_core::client::MetaOp::new(MetaKind::Lease, keys, self.now_ms(), self.timeout_ms())?;
        loop {
            match op.poll(self.now_ms()) {
                Action::Done => break,
                Action::Transfer => unreachable!("a lease moves no bytes"),
                other => self.control_step(&mut op, other),
            }
        }
        let services = op.services().to_vec();
        Ok(op
            .results()?
            .into_iter()
            .map(|r| {
                r.map(|i| Leased {
                    services: services
                        .iter()
                        .filter(|s| i.replicas.iter().any(|r| r.rank == s.rank))
                        .cloned()
                        .collect(),
                    lease: i.lease,
                    size: i.size,
                    crc: i.crc,
                    replicas: i.replicas,
                    until: self.instant(i.lease_until_ms),
                })
            })
            .collect())
    }

    /// Give read leases back (one-way; the meta service also ends them at their expiry).
    pub fn release_leases(&self, leases: Vec<u64>) {
        self.release(leases);
    }

    /// Write each source into its pool range: one outcome per write. The ranges must lie inside
    /// objects the caller staged (and has not finished).
    pub fn write_ranges(
        &self,
        writes: Vec<(PoolRange, &[u8])>,
        services: &[ServiceAddr],
        deadline: Instant,
    ) -> Vec<Result<()>> {
        let items = writes.into_iter().map(|(r, s)| (r, Mem::Src(vec![s])));
        self.run_ranges(items.collect(), services, deadline)
    }

    /// Fill each destination from its pool range: one outcome per read. The ranges must lie
    /// inside objects the caller holds a read lease on (or staged itself).
    pub fn read_ranges(
        &self,
        reads: Vec<(PoolRange, &mut [u8])>,
        services: &[ServiceAddr],
        deadline: Instant,
    ) -> Vec<Result<()>> {
        let items = reads.into_iter().map(|(r, d)| (r, Mem::Dst(vec![d])));
        self.run_ranges(items.collect(), services, deadline)
    }

    /// [`Client::write_ranges`] from device memory (of the process's device backend).
    pub fn write_ranges_device(
        &self,
        writes: Vec<(PoolRange, DevSpan)>,
        services: &[ServiceAddr],
        deadline: Instant,
    ) -> Vec<Result<()>> {
        let items = writes.into_iter().map(|(r, s)| (r, Mem::DevSrc(vec![s])));
        self.run_ranges(items.collect(), services, deadline)
    }

    /// [`Client::read_ranges`] into device memory.
    pub fn read_ranges_device(
        &self,
        reads: Vec<(PoolRange, DevSpan)>,
        services: &[ServiceAddr],
        deadline: Instant,
    ) -> Vec<Result<()>> {
        let items = reads.into_iter().map(|(r, d)| (r, Mem::DevDst(vec![d])));
        self.run_ranges(items.collect(), services, deadline)
    }

    /// One job per range (a write for source memory, a read for destination memory).
    fn run_ranges(
        &self,
        items: Vec<(PoolRange, Mem<'_>)>,
        services: &[ServiceAddr],
        deadline: Instant,
    ) -> Vec<Result<()>> {
        let jobs = items
            .into_iter()
            .enumerate()
            .map(|(idx, (r, mem))| {
                let dir = match mem {
                    Mem::Src(_) | Mem::DevSrc(_) => Dir::Write,
                    Mem::Dst(_) | Mem::DevDst(_) => Dir::Read,
                };
                Job {
                    idx,
                    t: transfer(dir, r, mem.len() as usize, idx),
                    mem,
                }
            })
            .collect();
        self.transports.run(jobs, services, deadline)
    }
}

fn transfer(dir: Dir, r: PoolRange, len: usize, item: usize) -> Transfer {
    Transfer {
        dir,
        fence: Fence {
            rank: r.rank,
            incarnation: r.incarnation,
            segment: r.segment,
        },
        offset: r.offset,
        len: len as u64,
        item,
        item_offset: 0,
    }
}
