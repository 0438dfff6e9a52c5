//! vllm-ascend's layer-wise path: `batch_alloc` stages puts and returns one address per key,
//! `batch_copy` / `batch_copy_layers` move bytes between caller memory and any byte of a staged
//! or leased object, `batch_write_finish` commits (or frees) staged puts, `batch_add_lease` /
//! `batch_remove_lease` pin objects for reading. See `session` for how addresses resolve.

use std::time::{Duration, Instant};

use mmc_controlplane::msg::{self, BATCH_KEYS_MAX};
use mmc_core::transport::DevSpan;
use mmc_dataplane::{Client, PoolRange, STAGED_WRITE_MS};
use pyo3::prelude::*;
use tracing::warn;

use crate::buffers::{any_overlap, key_arg, ptr_int, region, seq, size_arg, BufGuard, Region};
use crate::codes::{self, Code, INVALID, NOT_INIT, OK};
use crate::compat::{gva, put_options};
use crate::direct::{copy_direction, Op};
use crate::session::{range, Place};
use crate::DistributedObjectStore;

/// -3101: the key is staged here and not finished (not yet written).
const NOT_WRITTEN: i32 = Code::UnmatchedState as i32;
/// -3007.
const NOT_FOUND: i32 = Code::ObjectNotExists as i32;
/// -3004: an allocation past its write window, a lease that ended during the copy.
const TIMED_OUT: i32 = Code::Timeout as i32;

/// One piece of a `batch_copy`: (address, pointer or buffer, size).
pub(crate) type Piece<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Bound<'py, PyAny>);

/// One resolved copy: caller memory and where it goes (or comes from) in the pools.
struct Copy {
    mem: Region,
    place: Place,
}

/// The keys of a batch call as strings (`Err(())` for a bad list); a bad key is `None`.
fn keys_of(keys: &Bound<'_, PyAny>) -> Result<Vec<Option<String>>, ()> {
    let v = seq(keys).map_err(|_| ())?;
    if v.len() > BATCH_KEYS_MAX {
        warn!(keys = v.len(), "batch call: too many keys");
        return Err(());
    }
    Ok(v.iter().map(|k| key_arg(k).ok()).collect())
}

/// A list of ints (sizes, result codes); bools are refused.
fn ints(obj: &Bound<'_, PyAny>) -> Result<Vec<i64>, i32> {
    seq(obj)?
        .iter()
        .map(|o| {
            if o.is_instance_of::<pyo3::types::PyBool>() {
                return Err(INVALID);
            }
            o.extract::<i64>().map_err(|_| INVALID)
        })
        .collect()
}

impl DistributedObjectStore {
    fn window(&self) -> Duration {
        let client_ms = self
            .inner
            .client()
            .map(|c| c.timeout().as_millis() as u64)
            .unwrap_or(STAGED_WRITE_MS);
        Duration::from_millis(STAGED_WRITE_MS.min(client_ms))
    }

