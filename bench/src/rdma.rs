//! RDMA rows. Over the simulated NIC the honest figure is the software overhead: what lowering,
//! posting and polling cost per work request and per batch, since the "wire" is a memcpy. These
//! rows measure the verbs layer in this process (a loopback queue pair of the simulated NIC,
//! 1-byte work requests so the copy is negligible); `main` adds end-to-end rows against an
//! `mmc-local --protocol rdma --rdma-provider sim`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mmc_hal::rdma::lower::{lower, Limits, Piece, Way, Xfer};
use mmc_hal::rdma::safe::{execute, register_local, LocalMem, Registered, Scratch};
use mmc_hal::rdma::sim::SimDevice;
use mmc_hal::rdma::{access, Device, Opcode, Sge, WorkRequest};
use mmc_hal::Arena;

use crate::report::{Row, MMC};

/// The placement label of the RDMA rows over the simulated NIC.
pub const RDMA_SIM: &str = "rdma-sim";
/// ... and over a real device (`--rdma-provider verbs`).
pub const RDMA_VERBS: &str = "rdma";
/// The end-to-end rows again with `rdma_caller_memory = bounce`, over the simulated NIC ...
pub const RDMA_SIM_BOUNCE: &str = "rdma-sim-bounce";
/// ... and over a real device.
pub const RDMA_VERBS_BOUNCE: &str = "rdma-bounce";

/// Completion modes: busy-poll (spin on the completion queue; the bound is never reached) and
/// blocking (completion channel).
const MODES: [(&str, Duration); 2] = [
    ("busy-poll", Duration::from_secs(10)),
    ("blocking", Duration::ZERO),
];

/// Work requests per measured chain list.
const WRS: usize = 4096;

fn per_call(workload: &str, op: &str, shape: &str, objects: u64, calls: &[Duration]) -> Row {
    Row::from_calls(workload, op, MMC, RDMA_SIM, shape, objects, 0, calls, false)
}

