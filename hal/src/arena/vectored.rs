//! Vectored I/O between the arena and a file descriptor: the kernel copies
//! straight into or out of the mapping (`readv`, `sendmsg`/`writev`) from
//! raw `iovec`s, so no Rust reference into the shared mapping ever exists
//! (see the soundness notes of the parent module).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use super::{Arena, IOV_CHUNK};
use crate::error::HalError;

/// Which way a vectored transfer goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Socket or file -> arena.
    Fill,
    /// Arena -> socket or file.
    Drain,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Fill => "fill_from",
            Direction::Drain => "drain_to",
        }
    }
}

impl Arena {
    /// Checks every range's bounds and that no two non-empty ranges that can
    /// be in the same vectored call (any [`IOV_CHUNK`] consecutive non-empty
    /// ranges) overlap. Returns the total number of bytes.
    fn validate_ranges(&self, ranges: &[(u64, u64)], check_overlap: bool) -> Result<u64, HalError> {
        let mut total: u64 = 0;
        // Ring of the last IOV_CHUNK - 1 non-empty ranges (stack only).
        let mut recent = [(0u64, 0u64); IOV_CHUNK];
        let mut recent_len = 0usize;
        let mut recent_pos = 0usize;
        for &(offset, len) in ranges {
            self.check(offset, len)?;
            // Each range is inside the arena; saturate so an absurd number of
            // ranges cannot overflow (the total is informational only).
            total = total.saturating_add(len);
            if len == 0 || !check_overlap {
                continue;
            }
            for &(o, l) in &recent[..recent_len] {
                if offset < o + l && o < offset + len {
                    return Err(HalError::OverlappingRanges {
                        a_offset: o,
                        a_len: l,
                        b_offset: offset,
                        b_len: len,
                    });
                }
            }
            recent[recent_pos] = (offset, len);
            recent_pos = (recent_pos + 1) % (IOV_CHUNK - 1);
            recent_len = (recent_len + 1).min(IOV_CHUNK - 1);
        }
        Ok(total)
    }

    /// Reads exactly `sum(len)` bytes from `reader`, in order, into the
    /// `(offset, len)` ranges of the arena.
    ///
    /// The kernel writes the bytes (`readv` with up to [`IOV_CHUNK`] ranges
    /// per call from a stack array, no heap allocation), handling partial
    /// reads and `EINTR`; a read timeout set on the socket surfaces as an
    /// error. All ranges are bounds-checked before anything is read.
    /// Zero-length ranges are allowed. Non-empty ranges within any window of
    /// [`IOV_CHUNK`] consecutive ranges must not overlap. `reader` must not be
    /// buffered in user space (bytes a `BufReader` holds would be skipped):
    /// hence a file descriptor, not `Read`.
    ///
    /// # Errors
    ///
    /// [`HalError::OutOfBounds`] / [`HalError::OverlappingRanges`] before
    /// reading anything; [`HalError::Io`] on a read error, or with kind
    /// `UnexpectedEof` if the reader ends early (the ranges may then be
    /// partially filled).
    pub fn fill_from<R: AsFd + ?Sized>(
        &self,
        ranges: &[(u64, u64)],
        reader: &mut R,
    ) -> Result<(), HalError> {
        self.validate_ranges(ranges, true)?;
        self.transfer(ranges, reader.as_fd().as_raw_fd(), Direction::Fill)
    }

    /// Writes the `(offset, len)` ranges of the arena, in order, to `writer`
    /// (`sum(len)` bytes in total).
    ///
    /// The kernel reads the bytes (`sendmsg` with `MSG_NOSIGNAL` on a socket,
    /// so a closed peer is an error rather than `SIGPIPE`; `writev`
    /// otherwise), up to [`IOV_CHUNK`] ranges per call from a stack array (no
    /// heap allocation), handling partial writes and `EINTR`. All ranges are
    /// bounds-checked before anything is written. Ranges may be empty and may
    /// overlap (they are only read).
    ///
    /// # Errors
    ///
    /// [`HalError::OutOfBounds`] before writing anything; [`HalError::Io`] on
    /// a write error, or with kind `WriteZero` if the writer stops accepting
    /// bytes.
    pub fn drain_to<W: AsFd + ?Sized>(
        &self,
        ranges: &[(u64, u64)],
        writer: &mut W,
    ) -> Result<(), HalError> {
        self.validate_ranges(ranges, false)?;
        self.transfer(ranges, writer.as_fd().as_raw_fd(), Direction::Drain)
    }

