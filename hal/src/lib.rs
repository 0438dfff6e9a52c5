//! MemCache hardware abstraction layer.
//!
//! * `Arena` (feature `os`): one contiguous, shareable (memfd-backed) memory region with
//!   safe, bounds-checked byte access and vectored I/O helpers.
//! * [`SpaceAllocator`]: hands out disjoint byte ranges ([`Space`]) of one
//!   segment, so concurrent users of an arena never overlap.
//! * [`fence`]: the epoch fence every transfer is checked against (its shared memfd page,
//!   `SharedFence`, needs feature `os`).
//! * `device` (feature `os`): the device-memory seam and its backends (none, sim, cuda,
//!   ascend), chosen at run time.
//! * [`HalError`]: the typed error of this crate.
//!
//! Feature `os` (default) gates what touches the operating system: the arena
//! (memfd + mmap), io_uring and fd passing. Without it this crate is the
//! sans-IO space allocator and the fence word, which is all the meta core and the
//! client and local cores (`mmc-core`) need.
#![warn(missing_docs)]

pub mod alloc;
#[cfg(feature = "os")]
pub mod arena;
#[cfg(feature = "os")]
pub mod device;
pub mod error;
#[cfg(feature = "os")]
pub mod fdpass;
pub mod fence;
#[cfg(feature = "os")]
pub mod hostmem;
pub mod rdma;
#[cfg(feature = "os")]
pub mod uring;

pub use alloc::{Space, SpaceAllocator};
#[cfg(feature = "os")]
pub use arena::{Arena, PageKind, Populate, RawRange};
pub use error::HalError;
