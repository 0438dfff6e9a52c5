//! [`Batch`]: device copies gathered with the host memory they touch borrowed or claimed, run
//! with one synchronization. It is the safe way to use [`Device::copy`]: every host range of the
//! batch is a borrowed slice or a claimed arena range that outlives the run.

use super::{CopyKind, Device, DeviceCopy};
use crate::arena::{Arena, RawRange};
use crate::error::HalError;

/// Device copies of one batch, and the host memory they need until they ran.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    copies: Vec<DeviceCopy>,
    claims: Vec<RawRange<'a>>,
    _host: std::marker::PhantomData<&'a mut [u8]>,
}

impl<'a> Batch<'a> {
    /// An empty batch.
    pub fn new() -> Batch<'a> {
        Batch::default()
    }

    /// Copies gathered so far.
    pub fn len(&self) -> usize {
        self.copies.len()
    }

    /// True with no copies.
    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }

    /// Host bytes `src` to device address `dst`.
    pub fn to_device(&mut self, dst: u64, src: &'a [u8]) {
        self.copies.push(DeviceCopy {
            dst,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            kind: CopyKind::HostToDevice,
        });
    }

    /// Device address `src` to host bytes `dst`.
    pub fn to_host(&mut self, dst: &'a mut [u8], src: u64) {
        self.copies.push(DeviceCopy {
            dst: dst.as_mut_ptr() as u64,
            src,
            len: dst.len() as u64,
            kind: CopyKind::DeviceToHost,
        });
    }

    /// Device to device.
    pub fn device_to_device(&mut self, dst: u64, src: u64, len: u64) {
        self.copies.push(DeviceCopy {
            dst,
            src,
            len,
            kind: CopyKind::DeviceToDevice,
        });
    }

    /// Between `arena` at `offset` and device address `dev` (`write`: into the arena). The
    /// arena range is claimed until the batch ran, as for a Rust copy.
    pub fn arena(
        &mut self,
        arena: &'a Arena,
        offset: u64,
        dev: u64,
        len: u64,
        write: bool,
    ) -> Result<(), HalError> {
        let r = arena.claim_raw(offset, len, write)?;
        let at = r.addr();
        self.claims.push(r);
        self.copies.push(if write {
            DeviceCopy {
                dst: at,
                src: dev,
                len,
                kind: CopyKind::DeviceToHost,
            }
        } else {
            DeviceCopy {
                dst: dev,
                src: at,
                len,
                kind: CopyKind::HostToDevice,
            }
        });
        Ok(())
    }

    /// [`Batch::run`] on the process's backend ([`super::active`]), which an empty batch does
    /// not start (so a process that never touches device memory never probes for a runtime).
    pub fn run_active(self) -> Result<(), HalError> {
        if self.copies.is_empty() {
            return Ok(());
        }
        self.run(super::active())
    }

    /// Run every copy on `dev` with one synchronization; the borrows and claims end after.
    pub fn run(self, dev: &dyn Device) -> Result<(), HalError> {
        if self.copies.is_empty() {
            return Ok(());
        }
        // SAFETY: every host range is a slice borrowed for `'a` (so live and, for `to_host`,
        // exclusively ours) or a claimed range of a live arena mapping; both outlive this call.
        unsafe { dev.copy(&self.copies) }
    }
}

/// A host buffer pinned with a device backend while it lives (when the backend can pin).
pub struct PinnedBuf {
    buf: Box<[u8]>,
    dev: &'static dyn Device,
    pinned: bool,
}

impl std::fmt::Debug for PinnedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedBuf")
            .field("len", &self.buf.len())
            .field("pinned", &self.pinned)
            .finish()
    }
}

impl PinnedBuf {
    /// `len` zeroed bytes, pinned with `dev` if it can (else plain host memory: copies still work).
    pub fn new(dev: &'static dyn Device, len: usize) -> PinnedBuf {
        let buf = vec![0u8; len].into_boxed_slice();
        // SAFETY: the buffer is owned by the returned value and unregistered in `Drop` before it
        // is freed.
        let pinned = match unsafe { dev.register_host(buf.as_ptr() as u64, len as u64) } {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "host buffer not pinned; copies still work");
                false
            }
        };
        PinnedBuf { buf, dev, pinned }
    }
}

impl std::ops::Deref for PinnedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl std::ops::DerefMut for PinnedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        if self.pinned {
            if let Err(e) = self.dev.unregister_host(self.buf.as_ptr() as u64) {
                tracing::warn!(error = %e, "host buffer not unpinned");
            }
        }
    }
}
