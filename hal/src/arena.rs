//! [`Arena`]: one contiguous, shareable memory region backed by a memfd.
//!
//! The region is created with `memfd_create(2)` and mapped `MAP_SHARED`
//! read/write, so a process on the same host can map the very same pages
//! later through [`Arena::as_raw_fd`] (e.g. after receiving the fd over a
//! Unix socket).
//!
//! Page backing is chosen in this order:
//!
//! 1. **hugetlb 2 MiB pages** (`MFD_HUGETLB | MFD_HUGE_2MB`), but only when
//!    `/proc/meminfo` shows enough free, unreserved 2 MiB huge pages. A
//!    hugetlb memfd can succeed at `memfd_create`/`ftruncate`/`mmap` time and
//!    still `SIGBUS` on first touch when the pool is empty, so the pool is
//!    checked first (see [`hugetlb_available_bytes`]).
//! 2. **transparent huge pages**: a plain memfd plus `madvise(MADV_HUGEPAGE)`.
//! 3. **normal pages**: a plain memfd.
//!
//! All byte access goes through bounds-checked methods taking `&self`; many
//! threads may copy into *disjoint* ranges concurrently (ranges are handed
//! out by [`crate::SpaceAllocator`]).

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use memmap2::{Advice, MmapOptions, MmapRaw};

use crate::error::HalError;

/// Size of a hugetlb / transparent huge page used by this crate.
pub const HUGE_PAGE_BYTES: u64 = 2 << 20;

/// Base page size assumed for rounding and pre-faulting.
pub const BASE_PAGE_BYTES: u64 = 4096;

/// Maximum number of `IoSlice`/`IoSliceMut` passed to one vectored syscall.
///
/// The slices live in a stack array of this size, so the vectored data-path
/// methods never allocate. Linux accepts up to 1024 (`IOV_MAX`).
pub const IOV_CHUNK: usize = 64;

/// Longest memfd name the kernel accepts (249 bytes excluding the NUL).
const MEMFD_NAME_MAX: usize = 249;

/// Below this size pre-faulting runs on the calling thread only.
const PARALLEL_TOUCH_MIN_BYTES: u64 = 64 << 20;

/// Which kind of pages back an [`Arena`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// Explicit 2 MiB hugetlb pages (`MFD_HUGETLB`).
    Huge2M,
    /// Normal shmem pages with `MADV_HUGEPAGE`: the kernel may back them with
    /// transparent huge pages.
    Transparent,
    /// Normal (usually 4 KiB) pages.
    Normal,
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageKind::Huge2M => "hugetlb 2MiB pages",
            PageKind::Transparent => "transparent huge pages (madvise)",
            PageKind::Normal => "normal pages",
        })
    }
}

/// One contiguous shared memory region backed by a memfd and mapped
/// `MAP_SHARED` read/write.
///
/// `Arena` is `Send + Sync`: all accessors take `&self` and are
/// bounds-checked. Callers are expected to work on disjoint ranges (as handed
/// out by [`crate::SpaceAllocator`]); if two callers nevertheless race on
/// overlapping bytes, the result is torn bytes *inside* the mapping, never an
/// access outside of it.
///
/// Dropping the arena unmaps the region and closes the fd; the memory itself
/// lives on while another process still maps it.
pub struct Arena {
    /// The mapping. Declared first so it is unmapped before the fd closes.
    map: MmapRaw,
    /// The memfd backing the mapping.
    file: File,
    name: String,
    len: u64,
    page_kind: PageKind,
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("name", &self.name)
            .field("len", &self.len)
            .field("page_kind", &self.page_kind)
            .field("fd", &self.file.as_raw_fd())
            .field("base", &self.map.as_ptr())
            .finish()
    }
}

