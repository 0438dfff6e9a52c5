//! RDMA rows comparing the two ways caller memory reaches the NIC (`rdma_caller_memory`), at the
//! verbs layer over the simulated NIC (a loopback queue pair; the "wire" is a memcpy, so these
//! are software costs):
//!
//! - `mr-cache hit`: the caller's buffers were registered once (`register_buffer`): lower, post,
//!   execute, poll, straight from and into them;
//! - `mr-cache miss`: unregistered memory, registered and deregistered around the transfer (what
//!   the MR cache does for memory the application never registered);
//! - `bounce`: a registered 8 MiB staging buffer: a put copies into it and WRITEs from it, a get
//!   READs into it and copies out, in rounds of 8 MiB (what `rdma_caller_memory = bounce` does).
//!
//! Shapes: one 4 KiB object, and 16 x 8 MiB (the batch-8m shape).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mmc_hal::rdma::lower::{lower, Limits, Piece, Way, Xfer};
use mmc_hal::rdma::safe::{execute, register_local, LocalMem, Registered};
use mmc_hal::rdma::sim::SimDevice;
use mmc_hal::rdma::{access, Device, Mr, RdmaError};
use mmc_hal::Arena;

use crate::rdma::RDMA_SIM;
use crate::report::{Row, MMC};

/// The transport's staging buffer size (`dataplane/src/transport/rdma_bounce.rs`).
const STAGING: usize = 8 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Hit,
    Miss,
    Bounce,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Hit => "mr-cache hit",
            Mode::Miss => "mr-cache miss",
            Mode::Bounce => "bounce",
        }
    }
}

struct Bench {
    dev: Arc<dyn Device>,
    qp: Box<dyn mmc_hal::rdma::QueuePair>,
    limits: Limits,
    remote: Mr,
    staging: Vec<u8>,
    staging_mr: Mr,
}

