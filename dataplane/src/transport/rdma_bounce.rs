//! Bounce buffers for the RDMA backend (`rdma_caller_memory = bounce`): instead of registering
//! the caller's memory, each queue pair owns one registered staging buffer of [`STAGING_BYTES`];
//! a batch's bytes for one service are moved in rounds that fill it: a put copies the caller's
//! slices into it and WRITEs from it, a get READs into it and copies out into the caller's
//! slices. Nothing of the caller's is ever registered, so nothing needs invalidating when the
//! caller frees memory; every byte is copied once more on the host.

use std::sync::Arc;

use mmc_hal::rdma::safe::register_local;
use mmc_hal::rdma::{Device, Mr, RdmaError};

/// Bytes of one queue pair's staging buffer (the most one round moves).
pub(crate) const STAGING_BYTES: usize = 8 << 20;

/// A registered staging buffer (local access only), deregistered before it is freed.
pub(crate) struct Staging {
    buf: Vec<u8>,
    mr: Mr,
    dev: Arc<dyn Device>,
}

impl Staging {
    pub(crate) fn new(dev: Arc<dyn Device>, len: usize) -> Result<Staging, RdmaError> {
        let buf = vec![0u8; len];
        let mr = register_local(dev.as_ref(), buf.as_ptr() as u64, len as u64)?;
        Ok(Staging { buf, mr, dev })
    }

    pub(crate) fn addr(&self) -> u64 {
        self.buf.as_ptr() as u64
    }

    pub(crate) fn lkey(&self) -> u32 {
        self.mr.lkey
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = self.dev.dereg_mr(&self.mr) {
            tracing::warn!(error = %e, "deregistering a staging buffer failed");
        }
    }
}

/// A piece of one job moved in a round: `len` bytes at `job_off` of the job's bytes, staged at
/// `stage_off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seg {
    pub(crate) job: usize,
    pub(crate) job_off: u64,
    pub(crate) len: u64,
    pub(crate) stage_off: u64,
}

/// Cut jobs of `lens` bytes (in order; 0 = nothing to move) into rounds of at most `cap` staged
/// bytes each, packed back to back; a job larger than what is left of a round continues in the
/// next.
pub(crate) fn rounds(lens: &[u64], cap: u64) -> Vec<Vec<Seg>> {
    assert!(cap > 0);
    let mut out: Vec<Vec<Seg>> = Vec::new();
    let mut cur: Vec<Seg> = Vec::new();
    let mut used = 0u64;
    for (job, &len) in lens.iter().enumerate() {
        let mut off = 0;
        while off < len {
            if used == cap {
                out.push(std::mem::take(&mut cur));
                used = 0;
            }
            let n = (len - off).min(cap - used);
            cur.push(Seg {
                job,
                job_off: off,
                len: n,
                stage_off: used,
            });
            off += n;
            used += n;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Copy bytes `off .. off + out.len()` of the concatenation of `slices` into `out`.
pub(crate) fn gather(slices: &[&[u8]], mut off: u64, out: &mut [u8]) {
    let mut at = 0;
    for s in slices {
        if at == out.len() {
            return;
        }
        let l = s.len() as u64;
        if off >= l {
            off -= l;
            continue;
        }
        let n = (out.len() - at).min((l - off) as usize);
        out[at..at + n].copy_from_slice(&s[off as usize..off as usize + n]);
        at += n;
        off = 0;
    }
    assert_eq!(at, out.len(), "the slices hold the staged range");
}

/// Copy `src` into bytes `off .. off + src.len()` of the concatenation of `slices`.
pub(crate) fn scatter(slices: &mut [&mut [u8]], mut off: u64, src: &[u8]) {
    let mut at = 0;
    for s in slices.iter_mut() {
        if at == src.len() {
            return;
        }
        let l = s.len() as u64;
        if off >= l {
            off -= l;
            continue;
        }
        let n = (src.len() - at).min((l - off) as usize);
        s[off as usize..off as usize + n].copy_from_slice(&src[at..at + n]);
        at += n;
        off = 0;
    }
    assert_eq!(at, src.len(), "the slices hold the staged range");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_pack_jobs_back_to_back_and_split_the_big_ones() {
        assert!(rounds(&[], 10).is_empty());
        assert!(rounds(&[0, 0], 10).is_empty());
        let r = rounds(&[4, 0, 15, 3], 10);
        let s = |job, job_off, len, stage_off| Seg {
            job,
            job_off,
            len,
            stage_off,
        };
        assert_eq!(
            r,
            vec![
                vec![s(0, 0, 4, 0), s(2, 0, 6, 4)],
                vec![s(2, 6, 9, 0), s(3, 0, 1, 9)],
                vec![s(3, 1, 2, 0)],
            ]
        );
        // Every byte of every job once, no round over the cap.
        let lens = [1u64, 8 << 20, 7, (8 << 20) + 1, 0, 4096];
        let r = rounds(&lens, 8 << 20);
        for (j, &l) in lens.iter().enumerate() {
            let got: u64 = r
                .iter()
                .flatten()
                .filter(|s| s.job == j)
                .map(|s| s.len)
                .sum();
            assert_eq!(got, l);
        }
        assert!(r
            .iter()
            .all(|x| x.iter().map(|s| s.len).sum::<u64>() <= 8 << 20));
    }

    #[test]
    fn gather_and_scatter_cross_slice_boundaries() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5];
        let c = [6u8, 7, 8, 9];
        let src: Vec<&[u8]> = vec![&a, &b, &[], &c];
        let mut out = [0u8; 5];
        gather(&src, 2, &mut out);
        assert_eq!(out, [3, 4, 5, 6, 7]);
        let mut x = [0u8; 3];
        let mut y = [0u8; 2];
        let mut z = [0u8; 4];
        {
            let mut dst: Vec<&mut [u8]> = vec![&mut x, &mut y, &mut [], &mut z];
            scatter(&mut dst, 2, &out);
        }
        assert_eq!((x, y, z), ([0, 0, 3], [4, 5], [6, 7, 0, 0]));
    }
}
