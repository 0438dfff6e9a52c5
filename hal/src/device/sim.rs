//! The `sim` backend: a simulated device that behaves like one where it matters to the code above.
//!
//! - **Its pointers cannot be dereferenced on the host.** Addresses are handed out from a
//!   `PROT_NONE` reservation of this process's address space; the bytes live in one memfd per
//!   allocation, mapped elsewhere and reached only by this backend's `copy`. A path that forgets
//!   the device copy and `memcpy`s from a device pointer faults (`SIGSEGV`), as it would on a GPU,
//!   instead of passing by accident.
//! - **It fails where the hardware would**: a copy whose device range is not inside one live
//!   allocation, a copy whose kind does not match its pointers (a device pointer as the host side),
//!   an allocation past the device's capacity (`MMC_SIM_DEVICE_BYTES`, default 8 GiB per device),
//!   a device id past `MMC_SIM_DEVICES` (default 2), a double free, freeing an imported buffer.
//!   Freed addresses are never reused, so a stale pointer is an error, not someone else's bytes.
//! - **IPC** exports the allocation's memfd ([`IpcHandle::Fd`], passed with `SCM_RIGHTS`); an
//!   importing process maps it behind an address of its own reservation.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::RwLock;

use super::{BackendKind, CopyKind, Device, DeviceCopy, IpcHandle, PtrKind};
use crate::error::HalError;

/// Address space reserved for device pointers (never backed; `PROT_NONE`).
const RESERVE_BYTES: u64 = 1 << 40;
/// Allocations start at multiples of this (like a GPU allocator's granularity).
const ALIGN: u64 = 2 << 20;
/// Default devices.
const DEFAULT_DEVICES: u32 = 2;
/// Default capacity per device.
const DEFAULT_DEVICE_BYTES: u64 = 8 << 30;

std::thread_local! {
    static CURRENT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// One allocation (or import): its memfd and the mapping only this backend uses.
struct Alloc {
    len: u64,
    device: u32,
    fd: OwnedFd,
    /// Where the memfd is mapped (read/write, shared), `len` bytes.
    host: *mut u8,
    imported: bool,
}

// SAFETY: `host` is a shared mapping owned by this struct (unmapped in `Drop`); the bytes are only
// reached through `SimDevice::copy`, under the state lock that keeps the mapping alive.
unsafe impl Send for Alloc {}
// SAFETY: as above; `Alloc` has no interior mutability of its own.
unsafe impl Sync for Alloc {}

impl Drop for Alloc {
    fn drop(&mut self) {
        // SAFETY: `host` was returned by `mmap` for `len` bytes and is unmapped exactly once.
        unsafe { libc::munmap(self.host.cast(), self.len as usize) };
    }
}

struct State {
    /// Next free offset in the reservation.
    next: u64,
    /// Live allocations by address.
    allocs: BTreeMap<u64, Alloc>,
    /// Bytes allocated per device.
    used: Vec<u64>,
    /// Registered (pinned) host ranges by start.
    pinned: HashMap<u64, u64>,
}

/// The simulated device.
pub struct SimDevice {
    count: u32,
    capacity: u64,
    /// Start of the `PROT_NONE` reservation.
    base: u64,
    state: RwLock<State>,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("count", &self.count)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn err(op: &'static str, reason: impl Into<String>) -> HalError {
    HalError::Device {
        backend: "sim",
        op,
        reason: reason.into(),
    }
}

fn env_u64(name: &str, default: u64) -> Result<u64, HalError> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| err("start", format!("{name}={v:?} is not a number"))),
        Err(_) => Ok(default),
    }
}

impl SimDevice {
    /// `MMC_SIM_DEVICES` devices of `MMC_SIM_DEVICE_BYTES` each.
    pub fn from_env() -> Result<SimDevice, HalError> {
        let count = env_u64("MMC_SIM_DEVICES", DEFAULT_DEVICES as u64)?;
        let capacity = env_u64("MMC_SIM_DEVICE_BYTES", DEFAULT_DEVICE_BYTES)?;
        SimDevice::new(count.min(64) as u32, capacity)
    }