/// Per-work-request and per-batch software overhead of the verbs layer over the simulated NIC.
pub fn overhead(quick: bool) -> Result<Vec<Row>, String> {
    let runs = if quick { 20 } else { 200 };
    let dev = SimDevice::open("bench");
    let d: Arc<dyn Device> = dev.clone();
    let e = |e: mmc_hal::rdma::RdmaError| e.to_string();
    let target = Arc::new(Arena::new("mmc-bench-rdma", 2 << 20, true).map_err(|e| e.to_string())?);
    let all =
        access::LOCAL_WRITE | access::REMOTE_READ | access::REMOTE_WRITE | access::REMOTE_ATOMIC;
    let reg = Registered::new(d.clone(), target, all).map_err(e)?;
    let mr = reg.mrs()[0];
    let mut src = vec![7u8; 2 * WRS];
    let smr = register_local(d.as_ref(), src.as_ptr() as u64, src.len() as u64).map_err(e)?;
    let mut qp = d.create_qp(256).map_err(e)?;
    let ep = qp.endpoint();
    qp.connect(&ep).map_err(e)?;
    let limits = Limits {
        max_sge: dev.attr().max_sge,
        max_msg_sz: dev.attr().max_msg_sz,
        sq_depth: 254,
        signal_every: 16,
        max_inline: 0,
    };
    // 4096 one-byte transfers at every other byte: nothing coalesces, one WR each.
    let xfers: Vec<Xfer> = (0..WRS as u64)
        .map(|i| Xfer {
            rkey: mr.rkey,
            remote_addr: mr.addr + 2 * i,
            pieces: vec![Piece {
                addr: smr.addr + 2 * i,
                len: 1,
                lkey: smr.lkey,
            }],
        })
        .collect();
    let mut rows = Vec::new();
    let shape = format!("{WRS} WRs of 1 B");
    // Lowering alone.
    let mut calls = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let lw = lower(Way::Put, &xfers, limits);
        calls.push(t.elapsed());
        assert_eq!(lw.wrs(), WRS);
    }
    rows.push(per_call(
        "rdma-wr",
        "lower",
        &shape,
        (runs * WRS) as u64,
        &calls,
    ));
    // Lowering, posting, executing and polling: WRITE, then READ; in busy-poll mode (spinning on
    // the completion queue) and in blocking mode (armed completion channel, the thread sleeps
    // until the simulated NIC's thread raises the event).
    for ((way, dir), (mode, busy_poll)) in [(Way::Put, "write"), (Way::Get, "read")]
        .into_iter()
        .flat_map(|w| MODES.into_iter().map(move |m| (w, m)))
    {
        let op = format!("{dir} (lower+post+poll, {mode})");
        let mut calls = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let lw = lower(way, &xfers, limits);
            let mut mem = LocalMem::new();
            match way {
                Way::Put => mem.src(&src),
                Way::Get => mem.dst(&mut src),
            }
            let x = execute(
                qp.as_mut(),
                &lw.chains,
                &mem,
                Instant::now() + Duration::from_secs(10),
                busy_poll,
            )
            .map_err(e)?;
            calls.push(t.elapsed());
            if x.error.is_some() || x.timed_out || x.posted != WRS as u64 {
                return Err(format!("rdma overhead run: {x:?}"));
            }
        }
        rows.push(per_call(
            "rdma-wr",
            &op,
            &shape,
            (runs * WRS) as u64,
            &calls,
        ));
    }
    // A batch of one WR as the transport runs it: enter the fence (FETCH_ADD + READ), the WR,
    // leave (READ + FETCH_ADD): three chains, five work requests.
    let mut scratch = Scratch::new(d.clone()).map_err(e)?;
    let fence_op = |id, op, off: u64, local: u64, lkey| WorkRequest {
        wr_id: id,
        opcode: op,
        sges: vec![Sge {
            addr: local,
            len: 8,
            lkey,
        }],
        remote_addr: mr.addr + (1 << 20) + off,
        rkey: mr.rkey,
        signaled: true,
        fence: matches!(op, Opcode::Read),
        inline: false,
    };
    let (lkey, s0, s1) = (scratch.lkey(), scratch.addr(0), scratch.addr(1));
    let enter = vec![
        fence_op(100, Opcode::FetchAdd { add: 1 }, 8, s0, lkey),
        fence_op(101, Opcode::Read, 0, s1, lkey),
    ];
    let leave = vec![
        fence_op(102, Opcode::Read, 0, s1, lkey),
        fence_op(103, Opcode::FetchAdd { add: u64::MAX }, 8, s0, lkey),
    ];
    let one = lower(Way::Put, &xfers[..1], limits);
    for (mode, busy_poll) in MODES {
        let mut calls = Vec::with_capacity(runs * 10);
        for _ in 0..runs * 10 {
            let t = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut sm = LocalMem::new();
            sm.scratch(&mut scratch);
            let enter = std::slice::from_ref(&enter);
            execute(qp.as_mut(), enter, &sm, deadline, busy_poll).map_err(e)?;
            drop(sm);
            let mut mem = LocalMem::new();
            mem.src(&src);
            execute(qp.as_mut(), &one.chains, &mem, deadline, busy_poll).map_err(e)?;
            drop(mem);
            let mut sm = LocalMem::new();
            sm.scratch(&mut scratch);
            let leave = std::slice::from_ref(&leave);
            execute(qp.as_mut(), leave, &sm, deadline, busy_poll).map_err(e)?;
            calls.push(t.elapsed());
        }
        rows.push(per_call(
            "rdma-wr",
            &format!("batch of 1 WR (fence in/out, {mode})"),
            "5 WRs, 3 chains",
            (runs * 10) as u64,
            &calls,
        ));
    }
    // Registering caller memory per call (what an unregistered buffer costs) on the simulated NIC.
    let buf = vec![0u8; 1 << 20];
    let mut calls = Vec::with_capacity(runs * 10);
    for _ in 0..runs * 10 {
        let t = Instant::now();
        let m = register_local(d.as_ref(), buf.as_ptr() as u64, buf.len() as u64).map_err(e)?;
        d.dereg_mr(&m).map_err(e)?;
        calls.push(t.elapsed());
    }
    rows.push(per_call(
        "rdma-wr",
        "register+deregister 1 MiB",
        "1 MR",
        (runs * 10) as u64,
        &calls,
    ));
    d.dereg_mr(&smr).map_err(e)?;
    rows.extend(crate::rdma_caller::rows(quick)?);
    Ok(rows)
}
