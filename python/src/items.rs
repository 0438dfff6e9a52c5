//! One key's input to a batch call (its key and caller memory), and the put/get loops over them.

use mmc_controlplane::msg::BATCH_KEYS_MAX;
use mmc_dataplane::{Client, PutOptions};
use pyo3::prelude::*;

use crate::buffers::{any_overlap, key_arg, region, seq, BufGuard, Region};
use crate::codes::{self, EXISTS, INVALID, OK};
use tracing::warn;

/// One key's input: its key and its pieces of caller memory.
pub(crate) struct Item {
    pub(crate) key: String,
    pub(crate) parts: Vec<Region>,
}

/// The per-key code of a list of prepared items: 0 for those ready to go, else their error.
pub(crate) fn initial_codes(items: &[Result<Item, i32>]) -> Vec<i32> {
    items
        .iter()
        .map(|i| i.as_ref().err().copied().unwrap_or(OK))
        .collect()
}

pub(crate) fn ready(items: Vec<Result<Item, i32>>) -> Vec<(usize, Item)> {
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.ok().map(|it| (i, it)))
        .collect()
}

/// Put every ready item in one batch, with the GIL released; one code per item. A key that
/// already exists is 0 here (the Python layer's convention, as the original's: a key names one
/// KV block, so a second put of it is a no-op; the stored value is unchanged). The C API keeps
/// -3006.
pub(crate) fn put_items(
    py: Python<'_>,
    client: &Client,
    items: Vec<Result<Item, i32>>,
    opts: &PutOptions,
) -> Vec<i32> {
    let mut out = initial_codes(&items);
    let todo = ready(items);
    if todo.is_empty() {
        return out;
    }
    let results = py.detach(|| {
        let keys: Vec<&str> = todo.iter().map(|(_, it)| it.key.as_str()).collect();
        let parts: Vec<Vec<&[u8]>> = todo
            .iter()
            .map(|(_, it)| {
                it.parts
                    .iter()
                    // SAFETY: each region is a non-null, non-empty, non-wrapping range (checked
                    // by `buffers::region`) that the caller vouches for: an int pointer the
                    // caller promises is valid for `size` bytes for the duration of the call, or
                    // a buffer-protocol export held alive by a `BufGuard` in the calling frame
                    // until this closure has returned. The slices do not outlive the closure.
                    .map(|r| unsafe { r.as_slice() })
                    .collect()
            })
            .collect();
        let views: Vec<&[&[u8]]> = parts.iter().map(Vec::as_slice).collect();
        client.batch_put_parts(&keys, &views, opts)
    });
    fill_codes(&mut out, &todo, results, true);
    out
}

/// Get every ready item into its pieces in one batch, with the GIL released; one code per item
/// (0 on success). Destination ranges that overlap within the call are refused (-3000).
pub(crate) fn get_items(
    py: Python<'_>,
    client: &Client,
    items: Vec<Result<Item, i32>>,
) -> Vec<i32> {
    let mut out = initial_codes(&items);
    let todo = ready(items);
    if todo.is_empty() {
        return out;
    }
    let mut all: Vec<Region> = todo
        .iter()
        .flat_map(|(_, it)| it.parts.iter().copied())
        .collect();
    if any_overlap(&mut all) {
        warn!(
            keys = todo.len(),
            "get refused: destination buffers of one call overlap"
        );
        for (i, _) in &todo {
            out[*i] = INVALID;
        }
        return out;
    }
    let results = py.detach(|| {
        let keys: Vec<&str> = todo.iter().map(|(_, it)| it.key.as_str()).collect();
        let mut parts: Vec<Vec<&mut [u8]>> = todo
            .iter()
            .map(|(_, it)| {
                it.parts
                    .iter()
                    // SAFETY: each region is a non-null, non-empty, non-wrapping range (checked
                    // by `buffers::region`) that the caller vouches for as writable for the
                    // duration of the call (an int pointer), or a writable buffer-protocol export
                    // held alive by a `BufGuard` in the calling frame until this closure has
                    // returned. No two regions of this call overlap (checked just above), so the
                    // `&mut` slices are disjoint, and they do not outlive the closure.
                    .map(|r| unsafe { r.as_mut_slice() })
                    .collect()
            })
            .collect();
        let mut views: Vec<&mut [&mut [u8]]> = parts.iter_mut().map(Vec::as_mut_slice).collect();
        client.batch_get_into_parts(&keys, &mut views)
    });
    fill_codes(&mut out, &todo, results, false);
    out
}

