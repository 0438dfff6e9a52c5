//! Space leases: pool space a client holds ahead of its puts, so that a small put costs one meta
//! round trip (write into space it holds, then `PutLeased`) instead of two (`Alloc`, write,
//! `Commit`).
//!
//! A *slot* is one placement (`replicas` copies of `size` bytes, each an allocation of its
//! segment's allocator, on distinct services) reserved for one client session, with no key. In
//! the directory it is an object like a pending put that its writer abandoned: `Pending` with a
//! deadline (`pending_timeout_ms` after the grant), `removed` (no key linked; an empty key), so
//! - placement and eviction count its bytes as pending: never evicted, never room, never handed
//!   to anyone else while it lives (each replica is its own allocation: slots cannot overlap one
//!   another or an object);
//! - the tick frees it at its deadline if it is still unused (lease expiry), and so does the
//!   death of its member (`drop_member`), through `free_object` like any object;
//! - a client's death leaves it to its deadline: bytes the client sent may still be on their way
//!   to a service (as for a dead writer's pending put);
//! - the index of a service never names it: only `commit_one` adds to the index, so a restarted
//!   meta service rebuilds committed objects only, and a `PutLeased` naming a slot of an earlier
//!   run (its token is unknown) is refused; the client then puts the normal way.
//!
//! `PutLeased` binds a slot to its key and commits it at once (or gives it back): the slot must be
//! live, granted to the same client, at least as large as the object, and the key free. A slot is
//! used up by its first `PutLeased` whatever the outcome, so a second one naming it is refused
//! (two puts can never share one range). Slots are bounded: at most [`SLOTS_PER_CLIENT_MAX`] per
//! client, [`SLOT_GRANT_BYTES_MAX`] per grant, and all of them together at most
//! 1/[`SLOT_SHARE_DIV`] of the live capacity, so leases never hold much of a pool that eviction
//! would need; a client stops using a slot at half its lease, well before the deadline.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use tracing::{debug, warn};

use super::held::Hold;
use super::{check_key, error_reply, MetaCore, Object, State};
use crate::error::Code;
use crate::msg::{self, AllocItem, AllocRequest, CommitItem, LeasedPut, Reply, SlotRequest};

/// Largest slot: bigger puts gain little from saving one round trip.
pub const SLOT_SIZE_MAX: u64 = 256 << 10;
/// Most slots one grant holds.
pub const SLOTS_GRANT_MAX: u32 = 64;
/// Most bytes (slot size times slots, before replicas) one grant holds.
pub const SLOT_GRANT_BYTES_MAX: u64 = 4 << 20;
/// Most live slots per client.
pub const SLOTS_PER_CLIENT_MAX: usize = 256;
/// All slots together hold at most this fraction (1/N) of the live segments' capacity.
pub const SLOT_SHARE_DIV: u64 = 8;

/// The live slots: token (the object id) -> its client and the bytes it reserved at its grant
/// (a replica lost with its member still counts until the slot goes), and per client how many.
#[derive(Default)]
pub(super) struct Slab {
    owner: HashMap<u64, (u64, u64)>,
    per_client: HashMap<u64, usize>,
    /// Bytes reserved by live slots (all replicas).
    bytes: u64,
}

impl Slab {
    fn add(&mut self, oid: u64, client_id: u64, reserved: u64) {
        let previous = self.owner.insert(oid, (client_id, reserved));
        assert!(previous.is_none(), "slot {oid} granted twice");
        *self.per_client.entry(client_id).or_default() += 1;
        self.bytes = self
            .bytes
            .checked_add(reserved)
            .expect("slot bytes overflow");
    }

    /// `oid` stops being a slot (bound to a key, given back, expired, lost with its member).
    pub(super) fn forget(&mut self, oid: u64) -> Option<u64> {
        let (client, reserved) = self.owner.remove(&oid)?;
        let n = self
            .per_client
            .get_mut(&client)
            .expect("a slot's client is counted");
        *n -= 1;
        if *n == 0 {
            self.per_client.remove(&client);
        }
        self.bytes = self
            .bytes
            .checked_sub(reserved)
            .expect("slot bytes cover every live slot");
        Some(client)
    }

    fn held_by(&self, client_id: u64) -> usize {
        self.per_client.get(&client_id).copied().unwrap_or(0)
    }
}

