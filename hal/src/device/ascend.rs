//! The `ascend` backend: Ascend NPUs through AscendCL (`libascendcl.so`), loaded at run time with
//! libloading, so nothing links against CANN and a build needs no Ascend SDK.
//!
//! - **Start**: `aclInit(NULL)` (`ACL_ERROR_REPEAT_INITIALIZE` is fine: torch_npu may have done it),
//!   `aclrtGetDeviceCount`. Device ids are the runtime's, after `ASCEND_RT_VISIBLE_DEVICES`.
//! - **Threads**: AscendCL's current device is per thread (`aclrtSetDevice`, which shares one
//!   default context per device among threads); every entry point sets the device it needs when
//!   another is current (`aclrtGetDevice` first: `aclrtSetDevice` counts references) and puts the
//!   caller's device back afterwards. [`Device::bind`] sets it on purpose.
//! - **Copies**: `aclrtMemcpyAsync` with an explicit kind on one stream per device
//!   (`aclrtCreateStream`, created lazily), then `aclrtSynchronizeStream` once per device used;
//!   after a failure what was issued is still synchronized. Copies from or to pageable host memory
//!   are synchronous in AscendCL itself; registered host memory makes them asynchronous.
//! - **Classification**: this backend's own table of allocations and imports, then
//!   `aclrtPointerGetAttributes` when the runtime has it (CANN 8.x; it answers for memory from
//!   AscendCL's allocators, such as torch_npu's), else host memory. Because pointers from other
//!   allocators may be unknown, a copy trusts its explicit kind for the device side and runs it on
//!   the device the pointer is known to belong to, else the calling thread's current device.
//! - **Optional symbols** (older CANN lacks them): `aclrtPointerGetAttributes`,
//!   `aclrtDeviceEnablePeerAccess` (called once per pair of devices a copy crosses),
//!   `aclrtHostRegister` / `aclrtHostUnregister` (without them `register_host` answers
//!   `Ok(false)`), `aclrtIpcMemGetExportKey` / `aclrtIpcMemImportByKey` / `aclrtIpcMemClose`
//!   (without them export and import fail naming the missing symbol), `aclGetRecentErrMsg`.
//! - **IPC**: the export key (up to 64 characters, [`IpcHandle::Opaque`]), exported with PID
//!   validation off (`ACL_RT_IPC_MEM_EXPORT_FLAG_DISABLE_PID_VALIDATION`) so any local process
//!   may import it, and imported with `ACL_RT_IPC_MEM_IMPORT_FLAG_ENABLE_PEER_ACCESS`. The
//!   exporter closes its key (`aclrtIpcMemClose`) when the allocation is freed.
//!
//! Every symbol is declared in CANN's `acl/acl_rt.h` (types in `acl/acl_base_rt.h`, included by
//! `acl/acl_base.h`); `aclInit` and `aclGetRecentErrMsg` are in `acl/acl.h` in CANN releases
//! before the runtime headers were split out.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

use libloading::Library;
use tracing::debug;

use super::loader::{open_first, sym};
use super::{BackendKind, CopyKind, Device, DeviceCopy, IpcHandle, PtrKind};
use crate::error::HalError;

const BACKEND: &str = "ascend";

/// The libraries tried, in order: the name on `LD_LIBRARY_PATH` (CANN's `set_env.sh`), then the
/// toolkit's default install path.
pub const LIBRARIES: &[&str] = &[
    "libascendcl.so",
    "/usr/local/Ascend/ascend-toolkit/latest/lib64/libascendcl.so",
];

/// `typedef int aclError;` (acl_base_rt.h).
type AclError = c_int;
/// `typedef void *aclrtStream;` (acl_base_rt.h).
type AclrtStream = *mut c_void;
/// `aclrtMemMallocPolicy`, `aclrtMemcpyKind`, `aclrtHostRegisterType`, `aclrtMemLocationType`:
/// C enums, `int`-sized.
type AclEnum = c_int;

