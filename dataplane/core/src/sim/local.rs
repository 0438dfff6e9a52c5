//! A simulated local service: pools in plain memory and the fence word, driven by the real
//! [`LocalCore`] (register, heartbeat, close + drain + register again when the meta service
//! forgets this incarnation), exactly as `mmc-local` drives it.

use mmc_controlplane::msg::{self, Piece, Register, Reply, SegmentSpec};
use mmc_controlplane::{Error, Result};
use mmc_hal::fence::FenceWord;

use crate::local::{Index, LocalCore, LocalOutput, LocalParams, Refused};

/// How long a re-registration waits for copies in flight before it goes ahead anyway.
pub const DRAIN_TIMEOUT_MS: u64 = 100;
/// A meta request with no reply after this long has failed.
const REQUEST_TIMEOUT_MS: u64 = 100;

pub struct SimLocal {
    pub host: u32,
    pub pool: Vec<u8>,
    pub fence: FenceWord,
    core: LocalCore,
    /// Mirror of the core's membership: (incarnation, segment ids) while registered.
    pub membership: Option<(u64, Vec<u32>)>,
    /// The drain the core asked for ends at this time (or when no copy is in flight).
    drain_until_ms: Option<u64>,
    out: Vec<LocalOutput>,
    /// Repair tasks the core handed out, for the simulator to run.
    pub repairs: Vec<msg::RepairTask>,
}

impl SimLocal {
    pub fn new(rank: u32, host: u32, pool_bytes: u64, heartbeat_ms: u64, now_ms: u64) -> SimLocal {
        let register = Register {
            rank: Some(rank),
            create_id: 0,
            host: format!("host{host}"),
            data_endpoint: format!("10.0.0.{rank}:7000"),
            shm_endpoint: format!("@sim-{rank}"),
            segments: vec![SegmentSpec {
                media: msg::MEDIA_DRAM,
                capacity: pool_bytes,
            }],
        };
        let params = LocalParams {
            register,
            heartbeat_ms,
            drain_timeout_ms: DRAIN_TIMEOUT_MS,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
        };
        SimLocal {
            host,
            pool: vec![0; pool_bytes as usize],
            fence: FenceWord::new(),
            core: LocalCore::new(params, now_ms),
            membership: None,
            drain_until_ms: None,
            out: Vec::new(),
            repairs: Vec::new(),
        }
    }

    /// Carry out what the core asked for; returns the meta requests to send, as (id, request).
    fn apply(&mut self) -> Vec<(u64, msg::Request)> {
        let mut sends = Vec::new();
        for o in self.out.drain(..) {
            match o {
                LocalOutput::SendMeta { id, request } => sends.push((id, request)),
                LocalOutput::CloseFence => self.fence.close(),
                LocalOutput::WaitDrain { until_ms } => self.drain_until_ms = Some(until_ms),
                LocalOutput::OpenFence(incarnation) => self.fence.publish(incarnation),
                LocalOutput::Repair(task) => self.repairs.push(task),
            }
        }
        self.membership = self
            .core
            .membership()
            .map(|m| (m.incarnation, m.segments.clone()));
        // The fence is open exactly while the core is a member, at its incarnation.
        debug_assert_eq!(
            self.fence.incarnation(),
            self.membership.as_ref().map_or(0, |m| m.0)
        );
        sends
    }

    pub fn start(&mut self, now_ms: u64) -> Vec<(u64, msg::Request)> {
        self.core.start(now_ms, &mut self.out);
        self.apply()
    }

    pub fn on_timer(&mut self, now_ms: u64) -> Vec<(u64, msg::Request)> {
        if let Some(until) = self.drain_until_ms {
            let left = self.fence.inflight();
            if left == 0 || now_ms >= until {
                self.drain_until_ms = None;
                // Checksums of the index entries against the pool before a rejoin. Without this
                // check the simulation finds a rebuilt object whose space a put the index never
                // heard of had reused (seed 1 of `mmc-sim`, in 20,000 steps).
                let pool = &self.pool;
                let mut verify = |_pool: usize, e: &crate::local::IndexEntry| {
                    let bytes = pool.get(e.offset as usize..(e.offset + e.len) as usize);
                    bytes.is_some_and(|b| crate::checksum([b]) == e.crc)
                };
                self.core
                    .on_drained(now_ms, left, &mut verify, &mut self.out);
            }
        }
        self.core.on_timer(now_ms, &mut self.out);
        self.apply()
    }

    pub fn on_meta(
        &mut self,
        id: u64,
        reply: Result<Reply>,
        now_ms: u64,
    ) -> Vec<(u64, msg::Request)> {
        let reply = reply.map_err(|e| e.code());
        self.core.on_meta_reply(now_ms, id, reply, &mut self.out);
        self.apply()
    }

    /// A repair task ended.
    pub fn on_repaired(&mut self, incarnation: u64, token: u64, ok: bool) {
        self.core.on_repaired(incarnation, token, ok);
    }

    /// The objects the core believes this service holds.
    pub fn index(&self) -> &Index {
        self.core.index()
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
        let piece = Piece {
            segment,
            offset,
            len,
        };
        self.core
            .check(rank, incarnation, &[piece], &[self.pool.len() as u64])
            .map_err(|r| refused(rank, r))
    }
}

fn refused(rank: u32, r: Refused) -> Error {
    match r.code() {
        mmc_controlplane::Code::NotConnectLocal => Error::LocalUnreachable {
            endpoint: format!("rank {rank}"),
            reason: r.to_string(),
        },
        code => Error::Remote {
            code,
            context: r.to_string(),
        },
    }
}