    /// `count` devices of `capacity` bytes each.
    pub fn new(count: u32, capacity: u64) -> Result<SimDevice, HalError> {
        // SAFETY: an anonymous PROT_NONE reservation at an address of the kernel's choosing; it
        // aliases nothing and is never accessed (that is its purpose).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RESERVE_BYTES as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(err(
                "start",
                format!(
                    "reserving {RESERVE_BYTES} bytes of address space: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        Ok(SimDevice {
            count,
            capacity,
            base: base as u64,
            state: RwLock::new(State {
                next: 0,
                allocs: BTreeMap::new(),
                used: vec![0; count as usize],
                pinned: HashMap::new(),
            }),
        })
    }

    fn in_reserve(&self, ptr: u64) -> bool {
        ptr >= self.base && ptr - self.base < RESERVE_BYTES
    }

    fn check_device(&self, device: u32, op: &'static str) -> Result<(), HalError> {
        if device >= self.count {
            return Err(err(
                op,
                format!("invalid device {device}: {} devices", self.count),
            ));
        }
        Ok(())
    }

    /// A fresh range of the reservation for `len` bytes.
    fn take_va(&self, st: &mut State, len: u64, op: &'static str) -> Result<u64, HalError> {
        let span = len.div_ceil(ALIGN).max(1) * ALIGN;
        if st.next + span > RESERVE_BYTES {
            return Err(err(op, "the simulated address space is used up"));
        }
        let va = self.base + st.next;
        st.next += span;
        Ok(va)
    }

    /// The host mapping of `[ptr, ptr + len)`, which must lie in one live allocation.
    fn resolve(st: &State, ptr: u64, len: u64, op: &'static str) -> Result<*mut u8, HalError> {
        let (va, a) = st
            .allocs
            .range(..=ptr)
            .next_back()
            .ok_or_else(|| err(op, format!("{ptr:#x} is not device memory")))?;
        let off = ptr - va;
        if off.checked_add(len).is_none_or(|end| end > a.len) {
            return Err(err(
                op,
                format!(
                    "device range {ptr:#x}+{len} is not inside one allocation \
                     ({va:#x}+{} on device {})",
                    a.len, a.device
                ),
            ));
        }
        // SAFETY: `off + len <= a.len`, so the pointer stays inside the mapping.
        Ok(unsafe { a.host.add(off as usize) })
    }

    /// A host pointer must not be device memory (the copy kind says it is host memory).
    fn host_side(&self, ptr: u64, len: u64, op: &'static str) -> Result<*mut u8, HalError> {
        if len > 0 && (self.in_reserve(ptr) || self.in_reserve(ptr.saturating_add(len - 1))) {
            return Err(err(
                op,
                format!("{ptr:#x} is device memory, but the copy kind names it host memory"),
            ));
        }
        Ok(ptr as *mut u8)
    }

    fn map(fd: &OwnedFd, len: u64, op: &'static str) -> Result<*mut u8, HalError> {
        // SAFETY: a shared mapping of a memfd we hold, at an address of the kernel's choosing.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if host == libc::MAP_FAILED {
            return Err(err(
                op,
                format!("mapping {len} bytes: {}", std::io::Error::last_os_error()),
            ));
        }
        Ok(host.cast())
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        self.state
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .allocs
            .clear();
        // SAFETY: the reservation was mapped in `new` and nothing refers to it any more.
        unsafe { libc::munmap(self.base as *mut libc::c_void, RESERVE_BYTES as usize) };
    }
}

impl Device for SimDevice {
    fn kind(&self) -> BackendKind {
        BackendKind::Sim
    }

    fn device_count(&self) -> Result<u32, HalError> {
        Ok(self.count)
    }

    fn bind(&self, device: u32) -> Result<(), HalError> {
        self.check_device(device, "bind a device")?;
        CURRENT.with(|c| c.set(device));
        Ok(())
    }

    fn alloc(&self, device: u32, len: u64) -> Result<u64, HalError> {
        const OP: &str = "alloc";
        self.check_device(device, OP)?;
        if len == 0 {
            return Err(err(OP, "zero bytes"));
        }
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let used = st.used[device as usize];
        if used.saturating_add(len) > self.capacity {
            return Err(err(
                OP,
                format!(
                    "out of memory on device {device}: {len} bytes asked, {} of {} free",
                    self.capacity - used,
                    self.capacity
                ),
            ));
        }
        // SAFETY: memfd_create with a NUL-terminated name; the fd is owned below.
        let raw = unsafe { libc::memfd_create(c"mmc-sim-device".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(err(
                OP,
                format!("memfd_create: {}", std::io::Error::last_os_error()),
            ));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(err(
                OP,
                format!("sizing {len} bytes: {}", std::io::Error::last_os_error()),
            ));
        }
        let host = Self::map(&fd, len, OP)?;
        let va = self.take_va(&mut st, len, OP)?;
        st.used[device as usize] += len;
        st.allocs.insert(
            va,
            Alloc {
                len,
                device,
                fd,
                host,
                imported: false,
            },
        );
        Ok(va)
    }

    fn free(&self, ptr: u64) -> Result<(), HalError> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        match st.allocs.get(&ptr) {
            Some(a) if a.imported => Err(err(
                "free",
                format!("{ptr:#x} was imported: close the import instead"),
            )),
            Some(a) => {
                let (dev, len) = (a.device as usize, a.len);
                st.used[dev] -= len;
                st.allocs.remove(&ptr);
                Ok(())
            }
            None => Err(err(
                "free",
                format!("{ptr:#x} is not the start of a live allocation"),
            )),
        }
    }