impl Arena {
    /// Creates an arena of at least `bytes` bytes named `name` (the memfd name,
    /// visible in `/proc/<pid>/fd`; truncated to 249 bytes).
    ///
    /// The actual size ([`Arena::len`]) is `bytes` rounded up to the page size
    /// of the chosen backing (2 MiB for hugetlb, 4 KiB otherwise). When
    /// `prefault` is true every page is faulted in (written) before this
    /// returns, so the data path never takes first-touch page faults.
    ///
    /// # Errors
    ///
    /// [`HalError::InvalidSize`] if `bytes` is zero or too large for the
    /// address space, or `name` contains a NUL byte; [`HalError::Map`] if no
    /// backing could be created or mapped.
    pub fn new(name: &str, bytes: u64, prefault: bool) -> Result<Arena, HalError> {
        if bytes == 0 {
            return Err(HalError::InvalidSize(
                "arena size must be greater than zero".into(),
            ));
        }
        let limit = (isize::MAX as u64) - HUGE_PAGE_BYTES;
        if bytes > limit {
            return Err(HalError::InvalidSize(format!(
                "arena size {bytes} exceeds the address-space limit of {limit} bytes"
            )));
        }
        let cname = memfd_name(name)?;

        // (a) hugetlb, only when the pool can really back the whole size.
        let huge_len = round_up(bytes, HUGE_PAGE_BYTES);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let huge_avail = hugetlb_available_bytes(&meminfo);
        if huge_avail >= huge_len {
            match Self::try_hugetlb(&cname, name, huge_len, prefault) {
                Ok(arena) => {
                    arena.log_created(bytes);
                    return Ok(arena);
                }
                Err(e) => tracing::debug!(
                    arena = name,
                    error = %e,
                    "hugetlb arena failed, falling back to normal memfd"
                ),
            }
        } else {
            tracing::debug!(
                arena = name,
                needed = huge_len,
                available = huge_avail,
                "not enough free hugetlb 2MiB pages, using a normal memfd"
            );
        }

        // (b)/(c) plain memfd, with transparent huge pages when available.
        let len = round_up(bytes, BASE_PAGE_BYTES);
        let file = create_memfd(&cname, libc::MFD_CLOEXEC, len)
            .map_err(|reason| HalError::Map { bytes: len, reason })?;
        let map = map_shared(&file, len).map_err(|reason| HalError::Map { bytes: len, reason })?;
        let page_kind = match map.advise(Advice::HugePage) {
            Ok(()) if shmem_thp_possible() => PageKind::Transparent,
            Ok(()) => {
                tracing::debug!(
                    arena = name,
                    "MADV_HUGEPAGE accepted but shmem THP is disabled \
                     (/sys/kernel/mm/transparent_hugepage/shmem_enabled)"
                );
                PageKind::Normal
            }
            Err(e) => {
                tracing::debug!(arena = name, error = %e, "MADV_HUGEPAGE rejected");
                PageKind::Normal
            }
        };
        if prefault {
            prefault_map(&map, true).map_err(|reason| HalError::Map { bytes: len, reason })?;
        }
        let arena = Arena {
            map,
            file,
            name: name.to_owned(),
            len,
            page_kind,
        };
        arena.log_created(bytes);
        Ok(arena)
    }

    /// Map an arena another process created and handed over (a memfd received with
    /// [`crate::fdpass::recv_with_fds`]). `len` must not exceed the file's size.
    pub fn from_fd(name: &str, fd: std::os::fd::OwnedFd, len: u64) -> Result<Arena, HalError> {
        let file = File::from(fd);
        let size = file
            .metadata()
            .map_err(|source| HalError::Io {
                context: format!("fstat of the handed-over arena {name}"),
                source,
            })?
            .len();
        if len == 0 || len > size {
            return Err(HalError::InvalidSize(format!(
                "mapping {len} bytes of {name}, whose file holds {size}"
            )));
        }
        let map = map_shared(&file, len).map_err(|reason| HalError::Map { bytes: len, reason })?;
        Ok(Arena {
            map,
            file,
            name: name.to_owned(),
            len,
            page_kind: PageKind::Normal,
        })
    }

    /// Tries the hugetlb backing; any failure is returned so the caller can
    /// fall back.
    fn try_hugetlb(cname: &CString, name: &str, len: u64, prefault: bool) -> Result<Arena, String> {
        let file = create_memfd(
            cname,
            libc::MFD_CLOEXEC | libc::MFD_HUGETLB | libc::MFD_HUGE_2MB,
            len,
        )?;
        let map = map_shared(&file, len)?;
        if prefault {
            // Never fall back to touching here: touching an unbacked hugetlb
            // page raises SIGBUS, while MADV_POPULATE_WRITE reports an error.
            prefault_map(&map, false).map_err(|e| format!("hugetlb pre-fault: {e}"))?;
        }
        Ok(Arena {
            map,
            file,
            name: name.to_owned(),
            len,
            page_kind: PageKind::Huge2M,
        })
    }

    fn log_created(&self, requested: u64) {
        tracing::info!(
            arena = %self.name,
            requested_bytes = requested,
            bytes = self.len,
            page_kind = %self.page_kind,
            fd = self.file.as_raw_fd(),
            "created shared memory arena ({} MiB, {})",
            self.len >> 20,
            self.page_kind
        );
    }