fn reserved_of(obj: &Object) -> u64 {
    obj.replicas.iter().map(|(_, s)| s.reserved).sum()
}

impl MetaCore {
    /// Every live slot is a keyless, unleased pending object of its client; every keyless object
    /// is a live slot; the counts and bytes match.
    pub(super) fn check_slab(&self) {
        let mut bytes = 0u64;
        let mut per_client: HashMap<u64, usize> = HashMap::new();
        for (oid, (client, reserved)) in &self.slab.owner {
            let obj = self.objects.get(oid).expect("a live slot is an object");
            assert!(
                obj.key.is_empty()
                    && obj.removed
                    && obj.leases == 0
                    && obj.client_id == *client
                    && matches!(obj.state, State::Pending { .. }),
                "slot {oid}: a keyless pending object of its client"
            );
            assert!(
                reserved_of(obj) <= *reserved,
                "slot {oid}: replicas only go"
            );
            bytes += reserved;
            *per_client.entry(*client).or_default() += 1;
        }
        let keyless = self.objects.values().filter(|o| o.key.is_empty()).count();
        assert_eq!(
            keyless,
            self.slab.owner.len(),
            "keyless objects are exactly the slots"
        );
        assert_eq!(bytes, self.slab.bytes, "slot bytes");
        assert_eq!(per_client, self.slab.per_client, "slots per client");
        assert!(per_client.values().all(|n| *n <= SLOTS_PER_CLIENT_MAX));
    }

    /// Live slots (for tests and status).
    pub fn slots_live(&self) -> usize {
        self.slab.owner.len()
    }

    /// Called by `free_object` for every object it frees: a slot freed unused leaves the slab.
    pub(super) fn slab_freed(&mut self, oid: u64, obj: &Object) {
        if self.slab.forget(oid).is_some() {
            debug_assert!(obj.key.is_empty() && obj.removed, "a slot has no key");
            debug!(
                slot = oid,
                "slot freed unused (expired, given back or lost)"
            );
        }
    }

