//! The `cuda` backend: NVIDIA GPUs through the CUDA **driver API** (`libcuda.so.1`), loaded at run
//! time with libloading, so nothing links against CUDA and a build needs no CUDA toolkit.
//!
//! - **Contexts**: each device's *primary* context (`cuDevicePrimaryCtxRetain`), the one the CUDA
//!   runtime and therefore torch and cupy use, so pointers from `tensor.data_ptr()` and ours live
//!   in the same context. Retained lazily on first use of a device, with one blocking stream
//!   per device; neither is ever released (the process-wide backend lives until exit).
//! - **Threads**: copies come from many threads, so every entry point makes the right context
//!   current (`cuCtxSetCurrent`, cheap) and puts back the caller's previous context afterwards,
//!   so a torch thread's current device is left as it was. Only [`Device::bind`] changes it on
//!   purpose.
//! - **Copies** of a batch are issued asynchronously on the stream of the device that owns each
//!   copy's device-side pointer (found with `cuPointerGetAttribute`), then every stream used is
//!   synchronized once; a batch that fails part-way still synchronizes what it issued, so no copy
//!   touches a host buffer after the call returns. Device-to-device copies between two devices
//!   use `cuMemcpyPeerAsync`. The streams are blocking (`CU_STREAM_DEFAULT`): a copy waits for work
//!   queued on the legacy default stream, which is torch's and cupy's default, so a tensor written
//!   by kernels there is complete before it is copied; work on the caller's other streams is the
//!   caller's to finish (synchronize them) before handing a buffer over.
//! - **Classification**: `CU_POINTER_ATTRIBUTE_MEMORY_TYPE`; `CUDA_ERROR_INVALID_VALUE` means memory
//!   the driver does not know (plain host memory).
//! - **IPC**: `cuIpcGetMemHandle` gives the 64-byte `CUipcMemHandle` ([`IpcHandle::Opaque`]);
//!   `cuIpcOpenMemHandle_v2` (lazy peer access) maps it in another process. CUDA refuses to open a
//!   handle in the process that exported it.
//! - **Device ids** are the driver's ordinals, after `CUDA_VISIBLE_DEVICES`.
//!
//! Every symbol below is declared in `cuda.h` of the CUDA toolkit (driver API); the `_v2` names are
//! the ones `cuda.h` maps the plain names to (`#define cuMemAlloc cuMemAlloc_v2`, ...) since CUDA
//! 3.2 (`cuIpcOpenMemHandle_v2`: CUDA 11.0, `cuMemHostRegister_v2`: CUDA 6.5). We use explicit
//! streams, so the per-thread-default-stream variants (`_ptsz`) are not needed.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Mutex, OnceLock};

use libloading::Library;
use tracing::debug;

use super::loader::{open_first, sym};
use super::{BackendKind, CopyKind, Device, DeviceCopy, IpcHandle, PtrKind};
use crate::error::HalError;

const BACKEND: &str = "cuda";

/// The libraries tried, in order: the driver's soname, then the development symlink.
pub const LIBRARIES: &[&str] = &["libcuda.so.1", "libcuda.so"];

// Types, as `cuda.h` declares them (64-bit Linux).
/// `typedef enum cudaError_enum {...} CUresult;` (an `int`-sized C enum).
type CuResult = c_int;
/// `typedef int CUdevice_v1; typedef CUdevice_v1 CUdevice;`
type CuDevice = c_int;
/// `typedef unsigned long long CUdeviceptr_v2; typedef CUdeviceptr_v2 CUdeviceptr;`
type CuDevicePtr = u64;
/// `typedef struct CUctx_st *CUcontext;`
type CuContext = *mut c_void;
/// `typedef struct CUstream_st *CUstream;`
type CuStream = *mut c_void;
/// `typedef enum CUpointer_attribute_enum {...} CUpointer_attribute;`
type CuPointerAttribute = c_int;

/// `#define CU_IPC_HANDLE_SIZE 64`
const IPC_HANDLE_SIZE: usize = 64;

