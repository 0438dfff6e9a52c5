//! Host buffers named by `register_buffer`, and the classification `SMEMB_COPY_AUTO` makes of the
//! caller's buffers.
//!
//! There is no device backend yet, so `AUTO` knows one kind of memory: host memory. A buffer is
//! host memory when it lies inside a buffer the caller registered, or inside memory mapped into
//! this process with the permissions the copy needs (readable for puts, readable and writable for
//! gets), as `/proc/self/maps` lists it. Anything else cannot be classified and is refused.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tracing::warn;

use crate::buffers::Region;
use crate::codes::{INVALID, OK};
use crate::items::Item;

/// The buffers registered with one store: start address -> length.
#[derive(Default)]
pub(crate) struct Registry(Mutex<BTreeMap<usize, usize>>);

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, usize>> {
        self.0
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
    }

    /// Remember `[addr, addr + len)` (a second registration of the same start replaces the first).
    /// 0, or -3000 for a null pointer, a zero size or a range that wraps.
    pub(crate) fn register(&self, addr: usize, len: usize) -> i32 {
        if addr == 0 || len == 0 || len > isize::MAX as usize || addr.checked_add(len).is_none() {
            warn!(
                addr,
                len, "register_buffer: null pointer, zero size or a range that wraps"
            );
            return INVALID;
        }
        self.map().insert(addr, len);
        OK
    }

    /// Forget a registration made with exactly this pointer and size: 0, else -3000.
    pub(crate) fn unregister(&self, addr: usize, len: usize) -> i32 {
        let mut m = self.map();
        if m.get(&addr) == Some(&len) {
            m.remove(&addr);
            OK
        } else {
            warn!(addr, len, "unregister_buffer: no such registered buffer");
            INVALID
        }
    }

    pub(crate) fn clear(&self) {
        self.map().clear();
    }

    /// Whether one registered buffer holds all of `r`.
    fn covers(&self, r: Region) -> bool {
        let m = self.map();
        m.range(..=r.addr)
            .next_back()
            .is_some_and(|(a, l)| r.addr + r.len <= a + l)
    }
}

/// The address ranges mapped into this process with read (and, if asked, write) permission,
/// sorted, adjacent ranges merged. Empty if `/proc/self/maps` cannot be read.
fn mapped(writable: bool) -> Vec<(usize, usize)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let mut out: Vec<(usize, usize)> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let p = perms.as_bytes();
        if p.first() != Some(&b'r') || (writable && p.get(1) != Some(&b'w')) {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => out.push((a, b)),
        }
    }
    out.sort_unstable();
    out
}

fn in_mapped(maps: &[(usize, usize)], r: Region) -> bool {
    let i = maps.partition_point(|(a, _)| *a <= r.addr);
    i > 0 && r.addr + r.len <= maps[i - 1].1
}

/// `SMEMB_COPY_AUTO`: keep the items whose every piece is host memory; the others become -3000.
pub(crate) fn classify(
    items: Vec<Result<Item, i32>>,
    registry: &Registry,
    writable: bool,
) -> Vec<Result<Item, i32>> {
    let mut maps: Option<Vec<(usize, usize)>> = None;
    items
        .into_iter()
        .map(|item| {
            let item = item?;
            let host = item.parts.iter().all(|r| {
                registry.covers(*r) || in_mapped(maps.get_or_insert_with(|| mapped(writable)), *r)
            });
            if host {
                Ok(item)
            } else {
                warn!(
                    key = item.key,
                    "SMEMB_COPY_AUTO: a buffer is neither registered nor host memory of this \
                     process, and this build has no device backend to classify it"
                );
                Err(INVALID)
            }
        })
        .collect()
}
