//! Get: look up (one meta round trip, which takes a read lease per key; looked up again after a
//! back-off while the meta service answers `Busy`), read one replica of each object into the
//! caller's memory, fall over to the next replica when a copy fails (or, with `verify_reads`, its
//! bytes do not match the object's checksum), check the lease held until the copies finished,
//! release the leases (one-way).
//!
//! A copy from a frozen service neither fails nor finishes; so that it cannot eat the whole call
//! while another replica could answer, a round of copies in which some key still has replicas
//! left gets only an equal share of the time left before the deadline or the lease's end
//! ([`GetOp::transfer_deadline_ms`]): with two replicas, half. A copy that times out at that
//! earlier deadline falls over to its key's next replica; a key with no other replica, cut short
//! only for another key's sake, reads the same replica again with the time that is left.

use mmc_controlplane::msg::{Replica, Reply, Request, ServiceAddr};
use mmc_controlplane::{Error, Result};
use mmc_hal::fence::Fence;
use tracing::{debug, error, warn};

use super::keys::{lend, restore};
use super::{
    busy_timeout, busy_until, check_keys, check_lengths, key_error, runs, service, unexpected,
    Action, Dir, Suspects, Transfer,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Lookup,
    AwaitLookup,
    /// The meta service answered `Busy`: look up again at `until_ms`.
    Backoff {
        until_ms: u64,
    },
    Read,
    AwaitRead,
    Release,
    Done,
}

/// A found object: its size, checksum and lease, the replicas in the order they are tried.
struct Found {
    size: u64,
    crc: u32,
    lease: u64,
    replicas: Vec<Replica>,
    tried: usize,
}

/// One batch get.
pub struct GetOp {
    keys: Vec<String>,
    /// Indexes of the keys lent to the lookup in flight, in its order.
    sent: Vec<usize>,
    /// Bytes each key's buffers hold (`u64::MAX`: the driver sizes the buffer after the lookup).
    capacities: Vec<u64>,
    own_rank: Option<u32>,
    results: Vec<Result<u64>>,
    found: Vec<Option<Found>>,
    services: Vec<ServiceAddr>,
    transfers: Vec<Transfer>,
    fatal: Option<Error>,
    /// Services found unreachable, reported before the next step.
    suspects: Suspects,
    state: State,
    lease_ms: u64,
    /// When the lookup was sent: leases count from there.
    started_ms: u64,
    deadline_ms: u64,
    /// When the copies of the current round give up (at most `deadline_ms`).
    round_deadline_ms: u64,
    timeout_ms: u64,
    /// The message of the last `Busy` answer, until a lookup is answered.
    busy: Option<String>,
}

impl GetOp {
    /// A get of `keys[i]` into buffers of `capacities[i]` bytes. `Err` when the batch itself is
    /// refused.
    pub fn new<K: AsRef<str>>(
        keys: &[K],
        capacities: &[u64],
        own_rank: Option<u32>,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<GetOp> {
        check_lengths(keys.len(), capacities.len(), "buffers")?;
        assert!(timeout_ms > 0, "an operation needs a deadline");
        let checked = check_keys(keys)?;
        let results: Vec<Result<u64>> = checked.into_iter().map(|k| k.map(|_| 0)).collect();
        let state = if results.iter().any(|r| r.is_ok()) {
            State::Lookup
        } else {
            State::Done
        };
        Ok(GetOp {
            keys: keys.iter().map(|k| k.as_ref().to_string()).collect(),
            sent: Vec::new(),
            capacities: capacities.to_vec(),
            own_rank,
            found: (0..results.len()).map(|_| None).collect(),
            results,
            services: Vec::new(),
            transfers: Vec::new(),
            fatal: None,
            suspects: Suspects::default(),
            state,
            lease_ms: 0,
            started_ms: now_ms,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            round_deadline_ms: now_ms.saturating_add(timeout_ms),
            timeout_ms,
            busy: None,
        })
    }

    pub fn poll(&mut self, now_ms: u64) -> Action {
        if !matches!(self.state, State::Done | State::Release) && now_ms >= self.deadline_ms {
            self.time_out();
        }
        if let Some(report) = self.suspects.next() {
            return report;
        }
        match self.state {
            State::Lookup => {
                self.state = State::AwaitLookup;
                self.started_ms = now_ms;
                debug_assert!(self.sent.is_empty());
                self.sent = (0..self.keys.len())
                    .filter(|&i| self.results[i].is_ok())
                    .collect();
                let keys = lend(&mut self.keys, &self.sent);
                Action::Meta(Request::Lookup { keys })
            }
            State::Backoff { until_ms } if now_ms < until_ms => Action::Sleep { until_ms },
            State::Backoff { .. } => {
                self.state = State::Lookup;
                self.poll(now_ms)
            }
            State::Read => {
                self.state = State::AwaitRead;
                Action::Transfer
            }
            State::Release => {
                self.state = State::Done;
                let leases: Vec<u64> = self.found.iter().flatten().map(|f| f.lease).collect();
                if leases.is_empty() {
                    Action::Done
                } else {
                    Action::MetaOneway(Request::Release { leases })
                }
            }
            State::AwaitLookup | State::AwaitRead => Action::Wait {
                deadline_ms: self.deadline_ms,
            },
            State::Done => Action::Done,
        }
    }

    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// When the copies of the current round ([`GetOp::transfers`]) should give up: the call's
    /// deadline, or earlier when a key of the round has other replicas to try (an equal share,
    /// per replica left, of the time left before the deadline or the end of the read lease). A
    /// driver that can abandon a copy at that time (its buffers untouched afterwards) reports it
    /// as a timeout; one that cannot may wait for the call's deadline instead.
    pub fn transfer_deadline_ms(&self) -> u64 {
        self.round_deadline_ms
    }

    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }

