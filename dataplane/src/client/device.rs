//! Puts from and gets into device memory (GPU / NPU buffers given as addresses): the same
//! operations as for host memory, with the caller's buffers as [`DevSpan`]s. The transports copy
//! straight between device memory and the pools where they can (the embedded service's and
//! same-host services' pools, host or device: one device batch, one synchronization) and stage
//! through host buffers where they cannot (TCP). Checksums of device bytes are computed from a
//! chunked device-to-host pass (the bytes must be seen by the host once).

use mmc_controlplane::Result;
use mmc_core::client::{check_lengths, runs, Action, GetOp};
use mmc_core::transport::{dev_jobs, DevSpan};
use mmc_hal::device::{self, Batch};

use super::{Client, PutOptions};
use crate::local::device_error;

/// Bytes per device-to-host chunk when checksumming device memory.
const CRC_CHUNK: usize = 4 << 20;

/// CRC-32C of device bytes `spans` (concatenated), through a host chunk buffer.
fn device_crc(spans: impl IntoIterator<Item = DevSpan>, scratch: &mut [u8]) -> Result<u32> {
    let dev = device::active();
    let mut crc = 0u32;
    for s in spans {
        let mut at = 0u64;
        while at < s.len {
            let n = (s.len - at).min(scratch.len() as u64) as usize;
            let mut b = Batch::new();
            b.to_host(&mut scratch[..n], s.addr + at);
            b.run(dev).map_err(device_error)?;
            crc = crc32c::crc32c_append(crc, &scratch[..n]);
            at += n as u64;
        }
    }
    Ok(crc)
}

/// Each span must be device memory of the active backend (a host pointer given as device
/// memory is refused, as the device runtime would).
fn check_device(values: &[&[DevSpan]]) -> Result<()> {
    let dev = device::active();
    for s in values.iter().flat_map(|v| v.iter()) {
        if s.len > 0 && dev.classify(s.addr) == device::PtrKind::Host {
            return Err(device_error(mmc_hal::HalError::Device {
                backend: dev.kind().name(),
                op: "classify",
                reason: format!("{:#x} is not device memory", s.addr),
            }));
        }
    }
    Ok(())
}

impl Client {
    /// Put many objects from device memory: key `i`'s value is `values[i]`'s spans concatenated.
    /// One result per key; `Err` for the whole call when the batch is refused (too many keys,
    /// mismatched lengths, a span that is not device memory, a device copy that failed).
    pub fn batch_put_device(
        &self,
        keys: &[&str],
        values: &[&[DevSpan]],
        opts: &PutOptions,
    ) -> Result<Vec<Result<()>>> {
        check_lengths(keys.len(), values.len(), "values")?;
        check_device(values)?;
        let sizes: Vec<u64> = values
            .iter()
            .map(|v| v.iter().map(|p| p.len).sum())
            .collect();
        let total: u64 = sizes.iter().sum();
        let mut scratch = vec![0u8; CRC_CHUNK.min(total.max(1) as usize)];
        let crcs = values
            .iter()
            .map(|v| device_crc(v.iter().copied(), &mut scratch))
            .collect::<Result<Vec<u32>>>()?;
        self.put_with(
            keys,
            &sizes,
            Some(crcs),
            || unreachable!("checksums are known up front"),
            opts,
            |t| dev_jobs(t, values),
        )
    }

    /// Read many objects into device memory: key `i` into `bufs[i]`'s spans, filled in order. One
    /// result (the object's size) per key.
    pub fn batch_get_device(&self, keys: &[&str], bufs: &[&[DevSpan]]) -> Result<Vec<Result<u64>>> {
        check_lengths(keys.len(), bufs.len(), "buffers")?;
        check_device(bufs)?;
        let capacities: Vec<u64> = bufs.iter().map(|v| v.iter().map(|p| p.len).sum()).collect();
        let mut op = GetOp::new(
            keys,
            &capacities,
            self.local_rank(),
            self.now_ms(),
            self.timeout_ms(),
        )?;
        let mut scratch = Vec::new();
        loop {
            match op.poll(self.now_ms()) {
                Action::Transfer => {
                    self.before_transfer();
                    let deadline = self.instant(op.transfer_deadline_ms());
                    let jobs = dev_jobs(op.transfers(), bufs);
                    let mut outcomes = self.transports.run(jobs, op.services(), deadline);
                    if self.verify_reads {
                        if scratch.is_empty() {
                            scratch = vec![0u8; CRC_CHUNK];
                        }
                        op.verify_by(&mut outcomes, |t| {
                            let parts = bufs[t.item];
                            let spans = runs(parts.iter().map(|p| p.len), t.item_offset, t.len)
                                .map(|(p, off, n)| DevSpan {
                                    addr: parts[p].addr + off,
                                    len: n,
                                });
                            device_crc(spans, &mut scratch)
                        });
                    }
                    op.on_transfers(self.now_ms(), outcomes);
                }
                Action::Done => return op.results(),
                other => self.control_step(&mut op, other),
            }
        }
    }
}
