//! Put: allocate (one meta round trip), write every replica, commit (one meta round trip). Keys
//! that found no room while read leases held space are tried again after a back-off, within the
//! deadline; so is an allocation or a commit the meta service answered `Busy` (rebuilding its
//! directory after a restart). A key whose write failed because its service could not be reached
//! (refused, reset, closed, fenced off: the service died or registered again) is committed as
//! failed, which frees it, and allocated again at once (at most [`REPLACE_MAX`] times, within the
//! deadline): the service was reported as a suspect first, so the meta service places it
//! elsewhere.

use mmc_controlplane::msg::{self, AllocRequest, CommitItem, Replica, Reply, Request, ServiceAddr};
use mmc_controlplane::{Code, Error, Result};
use mmc_hal::fence::Fence;
use tracing::{debug, warn};

use super::keys::{lend, restore};
use super::{
    busy_timeout, busy_until, check_keys, check_lengths, key_error, service, unexpected, Action,
    CloneError, Dir, Staged, Suspects, Transfer,
};

/// Back-off between tries of a put that waits for leased space to be released.
pub const NO_SPACE_RETRY_MS: u64 = 20;

/// Most new allocations for one key whose write found its service unreachable.
pub const REPLACE_MAX: u8 = 2;

/// Where and how to place a put (`mmc_put_options`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOptions {
    /// `MEDIA_HBM`, `MEDIA_DRAM`, or `MEDIA_NONE` (the highest tier with room).
    pub media: u16,
    /// `NATIVE_AFFINITY` or `PREFERRED_AFFINITY`.
    pub policy: u16,
    /// 0 or 1 = one copy; at most 8, each on a different local service.
    pub replicas: u16,
    /// Local service ids for `PREFERRED_AFFINITY` (negative entries ignored).
    pub preferred: Vec<i32>,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            media: msg::MEDIA_NONE,
            policy: msg::NATIVE_AFFINITY,
            replicas: 1,
            preferred: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Alloc,
    AwaitAlloc,
    Write,
    AwaitWrite,
    Commit,
    AwaitCommit,
    /// Wait until `until_ms`, then allocate for the keys in `retry` (no room yet, or the meta
    /// service was busy) or, after a `Busy` commit, send the same commit again.
    Backoff {
        until_ms: u64,
        then: Then,
    },
    Done,
}

/// What a [`State::Backoff`] leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    Alloc,
    Commit,
}

/// One batch put (create-only: an existing key is `Error::Exists`).
pub struct PutOp {
    keys: Vec<String>,
    /// Indexes of the keys lent to the request in flight, in its order.
    sent: Vec<usize>,
    sizes: Vec<u64>,
    /// CRC-32C of each value, sent with the commit (set by then: see [`PutOp::set_crcs`]).
    crcs: Option<Vec<u32>>,
    opts: PutOptions,
    writer_rank: Option<u32>,
    /// The client session sent with each allocation (0 = unknown), see `with_client_id`.
    client_id: u64,
    results: Vec<Result<()>>,
    /// Committed (the meta service said so): only these may stay `Ok` at the end.
    confirmed: Vec<bool>,
    /// Keys of the next allocation round.
    todo: Vec<usize>,
    /// Keys of this round that got space: (key index, token).
    placed: Vec<(usize, u64)>,
    /// Keys of this round to try again after the back-off.
    retry: Vec<usize>,
    /// Keys of this round whose write found a service unreachable, to allocate again.
    replace: Vec<usize>,
    /// New allocations made so far per key for that reason.
    replaced: Vec<u8>,
    transfers: Vec<Transfer>,
    services: Vec<ServiceAddr>,
    fatal: Option<Error>,
    /// Services found unreachable, reported before the next step.
    suspects: Suspects,
    state: State,
    deadline_ms: u64,
    timeout_ms: u64,
    margin_ms: u64,
    /// The message of the last `Busy` answer, until the meta service answers again.
    busy: Option<String>,
    /// Allocate only ([`PutOp::stage`]): keys that got space end in `staged`, unwritten and
    /// uncommitted, for the caller to write and then commit with a `FinishOp`.
    stage_only: bool,
    staged: Vec<Staged>,
}