    /// `batch_alloc`: one address per key (0 for a key that got no space or already exists).
    pub(crate) fn lw_alloc(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
        media: Option<&Bound<'_, PyAny>>,
        replicate: Option<&Bound<'_, PyAny>>,
    ) -> Vec<u64> {
        let Ok(keys) = keys_of(keys) else {
            return Vec::new();
        };
        let n = keys.len();
        let Some(client) = self.client() else {
            return vec![0; n];
        };
        let sizes = match ints(sizes) {
            Ok(s) if s.len() == n => s,
            _ => {
                warn!("batch_alloc: sizes must be a list of ints, one per key");
                return vec![0; n];
            }
        };
        let media = match media.filter(|m| !m.is_none()).map(|m| m.extract::<i64>()) {
            None => msg::MEDIA_NONE,
            Some(Ok(0)) => msg::MEDIA_HBM,
            Some(Ok(1)) => msg::MEDIA_DRAM,
            Some(_) => {
                warn!("batch_alloc: media must be 0 (HBM), 1 (DRAM) or None (any tier)");
                return vec![0; n];
            }
        };
        let Ok(mut opts) = put_options(replicate) else {
            return vec![0; n];
        };
        opts.media = media;
        let mut out = vec![0u64; n];
        let todo: Vec<(usize, String, u64)> = {
            let session = self.inner.session();
            let mut seen = std::collections::HashSet::new();
            keys.into_iter()
                .zip(&sizes)
                .enumerate()
                .filter_map(|(i, (k, &s))| {
                    let k = k?;
                    let fresh = s > 0 && !session.is_staged(&k) && seen.insert(k.clone());
                    if !fresh {
                        warn!(key = k, "batch_alloc: zero size, or staged twice");
                    }
                    fresh.then_some((i, k, s as u64))
                })
                .collect()
        };
        if todo.is_empty() {
            return out;
        }
        let results = py.detach(|| {
            let ks: Vec<&str> = todo.iter().map(|(_, k, _)| k.as_str()).collect();
            let ss: Vec<u64> = todo.iter().map(|(_, _, s)| *s).collect();
            client.stage_puts(&ks, &ss, &opts)
        });
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "batch_alloc failed");
                return out;
            }
        };
        let mut unusable = Vec::new();
        {
            let mut session = self.inner.session();
            for ((i, key, _), r) in todo.into_iter().zip(results) {
                match r {
                    Ok(s) => {
                        let first = gva(&s.replicas[0]);
                        let (token, replicas) = (s.token, s.replicas.len());
                        if session.stage(&key, s) {
                            out[i] = first as u64;
                        } else {
                            warn!(
                                key,
                                replicas, "batch_alloc: a replica's place does not fit a GVA"
                            );
                            unusable.push((key, token));
                        }
                    }
                    Err(e) => warn!(key, error = %e, "batch_alloc: no allocation"),
                }
            }
        }
        if !unusable.is_empty() {
            // Give their space back at once.
            let ks: Vec<&str> = unusable.iter().map(|(k, _)| k.as_str()).collect();
            let ts: Vec<u64> = unusable.iter().map(|(_, t)| *t).collect();
            let n = ks.len();
            let _ = py.detach(|| client.finish_puts(&ks, &ts, &vec![false; n], &vec![0; n]));
        }
        out
    }

    /// `batch_copy` and `batch_copy_layers`: `items` is (address, pointer, size) per piece.
    pub(crate) fn lw_copy(
        &self,
        py: Python<'_>,
        items: Vec<Piece<'_>>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        let (op, mode) = match copy_direction(direct) {
            Ok(d) => d,
            Err(c) => return c,
        };
        if items.is_empty() {
            return OK;
        }
        let writable = op == Op::Get;
        let window = self.window();
        let mut guards: Vec<BufGuard<'_>> = Vec::new();
        let mut copies = Vec::with_capacity(items.len());
        {
            let session = self.inner.session();
            for (addr, ptr, size) in &items {
                let Ok(Some(addr)) = ptr_int(addr) else {
                    warn!("batch_copy: an address must be an int from batch_alloc / gva_list");
                    return INVALID;
                };
                let mem = match region(ptr, Some(size), writable, &mut guards) {
                    Ok(r) => r,
                    Err(c) => return c,
                };
                let place = match op {
                    Op::Put => session.for_write(addr as u64, window),
                    Op::Get => session.for_read(addr as u64, window),
                };
                let Some(place) = place else {
                    warn!(
                        addr,
                        ?op,
                        "batch_copy: the address is not inside an object this store \
                        staged (batch_alloc) or leased (batch_add_lease)"
                    );
                    return INVALID;
                };
                if mem.len as u64 > place.room {
                    warn!(
                        addr,
                        size = mem.len,
                        room = place.room,
                        key = place.key,
                        "batch_copy: the copy runs past the object's end"
                    );
                    return INVALID;
                }
                copies.push(Copy { mem, place });
            }
        }
        let device = mode == crate::direct::Mode::Device;
        if device {
            let dev = mmc_hal::device::active();
            if let Some(c) = copies.iter().find(|c| {
                !matches!(
                    dev.classify(c.mem.addr as u64),
                    mmc_hal::device::PtrKind::Device(_)
                )
            }) {
                warn!(
                    ptr = c.mem.addr,
                    backend = dev.kind().name(),
                    "batch_copy: a device direction (L2G / G2L) was given memory that is not \
                     device memory"
                );
                return INVALID;
            }
        } else if mmc_hal::device::active().kind() != mmc_hal::device::BackendKind::None {
            let dev = mmc_hal::device::active();
            if copies
                .iter()
                .any(|c| dev.classify(c.mem.addr as u64) != mmc_hal::device::PtrKind::Host)
            {
                warn!("batch_copy: a host direction (H2G / G2H) was given device memory");
                return INVALID;
            }
        }
        if writable && !device {
            let mut regions: Vec<Region> = copies.iter().map(|c| c.mem).collect();
            if any_overlap(&mut regions) {
                warn!("batch_copy: destination buffers overlap");
                return INVALID;
            }
        }
        let code = py.detach(|| match op {
            Op::Put => write(&client, &copies, device),
            Op::Get => read(&client, &copies, device),
        });
        drop(guards);
        code
    }

    /// `batch_write_finish`: one code per key.
    pub(crate) fn lw_finish(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        results: &Bound<'_, PyAny>,
    ) -> Vec<i32> {
        let Ok(keys) = keys_of(keys) else {
            return vec![INVALID];
        };
        let n = keys.len();
        let Some(client) = self.client() else {
            return vec![NOT_INIT; n];
        };
        let results = match ints(results) {
            Ok(r) if r.len() == n => r,
            _ => {
                warn!("batch_write_finish: results must be a list of ints, one per key");
                return vec![INVALID; n];
            }
        };
        let mut out = vec![NOT_FOUND; n];
        let mut todo = Vec::new();
        {
            let mut session = self.inner.session();
            for (i, (k, r)) in keys.iter().zip(&results).enumerate() {
                match k {
                    None => out[i] = INVALID,
                    Some(k) => {
                        if let Some(s) = session.take_staged(k) {
                            todo.push((i, k.clone(), s, *r == 0));
                        }
                    }
                }
            }
        }
        if todo.is_empty() {
            return out;
        }
        let committed = py.detach(|| {
            // The commit carries the object's CRC-32C: read it back once from a replica.
            let mut ok = Vec::with_capacity(todo.len());
            let mut crcs = Vec::with_capacity(todo.len());
            let mut early = vec![None; todo.len()];
            for (j, (_, key, s, written)) in todo.iter().enumerate() {
                let crc = if *written {
                    checksum(&client, s)
                } else {
                    Ok(0)
                };
                match crc {
                    Ok(c) => {
                        ok.push(*written);
                        crcs.push(c);
                    }
                    Err(code) => {
                        warn!(
                            key,
                            code, "batch_write_finish: the object could not be read back; freed"
                        );
                        ok.push(false);
                        crcs.push(0);
                        early[j] = Some(code);
                    }
                }
            }
            let ks: Vec<&str> = todo.iter().map(|(_, k, _, _)| k.as_str()).collect();
            let ts: Vec<u64> = todo.iter().map(|(_, _, s, _)| s.token).collect();
            (client.finish_puts(&ks, &ts, &ok, &crcs), early)
        });
        match committed {
            (Ok(rs), early) => {
                for (((i, ..), r), e) in todo.iter().zip(rs).zip(early) {
                    out[*i] = e.unwrap_or_else(|| codes::of_result(&r));
                }
            }
            (Err(e), _) => {
                for (i, ..) in &todo {
                    out[*i] = codes::of(&e);
                }
            }
        }
        out
    }

    /// `batch_add_lease`: one code per key.
    pub(crate) fn lw_add_lease(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
    ) -> Vec<i32> {
        let Ok(keys) = keys_of(keys) else {
            return vec![INVALID];
        };
        let n = keys.len();
        let Some(client) = self.client() else {
            return vec![NOT_INIT; n];
        };
        match size_arg(ttl) {
            Err(_) => {
                warn!("batch_add_lease: lease_ttl_ms must be an int >= 0");
                return vec![INVALID; n];
            }
            Ok(Some(_)) => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    warn!(
                        "batch_add_lease: lease_ttl_ms is not honoured: a lease lasts the meta \
                         service's lease_ms (set that to the longest load)"
                    )
                });
            }
            Ok(None) => {}
        }
        let mut out = vec![OK; n];
        let mut todo = Vec::new();
        {
            let session = self.inner.session();
            for (i, k) in keys.iter().enumerate() {
                match k {
                    None => out[i] = INVALID,
                    Some(k) if session.is_staged(k) => out[i] = NOT_WRITTEN,
                    Some(k) => todo.push((i, k.clone())),
                }
            }
        }
        if todo.is_empty() {
            return out;
        }
        let ks: Vec<&str> = todo.iter().map(|(_, k)| k.as_str()).collect();
        let leased = py.detach(|| client.lease(&ks));
        let leased = match leased {
            Ok(l) => l,
            Err(e) => {
                for (i, _) in &todo {
                    out[*i] = codes::of(&e);
                }
                return out;
            }
        };
        let mut release = Vec::new();
        {
            let mut session = self.inner.session();
            for ((i, key), r) in todo.iter().zip(leased) {
                match r {
                    Ok(l) => {
                        let id = l.lease;
                        let (old, kept) = session.lease(key, l);
                        release.extend(old.map(|o| o.lease));
                        if !kept {
                            release.push(id);
                            out[*i] = INVALID;
                        }
                    }
                    Err(e) => out[*i] = codes::of(&e),
                }
            }
        }
        client.release_leases(release);
        out
    }

    /// `batch_remove_lease`: 0 when every key held a lease from this store (all given back),
    /// else -3007 (the leases that were held are given back all the same).
    pub(crate) fn lw_remove_lease(&self, keys: &Bound<'_, PyAny>) -> i32 {
        let Ok(keys) = keys_of(keys) else {
            return INVALID;
        };
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        let mut leases = Vec::new();
        let mut missing = false;
        {
            let mut session = self.inner.session();
            for k in &keys {
                match k.as_deref().and_then(|k| session.take_lease(k)) {
                    Some(l) => leases.push(l.lease),
                    None => missing = true,
                }
            }
        }
        client.release_leases(leases);
        if missing {
            NOT_FOUND
        } else {
            OK
        }
    }
}

