//! MemCache's sans-IO cores. Messages, completions and `now` go in; meta requests, transfer lists
//! and results come out. Nothing here touches a socket, a thread or a clock, so a whole cluster
//! (meta core, local-service cores, client operations) runs deterministically from a seed in
//! [`sim`], and the real drivers in `mmc-dataplane` run the very same code.
//!
//! - [`fence`]: the epoch fence every transfer carries and every transport checks.
//! - [`local`]: the local service's core (registration, incarnations, heartbeats, request checks).
//! - [`client`]: the client's operations as state machines (put, get, and the metadata calls).
//! - [`transport`]: the seam every transport backend (embedded, shm, TCP, simulated; later device
//!   copies and RDMA verbs) implements: transfers and the caller's memory in, one completion per
//!   transfer out.
#![forbid(unsafe_code)]

/// The epoch fence lives in `mmc-hal` (the shared page same-host clients map is memory the HAL
/// owns); the cores use its types.
pub use mmc_hal::fence;

pub mod client;
pub mod local;
pub mod sim;
pub mod transport;

/// CRC-32C (Castagnoli) of an object's bytes given as consecutive parts: the checksum every
/// object carries from its put (hardware-accelerated where the CPU has it).
pub fn checksum<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    parts.into_iter().fold(0, crc32c::crc32c_append)
}
