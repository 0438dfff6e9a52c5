//! What every fuzz target shares: a global allocator that aborts on an allocation no bounded input
//! can justify, a resolver that never leaves the machine, and a reader that hands a byte stream
//! over in pieces the input chooses, with timeouts, as a socket does.
//!
//! Each target starts with [`harness!`], which installs the first two in the target's binary.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};

use mmc_controlplane::wire::{self, WireError};
use rkyv::util::AlignedVec;

/// No single allocation may exceed this. Inputs are a few KiB (libFuzzer's `-max_len`: 4096 bytes
/// or the largest seed, unless given), so memory that follows the bytes received stays far below
/// it, and a buffer sized from a length field (a frame header may claim 64 MiB) crosses it.
pub const ALLOC_MAX: usize = 32 << 20;
/// Nor may all live allocations together.
pub const LIVE_MAX: usize = 256 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// [`System`], but aborting (a crash that libFuzzer records with its input) on an allocation
/// larger than [`ALLOC_MAX`] or one that takes the live total past [`LIVE_MAX`].
pub struct CappedAlloc;

impl CappedAlloc {
    fn admit(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        if size > ALLOC_MAX || live > LIVE_MAX {
            // Stderr is unbuffered and writing to it does not allocate.
            let _ = io::Write::write_all(&mut io::stderr(), abort_message(size).as_bytes());
            std::process::abort();
        }
    }

    fn release(size: usize) {
        LIVE.fetch_sub(size, Ordering::Relaxed);
    }
}

/// The abort message (static: nothing may be allocated on the way out).
fn abort_message(size: usize) -> &'static str {
    if size > ALLOC_MAX {
        "mmc-fuzz: one allocation larger than ALLOC_MAX (32 MiB): memory follows a length field, not the input\n"
    } else {
        "mmc-fuzz: live allocations past LIVE_MAX (256 MiB)\n"
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping around it touches only an atomic counter.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            Self::release(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::admit(layout.size());
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            Self::release(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        Self::release(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::admit(new_size);
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller upholds the rest.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            Self::release(new_size);
        } else {
            Self::release(layout.size());
        }
        p
    }
}

/// `getaddrinfo` that resolves numeric addresses (and `localhost`, as 127.0.0.1) only: config
/// values may name hosts, and a fuzzer must neither send a DNS query per input nor wait on one.
/// Installed by [`harness!`] as the binary's own `getaddrinfo`, which the standard library's
/// lookups then call instead of libc's.
///
/// # Safety
/// The contract of POSIX `getaddrinfo`.
pub unsafe fn numeric_getaddrinfo(
    node: *const libc::c_char,
    service: *const libc::c_char,
    hints: *const libc::addrinfo,
    res: *mut *mut libc::addrinfo,
) -> libc::c_int {
    type Real = unsafe extern "C" fn(
        *const libc::c_char,
        *const libc::c_char,
        *const libc::addrinfo,
        *mut *mut libc::addrinfo,
    ) -> libc::c_int;
    // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's definition, the one this
    // binary's own `getaddrinfo` hides.
    let real = unsafe { libc::dlsym(libc::RTLD_NEXT, c"getaddrinfo".as_ptr()) };
    if real.is_null() {
        return libc::EAI_FAIL;
    }
    // SAFETY: libc's `getaddrinfo` has exactly the signature `Real`.
    let real: Real = unsafe { std::mem::transmute::<*mut libc::c_void, Real>(real) };
    let mut h: libc::addrinfo = if hints.is_null() {
        // SAFETY: addrinfo is plain data; all zeros (null pointers, no flags) means "no hints".
        unsafe { std::mem::zeroed() }
    } else {
        // SAFETY: a non-null `hints` points to a valid addrinfo (the caller's contract).
        unsafe { std::ptr::read(hints) }
    };
    h.ai_flags |= libc::AI_NUMERICHOST;
    // SAFETY: `node` is null or a NUL-terminated string (the caller's contract).
    let is_localhost =
        !node.is_null() && unsafe { std::ffi::CStr::from_ptr(node) }.to_bytes() == b"localhost";
    let node = if is_localhost {
        c"127.0.0.1".as_ptr()
    } else {
        node
    };
    // SAFETY: the caller's arguments, with hints that point to a live local.
    unsafe { real(node, service, &h, res) }
}

/// Installs [`CappedAlloc`] as the global allocator and [`numeric_getaddrinfo`] as the binary's
/// `getaddrinfo`. Call once at the top level of each fuzz target.
#[macro_export]
macro_rules! harness {
    () => {
        #[global_allocator]
        static ALLOC: $crate::CappedAlloc = $crate::CappedAlloc;

        /// # Safety
        /// The contract of POSIX `getaddrinfo`.
        #[no_mangle]
        pub unsafe extern "C" fn getaddrinfo(
            node: *const ::libc::c_char,
            service: *const ::libc::c_char,
            hints: *const ::libc::addrinfo,
            res: *mut *mut ::libc::addrinfo,
        ) -> ::libc::c_int {
            // SAFETY: the same contract, forwarded.
            unsafe { $crate::numeric_getaddrinfo(node, service, hints, res) }
        }
    };
}

/// A byte stream read the way a socket hands it over: in pieces of at most `chunk` bytes, and,
/// every `stall_every` reads, one read that fails with `WouldBlock` (a read timeout). The
/// pattern comes from one control byte, so the fuzzer explores it along with the bytes.
pub struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    chunk: usize,
    stall_every: u32,
    reads: u32,
}

impl<'a> Trickle<'a> {
    /// Control byte: bits 0-2 choose the largest piece (0 = everything at once, n = 2^(n-1)
    /// bytes); bits 4-7 a timeout after every that many reads (0 = never).
    pub fn new(control: u8, data: &'a [u8]) -> Self {
        let bits = control & 0x7;
        Trickle {
            data,
            pos: 0,
            chunk: if bits == 0 {
                usize::MAX
            } else {
                1 << (bits - 1)
            },
            stall_every: u32::from(control >> 4),
            reads: 0,
        }
    }

    /// Bytes handed over so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Bytes not handed over yet.
    pub fn remaining(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        // A timeout after every `stall_every` reads, never twice in a row: a caller that retries
        // after a timeout always makes progress.
        if self.stall_every != 0 && self.reads.is_multiple_of(self.stall_every + 1) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A message the wire can carry: what [`wire::encode_payload`] takes.
pub trait Encode {
    fn encode(&self, out: &mut AlignedVec) -> Result<(), WireError>;
}

impl<T> Encode for T
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    fn encode(&self, out: &mut AlignedVec) -> Result<(), WireError> {
        wire::encode_payload(self, out)
    }
}

/// A message that decoded must encode, decode back to itself, and encode to the same bytes again.
pub fn assert_round_trip<T>(msg: &T)
where
    T: rkyv::Archive + PartialEq + std::fmt::Debug + Encode,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
        + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
{
    let mut bytes = AlignedVec::new();
    msg.encode(&mut bytes)
        .expect("a message that decoded encodes");
    let back: T = wire::decode_payload(&bytes).expect("an encoded message decodes");
    assert_eq!(&back, msg, "the round trip changed the message");
    let mut again = AlignedVec::new();
    back.encode(&mut again).expect("encodes again");
    assert_eq!(
        bytes.as_slice(),
        again.as_slice(),
        "encoding is not deterministic"
    );
}
