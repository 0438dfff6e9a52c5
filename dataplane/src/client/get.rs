//! Get: look up (one meta round trip, which takes a read lease per key), read one replica of each
//! object straight into the caller's buffers, check the lease held, release the leases (one-way).

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::time::{Duration, Instant};

use mmc_controlplane::msg::{LookupItem, Piece, Replica, Reply, Request, ServiceAddr};
use mmc_controlplane::{Error, Result};
use tracing::warn;

use super::{check_keys, key_error, unexpected, Client, CloneError, Lanes};

/// Reads bound for one remote local service.
struct Group<'a> {
    endpoint: String,
    rank: u32,
    incarnation: u64,
    pieces: Vec<Piece>,
    bufs: Vec<IoSliceMut<'a>>,
    items: Vec<usize>,
}

/// What a lookup said, for the keys of one batch.
struct Plan {
    items: Vec<Option<LookupItem>>,
    services: Vec<ServiceAddr>,
    lease: Duration,
    started: Instant,
}

impl Client {
    /// The whole object, in a new buffer.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let deadline = self.deadline();
        let mut results: Vec<Result<u64>> = vec![Ok(0)];
        let plan = self.lookup(&[key], &mut results, deadline)?;
        results.pop().expect("one result")?;
        let size = plan.items[0].as_ref().map(|i| i.size).unwrap_or(0);
        let mut out = vec![0u8; size as usize];
        let mut parts: [&mut [u8]; 1] = [&mut out];
        let mut bufs: [&mut [&mut [u8]]; 1] = [&mut parts];
        let mut results = vec![Ok(0)];
        self.fetch(plan, &mut bufs, &mut results, deadline);
        results.pop().expect("one result")?;
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
        let deadline = self.deadline();
        let mut results: Vec<Result<u64>> = (0..keys.len()).map(|_| Ok(0)).collect();
        let plan = self.lookup(keys, &mut results, deadline)?;
        self.fetch(plan, bufs, &mut results, deadline);
        Ok(results)
    }

    /// Look the keys up; keys refused locally or missing get their error in `results`.
    fn lookup(
        &self,
        keys: &[&str],
        results: &mut [Result<u64>],
        deadline: Instant,
    ) -> Result<Plan> {
        let checked = check_keys(keys)?;
        let valid: Vec<String> = checked.iter().flatten().map(|k| k.to_string()).collect();
        let started = Instant::now();
        let mut plan = Plan {
            items: (0..keys.len()).map(|_| None).collect(),
            services: Vec::new(),
            lease: Duration::ZERO,
            started,
        };
        if valid.is_empty() {
            for (i, k) in checked.into_iter().enumerate() {
                results[i] = k.map(|_| 0);
            }
            return Ok(plan);
        }
        let (items, services, lease_ms) =
            match self.meta_call(&Request::Lookup { keys: valid }, deadline)? {
                Reply::Lookup {
                    items,
                    services,
                    lease_ms,
                } => (items, services, lease_ms),
                other => return Err(unexpected(&other)),
            };
        let mut items = items.into_iter();
        for (i, k) in checked.into_iter().enumerate() {
            match k {
                Err(e) => results[i] = Err(e),
                Ok(key) => {
                    let item = items
                        .next()
                        .ok_or_else(|| Error::Protocol("short lookup reply".into()))?;
                    if item.code != 0 {
                        results[i] = Err(key_error(item.code, key));
                    } else {
                        plan.items[i] = Some(item);
                    }
                }
            }
        }
        plan.services = services;
        plan.lease = Duration::from_millis(lease_ms);
        Ok(plan)
    }

    /// Move the bytes of every found object into its buffers, then release the leases.
    fn fetch(
        &self,
        plan: Plan,
        bufs: &mut [&mut [&mut [u8]]],
        results: &mut [Result<u64>],
        deadline: Instant,
    ) {
        self.before_transfer();
        let own = self.local_rank();
        let mut leases = Vec::with_capacity(plan.items.len());
        let mut groups: BTreeMap<(u32, usize), Group<'_>> = BTreeMap::new();
        let mut lanes = Lanes::default();
        let mut alive = Vec::new();
        for (i, (item, parts)) in plan.items.iter().zip(bufs.iter_mut()).enumerate() {
            let Some(item) = item else { continue };
            leases.push(item.lease);
            let capacity: u64 = parts.iter().map(|p| p.len() as u64).sum();
            if capacity < item.size {
                warn!(
                    index = i,
                    size = item.size,
                    capacity,
                    "get refused: buffer smaller than the object"
                );
                results[i] = Err(Error::InvalidParam(format!(
                    "buffer of {capacity} bytes for an object of {} bytes",
                    item.size
                )));
                continue;
            }
            let Some(replica) = choose(&item.replicas, own, &plan.services) else {
                results[i] = Err(Error::LocalUnreachable {
                    endpoint: "none".into(),
                    reason: "no live replica".into(),
                });
                continue;
            };
            results[i] = Ok(item.size);
            if let Some(direct) =
                self.direct(replica.rank, replica.segment, &plan.services, &mut alive)
            {
                let (mut offset, mut left) = (replica.offset, item.size);
                for part in parts.iter_mut() {
                    if left == 0 {
                        break;
                    }
                    let n = left.min(part.len() as u64) as usize;
                    if let Err(e) = direct.copy_out(replica.segment, offset, &mut part[..n]) {
                        results[i] = Err(e);
                        break;
                    }
                    offset += n as u64;
                    left -= n as u64;
                }
                continue;
            }
            let addr = plan
                .services
                .iter()
                .find(|s| s.rank == replica.rank)
                .expect("choose() returns replicas with an address");
            let lane = lanes.pick(replica.rank, item.size);
            let g = groups.entry((replica.rank, lane)).or_insert_with(|| Group {
                endpoint: addr.data_endpoint.clone(),
                rank: addr.rank,
                incarnation: addr.incarnation,
                pieces: Vec::new(),
                bufs: Vec::new(),
                items: Vec::new(),
            });
            g.pieces.push(Piece {
                segment: replica.segment,
                offset: replica.offset,
                len: item.size,
            });
            let mut left = item.size;
            for part in parts.iter_mut() {
                if left == 0 {
                    break;
                }
                let n = left.min(part.len() as u64) as usize;
                if n > 0 {
                    g.bufs.push(IoSliceMut::new(&mut part[..n]));
                }
                left -= n as u64;
            }
            g.items.push(i);
        }
        let outcomes: Vec<(Vec<usize>, Result<()>)> = if groups.len() <= 1 {
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
        for (items, outcome) in outcomes {
            if let Err(e) = outcome {
                for i in items {
                    results[i] = Err(e.clone_error());
                }
            }
        }
        // A reader never returns bytes of space that may have been reused: the lease must still
        // have held when the copy finished (measured from before the lookup was sent).
        if plan.started.elapsed() >= plan.lease {
            for (r, item) in results.iter_mut().zip(&plan.items) {
                if item.is_some() && r.is_ok() {
                    warn!(
                        lease_ms = plan.lease.as_millis() as u64,
                        "get: read lease expired during the copy"
                    );
                    *r = Err(Error::Timeout {
                        ms: plan.lease.as_millis() as u64,
                        what: "read lease expired during the copy".into(),
                    });
                }
            }
        }
        self.release(leases);
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
            warn!(endpoint = %g.endpoint, keys = g.items.len(), error = %e, "get: read from local service failed");
        }
        (g.items, outcome)
    }
}

/// The replica to read: our own pool if we hold one, else the first with a known address.
fn choose(replicas: &[Replica], own: Option<u32>, services: &[ServiceAddr]) -> Option<Replica> {
    replicas
        .iter()
        .find(|r| Some(r.rank) == own)
        .or_else(|| {
            replicas
                .iter()
                .find(|r| services.iter().any(|s| s.rank == r.rank))
        })
        .copied()
}
