//! The index of objects this local service holds: key -> (segment, offset, len) of the replica
//! in its pools, for the committed objects the meta service placed here (DESIGN.md, "Recovery").
//!
//! The meta service numbers its changes per incarnation and sends them on heartbeat replies;
//! [`Index::apply`] applies them in order, each exactly once, and the next heartbeat acknowledges
//! [`Index::applied_seq`]. A `Reset` (the meta service dropped its outbox, or this service asked
//! for a resync) clears the index; a snapshot follows as ordinary additions. A change that does
//! not fit the index (a gap, a duplicate, an overlap, a range outside the pools) is not applied:
//! the index asks for a resync ([`Index::resync_wanted`]) and ignores everything until a `Reset`.
//!
//! Memory is bounded by the pools: entries of one segment never overlap, and there are at most
//! `min(pool bytes / MIN_UNIT_BYTES, SEGMENT_ENTRIES_MAX)` of them, as the meta service's
//! allocator never places more.

use std::collections::BTreeMap;

use mmc_controlplane::msg::{self, IndexChange};
use mmc_hal::alloc::MIN_UNIT_BYTES;

/// Most entries one segment's index holds (the meta service's allocator keeps at most 2^20
/// allocations per segment).
pub const SEGMENT_ENTRIES_MAX: u64 = 1 << 20;

/// Where this service holds one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub segment: u32,
    pub offset: u64,
    /// The object's size in bytes.
    pub len: u64,
    /// Orders puts of one key across meta restarts.
    pub version: u64,
    /// CRC-32C of the object's bytes.
    pub crc: u32,
    /// Replicas its put asked for.
    pub want: u16,
}

/// Why a change from the meta service was not applied. Each one is the meta service's fault (or
/// the network's): the index then asks for a resync.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("a batch of {0} index changes is over the limit of {max}", max = msg::INDEX_CHANGES_MAX)]
    TooMany(usize),
    #[error("index change {seq} after {applied}: changes are missing")]
    Gap { seq: u64, applied: u64 },
    #[error("index change {seq}: empty or over-long key")]
    BadKey { seq: u64 },
    #[error("index change {seq}: segment {segment} is not one of this incarnation's")]
    UnknownSegment { seq: u64, segment: u32 },
    #[error("index change {seq}: {offset}+{len} is not inside a pool of {pool_bytes} bytes")]
    OutsidePool {
        seq: u64,
        offset: u64,
        len: u64,
        pool_bytes: u64,
    },
    #[error("index change {seq}: {key:?} is already held")]
    Duplicate { seq: u64, key: String },
    #[error("index change {seq}: {key:?} overlaps an object already held")]
    Overlap { seq: u64, key: String },
    #[error("index change {seq}: segment {segment} is full ({entries} entries)")]
    Full {
        seq: u64,
        segment: u32,
        entries: u64,
    },
    #[error("index change {seq}: {key:?} is not held at that place")]
    NotHeld { seq: u64, key: String },
}

/// One pool of the current incarnation.
#[derive(Clone, Copy, Debug)]
struct Pool {
    segment: u32,
    bytes: u64,
    entries: u64,
    entries_max: u64,
}

/// The objects this service holds, under its current incarnation.
#[derive(Debug, Default)]
pub struct Index {
    entries: BTreeMap<String, IndexEntry>,
    /// (segment, offset) -> len of every entry: overlap checks.
    by_place: BTreeMap<(u32, u64), u64>,
    pools: Vec<Pool>,
    applied_seq: u64,
    resync_wanted: bool,
}

impl Index {
    /// Every entry, in key order.
    pub fn entries(&self) -> &BTreeMap<String, IndexEntry> {
        &self.entries
    }