/// `typedef struct CUipcMemHandle_st { char reserved[CU_IPC_HANDLE_SIZE]; } CUipcMemHandle_v1;`
/// (passed by value to `cuIpcOpenMemHandle`: `repr(C)` gives it the C ABI's struct passing).
#[repr(C)]
#[derive(Clone, Copy)]
struct CuIpcMemHandle {
    reserved: [c_char; IPC_HANDLE_SIZE],
}

// Constants from `cuda.h`.
const CUDA_SUCCESS: CuResult = 0;
const CUDA_ERROR_INVALID_VALUE: CuResult = 1;
const CUDA_ERROR_NOT_INITIALIZED: CuResult = 3;
const CUDA_ERROR_NO_DEVICE: CuResult = 100;
const CUDA_ERROR_INVALID_CONTEXT: CuResult = 201;
/// `CU_STREAM_DEFAULT = 0x0` (`CUstream_flags`): the stream synchronizes implicitly with the
/// legacy default stream (where torch and cupy queue their kernels unless told otherwise), so a
/// copy never reads a tensor before the kernels queued there have written it.
const CU_STREAM_DEFAULT: c_uint = 0x0;
/// `CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2` (`CUpointer_attribute`): a `CUmemorytype` (`unsigned int`).
const CU_POINTER_ATTRIBUTE_MEMORY_TYPE: CuPointerAttribute = 2;
/// `CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9`: an `int`.
const CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: CuPointerAttribute = 9;
/// `CU_MEMORYTYPE_DEVICE = 0x02` (`CUmemorytype`).
const CU_MEMORYTYPE_DEVICE: c_uint = 0x02;
/// `CU_MEMORYTYPE_UNIFIED = 0x04`: managed memory, copied like device memory.
const CU_MEMORYTYPE_UNIFIED: c_uint = 0x04;
/// `CU_MEMHOSTREGISTER_PORTABLE = 0x01`: pinned for every context, not just the current one.
const CU_MEMHOSTREGISTER_PORTABLE: c_uint = 0x01;
/// `CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 0x1` (`CUipcMem_flags`).
const CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS: c_uint = 0x1;

/// The driver entry points, copied out of the (never unloaded) library.
struct Api {
    /// `CUresult cuInit(unsigned int Flags);`
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    /// `CUresult cuDeviceGetCount(int *count);`
    device_get_count: unsafe extern "C" fn(*mut c_int) -> CuResult,
    /// `CUresult cuDeviceGet(CUdevice *device, int ordinal);`
    device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult,
    /// `CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev);`
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, CuDevice) -> CuResult,
    /// `CUresult cuCtxSetCurrent(CUcontext ctx);`
    ctx_set_current: unsafe extern "C" fn(CuContext) -> CuResult,
    /// `CUresult cuCtxGetCurrent(CUcontext *pctx);`
    ctx_get_current: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    /// `CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize);`
    mem_alloc: unsafe extern "C" fn(*mut CuDevicePtr, usize) -> CuResult,
    /// `CUresult cuMemFree_v2(CUdeviceptr dptr);`
    mem_free: unsafe extern "C" fn(CuDevicePtr) -> CuResult,
    /// `CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr);`
    mem_get_address_range:
        unsafe extern "C" fn(*mut CuDevicePtr, *mut usize, CuDevicePtr) -> CuResult,
    /// `CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost,
    /// size_t ByteCount, CUstream hStream);`
    memcpy_htod_async:
        unsafe extern "C" fn(CuDevicePtr, *const c_void, usize, CuStream) -> CuResult,
    /// `CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount,
    /// CUstream hStream);`
    memcpy_dtoh_async: unsafe extern "C" fn(*mut c_void, CuDevicePtr, usize, CuStream) -> CuResult,
    /// `CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice,
    /// size_t ByteCount, CUstream hStream);`
    memcpy_dtod_async: unsafe extern "C" fn(CuDevicePtr, CuDevicePtr, usize, CuStream) -> CuResult,
    /// `CUresult cuMemcpyPeerAsync(CUdeviceptr dstDevice, CUcontext dstContext,
    /// CUdeviceptr srcDevice, CUcontext srcContext, size_t ByteCount, CUstream hStream);`
    memcpy_peer_async: unsafe extern "C" fn(
        CuDevicePtr,
        CuContext,
        CuDevicePtr,
        CuContext,
        usize,
        CuStream,
    ) -> CuResult,
    /// `CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags);`
    stream_create: unsafe extern "C" fn(*mut CuStream, c_uint) -> CuResult,
    /// `CUresult cuStreamSynchronize(CUstream hStream);`
    stream_synchronize: unsafe extern "C" fn(CuStream) -> CuResult,
    /// `CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attribute,
    /// CUdeviceptr ptr);`
    pointer_get_attribute:
        unsafe extern "C" fn(*mut c_void, CuPointerAttribute, CuDevicePtr) -> CuResult,
    /// `CUresult cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags);`
    mem_host_register: unsafe extern "C" fn(*mut c_void, usize, c_uint) -> CuResult,
    /// `CUresult cuMemHostUnregister(void *p);`
    mem_host_unregister: unsafe extern "C" fn(*mut c_void) -> CuResult,
    /// `CUresult cuIpcGetMemHandle(CUipcMemHandle *pHandle, CUdeviceptr dptr);`
    ipc_get_mem_handle: unsafe extern "C" fn(*mut CuIpcMemHandle, CuDevicePtr) -> CuResult,
    /// `CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pdptr, CUipcMemHandle handle,
    /// unsigned int Flags);`
    ipc_open_mem_handle: unsafe extern "C" fn(*mut CuDevicePtr, CuIpcMemHandle, c_uint) -> CuResult,
    /// `CUresult cuIpcCloseMemHandle(CUdeviceptr dptr);`
    ipc_close_mem_handle: unsafe extern "C" fn(CuDevicePtr) -> CuResult,
    /// `CUresult cuGetErrorName(CUresult error, const char **pStr);`
    get_error_name: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    /// `CUresult cuGetErrorString(CUresult error, const char **pStr);`
    get_error_string: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
}

