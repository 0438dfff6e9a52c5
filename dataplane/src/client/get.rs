//! Get, driven: the sans-IO [`GetOp`] decides (look up with a read lease, which replica to read
//! and which next when a copy fails, whether the lease held, release); this driver makes its meta
//! calls and hands its transfers, resolved to the caller's buffers, to the transport backends
//! (`crate::transport`), which fill them in place. With `verify_reads`, every form of get checks
//! the bytes each copy delivered against the object's checksum ([`GetOp::verify`]) before the
//! operation sees the outcome: a corrupt replica is a failed copy.

use mmc_controlplane::msg::Request;
use mmc_controlplane::Result;
use mmc_core::client::{check_lengths, Action, GetOp};
use mmc_core::transport::read_jobs;

use super::Client;
use crate::transport::OneCopy;

impl Client {
    /// The whole object, in a new buffer.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.flush_releases();
        let mut op = GetOp::new(
            &[key],
            &[u64::MAX],
            self.local_rank(),
            self.now_ms(),
            self.timeout_ms(),
        )?;
        let mut out = Vec::new();
        loop {
            match op.poll(self.now_ms()) {
                Action::Transfer => {
                    let size = op.size(0).expect("a transfer for a found key");
                    out.resize(size as usize, 0);
                    let mut parts: [&mut [u8]; 1] = [&mut out];
                    let mut bufs: [&mut [&mut [u8]]; 1] = [&mut parts];
                    self.read_step(&mut op, &mut bufs);
                }
                Action::MetaOneway(Request::Release { leases }) => {
                    self.release_later(&leases, op.size(0).unwrap_or(u64::MAX));
                }
                Action::Done => break,
                other => self.control_step(&mut op, other),
            }
        }
        op.results()?.remove(0)?;
        Ok(out)
    }

    /// Read one object into `buf`; returns its size. A buffer smaller than the object is
    /// `InvalidParam` and nothing is copied.
    pub fn get_into(&self, key: &str, buf: &mut [u8]) -> Result<u64> {
        let mut parts: [&mut [u8]; 1] = [buf];
        self.get_into_parts(key, &mut parts)
    }

    /// Read one object into `parts`, filled in order (layer-wise get); returns its size.
    pub fn get_into_parts(&self, key: &str, parts: &mut [&mut [u8]]) -> Result<u64> {
        let mut bufs: [&mut [&mut [u8]]; 1] = [parts];
        self.batch_get_into_parts(&[key], &mut bufs)?.remove(0)
    }

    /// Read many objects, each into one buffer; one result (the object's size) per key.
    pub fn batch_get_into(
        &self,
        keys: &[&str],
        bufs: &mut [&mut [u8]],
    ) -> Result<Vec<Result<u64>>> {
        let mut parts: Vec<[&mut [u8]; 1]> = bufs.iter_mut().map(|b| [&mut **b]).collect();
        let mut views: Vec<&mut [&mut [u8]]> = parts.iter_mut().map(|p| &mut p[..]).collect();
        self.batch_get_into_parts(keys, &mut views)
    }

    /// Read many objects, each into several pieces, with one lookup round trip.
    pub fn batch_get_into_parts(
        &self,
        keys: &[&str],
        bufs: &mut [&mut [&mut [u8]]],
    ) -> Result<Vec<Result<u64>>> {
        check_lengths(keys.len(), bufs.len(), "buffers")?;
        self.flush_releases();
        let capacities: Vec<u64> = bufs
            .iter()
            .map(|parts| parts.iter().map(|p| p.len() as u64).sum())
            .collect();
        let mut op = GetOp::new(
            keys,
            &capacities,
            self.local_rank(),
            self.now_ms(),
            self.timeout_ms(),
        )?;
        loop {
            match op.poll(self.now_ms()) {
                Action::Transfer => self.read_step(&mut op, bufs),
                Action::MetaOneway(Request::Release { leases }) => {
                    let bytes = (0..keys.len())
                        .filter_map(|i| op.size(i))
                        .fold(0u64, u64::saturating_add);
                    self.release_later(&leases, bytes);
                }
                Action::Done => return op.results(),
                other => self.control_step(&mut op, other),
            }
        }
    }

    fn read_step(&self, op: &mut GetOp, bufs: &mut [&mut [&mut [u8]]]) {
        self.before_transfer();
        // Every backend here completes (or abandons) each copy before `run` returns, so a round
        // may end before the call's deadline and fall over to other replicas.
        let deadline = self.instant(op.transfer_deadline_ms());
        let mut outcomes = match self.read_one(op, bufs) {
            Some(outcome) => vec![outcome],
            None => {
                let jobs = read_jobs(op.transfers(), bufs);
                self.transports.run(jobs, op.services(), deadline)
            }
        };
        if self.verify_reads {
            op.verify(bufs, &mut outcomes);
        }
        op.on_transfers(self.now_ms(), outcomes);
    }

    /// A round of one copy into one buffer, from the own pool or mapped same-host pools: one
    /// memcpy, without job lists (`None`: not such a round, run it through the transports).
    fn read_one(&self, op: &GetOp, bufs: &mut [&mut [&mut [u8]]]) -> Option<Result<()>> {
        let [t] = op.transfers() else {
            return None;
        };
        let [dst] = &mut *bufs[t.item] else {
            return None;
        };
        if t.item_offset != 0
            || (dst.len() as u64) < t.len
            || !self.transports.is_memcpy(t.fence.rank, op.services())
        {
            return None;
        }
        let mut alive = Vec::new();
        self.transports
            .copy_one(t, OneCopy::Read(dst), op.services(), &mut alive)
    }
}
