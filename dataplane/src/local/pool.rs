//! A pool's memory: host memory (a memfd [`Arena`], DRAM) or device memory (an allocation of the
//! process's device backend, HBM), behind the few operations the data paths need.
//!
//! | operation | host pool | device pool |
//! |---|---|---|
//! | `copy_in` / `copy_out` (host caller memory) | memcpy | one host-to-device / device-to-host copy |
//! | [`PoolMem::dev_copy`] (device caller memory) | the range claimed, device-to-host / host-to-device straight into the mapping | device-to-device |
//! | `fill_from` / `drain_to` (a socket) | `readv` / `writev` on the mapping | staged through the service's pinned host buffers ([`Staging`]), in chunks |
//!
//! Device copies of one batch are collected (hal's `device::Batch`) and run with one
//! synchronization.

use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};

use mmc_hal::device::{Batch, Device, IpcHandle, PinnedBuf};
use mmc_hal::{Arena, HalError};

/// Bytes of each staging buffer.
pub(crate) const STAGING_BYTES: usize = 4 << 20;
/// Staging buffers per local service with a device pool.
pub(crate) const STAGING_BUFFERS: usize = 4;

/// A bounded set of host buffers (pinned with the device backend when it can) for moving device
/// pool bytes to and from sockets. Allocated once at start-up; a copy waits for a free buffer.
pub(crate) struct Staging {
    free: Mutex<Vec<PinnedBuf>>,
    ready: Condvar,
}

impl Staging {
    pub(crate) fn new(dev: &'static dyn Device, count: usize) -> Staging {
        Staging {
            free: Mutex::new(
                (0..count)
                    .map(|_| PinnedBuf::new(dev, STAGING_BYTES))
                    .collect(),
            ),
            ready: Condvar::new(),
        }
    }

    fn take(&self) -> PinnedBuf {
        let mut free = self.free.lock().expect("staging lock poisoned");
        loop {
            if let Some(b) = free.pop() {
                return b;
            }
            free = self.ready.wait(free).expect("staging lock poisoned");
        }
    }

    fn give(&self, b: PinnedBuf) {
        self.free.lock().expect("staging lock poisoned").push(b);
        self.ready.notify_one();
    }
}

/// A device pool: `len` bytes at `addr` on `device`.
pub(crate) struct DevicePool {
    pub(crate) dev: &'static dyn Device,
    pub(crate) addr: u64,
    pub(crate) len: u64,
    pub(crate) device: u32,
    /// Imported from another process (closed, not freed, on drop).
    imported: bool,
    staging: Option<Arc<Staging>>,
}

impl DevicePool {
    /// Allocate `len` bytes on `device`, with `staging` for socket transfers.
    pub(crate) fn alloc(
        dev: &'static dyn Device,
        device: u32,
        len: u64,
        staging: Arc<Staging>,
    ) -> Result<DevicePool, HalError> {
        dev.bind(device)?;
        let addr = dev.alloc(device, len)?;
        Ok(DevicePool {
            dev,
            addr,
            len,
            device,
            imported: false,
            staging: Some(staging),
        })
    }

    /// Map another process's exported pool.
    pub(crate) fn import(
        dev: &'static dyn Device,
        handle: &IpcHandle,
        device: u32,
        len: u64,
    ) -> Result<DevicePool, HalError> {
        let addr = dev.import(handle, device)?;
        Ok(DevicePool {
            dev,
            addr,
            len,
            device,
            imported: true,
            staging: None,
        })
    }

    fn at(&self, offset: u64, len: u64) -> Result<u64, HalError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.addr + offset),
            _ => Err(HalError::OutOfBounds {
                offset,
                len,
                arena_bytes: self.len,
            }),
        }
    }

    /// Walk `runs` in chunks of one staging buffer: `step(pool offset, chunk)` for each, in order.
    fn staged(
        &self,
        runs: &[(u64, u64)],
        mut step: impl FnMut(u64, &mut [u8]) -> Result<(), HalError>,
    ) -> Result<(), HalError> {
        let staging = self
            .staging
            .as_deref()
            .expect("socket transfers run in the service that owns the pool");
        let mut buf = staging.take();
        let r = runs.iter().try_for_each(|&(off, len)| {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                step(off + done, &mut buf[..n])?;
                done += n as u64;
            }
            Ok(())
        });
        staging.give(buf);
        r
    }
}