impl Api {
    fn resolve(lib: &'static Library) -> Result<Api, HalError> {
        // SAFETY: each type below is the symbol's C signature from `cuda.h` (quoted on the field),
        // and `lib` is leaked, so the pointers stay valid for the rest of the process.
        unsafe {
            Ok(Api {
                init: sym(lib, BACKEND, "cuInit")?,
                device_get_count: sym(lib, BACKEND, "cuDeviceGetCount")?,
                device_get: sym(lib, BACKEND, "cuDeviceGet")?,
                primary_ctx_retain: sym(lib, BACKEND, "cuDevicePrimaryCtxRetain")?,
                ctx_set_current: sym(lib, BACKEND, "cuCtxSetCurrent")?,
                ctx_get_current: sym(lib, BACKEND, "cuCtxGetCurrent")?,
                mem_alloc: sym(lib, BACKEND, "cuMemAlloc_v2")?,
                mem_free: sym(lib, BACKEND, "cuMemFree_v2")?,
                mem_get_address_range: sym(lib, BACKEND, "cuMemGetAddressRange_v2")?,
                memcpy_htod_async: sym(lib, BACKEND, "cuMemcpyHtoDAsync_v2")?,
                memcpy_dtoh_async: sym(lib, BACKEND, "cuMemcpyDtoHAsync_v2")?,
                memcpy_dtod_async: sym(lib, BACKEND, "cuMemcpyDtoDAsync_v2")?,
                memcpy_peer_async: sym(lib, BACKEND, "cuMemcpyPeerAsync")?,
                stream_create: sym(lib, BACKEND, "cuStreamCreate")?,
                stream_synchronize: sym(lib, BACKEND, "cuStreamSynchronize")?,
                pointer_get_attribute: sym(lib, BACKEND, "cuPointerGetAttribute")?,
                mem_host_register: sym(lib, BACKEND, "cuMemHostRegister_v2")?,
                mem_host_unregister: sym(lib, BACKEND, "cuMemHostUnregister")?,
                ipc_get_mem_handle: sym(lib, BACKEND, "cuIpcGetMemHandle")?,
                // `_v2` since CUDA 11.0; the same signature under the plain name before.
                ipc_open_mem_handle: sym(lib, BACKEND, "cuIpcOpenMemHandle_v2")
                    .or_else(|_| sym(lib, BACKEND, "cuIpcOpenMemHandle"))?,
                ipc_close_mem_handle: sym(lib, BACKEND, "cuIpcCloseMemHandle")?,
                get_error_name: sym(lib, BACKEND, "cuGetErrorName")?,
                get_error_string: sym(lib, BACKEND, "cuGetErrorString")?,
            })
        }
    }

