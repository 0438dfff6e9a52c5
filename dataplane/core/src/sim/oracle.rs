//! What the simulator knows independently of the cores, and the invariants it checks against it.

use std::collections::HashMap;

use mmc_controlplane::meta::MetaCore;

use super::rng::pattern;

/// A read lease a lookup handed out, as the checker tracks it.
pub struct LeaseView {
    pub rank: u32,
    pub incarnation: u64,
    pub offset: u64,
    pub len: u64,
    pub until_ms: u64,
}

#[derive(Default)]
pub struct Oracle {
    /// Every version ever put, per key: (version, size).
    pub attempts: HashMap<String, Vec<(u64, usize)>>,
    /// (meta generation, token) -> (key, version) of each allocation a client learnt.
    pub tokens: HashMap<(u64, u64), (String, u64)>,
    /// Version -> when the meta service made it visible.
    pub visible_at: HashMap<u64, u64>,
    /// (meta generation, lease id) -> the leased range of each replica.
    pub leases: HashMap<(u64, u64), Vec<LeaseView>>,
    pub checks: u64,
}

impl Oracle {
    /// Which put wrote `bytes` for `key`: the version whose pattern they are, if any.
    pub fn version_of(&self, key: &str, bytes: &[u8]) -> Option<u64> {
        let tries = self.attempts.get(key)?;
        tries
            .iter()
            .rev()
            .filter(|(_, size)| *size == bytes.len())
            .find(|(v, size)| {
                bytes.len() < 8 && pattern(key, *v, *size) == bytes
                    || bytes.len() >= 8
                        && bytes[..8] == v.to_le_bytes()
                        && pattern(key, *v, *size) == bytes
            })
            .map(|(v, _)| *v)
    }

    /// A get returned `bytes` for `key`, after a lookup the meta core handled at `lookup_ms`.
    pub fn check_get(&mut self, key: &str, bytes: &[u8], lookup_ms: u64) -> Result<(), String> {
        self.checks += 1;
        let Some(v) = self.version_of(key, bytes) else {
            return Err(format!(
                "get of {key:?} returned {} bytes that no put of this key wrote",
                bytes.len()
            ));
        };
        match self.visible_at.get(&v) {
            Some(&at) if at <= lookup_ms => Ok(()),
            Some(&at) => Err(format!(
                "get of {key:?} saw version {v} at {lookup_ms} ms, committed only at {at} ms"
            )),
            None => Err(format!(
                "get of {key:?} returned version {v}, which was never committed (a pending object was visible)"
            )),
        }
    }

    /// A write of `[offset, offset + len)` lands in the pool of `rank`, which the meta core knows
    /// at `incarnation` (if at all): it must not touch a committed object's bytes or a leased range.
    pub fn check_write(
        &mut self,
        meta: &MetaCore,
        now_ms: u64,
        rank: u32,
        segment_incarnation: Option<u64>,
        offset: u64,
        len: u64,
    ) -> Result<(), String> {
        self.checks += 1;
        let Some(incarnation) = segment_incarnation else {
            return Ok(());
        };
        let overlaps = |o: u64, l: u64| o < offset + len && offset < o + l;
        for obj in meta.committed_objects() {
            for r in &obj.replicas {
                if r.rank == rank && overlaps(r.offset, r.len) {
                    return Err(format!(
                        "a write of {len} bytes at {offset} on rank {rank} (incarnation {incarnation}) \
                         overwrote committed object {:?} at {}",
                        obj.key, r.offset
                    ));
                }
            }
        }
        for ((gen, id), l) in self
            .leases
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |l| (k, l)))
        {
            if l.rank == rank
                && l.incarnation == incarnation
                && l.until_ms > now_ms
                && overlaps(l.offset, l.len)
            {
                return Err(format!(
                    "a write of {len} bytes at {offset} on rank {rank} (incarnation {incarnation}) \
                     reused a range leased until {} ms (lease {id} of meta generation {gen})",
                    l.until_ms
                ));
            }
        }
        Ok(())
    }

    /// Every committed object reads back as one committed version of its key, on every replica
    /// whose service still runs the incarnation the meta core knows.
    pub fn check_directory(
        &mut self,
        meta: &MetaCore,
        pools: &dyn Fn(u32, u64) -> Option<Vec<u8>>,
    ) -> Result<(), String> {
        for obj in meta.committed_objects() {
            for r in &obj.replicas {
                let Some(inc) = meta.member_incarnation(r.rank) else {
                    continue;
                };
                let Some(pool) = pools(r.rank, inc) else {
                    continue;
                };
                let bytes = &pool[r.offset as usize..(r.offset + r.len) as usize];
                self.checks += 1;
                match self.version_of(&obj.key, bytes) {
                    Some(v) if self.visible_at.contains_key(&v) => {}
                    Some(v) => {
                        return Err(format!(
                            "committed object {:?} on rank {} holds version {v}, never committed",
                            obj.key, r.rank
                        ))
                    }
                    None => {
                        return Err(format!(
                            "committed object {:?} on rank {} at {} holds bytes no put wrote",
                            obj.key, r.rank, r.offset
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}
