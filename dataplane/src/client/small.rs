//! Small puts in one meta round trip, driven: the sans-IO [`LeasedPutOp`] and [`SlotPool`]
//! (`mmc_core::client::slots`) decide; this driver asks for slots when a class runs out, copies
//! the value into the slot's replicas (one memcpy each on the own and same-host placements,
//! without job lists; TCP through the transports), and sends the one `PutLeased`. A put the slot
//! path cannot take (too large, preferred ranks, a slot refused or a write failed) goes the
//! normal way: `None` here.

use std::sync::Arc;

use mmc_controlplane::msg::{Reply, Request, ServiceAddr};
use mmc_controlplane::Result;
use mmc_core::client::{
    check_key, key_error, Action, Leased as Outcome, LeasedPutOp, LeasedScratch, SlotClass,
    SlotPool, Transfer,
};
use mmc_core::transport::write_jobs;

use super::{Client, PutOptions};
use crate::transport::OneCopy;

/// Buffers kept per client for small puts (reused: no allocation on the steady state).
const SCRATCH_MAX: usize = 8;

/// What one small put reuses from the last.
#[derive(Default)]
pub(crate) struct SmallScratch {
    leased: LeasedScratch,
    /// The ranks whose liveness this call confirmed (see `Transports::route`).
    alive: Vec<u32>,
}

/// The client's slot pool and reusable buffers.
pub(crate) struct Small {
    pub(crate) pool: std::sync::Mutex<SlotPool>,
    scratch: std::sync::Mutex<Vec<SmallScratch>>,
    /// `MMC_PUT_SLOTS=off`: every put the normal way (for measuring).
    pub(crate) off: bool,
    /// The `Exist` request of a single-key exist, kept with its key's buffer for the next one.
    exist: std::sync::Mutex<Option<Request>>,
}

