//! Small puts in one meta round trip: pool space leased ahead ([`SlotPool`]) and a put that
//! writes into it and commits with one `PutLeased` ([`LeasedPutOp`]).
//!
//! The meta service grants *slots* (see `mmc_controlplane::meta` `slab.rs`): placements of
//! `replicas` copies of a size class, reserved for this client, keyless and invisible, until
//! `lease_ms` after the grant. A put of at most [`SLOT_PUT_MAX`] bytes (native placement, or one
//! preferred rank) takes one, writes its bytes (a memcpy on the own and same-host
//! placements; one request per replica over TCP), and sends `PutLeased` (key, token, size,
//! CRC): the meta service binds the slot to the key and commits at once. So the steady state
//! is the write plus one meta round trip; one put in [`SLOTS_ASK`] also asks for more slots
//! first (one more round trip, amortised).
//!
//! Safety of the bytes: a slot is used only until half its lease ([`Slot::usable_until_ms`],
//! from the time the grant was *asked*), so the meta service, which frees an unused slot at the
//! end of its lease, never hands its space to another object while this client may still write
//! into it (the same bound as a pending put's). Every write carries the slot's epoch fence (rank,
//! incarnation, segment): a service that registered again (its restart, or a restarted meta
//! service's rebuild) refuses it. A slot the meta service no longer knows (expired, or granted
//! by an earlier run) is refused with -3004: the put falls back to the two-round-trip path, and
//! the pool gives back the rest of that class. A write that fails falls back too, after giving
//! its slot back.

use std::sync::Arc;

use mmc_controlplane::msg::{self, LeasedPut, Replica, Reply, Request, ServiceAddr, SlotRequest};
use mmc_controlplane::{Code, Error, Result};
use mmc_hal::fence::Fence;
use tracing::{debug, warn};

use super::{
    key_error, service, unexpected, Action, CloneError, Dir, PutOptions, Suspects, Transfer,
};

/// Largest put that uses a slot.
pub const SLOT_PUT_MAX: u64 = 64 << 10;
/// Smallest slot: sizes round up to a power of two at least this.
pub const SLOT_CLASS_MIN: u64 = 4 << 10;
/// Slots asked for at once.
pub const SLOTS_ASK: u32 = 64;
/// Size classes kept at once; the least recently refilled one is given back past it.
pub const SLOT_CLASSES_MAX: usize = 4;
/// After a grant of no slots (the pool is short, or the client holds its share), the class puts
/// the normal way this long before asking again.
pub const SLOT_REFUSED_BACKOFF_MS: u64 = 1_000;

/// What slots are interchangeable for: the size class and the placement options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotClass {
    pub size: u64,
    pub media: u16,
    pub replicas: u16,
    /// The one preferred rank (`PREFERRED_AFFINITY`), or -1 (native placement).
    pub preferred: i32,
}

impl SlotClass {
    /// The class of a put of `size` bytes, or `None` when it does not use slots (too large,
    /// more than one preferred rank).
    pub fn of(size: u64, opts: &PutOptions) -> Option<SlotClass> {
        if size == 0 || size > SLOT_PUT_MAX {
            return None;
        }
        let mut ranks = opts.preferred.iter().filter(|r| **r >= 0);
        let preferred = match (opts.policy, ranks.next(), ranks.next()) {
            (msg::PREFERRED_AFFINITY, Some(&rank), None) => rank,
            (msg::PREFERRED_AFFINITY, Some(_), Some(_)) => return None,
            // No usable preferred rank: placed as a native put is.
            _ => -1,
        };
        Some(SlotClass {
            size: size.next_power_of_two().max(SLOT_CLASS_MIN),
            media: opts.media,
            replicas: opts.replicas.max(1),
            preferred,
        })
    }
}

