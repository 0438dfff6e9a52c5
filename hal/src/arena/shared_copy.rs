//! Copies between private memory and a mapping other threads and processes
//! may access at the same time: every access to the mapping is a relaxed
//! atomic load or store of one aligned `u64` word, so racing copies are
//! atomic accesses of a single size (no data race, no mixed-size race), and
//! no reference into the mapping is ever created.
//!
//! A partially covered word at either end is read whole, or written by a
//! compare-exchange that keeps the bytes outside the range as they are, so a
//! neighbour's concurrent write is never undone.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const WORD: usize = std::mem::size_of::<u64>();

/// The aligned word containing `p` and the byte index of `p` in it.
fn word_of(p: *const u8) -> (*mut u64, usize) {
    let lead = p as usize % WORD;
    (p.wrapping_sub(lead) as *mut u64, lead)
}

/// Copy `src` to `dst`.
///
/// # Safety
///
/// Every aligned `u64` word overlapping `[dst, dst + src.len())` must be valid
/// for reads and writes for the whole call, and be accessed by everyone in
/// this process only through aligned `u64` atomics (or by the kernel).
/// `src` must not point into such memory.
pub(super) unsafe fn copy_to_shared(src: &[u8], dst: *mut u8) {
    let (head, middle, tail) = split(dst, src.len());
    let store_part = |at: usize, part: &[u8]| {
        let (word, lead) = word_of(dst.wrapping_add(at));
        // SAFETY: the caller guarantees the word is valid and only accessed
        // atomically; `word_of` aligned it to 8 bytes.
        let atomic = unsafe { AtomicU64::from_ptr(word) };
        let update = |old: u64| {
            let mut bytes = old.to_ne_bytes();
            bytes[lead..lead + part.len()].copy_from_slice(part);
            Some(u64::from_ne_bytes(bytes))
        };
        let _ = atomic.fetch_update(Relaxed, Relaxed, update);
    };
    if head > 0 {
        store_part(0, &src[..head]);
    }
    let words = dst.wrapping_add(head) as *mut u64;
    for (k, chunk) in src[head..head + middle].chunks_exact(WORD).enumerate() {
        // SAFETY: `split` made `dst + head` 8-aligned; the word is in range,
        // valid and only accessed atomically (caller's contract).
        let atomic = unsafe { AtomicU64::from_ptr(words.wrapping_add(k)) };
        let bytes: [u8; WORD] = chunk.try_into().expect("chunks_exact");
        atomic.store(u64::from_ne_bytes(bytes), Relaxed);
    }
    if tail > 0 {
        store_part(head + middle, &src[head + middle..]);
    }
}

/// Copy `dst.len()` bytes from `src` into `dst`.
///
/// # Safety
///
/// Every aligned `u64` word overlapping `[src, src + dst.len())` must be valid
/// for reads for the whole call, and be written by everyone in this process
/// only through aligned `u64` atomics (or by the kernel).
pub(super) unsafe fn copy_from_shared(src: *const u8, dst: &mut [u8]) {
    let (head, middle, tail) = split(src, dst.len());
    let load_part = |at: usize, part: &mut [u8]| {
        let (word, lead) = word_of(src.wrapping_add(at));
        // SAFETY: the caller guarantees the word is valid and only written
        // atomically; `word_of` aligned it to 8 bytes. Only loads happen.
        let bytes = unsafe { AtomicU64::from_ptr(word) }
            .load(Relaxed)
            .to_ne_bytes();
        part.copy_from_slice(&bytes[lead..lead + part.len()]);
    };
    let len = dst.len();
    if head > 0 {
        load_part(0, &mut dst[..head]);
    }
    let words = src.wrapping_add(head) as *mut u64;
    for (k, chunk) in dst[head..head + middle].chunks_exact_mut(WORD).enumerate() {
        // SAFETY: `split` made `src + head` 8-aligned; the word is in range,
        // valid and only written atomically (caller's contract).
        let atomic = unsafe { AtomicU64::from_ptr(words.wrapping_add(k)) };
        chunk.copy_from_slice(&atomic.load(Relaxed).to_ne_bytes());
    }
    if tail > 0 {
        load_part(head + middle, &mut dst[head + middle..len]);
    }
}

/// Split `len` bytes at `p` into a head up to the first word boundary, whole
/// words, and a tail; a range inside one word is all head.
fn split(p: *const u8, len: usize) -> (usize, usize, usize) {
    let to_boundary = (WORD - p as usize % WORD) % WORD;
    let head = to_boundary.min(len);
    let middle = (len - head) / WORD * WORD;
    let tail = len - head - middle;
    debug_assert!(head < WORD && tail < WORD && head + middle + tail == len);
    (head, middle, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (offset, length) inside a small aligned buffer: the edge words
    /// keep their neighbours' bytes, and a copy back returns what went in.
    #[test]
    fn unaligned_edges_keep_neighbours() {
        for off in 0..24 {
            for len in 0..40 {
                let words: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(!0)).collect();
                let base = words.as_ptr() as *mut u8;
                let src: Vec<u8> = (0..len as u8).collect();
                // SAFETY: 64 bytes of words, only accessed atomically here.
                unsafe { copy_to_shared(&src, base.wrapping_add(off)) };
                let mut all = [0u8; 64];
                // SAFETY: as above.
                unsafe { copy_from_shared(base, &mut all) };
                assert_eq!(&all[off..off + len], &src[..], "off {off} len {len}");
                assert!(all[..off].iter().all(|&b| b == 0xff));
                assert!(all[off + len..].iter().all(|&b| b == 0xff));
            }
        }
    }
}
