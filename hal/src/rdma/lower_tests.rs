use super::*;

const L: Limits = Limits {
    max_sge: 4,
    max_msg_sz: 1 << 20,
    sq_depth: 8,
    signal_every: 4,
    max_inline: 0,
};

fn piece(addr: u64, len: u64) -> Piece {
    Piece { addr, len, lkey: 1 }
}

fn xfer(remote_addr: u64, pieces: Vec<Piece>) -> Xfer {
    Xfer {
        rkey: 9,
        remote_addr,
        pieces,
    }
}

/// Every structural promise of the lowering, for any input.
fn check_shape(lw: &Lowered, l: Limits, xfers: &[Xfer]) {
    let mut id = 0;
    for chain in &lw.chains {
        assert!(!chain.is_empty() && chain.len() <= l.sq_depth as usize);
        for (i, wr) in chain.iter().enumerate() {
            assert_eq!(wr.wr_id, id, "ids count up across chains");
            id += 1;
            assert!(!wr.sges.is_empty() && wr.sges.len() <= l.max_sge as usize);
            assert!(wr.sges.iter().all(|s| s.len > 0), "no empty entry");
            assert!(wr.len() <= l.max_msg_sz);
            let want = (i + 1) % l.signal_every as usize == 0 || i + 1 == chain.len();
            assert_eq!(wr.signaled, want, "signal pattern at {i}");
        }
        assert!(chain.last().unwrap().signaled, "a chain ends signaled");
    }
    assert_eq!(lw.last_wr.len(), xfers.len());
    // Order: transfers' last work requests never go backwards.
    let lasts: Vec<u64> = lw.last_wr.iter().flatten().copied().collect();
    assert!(lasts.windows(2).all(|w| w[0] <= w[1]));
    for (x, last) in xfers.iter().zip(&lw.last_wr) {
        let bytes: u64 = x.pieces.iter().map(|p| p.len).sum();
        assert_eq!(last.is_none(), bytes == 0);
    }
}

/// Execute a put's chains against a model of remote memory (rkey 9 covers it all) and compare
/// with writing each transfer's bytes directly.
fn check_bytes(lw: &Lowered, xfers: &[Xfer], local: &[u8], remote_len: usize) {
    let mut remote = vec![0u8; remote_len];
    for wr in lw.chains.iter().flatten() {
        let mut at = wr.remote_addr as usize;
        for s in &wr.sges {
            let src = &local[s.addr as usize..s.addr as usize + s.len as usize];
            remote[at..at + src.len()].copy_from_slice(src);
            at += src.len();
        }
    }
    let mut want = vec![0u8; remote_len];
    for x in xfers {
        let mut at = x.remote_addr as usize;
        for p in &x.pieces {
            want[at..at + p.len as usize]
                .copy_from_slice(&local[p.addr as usize..(p.addr + p.len) as usize]);
            at += p.len as usize;
        }
    }
    assert!(
        remote == want,
        "the chains wrote other bytes than the transfers"
    );
}

#[test]
fn nothing_lowers_to_nothing() {
    let lw = lower(Way::Put, &[], L);
    assert_eq!(lw, Lowered::default());
    let x = [xfer(0, vec![]), xfer(8, vec![piece(0, 0), piece(5, 0)])];
    let lw = lower(Way::Get, &x, L);
    assert_eq!(lw.wrs(), 0);
    assert_eq!(lw.last_wr, vec![None, None]);
}

#[test]
fn one_byte_pieces() {
    // Eight 1-byte pieces, scattered locally, one contiguous remote range: gathered 4 per WR.
    let pieces: Vec<Piece> = (0..8).map(|i| piece(i * 2, 1)).collect();
    let x = [xfer(100, pieces)];
    let lw = lower(Way::Put, &x, L);
    check_shape(&lw, L, &x);
    assert_eq!(lw.wrs(), 2);
    assert_eq!(lw.chains[0][0].sges.len(), 4);
    assert_eq!(lw.chains[0][1].remote_addr, 104);
    let local: Vec<u8> = (0..32).collect();
    check_bytes(&lw, &x, &local, 200);
}

