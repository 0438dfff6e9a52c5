//! What one store has staged (`batch_alloc`, not yet `batch_write_finish`ed) and leased
//! (`batch_add_lease`, not yet `batch_remove_lease`d), indexed by the global address of every
//! replica, so that `batch_copy` can resolve any address inside one of these objects.
//!
//! An address (a GVA, `rank << 48 | segment << 40 | offset`, see `compat::gva`) names a byte of
//! one pool of one local service. `batch_copy` accepts only addresses inside an object this store
//! staged (writes, and reads of its own unfinished bytes) or holds a read lease on (reads): that
//! is what keeps a copy from landing on space the meta service has given to another object.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use mmc_controlplane::msg::{Replica, ServiceAddr};
use mmc_dataplane::{Leased, PoolRange, StagedPut};

use crate::compat::gva;

/// Where an address points: one replica of one staged or leased object.
pub(crate) struct Place {
    pub(crate) key: String,
    /// The replica the address named (index into `replicas`).
    pub(crate) replica: usize,
    /// Byte offset inside the object.
    pub(crate) offset: u64,
    /// Bytes from there to the object's end.
    pub(crate) room: u64,
    pub(crate) replicas: Vec<Replica>,
    pub(crate) services: Vec<ServiceAddr>,
    /// Writes: when the staged object stops taking writes. Reads: when the lease ends.
    pub(crate) until: Instant,
}

/// The pool range at `offset` inside replica `r` of an object on the services `services`; `None`
/// when the meta service gave no address for its rank.
pub(crate) fn range(r: &Replica, services: &[ServiceAddr], offset: u64) -> Option<PoolRange> {
    let s = services.iter().find(|s| s.rank == r.rank)?;
    Some(PoolRange {
        rank: r.rank,
        incarnation: s.incarnation,
        segment: r.segment,
        offset: r.offset + offset,
    })
}

#[derive(Default)]
pub(crate) struct Session {
    staged: HashMap<String, StagedPut>,
    leased: HashMap<String, Leased>,
    /// GVA of each replica's first byte -> key.
    staged_at: BTreeMap<u64, String>,
    leased_at: BTreeMap<u64, String>,
}

/// The GVAs of an object's replicas; `None` when one does not fit the GVA's fields.
fn gvas(replicas: &[Replica]) -> Option<Vec<u64>> {
    replicas
        .iter()
        .map(|r| u64::try_from(gva(r)).ok())
        .collect()
}

fn index(at: &mut BTreeMap<u64, String>, replicas: &[Replica], key: &str) -> bool {
    let Some(g) = gvas(replicas) else {
        return false;
    };
    for g in g {
        at.insert(g, key.to_string());
    }
    true
}

fn unindex(at: &mut BTreeMap<u64, String>, replicas: &[Replica]) {
    for g in gvas(replicas).unwrap_or_default() {
        at.remove(&g);
    }
}

/// The object of `at` whose replica holds `addr`: (key, replica's GVA).
fn find(at: &BTreeMap<u64, String>, addr: u64) -> Option<(&String, u64)> {
    at.range(..=addr).next_back().map(|(g, k)| (k, *g))
}

impl Session {
    pub(crate) fn is_staged(&self, key: &str) -> bool {
        self.staged.contains_key(key)
    }

    pub(crate) fn staged(&self, key: &str) -> Option<&StagedPut> {
        self.staged.get(key)
    }

    /// Record a staged put; `false` (nothing recorded) when a replica's address does not fit a
    /// GVA.
    pub(crate) fn stage(&mut self, key: &str, s: StagedPut) -> bool {
        if !index(&mut self.staged_at, &s.replicas, key) {
            return false;
        }
        self.staged.insert(key.to_string(), s);
        true
    }

    pub(crate) fn take_staged(&mut self, key: &str) -> Option<StagedPut> {
        let s = self.staged.remove(key)?;
        unindex(&mut self.staged_at, &s.replicas);
        Some(s)
    }

    /// Record a lease; returns the one it replaces (to release) and whether it was recorded.
    pub(crate) fn lease(&mut self, key: &str, l: Leased) -> (Option<Leased>, bool) {
        let old = self.take_lease(key);
        if !index(&mut self.leased_at, &l.replicas, key) {
            return (old, false);
        }
        self.leased.insert(key.to_string(), l);
        (old, true)
    }

    pub(crate) fn take_lease(&mut self, key: &str) -> Option<Leased> {
        let l = self.leased.remove(key)?;
        unindex(&mut self.leased_at, &l.replicas);
        Some(l)
    }

    /// Forget everything (at `close`): the lease ids to give back.
    pub(crate) fn clear(&mut self) -> Vec<u64> {
        self.staged.clear();
        self.staged_at.clear();
        self.leased_at.clear();
        self.leased.drain().map(|(_, l)| l.lease).collect()
    }

    /// Resolve an address for a write: inside an object staged here.
    pub(crate) fn for_write(&self, addr: u64, window: std::time::Duration) -> Option<Place> {
        let (key, g) = find(&self.staged_at, addr)?;
        let s = &self.staged[key];
        place(
            key,
            g,
            addr,
            s.size,
            &s.replicas,
            &s.services,
            s.allocated + window,
        )
    }

    /// Resolve an address for a read: inside an object leased here, or staged here.
    pub(crate) fn for_read(&self, addr: u64, window: std::time::Duration) -> Option<Place> {
        if let Some((key, g)) = find(&self.leased_at, addr) {
            let l = &self.leased[key];
            if let Some(p) = place(key, g, addr, l.size, &l.replicas, &l.services, l.until) {
                return Some(p);
            }
        }
        self.for_write(addr, window)
    }
}

fn place(
    key: &str,
    g: u64,
    addr: u64,
    size: u64,
    replicas: &[Replica],
    services: &[ServiceAddr],
    until: Instant,
) -> Option<Place> {
    let offset = addr - g;
    if offset >= size {
        return None;
    }
    let replica = replicas
        .iter()
        .position(|r| u64::try_from(gva(r)).ok() == Some(g))?;
    Some(Place {
        key: key.to_string(),
        replica,
        offset,
        room: size - offset,
        replicas: replicas.to_vec(),
        services: services.to_vec(),
        until,
    })
}
