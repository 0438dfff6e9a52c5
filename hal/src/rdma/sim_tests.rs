use super::*;
use crate::rdma::lower::{lower, Limits, Piece, Way, Xfer};
use crate::rdma::Sge;
use std::time::Duration;

fn wr(wr_id: u64, opcode: Opcode, sges: Vec<Sge>, remote_addr: u64, rkey: u32) -> WorkRequest {
    WorkRequest {
        wr_id,
        opcode,
        sges,
        remote_addr,
        rkey,
        signaled: true,
        fence: false,
        inline: false,
    }
}

/// Every completion of what was posted: polled until the NIC thread has executed the send queue
/// and the completion queue is empty.
fn poll_all(qp: &mut SimQp) -> Vec<Completion> {
    let mut out = Vec::new();
    loop {
        let drained = qp.drained();
        let n = qp.poll_cq(&mut out, 16).unwrap();
        if drained && n == 0 {
            return out;
        }
        if n == 0 {
            std::thread::yield_now();
        }
    }
}

/// One test, because injected errors are per process and tests run in parallel threads.
#[test]
fn loopback_queue_pairs_move_check_and_fail_like_a_nic() {
    let dev = SimDevice::open("testhost");
    assert_eq!(dev.attr().fabric, "sim:testhost");
    let mut src: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    let mut dst = vec![0u8; 8192];
    let all =
        access::LOCAL_WRITE | access::REMOTE_READ | access::REMOTE_WRITE | access::REMOTE_ATOMIC;
    // SAFETY: both buffers outlive the MRs (deregistered at the end of the test).
    let (ms, md) = unsafe {
        (
            dev.reg_mr(src.as_mut_ptr() as u64, 4096, all).unwrap(),
            dev.reg_mr(dst.as_mut_ptr() as u64, 8192, all).unwrap(),
        )
    };
    assert_ne!(ms.lkey, ms.rkey, "distinct keys");
    let mut qp = dev.create_sim_qp(16).unwrap();
    // SAFETY: nothing is posted.
    let before = unsafe { qp.post_send(&[]) }.unwrap_err();
    assert!(before.to_string().contains("Reset"), "{before}");
    let ep = qp.endpoint();
    qp.connect(&ep).unwrap();
    assert_eq!(qp.state(), QpState::Rts);

    // Lowered WRITE chain: src pieces into dst at 100, then read them back to src+2048.
    let x = [Xfer {
        rkey: md.rkey,
        remote_addr: md.addr + 100,
        pieces: vec![
            Piece {
                addr: ms.addr,
                len: 10,
                lkey: ms.lkey,
            },
            Piece {
                addr: ms.addr + 500,
                len: 1000,
                lkey: ms.lkey,
            },
        ],
    }];
    let l = Limits {
        max_sge: 1,
        max_msg_sz: 256,
        sq_depth: 16,
        signal_every: 3,
        max_inline: 0,
    };
    let lw = lower(Way::Put, &x, l);
    // SAFETY: src and dst live until the completions are polled.
    unsafe { qp.post_send(&lw.chains[0]).unwrap() };
    let c = poll_all(&mut qp);
    assert!(c.iter().all(|c| c.status == WcStatus::Success));
    assert_eq!(c.last().unwrap().wr_id, lw.last_wr[0].unwrap());
    assert_eq!(&dst[100..110], &src[..10]);
    assert_eq!(&dst[110..1110], &src[500..1500]);

    // FETCH_ADD on an aligned word of dst: the old value comes back, the word grows.
    dst[4096..4104].copy_from_slice(&41u64.to_ne_bytes());
    let w = wr(
        7,
        Opcode::FetchAdd { add: 1 },
        vec![Sge {
            addr: ms.addr + 2048,
            len: 8,
            lkey: ms.lkey,
        }],
        md.addr + 4096,
        md.rkey,
    );
    // SAFETY: as above.
    unsafe { qp.post_send(&[w]).unwrap() };
    assert_eq!(poll_all(&mut qp)[0].status, WcStatus::Success);
    assert_eq!(u64::from_ne_bytes(src[2048..2056].try_into().unwrap()), 41);
    assert_eq!(u64::from_ne_bytes(dst[4096..4104].try_into().unwrap()), 42);

    // An rkey bounds violation (one byte past dst's MR): RemoteAccess, the QP errors, the next
    // work request is flushed, nothing was written.
    let bad = wr(
        1,
        Opcode::Write,
        vec![Sge {
            addr: ms.addr,
            len: 2,
            lkey: ms.lkey,
        }],
        md.addr + 8191,
        md.rkey,
    );
    let next = wr(
        2,
        Opcode::Write,
        vec![Sge {
            addr: ms.addr,
            len: 1,
            lkey: ms.lkey,
        }],
        md.addr,
        md.rkey,
    );
    let d0 = dst[0];
    // SAFETY: as above.
    unsafe { qp.post_send(&[bad, next.clone()]).unwrap() };
    let c = poll_all(&mut qp);
    assert_eq!(
        c.iter().map(|c| c.status).collect::<Vec<_>>(),
        vec![WcStatus::RemoteAccess, WcStatus::Flush]
    );
    assert_eq!(dst[0], d0);
    assert_eq!(qp.state(), QpState::Error);
    // SAFETY: as above.
    assert!(unsafe { qp.post_send(std::slice::from_ref(&next)) }.is_err());
    qp.reset().unwrap();
    qp.connect(&ep).unwrap();

    // A wrong rkey, a wrong lkey, an entry outside its MR.
    let cases = [
        (
            wr(
                3,
                Opcode::Write,
                vec![Sge {
                    addr: ms.addr,
                    len: 1,
                    lkey: ms.lkey,
                }],
                md.addr,
                md.rkey ^ 0x100,
            ),
            WcStatus::RemoteAccess,
        ),
        (
            wr(
                4,
                Opcode::Write,
                vec![Sge {
                    addr: ms.addr,
                    len: 1,
                    lkey: md.rkey,
                }],
                md.addr,
                md.rkey,
            ),
            WcStatus::LocalProtection,
        ),
        (
            wr(
                5,
                Opcode::Read,
                vec![Sge {
                    addr: ms.addr + 4090,
                    len: 8,
                    lkey: ms.lkey,
                }],
                md.addr,
                md.rkey,
            ),
            WcStatus::LocalProtection,
        ),
    ];
    for (w, want) in cases {
        // SAFETY: as above (and nothing is touched: every case is refused before a copy).
        unsafe { qp.post_send(&[w]).unwrap() };
        assert_eq!(poll_all(&mut qp)[0].status, want);
        qp.reset().unwrap();
        qp.connect(&ep).unwrap();
    }

    // The send queue's depth.
    let many: Vec<WorkRequest> = (0..17).map(|_| next.clone()).collect();
    // SAFETY: refused, nothing posted.
    let e = unsafe { qp.post_send(&many) }.unwrap_err();
    assert!(e.to_string().contains("send queue depth"), "{e}");

    // An injected error mid-chain: the third of five fails, the rest flush.
    inject_error(2, WcStatus::RetryExceeded);
    let chain: Vec<WorkRequest> = (0..5)
        .map(|i| {
            let mut w = next.clone();
            w.wr_id = i;
            w
        })
        .collect();
    // SAFETY: as above.
    unsafe { qp.post_send(&chain).unwrap() };
    let st: Vec<WcStatus> = poll_all(&mut qp).iter().map(|c| c.status).collect();
    assert_eq!(
        st,
        vec![
            WcStatus::Success,
            WcStatus::Success,
            WcStatus::RetryExceeded,
            WcStatus::Flush,
            WcStatus::Flush
        ]
    );

    // Injected key and bounds faults are caught by the NIC's own checks.
    for f in [Fault::BadRkey, Fault::OutOfBounds] {
        qp.reset().unwrap();
        qp.connect(&ep).unwrap();
        inject(0, f);
        // SAFETY: refused before any copy.
        unsafe { qp.post_send(std::slice::from_ref(&next)).unwrap() };
        assert_eq!(poll_all(&mut qp)[0].status, WcStatus::RemoteAccess, "{f:?}");
    }

    // A peer that is not attached is unreachable: its work requests fail with RetryExceeded.
    let mut q2 = dev.create_sim_qp(4).unwrap();
    q2.connect(&QpEndpoint { gid: [9; 16], ..ep }).unwrap();
    // SAFETY: nothing is copied: the peer is unreachable.
    unsafe { q2.post_send(std::slice::from_ref(&next)).unwrap() };
    assert_eq!(poll_all(&mut q2)[0].status, WcStatus::RetryExceeded);
    // Deregistered keys are refused.
    qp.reset().unwrap();
    qp.connect(&ep).unwrap();
    dev.dereg_mr(&md).unwrap();
    // SAFETY: refused before any copy.
    unsafe { qp.post_send(std::slice::from_ref(&next)).unwrap() };
    assert_eq!(poll_all(&mut qp)[0].status, WcStatus::RemoteAccess);
    dev.dereg_mr(&ms).unwrap();
    assert!(dev.dereg_mr(&ms).is_err());

    assert!(dev.create_qp(1 << 20).is_err(), "past max_qp_wr");

    completion_channel_events_are_armed_and_one_shot(&dev);
}

