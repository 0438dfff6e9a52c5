//! Caller memory: raw pointers given as Python ints, and objects with the buffer protocol.
//!
//! Everything here runs with the GIL held. What leaves this module for a GIL-free section is a
//! [`Region`] (an address and a length, plain integers); the [`BufGuard`]s that keep buffer-protocol
//! exports alive stay behind, bound to the GIL's lifetime, and are released after the I/O.

use std::ffi::{c_char, c_int, c_void};
use std::marker::PhantomData;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyInt, PyString};

use crate::codes::INVALID;

/// CPython's `Py_buffer`. Its layout has been the same since Python 3.3 and is part of the stable
/// ABI from 3.11; pyo3 only declares it for 3.11+ in abi3 builds, so it is declared here to keep
/// the wheel loadable on 3.9 and 3.10, where `PyObject_GetBuffer` exists with this same layout.
#[repr(C)]
struct RawBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut c_char,
    shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}

/// `PyBUF_SIMPLE`: a C-contiguous block of bytes, no format or shape asked for.
const PYBUF_SIMPLE: c_int = 0;
/// `PyBUF_WRITABLE`.
const PYBUF_WRITABLE: c_int = 0x0001;

extern "C" {
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
}

/// A buffer-protocol export held for the duration of one call: while it lives, the exporter
/// keeps the memory where it is (a `bytearray` or numpy array refuses to resize). Tied to the GIL
/// (`Python<'py>` is `!Send`), so it cannot enter a GIL-free closure, and it is released (with
/// the GIL) when dropped.
pub struct BufGuard<'py> {
    view: Box<RawBuffer>,
    _gil: PhantomData<Python<'py>>,
}

impl Drop for BufGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: `view` was filled by a successful `PyObject_GetBuffer` and is released exactly
        // once, here; the GIL is held because this guard cannot leave the `Python<'py>` scope it
        // was created in (it holds a `PhantomData<Python<'py>>`, which is `!Send`), and it is
        // never dropped inside `Python::detach` (it is not moved into those closures).
        unsafe { PyBuffer_Release(&mut *self.view) };
    }
}

/// One contiguous range of caller memory: plain integers, so it may cross into GIL-free code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub addr: usize,
    pub len: usize,
}

impl Region {
    /// # Safety
    /// `[addr, addr + len)` must be readable memory that stays valid and is not written by
    /// anyone for the lifetime `'a` chosen by the caller.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        // SAFETY: `addr` is non-null and `len` is above 0 and at most `isize::MAX` with no address
        // overflow (checked when the region was built), and the caller guarantees validity.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// # Safety
    /// `[addr, addr + len)` must be writable memory that stays valid for `'a`, that nobody else
    /// reads or writes for `'a`, and that overlaps no other slice alive at the same time.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice<'a>(self) -> &'a mut [u8] {
        // SAFETY: as for `as_slice`; exclusivity is the caller's guarantee (the get paths check
        // that the regions of one call do not overlap).
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

/// Whether any two regions share a byte.
pub fn any_overlap(regions: &mut [Region]) -> bool {
    regions.sort_unstable_by_key(|r| r.addr);
    regions.windows(2).any(|w| w[0].addr + w[0].len > w[1].addr)
}

/// A size argument: `None` (absent), or an int in `0..=isize::MAX`. Anything else is -3000.
pub fn size_arg(obj: Option<&Bound<'_, PyAny>>) -> Result<Option<usize>, i32> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    if obj.is_instance_of::<PyBool>() {
        return Err(INVALID);
    }
    match obj.extract::<i64>() {
        Ok(n) if n >= 0 => Ok(Some(n as usize)),
        _ => Err(INVALID),
    }
}

/// A pointer argument given as an int (`array.ctypes.data`, `tensor.data_ptr()`, numpy integer
/// scalars): `Ok(Some(addr))`; `Ok(None)` when `obj` is not an int at all; `Err` for bad ints.
pub(crate) fn ptr_int(obj: &Bound<'_, PyAny>) -> Result<Option<usize>, i32> {
    if obj.is_none() || obj.is_instance_of::<PyBool>() {
        return Err(INVALID);
    }
    match obj.extract::<u64>() {
        Ok(p) => usize::try_from(p).map(Some).map_err(|_| INVALID),
        // A negative or too large int.
        Err(_) if obj.is_instance_of::<PyInt>() => Err(INVALID),
        // Not an int (no `__index__`, or one that refuses, like a numpy array of many elements).
        Err(_) => {
            // `extract` left no exception set; nothing to clear.
            Ok(None)
        }
    }
}