#[test]
fn gathers_up_to_max_sge_then_splits() {
    let pieces: Vec<Piece> = (0..10).map(|i| piece(i * 100, 10)).collect();
    let x = [xfer(0, pieces)];
    let lw = lower(Way::Get, &x, L);
    check_shape(&lw, L, &x);
    let shape: Vec<(u64, usize)> = lw.chains[0]
        .iter()
        .map(|w| (w.remote_addr, w.sges.len()))
        .collect();
    assert_eq!(shape, vec![(0, 4), (40, 4), (80, 2)]);
    assert!(lw.chains[0].iter().all(|w| w.opcode == Opcode::Read));
}

#[test]
fn adjacent_pieces_coalesce() {
    // Three pieces that follow each other in memory: one entry. Then one with another lkey.
    let mut pieces = vec![piece(0, 10), piece(10, 20), piece(30, 5)];
    pieces.push(Piece {
        addr: 35,
        len: 5,
        lkey: 2,
    });
    let x = [xfer(0, pieces)];
    let lw = lower(Way::Put, &x, L);
    assert_eq!(lw.wrs(), 1);
    let sges = &lw.chains[0][0].sges;
    assert_eq!(sges.len(), 2);
    assert_eq!((sges[0].addr, sges[0].len, sges[1].lkey), (0, 35, 2));
}

#[test]
fn adjacent_transfers_share_a_work_request() {
    // Two keys whose remote ranges touch (a batch placed back to back): one WR; a third
    // elsewhere starts a new one, as does one under another rkey.
    let mut x = vec![
        xfer(0, vec![piece(0, 8)]),
        xfer(8, vec![piece(50, 8)]),
        xfer(100, vec![piece(60, 4)]),
    ];
    x.push(Xfer {
        rkey: 3,
        remote_addr: 104,
        pieces: vec![piece(70, 4)],
    });
    let lw = lower(Way::Put, &x, L);
    check_shape(&lw, L, &x);
    assert_eq!(lw.wrs(), 3);
    assert_eq!(lw.last_wr, vec![Some(0), Some(0), Some(1), Some(2)]);
    let local: Vec<u8> = (0..100).collect();
    let x3 = &x[..3];
    check_bytes(&lower(Way::Put, x3, L), x3, &local, 128);
}

#[test]
fn splits_at_the_message_size() {
    let l = Limits {
        max_msg_sz: 100,
        ..L
    };
    let x = [xfer(1000, vec![piece(0, 250), piece(250, 30)])];
    let lw = lower(Way::Put, &x, l);
    check_shape(&lw, l, &x);
    let lens: Vec<u64> = lw.chains[0].iter().map(|w| w.len()).collect();
    assert_eq!(lens, vec![100, 100, 80]);
    let addrs: Vec<u64> = lw.chains[0].iter().map(|w| w.remote_addr).collect();
    assert_eq!(addrs, vec![1000, 1100, 1200]);
}

#[test]
fn signals_every_nth_and_cuts_chains_at_the_queue_depth() {
    let l = Limits {
        max_sge: 1,
        sq_depth: 5,
        signal_every: 2,
        ..L
    };
    let pieces: Vec<Piece> = (0..12).map(|i| piece(i * 10, 1)).collect();
    let x = [xfer(0, pieces)];
    let lw = lower(Way::Put, &x, l);
    check_shape(&lw, l, &x);
    let sig: Vec<Vec<bool>> = lw
        .chains
        .iter()
        .map(|c| c.iter().map(|w| w.signaled).collect())
        .collect();
    assert_eq!(
        sig,
        vec![
            vec![false, true, false, true, true],
            vec![false, true, false, true, true],
            vec![false, true],
        ]
    );
    assert_eq!(lw.last_wr, vec![Some(11)]);
}

