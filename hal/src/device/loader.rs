//! Loading a device runtime at run time (libloading): the first library of a list that opens,
//! and its symbols copied out as plain function pointers kept alive by the library handle.

use libloading::Library;

use crate::error::HalError;

/// Open the first of `names` that loads; the error lists every name and why it failed.
pub(super) fn open_first(backend: &'static str, names: &[&str]) -> Result<Library, HalError> {
    let mut why = Vec::new();
    for name in names {
        // SAFETY: loading a vendor runtime runs its initialisers; these are the documented
        // system libraries of the runtime (libcuda, libascendcl), which are built to be loaded
        // this way by any process.
        match unsafe { Library::new(*name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => match std::error::Error::source(&e) {
                // libloading's Display says "dlopen failed"; the source has dlerror()'s text.
                Some(src) => why.push(format!("{name}: {e}: {src}")),
                None => why.push(format!("{name}: {e}")),
            },
        }
    }
    Err(HalError::Device {
        backend,
        op: "load the runtime",
        reason: why.join("; "),
    })
}

/// Copy symbol `name` out of `lib` as a `T` (a function pointer type).
///
/// # Safety
///
/// `T` must be the symbol's true type (the runtime's documented C signature), and the returned
/// pointer must not be called after `lib` is dropped.
pub(super) unsafe fn sym<T: Copy>(
    lib: &Library,
    backend: &'static str,
    name: &str,
) -> Result<T, HalError> {
    // SAFETY: the caller guarantees `T` is the symbol's type.
    let s = unsafe { lib.get::<T>(name.as_bytes()) }.map_err(|e| HalError::Device {
        backend,
        op: "load the runtime",
        reason: format!("symbol {name}: {e}"),
    })?;
    Ok(*s)
}