    /// Size of the arena in bytes (>= the size requested at creation).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: an arena has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Which kind of pages back the arena.
    pub fn page_kind(&self) -> PageKind {
        self.page_kind
    }

    /// The memfd backing the arena, e.g. to pass to a same-host process that
    /// maps it `MAP_SHARED`. The fd stays owned by the arena.
    pub fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The name the arena was created with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Base address of the mapping, e.g. for registering it with a device
    /// (RDMA memory region). Valid for as long as the arena lives; writing
    /// through it is subject to the same disjoint-range discipline as
    /// [`Arena::copy_in`].
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Checks that `[offset, offset + len)` lies in the arena and returns the
    /// offset as `usize`.
    #[inline]
    fn check(&self, offset: u64, len: u64) -> Result<usize, HalError> {
        match offset.checked_add(len) {
            // `end <= self.len <= isize::MAX`, so `offset` fits in usize.
            Some(end) if end <= self.len => Ok(offset as usize),
            _ => Err(HalError::OutOfBounds {
                offset,
                len,
                arena_bytes: self.len,
            }),
        }
    }

    /// Copies `src` into the arena at `offset`.
    ///
    /// # Errors
    ///
    /// [`HalError::OutOfBounds`] if `offset + src.len()` exceeds the arena
    /// (nothing is written then).
    pub fn copy_in(&self, offset: u64, src: &[u8]) -> Result<(), HalError> {
        let off = self.check(offset, src.len() as u64)?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: `check` proved `off + src.len() <= self.len`, the mapped
        // length, so the destination lies inside the mapping, which stays
        // mapped while `&self` is borrowed. The mapping is read/write. Ranges
        // are handed out by an allocator so concurrent users do not overlap;
        // a racing overlap could only tear bytes inside the mapping.
        // `ptr::copy` (memmove) is used so even a `src` aliasing the mapping
        // (via a second mapping of the fd) is handled.
        unsafe {
            std::ptr::copy(src.as_ptr(), self.map.as_mut_ptr().add(off), src.len());
        }
        Ok(())
    }

    /// Copies `dst.len()` bytes from the arena at `offset` into `dst`.
    ///
    /// # Errors
    ///
    /// [`HalError::OutOfBounds`] if `offset + dst.len()` exceeds the arena
    /// (`dst` is untouched then).
    pub fn copy_out(&self, offset: u64, dst: &mut [u8]) -> Result<(), HalError> {
        let off = self.check(offset, dst.len() as u64)?;
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: `check` proved `off + dst.len() <= self.len`, so the source
        // lies inside the mapping, which stays mapped while `&self` is
        // borrowed. `dst` is an exclusive borrow of caller memory. Ranges are
        // handed out by an allocator so no one writes these bytes
        // concurrently; a racing writer could only make us read torn bytes.
        unsafe {
            std::ptr::copy(self.map.as_ptr().add(off), dst.as_mut_ptr(), dst.len());
        }
        Ok(())
    }

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
    /// Uses `read_vectored` with up to [`IOV_CHUNK`] ranges per call from a
    /// stack array (no heap allocation), handling partial reads and `EINTR`.
    /// All ranges are bounds-checked before anything is read. Zero-length
    /// ranges are allowed. Non-empty ranges within any window of
    /// [`IOV_CHUNK`] consecutive ranges must not overlap.
    ///
    /// # Errors
    ///
    /// [`HalError::OutOfBounds`] / [`HalError::OverlappingRanges`] before
    /// reading anything; [`HalError::Io`] on a read error, or with kind
    /// `UnexpectedEof` if the reader ends early (the ranges may then be
    /// partially filled).
    pub fn fill_from<R: Read>(
        &self,
        ranges: &[(u64, u64)],
        reader: &mut R,
    ) -> Result<(), HalError> {
        self.validate_ranges(ranges, true)?;
        let base = self.map.as_mut_ptr();
        let mut cursor = Cursor::default();
        let mut done: u64 = 0;
        loop {
            let mut bufs: [IoSliceMut<'_>; IOV_CHUNK] =
                std::array::from_fn(|_| IoSliceMut::new(&mut []));
            let mut n_bufs = 0;
            let mut window: u64 = 0;
            let (mut i, mut within) = (cursor.index, cursor.within);
            while n_bufs < IOV_CHUNK && i < ranges.len() {
                let (offset, len) = ranges[i];
                if len > within {
                    let part = len - within;
                    // SAFETY: `validate_ranges` checked `offset + len <=
                    // self.len`, so `[offset + within, offset + len)` is inside
                    // the mapping, which stays mapped while `&self` is
                    // borrowed; the slice does not outlive this call. It also
                    // checked that the non-empty ranges of one window do not
                    // overlap, so the `&mut` slices built here are disjoint.
                    // Ranges come from an allocator so no other thread uses
                    // them; a racing overlap could only tear bytes inside the
                    // mapping.
                    let slice = unsafe {
                        std::slice::from_raw_parts_mut(
                            base.add((offset + within) as usize),
                            part as usize,
                        )
                    };
                    bufs[n_bufs] = IoSliceMut::new(slice);
                    n_bufs += 1;
                    window += part;
                }
                i += 1;
                within = 0;
            }
            if n_bufs == 0 {
                return Ok(());
            }
            match reader.read_vectored(&mut bufs[..n_bufs]) {
                Ok(0) => {
                    return Err(io_error(
                        io::Error::from(io::ErrorKind::UnexpectedEof),
                        "fill_from",
                        done,
                        ranges,
                    ))
                }
                Ok(n) if n as u64 > window => {
                    return Err(io_error(
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            "reader reported more bytes than the buffers hold",
                        ),
                        "fill_from",
                        done,
                        ranges,
                    ))
                }
                Ok(n) => {
                    done += n as u64;
                    cursor.advance(ranges, n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e, "fill_from", done, ranges)),
            }
        }
    }

