//! The client's operations as sans-IO state machines.
//!
//! An operation is driven by a loop: [`Action`]s come out of `poll(now_ms)`; the driver carries
//! them out (a meta round trip, a list of [`Transfer`]s against local services) and feeds the
//! outcomes back (`on_meta`, `on_transfers`); `poll` again, until [`Action::Done`]. Every decision
//! lives here: which keys the contract refuses, which replica to read and which next when a copy
//! fails, when a put waiting for leased space tries again, whether a read lease held until the
//! copy finished, and when the operation's deadline has passed. The blocking driver in
//! `mmc-dataplane` runs these with sockets and the clock; the simulator runs them with a seeded
//! network and a simulated clock.

mod get;
mod keys;
mod meta_op;
mod put;
mod release;
mod slots;
mod staged;

pub use get::GetOp;
pub use keys::{check_key, check_keys, check_lengths, key_error, unexpected, CloneError};
pub use meta_op::{Info, MetaKind, MetaOp};
pub use put::{PutOp, PutOptions, REPLACE_MAX};
pub use release::{ReleaseBatch, RELEASE_DEFER_BYTES, RELEASE_DEFER_MAX, RELEASE_DEFER_MS};
pub use slots::{
    Leased, LeasedPutOp, LeasedScratch, Slot, SlotClass, SlotPool, SLOTS_ASK, SLOT_CLASS_MIN,
    SLOT_PUT_MAX,
};
pub use staged::{FinishOp, Staged, STAGED_WRITE_MS};

use mmc_controlplane::msg::{Request, ServiceAddr};
use mmc_hal::fence::Fence;

/// What an operation wants done next.
#[derive(Debug)]
pub enum Action {
    /// Send this request to the meta service; feed its reply (or the failure) to `on_meta`, with
    /// the request handed back.
    Meta(Request),
    /// Send this request and expect no reply.
    MetaOneway(Request),
    /// Carry out `transfers()` (each against the local service its fence names); feed one outcome
    /// per transfer, in order, to `on_transfers`.
    Transfer,
    /// Nothing to do before `until_ms` (a back-off); poll again then.
    Sleep { until_ms: u64 },
    /// Waiting for a reply or completions; poll again after feeding them, or at `deadline_ms`.
    Wait { deadline_ms: u64 },
    /// Finished: take the results.
    Done,
}

/// What every operation offers its driver besides transfers.
pub trait Operation {
    /// The next thing to do.
    fn poll(&mut self, now_ms: u64) -> Action;
    /// The meta service's reply to the last [`Action::Meta`] (or the failure to get one), with
    /// that request handed back: its keys move back into the operation instead of being copied.
    fn on_meta(
        &mut self,
        now_ms: u64,
        request: Request,
        reply: mmc_controlplane::Result<mmc_controlplane::msg::Reply>,
    );
    /// When the operation gives up.
    fn deadline_ms(&self) -> u64;
}

macro_rules! operation {
    ($($t:ty),*) => {$(
        impl Operation for $t {
            fn poll(&mut self, now_ms: u64) -> Action {
                <$t>::poll(self, now_ms)
            }
            fn on_meta(
                &mut self,
                now_ms: u64,
                request: Request,
                reply: mmc_controlplane::Result<mmc_controlplane::msg::Reply>,
            ) {
                <$t>::on_meta(self, now_ms, request, reply)
            }
            fn deadline_ms(&self) -> u64 {
                <$t>::deadline_ms(self)
            }
        }
    )*};
}
operation!(PutOp, GetOp, MetaOp, FinishOp);

/// Which way bytes move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Caller memory -> pool (put).
    Write,
    /// Pool -> caller memory (get).
    Read,
}

/// One copy between a range of a segment and a range of the caller's memory for one key.
///
/// The caller's memory is named, not pointed to: `item` is the key's index in the batch and
/// `item_offset` a byte offset into that key's value (its parts, concatenated). The driver resolves
/// it against the buffers it holds, so the core stays free of pointers and lifetimes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub dir: Dir,
    /// Rank, incarnation and segment: checked by the transport before and after the copy.
    pub fence: Fence,
    /// Offset in the segment.
    pub offset: u64,
    pub len: u64,
    pub item: usize,
    pub item_offset: u64,
}