impl Bench {
    /// One call: move `bufs` (each `len` bytes, put: from them, get: into them) to or from the
    /// remote MR.
    fn call(
        &mut self,
        mode: Mode,
        way: Way,
        bufs: &mut [Vec<u8>],
        kept: &[Mr],
    ) -> Result<(), RdmaError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let busy = Duration::from_secs(10);
        match mode {
            Mode::Hit | Mode::Miss => {
                let mrs: Vec<Mr> = match mode {
                    Mode::Hit => kept.to_vec(),
                    _ => bufs
                        .iter()
                        .map(|b| {
                            register_local(self.dev.as_ref(), b.as_ptr() as u64, b.len() as u64)
                        })
                        .collect::<Result<_, _>>()?,
                };
                let xfers: Vec<Xfer> = bufs
                    .iter()
                    .zip(&mrs)
                    .map(|(b, m)| self.xfer(b.as_ptr() as u64, b.len() as u64, m.lkey))
                    .collect();
                let lw = lower(way, &xfers, self.limits);
                let mut mem = LocalMem::new();
                for b in bufs.iter_mut() {
                    match way {
                        Way::Put => mem.src(b),
                        Way::Get => mem.dst(b),
                    }
                }
                let x = execute(self.qp.as_mut(), &lw.chains, &mem, deadline, busy)?;
                drop(mem);
                if mode == Mode::Miss {
                    for m in &mrs {
                        self.dev.dereg_mr(m)?;
                    }
                }
                check(&x)
            }
            Mode::Bounce => {
                // Rounds of at most STAGING bytes, the buffers packed back to back.
                let base = self.staging.as_ptr() as u64;
                let lkey = self.staging_mr.lkey;
                for b in bufs.iter_mut() {
                    for off in (0..b.len()).step_by(STAGING) {
                        let n = (b.len() - off).min(STAGING);
                        if way == Way::Put {
                            self.staging[..n].copy_from_slice(&b[off..off + n]);
                        }
                        let xfers = [self.xfer(base, n as u64, lkey)];
                        let lw = lower(way, &xfers, self.limits);
                        let mut mem = LocalMem::new();
                        match way {
                            Way::Put => mem.src(&self.staging[..n]),
                            Way::Get => mem.dst(&mut self.staging[..n]),
                        }
                        let x = execute(self.qp.as_mut(), &lw.chains, &mem, deadline, busy)?;
                        drop(mem);
                        check(&x)?;
                        if way == Way::Get {
                            b[off..off + n].copy_from_slice(&self.staging[..n]);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn xfer(&self, addr: u64, len: u64, lkey: u32) -> Xfer {
        Xfer {
            rkey: self.remote.rkey,
            remote_addr: self.remote.addr,
            pieces: vec![Piece { addr, len, lkey }],
        }
    }
}

fn check(x: &mmc_hal::rdma::safe::Executed) -> Result<(), RdmaError> {
    if x.error.is_some() || x.timed_out {
        return Err(RdmaError::Call {
            call: "execute",
            reason: format!("{x:?}"),
        });
    }
    Ok(())
}

/// The caller-memory rows: per mode, shape and direction.
pub fn rows(quick: bool) -> Result<Vec<Row>, String> {
    let e = |e: RdmaError| e.to_string();
    let dev = SimDevice::open("bench");
    let d: Arc<dyn Device> = dev.clone();
    let target =
        Arc::new(Arena::new("mmc-bench-rdma-caller", 8 << 20, true).map_err(|e| e.to_string())?);
    let reg = Registered::new(
        d.clone(),
        target,
        access::LOCAL_WRITE | access::REMOTE_READ | access::REMOTE_WRITE,
    )
    .map_err(e)?;
    let staging = vec![0u8; STAGING];
    let staging_mr =
        register_local(d.as_ref(), staging.as_ptr() as u64, STAGING as u64).map_err(e)?;
    let mut qp = d.create_qp(256).map_err(e)?;
    let ep = qp.endpoint();
    qp.connect(&ep).map_err(e)?;
    let mut b = Bench {
        limits: Limits {
            max_sge: dev.attr().max_sge,
            max_msg_sz: dev.attr().max_msg_sz,
            sq_depth: 254,
            signal_every: 16,
            max_inline: 0,
        },
        dev: d.clone(),
        qp,
        remote: reg.mrs()[0],
        staging,
        staging_mr,
    };
    let mut rows = Vec::new();
    let shapes: [(&str, usize, usize, usize); 2] = [
        ("1 x 4 KiB", 1, 4 << 10, if quick { 200 } else { 2000 }),
        ("16 x 8 MiB", 16, 8 << 20, if quick { 2 } else { 10 }),
    ];
    for (shape, count, len, runs) in shapes {
        let mut bufs: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; len]).collect();
        let kept: Vec<Mr> = bufs
            .iter()
            .map(|x| register_local(d.as_ref(), x.as_ptr() as u64, len as u64))
            .collect::<Result<_, _>>()
            .map_err(e)?;
        // Interleaved (hit, miss, bounce, hit, ...) so a noisy machine hurts each mode alike.
        let modes = [Mode::Hit, Mode::Miss, Mode::Bounce];
        for (way, dir) in [(Way::Put, "put"), (Way::Get, "get")] {
            let mut calls: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); modes.len()];
            for _ in 0..runs {
                for (i, &m) in modes.iter().enumerate() {
                    let t = Instant::now();
                    b.call(m, way, &mut bufs, &kept).map_err(e)?;
                    calls[i].push(t.elapsed());
                }
            }
            for (m, c) in modes.iter().zip(&calls) {
                rows.push(Row::from_calls(
                    "rdma-caller-mem",
                    &format!("{dir} ({})", m.name()),
                    MMC,
                    RDMA_SIM,
                    shape,
                    (runs * count) as u64,
                    (runs * count * len) as u64,
                    c,
                    len >= 1 << 20,
                ));
            }
        }
        for m in &kept {
            d.dereg_mr(m).map_err(e)?;
        }
    }
    d.dereg_mr(&b.staging_mr).map_err(e)?;
    Ok(rows)
}
