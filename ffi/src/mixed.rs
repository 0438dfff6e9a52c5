//! Batches whose buffers are host memory (`MEDIA_DRAM`) for some keys and device memory
//! (`MEDIA_HBM`) for others: each share goes to its own client call (host slices, or device spans
//! for the device backend) and the outcomes come back in key order.

use mmc_core::transport::DevSpan;
use mmc_dataplane::{Client, PutOptions, Result};

use crate::convert;

/// Device spans of pieces.
pub(crate) fn spans(pieces: &[(usize, usize)]) -> Vec<DevSpan> {
    pieces
        .iter()
        .map(|(a, l)| DevSpan {
            addr: *a as u64,
            len: *l as u64,
        })
        .collect()
}

/// One share of a mixed batch: its keys, their memory, and their places in the batch.
struct Share<'k, M> {
    keys: Vec<&'k str>,
    mem: Vec<M>,
    at: Vec<usize>,
}

impl<'k, M> Share<'k, M> {
    fn new() -> Self {
        Share {
            keys: Vec::new(),
            mem: Vec::new(),
            at: Vec::new(),
        }
    }
}

/// Split a batch into its host share (memory made by `host`) and its device share.
fn split<'k, H>(
    keys: &[&'k str],
    pieces: &[&Vec<(usize, usize)>],
    device: &[bool],
    mut host: impl FnMut(&[(usize, usize)]) -> H,
) -> (Share<'k, H>, Share<'k, Vec<DevSpan>>) {
    let (mut h, mut d) = (Share::new(), Share::new());
    for (i, k) in keys.iter().enumerate() {
        if device[i] {
            d.keys.push(*k);
            d.mem.push(spans(pieces[i]));
            d.at.push(i);
        } else {
            h.keys.push(*k);
            h.mem.push(host(pieces[i]));
            h.at.push(i);
        }
    }
    (h, d)
}

/// The outcomes of both shares, back in batch order.
fn merge<T>(n: usize, shares: [(Vec<usize>, Vec<Result<T>>); 2]) -> Vec<Result<T>> {
    let mut out: Vec<Option<Result<T>>> = (0..n).map(|_| None).collect();
    for (at, rs) in shares {
        for (i, r) in at.into_iter().zip(rs) {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|o| o.expect("every key went to one share"))
        .collect()
}

/// Put `keys` (with their pieces and whether those are device memory); one outcome per key.
///
/// # Safety
/// Host pieces are readable memory of their length until this returns.
pub(crate) unsafe fn put(
    c: &Client,
    keys: &[&str],
    pieces: &[&Vec<(usize, usize)>],
    device: &[bool],
    opts: &PutOptions,
) -> Result<Vec<Result<()>>> {
    // SAFETY: readable per this function's contract.
    let (h, d) = split(keys, pieces, device, |p| unsafe { convert::slices(p) });
    let mut done = Vec::new();
    if !h.keys.is_empty() {
        let views: Vec<&[&[u8]]> = h.mem.iter().map(|p| p.as_slice()).collect();
        done = c.batch_put_parts(&h.keys, &views, opts)?;
    }
    let mut dev_done = Vec::new();
    if !d.keys.is_empty() {
        let views: Vec<&[DevSpan]> = d.mem.iter().map(|p| p.as_slice()).collect();
        dev_done = c.batch_put_device(&d.keys, &views, opts)?;
    }
    Ok(merge(keys.len(), [(h.at, done), (d.at, dev_done)]))
}

/// Get `keys` into their pieces (host or device memory); one outcome (the size) per key.
///
/// # Safety
/// Host pieces are writable memory of their length, disjoint, until this returns.
pub(crate) unsafe fn get(
    c: &Client,
    keys: &[&str],
    pieces: &[&Vec<(usize, usize)>],
    device: &[bool],
) -> Result<Vec<Result<u64>>> {
    // SAFETY: writable and disjoint per this function's contract.
    let (mut h, d) = split(keys, pieces, device, |p| unsafe { convert::slices_mut(p) });
    let mut done = Vec::new();
    if !h.keys.is_empty() {
        let mut views: Vec<&mut [&mut [u8]]> = h.mem.iter_mut().map(|p| p.as_mut_slice()).collect();
        done = c.batch_get_into_parts(&h.keys, &mut views)?;
    }
    let mut dev_done = Vec::new();
    if !d.keys.is_empty() {
        let views: Vec<&[DevSpan]> = d.mem.iter().map(|p| p.as_slice()).collect();
        dev_done = c.batch_get_device(&d.keys, &views)?;
    }
    Ok(merge(keys.len(), [(h.at, done), (d.at, dev_done)]))
}