    /// `CUDA_ERROR_OUT_OF_MEMORY (2): out of memory`.
    fn describe(&self, r: CuResult) -> String {
        let text = |f: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult| {
            let mut s: *const c_char = std::ptr::null();
            // SAFETY: `cuGetErrorName`/`cuGetErrorString` write a pointer to a static
            // NUL-terminated string (or leave it null for an unknown code).
            let ok = unsafe { f(r, &mut s) } == CUDA_SUCCESS && !s.is_null();
            // SAFETY: checked non-null above; the driver's strings are static.
            ok.then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
        };
        match (text(self.get_error_name), text(self.get_error_string)) {
            (Some(n), Some(s)) => format!("{n} ({r}): {s}"),
            (Some(n), None) => format!("{n} ({r})"),
            _ => format!("CUresult {r}"),
        }
    }

    fn check(&self, r: CuResult, op: &'static str, call: &str) -> Result<(), HalError> {
        if r == CUDA_SUCCESS {
            return Ok(());
        }
        Err(err(op, format!("{call}: {}", self.describe(r))))
    }
}

fn err(op: &'static str, reason: impl Into<String>) -> HalError {
    HalError::Device {
        backend: BACKEND,
        op,
        reason: reason.into(),
    }
}

/// A device's primary context and its copy stream.
#[derive(Clone, Copy)]
struct Dev {
    ctx: CuContext,
    stream: CuStream,
}

/// What this backend handed out, so that `free`, `close_import` and `unregister_host` refuse
/// what they did not hand out instead of passing it to the driver.
#[derive(Default)]
struct Tables {
    /// `alloc`ed pointers: device, bytes.
    allocs: HashMap<u64, (u32, u64)>,
    /// `import`ed pointers: device, times opened (the driver counts opens of one handle too).
    imports: HashMap<u64, (u32, u32)>,
    /// Registered host ranges: start, bytes.
    pinned: HashMap<u64, u64>,
}

/// The CUDA driver, loaded at run time.
pub struct Cuda {
    api: Api,
    count: u32,
    /// Per device, its context and stream once first used.
    devs: Vec<OnceLock<Dev>>,
    /// Serializes the creation of contexts and streams.
    create: Mutex<()>,
    tables: Mutex<Tables>,
}

// SAFETY: the driver API is thread-safe; `CUcontext` and `CUstream` are handles any thread may
// use (each entry point makes the context current on the calling thread first). The tables are
// behind a mutex.
unsafe impl Send for Cuda {}
// SAFETY: as above; the handles in `devs` are written once (OnceLock) and only read after.
unsafe impl Sync for Cuda {}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cuda")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Puts the calling thread's previous context back when dropped.
struct Restore<'a> {
    api: &'a Api,
    prev: CuContext,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if !self.prev.is_null() {
            // SAFETY: `prev` was the thread's current context when the entry point started; the
            // primary contexts we use are never destroyed, and a caller's context outlives its
            // own call into us.
            unsafe { (self.api.ctx_set_current)(self.prev) };
        }
    }
}

impl Cuda {
    /// Load `libcuda.so.1` (else `libcuda.so`) and initialize the driver. A driver without a
    /// device loads with `device_count() == 0`.
    pub fn load() -> Result<Cuda, HalError> {
        Cuda::load_from(LIBRARIES)
    }

