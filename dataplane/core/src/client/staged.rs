//! A put in separately driven phases (vllm-ascend's layer-wise save): [`PutOp::stage`] allocates
//! (the keys become pending objects, invisible to readers); the caller writes their bytes, in any
//! order and any number of pieces, with plain transfers against the [`Staged`] replicas; a
//! [`FinishOp`] commits them (or frees them, for a caller that failed). A pending object the
//! caller never finishes is reclaimed by the meta service after its `pending_timeout_ms`, or at
//! once when every meta connection of the writer's session has closed (the writer died or closed).
//!
//! [`PutOp::stage`]: super::PutOp::stage

use mmc_controlplane::msg::{CommitItem, Replica, Reply, Request, ServiceAddr};
use mmc_controlplane::{Error, Result};
use tracing::{debug, warn};

use super::{busy_timeout, busy_until, check_lengths, key_error, unexpected, Action, CloneError};

/// How long after its allocation a staged object accepts writes. The meta service reclaims an
/// uncommitted put after `pending_timeout_ms` (default 30 s) and may then place another object
/// in its space, so a writer must stop well before: this is two thirds of that default. A
/// deployment that lowers `pending_timeout_ms` below 30 s shortens the safe window accordingly.
pub const STAGED_WRITE_MS: u64 = 20_000;

/// A key that [`PutOp::stage`](super::PutOp::stage) allocated: pending on the meta service
/// under `token` until a [`FinishOp`] commits or frees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Staged {
    /// The key's index in the staging batch.
    pub item: usize,
    pub token: u64,
    /// Where its bytes go: every replica gets every byte.
    pub replicas: Vec<Replica>,
    /// The services holding the replicas (rank, incarnation, endpoints).
    pub services: Vec<ServiceAddr>,
    /// When it was allocated, on the operation's clock.
    pub at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Send,
    Await,
    /// The meta service answered `Busy` (rebuilding): send the same commit again at `until_ms`.
    Backoff {
        until_ms: u64,
    },
    Done,
}

/// The commit phase of a staged put: one meta round trip that makes written objects visible
/// (`ok`, with the CRC-32C of their bytes) or frees failed ones.
pub struct FinishOp {
    items: Vec<(String, CommitItem)>,
    results: Vec<Result<()>>,
    state: State,
    deadline_ms: u64,
    timeout_ms: u64,
    busy: Option<String>,
}

impl FinishOp {
    /// Commit `keys[i]` (allocated under `tokens[i]`) as written (`ok[i]`, with checksum
    /// `crcs[i]`) or as failed. `Err` when the lengths differ.
    pub fn new<K: AsRef<str>>(
        keys: &[K],
        tokens: &[u64],
        ok: &[bool],
        crcs: &[u32],
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<FinishOp> {
        check_lengths(keys.len(), tokens.len(), "tokens")?;
        check_lengths(keys.len(), ok.len(), "outcomes")?;
        check_lengths(keys.len(), crcs.len(), "checksums")?;
        assert!(timeout_ms > 0, "an operation needs a deadline");
        let items = keys
            .iter()
            .zip(tokens.iter().zip(ok.iter().zip(crcs)))
            .map(|(k, (&token, (&ok, &crc)))| {
                (k.as_ref().to_string(), CommitItem { token, ok, crc })
            })
            .collect::<Vec<_>>();
        let state = if items.is_empty() {
            State::Done
        } else {
            State::Send
        };
        Ok(FinishOp {
            results: (0..items.len()).map(|_| Ok(())).collect(),
            items,
            state,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            timeout_ms,
            busy: None,
        })
    }

    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    pub fn poll(&mut self, now_ms: u64) -> Action {
        if matches!(self.state, State::Await | State::Backoff { .. }) && now_ms >= self.deadline_ms
        {
            self.time_out();
        }
        match self.state {
            State::Send => {
                self.state = State::Await;
                Action::Meta(Request::Commit {
                    items: std::mem::take(&mut self.items),
                })
            }
            State::Await => Action::Wait {
                deadline_ms: self.deadline_ms,
            },
            State::Backoff { until_ms } if now_ms < until_ms => Action::Sleep { until_ms },
            State::Backoff { .. } => {
                self.state = State::Send;
                self.poll(now_ms)
            }
            State::Done => Action::Done,
        }
    }

    pub fn on_meta(&mut self, now_ms: u64, request: Request, reply: Result<Reply>) {
        match request {
            Request::Commit { items } => self.items = items,
            other => panic!("a commit handed back {other:?}"),
        }
        if self.state != State::Await {
            return;
        }
        match reply {
            Ok(Reply::Busy { retry_ms, message }) => {
                let until_ms = busy_until(now_ms, retry_ms, self.deadline_ms);
                debug!(retry_ms, until_ms, %message, "finish: the meta service is busy");
                self.busy = Some(message);
                self.state = State::Backoff { until_ms };
                return;
            }
            Ok(Reply::Commit { codes }) if codes.len() == self.items.len() => {
                for ((r, code), (key, _)) in self.results.iter_mut().zip(codes).zip(&self.items) {
                    if code != 0 {
                        *r = Err(key_error(code, key));
                    }
                }
            }
            Ok(other) => self.fail(&unexpected(&other)),
            Err(e) => {
                // Uncommitted puts are reclaimed by the meta service after their timeout.
                warn!(error = %e, keys = self.items.len(), "finish: commit failed");
                self.fail(&e);
            }
        }
        self.state = State::Done;
    }

    fn time_out(&mut self) {
        let e = match &self.busy {
            Some(message) => busy_timeout(self.timeout_ms, message),
            None => Error::Timeout {
                ms: self.timeout_ms,
                what: "commit did not finish before its deadline".into(),
            },
        };
        self.fail(&e);
        self.state = State::Done;
    }

    fn fail(&mut self, e: &Error) {
        for r in &mut self.results {
            *r = Err(e.clone_error());
        }
    }

    /// One result per key: committed (or, for a key finished as failed, freed), or why not.
    pub fn results(self) -> Vec<Result<()>> {
        assert_eq!(
            self.state,
            State::Done,
            "results before the operation finished"
        );
        self.results
    }
}
