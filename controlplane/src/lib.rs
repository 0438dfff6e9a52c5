//! MemCache control plane: the wire protocol (messages, frames, typed errors) and the meta
//! service's sans-IO core. The meta service's TCP driver, its blocking client (`MetaConn`) and
//! the `mmc-meta` binary are in `mmc-meta-service`; configuration is in `mmc-config`.
#![forbid(unsafe_code)]

pub mod error;
pub mod meta;
pub mod msg;
#[cfg(test)]
mod testrng;
pub mod wire;

pub use error::{Code, Error, Result};
