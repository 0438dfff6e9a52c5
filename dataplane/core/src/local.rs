//! The local service's sans-IO core: registration and re-registration, incarnations, heartbeats as
//! timer events, the epoch fence's close / drain / publish steps, and the validation of transfer
//! requests against the segments of the current incarnation, and the [`Index`] of the objects it
//! holds (kept from the changes that heartbeat replies carry; see [`index`]).
//!
//! The driver (the real service, or the simulator) feeds it events with `now` and carries out what
//! it pushes into a `Vec<LocalOutput>`:
//!
//! ```text
//! start ──► SendMeta(Register) ──reply Registered──► OpenFence(inc) ──► member: heartbeats
//!              ▲  └─ failed / timed out: back off, retry ─┘                │
//!              │                                                           │ Ack{code != 0}:
//!              └──── on_drained ◄── WaitDrain{until} ◄── CloseFence ◄──────┘ meta forgot us
//! ```
//!
//! No copy of the old incarnation may still be running when the new incarnation's first object is
//! placed, so the fence is closed and drained (bounded) *before* registering again, and opened at
//! the new incarnation only after the meta service answered. A meta service that restarted hands
//! out incarnations from 1 again: when it hands back the number this service last published (a
//! stale plan may still carry it), the core registers once more to get a fresh one.

mod index;

pub use index::{Index, IndexEntry, IndexError, SEGMENT_ENTRIES_MAX};

use mmc_controlplane::error::Code;
use mmc_controlplane::msg::{self, Piece, Reply, Request};
use tracing::{debug, info, warn};

/// Most back-off between two registration attempts.
pub const REGISTER_BACKOFF_MS_MAX: u64 = 2_000;
/// Registrations in a row that may hand back an incarnation this service already used.
const REISSUED_MAX: u32 = 4;
/// How soon a failed heartbeat is tried again (on a new connection), instead of a period later.
pub const HEARTBEAT_RETRY_MS: u64 = 100;
/// Rejoins refused in a row before the service gives its index up and registers afresh.
const REJOIN_REFUSALS_MAX: u32 = 4;

/// What the core is configured with.
#[derive(Clone, Debug)]
pub struct LocalParams {
    /// The registration to send (rank `None` = let the meta service choose).
    pub register: msg::Register,
    /// The heartbeat period this service wants; the meta service's, when shorter, wins.
    pub heartbeat_ms: u64,
    /// How long a re-registration waits for copies in flight to leave the fence.
    pub drain_timeout_ms: u64,
    /// A meta request with no reply after this long has failed.
    pub request_timeout_ms: u64,
}

/// This service's place in the cluster, under one incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub rank: u32,
    pub incarnation: u64,
    /// Segment id of each pool, in pool order.
    pub segments: Vec<u32>,
    /// How often the meta service wants to hear from this service.
    pub heartbeat_ms: u64,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalOutput {
    /// Send this request to the meta service; report its reply (or failure) with the same id.
    SendMeta { id: u64, request: Request },
    /// Close the fence: copies that have not entered yet are refused.
    CloseFence,
    /// Wait until no copy is in flight, or until `until_ms`, then call
    /// [`LocalCore::on_drained`] with the count left.
    WaitDrain { until_ms: u64 },
    /// Open the fence at this incarnation.
    OpenFence(u64),
    /// Copy a replica here from another service (see [`msg::RepairTask`]), then report with
    /// [`LocalCore::on_repaired`].
    Repair(msg::RepairTask),
}

/// Why a transfer request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("fence: this service is registering again (no incarnation)")]
    NotMember,
    #[error("fence: rank {asked} asked, this service is rank {rank}")]
    WrongRank { asked: u32, rank: u32 },
    #[error(
        "fence: the transfer was planned for incarnation {asked}, the service is at {current}"
    )]
    StaleIncarnation { asked: u64, current: u64 },
    #[error("segment {0} is not served here in this incarnation")]
    UnknownSegment(u32),
    #[error("piece {offset}+{len} is outside the pool of {pool_bytes} bytes")]
    OutsidePool {
        offset: u64,
        len: u64,
        pool_bytes: u64,
    },
}