/// Export `obj`'s memory through the buffer protocol (C-contiguous bytes; writable if asked).
fn export<'py>(obj: &Bound<'py, PyAny>, writable: bool) -> Option<BufGuard<'py>> {
    if obj.is_instance_of::<PyString>() {
        return None;
    }
    let mut view = Box::new(RawBuffer {
        buf: ptr::null_mut(),
        obj: ptr::null_mut(),
        len: 0,
        itemsize: 0,
        readonly: 0,
        ndim: 0,
        format: ptr::null_mut(),
        shape: ptr::null_mut(),
        strides: ptr::null_mut(),
        suboffsets: ptr::null_mut(),
        internal: ptr::null_mut(),
    });
    let flags = if writable {
        PYBUF_WRITABLE
    } else {
        PYBUF_SIMPLE
    };
    // SAFETY: `obj` is a live object (we hold a reference and the GIL); `view` points to a
    // properly aligned, writable `Py_buffer`-layout struct that outlives the call. On failure
    // CPython leaves an exception set, which is cleared below; on success the export is released
    // exactly once by `BufGuard::drop`.
    let rc = unsafe { PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) };
    if rc != 0 {
        // Clear the exception (BufferError / TypeError): the caller gets a return code instead.
        let _ = PyErr::take(obj.py());
        return None;
    }
    Some(BufGuard {
        view,
        _gil: PhantomData,
    })
}

/// One pointer/size pair (or buffer object/optional size) checked and turned into a [`Region`].
///
/// - an int pointer needs a size above 0; the pointer must be non-zero and the range must not
///   wrap around the address space;
/// - a buffer-protocol object (bytes, bytearray, memoryview, numpy array, ...) must be
///   C-contiguous (and writable when `writable`); `size` defaults to its length and may not
///   exceed it.
///
/// The export is pushed to `guards`, which the caller keeps alive until the I/O is over.
pub fn region<'py>(
    ptr: &Bound<'py, PyAny>,
    size: Option<&Bound<'py, PyAny>>,
    writable: bool,
    guards: &mut Vec<BufGuard<'py>>,
) -> Result<Region, i32> {
    let size = size_arg(size)?;
    if let Some(addr) = ptr_int(ptr)? {
        let len = size.ok_or(INVALID)?;
        if addr == 0 || len == 0 || len > isize::MAX as usize || addr.checked_add(len).is_none() {
            return Err(INVALID);
        }
        return Ok(Region { addr, len });
    }
    if ptr.is_instance_of::<PyBytes>() && writable {
        return Err(INVALID);
    }
    let guard = export(ptr, writable).ok_or(INVALID)?;
    let (buf, have) = (guard.view.buf as usize, guard.view.len);
    let have = usize::try_from(have).map_err(|_| INVALID)?;
    let len = size.unwrap_or(have);
    if buf == 0 || len == 0 || len > have {
        return Err(INVALID);
    }
    guards.push(guard);
    Ok(Region { addr: buf, len })
}

/// The items of a list-like argument (list, tuple, numpy array, any iterable) — but not of a
/// `str`, `bytes` or `bytearray`, which are never a list of keys, pointers or sizes.
pub fn seq<'py>(obj: &Bound<'py, PyAny>) -> Result<Vec<Bound<'py, PyAny>>, i32> {
    if obj.is_none()
        || obj.is_instance_of::<PyString>()
        || obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
    {
        return Err(INVALID);
    }
    let items = obj
        .try_iter()
        .and_then(|it| it.collect::<PyResult<Vec<_>>>());
    items.map_err(|e| {
        drop(e);
        INVALID
    })
}

/// A key: a `str` (or UTF-8 `bytes`). Length limits are checked by the client (1..255 bytes).
pub fn key_arg(obj: &Bound<'_, PyAny>) -> Result<String, i32> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_cow().map(|c| c.into_owned()).map_err(|_| INVALID);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return std::str::from_utf8(b.as_bytes())
            .map(str::to_owned)
            .map_err(|_| INVALID);
    }
    Err(INVALID)
}
