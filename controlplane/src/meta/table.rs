//! Compact storage of the directory: what the meta service holds per object, sized for tens of
//! millions of objects (`mmc-bench --workloads meta-scale` measures the bytes per object).
//!
//! - [`Objects`]: every object (committed, pending, or unlinked but leased) in a slab of fixed
//!   chunks, found by its id through a table of 4-byte slot numbers. No per-object box, no hash
//!   map of whole objects (whose empty buckets cost as much as full ones).
//! - [`Keys`]: the linked keys, a table of 4-byte slot numbers hashed by the key the slot's object
//!   holds: each key is stored once, in its object.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::Object;

/// Objects per slab chunk: chunks are allocated whole and never move.
const CHUNK: usize = 1 << 14;

struct Slot {
    oid: u64,
    obj: Object,
}

/// Every object the core knows, by id.
pub(super) struct Objects {
    chunks: Vec<Box<[Option<Slot>]>>,
    /// Free slots, reused last-freed first.
    free: Vec<u32>,
    by_oid: HashTable<u32>,
}

/// Object ids are handed out in order by the core itself (never by a client): a multiplicative
/// hash spreads them evenly.
fn oid_hash(oid: u64) -> u64 {
    (oid ^ (oid >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Objects {
    pub(super) fn new() -> Objects {
        Objects {
            chunks: Vec::new(),
            free: Vec::new(),
            by_oid: HashTable::new(),
        }
    }

    fn slot(&self, s: u32) -> &Slot {
        let s = s as usize;
        self.chunks[s / CHUNK][s % CHUNK]
            .as_ref()
            .expect("an indexed slot holds an object")
    }

    fn slot_mut(&mut self, s: u32) -> &mut Slot {
        let s = s as usize;
        self.chunks[s / CHUNK][s % CHUNK]
            .as_mut()
            .expect("an indexed slot holds an object")
    }

    fn find(&self, oid: u64) -> Option<u32> {
        self.by_oid
            .find(oid_hash(oid), |&s| self.slot(s).oid == oid)
            .copied()
    }

    pub(super) fn len(&self) -> usize {
        self.by_oid.len()
    }

    #[cfg(test)]
    pub(super) fn contains_key(&self, oid: &u64) -> bool {
        self.find(*oid).is_some()
    }

    pub(super) fn get(&self, oid: &u64) -> Option<&Object> {
        self.find(*oid).map(|s| &self.slot(s).obj)
    }

    pub(super) fn get_mut(&mut self, oid: &u64) -> Option<&mut Object> {
        let s = self.find(*oid)?;
        Some(&mut self.slot_mut(s).obj)
    }

    /// Add object `oid`, which must be new (ids are never reused).
    pub(super) fn insert_new(&mut self, oid: u64, obj: Object) {
        assert!(self.find(oid).is_none(), "object id {oid} handed out twice");
        let s = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.chunks.len() * CHUNK;
                let s = u32::try_from(s).expect("fewer than 2^32 objects");
                self.chunks
                    .push((0..CHUNK).map(|_| None).collect::<Vec<_>>().into());
                // The rest of the new chunk, lowest first.
                self.free.extend((s + 1..s + CHUNK as u32).rev());
                s
            }
        };
        let at = &mut self.chunks[s as usize / CHUNK][s as usize % CHUNK];
        debug_assert!(at.is_none(), "a free slot is empty");
        *at = Some(Slot { oid, obj });
        let chunks = &self.chunks;
        self.by_oid.insert_unique(oid_hash(oid), s, |&t| {
            let t = t as usize;
            oid_hash(chunks[t / CHUNK][t % CHUNK].as_ref().expect("indexed").oid)
        });
    }

    pub(super) fn remove(&mut self, oid: &u64) -> Option<Object> {
        let chunks = &self.chunks;
        let entry = self
            .by_oid
            .find_entry(oid_hash(*oid), |&s| {
                let s = s as usize;
                chunks[s / CHUNK][s % CHUNK].as_ref().expect("indexed").oid == *oid
            })
            .ok()?;
        let (s, _) = entry.remove();
        let slot = self.chunks[s as usize / CHUNK][s as usize % CHUNK]
            .take()
            .expect("an indexed slot holds an object");
        self.free.push(s);
        Some(slot.obj)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &Object)> + '_ {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .filter_map(|s| s.as_ref().map(|s| (&s.oid, &s.obj)))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Object> + '_ {
        self.iter().map(|(_, o)| o)
    }
}

impl std::ops::Index<&u64> for Objects {
    type Output = Object;

    fn index(&self, oid: &u64) -> &Object {
        self.get(oid).expect("an object with this id")
    }
}

impl<'a> IntoIterator for &'a Objects {
    type Item = (&'a u64, &'a Object);
    type IntoIter = Box<dyn Iterator<Item = (&'a u64, &'a Object)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// The linked keys: key -> object id, each key stored only in its object.
pub(super) struct Keys {
    table: HashTable<u32>,
    /// Keys come from clients: a keyed hash, so none can aim their keys at one bucket.
    hasher: RandomState,
}

impl Keys {
    pub(super) fn new() -> Keys {
        Keys {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The object linked under `key`.
    pub(super) fn get(&self, objects: &Objects, key: &str) -> Option<u64> {
        self.table
            .find(self.hash(key), |&s| *objects.slot(s).obj.key == *key)
            .map(|&s| objects.slot(s).oid)
    }

    /// The object linked under `key`, with its id: one probe of each table.
    pub(super) fn get_obj<'a>(&self, objects: &'a Objects, key: &str) -> Option<(u64, &'a Object)> {
        self.table
            .find(self.hash(key), |&s| *objects.slot(s).obj.key == *key)
            .map(|&s| {
                let slot = objects.slot(s);
                (slot.oid, &slot.obj)
            })
    }

    pub(super) fn contains_key(&self, objects: &Objects, key: &str) -> bool {
        self.get(objects, key).is_some()
    }

    /// Link object `oid` under the key it holds; false (and nothing changes) when another
    /// object holds that key.
    pub(super) fn link(&mut self, objects: &Objects, oid: u64) -> bool {
        let s = objects.find(oid).expect("link of a live object");
        let key = &*objects.slot(s).obj.key;
        let hash = self.hash(key);
        if self
            .table
            .find(hash, |&t| *objects.slot(t).obj.key == *key)
            .is_some()
        {
            return false;
        }
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, s, |&t| hasher.hash_one(&*objects.slot(t).obj.key));
        true
    }

    /// Unlink `key`; the object that was linked under it.
    pub(super) fn remove(&mut self, objects: &Objects, key: &str) -> Option<u64> {
        let entry = self
            .table
            .find_entry(self.hash(key), |&s| *objects.slot(s).obj.key == *key)
            .ok()?;
        let (s, _) = entry.remove();
        Some(objects.slot(s).oid)
    }

    /// The linked object ids, in no order.
    pub(super) fn oids<'a>(&'a self, objects: &'a Objects) -> impl Iterator<Item = u64> + 'a {
        self.table.iter().map(|&s| objects.slot(s).oid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{Replicas, State};

    fn object(key: &str) -> Object {
        Object {
            key: key.into(),
            size: 1,
            replicas: Replicas::new(),
            state: State::Committed,
            recency: std::sync::atomic::AtomicU64::new(0),
            queued: 0,
            leases: 0,
            removed: false,
            client_id: 0,
            version: 0,
            crc: 0,
            want: 1,
        }
    }

    /// Objects and keys stay consistent through inserts, links, unlinks and removals that reuse
    /// slots across chunk boundaries, checked against a plain map.
    #[test]
    fn slots_and_keys_match_a_plain_map() {
        let (mut objects, mut keys) = (Objects::new(), Keys::new());
        let mut model: std::collections::HashMap<u64, String> = Default::default();
        let n = (CHUNK * 2 + 100) as u64;
        for oid in 1..=n {
            let key = format!("key-{}", oid % (n / 2));
            objects.insert_new(oid, object(&key));
            if keys.link(&objects, oid) {
                model.insert(oid, key);
            }
        }
        // Half the keys repeat: the later object of a key was refused.
        assert_eq!(keys.len(), (n / 2) as usize);
        assert_eq!(objects.len(), n as usize);
        for oid in (1..=n).filter(|o| o % 3 == 0) {
            let key = objects[&oid].key.clone();
            if model.remove(&oid).is_some() {
                assert_eq!(keys.remove(&objects, &key), Some(oid));
            } else {
                assert_ne!(keys.get(&objects, &key), Some(oid));
            }
            let obj = objects.remove(&oid).expect("inserted");
            assert_eq!(obj.key, key);
            assert!(objects.get(&oid).is_none() && objects.remove(&oid).is_none());
        }
        // Freed slots are reused by new ids.
        let chunks = objects.chunks.len();
        for oid in n + 1..=n + n / 3 {
            objects.insert_new(oid, object(&format!("new-{oid}")));
            assert!(keys.link(&objects, oid));
            model.insert(oid, format!("new-{oid}"));
        }
        assert_eq!(objects.chunks.len(), chunks, "freed slots reused first");
        assert_eq!(keys.len(), model.len());
        for (oid, key) in &model {
            assert_eq!(keys.get(&objects, key), Some(*oid));
            assert_eq!(keys.get_obj(&objects, key).map(|(o, _)| o), Some(*oid));
            assert_eq!(&*objects[oid].key, key.as_str());
        }
        let mut linked: Vec<u64> = keys.oids(&objects).collect();
        linked.sort_unstable();
        let mut expected: Vec<u64> = model.keys().copied().collect();
        expected.sort_unstable();
        assert_eq!(linked, expected);
        assert_eq!(objects.iter().count(), objects.len());
    }
}
