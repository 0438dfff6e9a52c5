//! Keyed operations of the core: two-phase put, lookup with leases, query, exist, remove.

use tracing::{debug, warn};

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::held::Hold;
use super::{check_key, error_reply, MetaCore, Object, State};
use crate::error::Code;
use crate::msg::{self, AllocItem, CommitItem, LookupItem, Reply};

impl MetaCore {
    pub(super) fn alloc(&mut self, now_ms: u64, a: msg::AllocRequest) -> Reply {
        if a.items.len() > msg::BATCH_KEYS_MAX {
            return error_reply(Code::InvalidParam, "too many keys in one batch");
        }
        if a.replicas as usize > msg::REPLICAS_MAX || a.media > msg::MEDIA_NONE {
            return error_reply(Code::InvalidParam, "replica count over 8 or unknown media");
        }
        let mut items = Vec::with_capacity(a.items.len());
        for (key, size) in &a.items {
            items.push(self.alloc_one(now_ms, &a, key, *size));
        }
        let services =
            self.service_addrs(items.iter().flat_map(|i| i.replicas.iter().map(|r| r.rank)));
        Reply::Alloc { items, services }
    }

    fn alloc_one(&mut self, now_ms: u64, a: &msg::AllocRequest, key: &str, size: u64) -> AllocItem {
        let refuse = |code: Code| AllocItem {
            code: code.as_i32(),
            retry: false,
            token: 0,
            replicas: Vec::new(),
        };
        if check_key(key).is_err() || size == 0 {
            warn!(
                key,
                size, "put refused: empty or over-long key, or zero size"
            );
            return refuse(Code::InvalidParam);
        }
        if self.keys.contains_key(&self.objects, key) {
            debug!(key, "put refused: key exists");
            return refuse(Code::DuplicatedObject);
        }
        let placed = match self.place(a, key, size) {
            Ok(placed) => placed,
            // Retry only when read leases hold space the object would fit in once released.
            Err(refusal) => {
                debug_assert!(
                    refusal.code != Code::Ok
                        && (!refusal.retry || refusal.code == Code::ExceedCapacity)
                );
                return AllocItem {
                    retry: refusal.retry,
                    ..refuse(refusal.code)
                };
            }
        };
        assert!(!placed.is_empty(), "placement returns at least one replica");
        let oid = self.next_oid;
        self.next_oid += 1;
        for (r, space) in &placed {
            assert_eq!((space.offset, space.len), (r.offset, size));
            let seg = self
                .segments
                .get_mut(&r.segment)
                .expect("placed on a live segment");
            seg.objects = seg.objects.checked_add(1).expect("object count overflow");
        }
        let deadline_ms = now_ms.saturating_add(self.params.pending_timeout_ms);
        let replicas = placed.iter().map(|(r, _)| *r).collect();
        let want = (a.replicas.max(1) as usize)
            .max(placed.len())
            .min(msg::REPLICAS_MAX) as u16;
        self.objects.insert_new(
            oid,
            Object {
                key: key.into(),
                size,
                replicas: placed.into_iter().collect(),
                state: State::Pending { deadline_ms },
                recency: AtomicU64::new(0),
                queued: 0,
                leases: 0,
                removed: false,
                client_id: a.client_id,
                version: oid,
                crc: 0,
                want,
            },
        );
        self.hold(oid, Hold::Pending, true);
        let fresh = self.pending.insert((deadline_ms, oid));
        let linked = self.keys.link(&self.objects, oid);
        assert!(fresh && linked, "a new put of a free key");
        AllocItem {
            code: 0,
            retry: false,
            token: oid,
            replicas,
        }
    }

    pub(super) fn commit(&mut self, items: Vec<(String, CommitItem)>) -> Reply {
        let codes = items
            .into_iter()
            .map(|(key, item)| self.commit_one(&key, item).as_i32())
            .collect();
        Reply::Commit { codes }
    }

    pub(super) fn commit_one(&mut self, key: &str, item: CommitItem) -> Code {
        let Some(obj) = self.objects.get(&item.token) else {
            warn!(key, "commit of an unknown or reclaimed put");
            return Code::Timeout;
        };
        if &*obj.key != key {
            return Code::UnmatchedKey;
        }
        let State::Pending { deadline_ms } = obj.state else {
            return Code::UnmatchedState;
        };
        if obj.removed {
            warn!(
                key,
                "commit of a put abandoned when its writer's connections closed"
            );
            return Code::Timeout;
        }
        if !item.ok {
            debug!(key, "put aborted by its writer");
            let linked = self.keys.remove(&self.objects, key);
            assert_eq!(linked, Some(item.token), "a pending object holds its key");
            // Also drops the pending entry.
            self.free_object(item.token);
            return Code::Ok;
        }
        let was_pending = self.pending.remove(&(deadline_ms, item.token));
        assert!(was_pending, "a pending object is indexed by its deadline");
        self.hold(item.token, Hold::Pending, false);
        let recency = self.bump_recency();
        let obj = self.objects.get_mut(&item.token).expect("checked above");
        assert!(obj.leases == 0 && !obj.removed, "nobody saw the object yet");
        obj.state = State::Committed;
        *obj.recency.get_mut() = recency;
        obj.crc = item.crc;
        // Written while its members were paused, it is evictable once one comes back.
        self.lru_insert(item.token);
        self.index_added(item.token);
        self.note_replicas(item.token);
        Code::Ok
    }