    /// [`Cuda::load`] from the first of `names` that loads.
    pub fn load_from(names: &[&str]) -> Result<Cuda, HalError> {
        let lib = open_first(BACKEND, names)?;
        // Never unloaded: unloading the driver under live contexts and its own threads is unsound.
        let lib: &'static Library = Box::leak(Box::new(lib));
        let api = Api::resolve(lib)?;
        // SAFETY: `cuInit(0)` is the documented first call (flags must be 0); it may be called
        // again by torch or us, which is allowed.
        let r = unsafe { (api.init)(0) };
        let count = if r == CUDA_ERROR_NO_DEVICE {
            debug!("cuInit: no CUDA device");
            0
        } else {
            api.check(r, "load the runtime", "cuInit")?;
            let mut n: c_int = 0;
            // SAFETY: writes one int.
            let r = unsafe { (api.device_get_count)(&mut n) };
            api.check(r, "load the runtime", "cuDeviceGetCount")?;
            n.max(0) as u32
        };
        Ok(Cuda {
            api,
            count,
            devs: (0..count).map(|_| OnceLock::new()).collect(),
            create: Mutex::new(()),
            tables: Mutex::new(Tables::default()),
        })
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `device`'s primary context and stream, created on first use.
    fn dev(&self, device: u32, op: &'static str) -> Result<Dev, HalError> {
        let slot = self.devs.get(device as usize).ok_or_else(|| {
            err(
                op,
                format!("invalid device {device}: {} devices", self.count),
            )
        })?;
        if let Some(d) = slot.get() {
            return Ok(*d);
        }
        let _g = self.create.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = slot.get() {
            return Ok(*d);
        }
        let api = &self.api;
        let _restore = self.save_current();
        let mut h: CuDevice = 0;
        // SAFETY: writes one CUdevice; `device < count` was checked.
        let r = unsafe { (api.device_get)(&mut h, device as c_int) };
        api.check(r, op, "cuDeviceGet")?;
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: writes one CUcontext (the primary context, shared with the CUDA runtime).
        let r = unsafe { (api.primary_ctx_retain)(&mut ctx, h) };
        api.check(r, op, "cuDevicePrimaryCtxRetain")?;
        // SAFETY: `ctx` was just retained and is never released.
        let r = unsafe { (api.ctx_set_current)(ctx) };
        api.check(r, op, "cuCtxSetCurrent")?;
        let mut stream: CuStream = std::ptr::null_mut();
        // SAFETY: writes one CUstream, created in the current context (`ctx`).
        let r = unsafe { (api.stream_create)(&mut stream, CU_STREAM_DEFAULT) };
        api.check(r, op, "cuStreamCreate")?;
        debug!(
            device,
            "cuda: primary context retained, copy stream created"
        );
        let d = Dev { ctx, stream };
        let _ = slot.set(d);
        Ok(d)
    }

    /// The calling thread's current context, put back when the guard drops.
    fn save_current(&self) -> Restore<'_> {
        Restore {
            api: &self.api,
            prev: self.current_ctx(),
        }
    }

    /// The calling thread's current context (null when none is).
    fn current_ctx(&self) -> CuContext {
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: writes one CUcontext (null when none is current).
        let r = unsafe { (self.api.ctx_get_current)(&mut ctx) };
        if r == CUDA_SUCCESS {
            ctx
        } else {
            std::ptr::null_mut()
        }
    }

    /// Make `device`'s context current on this thread.
    fn enter(&self, device: u32, op: &'static str) -> Result<Dev, HalError> {
        let d = self.dev(device, op)?;
        // SAFETY: a retained primary context, never released.
        let r = unsafe { (self.api.ctx_set_current)(d.ctx) };
        self.api.check(r, op, "cuCtxSetCurrent")?;
        Ok(d)
    }

    /// `cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_MEMORY_TYPE)`: a `CUmemorytype`.
    fn memory_type(&self, ptr: u64) -> (CuResult, c_uint) {
        let mut v: c_uint = 0;
        // SAFETY: this attribute writes one `unsigned int` (`CUmemorytype`); `ptr` is only
        // looked up, never dereferenced.
        let r = unsafe {
            (self.api.pointer_get_attribute)(
                (&mut v as *mut c_uint).cast(),
                CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                ptr,
            )
        };
        (r, v)
    }

    /// `cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL)`: an `int`.
    fn device_ordinal(&self, ptr: u64) -> (CuResult, c_int) {
        let mut v: c_int = -1;
        // SAFETY: this attribute writes one `int`; `ptr` is only looked up.
        let r = unsafe {
            (self.api.pointer_get_attribute)(
                (&mut v as *mut c_int).cast(),
                CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                ptr,
            )
        };
        (r, v)
    }