impl Small {
    pub(crate) fn new(client_id: u64, writer_rank: Option<u32>) -> Small {
        let off = std::env::var("MMC_PUT_SLOTS").is_ok_and(|v| v == "off");
        Small {
            pool: std::sync::Mutex::new(SlotPool::new(client_id, writer_rank)),
            scratch: std::sync::Mutex::new(Vec::new()),
            off,
            exist: std::sync::Mutex::new(None),
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock()
        .expect("lock poisoned: a panic left this state half-updated")
}

impl Client {
    /// A put of one key through a leased slot, or `None` when it must go the normal way.
    pub(crate) fn put_small(
        &self,
        key: &str,
        parts: &[&[u8]],
        opts: &PutOptions,
    ) -> Option<Result<()>> {
        if self.small.off {
            return None;
        }
        let size: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let class = SlotClass::of(size, opts)?;
        check_key(key).ok()?;
        self.renew_session(self.deadline());
        let (slot, services) = self.take_slot(class)?;
        let crc = mmc_core::checksum(parts.iter().copied());
        let mut scratch = lock(&self.small.scratch).pop().unwrap_or_default();
        let mut op = LeasedPutOp::new(
            key,
            size,
            crc,
            slot,
            self.client_id,
            self.now_ms(),
            self.timeout_ms(),
            std::mem::take(&mut scratch.leased),
        );
        loop {
            match op.poll(self.now_ms()) {
                Action::Transfer => {
                    self.before_transfer();
                    let deadline = self.instant(op.deadline_ms());
                    let t = op.transfers();
                    match self.write_fast(t, parts, &services, &mut scratch.alive) {
                        Some(outcomes) => op.on_transfers(self.now_ms(), &outcomes[..t.len()]),
                        None => {
                            let values = [parts];
                            let jobs = write_jobs(t, &values);
                            let outcomes = self.transports.run(jobs, &services, deadline);
                            op.on_transfers(self.now_ms(), &outcomes);
                        }
                    }
                }
                Action::Meta(req) => {
                    let reply = self.meta_call(&req, self.instant(op.deadline_ms()));
                    op.on_meta(self.now_ms(), req, reply);
                }
                Action::MetaOneway(req) => self.send_oneway(req),
                Action::Done => break,
                Action::Sleep { .. } | Action::Wait { .. } => {
                    unreachable!("a leased put neither backs off nor waits in a blocking driver")
                }
            }
        }
        let (outcome, leased) = op.finish_op();
        scratch.leased = leased;
        {
            let mut kept = lock(&self.small.scratch);
            if kept.len() < SCRATCH_MAX {
                kept.push(scratch);
            }
        }
        match outcome {
            Outcome::Done(result) => Some(result),
            Outcome::Fallback { forget_class } => {
                let back = {
                    let mut pool = lock(&self.small.pool);
                    if forget_class {
                        pool.forget_class(class);
                    }
                    pool.give_back()
                };
                if let Some(req) = back {
                    self.send_oneway(req);
                }
                None
            }
        }
    }

    /// A slot of `class`, asking the meta service for more first when the class ran out.
    fn take_slot(
        &self,
        class: SlotClass,
    ) -> Option<(mmc_core::client::Slot, Arc<Vec<ServiceAddr>>)> {
        let asked_ms = self.now_ms();
        let refill = lock(&self.small.pool).refill(asked_ms, class);
        if let Some(req) = refill {
            let reply = self.meta_call(&req, self.deadline());
            lock(&self.small.pool).on_refill(asked_ms, self.now_ms(), class, reply);
        }
        let (taken, back) = {
            let mut pool = lock(&self.small.pool);
            let taken = pool.take(self.now_ms(), class);
            (taken, pool.give_back())
        };
        if let Some(req) = back {
            self.send_oneway(req);
        }
        taken
    }

    /// Every write on a memcpy backend, without job lists: the outcomes, or `None` when one of
    /// them goes to another backend (then none was made).
    fn write_fast(
        &self,
        transfers: &[Transfer],
        parts: &[&[u8]],
        services: &[ServiceAddr],
        alive: &mut Vec<u32>,
    ) -> Option<[Result<()>; mmc_controlplane::msg::REPLICAS_MAX]> {
        alive.clear();
        if transfers.len() > mmc_controlplane::msg::REPLICAS_MAX
            || !transfers
                .iter()
                .all(|t| self.transports.is_memcpy(t.fence.rank, services))
        {
            return None;
        }
        let mut outcomes: [Result<()>; mmc_controlplane::msg::REPLICAS_MAX] =
            std::array::from_fn(|_| Ok(()));
        for (t, out) in transfers.iter().zip(outcomes.iter_mut()) {
            *out = self
                .transports
                .copy_one(t, OneCopy::Write(parts), services, alive)
                .unwrap_or_else(|| {
                    Err(mmc_controlplane::Error::LocalUnreachable {
                        endpoint: format!("rank {}", t.fence.rank),
                        reason: "its shared memory went away".into(),
                    })
                });
        }
        Some(outcomes)
    }

    /// Give every slot back (the client's end).
    pub(crate) fn give_back_slots(&self) {
        let back = {
            let mut pool = lock(&self.small.pool);
            pool.drain();
            pool.give_back()
        };
        if let Some(req) = back {
            self.send_oneway(req);
        }
    }
}

impl Client {
    /// Slots this client holds for small puts (all size classes): leased pool space not used yet.
    pub fn slots_held(&self) -> usize {
        lock(&self.small.pool).len()
    }
}

impl Client {
    /// A single-key exist in one round trip with no allocation but its reply's: the request
    /// (and its key's buffer) is kept for the next one. `None` when the answer is anything but
    /// the plain one (`Busy` while the meta service rebuilds, a protocol surprise): the caller
    /// then asks through `MetaOp`, which decides.
    pub(crate) fn exist_one(&self, key: &str) -> Option<Result<()>> {
        check_key(key).ok()?;
        let mut req = lock(&self.small.exist)
            .take()
            .unwrap_or(Request::Exist { keys: Vec::new() });
        let Request::Exist { keys } = &mut req else {
            unreachable!("only an Exist is kept")
        };
        keys.truncate(1);
        match keys.first_mut() {
            Some(k) => {
                k.clear();
                k.push_str(key);
            }
            None => keys.push(key.to_string()),
        }
        let reply = self.meta_call(&req, self.deadline());
        *lock(&self.small.exist) = Some(req);
        match reply {
            Ok(Reply::Codes { codes }) if codes.len() == 1 => Some(match codes[0] {
                0 => Ok(()),
                code => Err(key_error(code, key)),
            }),
            // As `MetaOp` answers a failed round trip: the whole call fails with it.
            Err(e) => Some(Err(e)),
            // Wait as told (as `MetaOp` does), then let `MetaOp` ask again.
            Ok(Reply::Busy { retry_ms, .. }) => {
                let ms = retry_ms.clamp(1, mmc_core::client::BUSY_RETRY_MAX_MS);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                None
            }
            Ok(_) => None,
        }
    }
}
