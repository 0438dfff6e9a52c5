//! Put, driven: the sans-IO [`PutOp`] decides (allocate, write every replica, commit, retry while
//! leased space frees up, deadline); this driver makes its meta calls and moves its bytes: plain
//! copies into the embedded or mapped same-host pools, one vectored TCP request per other local
//! service and lane, those in parallel.

use std::collections::BTreeMap;
use std::io::IoSlice;

use mmc_controlplane::msg::{Piece, ServiceAddr};
use mmc_controlplane::{Error, Result};
use mmc_core::client::{runs, service, Action, CloneError, PutOp, Transfer};
use tracing::warn;

use super::{Client, Lanes, PutOptions};

/// Writes bound for one remote local service (one lane of it).
struct Group<'a> {
    endpoint: String,
    rank: u32,
    incarnation: u64,
    pieces: Vec<Piece>,
    data: Vec<IoSlice<'a>>,
    /// Indexes of the transfers this group carries.
    transfers: Vec<usize>,
}

impl Client {
    /// Put one object from one buffer. Create-only: an existing key is `Error::Exists`.
    pub fn put(&self, key: &str, data: &[u8], opts: &PutOptions) -> Result<()> {
        self.put_parts(key, &[data], opts)
    }

    /// Put one object whose bytes are `parts` concatenated (layer-wise put).
    pub fn put_parts(&self, key: &str, parts: &[&[u8]], opts: &PutOptions) -> Result<()> {
        self.batch_put_parts(&[key], &[parts], opts)?.remove(0)
    }

    /// Put many objects, one result per key; `Err` for the whole call only when the batch itself
    /// is refused (too many keys, mismatched lengths).
    pub fn batch_put(
        &self,
        keys: &[&str],
        values: &[&[u8]],
        opts: &PutOptions,
    ) -> Result<Vec<Result<()>>> {
        let parts: Vec<[&[u8]; 1]> = values.iter().map(|v| [*v]).collect();
        let parts: Vec<&[&[u8]]> = parts.iter().map(|p| &p[..]).collect();
        self.batch_put_parts(keys, &parts, opts)
    }

    /// Put many objects, each from several pieces, in one alloc and one commit round trip.
    pub fn batch_put_parts(
        &self,
        keys: &[&str],
        values: &[&[&[u8]]],
        opts: &PutOptions,
    ) -> Result<Vec<Result<()>>> {
        if keys.len() != values.len() {
            return Err(Error::InvalidParam(format!(
                "{} keys but {} values",
                keys.len(),
                values.len()
            )));
        }
        let sizes: Vec<u64> = values
            .iter()
            .map(|v| v.iter().map(|p| p.len() as u64).sum())
            .collect();
        let mut op = PutOp::new(
            keys,
            &sizes,
            opts,
            self.local_rank(),
            self.now_ms(),
            self.timeout_ms(),
        )?;
        loop {
            match op.poll(self.now_ms()) {
                Action::Meta(req) => {
                    let reply = self.meta_call(&req, self.instant(op.deadline_ms()));
                    op.on_meta(self.now_ms(), reply);
                }
                Action::Transfer => {
                    self.before_transfer();
                    let deadline = self.instant(op.deadline_ms());
                    let outcomes = self.write_all(op.transfers(), op.services(), values, deadline);
                    op.on_transfers(self.now_ms(), outcomes);
                }
                Action::Sleep { until_ms } => self.sleep_until(until_ms),
                Action::MetaOneway(req) => self.send_oneway(req),
                Action::Wait { .. } => unreachable!("the blocking driver feeds every reply"),
                Action::Done => return op.results(),
            }
        }
    }

    /// Carry out write transfers; one outcome per transfer.
    fn write_all(
        &self,
        transfers: &[Transfer],
        services: &[ServiceAddr],
        values: &[&[&[u8]]],
        deadline: std::time::Instant,
    ) -> Vec<Result<()>> {
        let mut outcomes: Vec<Result<()>> = (0..transfers.len()).map(|_| Ok(())).collect();
        let mut groups: BTreeMap<(u32, usize), Group<'_>> = BTreeMap::new();
        let mut lanes = Lanes::default();
        let mut alive = Vec::new();
        for (idx, t) in transfers.iter().enumerate() {
            let parts = values[t.item];
            let lens = parts.iter().map(|p| p.len() as u64);
            let f = t.fence;
            if let Some(direct) = self.direct(f.rank, f.segment, services, &mut alive) {
                let mut offset = t.offset;
                for (part, at, n) in runs(lens, t.item_offset, t.len) {
                    let src = &parts[part][at as usize..(at + n) as usize];
                    if let Err(e) = direct.copy_in(f.segment, offset, src) {
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
                data: Vec::new(),
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
            for (part, at, n) in runs(lens, t.item_offset, t.len) {
                g.data
                    .push(IoSlice::new(&parts[part][at as usize..(at + n) as usize]));
            }
            g.transfers.push(idx);
        }
        let done: Vec<(Vec<usize>, Result<()>)> = if groups.len() <= 1 {
            groups
                .into_values()
                .map(|g| self.write_group(g, deadline))
                .collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = groups
                    .into_values()
                    .map(|g| s.spawn(move || self.write_group(g, deadline)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("write thread"))
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

    fn write_group(
        &self,
        mut g: Group<'_>,
        deadline: std::time::Instant,
    ) -> (Vec<usize>, Result<()>) {
        let outcome = self
            .take_data_conn(&g.endpoint, deadline)
            .and_then(|mut conn| {
                let pieces = std::mem::take(&mut g.pieces);
                conn.write(g.rank, g.incarnation, pieces, &mut g.data, deadline)?;
                self.give_data_conn(conn);
                Ok(())
            });
        if let Err(e) = &outcome {
            warn!(endpoint = %g.endpoint, transfers = g.transfers.len(), error = %e,
                "put: write to local service failed");
        }
        (g.transfers, outcome)
    }
}
