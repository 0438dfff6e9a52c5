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
//!
//! # Soundness under concurrent modification
//!
//! The mapping is shared with other processes (clients map it through the
//! memfd) and, by design, a reader whose lease expired may copy bytes that a
//! new writer is overwriting (it then discards them). So the safe API must be
//! sound when the same bytes are read and written at the same time, by this
//! process or another. We never create a `&[u8]` / `&mut [u8]` into the
//! mapping (that would promise the compiler the bytes cannot change), and:
//!
//! * [`Arena::copy_in`] / [`Arena::copy_out`] copy with
//!   `ptr::copy_nonoverlapping` between the caller's slice and a raw pointer
//!   into the mapping (plain `memcpy`). A relaxed-atomic word loop was tried
//!   and measured (mmc-bench --quick, own placement, 16 x 8 MiB): put 18.96
//!   -> 12.56 GB/s, get 19.39 -> 4.21 GB/s, which throws away the same-host
//!   path's reason to exist, so it was dropped. What keeps two copies of the
//!   same bytes from overlapping in time is the protocol, not this type: the
//!   space allocator hands a range to one writer, a read lease keeps it from
//!   reuse, and the epoch fence stops copies planned for an older
//!   incarnation. A peer that breaks the protocol (another process writing
//!   bytes it does not own) gets torn bytes, and a reader checks its lease
//!   and fence after the copy and discards them. Within this process, two
//!   racing copies of one range would be a data race in Rust's abstract
//!   machine, so each copy claims its range while it runs and a conflicting
//!   copy is refused with [`HalError::Busy`] instead (see `claims`): safe
//!   code cannot make two Rust copies of the same bytes overlap in time.
//! * [`Arena::fill_from`] / [`Arena::drain_to`] hand raw `iovec`s to
//!   `readv` / `sendmsg` / `writev`: the kernel copies, and no Rust code ever
//!   holds a reference to the bytes.
//!
//! Writes by another process or by the kernel happen outside Rust's abstract
//! machine; to this process they behave like writes of unknown bytes, which
//! the lease and fence checks after every copy make harmless.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use memmap2::{Advice, MmapOptions, MmapRaw};

use crate::error::HalError;

mod claims;
mod populate;
#[cfg(test)]
mod tests;
mod vectored;

