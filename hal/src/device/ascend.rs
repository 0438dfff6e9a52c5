//! The `ascend` backend (work in progress: it does not load yet, and says so).

use super::{BackendKind, Device, DeviceCopy, IpcHandle, PtrKind};
use crate::error::HalError;

/// The ascend runtime, loaded at run time.
#[derive(Debug)]
pub struct Ascend {}

impl Ascend {
    /// Load the runtime.
    pub fn load() -> Result<Ascend, HalError> {
        let _ = super::loader::open_first;
        let _ = super::loader::sym::<fn()>;
        Err(HalError::Device {
            backend: "ascend",
            op: "load the runtime",
            reason: "the ascend backend is not in this build yet".into(),
        })
    }
}

impl Device for Ascend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ascend
    }
    fn device_count(&self) -> Result<u32, HalError> {
        Ok(0)
    }
    fn bind(&self, _: u32) -> Result<(), HalError> {
        unreachable!("never loaded")
    }
    fn alloc(&self, _: u32, _: u64) -> Result<u64, HalError> {
        unreachable!("never loaded")
    }
    fn free(&self, _: u64) -> Result<(), HalError> {
        unreachable!("never loaded")
    }
    fn classify(&self, _: u64) -> PtrKind {
        PtrKind::Host
    }
    unsafe fn copy(&self, _: &[DeviceCopy]) -> Result<(), HalError> {
        unreachable!("never loaded")
    }
    unsafe fn register_host(&self, _: u64, _: u64) -> Result<bool, HalError> {
        Ok(false)
    }
    fn unregister_host(&self, _: u64) -> Result<(), HalError> {
        Ok(())
    }
    fn export(&self, _: u64) -> Result<IpcHandle, HalError> {
        unreachable!("never loaded")
    }
    fn import(&self, _: &IpcHandle, _: u32) -> Result<u64, HalError> {
        unreachable!("never loaded")
    }
    fn close_import(&self, _: u64) -> Result<(), HalError> {
        unreachable!("never loaded")
    }
}
