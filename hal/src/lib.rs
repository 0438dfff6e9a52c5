//! MemCache hardware abstraction layer.
//!
//! * [`Arena`]: one contiguous, shareable (memfd-backed) memory region with
//!   safe, bounds-checked byte access and vectored I/O helpers.
//! * [`SpaceAllocator`]: hands out disjoint byte ranges ([`Space`]) of one
//!   segment, so concurrent users of an [`Arena`] never overlap.
//! * [`fence`]: the epoch fence every transfer is checked against.
//! * [`HalError`]: the typed error of this crate.
#![warn(missing_docs)]

pub mod alloc;
pub mod arena;
pub mod error;
pub mod fdpass;
pub mod fence;
pub mod uring;

pub use alloc::{Space, SpaceAllocator};
pub use arena::{Arena, PageKind};
pub use error::HalError;