    pub fn services(&self) -> &[ServiceAddr] {
        &self.services
    }

    /// The object's size, once the lookup found it.
    pub fn size(&self, item: usize) -> Option<u64> {
        self.found[item].as_ref().map(|f| f.size)
    }

    /// The object's CRC-32C as its writer computed it, once the lookup found it.
    pub fn crc(&self, item: usize) -> Option<u32> {
        self.found[item].as_ref().map(|f| f.crc)
    }

    /// `verify_reads`: check the bytes each successful copy of the last [`Action::Transfer`]
    /// delivered (in `bufs`, as handed to the transports) against the object's checksum. A
    /// mismatch becomes that copy's outcome ([`Error::Checksum`], -3103, logged with the key, the
    /// replica and both checksums), so that [`GetOp::on_transfers`] falls over to the next replica
    /// as for a failed copy. Call between the copies and `on_transfers`.
    pub fn verify(&self, bufs: &[&mut [&mut [u8]]], outcomes: &mut [Result<()>]) {
        assert_eq!(
            outcomes.len(),
            self.transfers.len(),
            "one outcome per transfer"
        );
        for (t, outcome) in self.transfers.iter().zip(outcomes.iter_mut()) {
            if outcome.is_err() {
                continue;
            }
            let Some(expected) = self.crc(t.item) else {
                continue;
            };
            let parts = &bufs[t.item];
            let actual = crate::checksum(
                runs(parts.iter().map(|p| p.len() as u64), t.item_offset, t.len)
                    .map(|(p, off, n)| &parts[p][off as usize..(off + n) as usize]),
            );
            if let Err(e) = self.check(t, expected, actual) {
                *outcome = Err(e);
            }
        }
    }

    /// [`GetOp::verify`] for bytes the caller cannot hand over as slices (device memory):
    /// `actual(t)` computes the checksum of what transfer `t` delivered, or fails (that failure
    /// is then the copy's outcome).
    pub fn verify_by(
        &self,
        outcomes: &mut [Result<()>],
        mut actual: impl FnMut(&Transfer) -> Result<u32>,
    ) {
        assert_eq!(
            outcomes.len(),
            self.transfers.len(),
            "one outcome per transfer"
        );
        for (t, outcome) in self.transfers.iter().zip(outcomes.iter_mut()) {
            if outcome.is_err() {
                continue;
            }
            let Some(expected) = self.crc(t.item) else {
                continue;
            };
            if let Err(e) = actual(t).and_then(|a| self.check(t, expected, a)) {
                *outcome = Err(e);
            }
        }
    }

    /// The error for a copy `t` whose bytes have checksum `actual`, if not `expected`.
    fn check(&self, t: &Transfer, expected: u32, actual: u32) -> Result<()> {
        if actual == expected {
            return Ok(());
        }
        let key = &self.keys[t.item];
        error!(key = %key, rank = t.fence.rank, segment = t.fence.segment, offset = t.offset,
            expected = format_args!("{expected:#010x}"), actual = format_args!("{actual:#010x}"),
            "get: replica bytes do not match the object's checksum");
        Err(Error::Checksum {
            key: key.clone(),
            rank: t.fence.rank,
            segment: t.fence.segment,
            offset: t.offset,
            expected,
            actual,
        })
    }

