//! Device memory: the seam between MemCache and accelerator runtimes (feature `os`).
//!
//! Everything above this module sees one trait, [`Device`], and one process-wide backend chosen at
//! run time ([`active`]); no backend needs a device library at build time, so one wheel, one
//! `libmmc` and one set of binaries serve CPU-only hosts, NVIDIA GPU hosts and Ascend NPU hosts.
//!
//! # Backends
//!
//! | backend | module | where its memory lives | chosen by |
//! |---|---|---|---|
//! | `none` | [`none`] | nowhere: every device call fails with a message saying no backend is loaded | `MMC_DEVICE_BACKEND=none`, or `auto` when no runtime is found |
//! | `sim` | [`sim`] | memfds the process cannot reach through the pointer it hands out (the pointer lies in a `PROT_NONE` reservation and faults if dereferenced on the host) | `sim` |
//! | `cuda` | [`cuda`] | GPU memory, through `libcuda.so.1` (the driver API) loaded with libloading | `cuda`, or `auto` when the driver loads and sees a device |
//! | `ascend` | [`ascend`] | NPU memory, through `libascendcl.so` loaded with libloading | `ascend`, or `auto` after cuda |
//!
//! # What every backend provides
//!
//! - `device_count`, and logical device ids `0..count` after the runtime's own visibility
//!   variable (`CUDA_VISIBLE_DEVICES`, `ASCEND_RT_VISIBLE_DEVICES`) is applied.
//! - `bind(id)`: make `id` the calling thread's current device.
//! - `alloc` / `free` of device memory on a device.
//! - `copy(batch)`: every copy of a batch issued asynchronously (one stream), then one
//!   synchronization; a batch either completes or returns the first error. Kinds are explicit
//!   ([`CopyKind`]); a host range must be valid host memory (the caller's contract, hence
//!   `unsafe`), a device range must lie inside one allocation (the backend checks what it can and
//!   the runtime the rest).
//! - `classify(ptr)`: host memory, or device memory of which device; the `AUTO` direction uses it.
//! - `register_host` / `unregister_host`: pin host memory for faster transfers (optional: a
//!   backend that cannot pin says so and copies still work).
//! - `export` / `import` / `close_import`: an IPC handle for a device allocation, so another
//!   process on the host (a client of a same-host local service) can address an HBM pool.
//!
//! The pointer handed out by `alloc` or `import` is a plain number (`u64`): device memory is never
//! a Rust reference, so nothing in safe code can dereference it on the host.

pub mod ascend;
mod batch;
pub mod cuda;
mod loader;
pub mod none;
pub mod sim;

use std::fmt;
use std::os::fd::OwnedFd;
use std::str::FromStr;
use std::sync::OnceLock;

use tracing::{info, warn};

use crate::error::HalError;

pub use batch::{Batch, PinnedBuf};

/// The environment variable that chooses the backend (overrides the config files' key).
pub const BACKEND_ENV: &str = "MMC_DEVICE_BACKEND";

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// No device memory.
    None,
    /// The simulated device (tests).
    Sim,
    /// NVIDIA GPUs through the CUDA driver.
    Cuda,
    /// Ascend NPUs through AscendCL.
    Ascend,
}

impl BackendKind {
    /// The name used in settings and logs.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::None => "none",
            BackendKind::Sim => "sim",
            BackendKind::Cuda => "cuda",
            BackendKind::Ascend => "ascend",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A setting's value: a backend, or `auto` (probe cuda, then ascend, else none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendChoice {
    /// Probe cuda, then ascend; none when neither loads and sees a device.
    #[default]
    Auto,
    /// Exactly this backend (it fails to start if its runtime is missing).
    Only(BackendKind),
}

impl FromStr for BackendChoice {
    type Err = HalError;

    fn from_str(s: &str) -> Result<Self, HalError> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => BackendChoice::Auto,
            "none" => BackendChoice::Only(BackendKind::None),
            "sim" => BackendChoice::Only(BackendKind::Sim),
            "cuda" => BackendChoice::Only(BackendKind::Cuda),
            "ascend" => BackendChoice::Only(BackendKind::Ascend),
            other => {
                return Err(HalError::Device {
                    backend: "-",
                    op: "choose a backend",
                    reason: format!(
                    "unknown device backend {other:?} (expected auto, none, sim, cuda or ascend)"
                ),
                })
            }
        })
    }
}