const ACL_SUCCESS: AclError = 0;
/// `static const int ACL_ERROR_REPEAT_INITIALIZE = 100002;` (acl_base_rt.h).
const ACL_ERROR_REPEAT_INITIALIZE: AclError = 100002;
/// `ACL_MEM_MALLOC_HUGE_FIRST` (first of `aclrtMemMallocPolicy`).
const ACL_MEM_MALLOC_HUGE_FIRST: AclEnum = 0;
/// `aclrtMemcpyKind`: `ACL_MEMCPY_HOST_TO_DEVICE` (1), `DEVICE_TO_HOST` (2), `DEVICE_TO_DEVICE`
/// (3); `HOST_TO_HOST` is 0 and never used (host copies are not device copies).
const ACL_MEMCPY_HOST_TO_DEVICE: AclEnum = 1;
const ACL_MEMCPY_DEVICE_TO_HOST: AclEnum = 2;
const ACL_MEMCPY_DEVICE_TO_DEVICE: AclEnum = 3;
/// `ACL_HOST_REGISTER_MAPPED = 0` (`aclrtHostRegisterType`).
const ACL_HOST_REGISTER_MAPPED: AclEnum = 0;
/// `ACL_MEM_LOCATION_TYPE_DEVICE` (1 in `aclrtMemLocationType`).
const ACL_MEM_LOCATION_TYPE_DEVICE: AclEnum = 1;
/// `#define ACL_RT_IPC_MEM_EXPORT_FLAG_DISABLE_PID_VALIDATION 0x1UL`
const ACL_RT_IPC_MEM_EXPORT_FLAG_DISABLE_PID_VALIDATION: u64 = 0x1;
/// `#define ACL_RT_IPC_MEM_IMPORT_FLAG_ENABLE_PEER_ACCESS 0x1UL`
const ACL_RT_IPC_MEM_IMPORT_FLAG_ENABLE_PEER_ACCESS: u64 = 0x1;
/// The key buffer's length (`aclrtIpcMemGetExportKey`'s `len`: "fixed at 65", with the NUL).
const IPC_KEY_LEN: usize = 65;

/// `typedef struct aclrtMemLocation { uint32_t id; aclrtMemLocationType type; } aclrtMemLocation;`
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct AclrtMemLocation {
    id: u32,
    kind: AclEnum,
}

/// `typedef struct aclrtPtrAttributes { aclrtMemLocation location; uint32_t pageSize;
/// uint32_t rsv[4]; } aclrtPtrAttributes;`
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct AclrtPtrAttributes {
    location: AclrtMemLocation,
    page_size: u32,
    rsv: [u32; 4],
}

/// The AscendCL entry points, copied out of the (never unloaded) library.
struct Api {
    /// `aclError aclInit(const char *configPath);`
    init: unsafe extern "C" fn(*const c_char) -> AclError,
    /// `aclError aclrtGetDeviceCount(uint32_t *count);`
    get_device_count: unsafe extern "C" fn(*mut u32) -> AclError,
    /// `aclError aclrtSetDevice(int32_t deviceId);`
    set_device: unsafe extern "C" fn(i32) -> AclError,
    /// `aclError aclrtGetDevice(int32_t *deviceId);`
    get_device: unsafe extern "C" fn(*mut i32) -> AclError,
    /// `aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy);`
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize, AclEnum) -> AclError,
    /// `aclError aclrtFree(void *devPtr);`
    free: unsafe extern "C" fn(*mut c_void) -> AclError,
    /// `aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count,
    /// aclrtMemcpyKind kind, aclrtStream stream);`
    memcpy_async: unsafe extern "C" fn(
        *mut c_void,
        usize,
        *const c_void,
        usize,
        AclEnum,
        AclrtStream,
    ) -> AclError,
    /// `aclError aclrtCreateStream(aclrtStream *stream);`
    create_stream: unsafe extern "C" fn(*mut AclrtStream) -> AclError,
    /// `aclError aclrtSynchronizeStream(aclrtStream stream);`
    synchronize_stream: unsafe extern "C" fn(AclrtStream) -> AclError,
    /// `aclError aclrtPointerGetAttributes(const void *ptr, aclrtPtrAttributes *attributes);`
    pointer_get_attributes:
        Option<unsafe extern "C" fn(*const c_void, *mut AclrtPtrAttributes) -> AclError>,
    /// `aclError aclrtHostRegister(void *ptr, uint64_t size, aclrtHostRegisterType type,
    /// void **devPtr);`
    host_register:
        Option<unsafe extern "C" fn(*mut c_void, u64, AclEnum, *mut *mut c_void) -> AclError>,
    /// `aclError aclrtHostUnregister(void *ptr);`
    host_unregister: Option<unsafe extern "C" fn(*mut c_void) -> AclError>,
    /// `aclError aclrtIpcMemGetExportKey(void *devPtr, size_t size, char *key, size_t len,
    /// uint64_t flags);`
    ipc_export:
        Option<unsafe extern "C" fn(*mut c_void, usize, *mut c_char, usize, u64) -> AclError>,
    /// `aclError aclrtIpcMemImportByKey(void **devPtr, const char *key, uint64_t flags);`
    ipc_import: Option<unsafe extern "C" fn(*mut *mut c_void, *const c_char, u64) -> AclError>,
    /// `aclError aclrtIpcMemClose(const char *key);`
    ipc_close: Option<unsafe extern "C" fn(*const c_char) -> AclError>,
    /// `const char *aclGetRecentErrMsg();`
    recent_err_msg: Option<unsafe extern "C" fn() -> *const c_char>,
    /// `aclError aclrtDeviceEnablePeerAccess(int32_t peerDeviceId, uint32_t flags);`
    enable_peer_access: Option<unsafe extern "C" fn(i32, u32) -> AclError>,
}