    /// Moves the bytes of validated `ranges` between the arena and `fd`.
    fn transfer(
        &self,
        ranges: &[(u64, u64)],
        fd: std::os::fd::RawFd,
        direction: Direction,
    ) -> Result<(), HalError> {
        let base = self.map.as_mut_ptr();
        let mut cursor = Cursor::default();
        let mut done: u64 = 0;
        let mut socket = true;
        loop {
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; IOV_CHUNK];
            let mut n_iov = 0;
            let mut window: u64 = 0;
            let (mut i, mut within) = (cursor.index, cursor.within);
            while n_iov < IOV_CHUNK && i < ranges.len() {
                let (offset, len) = ranges[i];
                if len > within {
                    let part = len - within;
                    // In bounds: `validate_ranges` checked `offset + len <=
                    // self.len`. A plain address, never a reference.
                    iov[n_iov] = libc::iovec {
                        iov_base: base.wrapping_add((offset + within) as usize).cast(),
                        iov_len: part as usize,
                    };
                    n_iov += 1;
                    window += part;
                }
                i += 1;
                within = 0;
            }
            if n_iov == 0 {
                debug_assert_eq!(done, ranges.iter().map(|r| r.1).sum::<u64>());
                return Ok(());
            }
            let n = match direction {
                // SAFETY: every iovec lies inside the mapping (bounds checked
                // above), which stays mapped read/write while `&self` is
                // borrowed; the kernel writes them, and no Rust reference to
                // those bytes exists, so a racing accessor sees torn bytes at
                // worst (module docs). `n_iov <= IOV_CHUNK` fits a c_int.
                Direction::Fill => unsafe { libc::readv(fd, iov.as_ptr(), n_iov as libc::c_int) },
                Direction::Drain if socket => {
                    // SAFETY: an all-zero msghdr is valid (no name, no control).
                    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                    msg.msg_iov = iov.as_mut_ptr();
                    msg.msg_iovlen = n_iov as _;
                    // SAFETY: as for readv, but the kernel only reads the
                    // iovecs; `msg` points at `iov`, alive for the call.
                    unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) }
                }
                // SAFETY: as for readv; the kernel only reads the iovecs.
                Direction::Drain => unsafe { libc::writev(fd, iov.as_ptr(), n_iov as libc::c_int) },
            };
            let n = match n {
                0 if direction == Direction::Fill => Err(io::ErrorKind::UnexpectedEof.into()),
                0 => Err(io::ErrorKind::WriteZero.into()),
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::ENOTSOCK) if direction == Direction::Drain && socket => {
                            socket = false;
                            continue;
                        }
                        _ => Err(e),
                    }
                }
                n if n as u64 > window => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the kernel reported more bytes than the buffers hold",
                )),
                n => Ok(n as u64),
            };
            match n {
                Ok(n) => {
                    done += n;
                    cursor.advance(ranges, n);
                }
                Err(e) => return Err(io_error(e, direction.name(), done, ranges)),
            }
        }
    }
}

/// Position inside a list of ranges: range `index`, `within` bytes into it.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    index: usize,
    within: u64,
}

impl Cursor {
    /// Moves forward by `n` bytes (which the caller guarantees do not exceed
    /// the bytes left in `ranges`).
    fn advance(&mut self, ranges: &[(u64, u64)], mut n: u64) {
        while n > 0 && self.index < ranges.len() {
            let left = ranges[self.index].1 - self.within;
            if n >= left {
                n -= left;
                self.index += 1;
                self.within = 0;
            } else {
                self.within += n;
                n = 0;
            }
        }
    }
}

/// Builds a [`HalError::Io`] (error path only, so allocating is fine).
fn io_error(source: io::Error, op: &str, done: u64, ranges: &[(u64, u64)]) -> HalError {
    let total: u64 = ranges.iter().fold(0u64, |acc, r| acc.saturating_add(r.1));
    HalError::Io {
        context: format!(
            "{op} after {done} of {total} bytes over {} ranges",
            ranges.len()
        ),
        source,
    }
}
