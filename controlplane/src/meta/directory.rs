//! Keyed operations of the core: two-phase put, lookup with leases, query, exist, remove.

use tracing::{debug, warn};

use super::{check_key, error_reply, MetaCore, Object, State};
use crate::error::Code;
use crate::msg::{self, AllocItem, CommitItem, LookupItem, QueryItem, Reply};

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
        if self.keys.contains_key(key) {
            debug!(key, "put refused: key exists");
            return refuse(Code::DuplicatedObject);
        }
        let placed = match self.place(a, key, size) {
            Ok(placed) => placed,
            Err(Code::ExceedCapacity) => {
                // Waiting can help only if read leases hold space that will come back, and the
                // object fits some segment at all.
                let fits = self
                    .segments
                    .values()
                    .any(|s| s.space.capacity_bytes() >= size);
                let retry = fits && !self.leases.is_empty();
                return AllocItem {
                    retry,
                    ..refuse(Code::ExceedCapacity)
                };
            }
            Err(code) => return refuse(code),
        };
        let oid = self.next_oid;
        self.next_oid += 1;
        for (r, _) in &placed {
            self.segments
                .get_mut(&r.segment)
                .expect("placed on a live segment")
                .objects += 1;
        }
        let deadline_ms = now_ms + self.params.pending_timeout_ms;
        let replicas = placed.iter().map(|(r, _)| *r).collect();
        self.objects.insert(
            oid,
            Object {
                key: key.to_string(),
                size,
                replicas: placed,
                state: State::Pending { deadline_ms },
                recency: 0,
                leases: 0,
                removed: false,
            },
        );
        self.pending.insert((deadline_ms, oid));
        self.keys.insert(key.to_string(), oid);
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

    fn commit_one(&mut self, key: &str, item: CommitItem) -> Code {
        let Some(obj) = self.objects.get(&item.token) else {
            warn!(key, "commit of an unknown or reclaimed put");
            return Code::Timeout;
        };
        if obj.key != key {
            return Code::UnmatchedKey;
        }
        let State::Pending { deadline_ms } = obj.state else {
            return Code::UnmatchedState;
        };
        self.pending.remove(&(deadline_ms, item.token));
        if !item.ok {
            debug!(key, "put aborted by its writer");
            self.keys.remove(key);
            self.free_object(item.token);
            return Code::Ok;
        }
        let recency = self.bump_recency();
        let obj = self.objects.get_mut(&item.token).expect("checked above");
        obj.state = State::Committed;
        obj.recency = recency;
        self.lru.insert(recency, item.token);
        Code::Ok
    }

    pub(super) fn lookup(&mut self, now_ms: u64, keys: Vec<String>) -> Reply {
        if keys.len() > msg::BATCH_KEYS_MAX {
            return error_reply(Code::InvalidParam, "too many keys in one batch");
        }
        let until = now_ms + self.params.lease_ms;
        let mut items = Vec::with_capacity(keys.len());
        for key in &keys {
            let item = match self.visible(key) {
                Err(code) => LookupItem {
                    code: code.as_i32(),
                    size: 0,
                    lease: 0,
                    replicas: Vec::new(),
                },
                Ok(oid) => {
                    self.touch(oid);
                    let lease = self.next_lease;
                    self.next_lease += 1;
                    self.leases.insert(lease, (oid, until));
                    self.lease_expiry.insert((until, lease));
                    let obj = self.objects.get_mut(&oid).expect("visible");
                    obj.leases += 1;
                    LookupItem {
                        code: 0,
                        size: obj.size,
                        lease,
                        replicas: obj.replicas.iter().map(|(r, _)| *r).collect(),
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

    pub(super) fn release(&mut self, lease: u64) {
        let Some((oid, until)) = self.leases.remove(&lease) else {
            return;
        };
        self.lease_expiry.remove(&(until, lease));
        let Some(obj) = self.objects.get_mut(&oid) else {
            return;
        };
        debug_assert!(obj.leases > 0);
        obj.leases -= 1;
        if obj.leases == 0 && obj.removed {
            self.free_object(oid);
        }
    }

    pub(super) fn query(&mut self, keys: Vec<String>) -> Reply {
        if keys.len() > msg::BATCH_KEYS_MAX {
            return error_reply(Code::InvalidParam, "too many keys in one batch");
        }
        let items = keys
            .iter()
            .map(|key| match self.visible(key) {
                Err(code) => QueryItem {
                    code: code.as_i32(),
                    size: 0,
                    replicas: Vec::new(),
                },
                Ok(oid) => {
                    self.touch(oid);
                    let obj = &self.objects[&oid];
                    QueryItem {
                        code: 0,
                        size: obj.size,
                        replicas: obj.replicas.iter().map(|(r, _)| *r).collect(),
                    }
                }
            })
            .collect();
        Reply::Query { items }
    }

    pub(super) fn exist(&mut self, keys: Vec<String>) -> Reply {
        if keys.len() > msg::BATCH_KEYS_MAX {
            return error_reply(Code::InvalidParam, "too many keys in one batch");
        }
        let codes = keys
            .iter()
            .map(|key| match self.visible(key) {
                Ok(oid) => {
                    self.touch(oid);
                    0
                }
                Err(code) => code.as_i32(),
            })
            .collect();
        Reply::Codes { codes }
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

    /// The object a reader may see under `key`: committed and linked.
    fn visible(&self, key: &str) -> Result<u64, Code> {
        check_key(key)
            .inspect_err(|_| warn!(key, "invalid key: empty or longer than 255 bytes"))?;
        match self.keys.get(key) {
            Some(oid) if self.objects[oid].state == State::Committed => Ok(*oid),
            _ => Err(Code::ObjectNotExists),
        }
    }

    fn bump_recency(&mut self) -> u64 {
        let r = self.next_recency;
        self.next_recency += 1;
        r
    }

    fn touch(&mut self, oid: u64) {
        let recency = self.bump_recency();
        let obj = self.objects.get_mut(&oid).expect("touch of a live object");
        debug_assert_eq!(obj.state, State::Committed);
        self.lru.remove(&obj.recency);
        obj.recency = recency;
        self.lru.insert(recency, oid);
    }

    /// Make a committed object invisible at once (remove or eviction); free now or at last release.
    pub(super) fn unlink(&mut self, oid: u64) {
        let obj = self.objects.get_mut(&oid).expect("unlink of a live object");
        debug_assert_eq!(obj.state, State::Committed);
        self.lru.remove(&obj.recency);
        let key = std::mem::take(&mut obj.key);
        self.keys.remove(&key);
        obj.key = key;
        obj.removed = true;
        if obj.leases == 0 {
            self.free_object(oid);
        }
    }

    /// Return an object's space to its segments and forget it. The key must already be unlinked.
    pub(super) fn free_object(&mut self, oid: u64) {
        let Some(obj) = self.objects.remove(&oid) else {
            return;
        };
        debug_assert!(
            self.keys.get(&obj.key) != Some(&oid),
            "freeing a linked object"
        );
        if obj.state == State::Committed && !obj.removed {
            self.lru.remove(&obj.recency);
        }
        for (r, space) in obj.replicas {
            if let Some(seg) = self.segments.get_mut(&r.segment) {
                seg.space.free(space);
                seg.objects -= 1;
            }
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