    fn classify_inner(&self, ptr: u64) -> PtrKind {
        // The driver answers from a context: a thread with none gets device 0's primary context
        // (what the CUDA runtime would make current there), and keeps it.
        if self.current_ctx().is_null() && self.enter(0, "classify").is_err() {
            return PtrKind::Host;
        }
        let (mut r, mut mt) = self.memory_type(ptr);
        let _restore;
        if r == CUDA_ERROR_INVALID_CONTEXT || r == CUDA_ERROR_NOT_INITIALIZED {
            // The current context is unusable (not ours): ask again from device 0's.
            _restore = self.save_current();
            if self.enter(0, "classify").is_err() {
                return PtrKind::Host;
            }
            (r, mt) = self.memory_type(ptr);
        }
        if r == CUDA_ERROR_INVALID_VALUE {
            return PtrKind::Host;
        }
        if r != CUDA_SUCCESS {
            debug!(ptr, error = %self.api.describe(r), "cuda: classify: treated as host memory");
            return PtrKind::Host;
        }
        if mt != CU_MEMORYTYPE_DEVICE && mt != CU_MEMORYTYPE_UNIFIED {
            return PtrKind::Host;
        }
        let (r, ord) = self.device_ordinal(ptr);
        if r != CUDA_SUCCESS || ord < 0 {
            debug!(ptr, error = %self.api.describe(r), "cuda: device memory of unknown ordinal");
            return PtrKind::Device(0);
        }
        PtrKind::Device(ord as u32)
    }

    /// The device of `ptr`, which the copy kind says is device memory.
    fn device_side(&self, ptr: u64, op: &'static str) -> Result<u32, HalError> {
        match self.classify(ptr) {
            PtrKind::Device(d) => Ok(d),
            PtrKind::Host => Err(err(
                op,
                format!("{ptr:#x} is not device memory, but the copy kind names it device memory"),
            )),
        }
    }

    /// `ptr`, which the copy kind says is host memory, must not be device memory.
    fn host_side(&self, ptr: u64, op: &'static str) -> Result<(), HalError> {
        match self.classify(ptr) {
            PtrKind::Host => Ok(()),
            PtrKind::Device(d) => Err(err(
                op,
                format!("{ptr:#x} is memory of device {d}, but the copy kind names it host memory"),
            )),
        }
    }

    /// Issue one copy on the stream of its device; the device whose stream it went on.
    ///
    /// # Safety
    ///
    /// As [`Device::copy`] for the copy's host range.
    unsafe fn issue(&self, c: &DeviceCopy, op: &'static str) -> Result<u32, HalError> {
        let api = &self.api;
        let len = c.len as usize;
        match c.kind {
            CopyKind::HostToDevice => {
                let d = self.device_side(c.dst, op)?;
                self.host_side(c.src, op)?;
                let dev = self.enter(d, op)?;
                // SAFETY: the host source is valid for `len` bytes until the batch returns (the
                // caller's contract); the device range is checked by the driver.
                let r = unsafe {
                    (api.memcpy_htod_async)(c.dst, c.src as *const c_void, len, dev.stream)
                };
                api.check(r, op, "cuMemcpyHtoDAsync_v2").map(|()| d)
            }
            CopyKind::DeviceToHost => {
                let d = self.device_side(c.src, op)?;
                self.host_side(c.dst, op)?;
                let dev = self.enter(d, op)?;
                // SAFETY: the host destination is valid and unaliased for `len` bytes until the
                // batch returns (the caller's contract), and the batch syncs before returning.
                let r = unsafe {
                    (api.memcpy_dtoh_async)(c.dst as *mut c_void, c.src, len, dev.stream)
                };
                api.check(r, op, "cuMemcpyDtoHAsync_v2").map(|()| d)
            }
            CopyKind::DeviceToDevice => {
                let dd = self.device_side(c.dst, op)?;
                let sd = self.device_side(c.src, op)?;
                let dst = self.enter(dd, op)?;
                if dd == sd {
                    // SAFETY: both sides are device memory (checked by the driver).
                    let r = unsafe { (api.memcpy_dtod_async)(c.dst, c.src, len, dst.stream) };
                    api.check(r, op, "cuMemcpyDtoDAsync_v2").map(|()| dd)
                } else {
                    let src = self.dev(sd, op)?;
                    // SAFETY: both contexts are retained primary contexts; the stream belongs
                    // to the destination's (current) context.
                    let r = unsafe {
                        (api.memcpy_peer_async)(c.dst, dst.ctx, c.src, src.ctx, len, dst.stream)
                    };
                    api.check(r, op, "cuMemcpyPeerAsync").map(|()| dd)
                }
            }
        }
    }