#[test]
fn ordering_the_last_write_is_signaled_and_last() {
    // Commit comes after the last write: the last WR (the highest id, which carries the last
    // transfer's last byte) is signaled, so its completion is the batch's.
    let x: Vec<Xfer> = (0..20)
        .map(|i| xfer(i * 1000, vec![piece(i * 10, 7)]))
        .collect();
    let lw = lower(Way::Put, &x, L);
    check_shape(&lw, L, &x);
    let last = lw.chains.last().unwrap().last().unwrap();
    assert!(last.signaled);
    assert_eq!(Some(last.wr_id), lw.last_wr[19]);
    assert_eq!(last.wr_id as usize + 1, lw.wrs());
}

#[test]
fn pieces_of_64_mib() {
    let mib = 1u64 << 20;
    // A device's 1 GiB message limit: one WR per transfer of two 64 MiB pieces (not adjacent).
    let l = Limits {
        max_msg_sz: 1 << 30,
        ..L
    };
    let x = [xfer(
        0,
        vec![piece(0, 64 * mib), piece(128 * mib, 64 * mib)],
    )];
    let lw = lower(Way::Put, &x, l);
    assert_eq!(lw.wrs(), 1);
    assert_eq!(lw.chains[0][0].len(), 128 * mib);
    // A 16 MiB limit: 8 WRs, each one entry of 16 MiB.
    let l = Limits {
        max_msg_sz: 16 * mib,
        ..L
    };
    let lw = lower(Way::Get, &x, l);
    check_shape(&lw, l, &x);
    assert_eq!(lw.wrs(), 8);
    assert!(lw.chains[0]
        .iter()
        .all(|w| w.len() == 16 * mib && w.sges.len() == 1));
}

#[test]
fn entries_stay_below_4_gib() {
    let l = Limits {
        max_msg_sz: u64::MAX,
        ..L
    };
    let x = [xfer(0, vec![piece(0, 5 << 30)])];
    let lw = lower(Way::Put, &x, l);
    assert_eq!(lw.wrs(), 1);
    let lens: Vec<u64> = lw.chains[0][0].sges.iter().map(|s| s.len as u64).collect();
    assert_eq!(lens, vec![u32::MAX as u64, (5 << 30) - u32::MAX as u64]);
}

#[test]
fn small_writes_go_inline_reads_never() {
    let l = Limits {
        max_inline: 16,
        ..L
    };
    let x = [xfer(0, vec![piece(0, 16)]), xfer(100, vec![piece(16, 17)])];
    let lw = lower(Way::Put, &x, l);
    let inl: Vec<bool> = lw.chains[0].iter().map(|w| w.inline).collect();
    assert_eq!(inl, vec![true, false]);
    assert!(lower(Way::Get, &x, l).chains[0].iter().all(|w| !w.inline));
}

/// A small deterministic generator (no proptest in the lock file).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn random_lists_keep_every_promise_and_every_byte() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let local: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
    for _ in 0..2000 {
        let l = Limits {
            max_sge: 1 + rng.below(5) as u32,
            max_msg_sz: 1 + rng.below(200),
            sq_depth: 1 + rng.below(6) as u32,
            signal_every: 1 + rng.below(4) as u32,
            max_inline: rng.below(32) as u32,
        };
        // Transfers at increasing, sometimes touching, remote offsets; pieces sometimes adjacent.
        let mut xfers = Vec::new();
        let mut remote = rng.below(16);
        for _ in 0..rng.below(6) {
            let mut pieces = Vec::new();
            let mut at = rng.below(3000);
            for _ in 0..rng.below(5) {
                let len = [0, 1, rng.below(64), rng.below(300)][rng.below(4) as usize];
                pieces.push(piece(at, len));
                at += len + [0, 0, 1, rng.below(40)][rng.below(4) as usize];
            }
            let len: u64 = pieces.iter().map(|p| p.len).sum();
            xfers.push(xfer(remote, pieces));
            remote += len + [0, 0, rng.below(20)][rng.below(3) as usize];
        }
        let lw = lower(Way::Put, &xfers, l);
        check_shape(&lw, l, &xfers);
        check_bytes(&lw, &xfers, &local, remote as usize + 1);
    }
}