    pub(super) fn lookup(&mut self, now_ms: u64, keys: Vec<String>) -> Reply {
        if keys.len() > msg::BATCH_KEYS_MAX {
            return error_reply(Code::InvalidParam, "too many keys in one batch");
        }
        let until = now_ms.saturating_add(self.params.lease_ms);
        let mut items = Vec::with_capacity(keys.len());
        for key in &keys {
            let item = match self.reachable(key) {
                Err(code) => LookupItem {
                    code: code.as_i32(),
                    size: 0,
                    crc: 0,
                    lease: 0,
                    replicas: Vec::new(),
                },
                Ok(oid) => {
                    self.touch(oid);
                    let lease = self.next_lease;
                    self.next_lease += 1;
                    let previous = self.leases.insert(lease, (oid, until));
                    let fresh = self.lease_expiry.insert((until, lease));
                    assert!(previous.is_none() && fresh, "lease ids are unique");
                    if self.objects[&oid].leases == 0 {
                        self.hold(oid, Hold::Leased, true);
                    }
                    let obj = self.objects.get_mut(&oid).expect("visible");
                    assert_eq!(
                        obj.state,
                        State::Committed,
                        "only committed objects are leased"
                    );
                    obj.leases = obj.leases.checked_add(1).expect("lease count overflow");
                    LookupItem {
                        code: 0,
                        size: obj.size,
                        crc: obj.crc,
                        lease,
                        replicas: live_replicas(&self.members, obj),
                    }
                }
            };
            items.push(item);
        }
        let services =
            self.service_addrs(items.iter().flat_map(|i| i.replicas.iter().map(|r| r.rank)));
        Reply::Lookup {
            lease_ms: self.params.lease_ms,
            items,
            services,
        }
    }

    /// Give back one read lease; an unknown id (released twice, expired, or made up by a client)
    /// is ignored.
    pub(super) fn release(&mut self, lease: u64) {
        let Some((oid, until)) = self.leases.remove(&lease) else {
            return;
        };
        let indexed = self.lease_expiry.remove(&(until, lease));
        assert!(indexed, "lease {lease} indexed by its expiry");
        // Freeing an object forgets its leases, so a live lease always has its object.
        let obj = self
            .objects
            .get_mut(&oid)
            .expect("a lease's object is live");
        obj.leases = obj
            .leases
            .checked_sub(1)
            .expect("lease count matches the lease table");
        if obj.leases == 0 {
            let removed = obj.removed;
            self.hold(oid, Hold::Leased, false);
            if removed {
                self.free_object(oid);
            }
        }
    }

    pub(super) fn query(&mut self, keys: Vec<String>) -> Reply {
        self.query_shared(self.now_ms_last, &keys)
    }

    pub(super) fn exist(&mut self, keys: Vec<String>) -> Reply {
        self.exist_shared(self.now_ms_last, &keys)
    }

    pub(super) fn remove(&mut self, keys: Vec<String>) -> Reply {
        if keys.len() > msg::BATCH_KEYS_MAX {
            return error_reply(Code::InvalidParam, "too many keys in one batch");
        }
        let codes = keys
            .iter()
            .map(|key| match self.visible(key) {
                Ok(oid) => {
                    self.unlink(oid);
                    0
                }
                Err(code) => code.as_i32(),
            })
            .collect();
        Reply::Codes { codes }
    }

    /// Unlink every committed object (freed now, or at its last reader's release).
    pub(super) fn remove_all(&mut self) -> Reply {
        let visible: Vec<u64> = self
            .keys
            .oids(&self.objects)
            .filter(|oid| self.objects[oid].state == State::Committed)
            .collect();
        for &oid in &visible {
            self.unlink(oid);
        }
        warn!(objects = visible.len(), "every object removed (remove_all)");
        Reply::Removed {
            count: visible.len() as u64,
        }
    }

