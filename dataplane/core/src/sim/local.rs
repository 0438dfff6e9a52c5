//! A simulated local service: pools in plain memory, the fence word, and the membership steps of
//! the real service (register, heartbeat, close + drain + register again when the meta service
//! forgets this incarnation).

use mmc_controlplane::msg::{self, Register, Reply, Request, SegmentSpec};
use mmc_controlplane::{Code, Error, Result};
use mmc_hal::fence::FenceWord;

/// How long a register may go unanswered before it is sent again.
const REGISTER_RETRY_MS: u64 = 100;
/// How long a re-registration waits for copies in flight before it goes ahead anyway.
const DRAIN_TIMEOUT_MS: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Registering { since_ms: u64 },
    Registered,
    Draining { until_ms: u64 },
}

pub struct SimLocal {
    pub rank: u32,
    pub host: u32,
    pub pool: Vec<u8>,
    pub fence: FenceWord,
    pub phase: Phase,
    /// (incarnation, segment ids) while registered.
    pub membership: Option<(u64, Vec<u32>)>,
    heartbeat_ms: u64,
    next_heartbeat_ms: u64,
    /// The request whose reply is awaited (register), so late replies to old ones are ignored.
    pub register_seq: u64,
}

/// What the local service wants sent.
pub enum LocalOut {
    /// (sequence number, request)
    Meta(u64, Request),
}

impl SimLocal {
    pub fn new(rank: u32, host: u32, pool_bytes: u64, heartbeat_ms: u64, now_ms: u64) -> SimLocal {
        SimLocal {
            rank,
            host,
            pool: vec![0; pool_bytes as usize],
            fence: FenceWord::new(),
            phase: Phase::Registering { since_ms: now_ms },
            membership: None,
            heartbeat_ms,
            next_heartbeat_ms: 0,
            register_seq: 0,
        }
    }

    fn register(&mut self, seq: u64, now_ms: u64) -> LocalOut {
        self.phase = Phase::Registering { since_ms: now_ms };
        self.register_seq = seq;
        LocalOut::Meta(
            seq,
            Request::Register(Register {
                rank: Some(self.rank),
                create_id: 0,
                host: format!("host{}", self.host),
                data_endpoint: format!("10.0.0.{}:7000", self.rank),
                shm_endpoint: format!("@sim-{}", self.rank),
                segments: vec![SegmentSpec {
                    media: msg::MEDIA_DRAM,
                    capacity: self.pool.len() as u64,
                }],
            }),
        )
    }

    /// The first registration.
    pub fn start(&mut self, seq: u64, now_ms: u64) -> LocalOut {
        assert!(self.membership.is_none());
        self.register(seq, now_ms)
    }

    /// Time passes. `seq` numbers a request it may send.
    pub fn on_timer(&mut self, seq: u64, now_ms: u64) -> Option<LocalOut> {
        match self.phase {
            Phase::Registering { since_ms } if now_ms >= since_ms + REGISTER_RETRY_MS => {
                Some(self.register(seq, now_ms))
            }
            Phase::Registered if now_ms >= self.next_heartbeat_ms => {
                self.next_heartbeat_ms = now_ms + self.heartbeat_ms;
                let (incarnation, _) = self.membership.as_ref().expect("registered");
                Some(LocalOut::Meta(
                    seq,
                    Request::Heartbeat {
                        rank: self.rank,
                        incarnation: *incarnation,
                    },
                ))
            }
            // Re-register once no copy of the old incarnation is in flight (or the wait ran out:
            // a client died mid-copy).
            Phase::Draining { until_ms } if self.fence.inflight() == 0 || now_ms >= until_ms => {
                Some(self.register(seq, now_ms))
            }
            _ => None,
        }
    }

    pub fn on_meta(&mut self, seq: u64, reply: Result<Reply>, now_ms: u64) {
        match reply {
            Ok(Reply::Registered {
                rank,
                incarnation,
                segments,
                ..
            }) if matches!(self.phase, Phase::Registering { .. }) && seq == self.register_seq => {
                assert_eq!(rank, self.rank, "fixed rank");
                assert_eq!(self.fence.incarnation(), 0, "registered over an open fence");
                self.membership = Some((incarnation, segments));
                self.fence.publish(incarnation);
                self.phase = Phase::Registered;
                self.next_heartbeat_ms = now_ms + self.heartbeat_ms;
            }
            Ok(Reply::Ack { code }) if code != 0 && self.phase == Phase::Registered => {
                // The meta service no longer knows this incarnation: no new copy may start, and
                // no new object may be placed here until every copy of the old one is done.
                self.fence.close();
                self.membership = None;
                self.phase = Phase::Draining {
                    until_ms: now_ms + DRAIN_TIMEOUT_MS,
                };
            }
            _ => {}
        }
    }

    /// Check a transfer against this service's membership and pool (what the real data server
    /// and the shm client check besides the fence word).
    pub fn check(
        &self,
        rank: u32,
        incarnation: u64,
        segment: u32,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let stale = |why: &str| Error::LocalUnreachable {
            endpoint: format!("rank {rank}"),
            reason: format!("fence: {why}"),
        };
        if rank != self.rank {
            return Err(stale("wrong rank"));
        }
        let Some((inc, segments)) = &self.membership else {
            return Err(stale("not registered"));
        };
        if *inc != incarnation || !segments.contains(&segment) {
            return Err(stale("segment of another incarnation"));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.pool.len() as u64 => Ok(()),
            _ => Err(Error::Remote {
                code: Code::InvalidParam,
                context: "range outside the pool".into(),
            }),
        }
    }
}
