//! Device memory from Python: the module's `device_*` helpers (allocate, free and copy device
//! memory on the process's device backend, for engines and tests without a framework), and the
//! put/get of items whose buffers are device memory (`SMEMB_COPY_L2G` / `SMEMB_COPY_G2L`, or
//! `SMEMB_COPY_AUTO` on device pointers).

use mmc_core::transport::DevSpan;
use mmc_dataplane::{Client, PutOptions};
use mmc_hal::device::{self, CopyKind, DeviceCopy};
use pyo3::prelude::*;
use tracing::warn;

use crate::codes::{INVALID, OK};
use crate::items::{fill_codes, initial_codes, ready, Item};

/// The name of the process's device backend: ``"none"``, ``"sim"``, ``"cuda"`` or ``"ascend"``
/// (chosen by ``$MMC_DEVICE_BACKEND`` or the local service's ``device_backend``; ``auto`` probes
/// cuda, then ascend).
#[pyfunction]
pub(crate) fn device_backend() -> &'static str {
    device::active().kind().name()
}

/// Allocate ``nbytes`` of device memory on ``device_id``; its address (an int), or a negative
/// code (-3000: no backend, bad device, out of memory; the log says which).
#[pyfunction]
#[pyo3(signature = (nbytes, device_id = 0))]
pub(crate) fn device_alloc(nbytes: u64, device_id: u32) -> i64 {
    let dev = device::active();
    match dev
        .bind(device_id)
        .and_then(|()| dev.alloc(device_id, nbytes))
    {
        Ok(p) => p as i64,
        Err(e) => {
            warn!(error = %e, "device_alloc failed");
            INVALID as i64
        }
    }
}

/// Free what ``device_alloc`` returned: 0, or -3000.
#[pyfunction]
pub(crate) fn device_free(ptr: u64) -> i32 {
    match device::active().free(ptr) {
        Ok(()) => OK,
        Err(e) => {
            warn!(error = %e, "device_free failed");
            INVALID
        }
    }
}

/// Copy ``nbytes`` from ``src`` to ``dst`` (ints); ``kind`` is ``"h2d"``, ``"d2h"`` or ``"d2d"``.
/// The host side must be valid memory of that size (the caller's promise, as for ``put_from``).
/// 0, or -3000.
#[pyfunction]
pub(crate) fn device_memcpy(py: Python<'_>, dst: u64, src: u64, nbytes: u64, kind: &str) -> i32 {
    let kind: CopyKind = match kind.parse() {
        Ok(k) => k,
        Err(e) => {
            warn!(error = %e, "device_memcpy: bad kind");
            return INVALID;
        }
    };
    if nbytes == 0 {
        return OK;
    }
    if dst == 0
        || src == 0
        || dst.checked_add(nbytes).is_none()
        || src.checked_add(nbytes).is_none()
    {
        warn!(
            dst,
            src, nbytes, "device_memcpy: null pointer or a range that wraps"
        );
        return INVALID;
    }
    let copy = DeviceCopy {
        dst,
        src,
        len: nbytes,
        kind,
    };
    // SAFETY: the host side of the copy is caller memory the caller vouches for (an int pointer
    // valid for `nbytes` bytes for the duration of the call, as every pointer taking method of
    // this module documents); the device side is checked by the backend.
    let r = py.detach(|| unsafe { device::active().copy(&[copy]) });
    match r {
        Ok(()) => OK,
        Err(e) => {
            warn!(error = %e, "device_memcpy failed");
            INVALID
        }
    }
}

/// True when every piece of `item` is device memory of the active backend.
pub(crate) fn all_device(item: &Item) -> bool {
    let dev = device::active();
    item.parts
        .iter()
        .all(|r| matches!(dev.classify(r.addr as u64), device::PtrKind::Device(_)))
}

/// True when no piece of `item` is device memory.
pub(crate) fn no_device(item: &Item) -> bool {
    let dev = device::active();
    item.parts
        .iter()
        .all(|r| dev.classify(r.addr as u64) == device::PtrKind::Host)
}

fn spans(it: &Item) -> Vec<DevSpan> {
    it.parts
        .iter()
        .map(|r| DevSpan {
            addr: r.addr as u64,
            len: r.len as u64,
        })
        .collect()
}

/// Put every ready item from device memory in one batch, with the GIL released; one code per
/// item (an existing key is 0, as for host puts).
pub(crate) fn put_device_items(
    py: Python<'_>,
    client: &Client,
    items: Vec<Result<Item, i32>>,
    opts: &PutOptions,
) -> Vec<i32> {
    let mut out = initial_codes(&items);
    let todo = ready(items);
    if todo.is_empty() {
        return out;
    }
    let results = py.detach(|| {
        let keys: Vec<&str> = todo.iter().map(|(_, it)| it.key.as_str()).collect();
        let spans: Vec<Vec<DevSpan>> = todo.iter().map(|(_, it)| spans(it)).collect();
        let views: Vec<&[DevSpan]> = spans.iter().map(Vec::as_slice).collect();
        client.batch_put_device(&keys, &views, opts)
    });
    fill_codes(&mut out, &todo, results, true);
    out
}

/// Get every ready item into device memory in one batch, with the GIL released.
pub(crate) fn get_device_items(
    py: Python<'_>,
    client: &Client,
    items: Vec<Result<Item, i32>>,
) -> Vec<i32> {
    let mut out = initial_codes(&items);
    let todo = ready(items);
    if todo.is_empty() {
        return out;
    }
    let results = py.detach(|| {
        let keys: Vec<&str> = todo.iter().map(|(_, it)| it.key.as_str()).collect();
        let spans: Vec<Vec<DevSpan>> = todo.iter().map(|(_, it)| spans(it)).collect();
        let views: Vec<&[DevSpan]> = spans.iter().map(Vec::as_slice).collect();
        client.batch_get_device(&keys, &views)
    });
    fill_codes(&mut out, &todo, results, false);
    out
}