impl Api {
    fn resolve(lib: &'static Library) -> Result<Api, HalError> {
        // SAFETY: each type is the symbol's C signature from acl_rt.h (quoted on the field), and
        // `lib` is leaked, so the pointers stay valid for the rest of the process.
        unsafe {
            Ok(Api {
                init: sym(lib, BACKEND, "aclInit")?,
                get_device_count: sym(lib, BACKEND, "aclrtGetDeviceCount")?,
                set_device: sym(lib, BACKEND, "aclrtSetDevice")?,
                get_device: sym(lib, BACKEND, "aclrtGetDevice")?,
                malloc: sym(lib, BACKEND, "aclrtMalloc")?,
                free: sym(lib, BACKEND, "aclrtFree")?,
                memcpy_async: sym(lib, BACKEND, "aclrtMemcpyAsync")?,
                create_stream: sym(lib, BACKEND, "aclrtCreateStream")?,
                synchronize_stream: sym(lib, BACKEND, "aclrtSynchronizeStream")?,
                pointer_get_attributes: sym(lib, BACKEND, "aclrtPointerGetAttributes").ok(),
                host_register: sym(lib, BACKEND, "aclrtHostRegister").ok(),
                host_unregister: sym(lib, BACKEND, "aclrtHostUnregister").ok(),
                ipc_export: sym(lib, BACKEND, "aclrtIpcMemGetExportKey").ok(),
                ipc_import: sym(lib, BACKEND, "aclrtIpcMemImportByKey").ok(),
                ipc_close: sym(lib, BACKEND, "aclrtIpcMemClose").ok(),
                recent_err_msg: sym(lib, BACKEND, "aclGetRecentErrMsg").ok(),
                enable_peer_access: sym(lib, BACKEND, "aclrtDeviceEnablePeerAccess").ok(),
            })
        }
    }

    fn check(&self, r: AclError, op: &'static str, call: &str) -> Result<(), HalError> {
        if r == ACL_SUCCESS {
            return Ok(());
        }
        let msg = self.recent_err_msg.and_then(|f| {
            // SAFETY: `aclGetRecentErrMsg` returns null or a NUL-terminated string owned by the
            // runtime (thread-local), valid until the next AscendCL call on this thread.
            let p = unsafe { f() };
            // SAFETY: non-null, NUL-terminated (above); copied out at once.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        });
        Err(err(
            op,
            match msg {
                Some(m) if !m.trim().is_empty() => format!("{call}: aclError {r}: {}", m.trim()),
                _ => format!("{call}: aclError {r}"),
            },
        ))
    }
}

fn err(op: &'static str, reason: impl Into<String>) -> HalError {
    HalError::Device {
        backend: BACKEND,
        op,
        reason: reason.into(),
    }
}

fn missing(op: &'static str, symbol: &str) -> HalError {
    err(
        op,
        format!("this AscendCL has no {symbol} (an older CANN): not available"),
    )
}

/// What a known device range is.
enum Origin {
    /// From `alloc`; the key it was exported under, if it was.
    Alloc { exported: Option<CString> },
    /// From `import`, under this key.
    Import { key: CString },
}

struct Region {
    device: u32,
    len: u64,
    origin: Origin,
}

#[derive(Default)]
struct Tables {
    /// Allocations and imports by start address.
    regions: BTreeMap<u64, Region>,
    /// Registered host ranges: start, bytes.
    pinned: BTreeMap<u64, u64>,
}

/// AscendCL, loaded at run time.
pub struct Ascend {
    api: Api,
    count: u32,
    /// Per device, its copy stream once first used (a pointer kept as `usize`).
    streams: Vec<OnceLock<usize>>,
    create: Mutex<()>,
    tables: Mutex<Tables>,
    /// (device, peer) pairs whose peer access this backend enabled.
    peers: Mutex<HashSet<(u32, u32)>>,
}

impl std::fmt::Debug for Ascend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ascend")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Puts the calling thread's previous device back when dropped.
struct Restore<'a> {
    api: &'a Api,
    prev: Option<i32>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let Some(prev) = self.prev else { return };
        let mut now = -1;
        // SAFETY: writes one int32.
        let r = unsafe { (self.api.get_device)(&mut now) };
        if r != ACL_SUCCESS || now != prev {
            // SAFETY: `prev` was this thread's device when the entry point started.
            unsafe { (self.api.set_device)(prev) };
        }
    }
}