    pub fn on_meta(&mut self, now_ms: u64, request: Request, reply: Result<Reply>) {
        let sent = std::mem::take(&mut self.sent);
        match request {
            Request::Lookup { keys } => restore(&mut self.keys, &sent, keys),
            other => panic!("a get handed back {other:?}"),
        }
        if self.state == State::Done || self.state == State::Release {
            return;
        }
        assert_eq!(
            self.state,
            State::AwaitLookup,
            "meta reply without a lookup"
        );
        let (items, services, lease_ms) = match reply {
            Ok(Reply::Lookup {
                items,
                services,
                lease_ms,
            }) => (items, services, lease_ms),
            Ok(Reply::Busy { retry_ms, message }) => {
                // No lease was granted: nothing to release.
                let until_ms = busy_until(now_ms, retry_ms, self.deadline_ms);
                debug!(retry_ms, until_ms, %message, "get: the meta service is busy, looking up again");
                self.busy = Some(message);
                self.state = State::Backoff { until_ms };
                return;
            }
            Ok(other) => return self.fail(unexpected(&other)),
            Err(e) => return self.fail(e),
        };
        let asked = sent.len();
        if items.len() != asked {
            return self.fail(Error::Protocol(format!(
                "lookup of {asked} keys answered with {} items",
                items.len()
            )));
        }
        self.busy = None;
        self.services = services;
        self.lease_ms = lease_ms;
        let mut items = items.into_iter();
        for i in 0..self.keys.len() {
            if self.results[i].is_err() {
                continue;
            }
            let item = items.next().expect("counted above");
            if item.code != 0 {
                self.results[i] = Err(key_error(item.code, &self.keys[i]));
                continue;
            }
            // The lease is released whatever happens next.
            let mut found = Found {
                size: item.size,
                crc: item.crc,
                lease: item.lease,
                replicas: order(item.replicas, self.own_rank, &self.services),
                tried: 0,
            };
            if self.capacities[i] < item.size {
                warn!(
                    index = i,
                    size = item.size,
                    capacity = self.capacities[i],
                    "get refused: buffer smaller than the object"
                );
                self.results[i] = Err(Error::InvalidParam(format!(
                    "buffer of {} bytes for an object of {} bytes",
                    self.capacities[i], item.size
                )));
                found.replicas.clear();
            } else if found.replicas.is_empty() {
                self.results[i] = Err(Error::LocalUnreachable {
                    endpoint: "none".into(),
                    reason: "no replica with a known address".into(),
                });
            } else {
                self.results[i] = Ok(item.size);
            }
            self.found[i] = Some(found);
        }
        self.plan_reads(now_ms);
    }

    /// A read of the next untried replica for every key still without its bytes.
    fn plan_reads(&mut self, now_ms: u64) {
        self.transfers.clear();
        // Attempts left for the key with the most, this one included.
        let mut attempts = 1;
        for (i, f) in self.found.iter().enumerate() {
            let Some(f) = f else { continue };
            if self.results[i].is_err() || f.tried >= f.replicas.len() {
                continue;
            }
            attempts = attempts.max(f.replicas.len() - f.tried);
            let r = f.replicas[f.tried];
            let addr = service(&self.services, r.rank).expect("order() keeps addressed replicas");
            debug_assert_eq!(r.len, f.size);
            self.transfers.push(Transfer {
                dir: Dir::Read,
                fence: Fence {
                    rank: r.rank,
                    incarnation: addr.incarnation,
                    segment: r.segment,
                },
                offset: r.offset,
                len: f.size,
                item: i,
                item_offset: 0,
            });
        }
        // The drivers hand each key's buffers to one copy at a time.
        debug_assert!(self
            .transfers
            .iter()
            .enumerate()
            .all(|(n, t)| self.transfers[..n].iter().all(|u| u.item != t.item)));
        self.round_deadline_ms = if attempts > 1 {
            // A copy that ends after the lease is refused anyway: share the time it leaves.
            let useful = self
                .deadline_ms
                .min(self.started_ms.saturating_add(self.lease_ms));
            now_ms + useful.saturating_sub(now_ms) / attempts as u64
        } else {
            self.deadline_ms
        };
        self.state = if self.transfers.is_empty() {
            self.finish_state()
        } else {
            State::Read
        };
    }