/// One leased placement: a replica per service, each with the incarnation it was granted at.
#[derive(Debug)]
pub struct Slot {
    pub token: u64,
    pub size: u64,
    replicas: Vec<(Replica, u64)>,
    /// Half the lease after the grant was asked: not written after this.
    pub usable_until_ms: u64,
}

struct Pool {
    class: SlotClass,
    slots: Vec<Slot>,
    /// The addresses of the services of this class's slots (from the latest grant; a slot
    /// whose service is not in it is given back).
    services: Arc<Vec<ServiceAddr>>,
    /// No refill before this (after an empty grant or a failed request).
    refill_after_ms: u64,
    /// Refills so far: the least used class goes first past [`SLOT_CLASSES_MAX`].
    last_refill_ms: u64,
}

/// A client's leased slots, per class. Sans-IO: the driver sends what it asks for.
pub struct SlotPool {
    client_id: u64,
    writer_rank: Option<u32>,
    pools: Vec<Pool>,
    /// Tokens to give back (`PutLeased` with `ok = false`).
    back: Vec<u64>,
}

impl SlotPool {
    /// Slots for client session `client_id` (nonzero; 0 turns leasing off: the meta service
    /// would refuse), placed with `writer_rank` as a put's writer.
    pub fn new(client_id: u64, writer_rank: Option<u32>) -> SlotPool {
        SlotPool {
            client_id,
            writer_rank,
            pools: Vec::new(),
            back: Vec::new(),
        }
    }

    fn pool(&mut self, class: SlotClass) -> Option<&mut Pool> {
        self.pools.iter_mut().find(|p| p.class == class)
    }

    /// A usable slot of `class`, with the addresses of its services; slots past their use-by
    /// time are given back on the way.
    pub fn take(&mut self, now_ms: u64, class: SlotClass) -> Option<(Slot, Arc<Vec<ServiceAddr>>)> {
        let back = &mut self.back;
        let pool = self.pools.iter_mut().find(|p| p.class == class)?;
        while let Some(slot) = pool.slots.pop() {
            let known = slot.replicas.iter().all(|(r, inc)| {
                service(&pool.services, r.rank).is_some_and(|s| s.incarnation == *inc)
            });
            if now_ms < slot.usable_until_ms && known {
                debug_assert!(slot.size >= class.size && !slot.replicas.is_empty());
                return Some((slot, Arc::clone(&pool.services)));
            }
            back.push(slot.token);
        }
        None
    }

    /// The request that refills `class`, when it has no slot left and may ask now.
    pub fn refill(&mut self, now_ms: u64, class: SlotClass) -> Option<Request> {
        if self.client_id == 0 {
            return None;
        }
        if let Some(pool) = self.pool(class) {
            if !pool.slots.is_empty() || now_ms < pool.refill_after_ms {
                return None;
            }
        }
        Some(Request::LeaseSlots(SlotRequest {
            writer_rank: self.writer_rank,
            client_id: self.client_id,
            media: class.media,
            policy: if class.preferred >= 0 {
                msg::PREFERRED_AFFINITY
            } else {
                msg::NATIVE_AFFINITY
            },
            replicas: class.replicas,
            size: class.size,
            count: SLOTS_ASK,
            preferred: if class.preferred >= 0 {
                vec![class.preferred]
            } else {
                Vec::new()
            },
        }))
    }

