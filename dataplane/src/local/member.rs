//! The thin driver of the local service's [`LocalCore`]: it owns the clock, the meta connection and
//! the fence page, feeds the core timer ticks, replies and drain reports, and carries out what the
//! core asks (send, close the fence, wait for the drain, open the fence).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mmc_controlplane::msg::{Reply, Request};
use mmc_controlplane::{Error, Result};
use mmc_core::local::{IndexEntry, LocalOutput, Membership};
use mmc_meta_service::rpc::MetaConn;
use tracing::{debug, warn};

use super::Inner;

/// How often the driver looks at the stop flag (and at the core's timer) while idle.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// How often a drain looks at the fence's in-flight count.
const DRAIN_POLL: Duration = Duration::from_millis(1);

/// The driver's state: a meta connection, kept while it works.
pub(super) struct Driver {
    conn: Option<MetaConn>,
}

impl Driver {
    pub(super) fn new() -> Driver {
        Driver { conn: None }
    }

    /// Register for the first time, waiting up to `timeout`; the service does not start without
    /// a membership.
    pub(super) fn start(&mut self, inner: &Inner, timeout: Duration) -> Result<Membership> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        inner
            .core
            .write()
            .expect(POISONED)
            .start(inner.now_ms(), &mut out);
        let mut first_error = None;
        self.carry_out(inner, out, deadline, &mut first_error);
        while Instant::now() < deadline {
            if let Some(m) = inner.membership() {
                return Ok(m);
            }
            if let Some(e) = first_error.take() {
                return Err(e);
            }
            std::thread::sleep(IDLE_POLL);
            self.tick(inner, &mut first_error);
        }
        inner.membership().ok_or_else(|| Error::Timeout {
            ms: timeout.as_millis() as u64,
            what: "registration with the meta service".into(),
        })
    }

    /// Heartbeat and re-register until the service stops. Each step holds `driver_turn` and
    /// looks at the stop flag under it, so that no step runs after [`stop`] began.
    pub(super) fn run(mut self, inner: &Inner) {
        loop {
            std::thread::sleep(IDLE_POLL);
            let _turn = inner.driver_turn.lock().expect(POISONED);
            if inner.stop.load(Ordering::Acquire) {
                return;
            }
            self.tick(inner, &mut None);
        }
    }

    /// One timer event, if the core has one due.
    fn tick(&mut self, inner: &Inner, errors: &mut Option<Error>) {
        let now = inner.now_ms();
        let due = inner.core.read().expect(POISONED).next_timer_ms();
        if due.is_none_or(|t| t > now) {
            return;
        }
        let mut out = Vec::new();
        inner.core.write().expect(POISONED).on_timer(now, &mut out);
        let deadline = Instant::now() + Duration::from_millis(super::REQUEST_TIMEOUT_MS);
        self.carry_out(inner, out, deadline, errors);
    }

    /// Carry out the core's outputs, and those they lead to, in order. The first meta failure is
    /// kept in `errors` (start-up reports it).
    fn carry_out(
        &mut self,
        inner: &Inner,
        out: Vec<LocalOutput>,
        deadline: Instant,
        errors: &mut Option<Error>,
    ) {
        let mut todo: VecDeque<LocalOutput> = out.into();
        while let Some(o) = todo.pop_front() {
            let mut more = Vec::new();
            match o {
                LocalOutput::SendMeta { id, mut request } => {
                    // Each registration carries a fresh shm secret: one per incarnation.
                    if let Some(secret) = &inner.shm_secret {
                        secret.stamp(&mut request);
                    }
                    let reply = self.call(inner, &request, deadline);
                    count(inner, &request, &reply);
                    let reply = reply.map_err(|e| {
                        let code = e.code();
                        debug!(error = %e, "meta request failed");
                        errors.get_or_insert(e);
                        code
                    });
                    inner.core.write().expect(POISONED).on_meta_reply(
                        inner.now_ms(),
                        id,
                        reply,
                        &mut more,
                    );
                }
                LocalOutput::CloseFence => inner.fence.close(),
                LocalOutput::WaitDrain { until_ms } => {
                    while inner.fence.inflight() > 0 && inner.now_ms() < until_ms {
                        std::thread::sleep(DRAIN_POLL);
                    }
                    let left = inner.fence.inflight();
                    if left > 0 {
                        warn!(
                            inflight = left,
                            "fence drain timed out: copies of the old incarnation are still in flight"
                        );
                    }
                    let mut verify = |pool: usize, e: &IndexEntry| verify_entry(inner, pool, e);
                    inner.core.write().expect(POISONED).on_drained(
                        inner.now_ms(),
                        left,
                        &mut verify,
                        &mut more,
                    );
                }
                LocalOutput::OpenFence(incarnation) => inner.fence.publish(incarnation),
                LocalOutput::Repair(task) => {
                    let incarnation = inner.membership().map_or(0, |m| m.incarnation);
                    super::repair::submit(inner, inner.repairs.get(), incarnation, task);
                }
            }
            todo.extend(more);
        }
    }

    fn call(
        &mut self,
        inner: &Inner,
        request: &mmc_controlplane::msg::Request,
        deadline: Instant,
    ) -> Result<mmc_controlplane::msg::Reply> {
        let deadline = deadline.max(Instant::now() + Duration::from_millis(100));
        if self.conn.is_none() {
            self.conn = Some(inner.meta.connect(deadline)?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let reply = conn.call(request, deadline);
        if let Err(e) = &reply {
            use mmc_controlplane::Error::{MetaUnreachable, Timeout};
            if matches!(e, MetaUnreachable { .. } | Timeout { .. }) {
                // Behind etcd: the leader may have changed (or be frozen and replaced); ask
                // again at the next connect.
                inner.meta.forget(conn.addr());
            }
            self.conn = None;
        }
        reply
    }
}

/// Count heartbeats and registrations for `/metrics`.
fn count(inner: &Inner, request: &Request, reply: &Result<Reply>) {
    let s = &inner.stats;
    let c = match (request, reply) {
        (Request::Heartbeat { .. }, Ok(Reply::Heartbeat { .. })) => &s.heartbeats_ok,
        (Request::Heartbeat { .. }, _) => &s.heartbeats_failed,
        (Request::Register(_), Ok(Reply::Registered { .. })) => &s.registrations[0],
        (Request::Rejoin(_), Ok(Reply::Registered { .. })) => &s.registrations[1],
        _ => return,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

/// Leave: the core unregisters and closes the fence. Called after the stop flag is set; first
/// waits for the driver's step in flight to end. Without that wait, a stop during a
/// re-registration (after the meta service forgot this member) found no membership to
/// unregister, and the registration then landed: the service stayed listed until its lease ran
/// out.
pub(super) fn stop(inner: &Inner, timeout: Duration) {
    let _turn = inner.driver_turn.lock().expect(POISONED);
    let mut out = Vec::new();
    inner
        .core
        .write()
        .expect(POISONED)
        .stop(inner.now_ms(), &mut out);
    Driver::new().carry_out(inner, out, Instant::now() + timeout, &mut None);
}

/// Whether the bytes of index entry `e` in pool `pool` match its checksum (read through a
/// bounded buffer: the fence is closed and drained, so nothing writes them now).
fn verify_entry(inner: &Inner, pool: usize, e: &IndexEntry) -> bool {
    const CHUNK: u64 = 1 << 20;
    let Some(p) = inner.pools.get(pool) else {
        return false;
    };
    let mut buf = vec![0u8; CHUNK.min(e.len) as usize];
    let mut crc = 0u32;
    let mut at = 0u64;
    while at < e.len {
        let n = CHUNK.min(e.len - at) as usize;
        if p.mem.copy_out(e.offset + at, &mut buf[..n]).is_err() {
            return false;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    crc == e.crc
}

const POISONED: &str = "local core lock poisoned: a core step panicked";