/// Write every copy into every replica of its object: 0 or the first failure's code.
fn write(client: &Client, copies: &[Copy], device: bool) -> i32 {
    let now = Instant::now();
    let mut writes: Vec<(PoolRange, &[u8])> = Vec::new();
    let mut dev_writes: Vec<(PoolRange, DevSpan)> = Vec::new();
    let mut services = Vec::new();
    for c in copies {
        if now >= c.place.until {
            warn!(
                key = c.place.key,
                "batch_copy: the allocation is past its write window \
                (batch_write_finish it sooner); nothing written"
            );
            return TIMED_OUT;
        }
        for r in &c.place.replicas {
            let Some(to) = range(r, &c.place.services, c.place.offset) else {
                return codes::of(&mmc_dataplane::Error::LocalUnreachable {
                    endpoint: format!("rank {}", r.rank),
                    reason: "no address".into(),
                });
            };
            if device {
                dev_writes.push((to, span(c.mem)));
                continue;
            }
            // SAFETY: `c.mem` is a non-null, non-empty, non-wrapping range (checked by
            // `buffers::region`) that the caller vouches for (an int pointer valid for the call)
            // or that a `BufGuard` held by the calling frame keeps exported until this returns.
            writes.push((to, unsafe { c.mem.as_slice() }));
        }
        services.extend(c.place.services.iter().cloned());
    }
    services.sort_by_key(|s| s.rank);
    services.dedup_by_key(|s| s.rank);
    let deadline = now + client.timeout();
    if device {
        return first_error(&client.write_ranges_device(dev_writes, &services, deadline));
    }
    first_error(&client.write_ranges(writes, &services, deadline))
}

