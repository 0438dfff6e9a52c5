//! Read-only requests on a shared borrow of the core: `Exist` and `Query` change nothing but the
//! objects' recency, an atomic store (see `held.rs`), so the driver answers them under a read
//! lock, many at once, and straight from the request's archived bytes (no copy of the keys).
//!
//! Time does not pass in them (no `tick`): leases, pending puts and silent members are expired
//! by the next write or by the driver's ticker (every 100 ms), so a read answers as it would have
//! just before that tick.

use super::directory::live_replicas;
use super::{check_key, error_reply, MetaCore, Object, State};
use crate::error::Code;
use crate::msg::{self, QueryItem, Reply};
use std::sync::atomic::Ordering::Relaxed;

use tracing::{debug, warn};

impl MetaCore {
    /// `n` recencies for the keys of one read, taken at once (one atomic add per request, not per
    /// key: readers on other threads add to the same counter).
    fn bump_recencies(&self, n: usize) -> std::ops::Range<u64> {
        let first = self.next_recency.fetch_add(n as u64, Relaxed);
        assert!(first < u64::MAX / 2, "recency overflow");
        first..first + n as u64
    }

    /// `Busy` while rebuilding, if one of `keys` is not known yet.
    fn busy_for_keys<K: AsRef<str>>(&self, now_ms: u64, keys: &[K]) -> Option<Reply> {
        if !self.rebuilding(now_ms) {
            return None;
        }
        let unknown = keys
            .iter()
            .any(|k| !self.keys.contains_key(&self.objects, k.as_ref()));
        unknown.then(super::rebuild::busy_reply)
    }

    /// The object a reader may see under `key`: committed and linked. Never a pending one.
    pub(super) fn visible_obj(&self, key: &str) -> Result<(u64, &Object), Code> {
        check_key(key)
            .inspect_err(|_| warn!(key, "invalid key: empty or longer than 255 bytes"))?;
        match self.keys.get_obj(&self.objects, key) {
            Some((oid, obj)) if obj.state == State::Committed => {
                debug_assert!(!obj.removed, "a linked object is not removed");
                Ok((oid, obj))
            }
            _ => Err(Code::ObjectNotExists),
        }
    }

    /// The object a reader may be offered under `key`: visible, with a replica on a live member.
    /// One whose every replica is paused answers -3018 (not reachable), as a get of it did before
    /// the pause was noticed.
    pub(super) fn reachable_obj(&self, key: &str) -> Result<(u64, &Object), Code> {
        let (oid, obj) = self.visible_obj(key)?;
        if self.has_live_replica(obj) {
            Ok((oid, obj))
        } else {
            debug!(key, "every replica is on a paused local service");
            Err(Code::NotConnectLocal)
        }
    }

    /// `Exist` of `keys` at `now_ms` (for the rebuild window only), on a shared borrow.
    pub fn exist_shared<K: AsRef<str>>(&self, now_ms: u64, keys: &[K]) -> Reply {
        if keys.len() > msg::BATCH_KEYS_MAX {
            return error_reply(Code::InvalidParam, "too many keys in one batch");
        }
        if let Some(busy) = self.busy_for_keys(now_ms, keys) {
            return busy;
        }
        let recency = self.bump_recencies(keys.len());
        let codes = keys
            .iter()
            .zip(recency)
            .map(|(key, recency)| match self.reachable_obj(key.as_ref()) {
                Ok((_, obj)) => {
                    obj.recency.store(recency, Relaxed);
                    0
                }
                Err(code) => code.as_i32(),
            })
            .collect();
        Reply::Codes { codes }
    }

    /// `Query` of `keys` at `now_ms` (for the rebuild window only), on a shared borrow.
    pub fn query_shared<K: AsRef<str>>(&self, now_ms: u64, keys: &[K]) -> Reply {
        if keys.len() > msg::BATCH_KEYS_MAX {
            return error_reply(Code::InvalidParam, "too many keys in one batch");
        }
        if let Some(busy) = self.busy_for_keys(now_ms, keys) {
            return busy;
        }
        let recency = self.bump_recencies(keys.len());
        let items = keys
            .iter()
            .zip(recency)
            .map(|(key, recency)| match self.reachable_obj(key.as_ref()) {
                Err(code) => QueryItem {
                    code: code.as_i32(),
                    size: 0,
                    replicas: Vec::new(),
                },
                Ok((_, obj)) => {
                    obj.recency.store(recency, Relaxed);
                    QueryItem {
                        code: 0,
                        size: obj.size,
                        replicas: live_replicas(&self.members, obj),
                    }
                }
            })
            .collect();
        Reply::Query { items }
    }
}
