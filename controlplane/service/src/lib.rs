//! The meta service's I/O around the sans-IO meta core of `mmc-controlplane`: the TCP driver
//! ([`MetaServer`], and the `mmc-meta` binary) and the blocking client side of the meta protocol
//! ([`MetaConn`], used by clients, local services and the `mmc` tool).
#![forbid(unsafe_code)]

pub mod etcd;
pub mod ha;
pub mod locator;
mod probe;
pub mod rpc;
pub mod server;

pub use locator::MetaLocator;
pub use probe::{ProbeSettings, PROBES_MAX};
pub use rpc::MetaConn;
pub use server::{meta_params, probe_settings, MetaServer};