impl Drop for DevicePool {
    fn drop(&mut self) {
        let r = if self.imported {
            self.dev.close_import(self.addr)
        } else {
            self.dev.free(self.addr)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "device pool not released");
        }
    }
}

/// A pool's memory.
pub(crate) enum PoolMem {
    Host(Arena),
    Device(DevicePool),
}

impl PoolMem {
    pub(crate) fn len(&self) -> u64 {
        match self {
            PoolMem::Host(a) => a.len(),
            PoolMem::Device(d) => d.len,
        }
    }

    /// The device of a device pool.
    pub(crate) fn device(&self) -> Option<&DevicePool> {
        match self {
            PoolMem::Host(_) => None,
            PoolMem::Device(d) => Some(d),
        }
    }

    pub(crate) fn arena(&self) -> Option<&Arena> {
        match self {
            PoolMem::Host(a) => Some(a),
            PoolMem::Device(_) => None,
        }
    }

    /// Copy host bytes `src` into the pool at `offset`.
    pub(crate) fn copy_in(&self, offset: u64, src: &[u8]) -> Result<(), HalError> {
        match self {
            PoolMem::Host(a) => a.copy_in(offset, src),
            PoolMem::Device(d) => {
                let mut b = Batch::new();
                b.to_device(d.at(offset, src.len() as u64)?, src);
                b.run(d.dev)
            }
        }
    }

    /// Copy the pool's bytes at `offset` into host memory `dst`.
    pub(crate) fn copy_out(&self, offset: u64, dst: &mut [u8]) -> Result<(), HalError> {
        match self {
            PoolMem::Host(a) => a.copy_out(offset, dst),
            PoolMem::Device(d) => {
                let mut b = Batch::new();
                b.to_host(dst, d.at(offset, dst.len() as u64)?);
                b.run(d.dev)
            }
        }
    }

    /// Add to `batch` the copy between the pool at `offset` and device memory `addr` (`len`
    /// bytes; `write`: into the pool). A host pool's range stays claimed until the batch ran.
    pub(crate) fn dev_copy<'a>(
        &'a self,
        batch: &mut Batch<'a>,
        offset: u64,
        addr: u64,
        len: u64,
        write: bool,
    ) -> Result<(), HalError> {
        match self {
            PoolMem::Host(a) => batch.arena(a, offset, addr, len, write),
            PoolMem::Device(d) => {
                let at = d.at(offset, len)?;
                if write {
                    batch.device_to_device(at, addr, len);
                } else {
                    batch.device_to_device(addr, at, len);
                }
                Ok(())
            }
        }
    }

    /// Read the runs `(offset, len)` of the pool from `s`, in order.
    pub(crate) fn fill_from(
        &self,
        runs: &[(u64, u64)],
        s: &mut std::net::TcpStream,
    ) -> Result<(), HalError> {
        match self {
            PoolMem::Host(a) => a.fill_from(runs, s),
            PoolMem::Device(d) => d.staged(runs, |off, buf| {
                s.read_exact(buf).map_err(|e| HalError::Io {
                    context: "reading into a device pool".into(),
                    source: e,
                })?;
                self.copy_in(off, buf)
            }),
        }
    }

    /// Write the runs `(offset, len)` of the pool to `s`, in order.
    pub(crate) fn drain_to(
        &self,
        runs: &[(u64, u64)],
        s: &mut std::net::TcpStream,
    ) -> Result<(), HalError> {
        match self {
            PoolMem::Host(a) => a.drain_to(runs, s),
            PoolMem::Device(d) => d.staged(runs, |off, buf| {
                self.copy_out(off, buf)?;
                s.write_all(buf).map_err(|e| HalError::Io {
                    context: "writing from a device pool".into(),
                    source: e,
                })
            }),
        }
    }
}