    /// The reply to a [`SlotPool::refill`] asked at `asked_ms` (or the failure to get one).
    pub fn on_refill(
        &mut self,
        asked_ms: u64,
        now_ms: u64,
        class: SlotClass,
        reply: Result<Reply>,
    ) {
        if self.pool(class).is_none() {
            if self.pools.len() >= SLOT_CLASSES_MAX {
                let oldest = (0..self.pools.len())
                    .min_by_key(|&i| self.pools[i].last_refill_ms)
                    .expect("pools are full");
                let gone = self.pools.swap_remove(oldest);
                self.back.extend(gone.slots.iter().map(|s| s.token));
            }
            self.pools.push(Pool {
                class,
                slots: Vec::new(),
                services: Arc::new(Vec::new()),
                refill_after_ms: 0,
                last_refill_ms: now_ms,
            });
        }
        let back = &mut self.back;
        let pool = self
            .pools
            .iter_mut()
            .find(|p| p.class == class)
            .expect("made above");
        pool.last_refill_ms = now_ms;
        let (lease_ms, items, services) = match reply {
            Ok(Reply::Slots {
                lease_ms,
                items,
                services,
            }) => (lease_ms, items, services),
            other => {
                // An older meta service (no slots), or none reachable: the normal path for a while.
                debug!(reply = ?other.as_ref().map(|_| ()), "no slots: putting the normal way");
                pool.refill_after_ms = now_ms.saturating_add(SLOT_REFUSED_BACKOFF_MS);
                return;
            }
        };
        if items.is_empty() {
            pool.refill_after_ms = now_ms.saturating_add(SLOT_REFUSED_BACKOFF_MS);
        }
        let usable_until_ms = asked_ms.saturating_add(lease_ms / 2);
        for item in items {
            let ok = item.code == 0
                && !item.replicas.is_empty()
                && item.replicas.len() <= msg::REPLICAS_MAX
                && item.replicas.iter().all(|r| r.len >= class.size);
            let replicas: Option<Vec<(Replica, u64)>> = item
                .replicas
                .iter()
                .map(|r| service(&services, r.rank).map(|s| (*r, s.incarnation)))
                .collect();
            match replicas {
                Some(replicas) if ok => pool.slots.push(Slot {
                    token: item.token,
                    size: class.size,
                    replicas,
                    usable_until_ms,
                }),
                _ => {
                    warn!(
                        token = item.token,
                        "a slot granted without usable replicas: given back"
                    );
                    if item.code == 0 {
                        back.push(item.token);
                    }
                }
            }
        }
        pool.services = Arc::new(services);
    }

    /// The meta service did not know a slot of `class` (it expired, or the meta service
    /// restarted): give back the others of that class and ask again later.
    pub fn forget_class(&mut self, class: SlotClass) {
        let back = &mut self.back;
        if let Some(pool) = self.pools.iter_mut().find(|p| p.class == class) {
            back.extend(pool.slots.drain(..).map(|s| s.token));
        }
    }

    /// Every slot, for the client's end: they are given back with [`SlotPool::give_back`].
    pub fn drain(&mut self) {
        for pool in self.pools.drain(..) {
            self.back.extend(pool.slots.into_iter().map(|s| s.token));
        }
    }

    /// The one-way request that gives back the slots this pool dropped, if any.
    pub fn give_back(&mut self) -> Option<Request> {
        if self.back.is_empty() {
            return None;
        }
        let items = self
            .back
            .drain(..)
            .map(|token| LeasedPut {
                token,
                key: String::new(),
                size: 0,
                crc: 0,
                ok: false,
            })
            .collect();
        Some(Request::PutLeased {
            client_id: self.client_id,
            items,
        })
    }

