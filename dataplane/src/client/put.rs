//! Put: allocate (one meta round trip), write every replica, commit (one meta round trip).

use std::collections::BTreeMap;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use mmc_controlplane::msg::{
    self, AllocItem, AllocRequest, CommitItem, Piece, Reply, Request, ServiceAddr,
};
use mmc_controlplane::{Code, Error, Result};
use tracing::warn;

use super::{check_keys, key_error, unexpected, Client, CloneError, Lanes, PutOptions};

/// Back-off between tries of a put that waits for leased space to be released.
const NO_SPACE_RETRY_MS: u64 = 20;

/// Writes bound for one remote local service.
struct Group<'a> {
    endpoint: String,
    rank: u32,
    incarnation: u64,
    pieces: Vec<Piece>,
    data: Vec<IoSlice<'a>>,
    items: Vec<usize>,
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
        if opts.replicas as usize > msg::REPLICAS_MAX {
            return Err(Error::InvalidParam(format!(
                "{} replicas, the limit is 8",
                opts.replicas
            )));
        }
        let checked = check_keys(keys)?;
        let deadline = self.deadline();
        let mut results: Vec<Result<()>> = Vec::with_capacity(keys.len());
        let mut todo: Vec<usize> = Vec::with_capacity(keys.len());
        for (i, k) in checked.into_iter().enumerate() {
            let size: u64 = values[i].iter().map(|p| p.len() as u64).sum();
            match k {
                Err(e) => results.push(Err(e)),
                Ok(key) if size == 0 => {
                    warn!(key, "put refused: empty value");
                    results.push(Err(Error::InvalidParam(format!(
                        "put of {key:?}: zero-size value"
                    ))));
                }
                Ok(_) => {
                    results.push(Ok(()));
                    todo.push(i);
                }
            }
        }
        // Keys that found no room while leased objects held it are tried again until the deadline.
        while !todo.is_empty() {
            let retry = self.put_round(keys, values, opts, &todo, &mut results, deadline)?;
            if retry.is_empty() {
                break;
            }
            // Leave room for one more round trip, so that the answer is -3013, not a timeout.
            let margin = (self.timeout() / 10).min(Duration::from_millis(200));
            if Instant::now() + Duration::from_millis(NO_SPACE_RETRY_MS) + margin >= deadline {
                for &i in &retry {
                    results[i] = Err(key_error(Code::ExceedCapacity.as_i32(), keys[i]));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(NO_SPACE_RETRY_MS));
            todo = retry;
        }
        Ok(results)
    }

    /// One alloc/write/commit round for the keys in `todo`; returns the keys worth retrying.
    fn put_round(
        &self,
        keys: &[&str],
        values: &[&[&[u8]]],
        opts: &PutOptions,
        todo: &[usize],
        results: &mut [Result<()>],
        deadline: Instant,
    ) -> Result<Vec<usize>> {
        let req = AllocRequest {
            writer_rank: self.local_rank(),
            media: opts.media,
            policy: opts.policy,
            replicas: opts.replicas,
            preferred: opts.preferred.clone(),
            items: todo
                .iter()
                .map(|&i| {
                    (
                        keys[i].to_string(),
                        values[i].iter().map(|p| p.len() as u64).sum(),
                    )
                })
                .collect(),
        };
        let (items, services) = match self.meta_call(&Request::Alloc(req), deadline) {
            Ok(Reply::Alloc { items, services }) if items.len() == todo.len() => (items, services),
            Ok(other) => return Err(unexpected(&other)),
            Err(e) => {
                warn!(keys = todo.len(), error = %e, "put: allocation failed");
                for &i in todo {
                    results[i] = Err(e.clone_error());
                }
                return Ok(Vec::new());
            }
        };
        let mut retry = Vec::new();
        let mut committed: Vec<(usize, &AllocItem)> = Vec::with_capacity(items.len());
        for (&i, item) in todo.iter().zip(&items) {
            if item.code == Code::ExceedCapacity.as_i32() && item.retry {
                retry.push(i);
            } else if item.code != 0 {
                results[i] = Err(key_error(item.code, keys[i]));
            } else {
                committed.push((i, item));
            }
        }
        self.write_replicas(values, &committed, &services, results, deadline);
        if committed.is_empty() {
            return Ok(retry);
        }
        let commit = Request::Commit {
            items: committed
                .iter()
                .map(|(i, item)| {
                    let ok = results[*i].is_ok();
                    (
                        keys[*i].to_string(),
                        CommitItem {
                            token: item.token,
                            ok,
                        },
                    )
                })
                .collect(),
        };
        match self.meta_call(&commit, deadline) {
            Ok(Reply::Commit { codes }) if codes.len() == committed.len() => {
                for ((i, _), code) in committed.iter().zip(codes) {
                    if code != 0 && results[*i].is_ok() {
                        results[*i] = Err(key_error(code, keys[*i]));
                    }
                }
            }
            Ok(other) => return Err(unexpected(&other)),
            Err(e) => {
                // Uncommitted puts are reclaimed by the meta service after their timeout.
                warn!(error = %e, "put: commit failed");
                for (i, _) in &committed {
                    results[*i] = Err(e.clone_error());
                }
            }
        }
        Ok(retry)
    }

    /// Write every replica: plain copies into the embedded pool, one vectored request per other
    /// local service, those in parallel.
    fn write_replicas(
        &self,
        values: &[&[&[u8]]],
        committed: &[(usize, &AllocItem)],
        services: &[ServiceAddr],
        results: &mut [Result<()>],
        deadline: Instant,
    ) {
        self.before_transfer();
        let mut groups: BTreeMap<(u32, usize), Group<'_>> = BTreeMap::new();
        let mut lanes = Lanes::default();
        let mut alive = Vec::new();
        for (i, item) in committed {
            for r in &item.replicas {
                if let Some(direct) = self.direct(r.rank, r.segment, services, &mut alive) {
                    let mut offset = r.offset;
                    for part in values[*i] {
                        if let Err(e) = direct.copy_in(r.segment, offset, part) {
                            results[*i] = Err(e);
                            break;
                        }
                        offset += part.len() as u64;
                    }
                    continue;
                }
                let Some(addr) = services.iter().find(|s| s.rank == r.rank) else {
                    results[*i] = Err(Error::LocalUnreachable {
                        endpoint: format!("rank {}", r.rank),
                        reason: "the meta service gave no address".into(),
                    });
                    continue;
                };
                let lane = lanes.pick(r.rank, r.len);
                let g = groups.entry((r.rank, lane)).or_insert_with(|| Group {
                    endpoint: addr.data_endpoint.clone(),
                    rank: addr.rank,
                    incarnation: addr.incarnation,
                    pieces: Vec::new(),
                    data: Vec::new(),
                    items: Vec::new(),
                });
                g.pieces.push(Piece {
                    segment: r.segment,
                    offset: r.offset,
                    len: r.len,
                });
                g.data.extend(
                    values[*i]
                        .iter()
                        .filter(|p| !p.is_empty())
                        .map(|p| IoSlice::new(p)),
                );
                g.items.push(*i);
            }
        }
        let outcomes: Vec<(Vec<usize>, Result<()>)> = if groups.len() <= 1 {
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
        for (items, outcome) in outcomes {
            if let Err(e) = outcome {
                for i in items {
                    if results[i].is_ok() {
                        results[i] = Err(e.clone_error());
                    }
                }
            }
        }
    }

    fn write_group(&self, mut g: Group<'_>, deadline: Instant) -> (Vec<usize>, Result<()>) {
        let outcome = self
            .take_data_conn(&g.endpoint, deadline)
            .and_then(|mut conn| {
                let pieces = std::mem::take(&mut g.pieces);
                conn.write(g.rank, g.incarnation, pieces, &mut g.data, deadline)?;
                self.give_data_conn(conn);
                Ok(())
            });
        if let Err(e) = &outcome {
            warn!(endpoint = %g.endpoint, keys = g.items.len(), error = %e, "put: write to local service failed");
        }
        (g.items, outcome)
    }
}
