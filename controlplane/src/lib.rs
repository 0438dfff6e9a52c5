//! MemCache control plane: the wire protocol, the meta service's sans-IO core and its TCP driver.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod fsutil;
pub mod logging;
pub mod meta;
pub mod msg;
pub mod rpc;
pub mod server;
#[cfg(test)]
mod testrng;
pub mod wire;

pub use error::{Code, Error, Result};