    /// Writes the `(offset, len)` ranges of the arena, in order, to `writer`
    /// (`sum(len)` bytes in total).
    ///
    /// Uses `write_vectored` with up to [`IOV_CHUNK`] ranges per call from a
    /// stack array (no heap allocation), handling partial writes and `EINTR`.
    /// All ranges are bounds-checked before anything is written. Ranges may
    /// be empty and may overlap (they are only read).
    ///
    /// # Errors
    ///
    /// [`HalError::OutOfBounds`] before writing anything; [`HalError::Io`] on
    /// a write error, or with kind `WriteZero` if the writer stops accepting
    /// bytes.
    pub fn drain_to<W: Write>(
        &self,
        ranges: &[(u64, u64)],
        writer: &mut W,
    ) -> Result<(), HalError> {
        self.validate_ranges(ranges, false)?;
        let base = self.map.as_ptr();
        let mut cursor = Cursor::default();
        let mut done: u64 = 0;
        loop {
            let mut bufs: [IoSlice<'_>; IOV_CHUNK] = [IoSlice::new(&[]); IOV_CHUNK];
            let mut n_bufs = 0;
            let mut window: u64 = 0;
            let (mut i, mut within) = (cursor.index, cursor.within);
            while n_bufs < IOV_CHUNK && i < ranges.len() {
                let (offset, len) = ranges[i];
                if len > within {
                    let part = len - within;
                    // SAFETY: `validate_ranges` checked `offset + len <=
                    // self.len`, so `[offset + within, offset + len)` is inside
                    // the mapping, which stays mapped while `&self` is
                    // borrowed; the slice does not outlive this call. Shared
                    // slices may overlap each other. Ranges come from an
                    // allocator so no other thread writes them; a racing
                    // writer could only make us send torn bytes.
                    let slice = unsafe {
                        std::slice::from_raw_parts(
                            base.add((offset + within) as usize),
                            part as usize,
                        )
                    };
                    bufs[n_bufs] = IoSlice::new(slice);
                    n_bufs += 1;
                    window += part;
                }
                i += 1;
                within = 0;
            }
            if n_bufs == 0 {
                return Ok(());
            }
            match writer.write_vectored(&bufs[..n_bufs]) {
                Ok(0) => {
                    return Err(io_error(
                        io::Error::from(io::ErrorKind::WriteZero),
                        "drain_to",
                        done,
                        ranges,
                    ))
                }
                Ok(n) if n as u64 > window => {
                    return Err(io_error(
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            "writer reported more bytes than the buffers hold",
                        ),
                        "drain_to",
                        done,
                        ranges,
                    ))
                }
                Ok(n) => {
                    done += n as u64;
                    cursor.advance(ranges, n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e, "drain_to", done, ranges)),
            }
        }
    }
}