    /// Slots held (all classes).
    pub fn len(&self) -> usize {
        self.pools.iter().map(|p| p.slots.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a [`LeasedPutOp`] came to.
#[derive(Debug)]
pub enum Leased {
    /// The put is done (committed, or refused for good: the key exists, the meta service
    /// could not be reached).
    Done(Result<()>),
    /// The slot could not be used (a write failed, the meta service no longer knew it): put the
    /// normal way. Nothing of this put is visible.
    Fallback { forget_class: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Write,
    AwaitWrite,
    Commit,
    AwaitCommit,
    GiveBack,
    Done,
}

/// Buffers a [`LeasedPutOp`] reuses from one put to the next (no allocation on the steady
/// state): the transfer list and the `PutLeased` request with its key.
#[derive(Debug, Default)]
pub struct LeasedScratch {
    transfers: Vec<Transfer>,
    request: Option<Request>,
}

/// One put into a leased slot: write every replica, then `PutLeased` (one meta round trip).
pub struct LeasedPutOp {
    slot: Slot,
    size: u64,
    client_id: u64,
    transfers: Vec<Transfer>,
    /// The request, built in place from the scratch's (its key's buffer reused).
    request: Option<Request>,
    suspects: Suspects,
    state: State,
    outcome: Option<Leased>,
    deadline_ms: u64,
    timeout_ms: u64,
    /// A write that fails later than this before the deadline is the put's answer: no time is
    /// left to put the normal way.
    margin_ms: u64,
}

impl LeasedPutOp {
    /// A put of `key` (checked by the caller: 1 to 255 bytes), `size` bytes with CRC-32C `crc`,
    /// into `slot`, whose services' addresses are `services`; the value is the driver's item 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: &str,
        size: u64,
        crc: u32,
        slot: Slot,
        client_id: u64,
        now_ms: u64,
        timeout_ms: u64,
        scratch: LeasedScratch,
    ) -> LeasedPutOp {
        assert!(size > 0 && size <= slot.size, "the put fits its slot");
        assert!(!key.is_empty() && key.len() <= msg::KEY_BYTES_MAX);
        assert!(timeout_ms > 0, "an operation needs a deadline");
        let LeasedScratch {
            mut transfers,
            request,
        } = scratch;
        transfers.clear();
        for (r, incarnation) in &slot.replicas {
            debug_assert!(r.len >= size, "a slot's replica holds the put");
            transfers.push(Transfer {
                dir: Dir::Write,
                fence: Fence {
                    rank: r.rank,
                    incarnation: *incarnation,
                    segment: r.segment,
                },
                offset: r.offset,
                len: size,
                item: 0,
                item_offset: 0,
            });
        }
        let mut request = match request {
            Some(Request::PutLeased { mut items, .. }) => {
                items.truncate(1);
                Some(items)
            }
            _ => None,
        }
        .unwrap_or_default();
        match request.first_mut() {
            Some(item) => {
                item.key.clear();
                item.key.push_str(key);
                item.token = slot.token;
                item.size = size;
                item.crc = crc;
                item.ok = true;
            }
            None => request.push(LeasedPut {
                token: slot.token,
                key: key.to_string(),
                size,
                crc,
                ok: true,
            }),
        }
        assert!(
            now_ms < slot.usable_until_ms,
            "a slot is used before half its lease"
        );
        LeasedPutOp {
            slot,
            size,
            client_id,
            transfers,
            request: Some(Request::PutLeased {
                client_id,
                items: request,
            }),
            suspects: Suspects::default(),
            state: State::Write,
            outcome: None,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            timeout_ms,
            margin_ms: (timeout_ms / 10).min(200),
        }
    }

    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// The writes, after [`Action::Transfer`]: one per replica, all of item 0.
    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }

    /// The next thing to do.
    pub fn poll(&mut self, now_ms: u64) -> Action {
        if let Some(report) = self.suspects.next() {
            return report;
        }
        let in_flight = matches!(
            self.state,
            State::Write | State::AwaitWrite | State::Commit | State::AwaitCommit
        );
        if in_flight && now_ms >= self.deadline_ms {
            warn!(state = ?self.state, "leased put: deadline passed");
            self.finish(Leased::Done(Err(Error::Timeout {
                ms: self.timeout_ms,
                what: "put did not finish before its deadline".into(),
            })));
        }
        match self.state {
            State::Write => {
                self.state = State::AwaitWrite;
                Action::Transfer
            }
            State::Commit => {
                self.state = State::AwaitCommit;
                Action::Meta(self.request.take().expect("the request is built"))
            }
            State::GiveBack => {
                // The slot is given back in the same request, unused: the key is not sent.
                let mut req = self.request.take().expect("the request is built");
                if let Request::PutLeased { items, .. } = &mut req {
                    items[0].ok = false;
                    items[0].key.clear();
                }
                self.state = State::Done;
                Action::MetaOneway(req)
            }
            State::AwaitWrite | State::AwaitCommit => Action::Wait {
                deadline_ms: self.deadline_ms,
            },
            State::Done => Action::Done,
        }
    }

    /// One outcome per transfer, in order.
    pub fn on_transfers(&mut self, now_ms: u64, outcomes: &[Result<()>]) {
        if self.state == State::Done {
            return;
        }
        assert_eq!(
            self.state,
            State::AwaitWrite,
            "completions without transfers"
        );
        assert_eq!(
            outcomes.len(),
            self.transfers.len(),
            "one outcome per transfer"
        );
        let mut failed = None;
        for (t, outcome) in self.transfers.iter().zip(outcomes) {
            self.suspects.note(t, outcome);
            if let Err(e) = outcome {
                debug!(error = %e, rank = t.fence.rank, "leased put: write failed");
                failed.get_or_insert_with(|| e.clone_error());
            }
        }
        if let Some(e) = failed {
            // The slot goes back either way; the normal way only while time is left for it.
            self.outcome = Some(
                if now_ms.saturating_add(self.margin_ms) >= self.deadline_ms {
                    Leased::Done(Err(e))
                } else {
                    Leased::Fallback {
                        forget_class: false,
                    }
                },
            );
            self.state = State::GiveBack;
        } else {
            self.state = State::Commit;
        }
    }

    /// The meta service's reply to the `PutLeased` (or the failure to get one), with the
    /// request handed back (kept for the next put's buffers).
    pub fn on_meta(&mut self, _now_ms: u64, request: Request, reply: Result<Reply>) {
        assert!(
            matches!(request, Request::PutLeased { .. }),
            "a leased put handed back {request:?}"
        );
        self.request = Some(request);
        if self.state == State::Done {
            return;
        }
        assert_eq!(
            self.state,
            State::AwaitCommit,
            "meta reply without a request"
        );
        let key = || match &self.request {
            Some(Request::PutLeased { items, .. }) => items[0].key.as_str(),
            _ => "",
        };
        let outcome = match reply {
            Ok(Reply::Commit { codes }) if codes.len() == 1 => match codes[0] {
                0 => Leased::Done(Ok(())),
                // Unknown slot: expired, or granted by an earlier run of the meta service.
                c if c == Code::Timeout.as_i32() => Leased::Fallback { forget_class: true },
                c => Leased::Done(Err(key_error(c, key()))),
            },
            // A meta service that does not know the request: the normal path.
            Ok(Reply::Error { .. }) | Ok(Reply::Busy { .. }) => {
                Leased::Fallback { forget_class: true }
            }
            Ok(other) => Leased::Done(Err(unexpected(&other))),
            Err(Error::Remote { .. }) => Leased::Fallback { forget_class: true },
            // Sent or not, applied or not: unknown, as for a commit that failed.
            Err(e) => Leased::Done(Err(e)),
        };
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Leased) {
        if let Leased::Done(Ok(())) = outcome {
            // Committed: it was written whole, into its own slot, before its use-by time.
            debug_assert!(self.size <= self.slot.size && self.state == State::AwaitCommit);
        }
        self.outcome = Some(outcome);
        self.state = State::Done;
    }

    /// What the put came to, and the buffers for the next one. Only after [`Action::Done`].
    pub fn finish_op(mut self) -> (Leased, LeasedScratch) {
        assert_eq!(
            self.state,
            State::Done,
            "results before the operation finished"
        );
        let outcome = self.outcome.take().expect("a finished put has an outcome");
        debug_assert!(self.client_id != 0);
        let scratch = LeasedScratch {
            transfers: std::mem::take(&mut self.transfers),
            request: self.request.take(),
        };
        (outcome, scratch)
    }
}
