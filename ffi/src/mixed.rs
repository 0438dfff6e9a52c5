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
    let mut out: Vec<Option<Result<()>>> = (0..keys.len()).map(|_| None).collect();
    let (mut hk, mut hp, mut hi) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dk, mut dp, mut di) = (Vec::new(), Vec::new(), Vec::new());
    for (i, k) in keys.iter().enumerate() {
        if device[i] {
            dk.push(*k);
            dp.push(spans(pieces[i]));
            di.push(i);
        } else {
            hk.push(*k);
            // SAFETY: readable per this function's contract.
            hp.push(unsafe { convert::slices(pieces[i]) });
            hi.push(i);
        }
    }
    if !hk.is_empty() {
        let views: Vec<&[&[u8]]> = hp.iter().map(|p| p.as_slice()).collect();
        for (i, r) in hi.into_iter().zip(c.batch_put_parts(&hk, &views, opts)?) {
            out[i] = Some(r);
        }
    }
    if !dk.is_empty() {
        let views: Vec<&[DevSpan]> = dp.iter().map(|p| p.as_slice()).collect();
        for (i, r) in di.into_iter().zip(c.batch_put_device(&dk, &views, opts)?) {
            out[i] = Some(r);
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every key went to one share"))
        .collect())
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
    let mut out: Vec<Option<Result<u64>>> = (0..keys.len()).map(|_| None).collect();
    let (mut hk, mut hp, mut hi) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dk, mut dp, mut di) = (Vec::new(), Vec::new(), Vec::new());
    for (i, k) in keys.iter().enumerate() {
        if device[i] {
            dk.push(*k);
            dp.push(spans(pieces[i]));
            di.push(i);
        } else {
            hk.push(*k);
            // SAFETY: writable and disjoint per this function's contract.
            hp.push(unsafe { convert::slices_mut(pieces[i]) });
            hi.push(i);
        }
    }
    if !hk.is_empty() {
        let mut views: Vec<&mut [&mut [u8]]> = hp.iter_mut().map(|p| p.as_mut_slice()).collect();
        for (i, r) in hi.into_iter().zip(c.batch_get_into_parts(&hk, &mut views)?) {
            out[i] = Some(r);
        }
    }
    if !dk.is_empty() {
        let views: Vec<&[DevSpan]> = dp.iter().map(|p| p.as_slice()).collect();
        for (i, r) in di.into_iter().zip(c.batch_get_device(&dk, &views)?) {
            out[i] = Some(r);
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every key went to one share"))
        .collect())
}