impl Ascend {
    /// Load `libascendcl.so`, `aclInit` and count the devices.
    pub fn load() -> Result<Ascend, HalError> {
        Ascend::load_from(LIBRARIES)
    }

    /// [`Ascend::load`] from the first of `names` that loads.
    pub fn load_from(names: &[&str]) -> Result<Ascend, HalError> {
        const OP: &str = "load the runtime";
        let lib = open_first(BACKEND, names)?;
        // Never unloaded: the runtime keeps threads and device state for the whole process.
        let lib: &'static Library = Box::leak(Box::new(lib));
        let api = Api::resolve(lib)?;
        // SAFETY: `aclInit(NULL)`: no config file. A second call answers REPEAT_INITIALIZE.
        let r = unsafe { (api.init)(std::ptr::null()) };
        if r != ACL_ERROR_REPEAT_INITIALIZE {
            api.check(r, OP, "aclInit")?;
        }
        let mut count = 0u32;
        // SAFETY: writes one uint32.
        let r = unsafe { (api.get_device_count)(&mut count) };
        api.check(r, OP, "aclrtGetDeviceCount")?;
        Ok(Ascend {
            api,
            count,
            streams: (0..count).map(|_| OnceLock::new()).collect(),
            create: Mutex::new(()),
            tables: Mutex::new(Tables::default()),
            peers: Mutex::new(HashSet::new()),
        })
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calling thread's current device, if any.
    fn current(&self) -> Option<i32> {
        let mut d = -1;
        // SAFETY: writes one int32 (fails when no device is set on this thread).
        (unsafe { (self.api.get_device)(&mut d) } == ACL_SUCCESS && d >= 0).then_some(d)
    }

    fn save_current(&self) -> Restore<'_> {
        Restore {
            api: &self.api,
            prev: self.current(),
        }
    }

    /// Make `device` current on this thread; its copy stream.
    fn enter(&self, device: u32, op: &'static str) -> Result<AclrtStream, HalError> {
        let slot = self.streams.get(device as usize).ok_or_else(|| {
            err(
                op,
                format!("invalid device {device}: {} devices", self.count),
            )
        })?;
        if self.current() != Some(device as i32) {
            // SAFETY: a valid device id (`device < count`).
            let r = unsafe { (self.api.set_device)(device as i32) };
            self.api.check(r, op, "aclrtSetDevice")?;
        }
        if let Some(s) = slot.get() {
            return Ok(*s as AclrtStream);
        }
        let _g = self.create.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.get() {
            return Ok(*s as AclrtStream);
        }
        let mut s: AclrtStream = std::ptr::null_mut();
        // SAFETY: writes one stream handle, created in `device`'s default context (current).
        let r = unsafe { (self.api.create_stream)(&mut s) };
        self.api.check(r, op, "aclrtCreateStream")?;
        debug!(device, "ascend: copy stream created");
        let _ = slot.set(s as usize);
        Ok(s)
    }