impl Refused {
    /// The documented code the refusal is reported with.
    pub fn code(&self) -> Code {
        match self {
            Refused::NotMember | Refused::WrongRank { .. } | Refused::StaleIncarnation { .. } => {
                Code::NotConnectLocal
            }
            Refused::UnknownSegment(_) => Code::LinkNotFound,
            Refused::OutsidePool { .. } => Code::InvalidParam,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not started.
    Idle,
    /// A registration is in flight.
    Registering {
        id: u64,
        sent_ms: u64,
    },
    /// The last registration failed; try again at `until_ms`.
    Backoff {
        until_ms: u64,
    },
    /// Registered; the fence is open at the membership's incarnation.
    Member,
    /// The fence is closed; waiting for the driver's [`LocalCore::on_drained`].
    Draining,
    Stopped,
}

/// The local service's state machine. Deterministic: no clock, no thread, no socket.
#[derive(Debug)]
pub struct LocalCore {
    params: LocalParams,
    phase: Phase,
    membership: Option<Membership>,
    rank: Option<u32>,
    /// The incarnation last opened on the fence (0 = none yet).
    published: u64,
    next_id: u64,
    heartbeat: Option<(u64, u64)>,
    next_heartbeat_ms: u64,
    failures: u32,
    reissued: u32,
    /// The objects this incarnation holds.
    index: Index,
    /// The next registration is a rejoin: this service was a member, and reports its index.
    rejoining: bool,
    /// The index as the rejoin reports it (checked against the checksums, sorted).
    rejoin: Vec<msg::RejoinEntry>,
    /// The rejoin chunk in flight.
    chunk: u32,
    rejoin_refusals: u32,
    /// Repair outcomes to report, and how many of them the heartbeat in flight carries.
    repaired: Vec<msg::RepairDone>,
    repaired_sent: usize,
}

impl LocalCore {
    pub fn new(params: LocalParams, now_ms: u64) -> LocalCore {
        assert!(!params.register.segments.is_empty(), "a service has pools");
        assert!(params.heartbeat_ms > 0 && params.request_timeout_ms > 0);
        let _ = now_ms;
        LocalCore {
            params,
            phase: Phase::Idle,
            membership: None,
            rank: None,
            published: 0,
            next_id: 1,
            heartbeat: None,
            next_heartbeat_ms: 0,
            failures: 0,
            reissued: 0,
            index: Index::default(),
            rejoining: false,
            rejoin: Vec::new(),
            chunk: 0,
            rejoin_refusals: 0,
            repaired: Vec::new(),
            repaired_sent: 0,
        }
    }

    /// The current membership; `None` while (re-)registering, and after a stop.
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// The rank of the latest membership, kept while registering again.
    pub fn rank(&self) -> Option<u32> {
        self.rank
    }

    /// The objects this service holds, as of the last index change applied. Emptied when the
    /// service registers again (a new incarnation holds nothing); kept while registering.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// True once stopped.
    pub fn stopped(&self) -> bool {
        self.phase == Phase::Stopped
    }

    /// When [`LocalCore::on_timer`] next has work; `None` while waiting on the driver only.
    pub fn next_timer_ms(&self) -> Option<u64> {
        match self.phase {
            Phase::Registering { sent_ms, .. } => Some(sent_ms + self.params.request_timeout_ms),
            Phase::Backoff { until_ms } => Some(until_ms),
            Phase::Member => Some(match self.heartbeat {
                Some((_, sent)) => sent + self.params.request_timeout_ms,
                None => self.next_heartbeat_ms,
            }),
            Phase::Idle | Phase::Draining | Phase::Stopped => None,
        }
    }

    /// Register for the first time. The fence starts closed.
    pub fn start(&mut self, now_ms: u64, out: &mut Vec<LocalOutput>) {
        assert_eq!(self.phase, Phase::Idle, "started twice");
        self.register(now_ms, self.params.register.clone(), out);
    }

    /// Time passed: heartbeats are due, requests time out, back-offs end.
    pub fn on_timer(&mut self, now_ms: u64, out: &mut Vec<LocalOutput>) {
        match self.phase {
            Phase::Registering { sent_ms, .. }
                if now_ms >= sent_ms + self.params.request_timeout_ms =>
            {
                warn!("registration timed out");
                self.backoff(now_ms);
            }
            Phase::Backoff { until_ms } if now_ms >= until_ms => {
                self.register(now_ms, self.params.register.clone(), out);
            }
            Phase::Member => {
                if let Some((_, sent)) = self.heartbeat {
                    if now_ms < sent + self.params.request_timeout_ms {
                        return;
                    }
                    warn!("heartbeat timed out");
                    self.heartbeat = None;
                }
                if now_ms >= self.next_heartbeat_ms {
                    let m = self.membership.as_ref().expect("a member has a membership");
                    self.repaired_sent = self.repaired.len().min(msg::REPAIRS_MAX);
                    let request = Request::Heartbeat {
                        rank: m.rank,
                        incarnation: m.incarnation,
                        index_seq: self.index.applied_seq(),
                        index_resync: self.index.resync_wanted(),
                        repaired: self.repaired[..self.repaired_sent].to_vec(),
                    };
                    let period = self.params.heartbeat_ms.min(m.heartbeat_ms).max(10);
                    let id = self.send(request, out);
                    self.heartbeat = Some((id, now_ms));
                    self.next_heartbeat_ms = now_ms + period;
                }
            }
            _ => {}
        }
    }

    /// The reply to request `id`, or `Err` when it failed (lost, connection refused, timed out).
    /// Replies to requests the core no longer waits for are ignored.
    pub fn on_meta_reply(
        &mut self,
        now_ms: u64,
        id: u64,
        reply: Result<Reply, Code>,
        out: &mut Vec<LocalOutput>,
    ) {
        match self.phase {
            Phase::Registering { id: want, .. } if want == id => match reply {
                Ok(Reply::Ack { code: 0 }) if self.rejoining && !self.last_chunk() => {
                    self.chunk += 1;
                    let request = self.rejoin_request();
                    let id = self.send(request, out);
                    self.phase = Phase::Registering {
                        id,
                        sent_ms: now_ms,
                    };
                }
                Ok(Reply::Error { code, message }) if self.rejoining => {
                    self.rejoin_refusals += 1;
                    warn!(
                        code,
                        message,
                        refusals = self.rejoin_refusals,
                        "rejoin refused"
                    );
                    if self.rejoin_refusals >= REJOIN_REFUSALS_MAX {
                        warn!(
                            objects = self.rejoin.len(),
                            "rejoin keeps being refused: registering afresh, the index is given up"
                        );
                        self.rejoining = false;
                        self.rejoin.clear();
                    }
                    self.backoff(now_ms);
                }
                reply => self.on_registered(now_ms, reply, out),
            },
            Phase::Member if self.heartbeat.map(|(h, _)| h) == Some(id) => {
                self.heartbeat = None;
                match reply {
                    Ok(Reply::Heartbeat {
                        index_first_seq,
                        index_changes,
                        index_more,
                        repairs,
                    }) => {
                        // The outcomes it carried arrived.
                        self.repaired
                            .drain(..self.repaired_sent.min(self.repaired.len()));
                        self.repaired_sent = 0;
                        for task in repairs.into_iter().take(msg::REPAIRS_MAX) {
                            out.push(LocalOutput::Repair(task));
                        }
                        let before = self.index.applied_seq();
                        if let Err(e) = self.index.apply(index_first_seq, &index_changes) {
                            warn!(error = %e, "index changes refused: asking for a resync");
                        }
                        debug_assert!(self.index.applied_seq() >= before, "applied once each");
                        if index_more {
                            // Catch up now rather than a period later.
                            self.next_heartbeat_ms = now_ms;
                        }
                    }
                    Ok(Reply::Ack { code }) if code != 0 => {
                        warn!(
                            code,
                            objects = self.index.len(),
                            "meta service does not know this incarnation: closing the fence to rejoin with the index"
                        );
                        self.membership = None;
                        self.rejoining = true;
                        self.phase = Phase::Draining;
                        out.push(LocalOutput::CloseFence);
                        out.push(LocalOutput::WaitDrain {
                            until_ms: now_ms + self.params.drain_timeout_ms,
                        });
                    }
                    // The meta service may be restarting: keep the pace; it tells us when it is back.
                    Ok(other) => warn!(?other, "unexpected heartbeat reply"),
                    Err(code) => {
                        // The driver reconnects on the next request: try again soon, so that a
                        // dropped connection (which pauses this member at the meta service)
                        // costs little. Bounded: one attempt per HEARTBEAT_RETRY_MS at most.
                        let retry_ms = now_ms + HEARTBEAT_RETRY_MS;
                        self.next_heartbeat_ms = self.next_heartbeat_ms.min(retry_ms);
                        warn!(
                            code = code.as_i32(),
                            retry_ms = HEARTBEAT_RETRY_MS,
                            "heartbeat failed"
                        );
                    }
                }
            }
            _ => debug!(id, "reply to a request no longer awaited: ignored"),
        }
    }

    /// The drain the core asked for ended with `inflight_left` copies still in flight. Before a
    /// rejoin, `verify(pool, entry)` checks each index entry against the bytes in the pools (its checksum):
    /// entries it refuses are dropped (their space was reused by a put the service's index never
    /// heard of, or the bytes were damaged), never reported.
    pub fn on_drained(
        &mut self,
        now_ms: u64,
        inflight_left: u64,
        verify: &mut dyn FnMut(usize, &IndexEntry) -> bool,
        out: &mut Vec<LocalOutput>,
    ) {
        if self.phase != Phase::Draining {
            debug!("drain report while not draining: ignored");
            return;
        }
        assert!(self.membership.is_none(), "draining without a membership");
        if inflight_left > 0 {
            warn!(
                inflight_left,
                "copies of the old incarnation still in flight after the drain (a client died mid-copy?): registering anyway"
            );
        }
        if self.rejoining {
            let dropped = self.index.retain(|pool, e| verify(pool, e));
            for key in &dropped {
                warn!(
                    key,
                    "index entry does not match its checksum: dropped before the rejoin"
                );
            }
            self.rejoin = self.index.rejoin_entries();
            self.rejoin_refusals = 0;
            info!(
                objects = self.rejoin.len(),
                dropped = dropped.len(),
                "index checked: rejoining"
            );
        }
        self.register(now_ms, self.params.register.clone(), out);
    }

    /// A repair task ended. Reported on the next heartbeats until one is answered; dropped if
    /// the service registered again meanwhile (the task was the old incarnation's).
    pub fn on_repaired(&mut self, incarnation: u64, token: u64, ok: bool) {
        if self.membership.as_ref().map(|m| m.incarnation) != Some(incarnation) {
            debug!(
                token,
                "repair of an earlier incarnation ended: not reported"
            );
            return;
        }
        // Bounded: the meta service hands out at most REPAIRS_MAX per reply and frees
        // unreported ones at their deadline.
        if self.repaired.len() < 16 * msg::REPAIRS_MAX {
            self.repaired.push(msg::RepairDone { token, ok });
        }
    }

    /// Leave: unregister (when registered) and close the fence. Later events are ignored.
    pub fn stop(&mut self, now_ms: u64, out: &mut Vec<LocalOutput>) {
        let _ = now_ms;
        if self.phase == Phase::Stopped {
            return;
        }
        if let Some(m) = self.membership.take() {
            let request = Request::Unregister {
                rank: m.rank,
                incarnation: m.incarnation,
            };
            self.send(request, out);
        }
        out.push(LocalOutput::CloseFence);
        self.phase = Phase::Stopped;
        assert!(self.membership.is_none());
    }

    /// Check that a transfer planned for (`rank`, `incarnation`) may touch this service now.
    pub fn check_fence(&self, rank: u32, incarnation: u64) -> Result<&Membership, Refused> {
        let m = self.membership.as_ref().ok_or(Refused::NotMember)?;
        if m.rank != rank {
            return Err(Refused::WrongRank {
                asked: rank,
                rank: m.rank,
            });
        }
        if m.incarnation != incarnation {
            return Err(Refused::StaleIncarnation {
                asked: incarnation,
                current: m.incarnation,
            });
        }
        Ok(m)
    }

    /// The pool index of one piece, checked: its segment belongs to `m`'s incarnation and the
    /// range lies inside the pool (`pool_lens`, in pool order), without overflow.
    pub fn resolve(
        m: &Membership,
        segment: u32,
        offset: u64,
        len: u64,
        pool_lens: &[u64],
    ) -> Result<usize, Refused> {
        debug_assert_eq!(m.segments.len(), pool_lens.len(), "one segment per pool");
        let pool = m
            .segments
            .iter()
            .position(|s| *s == segment)
            .ok_or(Refused::UnknownSegment(segment))?;
        let pool_bytes = pool_lens[pool];
        match offset.checked_add(len) {
            Some(end) if end <= pool_bytes => Ok(pool),
            _ => Err(Refused::OutsidePool {
                offset,
                len,
                pool_bytes,
            }),
        }
    }

    /// Check a whole transfer: fence and every piece.
    pub fn check(
        &self,
        rank: u32,
        incarnation: u64,
        pieces: &[Piece],
        pool_lens: &[u64],
    ) -> Result<(), Refused> {
        let m = self.check_fence(rank, incarnation)?;
        for p in pieces {
            LocalCore::resolve(m, p.segment, p.offset, p.len, pool_lens)?;
        }
        Ok(())
    }

    fn send(&mut self, request: Request, out: &mut Vec<LocalOutput>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        out.push(LocalOutput::SendMeta { id, request });
        id
    }

    fn register(&mut self, now_ms: u64, register: msg::Register, out: &mut Vec<LocalOutput>) {
        assert!(self.membership.is_none(), "registering while a member");
        let request = if self.rejoining {
            self.chunk = 0;
            self.rejoin_request()
        } else {
            Request::Register(register)
        };
        let id = self.send(request, out);
        self.phase = Phase::Registering {
            id,
            sent_ms: now_ms,
        };
    }

    /// Whether the chunk in flight is the rejoin's last.
    fn last_chunk(&self) -> bool {
        (self.chunk as usize + 1) * msg::INDEX_CHANGES_MAX >= self.rejoin.len()
    }

    /// Rejoin chunk `self.chunk`.
    fn rejoin_request(&self) -> Request {
        let mut register = self.params.register.clone();
        register.rank = register.rank.or(self.rank);
        let from = (self.chunk as usize * msg::INDEX_CHANGES_MAX).min(self.rejoin.len());
        let to = (from + msg::INDEX_CHANGES_MAX).min(self.rejoin.len());
        Request::Rejoin(msg::Rejoin {
            register,
            previous: self.published,
            chunk: self.chunk,
            last: self.last_chunk(),
            entries: self.rejoin[from..to].to_vec(),
        })
    }

    fn backoff(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        let shift = self.failures.min(8) - 1;
        let ms = (self.params.heartbeat_ms << shift)
            .min(REGISTER_BACKOFF_MS_MAX.max(self.params.heartbeat_ms));
        self.phase = Phase::Backoff {
            until_ms: now_ms + ms,
        };
    }

    fn on_registered(
        &mut self,
        now_ms: u64,
        reply: Result<Reply, Code>,
        out: &mut Vec<LocalOutput>,
    ) {
        let specs = self.params.register.segments.len();
        let (rank, incarnation, segments, heartbeat_ms) = match reply {
            Ok(Reply::Registered {
                rank,
                incarnation,
                segments,
                heartbeat_ms,
            }) if segments.len() == specs && incarnation != 0 => {
                (rank, incarnation, segments, heartbeat_ms)
            }
            Ok(other) => {
                warn!(?other, "registration refused");
                return self.backoff(now_ms);
            }
            Err(code) => {
                warn!(code = code.as_i32(), "registration failed");
                return self.backoff(now_ms);
            }
        };
        if incarnation == self.published {
            if self.reissued >= REISSUED_MAX {
                warn!(
                    rank,
                    incarnation, "the meta service keeps reissuing this incarnation"
                );
                self.reissued = 0;
                return self.backoff(now_ms);
            }
            // A restarted meta service counts from 1 again: a plan made under the previous one
            // may carry this very number, so it must not open the fence. Register once more
            // under the rank just given (the meta service replaces that fresh, empty member).
            self.reissued += 1;
            warn!(
                rank,
                incarnation,
                "the meta service reissued this service's last incarnation: registering again"
            );
            let mut again = self.params.register.clone();
            again.rank = Some(rank);
            return self.register(now_ms, again, out);
        }
        assert_ne!(
            incarnation, self.published,
            "a reissued incarnation is never opened"
        );
        info!(
            rank,
            incarnation,
            ?segments,
            "registered with the meta service"
        );
        self.failures = 0;
        self.reissued = 0;
        self.published = incarnation;
        self.rank = Some(rank);
        if std::mem::take(&mut self.rejoining) {
            // The meta service took the index over: it tells of entries it refused as removals.
            self.index.renumber(&segments);
            info!(
                rank,
                incarnation,
                objects = self.index.len(),
                "rejoined: the objects held are the new incarnation's"
            );
        } else {
            // A new incarnation holds nothing yet.
            let pools = self.params.register.segments.iter().map(|s| s.capacity);
            self.index.start(segments.iter().copied().zip(pools));
        }
        self.rejoin = Vec::new();
        self.repaired.clear();
        self.repaired_sent = 0;
        assert_eq!(self.index.applied_seq(), 0);
        self.membership = Some(Membership {
            rank,
            incarnation,
            segments,
            heartbeat_ms,
        });
        self.phase = Phase::Member;
        self.heartbeat = None;
        self.next_heartbeat_ms = now_ms + self.params.heartbeat_ms.min(heartbeat_ms).max(10);
        out.push(LocalOutput::OpenFence(incarnation));
    }
}

#[cfg(test)]
mod tests;
