//! MemCache data plane: the local service (pools and transfers) and the client.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod local;
pub(crate) mod transport;

pub use client::{Client, ObjectInfo, PutOptions};
pub use config::{ClientConfig, LocalConfig};
pub use local::LocalService;
pub use mmc_controlplane::{Code, Error, Result};