    /// The object a reader may see under `key`: committed and linked. Never a pending one.
    pub(super) fn visible(&self, key: &str) -> Result<u64, Code> {
        check_key(key)
            .inspect_err(|_| warn!(key, "invalid key: empty or longer than 255 bytes"))?;
        match self.keys.get(&self.objects, key) {
            Some(oid) if self.objects[&oid].state == State::Committed => {
                debug_assert!(
                    !self.objects[&oid].removed,
                    "a linked object is not removed"
                );
                Ok(oid)
            }
            _ => Err(Code::ObjectNotExists),
        }
    }

    /// The object a reader may be offered under `key`: visible, with a replica on a live member.
    /// One whose every replica is paused answers -3018 (not reachable), as a get of it did before
    /// the pause was noticed.
    fn reachable(&self, key: &str) -> Result<u64, Code> {
        self.reachable_obj(key).map(|(oid, _)| oid)
    }

    pub(super) fn bump_recency(&self) -> u64 {
        let r = self.next_recency.fetch_add(1, Relaxed);
        assert!(r < u64::MAX / 2, "recency overflow");
        r
    }

    /// Make a visible object the most recently used.
    fn touch(&self, oid: u64) {
        let obj = &self.objects[&oid];
        debug_assert!(obj.state == State::Committed && !obj.removed);
        // Its LRU entries stay where they are until eviction reaches them (`held.rs`).
        obj.recency.store(self.bump_recency(), Relaxed);
    }

    /// Make a committed object invisible at once (remove or eviction); free now or at last release.
    pub(super) fn unlink(&mut self, oid: u64) {
        self.index_removed(oid);
        self.lru_remove(oid);
        let obj = self.objects.get_mut(&oid).expect("unlink of a live object");
        assert!(
            obj.state == State::Committed && !obj.removed,
            "unlink of a visible object"
        );
        obj.removed = true;
        let leased = obj.leases > 0;
        let linked = self.keys.remove(&self.objects, &self.objects[&oid].key);
        assert_eq!(linked, Some(oid), "a visible object holds its key");
        if !leased {
            self.free_object(oid);
        }
    }

    /// Return an object's space to its segments and forget it, with its pending entry, its LRU
    /// entry and its leases: no index may outlive the object. The key must already be unlinked.
    pub(super) fn free_object(&mut self, oid: u64) {
        assert_ne!(
            self.keys.get(&self.objects, &self.objects[&oid].key),
            Some(oid),
            "freeing a linked object"
        );
        let (state, removed, leases) = {
            let o = &self.objects[&oid];
            (o.state, o.removed, o.leases)
        };
        match state {
            State::Pending { .. } => self.hold(oid, Hold::Pending, false),
            // Visible: out of its segments' LRUs.
            State::Committed if !removed => self.lru_remove(oid),
            State::Committed => {}
        }
        if leases > 0 {
            self.hold(oid, Hold::Leased, false);
        }
        let obj = self.objects.remove(&oid).expect("free of a live object");
        self.slab_freed(oid, &obj);
        self.under.remove(&oid);
        match obj.state {
            State::Pending { deadline_ms } => {
                let was_pending = self.pending.remove(&(deadline_ms, oid));
                assert!(was_pending, "a pending object is indexed by its deadline");
                if obj.removed {
                    self.abandoned -= 1;
                }
            }
            State::Committed => {}
        }
        for (r, space) in obj.replicas {
            // A replica on a segment that died with its member was dropped from the object then;
            // one on a paused member's segment is freed there.
            let seg = if self.segments.contains_key(&r.segment) {
                self.segments.get_mut(&r.segment)
            } else {
                self.paused_segments.get_mut(&r.segment)
            };
            let seg = seg.expect("replicas lie on live or paused segments");
            seg.space.free(space);
            seg.objects = seg
                .objects
                .checked_sub(1)
                .expect("segment object count matches its replicas");
        }
        if obj.leases > 0 {
            // Only when a member died under a read: forget the leases with the object.
            let dead: Vec<(u64, u64)> = self
                .leases
                .iter()
                .filter(|(_, (o, _))| *o == oid)
                .map(|(id, (_, until))| (*id, *until))
                .collect();
            for (id, until) in dead {
                self.leases.remove(&id);
                self.lease_expiry.remove(&(until, id));
            }
        }
    }
}

/// The replicas of `obj` on live members: all that readers are offered.
pub(super) fn live_replicas(
    members: &std::collections::BTreeMap<u32, super::Member>,
    obj: &Object,
) -> Vec<msg::Replica> {
    let live: Vec<msg::Replica> = obj
        .replicas
        .iter()
        .filter(|(r, _)| members.contains_key(&r.rank))
        .map(|(r, _)| *r)
        .collect();
    debug_assert!(!live.is_empty(), "only reachable objects are offered");
    live
}