/// The completion channel: no event unless armed; an armed queue raises one event for the next
/// completion (the waiter sleeps until the NIC thread adds it), none for later ones or for
/// completions already queued when it was armed.
fn completion_channel_events_are_armed_and_one_shot(dev: &SimDevice) {
    let mut a = vec![7u8; 256];
    let mut b = vec![0u8; 256];
    let all = access::LOCAL_WRITE | access::REMOTE_WRITE;
    // SAFETY: both buffers outlive the MRs (deregistered below).
    let (ma, mb) = unsafe {
        (
            dev.reg_mr(a.as_mut_ptr() as u64, 256, all).unwrap(),
            dev.reg_mr(b.as_mut_ptr() as u64, 256, all).unwrap(),
        )
    };
    let mut qp = dev.create_sim_qp(8).unwrap();
    let ep = qp.endpoint();
    qp.connect(&ep).unwrap();
    let write = |id: u64, len: u32| {
        wr(
            id,
            Opcode::Write,
            vec![Sge {
                addr: ma.addr,
                len,
                lkey: ma.lkey,
            }],
            mb.addr,
            mb.rkey,
        )
    };
    let short = Duration::from_millis(20);
    let long = Duration::from_secs(30);
    let events = stats().events;
    // Not armed: the completion comes, no event.
    // SAFETY: a and b outlive the completions polled below.
    unsafe { qp.post_send(&[write(1, 8)]).unwrap() };
    assert_eq!(poll_all(&mut qp).len(), 1);
    assert!(!qp.wait_event(short).unwrap(), "no event unless armed");
    // Armed, then posted: the waiter blocks until the NIC thread's completion raises the event.
    qp.req_notify().unwrap();
    // SAFETY: as above.
    unsafe { qp.post_send(&[write(2, 16), write(3, 32)]).unwrap() };
    assert!(qp.wait_event(long).unwrap(), "the armed queue's event");
    let c = poll_all(&mut qp);
    assert_eq!(c.iter().map(|c| c.wr_id).collect::<Vec<_>>(), vec![2, 3]);
    assert!(
        !qp.wait_event(short).unwrap(),
        "one-shot: one event per arming"
    );
    assert_eq!(stats().events, events + 1);
    assert_eq!(b[..32], a[..32]);
    // Armed with completions already queued: no event for them.
    // SAFETY: as above.
    unsafe { qp.post_send(&[write(4, 8)]).unwrap() };
    while !qp.drained() {
        std::thread::yield_now();
    }
    qp.req_notify().unwrap();
    assert!(!qp.wait_event(short).unwrap(), "queued before arming");
    assert_eq!(poll_all(&mut qp).len(), 1);
    drop(qp);
    dev.dereg_mr(&ma).unwrap();
    dev.dereg_mr(&mb).unwrap();
}

#[test]
fn attached_windows_are_bounds_checked() {
    let mut mem = vec![0u8; 64];
    let w = Window {
        addr: 0x10_0000,
        len: 64,
        rkey: 5,
        access: access::REMOTE_WRITE,
        ptr: mem.as_mut_ptr(),
    };
    let a = Attached {
        windows: vec![w],
        _keep: Arc::new(()),
    };
    assert!(a.resolve(5, 0x10_0000, 64, access::REMOTE_WRITE).is_some());
    assert!(a.resolve(5, 0x10_0001, 64, access::REMOTE_WRITE).is_none());
    assert!(a.resolve(5, 0x0f_ffff, 1, access::REMOTE_WRITE).is_none());
    assert!(
        a.resolve(5, 0x10_0000, 8, access::REMOTE_READ).is_none(),
        "no read access"
    );
    assert!(
        a.resolve(6, 0x10_0000, 8, access::REMOTE_WRITE).is_none(),
        "unknown rkey"
    );
}
