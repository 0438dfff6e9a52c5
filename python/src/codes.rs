//! The documented return codes this module hands to Python.

pub use mmc_controlplane::{Code, Error};

pub const OK: i32 = Code::Ok as i32;
/// -3000.
pub const INVALID: i32 = Code::InvalidParam as i32;
/// -3006: the key exists (puts of the Python layer turn it into 0).
pub const EXISTS: i32 = Code::DuplicatedObject as i32;
/// -3019: before `init` or after `close`.
pub const NOT_INIT: i32 = Code::ClientNotInit as i32;

/// The documented code of a client error.
pub fn of(e: &Error) -> i32 {
    e.code().as_i32()
}

/// 0, or the error's code.
pub fn of_result<T>(r: &Result<T, Error>) -> i32 {
    match r {
        Ok(_) => OK,
        Err(e) => of(e),
    }
}
