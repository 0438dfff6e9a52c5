//! The `none` backend: no device memory. Every call that needs a device fails with an error that
//! says no device backend is loaded and how to load one; `classify` calls everything host memory.

use super::{BackendKind, Device, DeviceCopy, IpcHandle, PtrKind};
use crate::error::HalError;

/// No device backend.
#[derive(Debug, Default)]
pub struct NoDevice;

fn refuse(op: &'static str) -> HalError {
    HalError::Device {
        backend: "none",
        op,
        reason: "no device backend is loaded (set MMC_DEVICE_BACKEND or device_backend to \
                 cuda, ascend or sim; auto found no CUDA or Ascend runtime with a device)"
            .into(),
    }
}

impl Device for NoDevice {
    fn kind(&self) -> BackendKind {
        BackendKind::None
    }

    fn device_count(&self) -> Result<u32, HalError> {
        Ok(0)
    }

    fn bind(&self, _device: u32) -> Result<(), HalError> {
        Err(refuse("bind a device"))
    }

    fn alloc(&self, _device: u32, _len: u64) -> Result<u64, HalError> {
        Err(refuse("alloc"))
    }

    fn free(&self, _ptr: u64) -> Result<(), HalError> {
        Err(refuse("free"))
    }

    fn classify(&self, _ptr: u64) -> PtrKind {
        PtrKind::Host
    }

    unsafe fn copy(&self, batch: &[DeviceCopy]) -> Result<(), HalError> {
        if batch.is_empty() {
            return Ok(());
        }
        Err(refuse("copy"))
    }

    unsafe fn register_host(&self, _ptr: u64, _len: u64) -> Result<bool, HalError> {
        Ok(false)
    }

    fn unregister_host(&self, _ptr: u64) -> Result<(), HalError> {
        Ok(())
    }

    fn export(&self, _ptr: u64) -> Result<IpcHandle, HalError> {
        Err(refuse("export"))
    }

    fn import(&self, _handle: &IpcHandle, _device: u32) -> Result<u64, HalError> {
        Err(refuse("import"))
    }

    fn close_import(&self, _ptr: u64) -> Result<(), HalError> {
        Err(refuse("close an import"))
    }
}