impl AsRawFd for Arena {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for Arena {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
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

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Converts `name` into a memfd name (truncated to the kernel limit).
fn memfd_name(name: &str) -> Result<CString, HalError> {
    let mut end = name.len().min(MEMFD_NAME_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    CString::new(&name[..end])
        .map_err(|_| HalError::InvalidSize(format!("arena name {name:?} contains a NUL byte")))
}

/// Creates a memfd with `flags` and sizes it to `len` bytes.
fn create_memfd(name: &CString, flags: libc::c_uint, len: u64) -> Result<File, String> {
    // SAFETY: `name` is a valid NUL-terminated C string that outlives the
    // call; memfd_create has no other preconditions.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(format!(
            "memfd_create(flags={flags:#x}): {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` was just returned by memfd_create, is open, and nothing
    // else owns it, so transferring ownership to `OwnedFd` is sound.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = File::from(owned);
    file.set_len(len)
        .map_err(|e| format!("ftruncate({len}): {e}"))?;
    Ok(file)
}

/// Maps `len` bytes of `file` `MAP_SHARED` read/write.
fn map_shared(file: &File, len: u64) -> Result<MmapRaw, String> {
    let ulen = usize::try_from(len).map_err(|_| format!("{len} bytes exceed usize"))?;
    MmapOptions::new()
        .len(ulen)
        .map_raw(file)
        .map_err(|e| format!("mmap({len}, MAP_SHARED): {e}"))
}

/// Bytes of 2 MiB hugetlb pages that are free and not reserved, according to
/// `/proc/meminfo` text. Returns 0 when the default huge page size is not
/// 2 MiB or the fields are missing.
pub fn hugetlb_available_bytes(meminfo: &str) -> u64 {
    let mut free = None;
    let mut rsvd = 0u64;
    let mut size_kb = None;
    for line in meminfo.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "HugePages_Free:" => free = Some(value),
            "HugePages_Rsvd:" => rsvd = value,
            "Hugepagesize:" => size_kb = Some(value),
            _ => {}
        }
    }
    match (free, size_kb) {
        (Some(free), Some(kb)) if kb * 1024 == HUGE_PAGE_BYTES => {
            free.saturating_sub(rsvd).saturating_mul(HUGE_PAGE_BYTES)
        }
        _ => 0,
    }
}

/// Whether the kernel may back shmem (memfd) with transparent huge pages
/// after `MADV_HUGEPAGE`. Unknown (file missing) counts as possible.
fn shmem_thp_possible() -> bool {
    match std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled") {
        Ok(s) => shmem_thp_mode_allows(&s),
        Err(_) => true,
    }
}

/// Parses `shmem_enabled` (e.g. `always within_size advise [never] deny force`).
fn shmem_thp_mode_allows(text: &str) -> bool {
    let selected = text
        .split_whitespace()
        .find(|w| w.starts_with('[') && w.ends_with(']'));
    !matches!(selected, Some("[never]") | Some("[deny]"))
}

/// Faults in every page of `map` before it is used.
///
/// The map is split into 2 MiB-aligned pieces, one per core for large maps,
/// and each piece is populated with `MADV_POPULATE_WRITE` (Linux 5.14+). If
/// that fails and `allow_touch` is set, the piece is faulted in by writing a
/// zero byte every 4 KiB instead (fresh memfd memory is zero, so contents do
/// not change). `allow_touch` must be false for hugetlb maps, where touching
/// an unbacked page raises `SIGBUS`.
fn prefault_map(map: &MmapRaw, allow_touch: bool) -> Result<(), String> {
    let len = map.len();
    let threads = if (len as u64) < PARALLEL_TOUCH_MIN_BYTES {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16)
    };
    let align = HUGE_PAGE_BYTES as usize;
    let per = len.div_ceil(threads).div_ceil(align) * align;
    if threads == 1 {
        return prefault_range(map, 0, len, allow_touch);
    }
    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(threads);
        let mut start = 0;
        while start < len {
            let end = (start + per).min(len);
            handles.push(s.spawn(move || prefault_range(map, start, end, allow_touch)));
            start = end;
        }
        // Threads not joined here (after an error) are joined by the scope.
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err("prefault thread panicked".into()))
        })
    })
}

/// Pre-faults `[start, end)` of `map` (see [`prefault_map`]).
fn prefault_range(
    map: &MmapRaw,
    start: usize,
    end: usize,
    allow_touch: bool,
) -> Result<(), String> {
    match map.advise_range(Advice::PopulateWrite, start, end - start) {
        Ok(()) => Ok(()),
        Err(e) if !allow_touch => Err(format!("MADV_POPULATE_WRITE: {e}")),
        Err(e) => {
            tracing::debug!(error = %e, "MADV_POPULATE_WRITE failed, touching pages");
            touch_range(map, start, end);
            Ok(())
        }
    }
}