    fn sync(&self, device: u32, op: &'static str) -> Result<(), HalError> {
        let d = self.enter(device, op)?;
        // SAFETY: a stream we created, never destroyed.
        let r = unsafe { (self.api.stream_synchronize)(d.stream) };
        self.api.check(r, op, "cuStreamSynchronize")
    }
}

impl Device for Cuda {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn device_count(&self) -> Result<u32, HalError> {
        Ok(self.count)
    }

    fn bind(&self, device: u32) -> Result<(), HalError> {
        self.enter(device, "bind a device").map(drop)
    }

    fn alloc(&self, device: u32, len: u64) -> Result<u64, HalError> {
        const OP: &str = "alloc";
        if len == 0 {
            return Err(err(OP, "zero bytes"));
        }
        let _restore = self.save_current();
        self.enter(device, OP)?;
        let mut p: CuDevicePtr = 0;
        // SAFETY: writes one CUdeviceptr; the context of `device` is current.
        let r = unsafe { (self.api.mem_alloc)(&mut p, len as usize) };
        self.api.check(
            r,
            OP,
            &format!("cuMemAlloc_v2({len} bytes on device {device})"),
        )?;
        self.tables().allocs.insert(p, (device, len));
        Ok(p)
    }

    fn free(&self, ptr: u64) -> Result<(), HalError> {
        const OP: &str = "free";
        let mut t = self.tables();
        let Some(&(device, len)) = t.allocs.get(&ptr) else {
            let why = if t.imports.contains_key(&ptr) {
                format!("{ptr:#x} was imported: close the import instead")
            } else {
                format!("{ptr:#x} is not the start of a live allocation of this backend")
            };
            return Err(err(OP, why));
        };
        let _restore = self.save_current();
        self.enter(device, OP)?;
        // SAFETY: `ptr` was returned by `cuMemAlloc_v2` and is freed once (removed below under
        // the same lock).
        let r = unsafe { (self.api.mem_free)(ptr) };
        self.api.check(r, OP, "cuMemFree_v2")?;
        t.allocs.remove(&ptr);
        debug!(ptr, len, device, "cuda: freed");
        Ok(())
    }

    fn classify(&self, ptr: u64) -> PtrKind {
        if self.count == 0 || ptr == 0 {
            return PtrKind::Host;
        }
        self.classify_inner(ptr)
    }