    fn classify(&self, ptr: u64) -> PtrKind {
        if !self.in_reserve(ptr) {
            return PtrKind::Host;
        }
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        match st.allocs.range(..=ptr).next_back() {
            Some((va, a)) if ptr - va < a.len => PtrKind::Device(a.device),
            // Freed or never allocated, but still a device address: copies refuse it.
            _ => PtrKind::Device(0),
        }
    }

    unsafe fn copy(&self, batch: &[DeviceCopy]) -> Result<(), HalError> {
        const OP: &str = "copy";
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        for c in batch {
            if c.len == 0 {
                continue;
            }
            let (dst, src) = match c.kind {
                CopyKind::HostToDevice => (
                    Self::resolve(&st, c.dst, c.len, OP)?,
                    self.host_side(c.src, c.len, OP)?,
                ),
                CopyKind::DeviceToHost => (
                    self.host_side(c.dst, c.len, OP)?,
                    Self::resolve(&st, c.src, c.len, OP)?,
                ),
                CopyKind::DeviceToDevice => (
                    Self::resolve(&st, c.dst, c.len, OP)?,
                    Self::resolve(&st, c.src, c.len, OP)?,
                ),
            };
            // SAFETY: device sides lie inside live mappings (checked by `resolve`, kept alive by
            // the read lock); host sides are valid for `len` bytes by this function's contract.
            // `copy` (memmove) tolerates a device-to-device copy within one allocation.
            unsafe { std::ptr::copy(src.cast_const(), dst, c.len as usize) };
        }
        Ok(())
    }

    unsafe fn register_host(&self, ptr: u64, len: u64) -> Result<bool, HalError> {
        self.host_side(ptr, len, "register host memory")?;
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if st.pinned.insert(ptr, len).is_some() {
            return Err(err(
                "register host memory",
                format!("{ptr:#x} is already registered"),
            ));
        }
        Ok(true)
    }

    fn unregister_host(&self, ptr: u64) -> Result<(), HalError> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        st.pinned.remove(&ptr).map(drop).ok_or_else(|| {
            err(
                "unregister host memory",
                format!("{ptr:#x} is not registered"),
            )
        })
    }

    fn export(&self, ptr: u64) -> Result<IpcHandle, HalError> {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        let a = st.allocs.get(&ptr).ok_or_else(|| {
            err(
                "export",
                format!("{ptr:#x} is not the start of a live allocation"),
            )
        })?;
        let fd =
            a.fd.try_clone()
                .map_err(|e| err("export", format!("dup: {e}")))?;
        Ok(IpcHandle::Fd { fd, len: a.len })
    }

    fn import(&self, handle: &IpcHandle, device: u32) -> Result<u64, HalError> {
        const OP: &str = "import";
        self.check_device(device, OP)?;
        let IpcHandle::Fd { fd, len } = handle else {
            return Err(err(OP, "not a sim device handle (expected a memfd)"));
        };
        let fd = fd.try_clone().map_err(|e| err(OP, format!("dup: {e}")))?;
        let host = Self::map(&fd, *len, OP)?;
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        let va = self.take_va(&mut st, *len, OP)?;
        st.allocs.insert(
            va,
            Alloc {
                len: *len,
                device,
                fd,
                host,
                imported: true,
            },
        );
        Ok(va)
    }

    fn close_import(&self, ptr: u64) -> Result<(), HalError> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        match st.allocs.get(&ptr) {
            Some(a) if a.imported => {
                st.allocs.remove(&ptr);
                Ok(())
            }
            _ => Err(err(
                "close an import",
                format!("{ptr:#x} is not an imported allocation"),
            )),
        }
    }
}

impl SimDevice {
    /// The calling thread's current device (`bind`).
    pub fn current(&self) -> u32 {
        CURRENT.with(|c| c.get())
    }
}