    /// One outcome per transfer, in the order of [`GetOp::transfers`]. A failed copy falls over
    /// to the key's next replica, if it has one and the deadline allows.
    pub fn on_transfers(&mut self, now_ms: u64, outcomes: Vec<Result<()>>) {
        if self.state == State::Done || self.state == State::Release {
            return;
        }
        assert_eq!(
            self.state,
            State::AwaitRead,
            "completions without transfers"
        );
        assert_eq!(
            outcomes.len(),
            self.transfers.len(),
            "one outcome per transfer"
        );
        let mut again = false;
        let cut_short = self.round_deadline_ms < self.deadline_ms;
        let transfers = std::mem::take(&mut self.transfers);
        for (t, outcome) in transfers.iter().zip(outcomes) {
            let f = self.found[t.item]
                .as_mut()
                .expect("a transfer for a found key");
            f.tried += 1;
            self.suspects.note(t, &outcome);
            if let Err(e) = outcome {
                let time_left = now_ms < self.deadline_ms;
                if f.tried < f.replicas.len() && time_left {
                    warn!(key = %self.keys[t.item], rank = t.fence.rank, error = %e,
                        "get: copy failed, trying the next replica");
                    again = true;
                } else if cut_short && time_left && matches!(e, Error::Timeout { .. }) {
                    // Its round ended early for another key's sake: the same replica again,
                    // with the time left. Each cut round moves some key to its next replica,
                    // so this repeats at most once per replica of the batch.
                    debug!(key = %self.keys[t.item], rank = t.fence.rank,
                        "get: copy cut short, reading the same replica again");
                    f.tried -= 1;
                    again = true;
                } else {
                    self.results[t.item] = Err(e);
                    f.tried = f.replicas.len();
                }
            } else {
                // Done with this key: no more replicas to try.
                f.tried = f.replicas.len();
            }
        }
        if again {
            self.plan_reads(now_ms);
        } else {
            self.check_leases(now_ms);
            self.state = self.finish_state();
        }
    }

    /// A reader never returns bytes of space that may have been reused: the lease must still have
    /// held when the copies finished (measured from before the lookup was sent).
    fn check_leases(&mut self, now_ms: u64) {
        assert!(now_ms >= self.started_ms, "time never runs backwards");
        if now_ms.saturating_sub(self.started_ms) < self.lease_ms {
            return;
        }
        for (r, f) in self.results.iter_mut().zip(&self.found) {
            if f.is_some() && r.is_ok() {
                warn!(
                    lease_ms = self.lease_ms,
                    "get: read lease expired during the copy"
                );
                *r = Err(Error::Timeout {
                    ms: self.lease_ms,
                    what: "read lease expired during the copy".into(),
                });
            }
        }
    }

    fn finish_state(&self) -> State {
        if self.found.iter().any(|f| f.is_some()) {
            State::Release
        } else {
            State::Done
        }
    }

    fn time_out(&mut self) {
        let ms = self.timeout_ms;
        let reading = self.state == State::AwaitRead || self.state == State::Read;
        for (i, r) in self.results.iter_mut().enumerate() {
            // Keys whose copies finished keep their result only if no copy is still out.
            let pending = match &self.found[i] {
                Some(f) => reading && f.tried < f.replicas.len(),
                None => true,
            };
            if r.is_ok() && pending {
                *r = Err(match &self.busy {
                    Some(message) => busy_timeout(ms, message),
                    None => Error::Timeout {
                        ms,
                        what: "get did not finish before its deadline".into(),
                    },
                });
            }
        }
        self.transfers.clear();
        warn!(state = ?self.state, "get: deadline passed");
        self.state = self.finish_state();
    }

    fn fail(&mut self, e: Error) {
        warn!(error = %e, "get failed");
        self.fatal = Some(e);
        self.state = self.finish_state();
    }

    /// One result (the object's size) per key; `Err` for the whole call when the lookup failed.
    pub fn results(self) -> Result<Vec<Result<u64>>> {
        assert_eq!(
            self.state,
            State::Done,
            "results before the operation finished"
        );
        if let Some(e) = self.fatal {
            return Err(e);
        }
        Ok(self.results)
    }
}

/// Replicas in the order they are tried: the reader's own pool first, then the others the meta
/// service gave an address for, in its order.
fn order(replicas: Vec<Replica>, own: Option<u32>, services: &[ServiceAddr]) -> Vec<Replica> {
    let mut out: Vec<Replica> = replicas
        .iter()
        .filter(|r| Some(r.rank) == own)
        .chain(replicas.iter().filter(|r| Some(r.rank) != own))
        .copied()
        .collect();
    // A replica whose service the meta service gave no address for is on a dead member.
    out.retain(|r| service(services, r.rank).is_some());
    out
}