    unsafe fn copy(&self, batch: &[DeviceCopy]) -> Result<(), HalError> {
        const OP: &str = "copy";
        let _restore = self.save_current();
        let mut used: Vec<u32> = Vec::new();
        let mut first_err = None;
        for c in batch.iter().filter(|c| c.len > 0) {
            // SAFETY: forwarded from this function's contract.
            match unsafe { self.issue(c, OP) } {
                Ok(d) => {
                    if !used.contains(&d) {
                        used.push(d);
                    }
                }
                Err(e) => {
                    first_err = Some(e);
                    break;
                }
            }
        }
        // Synchronize everything issued, also after a failure: no copy may outlive the call.
        for d in used {
            if let Err(e) = self.sync(d, OP) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    unsafe fn register_host(&self, ptr: u64, len: u64) -> Result<bool, HalError> {
        const OP: &str = "register host memory";
        if self.count == 0 {
            return Ok(false);
        }
        if len == 0 {
            return Err(err(OP, "zero bytes"));
        }
        let mut t = self.tables();
        if t.pinned.contains_key(&ptr) {
            return Err(err(OP, format!("{ptr:#x} is already registered")));
        }
        let _restore = self.save_current();
        self.enter(0, OP)?;
        // SAFETY: `[ptr, ptr + len)` is mapped host memory until `unregister_host` (the caller's
        // contract); PORTABLE pins it for every context.
        let r = unsafe {
            (self.api.mem_host_register)(
                ptr as *mut c_void,
                len as usize,
                CU_MEMHOSTREGISTER_PORTABLE,
            )
        };
        self.api.check(r, OP, "cuMemHostRegister_v2")?;
        t.pinned.insert(ptr, len);
        Ok(true)
    }

    fn unregister_host(&self, ptr: u64) -> Result<(), HalError> {
        const OP: &str = "unregister host memory";
        let mut t = self.tables();
        if !t.pinned.contains_key(&ptr) {
            return Err(err(OP, format!("{ptr:#x} is not registered")));
        }
        let _restore = self.save_current();
        self.enter(0, OP)?;
        // SAFETY: `ptr` was registered by `register_host` and is unregistered once.
        let r = unsafe { (self.api.mem_host_unregister)(ptr as *mut c_void) };
        self.api.check(r, OP, "cuMemHostUnregister")?;
        t.pinned.remove(&ptr);
        Ok(())
    }

    fn export(&self, ptr: u64) -> Result<IpcHandle, HalError> {
        const OP: &str = "export";
        let PtrKind::Device(d) = self.classify(ptr) else {
            return Err(err(OP, format!("{ptr:#x} is not device memory")));
        };
        let _restore = self.save_current();
        self.enter(d, OP)?;
        let (mut base, mut size): (CuDevicePtr, usize) = (0, 0);
        // SAFETY: writes the allocation's base and size.
        let r = unsafe { (self.api.mem_get_address_range)(&mut base, &mut size, ptr) };
        self.api.check(r, OP, "cuMemGetAddressRange_v2")?;
        if base != ptr {
            return Err(err(
                OP,
                format!("{ptr:#x} is not the start of an allocation (it starts at {base:#x})"),
            ));
        }
        let mut h = CuIpcMemHandle {
            reserved: [0; IPC_HANDLE_SIZE],
        };
        // SAFETY: writes the 64-byte handle of the allocation at `ptr`.
        let r = unsafe { (self.api.ipc_get_mem_handle)(&mut h, ptr) };
        self.api.check(r, OP, "cuIpcGetMemHandle")?;
        Ok(IpcHandle::Opaque {
            bytes: h.reserved.iter().map(|&b| b as u8).collect(),
            len: size as u64,
        })
    }

    fn import(&self, handle: &IpcHandle, device: u32) -> Result<u64, HalError> {
        const OP: &str = "import";
        let IpcHandle::Opaque { bytes, .. } = handle else {
            return Err(err(OP, "not a CUDA IPC handle (expected 64 opaque bytes)"));
        };
        if bytes.len() != IPC_HANDLE_SIZE {
            return Err(err(
                OP,
                format!(
                    "a CUDA IPC handle has {IPC_HANDLE_SIZE} bytes, not {}",
                    bytes.len()
                ),
            ));
        }
        let mut h = CuIpcMemHandle {
            reserved: [0; IPC_HANDLE_SIZE],
        };
        for (d, s) in h.reserved.iter_mut().zip(bytes) {
            *d = *s as c_char;
        }
        let _restore = self.save_current();
        self.enter(device, OP)?;
        let mut p: CuDevicePtr = 0;
        // SAFETY: writes one CUdeviceptr; the handle is passed by value as `cuda.h` declares.
        let r = unsafe {
            (self.api.ipc_open_mem_handle)(&mut p, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS)
        };
        self.api.check(r, OP, "cuIpcOpenMemHandle_v2")?;
        self.tables().imports.entry(p).or_insert((device, 0)).1 += 1;
        Ok(p)
    }

    fn close_import(&self, ptr: u64) -> Result<(), HalError> {
        const OP: &str = "close an import";
        let mut t = self.tables();
        let Some(&(device, opens)) = t.imports.get(&ptr) else {
            return Err(err(OP, format!("{ptr:#x} is not an imported allocation")));
        };
        let _restore = self.save_current();
        self.enter(device, OP)?;
        // SAFETY: `ptr` came from `cuIpcOpenMemHandle_v2` and is closed once per open.
        let r = unsafe { (self.api.ipc_close_mem_handle)(ptr) };
        self.api.check(r, OP, "cuIpcCloseMemHandle")?;
        if opens <= 1 {
            t.imports.remove(&ptr);
        } else {
            t.imports.insert(ptr, (device, opens - 1));
        }
        Ok(())
    }
}
