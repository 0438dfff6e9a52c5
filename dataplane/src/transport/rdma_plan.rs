//! The RDMA backend's planning: a job's byte range cut at the service's MR boundaries into
//! transfers for the lowering, with the caller's registered slices (MR cache) or staging pieces
//! (bounce buffers) as the local side.

use mmc_controlplane::msg::RdmaHello;
use mmc_controlplane::{Error, Result};
use mmc_core::transport::{Job, Mem};
use mmc_hal::rdma::lower::{Piece, Xfer};

use super::mr_cache::CallMrs;

/// `len` bytes at `off` of transfer `t`'s segment, cut at the service's MR boundaries into
/// transfers, `pieces` (the local side, in order) shared out among them.
pub(super) fn remote_xfers(
    hello: &RdmaHello,
    t: &mmc_core::client::Transfer,
    off: u64,
    len: u64,
    pieces: Vec<Piece>,
) -> Result<Vec<Xfer>> {
    let mut out = Vec::new();
    let (mut off, end) = (off, off + len);
    let mut pi = pieces.into_iter().peekable();
    let mut carry: Option<Piece> = None;
    while off < end {
        let Some(mr) = hello.mrs.iter().find(|m| {
            m.segment == t.fence.segment && m.seg_offset <= off && off < m.seg_offset + m.len
        }) else {
            return Err(Error::Remote {
                code: mmc_controlplane::Code::LinkNotFound,
                context: format!(
                    "RDMA: segment {} offset {off} is in no MR of the service",
                    t.fence.segment
                ),
            });
        };
        let stop = end.min(mr.seg_offset + mr.len);
        let mut need = stop - off;
        let mut x = Xfer {
            rkey: mr.rkey,
            remote_addr: mr.addr + (off - mr.seg_offset),
            pieces: Vec::new(),
        };
        while need > 0 {
            let Some(p) = carry.take().or_else(|| pi.next()) else {
                break;
            };
            if p.len <= need {
                need -= p.len;
                x.pieces.push(p);
            } else {
                x.pieces.push(Piece { len: need, ..p });
                carry = Some(Piece {
                    addr: p.addr + need,
                    len: p.len - need,
                    lkey: p.lkey,
                });
                need = 0;
            }
        }
        out.push(x);
        off = stop;
    }
    Ok(out)
}

/// A job's transfers, one per service MR its range crosses, with the caller's slices
/// (registered through `call`) as the local pieces.
pub(super) fn caller_xfers(
    hello: &RdmaHello,
    job: &Job<'_>,
    call: &mut CallMrs<'_>,
) -> Result<Vec<Xfer>> {
    let slices: Vec<(u64, u64)> = match &job.mem {
        Mem::Src(s) => s
            .iter()
            .map(|s| (s.as_ptr() as u64, s.len() as u64))
            .collect(),
        Mem::Dst(d) => d
            .iter()
            .map(|d| (d.as_ptr() as u64, d.len() as u64))
            .collect(),
        Mem::DevSrc(_) | Mem::DevDst(_) => {
            unreachable!("device memory reaches RDMA staged through host buffers")
        }
    };
    let mut pieces: Vec<Piece> = Vec::with_capacity(slices.len());
    for &(a, n) in slices.iter().filter(|s| s.1 > 0) {
        let lkey = call
            .lkey(a, n)
            .map_err(|e| Error::Memory(format!("RDMA: registering caller memory: {e}")))?;
        pieces.push(Piece {
            addr: a,
            len: n,
            lkey,
        });
    }
    remote_xfers(hello, &job.t, job.t.offset, job.t.len, pieces)
}
