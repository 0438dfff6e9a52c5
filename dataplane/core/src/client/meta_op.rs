//! Exist, query, remove and lease: one meta round trip for any number of keys, no bytes moved
//! (sent again after a back-off while the meta service answers `Busy`).

use mmc_controlplane::msg::{Replica, Reply, Request, ServiceAddr};
use mmc_controlplane::{Error, Result};
use tracing::debug;

use super::keys::{lend, restore};
use super::{busy_timeout, busy_until, check_keys, key_error, unexpected, Action};

/// Which metadata call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKind {
    Exist,
    Query,
    Remove,
    /// A lookup that takes a read lease per key and moves no bytes (the layer-wise read path:
    /// the caller copies under the lease later and gives it back with `Request::Release`).
    Lease,
}

/// What a query or lease tells about an object (empty for exist and remove).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Info {
    pub size: u64,
    pub replicas: Vec<Replica>,
    /// `Lease` only: the read lease's id (give it back with `Request::Release`) ...
    pub lease: u64,
    /// ... the object's CRC-32C ...
    pub crc: u32,
    /// ... and when the lease ends on the operation's clock (counted from when the lookup was
    /// sent, so never later than the meta service's own expiry).
    pub lease_until_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Send,
    Await,
    /// The meta service answered `Busy`: send again at `until_ms`.
    Backoff {
        until_ms: u64,
    },
    Done,
}

/// One batch of exist, query or remove.
pub struct MetaOp {
    kind: MetaKind,
    keys: Vec<String>,
    /// Indexes of the keys lent to the request in flight, in its order.
    sent: Vec<usize>,
    results: Vec<Result<Info>>,
    fatal: Option<Error>,
    state: State,
    deadline_ms: u64,
    timeout_ms: u64,
    /// The message of the last `Busy` answer.
    busy: Option<String>,
    /// When the request in flight was sent (leases count from there).
    sent_ms: u64,
    /// `Lease`: the addresses of the services holding the replicas.
    services: Vec<ServiceAddr>,
}

impl MetaOp {
    pub fn new<K: AsRef<str>>(
        kind: MetaKind,
        keys: &[K],
        now_ms: u64,
        timeout_ms: u64,
    ) -> Result<MetaOp> {
        assert!(timeout_ms > 0, "an operation needs a deadline");
        let checked = check_keys(keys)?;
        let results: Vec<Result<Info>> = checked
            .into_iter()
            .map(|k| k.map(|_| Info::default()))
            .collect();
        let state = if results.iter().any(|r| r.is_ok()) {
            State::Send
        } else {
            State::Done
        };
        Ok(MetaOp {
            kind,
            keys: keys.iter().map(|k| k.as_ref().to_string()).collect(),
            sent: Vec::new(),
            results,
            fatal: None,
            state,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            timeout_ms,
            busy: None,
            sent_ms: now_ms,
            services: Vec::new(),
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
                self.sent_ms = now_ms;
                debug_assert!(self.sent.is_empty());
                self.sent = (0..self.keys.len())
                    .filter(|&i| self.results[i].is_ok())
                    .collect();
                let keys = lend(&mut self.keys, &self.sent);
                Action::Meta(match self.kind {
                    MetaKind::Exist => Request::Exist { keys },
                    MetaKind::Query => Request::Query { keys },
                    MetaKind::Remove => Request::Remove { keys },
                    MetaKind::Lease => Request::Lookup { keys },
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
        let sent = std::mem::take(&mut self.sent);
        match request {
            Request::Exist { keys }
            | Request::Query { keys }
            | Request::Remove { keys }
            | Request::Lookup { keys } => restore(&mut self.keys, &sent, keys),
            other => panic!("a metadata call handed back {other:?}"),
        }
        if self.state != State::Await {
            return;
        }
        if let Ok(Reply::Busy { retry_ms, message }) = reply {
            let until_ms = busy_until(now_ms, retry_ms, self.deadline_ms);
            debug!(kind = ?self.kind, retry_ms, until_ms, %message,
                "the meta service is busy, sending again");
            self.busy = Some(message);
            self.state = State::Backoff { until_ms };
            return;
        }
        let asked = sent.len();
        let mut codes: Vec<(i32, Info)> = match (self.kind, reply) {
            (MetaKind::Query, Ok(Reply::Query { items })) => items
                .into_iter()
                .map(|i| {
                    (
                        i.code,
                        Info {
                            size: i.size,
                            replicas: i.replicas,
                            ..Info::default()
                        },
                    )
                })
                .collect(),
            (
                MetaKind::Lease,
                Ok(Reply::Lookup {
                    lease_ms,
                    items,
                    services,
                }),
            ) => {
                self.services = services;
                let until = self.sent_ms.saturating_add(lease_ms);
                items
                    .into_iter()
                    .map(|i| {
                        (
                            i.code,
                            Info {
                                size: i.size,
                                replicas: i.replicas,
                                lease: i.lease,
                                crc: i.crc,
                                lease_until_ms: until,
                            },
                        )
                    })
                    .collect()
            }
            (MetaKind::Exist | MetaKind::Remove, Ok(Reply::Codes { codes })) => {
                codes.into_iter().map(|c| (c, Info::default())).collect()
            }
            (_, Ok(other)) => return self.fail(unexpected(&other)),
            (_, Err(e)) => return self.fail(e),
        };
        if codes.len() != asked {
            return self.fail(Error::Protocol(format!(
                "{asked} keys answered with {} codes",
                codes.len()
            )));
        }
        codes.reverse();
        for (key, r) in self.keys.iter().zip(self.results.iter_mut()) {
            if r.is_err() {
                continue;
            }
            let (code, info) = codes.pop().expect("counted above");
            *r = if code == 0 {
                Ok(info)
            } else {
                Err(key_error(code, key))
            };
        }
        self.state = State::Done;
    }

    /// The deadline passed. While the meta service answered `Busy`, every key sent fails with
    /// the timeout (-3004, naming the rebuild); with no reply at all, the whole call does.
    fn time_out(&mut self) {
        let Some(message) = &self.busy else {
            return self.fail(Error::Timeout {
                ms: self.timeout_ms,
                what: "no reply from the meta service before the deadline".into(),
            });
        };
        for r in self.results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(busy_timeout(self.timeout_ms, message));
        }
        self.state = State::Done;
    }

    fn fail(&mut self, e: Error) {
        self.fatal = Some(e);
        self.state = State::Done;
    }

    /// `Lease`: the addresses of the services the leased replicas live on.
    pub fn services(&self) -> &[ServiceAddr] {
        &self.services
    }

    /// One result per key; `Err` for the whole call when the meta service could not answer.
    pub fn results(self) -> Result<Vec<Result<Info>>> {
        assert_eq!(
            self.state,
            State::Done,
            "results before the operation finished"
        );
        match self.fatal {
            Some(e) => Err(e),
            None => Ok(self.results),
        }
    }
}