/// Direction of one device copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyKind {
    /// Host memory to device memory.
    HostToDevice,
    /// Device memory to host memory.
    DeviceToHost,
    /// Device memory to device memory (same or another device).
    DeviceToDevice,
}

impl CopyKind {
    /// The kind for a copy from `src` to `dst` of the given kinds; `None` for host to host
    /// (a plain memcpy, not a device copy).
    pub fn between(src: PtrKind, dst: PtrKind) -> Option<CopyKind> {
        match (src, dst) {
            (PtrKind::Host, PtrKind::Host) => None,
            (PtrKind::Host, PtrKind::Device(_)) => Some(CopyKind::HostToDevice),
            (PtrKind::Device(_), PtrKind::Host) => Some(CopyKind::DeviceToHost),
            (PtrKind::Device(_), PtrKind::Device(_)) => Some(CopyKind::DeviceToDevice),
        }
    }
}

impl FromStr for CopyKind {
    type Err = HalError;

    fn from_str(s: &str) -> Result<Self, HalError> {
        match s {
            "h2d" => Ok(CopyKind::HostToDevice),
            "d2h" => Ok(CopyKind::DeviceToHost),
            "d2d" => Ok(CopyKind::DeviceToDevice),
            other => Err(HalError::Device {
                backend: "-",
                op: "memcpy",
                reason: format!("unknown copy kind {other:?} (expected h2d, d2h or d2d)"),
            }),
        }
    }
}

/// What a pointer points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtrKind {
    /// Host memory (or memory no backend knows).
    Host,
    /// Memory of this (logical) device.
    Device(u32),
}

/// One copy of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCopy {
    /// Destination address (host or device, per `kind`).
    pub dst: u64,
    /// Source address (host or device, per `kind`).
    pub src: u64,
    /// Bytes.
    pub len: u64,
    /// Direction.
    pub kind: CopyKind,
}

/// An exported device allocation, for another process on the same host.
#[derive(Debug)]
pub enum IpcHandle {
    /// A file descriptor (the simulated device's memfd), passed with `SCM_RIGHTS`.
    Fd {
        /// The descriptor.
        fd: OwnedFd,
        /// Bytes of the allocation.
        len: u64,
    },
    /// An opaque runtime handle (CUDA's 64-byte `CUipcMemHandle`, Ascend's export key), passed
    /// as bytes.
    Opaque {
        /// The handle's bytes.
        bytes: Vec<u8>,
        /// Bytes of the allocation.
        len: u64,
    },
}

/// A device backend (see the module docs for what each provides).
pub trait Device: Send + Sync + 'static {
    /// Which backend.
    fn kind(&self) -> BackendKind;

    /// Devices visible to this process (logical ids `0..count`).
    fn device_count(&self) -> Result<u32, HalError>;

    /// Make `device` the calling thread's current device.
    fn bind(&self, device: u32) -> Result<(), HalError>;

    /// `len` bytes of device memory on `device`; its address.
    fn alloc(&self, device: u32, len: u64) -> Result<u64, HalError>;

    /// Free what `alloc` returned. Freeing anything else is an error, never undefined behaviour.
    fn free(&self, ptr: u64) -> Result<(), HalError>;

    /// Host or which device `ptr` belongs to. Unknown addresses are host memory.
    fn classify(&self, ptr: u64) -> PtrKind;

    /// Run every copy of `batch` (asynchronously on one stream where the runtime allows), then
    /// synchronize once. The first failure is returned; copies after it may or may not have run.
    ///
    /// # Safety
    ///
    /// Every host range named by `batch` (the `src` of host-to-device copies, the `dst` of
    /// device-to-host copies) must be valid for the copy's `len` bytes (readable, or writable
    /// and not aliased by a Rust reference) until this call returns.
    unsafe fn copy(&self, batch: &[DeviceCopy]) -> Result<(), HalError>;

    /// Pin (page-lock) host memory for faster copies. `Ok(false)` if this backend cannot.
    ///
    /// # Safety
    ///
    /// `[ptr, ptr + len)` must be mapped host memory that stays mapped until
    /// `unregister_host(ptr)`.
    unsafe fn register_host(&self, ptr: u64, len: u64) -> Result<bool, HalError>;

    /// Unpin what `register_host` pinned.
    fn unregister_host(&self, ptr: u64) -> Result<(), HalError>;

    /// An IPC handle for the allocation that starts at `ptr`.
    fn export(&self, ptr: u64) -> Result<IpcHandle, HalError>;

    /// Map another process's exported allocation into this one; its address here.
    fn import(&self, handle: &IpcHandle, device: u32) -> Result<u64, HalError>;

    /// Unmap what `import` mapped.
    fn close_import(&self, ptr: u64) -> Result<(), HalError>;
}