/// Most distinct services one operation reports as suspects.
pub const SUSPECTS_MAX: usize = 8;

/// The services an operation found unreachable, to report to the meta service one-way as
/// [`Request::Suspect`] before its next step, so that it stops placing on them at once.
///
/// Reported: a transfer that failed with [`Error::LocalUnreachable`] (connection refused, reset
/// or closed; no address; a fence refusal). Not reported: a timeout (a frozen or slow service;
/// its lease decides) nor a refusal with a code. A fence refusal names the incarnation the plan
/// used, which the meta service ignores unless it is still the member's current one. At most
/// [`SUSPECTS_MAX`] per operation, each once.
#[derive(Debug, Default)]
pub(crate) struct Suspects {
    found: Vec<(u32, u64)>,
    sent: usize,
}

impl Suspects {
    /// Note the outcome of `t`.
    pub(crate) fn note(&mut self, t: &Transfer, outcome: &mmc_controlplane::Result<()>) {
        if !matches!(
            outcome,
            Err(mmc_controlplane::Error::LocalUnreachable { .. })
        ) {
            return;
        }
        let who = (t.fence.rank, t.fence.incarnation);
        if self.found.len() < SUSPECTS_MAX && !self.found.contains(&who) {
            self.found.push(who);
        }
        debug_assert!(self.found.len() <= SUSPECTS_MAX);
    }

    /// The next report to send, if any.
    pub(crate) fn next(&mut self) -> Option<Action> {
        let &(rank, incarnation) = self.found.get(self.sent)?;
        self.sent += 1;
        Some(Action::MetaOneway(Request::Suspect { rank, incarnation }))
    }
}

/// Longest back-off after a [`Reply::Busy`](mmc_controlplane::msg::Reply::Busy), whatever
/// `retry_ms` it asks for: a rebuild that ends early is noticed within this.
pub const BUSY_RETRY_MAX_MS: u64 = 200;

/// When to send again a request the meta service answered `Busy { retry_ms }`: after `retry_ms`
/// (at least 1 ms, at most [`BUSY_RETRY_MAX_MS`]), never past the deadline (the operation then
/// times out).
pub(crate) fn busy_until(now_ms: u64, retry_ms: u64, deadline_ms: u64) -> u64 {
    now_ms
        .saturating_add(retry_ms.clamp(1, BUSY_RETRY_MAX_MS))
        .min(deadline_ms)
}

/// The error of a key whose deadline passed while the meta service answered `Busy` (-3004).
pub(crate) fn busy_timeout(timeout_ms: u64, message: &str) -> mmc_controlplane::Error {
    mmc_controlplane::Error::Timeout {
        ms: timeout_ms,
        what: format!("the meta service was rebuilding its directory ({message})"),
    }
}

/// The address of `rank` in a meta reply's service list.
pub fn service(services: &[ServiceAddr], rank: u32) -> Option<&ServiceAddr> {
    services.iter().find(|s| s.rank == rank)
}

/// Split `len` bytes at `offset` of a value made of parts of `part_lens` bytes into
/// `(part index, offset in the part, bytes)` runs, in order. Parts that end before `offset` are
/// skipped; runs stop at `len` bytes (or at the end of the parts: the caller checks capacity).
pub fn runs(
    part_lens: impl IntoIterator<Item = u64>,
    mut offset: u64,
    mut len: u64,
) -> impl Iterator<Item = (usize, u64, u64)> {
    part_lens
        .into_iter()
        .enumerate()
        .filter_map(move |(i, plen)| {
            if len == 0 {
                return None;
            }
            if offset >= plen {
                offset -= plen;
                return None;
            }
            let n = (plen - offset).min(len);
            let run = (i, offset, n);
            offset = 0;
            len -= n;
            Some(run)
        })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_busy_verify;
#[cfg(test)]
mod tests_slots;
#[cfg(test)]
mod tests_staged;