/// A device buffer's span.
fn span(r: Region) -> DevSpan {
    DevSpan {
        addr: r.addr as u64,
        len: r.len as u64,
    }
}

/// Read every copy from the replica its address named, falling over to the object's other
/// replicas: 0 or the first failure's code. A read that ends after its lease is -3004.
fn read(client: &Client, copies: &[Copy], device: bool) -> i32 {
    let mut tried = vec![0usize; copies.len()];
    let mut todo: Vec<usize> = (0..copies.len()).collect();
    while !todo.is_empty() {
        let now = Instant::now();
        let mut reads: Vec<(PoolRange, &mut [u8])> = Vec::new();
        let mut dev_reads: Vec<(PoolRange, DevSpan)> = Vec::new();
        let mut services = Vec::new();
        let mut sent = Vec::new();
        for &i in &todo {
            let p = &copies[i].place;
            let r = &p.replicas[(p.replica + tried[i]) % p.replicas.len()];
            let Some(from) = range(r, &p.services, p.offset) else {
                warn!(
                    key = p.key,
                    rank = r.rank,
                    "batch_copy: no address for a replica's service"
                );
                return Code::NotConnectLocal as i32;
            };
            if device {
                dev_reads.push((from, span(copies[i].mem)));
            } else {
                // SAFETY: as in `write`; the destinations do not overlap (checked by the
                // caller) and each is handed out once per round.
                reads.push((from, unsafe { copies[i].mem.as_mut_slice() }));
            }
            services.extend(p.services.iter().cloned());
            sent.push(i);
        }
        services.sort_by_key(|s| s.rank);
        services.dedup_by_key(|s| s.rank);
        let deadline = now + client.timeout();
        let outcomes = if device {
            client.read_ranges_device(dev_reads, &services, deadline)
        } else {
            client.read_ranges(reads, &services, deadline)
        };
        let done = Instant::now();
        let mut again = Vec::new();
        for (i, o) in sent.into_iter().zip(outcomes) {
            match o {
                Ok(()) if done > copies[i].place.until => {
                    warn!(
                        key = copies[i].place.key,
                        "batch_copy: the read lease ended during the copy"
                    );
                    return TIMED_OUT;
                }
                Ok(()) => {}
                Err(e) => {
                    tried[i] += 1;
                    if tried[i] < copies[i].place.replicas.len() {
                        warn!(key = copies[i].place.key, error = %e,
                            "batch_copy: a replica failed; reading the next one");
                        again.push(i);
                    } else {
                        return codes::of(&e);
                    }
                }
            }
        }
        todo = again;
    }
    OK
}