pub use populate::{Populate, MAX_ACTIVE as MAX_POPULATE_THREADS};

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
/// out by [`crate::SpaceAllocator`]); a copy that overlaps one in flight in
/// this process is refused, and another process racing on the same bytes
/// leaves torn bytes inside the mapping, never an access outside of it
/// (see the module docs).
///
/// Dropping the arena unmaps the region and closes the fd; the memory itself
/// lives on while another process still maps it.
pub struct Arena {
    /// A background populate of the mapping ([`Arena::from_fd_populate`]). Declared first: it
    /// is cancelled and joined before the mapping goes.
    populator: Option<populate::Populator>,
    /// The mapping. Declared before the fd so it is unmapped before the fd closes.
    map: MmapRaw,
    /// The memfd backing the mapping.
    file: File,
    name: String,
    len: u64,
    page_kind: PageKind,
    /// Ranges Rust copies (copy_in / copy_out) are working on now.
    claims: claims::Claims,
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
            populator: None,
            map,
            file,
            name: name.to_owned(),
            len,
            page_kind,
            claims: claims::Claims::default(),
        };
        arena.log_created(bytes);
        Ok(arena)
    }

    /// Map an arena another process created and handed over (a memfd received with
    /// [`crate::fdpass::recv_with_fds`]). `len` must not exceed the file's size. The mapping's
    /// page tables start empty: the first touch of each page faults (see
    /// [`Arena::from_fd_populate`]).
    pub fn from_fd(name: &str, fd: std::os::fd::OwnedFd, len: u64) -> Result<Arena, HalError> {
        Self::from_fd_populate(name, fd, len, Populate::Off)
    }

    /// [`Arena::from_fd`], then populate the mapping's page tables on a background thread
    /// (`how`; see [`Populate`]): returns at once, copies may start while it runs, and dropping
    /// the arena cancels it. With `MADV_HUGEPAGE` advised too, so a pool the kernel backs with
    /// transparent huge pages (shmem THP enabled) is mapped 2 MiB at a time.
    pub fn from_fd_populate(
        name: &str,
        fd: std::os::fd::OwnedFd,
        len: u64,
        how: Populate,
    ) -> Result<Arena, HalError> {
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
        if how != Populate::Off && shmem_thp_possible() {
            // Harmless where the pool has no huge pages; lets a THP-backed pool map as PMDs.
            let _ = map.advise(Advice::HugePage);
        }
        let populator = populate::Populator::start(name, map.as_mut_ptr(), map.len(), how);
        Ok(Arena {
            populator,
            map,
            file,
            name: name.to_owned(),
            len,
            page_kind: PageKind::Normal,
            claims: claims::Claims::default(),
        })
    }

    /// True once a background populate ([`Arena::from_fd_populate`]) finished, or when none ran.
    pub fn populated(&self) -> bool {
        self.populator.as_ref().is_none_or(|p| p.finished())
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
            populator: None,
            map,
            file,
            name: name.to_owned(),
            len,
            page_kind: PageKind::Huge2M,
            claims: claims::Claims::default(),
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
    /// (RDMA memory region). Valid for as long as the arena lives. Whoever
    /// dereferences it must never form a reference into the mapping and must
    /// access it atomically or through the kernel (see the module docs).
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
    /// The range must be this caller's to write (see the module docs): the
    /// allocator, leases and the epoch fence keep other copies off it.
    ///
    /// # Errors
    ///
    /// [`HalError::OutOfBounds`] if `offset + src.len()` exceeds the arena
    /// (nothing is written then).
    pub fn copy_in(&self, offset: u64, src: &[u8]) -> Result<(), HalError> {
        let off = self.check(offset, src.len() as u64)?;
        let _claim = self.claims.claim(offset, src.len() as u64, true)?;
        // SAFETY: `check` proved `off + src.len() <= self.len`, the mapped
        // length, and the mapping stays mapped read/write while `&self` is
        // borrowed, so the destination is valid for `src.len()` bytes. `src`
        // is caller memory, never inside the mapping (the arena hands out no
        // references into it), so the ranges do not overlap. No reference into
        // the mapping is formed; exclusive use of the range is the protocol's
        // (module docs).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.map.as_mut_ptr().add(off), src.len())
        };
        Ok(())
    }

    /// Copies `dst.len()` bytes from the arena at `offset` into `dst`.
    ///
    /// If a peer breaks the protocol and writes the range meanwhile, `dst`
    /// holds torn bytes; readers check their lease and fence after the copy.
    ///
    /// # Errors
    ///
    /// [`HalError::OutOfBounds`] if `offset + dst.len()` exceeds the arena
    /// (`dst` is untouched then).
    pub fn copy_out(&self, offset: u64, dst: &mut [u8]) -> Result<(), HalError> {
        let off = self.check(offset, dst.len() as u64)?;
        let _claim = self.claims.claim(offset, dst.len() as u64, false)?;
        // SAFETY: as in `copy_in`: the source lies inside the live mapping
        // for `dst.len()` bytes, and `dst` is an exclusive borrow of caller
        // memory outside it, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }
}

/// A claimed range of an arena for a copy that no Rust code makes (a device runtime's DMA, see
/// [`Arena::claim_raw`]); the claim ends when it drops.
#[derive(Debug)]
pub struct RawRange<'a> {
    _claim: claims::ClaimGuard<'a>,
    addr: u64,
}

impl RawRange<'_> {
    /// Address of the range's first byte, for the device copy.
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

impl Arena {
    /// Claim `[offset, offset + len)` (`write`: the copy writes the arena) for a copy made
    /// outside Rust's abstract machine, by a device runtime: while the returned guard lives, no
    /// conflicting Rust copy of this process runs on the range (it is refused with
    /// [`HalError::Busy`], as between two Rust copies).
    ///
    /// # Errors
    ///
    /// [`HalError::OutOfBounds`] outside the arena; [`HalError::Busy`] on a conflicting copy.
    pub fn claim_raw(&self, offset: u64, len: u64, write: bool) -> Result<RawRange<'_>, HalError> {
        let off = self.check(offset, len)?;
        let claim = self.claims.claim(offset, len, write)?;
        Ok(RawRange {
            _claim: claim,
            addr: self.map.as_mut_ptr() as u64 + off as u64,
        })
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
