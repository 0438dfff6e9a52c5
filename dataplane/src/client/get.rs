//! Get, driven: the sans-IO [`GetOp`] decides (look up with a read lease, which replica to read
//! and which next when a copy fails, whether the lease held, release); this driver makes its meta
//! calls and moves its bytes straight into the caller's buffers.

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::time::Instant;

use mmc_controlplane::msg::{Piece, ServiceAddr};
use mmc_controlplane::{Error, Result};
use mmc_core::client::{runs, service, Action, CloneError, GetOp, Transfer};
use tracing::warn;

use super::{Client, Lanes};

/// Reads bound for one remote local service (one lane of it).
struct Group<'a> {
    endpoint: String,
    rank: u32,
    incarnation: u64,
    pieces: Vec<Piece>,
    bufs: Vec<IoSliceMut<'a>>,
    transfers: Vec<usize>,
}

impl Client {
    /// The whole object, in a new buffer.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let mut op = GetOp::new(
            &[key],
            &[u64::MAX],
            self.local_rank(),
            self.now_ms(),
            self.timeout_ms(),
        )?;
        let mut out = Vec::new();
        loop {
            match op.poll(self.now_ms()) {
                Action::Transfer => {
                    let size = op.size(0).expect("a transfer for a found key");
                    out.resize(size as usize, 0);
                    let mut parts: [&mut [u8]; 1] = [&mut out];
                    let mut bufs: [&mut [&mut [u8]]; 1] = [&mut parts];
                    self.read_step(&mut op, &mut bufs);
                }
                Action::Done => break,
                other => self.get_step(&mut op, other),
            }
        }
        op.results()?.remove(0)?;
        Ok(out)
    }

    /// Read one object into `buf`; returns its size. A buffer smaller than the object is
    /// `InvalidParam` and nothing is copied.
    pub fn get_into(&self, key: &str, buf: &mut [u8]) -> Result<u64> {
        let mut parts: [&mut [u8]; 1] = [buf];
        self.get_into_parts(key, &mut parts)
    }

    /// Read one object into `parts`, filled in order (layer-wise get); returns its size.
    pub fn get_into_parts(&self, key: &str, parts: &mut [&mut [u8]]) -> Result<u64> {
        let mut bufs: [&mut [&mut [u8]]; 1] = [parts];
        self.batch_get_into_parts(&[key], &mut bufs)?.remove(0)
    }

    /// Read many objects, each into one buffer; one result (the object's size) per key.
    pub fn batch_get_into(
        &self,
        keys: &[&str],
        bufs: &mut [&mut [u8]],
    ) -> Result<Vec<Result<u64>>> {
        let mut parts: Vec<[&mut [u8]; 1]> = bufs.iter_mut().map(|b| [&mut **b]).collect();
        let mut views: Vec<&mut [&mut [u8]]> = parts.iter_mut().map(|p| &mut p[..]).collect();
        self.batch_get_into_parts(keys, &mut views)
    }

    /// Read many objects, each into several pieces, with one lookup round trip.
    pub fn batch_get_into_parts(
        &self,
        keys: &[&str],
        bufs: &mut [&mut [&mut [u8]]],
    ) -> Result<Vec<Result<u64>>> {
        if keys.len() != bufs.len() {
            return Err(Error::InvalidParam(format!(
                "{} keys but {} buffers",
                keys.len(),
                bufs.len()
            )));
        }
        let capacities: Vec<u64> = bufs
            .iter()
            .map(|parts| parts.iter().map(|p| p.len() as u64).sum())
            .collect();
        let mut op = GetOp::new(
            keys,
            &capacities,
            self.local_rank(),
            self.now_ms(),
            self.timeout_ms(),
        )?;
        loop {
            match op.poll(self.now_ms()) {
                Action::Transfer => self.read_step(&mut op, bufs),
                Action::Done => return op.results(),
                other => self.get_step(&mut op, other),
            }
        }
    }

    /// Every action of a get but the transfers.
    fn get_step(&self, op: &mut GetOp, action: Action) {
        match action {
            Action::Meta(req) => {
                let reply = self.meta_call(&req, self.instant(op.deadline_ms()));
                op.on_meta(self.now_ms(), reply);
            }
            Action::MetaOneway(req) => self.send_oneway(req),
            Action::Sleep { until_ms } => self.sleep_until(until_ms),
            Action::Wait { .. } => unreachable!("the blocking driver feeds every reply"),
            Action::Transfer | Action::Done => unreachable!("handled by the caller"),
        }
    }

    fn read_step(&self, op: &mut GetOp, bufs: &mut [&mut [&mut [u8]]]) {
        self.before_transfer();
        let deadline = self.instant(op.deadline_ms());
        let outcomes = self.read_all(op.transfers(), op.services(), bufs, deadline);
        op.on_transfers(self.now_ms(), outcomes);
    }

    /// Carry out read transfers (at most one per key); one outcome per transfer.
    fn read_all(
        &self,
        transfers: &[Transfer],
        services: &[ServiceAddr],
        bufs: &mut [&mut [&mut [u8]]],
        deadline: Instant,
    ) -> Vec<Result<()>> {
        let mut outcomes: Vec<Result<()>> = (0..transfers.len()).map(|_| Ok(())).collect();
        // Which transfer reads each key this round.
        let mut by_item: Vec<Option<usize>> = vec![None; bufs.len()];
        for (idx, t) in transfers.iter().enumerate() {
            assert!(
                by_item[t.item].replace(idx).is_none(),
                "one read per key per round"
            );
        }
        let mut groups: BTreeMap<(u32, usize), Group<'_>> = BTreeMap::new();
        let mut lanes = Lanes::default();
        let mut alive = Vec::new();
        for (item, parts) in bufs.iter_mut().enumerate() {
            let Some(idx) = by_item[item] else { continue };
            let t = transfers[idx];
            let f = t.fence;
            let lens: Vec<u64> = parts.iter().map(|p| p.len() as u64).collect();
            if let Some(direct) = self.direct(f.rank, f.segment, services, &mut alive) {
                let mut offset = t.offset;
                for (part, at, n) in runs(lens, t.item_offset, t.len) {
                    let dst = &mut parts[part][at as usize..(at + n) as usize];
                    if let Err(e) = direct.copy_out(f.segment, offset, dst) {
                        outcomes[idx] = Err(e);
                        break;
                    }
                    offset += n;
                }
                continue;
            }
            let Some(addr) = service(services, f.rank) else {
                outcomes[idx] = Err(Error::LocalUnreachable {
                    endpoint: format!("rank {}", f.rank),
                    reason: "the meta service gave no address".into(),
                });
                continue;
            };
            let lane = lanes.pick(f.rank, t.len);
            let g = groups.entry((f.rank, lane)).or_insert_with(|| Group {
                endpoint: addr.data_endpoint.clone(),
                rank: f.rank,
                incarnation: f.incarnation,
                pieces: Vec::new(),
                bufs: Vec::new(),
                transfers: Vec::new(),
            });
            debug_assert_eq!(
                g.incarnation, f.incarnation,
                "one incarnation per rank and plan"
            );
            g.pieces.push(Piece {
                segment: f.segment,
                offset: t.offset,
                len: t.len,
            });
            // Runs are in part order and disjoint: hand out each part's range once.
            let mut rest: &mut [&mut [u8]] = &mut parts[..];
            let mut base = 0usize;
            for (part, at, n) in runs(lens, t.item_offset, t.len) {
                let (head, tail) = std::mem::take(&mut rest).split_at_mut(part + 1 - base);
                base = part + 1;
                rest = tail;
                let p = head.last_mut().expect("the run's part");
                g.bufs
                    .push(IoSliceMut::new(&mut p[at as usize..(at + n) as usize]));
            }
            g.transfers.push(idx);
        }
        let done: Vec<(Vec<usize>, Result<()>)> = if groups.len() <= 1 {
            groups
                .into_values()
                .map(|g| self.read_group(g, deadline))
                .collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = groups
                    .into_values()
                    .map(|g| s.spawn(move || self.read_group(g, deadline)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("read thread"))
                    .collect()
            })
        };
        for (idxs, outcome) in done {
            if let Err(e) = outcome {
                for idx in idxs {
                    outcomes[idx] = Err(e.clone_error());
                }
            }
        }
        outcomes
    }

    fn read_group(&self, mut g: Group<'_>, deadline: Instant) -> (Vec<usize>, Result<()>) {
        let outcome = self
            .take_data_conn(&g.endpoint, deadline)
            .and_then(|mut conn| {
                let pieces = std::mem::take(&mut g.pieces);
                conn.read(g.rank, g.incarnation, pieces, &mut g.bufs, deadline)?;
                self.give_data_conn(conn);
                Ok(())
            });
        if let Err(e) = &outcome {
            warn!(endpoint = %g.endpoint, transfers = g.transfers.len(), error = %e,
                "get: read from local service failed");
        }
        (g.transfers, outcome)
    }
}