    /// The device `ptr` belongs to, if known: this backend's table, then the runtime.
    fn lookup(&self, ptr: u64) -> Option<u32> {
        {
            let t = self.tables();
            if let Some((start, r)) = t.regions.range(..=ptr).next_back() {
                if ptr - start < r.len {
                    return Some(r.device);
                }
            }
        }
        let f = self.api.pointer_get_attributes?;
        // The runtime answers from a device context: a thread with none gets device 0 (and
        // keeps it, as after its own first aclrtSetDevice).
        if self.current().is_none() && self.enter(0, "classify").is_err() {
            return None;
        }
        let mut a = AclrtPtrAttributes::default();
        // SAFETY: writes one aclrtPtrAttributes; `ptr` is only looked up, never dereferenced.
        let r = unsafe { f(ptr as *const c_void, &mut a) };
        (r == ACL_SUCCESS && a.location.kind == ACL_MEM_LOCATION_TYPE_DEVICE)
            .then_some(a.location.id)
    }

    /// The device a copy's device-side `ptr` runs on: its own if known, else `fallback` (the
    /// caller's current device, or 0): the copy kind is explicit.
    fn device_side(&self, ptr: u64, fallback: u32) -> u32 {
        self.lookup(ptr).unwrap_or(fallback)
    }

    fn host_side(&self, ptr: u64, op: &'static str) -> Result<(), HalError> {
        {
            // Registered host memory is host memory, whatever the runtime maps it as.
            let t = self.tables();
            if let Some((start, len)) = t.pinned.range(..=ptr).next_back() {
                if ptr - start < *len {
                    return Ok(());
                }
            }
        }
        match self.lookup(ptr) {
            None => Ok(()),
            Some(d) => Err(err(
                op,
                format!("{ptr:#x} is memory of device {d}, but the copy kind names it host memory"),
            )),
        }
    }

    /// Issue one copy; the device whose stream it went on.
    ///
    /// # Safety
    ///
    /// As [`Device::copy`] for the copy's host range.
    unsafe fn issue(
        &self,
        c: &DeviceCopy,
        fallback: u32,
        op: &'static str,
    ) -> Result<u32, HalError> {
        let (device, kind) = match c.kind {
            CopyKind::HostToDevice => {
                self.host_side(c.src, op)?;
                (self.device_side(c.dst, fallback), ACL_MEMCPY_HOST_TO_DEVICE)
            }
            CopyKind::DeviceToHost => {
                self.host_side(c.dst, op)?;
                (self.device_side(c.src, fallback), ACL_MEMCPY_DEVICE_TO_HOST)
            }
            CopyKind::DeviceToDevice => (
                self.device_side(c.dst, fallback),
                ACL_MEMCPY_DEVICE_TO_DEVICE,
            ),
        };
        let stream = self.enter(device, op)?;
        if c.kind == CopyKind::DeviceToDevice {
            if let Some(src) = self.lookup(c.src).filter(|&s| s != device) {
                self.enable_peer(device, src);
            }
        }
        let len = c.len as usize;
        // SAFETY: host ranges are valid for `len` bytes until the batch returns (the caller's
        // contract) and the batch synchronizes before returning; device ranges are checked by
        // the runtime. `destMax` is `len`: the destination holds at least the bytes copied.
        let r = unsafe {
            (self.api.memcpy_async)(
                c.dst as *mut c_void,
                len,
                c.src as *const c_void,
                len,
                kind,
                stream,
            )
        };
        self.api.check(r, op, "aclrtMemcpyAsync").map(|()| device)
    }
}

impl Ascend {
    /// Let `device` (current on this thread) reach `peer`'s memory, once per pair. A failure is
    /// logged, not returned: the copy that needs it reports the runtime's error.
    fn enable_peer(&self, device: u32, peer: u32) {
        let Some(enable) = self.api.enable_peer_access else {
            return;
        };
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if !peers.insert((device, peer)) {
            return;
        }
        // SAFETY: `peer` is a valid device id (it owns a known allocation); flags must be 0.
        let r = unsafe { enable(peer as i32, 0) };
        if let Err(e) = self.api.check(r, "copy", "aclrtDeviceEnablePeerAccess") {
            debug!(device, peer, error = %e, "ascend: enabling peer access");
        }
    }
}