    pub fn get(&self, key: &str) -> Option<&IndexEntry> {
        self.entries.get(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sequence number of the last change applied (0 = none in this incarnation).
    pub fn applied_seq(&self) -> u64 {
        self.applied_seq
    }

    /// A change did not fit: the index waits for a `Reset` and ignores every other change.
    pub fn resync_wanted(&self) -> bool {
        self.resync_wanted
    }

    /// Start empty for a new incarnation with these (segment id, pool bytes).
    pub(crate) fn start(&mut self, pools: impl IntoIterator<Item = (u32, u64)>) {
        let pools: Vec<Pool> = pools
            .into_iter()
            .map(|(segment, bytes)| Pool {
                segment,
                bytes,
                entries: 0,
                entries_max: (bytes / MIN_UNIT_BYTES).clamp(1, SEGMENT_ENTRIES_MAX),
            })
            .collect();
        assert!(!pools.is_empty(), "a service has pools");
        *self = Index {
            pools,
            ..Index::default()
        };
        debug_assert!(self.entries.is_empty() && self.applied_seq == 0);
    }

    /// Keep only the entries `keep` accepts (the driver checks each against its checksum before
    /// the service rejoins a restarted meta service); returns the keys dropped.
    /// `keep` gets the pool index (in registration order) of each entry.
    pub(crate) fn retain(
        &mut self,
        mut keep: impl FnMut(usize, &IndexEntry) -> bool,
    ) -> Vec<String> {
        let dropped: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| !keep(self.pool_of(e.segment).expect("an entry lies in a pool"), e))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &dropped {
            let e = self.entries.remove(key).expect("listed above");
            self.by_place.remove(&(e.segment, e.offset));
            self.pool_mut(e.segment)
                .expect("an entry lies in a pool")
                .entries -= 1;
        }
        debug_assert_eq!(self.entries.len(), self.by_place.len());
        dropped
    }

    /// The entries as a rejoin reports them: pool index instead of segment id, sorted by pool
    /// then offset.
    pub(crate) fn rejoin_entries(&self) -> Vec<msg::RejoinEntry> {
        let mut out: Vec<msg::RejoinEntry> = self
            .entries
            .iter()
            .map(|(key, e)| msg::RejoinEntry {
                key: key.clone(),
                pool: self.pool_of(e.segment).expect("an entry lies in a pool") as u32,
                offset: e.offset,
                len: e.len,
                version: e.version,
                crc: e.crc,
                want: e.want,
            })
            .collect();
        out.sort_by_key(|e| (e.pool, e.offset));
        out
    }

    /// The service rejoined under a new incarnation whose pools have these segment ids (in pool
    /// order): keep every entry, renamed, and count changes from 1 again.
    pub(crate) fn renumber(&mut self, segments: &[u32]) {
        assert_eq!(segments.len(), self.pools.len(), "one segment per pool");
        let old: Vec<u32> = self.pools.iter().map(|p| p.segment).collect();
        let rename = |s: u32| segments[old.iter().position(|o| *o == s).expect("a pool")];
        for e in self.entries.values_mut() {
            e.segment = rename(e.segment);
        }
        self.by_place = self
            .by_place
            .iter()
            .map(|(&(s, o), &l)| ((rename(s), o), l))
            .collect();
        for (p, s) in self.pools.iter_mut().zip(segments) {
            p.segment = *s;
        }
        self.applied_seq = 0;
        self.resync_wanted = false;
        debug_assert_eq!(self.entries.len(), self.by_place.len());
    }

    fn pool_of(&self, segment: u32) -> Option<usize> {
        self.pools.iter().position(|p| p.segment == segment)
    }

    /// Apply the changes numbered `first_seq`, `first_seq + 1`, ... that were not applied yet, in
    /// order. Stops at the first one that does not fit (the earlier ones stay applied).
    pub(crate) fn apply(
        &mut self,
        first_seq: u64,
        changes: &[IndexChange],
    ) -> Result<(), IndexError> {
        if changes.len() > msg::INDEX_CHANGES_MAX {
            self.resync_wanted = true;
            return Err(IndexError::TooMany(changes.len()));
        }
        for (i, change) in changes.iter().enumerate() {
            let Some(seq) = first_seq.checked_add(i as u64).filter(|s| *s > 0) else {
                self.resync_wanted = true;
                return Err(IndexError::Gap {
                    seq: 0,
                    applied: self.applied_seq,
                });
            };
            let reset = *change == IndexChange::Reset;
            // Already applied (a batch overlapping the previous one), or waiting for a reset.
            if seq <= self.applied_seq || (self.resync_wanted && !reset) {
                continue;
            }
            if seq != self.applied_seq + 1 && !reset {
                self.resync_wanted = true;
                let applied = self.applied_seq;
                return Err(IndexError::Gap { seq, applied });
            }
            if let Err(e) = self.apply_one(seq, change) {
                self.resync_wanted = true;
                return Err(e);
            }
            self.applied_seq = seq;
        }
        debug_assert_eq!(self.entries.len(), self.by_place.len());
        Ok(())
    }

    fn apply_one(&mut self, seq: u64, change: &IndexChange) -> Result<(), IndexError> {
        match change {
            IndexChange::Reset => {
                self.entries.clear();
                self.by_place.clear();
                self.pools.iter_mut().for_each(|p| p.entries = 0);
                self.resync_wanted = false;
            }
            IndexChange::Added {
                key,
                segment,
                offset,
                len,
                version,
                crc,
                want,
            } => {
                let entry = IndexEntry {
                    segment: *segment,
                    offset: *offset,
                    len: *len,
                    version: *version,
                    crc: *crc,
                    want: *want,
                };
                self.add(seq, key, entry)?
            }
            IndexChange::Removed {
                key,
                segment,
                offset,
            } => {
                let place = (*segment, *offset);
                match self.entries.get(key) {
                    Some(e) if (e.segment, e.offset) == place => {}
                    _ => {
                        return Err(IndexError::NotHeld {
                            seq,
                            key: key.clone(),
                        })
                    }
                }
                self.entries.remove(key);
                let held = self.by_place.remove(&place);
                assert!(held.is_some(), "entries and places mirror each other");
                let pool = self.pool_mut(*segment).expect("an entry lies in a pool");
                pool.entries -= 1;
            }
        }
        Ok(())
    }

    fn add(&mut self, seq: u64, key: &str, entry: IndexEntry) -> Result<(), IndexError> {
        let IndexEntry {
            segment,
            offset,
            len,
            ..
        } = entry;
        if key.is_empty() || key.len() > msg::KEY_BYTES_MAX {
            return Err(IndexError::BadKey { seq });
        }
        let pool = *self
            .pool_mut(segment)
            .ok_or(IndexError::UnknownSegment { seq, segment })?;
        let end = offset
            .checked_add(len)
            .filter(|e| len > 0 && *e <= pool.bytes);
        let Some(end) = end else {
            return Err(IndexError::OutsidePool {
                seq,
                offset,
                len,
                pool_bytes: pool.bytes,
            });
        };
        if self.entries.contains_key(key) {
            return Err(IndexError::Duplicate {
                seq,
                key: key.into(),
            });
        }
        let before = self.by_place.range(..=(segment, offset)).next_back();
        let after = self.by_place.range((segment, offset)..).next();
        let overlaps = before.is_some_and(|(&(s, o), &l)| s == segment && o + l > offset)
            || after.is_some_and(|(&(s, o), _)| s == segment && o < end);
        if overlaps {
            return Err(IndexError::Overlap {
                seq,
                key: key.into(),
            });
        }
        if pool.entries >= pool.entries_max {
            return Err(IndexError::Full {
                seq,
                segment,
                entries: pool.entries,
            });
        }
        self.entries.insert(key.to_string(), entry);
        self.by_place.insert((segment, offset), len);
        let pool = self.pool_mut(segment).expect("checked above");
        pool.entries += 1;
        assert!(pool.entries <= pool.entries_max);
        Ok(())
    }

    fn pool_mut(&mut self, segment: u32) -> Option<&mut Pool> {
        self.pools.iter_mut().find(|p| p.segment == segment)
    }
}

#[cfg(test)]
mod tests;