/// Each ready item's code from its outcome (`put`: a key that exists is 0, the Python layer's
/// convention), or the whole call's error for all of them.
pub(crate) fn fill_codes<T>(
    out: &mut [i32],
    todo: &[(usize, Item)],
    results: Result<Vec<Result<T, codes::Error>>, codes::Error>,
    put: bool,
) {
    match results {
        Ok(rs) => {
            for ((i, _), r) in todo.iter().zip(rs) {
                out[*i] = match codes::of_result(&r) {
                    EXISTS if put => OK,
                    c => c,
                };
            }
        }
        Err(e) => {
            let c = codes::of(&e);
            for (i, _) in todo {
                out[*i] = c;
            }
        }
    }
}

/// One key with one pointer/size pair.
pub(crate) fn one_item<'py>(
    key: &Bound<'py, PyAny>,
    ptr: &Bound<'py, PyAny>,
    size: Option<&Bound<'py, PyAny>>,
    writable: bool,
    guards: &mut Vec<BufGuard<'py>>,
) -> Result<Item, i32> {
    let key = key_arg(key)?;
    let r = region(ptr, size, writable, guards)?;
    Ok(Item {
        key,
        parts: vec![r],
    })
}

/// The sizes of a pointer list: a list of the same length, or `None` (every piece is a buffer
/// object taken whole).
fn sizes_for<'py>(
    sizes: Option<&Bound<'py, PyAny>>,
    n: usize,
) -> Result<Vec<Option<Bound<'py, PyAny>>>, i32> {
    match sizes.filter(|s| !s.is_none()) {
        None => Ok(vec![None; n]),
        Some(s) => {
            let v = seq(s)?;
            if v.len() != n {
                warn!(
                    pointers = n,
                    sizes = v.len(),
                    "pointer and size lists differ in length"
                );
                return Err(INVALID);
            }
            Ok(v.into_iter().map(Some).collect())
        }
    }
}

/// One key with a list of pointer/size pairs (layers).
pub(crate) fn layers_item<'py>(
    key: &Bound<'py, PyAny>,
    ptrs: &Bound<'py, PyAny>,
    sizes: Option<&Bound<'py, PyAny>>,
    writable: bool,
    guards: &mut Vec<BufGuard<'py>>,
) -> Result<Item, i32> {
    let key = key_arg(key)?;
    let ptrs = seq(ptrs)?;
    if ptrs.is_empty() {
        warn!(key, "layered call with no layers");
        return Err(INVALID);
    }
    let sizes = sizes_for(sizes, ptrs.len())?;
    let parts = ptrs
        .iter()
        .zip(&sizes)
        .map(|(p, s)| region(p, s.as_ref(), writable, guards))
        .collect::<Result<Vec<_>, i32>>()?;
    Ok(Item { key, parts })
}

/// The keys of a batch call; `Err` when `keys` is not a list at all, or has more than
/// [`BATCH_KEYS_MAX`] keys (the call then returns one `[-3000]`).
pub(crate) fn batch_keys<'py>(keys: &Bound<'py, PyAny>) -> Result<Vec<Bound<'py, PyAny>>, i32> {
    let v = seq(keys).inspect_err(|_| warn!("batch call: keys must be a list of str"))?;
    if v.len() > BATCH_KEYS_MAX {
        warn!(
            keys = v.len(),
            max = BATCH_KEYS_MAX,
            "batch call: too many keys"
        );
        return Err(INVALID);
    }
    Ok(v)
}

/// The list a batch call returns when it fails as a whole: one `code` per key (one element when
/// `keys` is not even a list).
pub(crate) fn all(keys: &Bound<'_, PyAny>, code: i32) -> Vec<i32> {
    let n = seq(keys).map(|k| k.len()).unwrap_or(1);
    vec![code; n]
}

/// A per-key list argument of a batch call: a list with one element per key.
pub(crate) fn per_key<'py>(
    obj: Option<&Bound<'py, PyAny>>,
    n: usize,
    what: &str,
) -> Result<Vec<Option<Bound<'py, PyAny>>>, i32> {
    match obj.filter(|o| !o.is_none()) {
        None if what == "sizes" => Ok(vec![None; n]),
        None => Err(INVALID),
        Some(o) => {
            let v = seq(o)?;
            if v.len() != n {
                warn!(
                    keys = n,
                    what,
                    len = v.len(),
                    "batch call: list lengths differ"
                );
                return Err(INVALID);
            }
            Ok(v.into_iter().map(Some).collect())
        }
    }
}
