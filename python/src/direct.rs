//! `MmcCopyDirect`: the copy directions of the original API, and which fit which operation.

use pyo3::prelude::*;
use pyo3::types::PyBool;
use tracing::warn;

use crate::codes::INVALID;

/// Direction of a copy (the original's `smem_bm_copy_type` values).
///
/// - ``SMEMB_COPY_H2G`` (3): host memory -> global pool (default for puts)
/// - ``SMEMB_COPY_L2G`` (0): device memory -> global pool
/// - ``SMEMB_COPY_G2H`` (2): global pool -> host memory (default for gets)
/// - ``SMEMB_COPY_G2L`` (1): global pool -> device memory
///
/// - ``SMEMB_COPY_AUTO`` (9): the pointer decides (puts and gets)
///
/// Device directions (L2G, G2L) take device memory of the process's device backend
/// (``mmc.device_backend()``: cuda, ascend or sim; with none loaded they return -3000). ``AUTO``
/// classifies each buffer: device memory of the backend is copied as with L2G / G2L; memory inside
/// a buffer given to ``register_buffer`` or mapped readable (for gets: writable) in this process is
/// host memory and is copied as with H2G / G2H; one key mixing both, or a pointer it cannot
/// classify, is -3000. A host direction given device memory is -3000 too. Methods taking
/// ``direct`` accept a member of this enum or its int value.
#[pyclass(eq, eq_int, hash, frozen, module = "mmc", name = "MmcCopyDirect")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmcCopyDirect {
    #[pyo3(name = "SMEMB_COPY_L2G")]
    L2G = 0,
    #[pyo3(name = "SMEMB_COPY_G2L")]
    G2L = 1,
    #[pyo3(name = "SMEMB_COPY_G2H")]
    G2H = 2,
    #[pyo3(name = "SMEMB_COPY_H2G")]
    H2G = 3,
    #[pyo3(name = "SMEMB_COPY_AUTO")]
    Auto = 9,
}

impl MmcCopyDirect {
    fn from_value(v: i64) -> Option<MmcCopyDirect> {
        match v {
            0 => Some(MmcCopyDirect::L2G),
            1 => Some(MmcCopyDirect::G2L),
            2 => Some(MmcCopyDirect::G2H),
            3 => Some(MmcCopyDirect::H2G),
            9 => Some(MmcCopyDirect::Auto),
            _ => None,
        }
    }

    pub(crate) fn py_name(self) -> &'static str {
        match self {
            MmcCopyDirect::L2G => "SMEMB_COPY_L2G",
            MmcCopyDirect::G2L => "SMEMB_COPY_G2L",
            MmcCopyDirect::G2H => "SMEMB_COPY_G2H",
            MmcCopyDirect::H2G => "SMEMB_COPY_H2G",
            MmcCopyDirect::Auto => "SMEMB_COPY_AUTO",
        }
    }
}

#[pymethods]
impl MmcCopyDirect {
    /// The member's int value (as pybind11 enums have).
    #[getter]
    fn value(&self) -> i64 {
        *self as i64
    }

    /// The member's name, e.g. ``"SMEMB_COPY_H2G"``.
    #[getter]
    fn name(&self) -> &'static str {
        self.py_name()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Put,
    Get,
}

/// How the buffers of a call are to be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Host memory (H2G / G2H, the defaults).
    Host,
    /// `SMEMB_COPY_AUTO`: each buffer is classified first (`crate::memory::classify`).
    Auto,
    /// Device memory (L2G / G2L): every buffer must be device memory of the device backend.
    Device,
}

/// Check `direct` for `op`: host directions pass as [`Mode::Host`]; `AUTO` as [`Mode::Auto`];
/// device directions as [`Mode::Device`] (each buffer is then checked with the device backend:
/// with none loaded, -3000 and a log line saying so); a direction of the other kind, or no
/// direction at all, is -3000.
pub(crate) fn direction(obj: Option<&Bound<'_, PyAny>>, op: Op) -> Result<Mode, i32> {
    let host = match op {
        Op::Put => MmcCopyDirect::H2G,
        Op::Get => MmcCopyDirect::G2H,
    };
    let d = match obj.filter(|o| !o.is_none()) {
        None => host,
        Some(o) => {
            let d = if let Ok(d) = o.cast::<MmcCopyDirect>() {
                Some(*d.get())
            } else if o.is_instance_of::<PyBool>() {
                None
            } else {
                o.extract::<i64>().ok().and_then(MmcCopyDirect::from_value)
            };
            match d {
                Some(d) => d,
                None => {
                    warn!(direct = %o, "invalid copy direction: expected an MmcCopyDirect");
                    return Err(INVALID);
                }
            }
        }
    };
    match (op, d) {
        (Op::Put, MmcCopyDirect::H2G) | (Op::Get, MmcCopyDirect::G2H) => Ok(Mode::Host),
        (_, MmcCopyDirect::Auto) => Ok(Mode::Auto),
        (Op::Put, MmcCopyDirect::L2G) | (Op::Get, MmcCopyDirect::G2L) => Ok(Mode::Device),
        _ => {
            warn!(direct = d.py_name(), op = ?op, "copy direction does not fit this operation");
            Err(INVALID)
        }
    }
}

/// `batch_copy`'s `direct`: which way the bytes go, decided by the direction itself (H2G / L2G
/// write into the pool, G2H / G2L read from it), then checked by [`direction`] like every other
/// call. `AUTO` names no way and is -3000 here.
pub(crate) fn copy_direction(obj: Option<&Bound<'_, PyAny>>) -> Result<(Op, Mode), i32> {
    let value = match obj.filter(|o| !o.is_none()) {
        None => None,
        Some(o) => match o.cast::<MmcCopyDirect>() {
            Ok(d) => Some(*d.get() as i64),
            Err(_) if o.is_instance_of::<PyBool>() => None,
            Err(_) => o.extract::<i64>().ok(),
        },
    };
    let op = match value.and_then(MmcCopyDirect::from_value) {
        Some(MmcCopyDirect::H2G | MmcCopyDirect::L2G) => Op::Put,
        Some(MmcCopyDirect::G2H | MmcCopyDirect::G2L) => Op::Get,
        _ => {
            warn!(
                direct = ?obj.map(|o| o.to_string()),
                "batch_copy needs a direction that says which way: SMEMB_COPY_H2G / L2G (into the \
                 pool) or SMEMB_COPY_G2H / G2L (out of it)"
            );
            return Err(INVALID);
        }
    };
    match direction(obj, op)? {
        Mode::Host => Ok((op, Mode::Host)),
        Mode::Device => Ok((op, Mode::Device)),
        Mode::Auto => unreachable!("AUTO was refused above"),
    }
}
