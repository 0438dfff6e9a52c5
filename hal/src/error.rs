//! Typed errors of the hardware abstraction layer.

/// Errors returned by the arena (feature `os`) and [`crate::SpaceAllocator`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HalError {
    /// Creating, sizing or mapping the shared memory region failed.
    #[error("failed to map a {bytes}-byte shared memory arena: {reason}")]
    Map {
        /// Size of the region that was requested.
        bytes: u64,
        /// What went wrong (which step and the OS error).
        reason: String,
    },
    /// An access `[offset, offset + len)` does not lie inside the arena.
    #[error(
        "access out of bounds: offset {offset} + len {len} exceeds the arena size of \
         {arena_bytes} bytes (or overflows u64)"
    )]
    OutOfBounds {
        /// Start of the rejected access.
        offset: u64,
        /// Length of the rejected access.
        len: u64,
        /// Size of the arena in bytes (the limit that was hit).
        arena_bytes: u64,
    },
    /// Two ranges passed to one vectored call overlap each other.
    #[error(
        "ranges overlap within one vectored call: ({a_offset}, {a_len}) and ({b_offset}, {b_len})"
    )]
    OverlappingRanges {
        /// Offset of the first range.
        a_offset: u64,
        /// Length of the first range.
        a_len: u64,
        /// Offset of the second range.
        b_offset: u64,
        /// Length of the second range.
        b_len: u64,
    },
    /// A copy's range overlaps one another thread of this process is copying (a write with
    /// anything): refused instead of racing.
    #[error(
        "range ({offset}, {len}) is being copied by another thread ({other_offset}, {other_len})"
    )]
    Busy {
        /// Offset of the refused copy.
        offset: u64,
        /// Length of the refused copy.
        len: u64,
        /// Offset of the copy in flight.
        other_offset: u64,
        /// Length of the copy in flight.
        other_len: u64,
    },
    /// An I/O operation failed (short read / EOF, write error, ...).
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A size or name argument is invalid (zero, too large, not representable).
    #[error("invalid size: {0}")]
    InvalidSize(String),
    /// A device backend call failed (or no backend can do it).
    #[error("device backend {backend}: {op} failed: {reason}")]
    Device {
        /// Which backend (`none`, `sim`, `cuda`, `ascend`).
        backend: &'static str,
        /// What was being done.
        op: &'static str,
        /// Why (the runtime's error name and code, or the check that failed).
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_limit() {
        let e = HalError::OutOfBounds {
            offset: 10,
            len: 20,
            arena_bytes: 16,
        };
        let s = e.to_string();
        assert!(s.contains("16 bytes"), "{s}");
        assert!(s.contains("offset 10"), "{s}");

        let e = HalError::Io {
            context: "filling".into(),
            source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        };
        assert!(std::error::Error::source(&e).is_some());
    }
}
