//! What the contract refuses before anything is sent, and the typed error of a per-key code.

use mmc_controlplane::msg;
use mmc_controlplane::{Code, Error, Result};
use tracing::{debug, warn};

/// Keys of one batch: `Err` per key the contract refuses; `Err` for the whole batch when it has
/// too many keys.
pub fn check_keys<K: AsRef<str>>(keys: &[K]) -> Result<Vec<Result<&str>>> {
    if keys.len() > msg::BATCH_KEYS_MAX {
        warn!(
            keys = keys.len(),
            max = msg::BATCH_KEYS_MAX,
            "batch refused: too many keys"
        );
        return Err(Error::InvalidParam(format!(
            "{} keys in one batch, the limit is {}",
            keys.len(),
            msg::BATCH_KEYS_MAX
        )));
    }
    Ok(keys
        .iter()
        .map(|k| check_key(k.as_ref()).map(|_| k.as_ref()))
        .collect())
}

/// A batch names as many `what` (values, buffers) as keys.
pub fn check_lengths(keys: usize, others: usize, what: &str) -> Result<()> {
    if keys != others {
        return Err(Error::InvalidParam(format!(
            "{keys} keys but {others} {what}"
        )));
    }
    Ok(())
}

/// Lend the keys at `indexes` to a request (moved, not copied: a batch's keys are its bulk).
pub(crate) fn lend(keys: &mut [String], indexes: &[usize]) -> Vec<String> {
    indexes
        .iter()
        .map(|&i| std::mem::take(&mut keys[i]))
        .collect()
}

/// Take back the keys [`lend`] moved into a request, in the same order.
pub(crate) fn restore(
    keys: &mut [String],
    indexes: &[usize],
    lent: impl IntoIterator<Item = String>,
) {
    let mut n = 0;
    for (&i, key) in indexes.iter().zip(lent) {
        debug_assert!(keys[i].is_empty(), "a key restored twice");
        keys[i] = key;
        n += 1;
    }
    assert_eq!(
        n,
        indexes.len(),
        "the request handed back is not the one sent"
    );
}

/// A key is 1 to 255 bytes.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > msg::KEY_BYTES_MAX {
        warn!(key, len = key.len(), "invalid key: must be 1 to 255 bytes");
        return Err(Error::InvalidParam(format!(
            "key of {} bytes: keys are 1 to 255 bytes",
            key.len()
        )));
    }
    Ok(())
}

/// The typed error for a documented per-key code.
pub fn key_error(code: i32, key: &str) -> Error {
    debug_assert_ne!(code, 0, "an error for a success code");
    let e = match Code::from_i32(code) {
        Code::DuplicatedObject => Error::Exists { key: key.into() },
        Code::ObjectNotExists => Error::NotFound { key: key.into() },
        Code::InvalidParam => {
            Error::InvalidParam(format!("key {key:?} refused by the meta service"))
        }
        c => Error::Remote {
            code: c,
            context: format!("key {key:?}"),
        },
    };
    match e {
        Error::NotFound { .. } | Error::Exists { .. } => debug!(key, code, "{e}"),
        _ => warn!(key, code, "{e}"),
    }
    e
}

/// Errors are not `Clone` (they may hold an `io::Error`); one failure shared by many keys is
/// re-created with the same code and message.
pub trait CloneError {
    fn clone_error(&self) -> Error;
}

impl CloneError for Error {
    fn clone_error(&self) -> Error {
        match self {
            Error::InvalidParam(s) => Error::InvalidParam(s.clone()),
            Error::Exists { key } => Error::Exists { key: key.clone() },
            Error::NotFound { key } => Error::NotFound { key: key.clone() },
            Error::NoSpace { bytes, media } => Error::NoSpace {
                bytes: *bytes,
                media,
            },
            Error::Timeout { ms, what } => Error::Timeout {
                ms: *ms,
                what: what.clone(),
            },
            Error::MetaUnreachable { url, reason } => Error::MetaUnreachable {
                url: url.clone(),
                reason: reason.clone(),
            },
            Error::LocalUnreachable { endpoint, reason } => Error::LocalUnreachable {
                endpoint: endpoint.clone(),
                reason: reason.clone(),
            },
            e => Error::Remote {
                code: e.code(),
                context: e.to_string(),
            },
        }
    }
}

/// A reply of the wrong kind from the meta service.
pub fn unexpected(reply: &mmc_controlplane::msg::Reply) -> Error {
    Error::Protocol(format!("unexpected reply from the meta service: {reply:?}"))
}