static ACTIVE: OnceLock<Box<dyn Device>> = OnceLock::new();

/// The process's backend: the one [`init`] chose, or (first use without `init`) the one
/// `MMC_DEVICE_BACKEND` names, else `auto`.
pub fn active() -> &'static dyn Device {
    ACTIVE
        .get_or_init(|| {
            let choice = env_choice().unwrap_or_else(|e| {
                warn!(error = %e, "{BACKEND_ENV} ignored: not a backend; probing (auto)");
                BackendChoice::Auto
            });
            open(choice).unwrap_or_else(|e| {
                warn!(error = %e, "device backend failed to start; device calls will fail");
                Box::new(none::NoDevice)
            })
        })
        .as_ref()
}

/// `MMC_DEVICE_BACKEND`'s choice, if set.
fn env_choice() -> Result<BackendChoice, HalError> {
    match std::env::var(BACKEND_ENV) {
        Ok(v) => v.parse(),
        Err(_) => Ok(BackendChoice::Auto),
    }
}

/// Choose the process's backend: `MMC_DEVICE_BACKEND` when set, else `configured` (a config
/// file's `device_backend`). The first call decides for the whole process; a later call asking
/// for another backend than the one running is an error that names both.
pub fn init(configured: BackendChoice) -> Result<&'static dyn Device, HalError> {
    let choice = match std::env::var(BACKEND_ENV) {
        Ok(v) => v.parse()?,
        Err(_) => configured,
    };
    let mut err = None;
    let dev = ACTIVE
        .get_or_init(|| match open(choice) {
            Ok(d) => d,
            Err(e) => {
                err = Some(e);
                Box::new(none::NoDevice)
            }
        })
        .as_ref();
    if let Some(e) = err {
        return Err(e);
    }
    match choice {
        BackendChoice::Only(k) if k != dev.kind() => Err(HalError::Device {
            backend: dev.kind().name(),
            op: "choose a backend",
            reason: format!(
                "this process already runs the {} backend; {} cannot be chosen as well",
                dev.kind(),
                k
            ),
        }),
        _ => Ok(dev),
    }
}

/// Start a backend (not the process's: [`init`] and [`active`] keep that one).
pub fn open(choice: BackendChoice) -> Result<Box<dyn Device>, HalError> {
    let dev: Box<dyn Device> = match choice {
        BackendChoice::Only(BackendKind::None) => Box::new(none::NoDevice),
        BackendChoice::Only(BackendKind::Sim) => Box::new(sim::SimDevice::from_env()?),
        BackendChoice::Only(BackendKind::Cuda) => Box::new(cuda::Cuda::load()?),
        BackendChoice::Only(BackendKind::Ascend) => Box::new(ascend::Ascend::load()?),
        BackendChoice::Auto => probe(),
    };
    info!(backend = %dev.kind(), "device backend");
    Ok(dev)
}

/// `auto`: cuda if its driver loads and sees a device, else ascend likewise, else none.
fn probe() -> Box<dyn Device> {
    match cuda::Cuda::load() {
        Ok(c) if c.device_count().is_ok_and(|n| n > 0) => return Box::new(c),
        Ok(_) => info!("cuda driver loaded but sees no device"),
        Err(e) => info!(reason = %e, "no cuda backend"),
    }
    match ascend::Ascend::load() {
        Ok(a) if a.device_count().is_ok_and(|n| n > 0) => return Box::new(a),
        Ok(_) => info!("ascendcl loaded but sees no device"),
        Err(e) => info!(reason = %e, "no ascend backend"),
    }
    Box::new(none::NoDevice)
}

#[cfg(test)]
mod real_tests;
#[cfg(test)]
mod tests;