impl PutOp {
    /// A put of `keys[i]` with `sizes[i]` bytes each, whose CRC-32C is `crcs[i]` (see
    /// [`crate::checksum`]); `None`: the driver computes them while the writes run and hands them
    /// over with [`PutOp::set_crcs`] before the commit. `Err` when the batch itself is refused (too
    /// many keys, mismatched lengths, too many replicas); per-key refusals land in the results.
    pub fn new<K: AsRef<str>>(
        keys: &[K],
        sizes: &[u64],
        crcs: Option<&[u32]>,
        opts: &PutOptions,
        writer_rank: Option<u32>,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<PutOp> {
        check_lengths(keys.len(), sizes.len(), "values")?;
        if let Some(crcs) = crcs {
            check_lengths(keys.len(), crcs.len(), "checksums")?;
        }
        if opts.replicas as usize > msg::REPLICAS_MAX {
            return Err(Error::InvalidParam(format!(
                "{} replicas, the limit is {}",
                opts.replicas,
                msg::REPLICAS_MAX
            )));
        }
        assert!(timeout_ms > 0, "an operation needs a deadline");
        let checked = check_keys(keys)?;
        let mut results = Vec::with_capacity(keys.len());
        let mut todo = Vec::with_capacity(keys.len());
        for (i, k) in checked.into_iter().enumerate() {
            match k {
                Err(e) => results.push(Err(e)),
                Ok(key) if sizes[i] == 0 => {
                    warn!(key, "put refused: empty value");
                    results.push(Err(Error::InvalidParam(format!(
                        "put of {key:?}: zero-size value"
                    ))));
                }
                Ok(_) => {
                    results.push(Ok(()));
                    todo.push(i);
                }
            }
        }
        assert_eq!(results.len(), keys.len(), "one result per key");
        debug_assert!(todo.windows(2).all(|w| w[0] < w[1]), "keys in batch order");
        let state = if todo.is_empty() {
            State::Done
        } else {
            State::Alloc
        };
        Ok(PutOp {
            keys: keys.iter().map(|k| k.as_ref().to_string()).collect(),
            sent: Vec::new(),
            sizes: sizes.to_vec(),
            crcs: crcs.map(<[u32]>::to_vec),
            opts: opts.clone(),
            writer_rank,
            client_id: 0,
            confirmed: vec![false; results.len()],
            results,
            todo,
            placed: Vec::new(),
            retry: Vec::new(),
            replace: Vec::new(),
            replaced: vec![0; keys.len()],
            transfers: Vec::new(),
            services: Vec::new(),
            fatal: None,
            suspects: Suspects::default(),
            state,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            timeout_ms,
            busy: None,
            // Leave room for one more round trip, so that a put that found no room answers -3013,
            // not a timeout.
            margin_ms: (timeout_ms / 10).min(200),
            stage_only: false,
            staged: Vec::new(),
        })
    }

    /// The allocation phase of a put alone (vllm-ascend's `batch_alloc`): keys that get space are
    /// [`Staged`] (see [`PutOp::take_staged`]); their results are `Ok` though nothing is written
    /// or committed yet. Waiting for leased space and `Busy` answers work as in a whole put.
    pub fn stage<K: AsRef<str>>(
        keys: &[K],
        sizes: &[u64],
        opts: &PutOptions,
        writer_rank: Option<u32>,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<PutOp> {
        // Keys refused by the meta service (placed with a bad reply) are committed as failed,
        // which needs checksums: any value does for a failed commit.
        let zeros = vec![0; keys.len()];
        let mut op = PutOp::new(
            keys,
            sizes,
            Some(&zeros),
            opts,
            writer_rank,
            now_ms,
            timeout_ms,
        )?;
        op.stage_only = true;
        Ok(op)
    }

    /// After a [`PutOp::stage`]: the keys that got space, in batch order.
    pub fn take_staged(&mut self) -> Vec<Staged> {
        let mut staged = std::mem::take(&mut self.staged);
        staged.sort_by_key(|s| s.item);
        staged
    }

    /// The values' CRC-32C, when `new` was not given them. Must come before the commit.
    pub fn set_crcs(&mut self, crcs: Vec<u32>) {
        assert_eq!(crcs.len(), self.keys.len(), "one checksum per key");
        self.crcs = Some(crcs);
    }

    /// Whether the checksums are set.
    pub fn has_crcs(&self) -> bool {
        self.crcs.is_some()
    }

    /// Name the client session this put belongs to (random per client, nonzero): should every
    /// meta connection that carried it close, the meta service reclaims its pending puts at once
    /// instead of at `pending_timeout_ms`. Without it (0) only the timeout reclaims them.
    pub fn with_client_id(mut self, client_id: u64) -> PutOp {
        self.client_id = client_id;
        self
    }

    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// The next thing to do.
    pub fn poll(&mut self, now_ms: u64) -> Action {
        if self.state != State::Done && now_ms >= self.deadline_ms {
            self.time_out();
        }
        if let Some(report) = self.suspects.next() {
            return report;
        }
        match self.state {
            State::Alloc => {
                assert!(!self.todo.is_empty(), "an allocation round with no keys");
                debug_assert!(self.todo.iter().all(|&i| self.results[i].is_ok()));
                self.state = State::AwaitAlloc;
                debug_assert!(self.sent.is_empty());
                self.sent.clone_from(&self.todo);
                let keys = lend(&mut self.keys, &self.sent);
                Action::Meta(Request::Alloc(AllocRequest {
                    writer_rank: self.writer_rank,
                    client_id: self.client_id,
                    media: self.opts.media,
                    policy: self.opts.policy,
                    replicas: self.opts.replicas,
                    preferred: self.opts.preferred.clone(),
                    items: keys
                        .into_iter()
                        .zip(&self.todo)
                        .map(|(k, &i)| (k, self.sizes[i]))
                        .collect(),
                }))
            }
            State::Write => {
                self.state = State::AwaitWrite;
                Action::Transfer
            }
            State::Commit => {
                debug_assert!(!self.placed.is_empty());
                let crcs = self
                    .crcs
                    .as_ref()
                    .expect("the driver sets the checksums before the commit");
                self.state = State::AwaitCommit;
                debug_assert!(self.sent.is_empty());
                self.sent = self.placed.iter().map(|&(i, _)| i).collect();
                let keys = lend(&mut self.keys, &self.sent);
                Action::Meta(Request::Commit {
                    items: keys
                        .into_iter()
                        .zip(&self.placed)
                        .map(|(k, &(i, token))| {
                            let ok = self.results[i].is_ok();
                            (
                                k,
                                CommitItem {
                                    token,
                                    ok,
                                    crc: crcs[i],
                                },
                            )
                        })
                        .collect(),
                })
            }
            State::Backoff { until_ms, .. } if now_ms < until_ms => Action::Sleep { until_ms },
            State::Backoff {
                then: Then::Alloc, ..
            } => {
                self.next_round();
                self.poll(now_ms)
            }
            State::Backoff {
                then: Then::Commit, ..
            } => {
                self.state = State::Commit;
                self.poll(now_ms)
            }
            State::AwaitAlloc | State::AwaitWrite | State::AwaitCommit => Action::Wait {
                deadline_ms: self.deadline_ms,
            },
            State::Done => Action::Done,
        }
    }

    /// The transfers to carry out after [`Action::Transfer`].
    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }

    /// The addresses of the services the transfers go to.
    pub fn services(&self) -> &[ServiceAddr] {
        &self.services
    }

    /// The meta service's reply (or the failure to get one).
    pub fn on_meta(&mut self, now_ms: u64, request: Request, reply: Result<Reply>) {
        let sent = std::mem::take(&mut self.sent);
        match request {
            Request::Alloc(a) => {
                restore(&mut self.keys, &sent, a.items.into_iter().map(|(k, _)| k))
            }
            Request::Commit { items } => {
                restore(&mut self.keys, &sent, items.into_iter().map(|(k, _)| k))
            }
            other => panic!("a put handed back {other:?}"),
        }
        if let (State::AwaitAlloc | State::AwaitCommit, Ok(Reply::Busy { retry_ms, message })) =
            (self.state, &reply)
        {
            return self.on_busy(now_ms, *retry_ms, message);
        }
        if self.state != State::Done {
            self.busy = None;
        }
        match self.state {
            State::AwaitAlloc => self.on_alloc(now_ms, reply),
            State::AwaitCommit => self.on_commit(now_ms, reply),
            // A late reply after the deadline ended the operation.
            State::Done => {}
            s => panic!("meta reply in state {s:?}"),
        }
    }

    /// The meta service is rebuilding its directory: send the same request again after the
    /// back-off it asks for (bounded), within the deadline. An allocation answered `Busy` placed
    /// nothing; a commit answered `Busy` committed nothing (its space stays pending meanwhile).
    fn on_busy(&mut self, now_ms: u64, retry_ms: u64, message: &str) {
        let until_ms = busy_until(now_ms, retry_ms, self.deadline_ms);
        debug!(retry_ms, until_ms, message, state = ?self.state,
            "put: the meta service is busy, sending again");
        self.busy = Some(message.to_string());
        let then = if self.state == State::AwaitAlloc {
            debug_assert!(self.retry.is_empty(), "no keys wait for space mid-round");
            self.retry = std::mem::take(&mut self.todo);
            Then::Alloc
        } else {
            Then::Commit
        };
        self.state = State::Backoff { until_ms, then };
    }

    fn on_alloc(&mut self, now_ms: u64, reply: Result<Reply>) {
        let (items, services) = match reply {
            Ok(Reply::Alloc { items, services }) if items.len() == self.todo.len() => {
                (items, services)
            }
            Ok(other) => return self.fail(unexpected(&other)),
            Err(e) => {
                warn!(keys = self.todo.len(), error = %e, "put: allocation failed");
                for &i in &self.todo {
                    self.results[i] = Err(e.clone_error());
                }
                self.todo.clear();
                self.state = State::Done;
                return;
            }
        };
        self.services = services;
        self.placed.clear();
        self.transfers.clear();
        debug_assert!(self.retry.is_empty());
        let todo = std::mem::take(&mut self.todo);
        for (&i, item) in todo.iter().zip(&items) {
            if item.code == Code::ExceedCapacity.as_i32() && item.retry {
                self.retry.push(i);
            } else if item.code == Code::ExceedCapacity.as_i32() && self.opts.replicas > 1 {
                // Say what could not be met: the replicas need as many live services with room.
                let n = self.opts.replicas;
                let e = Error::Remote {
                    code: Code::ExceedCapacity,
                    context: format!(
                        "key {:?}: no room for {n} replicas of {} bytes, each on a different live \
                         local service (fewer live services than replicas, or too little space)",
                        self.keys[i], self.sizes[i]
                    ),
                };
                warn!(key = %self.keys[i], replicas = n, "{e}");
                self.results[i] = Err(e);
            } else if item.code != 0 {
                self.results[i] = Err(key_error(item.code, &self.keys[i]));
            } else {
                self.placed.push((i, item.token));
                self.plan_writes(i, &item.replicas);
                if self.stage_only && self.results[i].is_ok() {
                    self.placed.pop();
                    self.confirmed[i] = true;
                    let services = self
                        .services
                        .iter()
                        .filter(|s| item.replicas.iter().any(|r| r.rank == s.rank))
                        .cloned()
                        .collect();
                    self.staged.push(Staged {
                        item: i,
                        token: item.token,
                        replicas: item.replicas.clone(),
                        services,
                        at_ms: now_ms,
                    });
                }
            }
        }
        if self.stage_only {
            // Nothing is written here; keys left in `placed` had a bad placement and are
            // committed as failed below.
            self.transfers.clear();
        }
        // Every write belongs to a key that got space in this round.
        debug_assert!(self
            .transfers
            .iter()
            .all(|t| self.placed.iter().any(|(i, _)| *i == t.item)));
        self.state = if self.placed.is_empty() {
            self.after_round_state(now_ms)
        } else if self.transfers.is_empty() {
            State::Commit
        } else {
            State::Write
        };
    }

    fn plan_writes(&mut self, i: usize, replicas: &[Replica]) {
        if replicas.is_empty() || replicas.len() > msg::REPLICAS_MAX {
            self.results[i] = Err(Error::Protocol(format!(
                "{} replicas placed for one key",
                replicas.len()
            )));
            return;
        }
        for r in replicas {
            let Some(addr) = service(&self.services, r.rank) else {
                self.results[i] = Err(Error::LocalUnreachable {
                    endpoint: format!("rank {}", r.rank),
                    reason: "the meta service gave no address".into(),
                });
                continue;
            };
            if r.len != self.sizes[i] {
                self.results[i] = Err(Error::Protocol(format!(
                    "replica of {} bytes placed for {} bytes",
                    r.len, self.sizes[i]
                )));
                continue;
            }
            self.transfers.push(Transfer {
                dir: Dir::Write,
                fence: Fence {
                    rank: r.rank,
                    incarnation: addr.incarnation,
                    segment: r.segment,
                },
                offset: r.offset,
                len: r.len,
                item: i,
                item_offset: 0,
            });
        }
    }

    /// One outcome per transfer, in the order of [`PutOp::transfers`].
    pub fn on_transfers(&mut self, _now_ms: u64, outcomes: Vec<Result<()>>) {
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
        for (t, outcome) in self.transfers.iter().zip(outcomes) {
            self.suspects.note(t, &outcome);
            if let Err(e) = outcome {
                if self.results[t.item].is_ok() {
                    self.results[t.item] = Err(e);
                }
            }
        }
        self.transfers.clear();
        self.state = State::Commit;
    }

    fn on_commit(&mut self, now_ms: u64, reply: Result<Reply>) {
        assert!(!self.placed.is_empty(), "a commit with nothing placed");
        match reply {
            Ok(Reply::Commit { codes }) if codes.len() == self.placed.len() => {
                for (&(i, _), code) in self.placed.iter().zip(codes) {
                    if code != 0 && self.results[i].is_ok() {
                        self.results[i] = Err(key_error(code, &self.keys[i]));
                    }
                    self.confirmed[i] = code == 0;
                    // Aborted (the key is free again) because a service was out of reach.
                    let unreachable =
                        matches!(self.results[i], Err(Error::LocalUnreachable { .. }));
                    if code == 0 && unreachable && self.replaced[i] < REPLACE_MAX {
                        self.replace.push(i);
                    }
                }
            }
            Ok(other) => return self.fail(unexpected(&other)),
            Err(e) => {
                // Uncommitted puts are reclaimed by the meta service after their timeout.
                warn!(error = %e, "put: commit failed");
                for &(i, _) in &self.placed {
                    self.results[i] = Err(e.clone_error());
                }
            }
        }
        self.placed.clear();
        self.state = self.after_round_state(now_ms);
    }

    /// After a round: allocate again the keys whose service was out of reach, back off and try
    /// the keys that waited for space, or finish. Keys that cannot be tried again in time keep
    /// their error.
    fn after_round_state(&mut self, now_ms: u64) -> State {
        if now_ms + self.margin_ms >= self.deadline_ms {
            self.replace.clear();
        }
        if !self.retry.is_empty() && now_ms + NO_SPACE_RETRY_MS + self.margin_ms >= self.deadline_ms
        {
            for &i in &self.retry {
                self.results[i] = Err(key_error(Code::ExceedCapacity.as_i32(), &self.keys[i]));
            }
            self.retry.clear();
        }
        if !self.retry.is_empty() {
            // The keys to replace wait with them.
            return State::Backoff {
                until_ms: now_ms + NO_SPACE_RETRY_MS,
                then: Then::Alloc,
            };
        }
        if self.replace.is_empty() {
            return State::Done;
        }
        self.next_round();
        State::Alloc
    }

    /// The keys of the next allocation round: those that waited for space and those to place
    /// again (their failure forgotten: they start over).
    fn next_round(&mut self) {
        debug_assert!(self.todo.is_empty());
        for &i in &self.replace {
            warn!(key = %self.keys[i], error = ?self.results[i].as_ref().err(),
                "put: a service was out of reach, allocating again");
            self.replaced[i] += 1;
            self.results[i] = Ok(());
            self.confirmed[i] = false;
        }
        self.todo = std::mem::take(&mut self.retry);
        self.todo.append(&mut self.replace);
        self.todo.sort_unstable();
        self.state = State::Alloc;
    }

    fn time_out(&mut self) {
        assert_ne!(self.state, State::Done, "timed out twice");
        let ms = self.timeout_ms;
        for (r, confirmed) in self.results.iter_mut().zip(&self.confirmed) {
            if r.is_ok() && !confirmed {
                *r = Err(match &self.busy {
                    Some(message) => busy_timeout(ms, message),
                    None => Error::Timeout {
                        ms,
                        what: "put did not finish before its deadline".into(),
                    },
                });
            }
        }
        warn!(state = ?self.state, "put: deadline passed");
        self.state = State::Done;
    }

    fn fail(&mut self, e: Error) {
        warn!(error = %e, "put: protocol violation");
        self.fatal = Some(e);
        self.state = State::Done;
    }

    /// One result per key; `Err` for the whole call when the meta service broke the protocol.
    pub fn results(self) -> Result<Vec<Result<()>>> {
        assert_eq!(
            self.state,
            State::Done,
            "results before the operation finished"
        );
        if let Some(e) = self.fatal {
            return Err(e);
        }
        debug_assert!(self
            .results
            .iter()
            .zip(&self.confirmed)
            .all(|(r, c)| r.is_err() || *c));
        Ok(self.results)
    }
}
