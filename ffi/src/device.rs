//! Device memory helpers of the C API (`mmc_device.h`, not part of the seed's headers): the
//! process's device backend (`$MMC_DEVICE_BACKEND`, or the local service config's
//! `device_backend`), and allocation, free and copies on it, for engines and tests without a
//! framework. Device buffers go to `mmcc_put` / `mmcc_get` and the batch calls as `mmc_buffer`s
//! of type `MEDIA_HBM`.

use std::ffi::{c_char, c_int};

use mmc_hal::device::{self, CopyKind, DeviceCopy};
use tracing::warn;

use crate::guard;
use crate::types::{MMC_ERROR, MMC_INVALID_PARAM, MMC_OK};

/// `mmc_device_memcpy` kind: host to device.
pub const MMC_DEVICE_H2D: c_int = 1;
/// `mmc_device_memcpy` kind: device to host.
pub const MMC_DEVICE_D2H: c_int = 2;
/// `mmc_device_memcpy` kind: device to device.
pub const MMC_DEVICE_D2D: c_int = 3;

/// The process's device backend: a static NUL-terminated name, `"none"`, `"sim"`, `"cuda"` or
/// `"ascend"`.
#[no_mangle]
pub extern "C" fn mmc_device_backend() -> *const c_char {
    guard("mmc_device_backend", c"none".as_ptr(), || {
        match device::active().kind() {
            device::BackendKind::None => c"none",
            device::BackendKind::Sim => c"sim",
            device::BackendKind::Cuda => c"cuda",
            device::BackendKind::Ascend => c"ascend",
        }
        .as_ptr()
    })
}

/// Allocate `size` bytes of device memory on (logical) device `device_id` into `*ptr`. Returns
/// 0, or `MMC_INVALID_PARAM` (no backend, bad device, out of memory; the log says which).
///
/// # Safety
/// `ptr` is NULL (refused) or writable.
#[no_mangle]
pub unsafe extern "C" fn mmc_device_alloc(ptr: *mut u64, size: u64, device_id: u32) -> i32 {
    guard("mmc_device_alloc", MMC_ERROR, || {
        if ptr.is_null() || size == 0 {
            warn!("mmc_device_alloc: NULL result pointer or zero size");
            return MMC_INVALID_PARAM;
        }
        let dev = device::active();
        match dev
            .bind(device_id)
            .and_then(|()| dev.alloc(device_id, size))
        {
            Ok(p) => {
                // SAFETY: non-null and writable per the caller's contract.
                unsafe { *ptr = p };
                MMC_OK
            }
            Err(e) => {
                warn!(error = %e, "mmc_device_alloc failed");
                MMC_INVALID_PARAM
            }
        }
    })
}

/// Free what `mmc_device_alloc` returned. 0, or `MMC_INVALID_PARAM`.
#[no_mangle]
pub extern "C" fn mmc_device_free(ptr: u64) -> i32 {
    guard("mmc_device_free", MMC_ERROR, || {
        match device::active().free(ptr) {
            Ok(()) => MMC_OK,
            Err(e) => {
                warn!(error = %e, "mmc_device_free failed");
                MMC_INVALID_PARAM
            }
        }
    })
}

/// Copy `size` bytes from `src` to `dst`; `kind` is `MMC_DEVICE_H2D`, `MMC_DEVICE_D2H` or
/// `MMC_DEVICE_D2D`. 0, or `MMC_INVALID_PARAM`.
///
/// # Safety
/// The host side (`src` for H2D, `dst` for D2H) must be valid host memory of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmc_device_memcpy(dst: u64, src: u64, size: u64, kind: c_int) -> i32 {
    guard("mmc_device_memcpy", MMC_ERROR, || {
        let kind = match kind {
            MMC_DEVICE_H2D => CopyKind::HostToDevice,
            MMC_DEVICE_D2H => CopyKind::DeviceToHost,
            MMC_DEVICE_D2D => CopyKind::DeviceToDevice,
            other => {
                warn!(
                    kind = other,
                    "mmc_device_memcpy: kind must be H2D, D2H or D2D"
                );
                return MMC_INVALID_PARAM;
            }
        };
        if size == 0 {
            return MMC_OK;
        }
        if dst == 0
            || src == 0
            || dst.checked_add(size).is_none()
            || src.checked_add(size).is_none()
        {
            warn!("mmc_device_memcpy: NULL pointer or a range that wraps");
            return MMC_INVALID_PARAM;
        }
        let c = DeviceCopy {
            dst,
            src,
            len: size,
            kind,
        };
        // SAFETY: the host side is valid for `size` bytes per the caller's contract; the device
        // side is checked by the backend.
        match unsafe { device::active().copy(&[c]) } {
            Ok(()) => MMC_OK,
            Err(e) => {
                warn!(error = %e, "mmc_device_memcpy failed");
                MMC_INVALID_PARAM
            }
        }
    })
}
