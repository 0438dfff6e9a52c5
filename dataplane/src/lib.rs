//! MemCache data plane: the local service (pools and transfers) and the client.
#![forbid(unsafe_code)]

pub mod client;
pub mod local;
pub(crate) mod transport;

pub use client::{Client, Leased, ObjectInfo, PoolRange, PutOptions, StagedPut, STAGED_WRITE_MS};
pub use local::LocalService;
pub use mmc_config::{ClientConfig, LocalConfig};
pub use mmc_controlplane::{Code, Error, Result};
pub use mmc_core::checksum;