    pub(super) fn lease_slots(&mut self, now_ms: u64, r: SlotRequest) -> Reply {
        if r.client_id == 0
            || r.size == 0
            || r.size > SLOT_SIZE_MAX
            || r.count == 0
            || r.count > SLOTS_GRANT_MAX
            || r.replicas as usize > msg::REPLICAS_MAX
            || r.media > msg::MEDIA_NONE
        {
            return error_reply(
                Code::InvalidParam,
                "slot lease: client id 0, size or count out of range, or bad replicas or media",
            );
        }
        let copies = u64::from(r.replicas.max(1));
        let capacity: u64 = self
            .segments
            .values()
            .fold(0u64, |c, s| c.saturating_add(s.space.capacity_bytes()));
        let share_left = (capacity / SLOT_SHARE_DIV).saturating_sub(self.slab.bytes);
        let count = u64::from(r.count)
            .min(SLOT_GRANT_BYTES_MAX / r.size)
            .min(
                (SLOTS_PER_CLIENT_MAX - self.slab.held_by(r.client_id).min(SLOTS_PER_CLIENT_MAX))
                    as u64,
            )
            .min(share_left / r.size.saturating_mul(copies));
        let a = AllocRequest {
            writer_rank: r.writer_rank,
            client_id: r.client_id,
            media: r.media,
            policy: r.policy,
            replicas: r.replicas,
            preferred: r.preferred,
            items: Vec::new(),
        };
        let deadline_ms = now_ms.saturating_add(self.params.pending_timeout_ms);
        let mut items = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let placed = match self.place(&a, "(slot)", r.size) {
                Ok(placed) => placed,
                Err(refusal) => {
                    debug!(
                        code = refusal.code.as_i32(),
                        granted = items.len(),
                        "slot lease: no more room"
                    );
                    break;
                }
            };
            let oid = self.next_oid;
            self.next_oid += 1;
            for (rep, space) in &placed {
                assert_eq!((space.offset, space.len), (rep.offset, r.size));
                let seg = self
                    .segments
                    .get_mut(&rep.segment)
                    .expect("placed on a live segment");
                seg.objects = seg.objects.checked_add(1).expect("object count overflow");
            }
            let replicas: Vec<msg::Replica> = placed.iter().map(|(rep, _)| *rep).collect();
            let want = (r.replicas.max(1) as usize)
                .max(placed.len())
                .min(msg::REPLICAS_MAX) as u16;
            let reserved = placed.iter().map(|(_, s)| s.reserved).sum();
            self.objects.insert_new(
                oid,
                Object {
                    key: "".into(),
                    size: r.size,
                    replicas: placed.into_iter().collect(),
                    state: State::Pending { deadline_ms },
                    recency: AtomicU64::new(0),
                    queued: 0,
                    leases: 0,
                    // No key linked, space held until the deadline: an abandoned put, to the
                    // rest of the core.
                    removed: true,
                    client_id: r.client_id,
                    version: oid,
                    crc: 0,
                    want,
                },
            );
            // Held as a pending put's bytes: never evictable, never room.
            self.hold(oid, Hold::Pending, true);
            let fresh = self.pending.insert((deadline_ms, oid));
            assert!(fresh, "a new slot");
            self.abandoned += 1;
            self.slab.add(oid, r.client_id, reserved);
            items.push(AllocItem {
                code: 0,
                retry: false,
                token: oid,
                replicas,
            });
        }
        debug!(
            client_id = r.client_id,
            size = r.size,
            asked = r.count,
            granted = items.len(),
            "slots leased"
        );
        let services = self.service_addrs(
            items
                .iter()
                .flat_map(|i| i.replicas.iter().map(|rep| rep.rank)),
        );
        Reply::Slots {
            lease_ms: self.params.pending_timeout_ms,
            items,
            services,
        }
    }

    pub(super) fn put_leased(&mut self, client_id: u64, items: Vec<LeasedPut>) -> Reply {
        if items.len() > msg::BATCH_KEYS_MAX {
            return error_reply(Code::InvalidParam, "too many keys in one batch");
        }
        let codes = items
            .into_iter()
            .map(|item| self.put_leased_one(client_id, item).as_i32())
            .collect();
        Reply::Commit { codes }
    }

    fn put_leased_one(&mut self, client_id: u64, item: LeasedPut) -> Code {
        let token = item.token;
        match self.slab.owner.get(&token) {
            None => {
                // Expired, used already, lost with its member, or of an earlier run.
                debug!(key = %item.key, slot = token, "put into an unknown or used slot");
                return Code::Timeout;
            }
            Some(&(owner, _)) if owner != client_id => {
                warn!(key = %item.key, slot = token, client_id, "put into another client's slot refused");
                return Code::InvalidParam;
            }
            Some(_) => {}
        }
        let obj = &self.objects[&token];
        assert!(
            obj.key.is_empty()
                && obj.removed
                && obj.leases == 0
                && matches!(obj.state, State::Pending { .. }),
            "a live slot is a keyless pending object"
        );
        let slot_size = obj.size;
        let refusal = if !item.ok {
            Some(Code::Ok)
        } else if check_key(&item.key).is_err() || item.size == 0 || item.size > slot_size {
            warn!(key = %item.key, size = item.size, slot_size, "leased put refused: bad key or size");
            Some(Code::InvalidParam)
        } else if self.keys.contains_key(&self.objects, &item.key) {
            debug!(key = %item.key, "leased put refused: key exists");
            Some(Code::DuplicatedObject)
        } else {
            None
        };
        if let Some(code) = refusal {
            // Used up: the writer is done with its bytes (it sends this after its writes).
            self.free_object(token);
            return code;
        }
        // Bind: the slot becomes a pending put of its key, then commits as any put does.
        let forgotten = self.slab.forget(token);
        assert_eq!(forgotten, Some(client_id));
        let obj = self.objects.get_mut(&token).expect("checked above");
        obj.key = item.key.as_str().into();
        obj.removed = false;
        obj.size = item.size;
        for (rep, space) in &mut obj.replicas {
            assert!(item.size <= space.reserved);
            rep.len = item.size;
            space.len = item.size;
        }
        self.abandoned -= 1;
        let linked = self.keys.link(&self.objects, token);
        assert!(linked, "a leased put of a free key");
        let code = self.commit_one(
            &item.key,
            CommitItem {
                token,
                ok: true,
                crc: item.crc,
            },
        );
        assert_eq!(code, Code::Ok, "a bound slot commits");
        code
    }
}