impl Device for Ascend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ascend
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
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: writes one device pointer; `device` is current on this thread.
        let r = unsafe { (self.api.malloc)(&mut p, len as usize, ACL_MEM_MALLOC_HUGE_FIRST) };
        self.api.check(
            r,
            OP,
            &format!("aclrtMalloc({len} bytes on device {device})"),
        )?;
        self.tables().regions.insert(
            p as u64,
            Region {
                device,
                len,
                origin: Origin::Alloc { exported: None },
            },
        );
        Ok(p as u64)
    }

    fn free(&self, ptr: u64) -> Result<(), HalError> {
        const OP: &str = "free";
        let mut t = self.tables();
        let (device, exported) = match t.regions.get(&ptr) {
            Some(Region {
                device,
                origin: Origin::Alloc { exported },
                ..
            }) => (*device, exported.clone()),
            Some(_) => {
                return Err(err(
                    OP,
                    format!("{ptr:#x} was imported: close the import instead"),
                ))
            }
            None => {
                return Err(err(
                    OP,
                    format!("{ptr:#x} is not the start of a live allocation of this backend"),
                ))
            }
        };
        let _restore = self.save_current();
        self.enter(device, OP)?;
        if let (Some(key), Some(close)) = (exported, self.api.ipc_close) {
            // SAFETY: a key this process exported; the exporter closes it before freeing.
            let r = unsafe { close(key.as_ptr()) };
            if let Err(e) = self.api.check(r, OP, "aclrtIpcMemClose") {
                debug!(error = %e, "ascend: closing the export key before free");
            }
        }
        // SAFETY: `ptr` came from `aclrtMalloc` and is freed once (removed below under the lock).
        let r = unsafe { (self.api.free)(ptr as *mut c_void) };
        self.api.check(r, OP, "aclrtFree")?;
        t.regions.remove(&ptr);
        Ok(())
    }

    fn classify(&self, ptr: u64) -> PtrKind {
        if self.count == 0 || ptr == 0 {
            return PtrKind::Host;
        }
        self.lookup(ptr).map_or(PtrKind::Host, PtrKind::Device)
    }

    unsafe fn copy(&self, batch: &[DeviceCopy]) -> Result<(), HalError> {
        const OP: &str = "copy";
        let restore = self.save_current();
        let fallback = restore.prev.map_or(0, |d| d as u32);
        let mut used: Vec<u32> = Vec::new();
        let mut first_err = None;
        for c in batch.iter().filter(|c| c.len > 0) {
            // SAFETY: forwarded from this function's contract.
            match unsafe { self.issue(c, fallback, OP) } {
                Ok(d) if !used.contains(&d) => used.push(d),
                Ok(_) => {}
                Err(e) => {
                    first_err = Some(e);
                    break;
                }
            }
        }
        // Synchronize everything issued, also after a failure: no copy may outlive the call.
        for d in used {
            let r = self.enter(d, OP).and_then(|s| {
                // SAFETY: a stream we created, never destroyed.
                let r = unsafe { (self.api.synchronize_stream)(s) };
                self.api.check(r, OP, "aclrtSynchronizeStream")
            });
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    unsafe fn register_host(&self, ptr: u64, len: u64) -> Result<bool, HalError> {
        const OP: &str = "register host memory";
        let (Some(register), Some(_)) = (self.api.host_register, self.api.host_unregister) else {
            return Ok(false);
        };
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
        let device = self.current().map_or(0, |d| d as u32);
        self.enter(device, OP)?;
        let mut mapped: *mut c_void = std::ptr::null_mut();
        // SAFETY: `[ptr, ptr + len)` is mapped host memory until `unregister_host` (the caller's
        // contract); the runtime writes the device-side alias, which we do not use.
        let r = unsafe {
            register(
                ptr as *mut c_void,
                len,
                ACL_HOST_REGISTER_MAPPED,
                &mut mapped,
            )
        };
        self.api.check(r, OP, "aclrtHostRegister")?;
        t.pinned.insert(ptr, len);
        Ok(true)
    }

    fn unregister_host(&self, ptr: u64) -> Result<(), HalError> {
        const OP: &str = "unregister host memory";
        let mut t = self.tables();
        if !t.pinned.contains_key(&ptr) {
            return Err(err(OP, format!("{ptr:#x} is not registered")));
        }
        let unregister = self
            .api
            .host_unregister
            .ok_or_else(|| missing(OP, "aclrtHostUnregister"))?;
        // SAFETY: `ptr` was registered by `register_host` and is unregistered once.
        let r = unsafe { unregister(ptr as *mut c_void) };
        self.api.check(r, OP, "aclrtHostUnregister")?;
        t.pinned.remove(&ptr);
        Ok(())
    }

    fn export(&self, ptr: u64) -> Result<IpcHandle, HalError> {
        const OP: &str = "export";
        let export = self
            .api
            .ipc_export
            .ok_or_else(|| missing(OP, "aclrtIpcMemGetExportKey"))?;
        let mut t = self.tables();
        let Some(region) = t.regions.get_mut(&ptr) else {
            return Err(err(
                OP,
                format!("{ptr:#x} is not the start of a live allocation of this backend"),
            ));
        };
        let len = region.len;
        let Origin::Alloc { exported } = &mut region.origin else {
            return Err(err(
                OP,
                format!("{ptr:#x} was imported; export the original"),
            ));
        };
        if let Some(key) = exported {
            return Ok(IpcHandle::Opaque {
                bytes: key.as_bytes().to_vec(),
                len,
            });
        }
        let _restore = self.save_current();
        self.enter(region.device, OP)?;
        let mut buf = [0 as c_char; IPC_KEY_LEN];
        // SAFETY: the runtime writes a NUL-terminated key of at most `IPC_KEY_LEN` bytes into
        // `buf`; `ptr`/`len` is one live allocation of ours.
        let r = unsafe {
            export(
                ptr as *mut c_void,
                len as usize,
                buf.as_mut_ptr(),
                IPC_KEY_LEN,
                ACL_RT_IPC_MEM_EXPORT_FLAG_DISABLE_PID_VALIDATION,
            )
        };
        self.api.check(r, OP, "aclrtIpcMemGetExportKey")?;
        let bytes: Vec<u8> = buf
            .iter()
            .map(|&b| b as u8)
            .take_while(|&b| b != 0)
            .collect();
        let key = CString::new(bytes.clone()).map_err(|e| err(OP, e.to_string()))?;
        *exported = Some(key);
        Ok(IpcHandle::Opaque { bytes, len })
    }

    fn import(&self, handle: &IpcHandle, device: u32) -> Result<u64, HalError> {
        const OP: &str = "import";
        let import = self
            .api
            .ipc_import
            .ok_or_else(|| missing(OP, "aclrtIpcMemImportByKey"))?;
        let IpcHandle::Opaque { bytes, len } = handle else {
            return Err(err(OP, "not an Ascend IPC key (expected opaque bytes)"));
        };
        if bytes.is_empty() || bytes.len() >= IPC_KEY_LEN {
            return Err(err(
                OP,
                format!("an Ascend IPC key has 1 to 64 bytes, not {}", bytes.len()),
            ));
        }
        let key = CString::new(bytes.clone())
            .map_err(|_| err(OP, "an Ascend IPC key has no NUL byte"))?;
        let _restore = self.save_current();
        self.enter(device, OP)?;
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: writes one device pointer; `key` is NUL-terminated.
        let r = unsafe {
            import(
                &mut p,
                key.as_ptr(),
                ACL_RT_IPC_MEM_IMPORT_FLAG_ENABLE_PEER_ACCESS,
            )
        };
        self.api.check(r, OP, "aclrtIpcMemImportByKey")?;
        self.tables().regions.insert(
            p as u64,
            Region {
                device,
                len: *len,
                origin: Origin::Import { key },
            },
        );
        Ok(p as u64)
    }

    fn close_import(&self, ptr: u64) -> Result<(), HalError> {
        const OP: &str = "close an import";
        let mut t = self.tables();
        let (device, key) = match t.regions.get(&ptr) {
            Some(Region {
                device,
                origin: Origin::Import { key },
                ..
            }) => (*device, key.clone()),
            _ => return Err(err(OP, format!("{ptr:#x} is not an imported allocation"))),
        };
        let close = self
            .api
            .ipc_close
            .ok_or_else(|| missing(OP, "aclrtIpcMemClose"))?;
        let _restore = self.save_current();
        self.enter(device, OP)?;
        // SAFETY: the key this import was opened with; closed once (removed below).
        let r = unsafe { close(key.as_ptr()) };
        self.api.check(r, OP, "aclrtIpcMemClose")?;
        t.regions.remove(&ptr);
        Ok(())
    }
}