/// Writes a zero byte every 4 KiB in `[start, end)` of `map`.
fn touch_range(map: &MmapRaw, start: usize, end: usize) {
    debug_assert!(start <= end && end <= map.len());
    let base = map.as_mut_ptr();
    let mut off = start;
    while off < end {
        // SAFETY: `off < end <= map.len()`, so the byte is inside the
        // mapping, which is borrowed (hence mapped) for this whole call. The
        // arena is still being constructed, so nothing else accesses it, and
        // concurrent callers touch disjoint sub-ranges.
        unsafe { std::ptr::write_volatile(base.add(off), 0) };
        off += BASE_PAGE_BYTES as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn arena(bytes: u64) -> Arena {
        Arena::new("mmc-hal-test", bytes, true).expect("arena")
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn arena_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Arena>();
    }

    #[test]
    fn zero_size_rejected() {
        assert!(matches!(
            Arena::new("z", 0, false),
            Err(HalError::InvalidSize(_))
        ));
        assert!(matches!(
            Arena::new("big", u64::MAX, false),
            Err(HalError::InvalidSize(_))
        ));
        assert!(matches!(
            Arena::new("a\0b", 4096, false),
            Err(HalError::InvalidSize(_))
        ));
    }

    #[test]
    fn creates_with_and_without_prefault() {
        for prefault in [false, true] {
            let a = Arena::new("mmc-hal-create", 3 * 1024 * 1024 + 5, prefault).unwrap();
            assert!(a.len() >= 3 * 1024 * 1024 + 5);
            assert_eq!(a.len() % BASE_PAGE_BYTES, 0);
            assert!(!a.is_empty());
            assert_eq!(a.name(), "mmc-hal-create");
            assert!(a.as_raw_fd() >= 0);
            eprintln!("page kind observed: {}", a.page_kind());
            // Fresh memory reads as zero.
            let mut buf = vec![1u8; 4096];
            a.copy_out(a.len() - 4096, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn long_name_is_truncated() {
        let name = "é".repeat(200);
        let a = Arena::new(&name, 4096, false).unwrap();
        assert_eq!(a.name(), name);
    }

    #[test]
    fn plain_fallback_paths_do_not_crash() {
        // Exercise the hugetlb attempt directly: it may fail (empty pool)
        // but must not crash as long as nothing is touched.
        let cname = memfd_name("mmc-hal-huge").unwrap();
        match Arena::try_hugetlb(&cname, "mmc-hal-huge", HUGE_PAGE_BYTES, true) {
            Ok(a) => {
                a.copy_in(0, b"huge").unwrap();
                assert_eq!(a.page_kind(), PageKind::Huge2M);
            }
            Err(e) => eprintln!("hugetlb unavailable (expected here): {e}"),
        }
        let file = create_memfd(&cname, libc::MFD_CLOEXEC, 8192).unwrap();
        let map = map_shared(&file, 8192).unwrap();
        touch_range(&map, 0, 8192);
        prefault_map(&map, true).unwrap();
        let _ = map.advise(Advice::HugePage);
    }

    #[test]
    fn parallel_touch_covers_large_maps() {
        let cname = memfd_name("mmc-hal-touch").unwrap();
        let len = PARALLEL_TOUCH_MIN_BYTES + 3 * BASE_PAGE_BYTES;
        let file = create_memfd(&cname, libc::MFD_CLOEXEC, len).unwrap();
        let map = map_shared(&file, len).unwrap();
        prefault_map(&map, true).unwrap();
        prefault_map(&map, false).unwrap();
        touch_range(&map, 0, map.len());
    }

    #[test]
    fn hugetlb_decision_from_meminfo() {
        let text = "MemTotal:       16000000 kB\n\
                    HugePages_Total:     512\n\
                    HugePages_Free:      100\n\
                    HugePages_Rsvd:       20\n\
                    HugePages_Surp:        0\n\
                    Hugepagesize:       2048 kB\n";
        assert_eq!(hugetlb_available_bytes(text), 80 * HUGE_PAGE_BYTES);

        let empty =
            "HugePages_Total: 0\nHugePages_Free: 0\nHugePages_Rsvd: 0\nHugepagesize: 2048 kB\n";
        assert_eq!(hugetlb_available_bytes(empty), 0);

        let gig = "HugePages_Free: 100\nHugepagesize: 1048576 kB\n";
        assert_eq!(
            hugetlb_available_bytes(gig),
            0,
            "1 GiB default pages are not used"
        );

        assert_eq!(hugetlb_available_bytes(""), 0);
        assert_eq!(hugetlb_available_bytes("garbage\nHugePages_Free: x\n"), 0);

        let over_reserved = "HugePages_Free: 2\nHugePages_Rsvd: 5\nHugepagesize: 2048 kB\n";
        assert_eq!(hugetlb_available_bytes(over_reserved), 0);
    }

    #[test]
    fn shmem_thp_mode_parsing() {
        assert!(!shmem_thp_mode_allows(
            "always within_size advise [never] deny force"
        ));
        assert!(!shmem_thp_mode_allows(
            "always within_size advise never [deny] force"
        ));
        assert!(shmem_thp_mode_allows(
            "always within_size [advise] never deny force"
        ));
        assert!(shmem_thp_mode_allows(
            "[always] within_size advise never deny force"
        ));
    }

    #[test]
    fn page_kind_display() {
        assert_eq!(PageKind::Huge2M.to_string(), "hugetlb 2MiB pages");
        assert!(PageKind::Transparent.to_string().contains("transparent"));
        assert_eq!(PageKind::Normal.to_string(), "normal pages");
    }

    #[test]
    fn copy_round_trip() {
        let a = arena(1 << 20);
        let data = pattern(10_000, 7);
        a.copy_in(12_345, &data).unwrap();
        let mut out = vec![0u8; data.len()];
        a.copy_out(12_345, &mut out).unwrap();
        assert_eq!(out, data);
        // Edges.
        a.copy_in(a.len() - 3, b"end").unwrap();
        let mut e = [0u8; 3];
        a.copy_out(a.len() - 3, &mut e).unwrap();
        assert_eq!(&e, b"end");
        a.copy_in(a.len(), &[]).unwrap();
        a.copy_out(a.len(), &mut []).unwrap();
    }

    #[test]
    fn out_of_bounds_rejected() {
        let a = arena(4096);
        let len = a.len();
        let err = a.copy_in(len - 1, b"ab").unwrap_err();
        assert!(
            matches!(err, HalError::OutOfBounds { offset, len: 2, arena_bytes } if offset == len - 1 && arena_bytes == len)
        );
        assert!(a.copy_in(len + 1, &[]).is_err());
        let mut buf = [0u8; 8];
        assert!(a.copy_out(u64::MAX - 2, &mut buf).is_err(), "overflow");
        assert!(a.copy_out(len, &mut buf).is_err());
        let mut r: &[u8] = &[0u8; 16];
        assert!(matches!(
            a.fill_from(&[(0, 8), (u64::MAX, 2)], &mut r),
            Err(HalError::OutOfBounds { .. })
        ));
        assert_eq!(r.len(), 16, "nothing read before bounds are checked");
        let mut w = Vec::new();
        assert!(a.drain_to(&[(0, 8), (len - 4, 8)], &mut w).is_err());
        assert!(w.is_empty(), "nothing written before bounds are checked");
    }

    #[test]
    fn overlapping_fill_ranges_rejected() {
        let a = arena(4096);
        let mut r: &[u8] = &[0u8; 64];
        assert!(matches!(
            a.fill_from(&[(0, 16), (8, 16)], &mut r),
            Err(HalError::OverlappingRanges { .. })
        ));
        // Empty ranges never overlap; adjacent ranges are fine.
        let mut r: &[u8] = &[0u8; 64];
        a.fill_from(&[(0, 16), (8, 0), (16, 16)], &mut r).unwrap();
        // Overlap allowed for draining (read only).
        let mut w = Vec::new();
        a.drain_to(&[(0, 16), (8, 16)], &mut w).unwrap();
        assert_eq!(w.len(), 32);
    }

    /// Builds `n` disjoint ranges with varying lengths (some zero) in
    /// shuffled order.
    fn many_ranges(n: usize) -> Vec<(u64, u64)> {
        let mut ranges = Vec::new();
        let mut off = 0u64;
        for i in 0..n {
            let len = if i % 17 == 5 {
                0
            } else {
                (i as u64 * 37) % 300 + 1
            };
            ranges.push((off, len));
            off += len + (i as u64 % 3) * 64;
        }
        // Reverse pairs so the order is not monotonic.
        ranges.chunks_mut(2).for_each(|c| c.reverse());
        ranges
    }

    #[test]
    fn fill_and_drain_through_socket_pair() {
        let src = arena(1 << 20);
        let dst = arena(1 << 20);
        let ranges = many_ranges(200);
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        let data = pattern(total as usize, 3);
        // Put the data into `src` range by range.
        let mut pos = 0usize;
        for &(off, len) in &ranges {
            src.copy_in(off, &data[pos..pos + len as usize]).unwrap();
            pos += len as usize;
        }
        let (mut a, mut b) = UnixStream::pair().unwrap();
        std::thread::scope(|s| {
            let ranges = &ranges;
            let src = &src;
            s.spawn(move || src.drain_to(ranges, &mut a).unwrap());
            dst.fill_from(ranges, &mut b).unwrap();
        });
        let mut pos = 0usize;
        for &(off, len) in &ranges {
            let mut buf = vec![0u8; len as usize];
            dst.copy_out(off, &mut buf).unwrap();
            assert_eq!(buf, &data[pos..pos + len as usize], "range at {off}");
            pos += len as usize;
        }
    }

    /// A reader handing out at most one byte per call, with an EINTR first.
    struct Trickle<'a> {
        data: &'a [u8],
        interrupted: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.interrupted {
                self.interrupted = true;
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            if self.data.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.data[0];
            self.data = &self.data[1..];
            Ok(1)
        }
    }

    /// A writer accepting at most one byte per call.
    struct Dribble(Vec<u8>);

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match buf.first() {
                Some(&b) => {
                    self.0.push(b);
                    Ok(1)
                }
                None => Ok(0),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let a = arena(1 << 16);
        let ranges = many_ranges(150);
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        let data = pattern(total as usize, 9);
        let mut r = Trickle {
            data: &data,
            interrupted: false,
        };
        a.fill_from(&ranges, &mut r).unwrap();
        assert!(r.data.is_empty());
        let mut w = Dribble(Vec::new());
        a.drain_to(&ranges, &mut w).unwrap();
        assert_eq!(w.0, data);
    }

    #[test]
    fn eof_midway_is_an_error() {
        let a = arena(4096);
        let mut r: &[u8] = &[1u8; 10];
        let err = a.fill_from(&[(0, 8), (100, 8)], &mut r).unwrap_err();
        match err {
            HalError::Io { source, context } => {
                assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof);
                assert!(context.contains("10 of 16"), "{context}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut full = [0u8; 2];
        let mut w: &mut [u8] = &mut full;
        let err = a.drain_to(&[(0, 8)], &mut w).unwrap_err();
        assert!(
            matches!(err, HalError::Io { ref source, .. } if source.kind() == io::ErrorKind::WriteZero)
        );
    }

    #[test]
    fn zero_length_ranges_are_fine() {
        let a = arena(4096);
        let mut r: &[u8] = &[];
        a.fill_from(&[], &mut r).unwrap();
        a.fill_from(&[(0, 0), (4096, 0), (5, 0)], &mut r).unwrap();
        let mut w = Vec::new();
        a.drain_to(&[(0, 0), (a.len(), 0)], &mut w).unwrap();
        assert!(w.is_empty());
        let mut r: &[u8] = b"xy";
        a.fill_from(&[(0, 0), (10, 1), (0, 0), (11, 1), (0, 0)], &mut r)
            .unwrap();
        let mut out = [0u8; 2];
        a.copy_out(10, &mut out).unwrap();
        assert_eq!(&out, b"xy");
    }

    #[test]
    fn fd_can_be_mapped_again() {
        let a = arena(1 << 20);
        a.copy_in(4000, b"shared bytes").unwrap();
        let len = a.len() as usize;
        // SAFETY: the arena's memfd stays open for the whole test; the bytes
        // are only mutated through the second mapping below while `a` is not
        // writing, and memmap2 bounds the map to `len`.
        let mut second = unsafe { MmapOptions::new().len(len).map_mut(a.as_raw_fd()) }.unwrap();
        assert_eq!(&second[4000..4012], b"shared bytes");
        second[0..5].copy_from_slice(b"hello");
        let mut out = [0u8; 5];
        a.copy_out(0, &mut out).unwrap();
        assert_eq!(&out, b"hello");
    }

    #[test]
    fn concurrent_disjoint_copies() {
        let a = arena(1 << 20);
        let chunk = 4096u64;
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let a = &a;
                s.spawn(move || {
                    let data = vec![t as u8 + 1; chunk as usize];
                    for round in 0..16u64 {
                        let off = (round * 8 + t) * chunk;
                        a.copy_in(off, &data).unwrap();
                    }
                });
            }
        });
        for i in 0..128u64 {
            let mut buf = vec![0u8; chunk as usize];
            a.copy_out(i * chunk, &mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == (i % 8) as u8 + 1));
        }
    }
}