/// CRC-32C of a staged object's bytes, read back from one of its replicas.
fn checksum(client: &Client, s: &mmc_dataplane::StagedPut) -> Result<u32, i32> {
    let mut buf = vec![0u8; s.size as usize];
    let mut last = INVALID;
    for r in &s.replicas {
        let Some(from) = range(r, &s.services, 0) else {
            continue;
        };
        let deadline = Instant::now() + client.timeout();
        match client
            .read_ranges(vec![(from, &mut buf[..])], &s.services, deadline)
            .remove(0)
        {
            Ok(()) => return Ok(mmc_dataplane::checksum([&buf[..]])),
            Err(e) => last = codes::of(&e),
        }
    }
    Err(last)
}

fn first_error(outcomes: &[mmc_dataplane::Result<()>]) -> i32 {
    outcomes
        .iter()
        .find_map(|o| o.as_ref().err().map(codes::of))
        .unwrap_or(OK)
}

/// `batch_copy_layers`' arguments as (address, pointer, size) pieces: the pieces of one address
/// lie back to back from it.
pub(crate) fn pieces<'py>(
    py: Python<'py>,
    addrs: &Bound<'py, PyAny>,
    ptrs_list: &Bound<'py, PyAny>,
    sizes_list: &Bound<'py, PyAny>,
) -> Result<Vec<Piece<'py>>, i32> {
    let (addrs, ptrs, sizes) = (seq(addrs)?, seq(ptrs_list)?, seq(sizes_list)?);
    if addrs.len() != ptrs.len() || addrs.len() != sizes.len() {
        return Err(INVALID);
    }
    let mut out = Vec::new();
    for ((a, p), s) in addrs.iter().zip(&ptrs).zip(&sizes) {
        let mut at = ptr_int(a)?.ok_or(INVALID)? as u64;
        let (p, s) = (seq(p)?, ints(s)?);
        if p.len() != s.len() {
            return Err(INVALID);
        }
        for (p, n) in p.into_iter().zip(s) {
            let n = u64::try_from(n).map_err(|_| INVALID)?;
            out.push((
                at.into_pyobject(py).map_err(|_| INVALID)?.into_any(),
                p,
                n.into_pyobject(py).map_err(|_| INVALID)?.into_any(),
            ));
            at = at.checked_add(n).ok_or(INVALID)?;
        }
    }
    Ok(out)
}
