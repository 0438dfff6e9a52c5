//! The simulated NIC: the [`Device`] and [`QueuePair`] traits without hardware.
//!
//! - One device per process (`sim0`), on the fabric `sim:<host>`: it spans one host, because a
//!   peer's registered memory is reached through the peer's memfds, mapped into this process (the
//!   transport attaches them with [`attach_peer`] after the connection exchange; they are the
//!   memfds a local service already hands to same-host clients). The process's own MRs are a peer
//!   too (loopback queue pairs).
//! - Memory regions get real, distinct lkeys and rkeys; every local entry is checked against its
//!   lkey's MR (bounds, and local-write access for a READ's destination), every remote range
//!   against its rkey's MR (bounds and remote access) before a byte moves: a violation is the
//!   completion error a NIC gives (`LocalProtection`, `RemoteAccess`) and moves the queue pair to
//!   Error, whose later work requests are flushed.
//! - Queue pairs are queues: `post_send` queues work requests (refused past the send queue's
//!   depth, or outside RTS) and rings the queue pair's NIC thread, which executes them in order
//!   (WRITE and READ as memcpy into and out of the peer's mapped memory, FETCH_ADD as a real
//!   atomic on it) and adds completions in order: signaled successes and every error. `poll_cq`
//!   takes them (busy-poll); or `req_notify` arms the completion queue (one-shot, like
//!   `ibv_req_notify_cq`: the next completion added raises one event on the queue pair's
//!   completion channel, a socket pair) and `wait_event` blocks on the channel (like
//!   `ibv_get_cq_event` + `ibv_ack_cq_events`).
//! - Errors are injectable: [`inject_error`] (or `MMC_RDMA_SIM_FAIL_AFTER=N[:status]`, read when
//!   the device opens) fails the work request executed N after, in this process.
//! - Limits default to a ConnectX-class device and are overridden by `MMC_RDMA_SIM_LIMITS`
//!   (`max_sge=4,max_msg_sz=65536,max_qp_wr=64,max_mr_size=4194304,max_inline=64`).

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use super::safe::Region;
use super::{
    access, Completion, Device, DeviceAttr, Mr, Opcode, QpEndpoint, QpState, QpStates, QueuePair,
    RdmaError, WcStatus, WorkRequest,
};

/// A registered range as a peer sees it: where it is in the peer's address space, its rkey and
/// access, and where that memory is mapped in this process.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// The MR's address in the peer.
    pub addr: u64,
    /// Its length.
    pub len: u64,
    /// Its rkey.
    pub rkey: u32,
    /// Its access flags.
    pub access: u32,
    /// The same bytes, mapped here.
    pub ptr: *mut u8,
}

/// Memory a queue pair can reach on its peer.
trait Remote: Send + Sync {
    /// Where `len` bytes at `addr` under `rkey` are mapped here, if the key allows `need` there.
    fn resolve(&self, rkey: u32, addr: u64, len: u64, need: u32) -> Option<*mut u8>;
}

struct Attached {
    windows: Vec<Window>,
    _keep: Arc<dyn Any + Send + Sync>,
}

// SAFETY: the windows point into mappings that `_keep` holds alive (attach_peer's contract); the
// bytes are shared memory, accessed only by raw copies and atomics, as the shm transport does.
unsafe impl Send for Attached {}
// SAFETY: as above; nothing here is mutated after attach.
unsafe impl Sync for Attached {}

impl Remote for Attached {
    fn resolve(&self, rkey: u32, addr: u64, len: u64, need: u32) -> Option<*mut u8> {
        let w = self.windows.iter().find(|w| w.rkey == rkey)?;
        let off = addr.checked_sub(w.addr)?;
        if w.access & need != need || off.checked_add(len)? > w.len {
            return None;
        }
        // SAFETY: off + len <= w.len, inside the window's mapping.
        Some(unsafe { w.ptr.add(off as usize) })
    }
}

/// Reachable peers by GID.
type Fabric = Mutex<HashMap<[u8; 16], Arc<dyn Remote>>>;

/// The peers this process's simulated NIC can reach, by GID.
fn fabric() -> &'static Fabric {
    static F: OnceLock<Fabric> = OnceLock::new();
    F.get_or_init(Default::default)
}

/// Make the peer `gid`'s registered memory reachable: `windows` are its MRs (from the connection
/// exchange), mapped here. Replaces an earlier attachment of that GID (queue pairs connected
/// before keep the old one until they reconnect).
///
/// # Safety
/// Each window's `ptr .. ptr + len` must stay mapped (and be shared memory that may be written
/// concurrently) for as long as `keep` lives.
pub unsafe fn attach_peer(gid: [u8; 16], windows: Vec<Window>, keep: Arc<dyn Any + Send + Sync>) {
    let a: Arc<dyn Remote> = Arc::new(Attached {
        windows,
        _keep: keep,
    });
    lock(fabric()).insert(gid, a);
}

/// A peer's MR as backed by a [`Region`] mapped here (the peer's memfd, mapped).
pub struct RegionWindow {
    /// The mapping.
    pub region: Arc<dyn Region>,
    /// Where in it the MR starts.
    pub offset: u64,
    /// The MR's length.
    pub len: u64,
    /// The MR's address in the peer.
    pub remote_addr: u64,
    /// Its rkey.
    pub rkey: u32,
    /// Its access flags.
    pub access: u32,
}

/// [`attach_peer`] for windows backed by regions, checked to lie inside them.
pub fn attach_regions(gid: [u8; 16], windows: Vec<RegionWindow>) -> Result<(), RdmaError> {
    let mut raw = Vec::with_capacity(windows.len());
    let mut keep: Vec<Arc<dyn Region>> = Vec::with_capacity(windows.len());
    for w in windows {
        let (base, len) = w.region.region();
        if w.offset.checked_add(w.len).is_none_or(|end| end > len) {
            return Err(RdmaError::Call {
                call: "attach_regions",
                reason: format!(
                    "window {}+{} outside a mapping of {len} bytes",
                    w.offset, w.len
                ),
            });
        }
        raw.push(Window {
            addr: w.remote_addr,
            len: w.len,
            rkey: w.rkey,
            access: w.access,
            ptr: (base + w.offset) as *mut u8,
        });
        keep.push(w.region);
    }
    // SAFETY: each window lies inside its region (checked above); regions stay mapped while
    // `keep` (which holds them) lives, and tolerate concurrent writes (the Region contract).
    unsafe { attach_peer(gid, raw, Arc::new(keep)) };
    Ok(())
}

/// Forget the peer `gid` (queue pairs connected to it keep their attachment until reset).
pub fn detach_peer(gid: &[u8; 16]) {
    lock(fabric()).remove(gid);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock()
        .expect("lock poisoned: a panic left this state half-updated")
}

/// Counters of this process's simulated NIC.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimStats {
    /// MRs registered.
    pub mrs_registered: u64,
    /// MRs deregistered.
    pub mrs_deregistered: u64,
    /// Work requests executed (successful or not, flushed ones excluded).
    pub wrs: u64,
    /// Bytes moved by them.
    pub bytes: u64,
    /// Error completions of executed work requests (flushes of an errored queue pair excluded).
    pub errors: u64,
    /// Completion-channel events raised (a completion added to an armed completion queue).
    pub events: u64,
}

static MRS_REG: AtomicU64 = AtomicU64::new(0);
static MRS_DEREG: AtomicU64 = AtomicU64::new(0);
static WRS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static EVENTS: AtomicU64 = AtomicU64::new(0);

/// This process's counters.
pub fn stats() -> SimStats {
    SimStats {
        mrs_registered: MRS_REG.load(Ordering::Relaxed),
        mrs_deregistered: MRS_DEREG.load(Ordering::Relaxed),
        wrs: WRS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        errors: ERRORS.load(Ordering::Relaxed),
        events: EVENTS.load(Ordering::Relaxed),
    }
}

/// A fault the simulated NIC injects into one work request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Complete it with this status, touching nothing.
    Status(WcStatus),
    /// Use a wrong rkey: the NIC's key check must catch it (RemoteAccess).
    BadRkey,
    /// Aim it 1 TiB past its remote address: the NIC's bounds check must catch it
    /// (RemoteAccess).
    OutOfBounds,
}

/// Pending injected fault: the work request executed this many after now gets it.
static INJECT: Mutex<Option<(u64, Fault)>> = Mutex::new(None);

/// Fail the work request this process's simulated NIC executes `after` work requests from now
/// (0: the next one) with `status`; once.
pub fn inject_error(after: u64, status: WcStatus) {
    inject(after, Fault::Status(status));
}

/// Give the work request executed `after` work requests from now `fault`; once.
pub fn inject(after: u64, fault: Fault) {
    *lock(&INJECT) = Some((after, fault));
}

fn injected() -> Option<Fault> {
    let mut g = lock(&INJECT);
    match g.as_mut() {
        Some((0, f)) => {
            let f = *f;
            *g = None;
            Some(f)
        }
        Some((n, _)) => {
            *n -= 1;
            None
        }
        None => None,
    }
}

/// Parse a status name for `MMC_RDMA_SIM_FAIL_AFTER`.
pub fn parse_status(s: &str) -> Option<WcStatus> {
    Some(match s {
        "remote_access" => WcStatus::RemoteAccess,
        "retry_exceeded" | "retry" => WcStatus::RetryExceeded,
        "local_protection" => WcStatus::LocalProtection,
        "flush" => WcStatus::Flush,
        "remote_invalid_request" => WcStatus::RemoteInvalidRequest,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
struct MrEntry {
    addr: u64,
    len: u64,
    access: u32,
}

/// The simulated NIC of this process.
pub struct SimDevice {
    attr: DeviceAttr,
    gid: [u8; 16],
    /// By lkey and by rkey (distinct numbers).
    by_lkey: Mutex<HashMap<u32, MrEntry>>,
    by_rkey: Mutex<HashMap<u32, MrEntry>>,
    next_key: AtomicU32,
    next_qpn: AtomicU32,
}

/// The process's own MRs, reached by loopback queue pairs.
struct Own(Arc<SimDevice>);

impl Remote for Own {
    fn resolve(&self, rkey: u32, addr: u64, len: u64, need: u32) -> Option<*mut u8> {
        let mrs = lock(&self.0.by_rkey);
        let mr = mrs.get(&rkey)?;
        let off = addr.checked_sub(mr.addr)?;
        if mr.access & need != need || off.checked_add(len)? > mr.len {
            return None;
        }
        Some(addr as *mut u8)
    }
}

fn limits_from_env(attr: &mut DeviceAttr) {
    let Ok(spec) = std::env::var("MMC_RDMA_SIM_LIMITS") else {
        return;
    };
    for kv in spec.split(',').filter(|s| !s.trim().is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let Ok(v) = v.trim().parse::<u64>() else {
            tracing::warn!(
                item = kv,
                "MMC_RDMA_SIM_LIMITS: expected name=number; ignored"
            );
            continue;
        };
        let v32 = v.clamp(1, u32::MAX as u64) as u32;
        match k.trim() {
            "max_sge" => attr.max_sge = v32,
            "max_qp_wr" => attr.max_qp_wr = v32,
            "max_inline" => attr.max_inline = v as u32,
            "max_mr_size" => attr.max_mr_size = v.max(1),
            "max_msg_sz" => attr.max_msg_sz = v.max(1),
            other => tracing::warn!(name = other, "MMC_RDMA_SIM_LIMITS: unknown limit; ignored"),
        }
    }
}

impl SimDevice {
    /// This process's simulated NIC (opened once; later calls return the same device).
    pub fn open(host: &str) -> Arc<SimDevice> {
        static DEV: OnceLock<Arc<SimDevice>> = OnceLock::new();
        DEV.get_or_init(|| {
            let mut attr = DeviceAttr {
                name: "sim0".into(),
                fabric: format!("sim:{host}"),
                max_sge: 30,
                max_qp_wr: 8192,
                max_mr_size: u64::MAX,
                max_msg_sz: 1 << 30,
                max_inline: 220,
            };
            limits_from_env(&mut attr);
            if let Ok(v) = std::env::var("MMC_RDMA_SIM_FAIL_AFTER") {
                let (n, s) = v.split_once(':').unwrap_or((&v, "remote_access"));
                match (n.trim().parse::<u64>(), parse_status(s.trim())) {
                    (Ok(n), Some(s)) => inject_error(n, s),
                    _ => tracing::warn!(value = %v, "MMC_RDMA_SIM_FAIL_AFTER: expected N[:status]; ignored"),
                }
            }
            let mut gid = [0u8; 16];
            gid[..2].copy_from_slice(&[0xfe, 0x80]);
            gid[8..12].copy_from_slice(&std::process::id().to_be_bytes());
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            gid[12..].copy_from_slice(&nanos.to_be_bytes());
            let dev = Arc::new(SimDevice {
                attr,
                gid,
                by_lkey: Mutex::new(HashMap::new()),
                by_rkey: Mutex::new(HashMap::new()),
                next_key: AtomicU32::new(1),
                next_qpn: AtomicU32::new(0x100),
            });
            lock(fabric()).insert(gid, Arc::new(Own(dev.clone())));
            tracing::info!(fabric = %dev.attr.fabric, "simulated RDMA NIC opened");
            dev
        })
        .clone()
    }

    /// Its GID.
    pub fn gid(&self) -> [u8; 16] {
        self.gid
    }

    fn check_local(&self, wr: &WorkRequest, need: u32) -> bool {
        let mrs = lock(&self.by_lkey);
        wr.sges.iter().all(|s| {
            mrs.get(&s.lkey).is_some_and(|mr| {
                mr.access & need == need
                    && s.addr >= mr.addr
                    && s.addr + s.len as u64 <= mr.addr + mr.len
            })
        })
    }
}

impl Device for SimDevice {
    fn attr(&self) -> &DeviceAttr {
        &self.attr
    }

    unsafe fn reg_mr(&self, addr: u64, len: u64, access: u32) -> Result<Mr, RdmaError> {
        if len > self.attr.max_mr_size {
            return Err(RdmaError::Limit {
                what: format!("an MR of {len} bytes"),
                limit: "max_mr_size",
                max: self.attr.max_mr_size,
                wanted: len,
            });
        }
        if addr.checked_add(len).is_none() {
            return Err(RdmaError::Call {
                call: "reg_mr",
                reason: "the range wraps".into(),
            });
        }
        let k = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (lkey, rkey) = (k << 8 | 0x11, k << 8 | 0x22);
        let e = MrEntry { addr, len, access };
        lock(&self.by_lkey).insert(lkey, e);
        lock(&self.by_rkey).insert(rkey, e);
        MRS_REG.fetch_add(1, Ordering::Relaxed);
        Ok(Mr {
            addr,
            len,
            lkey,
            rkey,
        })
    }

    fn dereg_mr(&self, mr: &Mr) -> Result<(), RdmaError> {
        let a = lock(&self.by_lkey).remove(&mr.lkey);
        let b = lock(&self.by_rkey).remove(&mr.rkey);
        if a.is_none() || b.is_none() {
            return Err(RdmaError::Call {
                call: "dereg_mr",
                reason: format!("no MR with lkey {:#x}", mr.lkey),
            });
        }
        MRS_DEREG.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn create_qp(&self, depth: u32) -> Result<Box<dyn QueuePair>, RdmaError> {
        Ok(Box::new(self.create_sim_qp(depth)?))
    }
}

impl SimDevice {
    /// [`Device::create_qp`], as the concrete type (tests wait for its NIC with
    /// [`SimQp::drained`]).
    pub fn create_sim_qp(&self, depth: u32) -> Result<SimQp, RdmaError> {
        if depth == 0 || depth > self.attr.max_qp_wr {
            return Err(RdmaError::Limit {
                what: "a send queue".into(),
                limit: "max_qp_wr",
                max: self.attr.max_qp_wr as u64,
                wanted: depth as u64,
            });
        }
        let qpn = self.next_qpn.fetch_add(1, Ordering::Relaxed);
        let dev = SimDevice::open(self.attr.fabric.trim_start_matches("sim:"));
        let (channel_tx, channel_rx) = UnixStream::pair().map_err(|e| RdmaError::Call {
            call: "create_comp_channel",
            reason: e.to_string(),
        })?;
        channel_tx
            .set_nonblocking(true)
            .map_err(|e| RdmaError::Call {
                call: "create_comp_channel",
                reason: e.to_string(),
            })?;
        Ok(SimQp {
            shared: Arc::new(Shared {
                dev,
                qpn,
                inner: Mutex::new(Inner {
                    states: QpStates::new(qpn),
                    remote: None,
                    sq: VecDeque::new(),
                    cq: VecDeque::new(),
                    armed: false,
                    closed: false,
                    nic_asleep: false,
                }),
                doorbell: Condvar::new(),
                channel_tx,
            }),
            depth: depth as usize,
            channel_rx,
            nic: None,
        })
    }
}

/// A simulated queue pair's state, shared with its NIC thread.
struct Inner {
    states: QpStates,
    remote: Option<Arc<dyn Remote>>,
    sq: VecDeque<WorkRequest>,
    cq: VecDeque<Completion>,
    /// `req_notify`: the next completion added raises one event on the channel.
    armed: bool,
    /// The queue pair was dropped: the NIC thread ends.
    closed: bool,
    /// The NIC thread sleeps on the doorbell (a post must ring it).
    nic_asleep: bool,
}

struct Shared {
    dev: Arc<SimDevice>,
    qpn: u32,
    inner: Mutex<Inner>,
    /// Rung by `post_send` (and on drop) when the NIC thread sleeps: it has work.
    doorbell: Condvar,
    /// The completion channel's write end (the NIC raises an event by writing a byte).
    channel_tx: UnixStream,
}

/// A simulated queue pair: its send queue is executed by a NIC thread of its own (started at
/// the first post), which adds completions to its completion queue and, when the queue is armed
/// ([`QueuePair::req_notify`]), raises one event on its completion channel (a socket pair: one
/// byte per event) that [`QueuePair::wait_event`] blocks on.
pub struct SimQp {
    shared: Arc<Shared>,
    depth: usize,
    channel_rx: UnixStream,
    nic: Option<std::thread::JoinHandle<()>>,
}

/// Run one work request against the peer; its status.
fn execute(dev: &SimDevice, remote: Option<&Arc<dyn Remote>>, wr: &WorkRequest) -> WcStatus {
    let len = wr.len();
    if len > dev.attr.max_msg_sz || wr.sges.len() > dev.attr.max_sge as usize {
        return WcStatus::LocalLength;
    }
    let (local_need, remote_need) = match wr.opcode {
        Opcode::Write => (0, access::REMOTE_WRITE),
        Opcode::Read => (access::LOCAL_WRITE, access::REMOTE_READ),
        Opcode::FetchAdd { .. } => (access::LOCAL_WRITE, access::REMOTE_ATOMIC),
    };
    if !dev.check_local(wr, local_need) {
        return WcStatus::LocalProtection;
    }
    let Some(remote) = remote else {
        return WcStatus::RetryExceeded;
    };
    let (mut rkey, mut raddr) = (wr.rkey, wr.remote_addr);
    match injected() {
        Some(Fault::Status(s)) => return s,
        Some(Fault::BadRkey) => rkey ^= 0x00ff_ff00,
        Some(Fault::OutOfBounds) => raddr = raddr.wrapping_add(1 << 40),
        None => {}
    }
    let Some(ptr) = remote.resolve(rkey, raddr, len, remote_need) else {
        return WcStatus::RemoteAccess;
    };
    match wr.opcode {
        Opcode::Write => {
            let mut at = 0usize;
            for s in &wr.sges {
                // SAFETY: the local entry lies in a registered MR whose memory the poster keeps
                // valid until completion or reset (post_send's contract; reset waits for the
                // work request in execution, which holds the queue pair's lock); the remote range
                // was resolved inside the peer's MR, mapped here while attached.
                unsafe {
                    std::ptr::copy(s.addr as *const u8, ptr.add(at), s.len as usize);
                }
                at += s.len as usize;
            }
        }
        Opcode::Read => {
            let mut at = 0usize;
            for s in &wr.sges {
                // SAFETY: as for WRITE; the local entry is the poster's, exclusively, until
                // completion.
                unsafe {
                    std::ptr::copy(ptr.add(at), s.addr as *mut u8, s.len as usize);
                }
                at += s.len as usize;
            }
        }
        Opcode::FetchAdd { add } => {
            if len != 8
                || wr.sges.len() != 1
                || !wr.remote_addr.is_multiple_of(8)
                || !(ptr as usize).is_multiple_of(8)
            {
                return WcStatus::RemoteInvalidRequest;
            }
            // SAFETY: 8 aligned bytes inside the peer's MR (checked above), shared memory that
            // the peer also accesses atomically.
            let word = unsafe { AtomicU64::from_ptr(ptr as *mut u64) };
            let old = word.fetch_add(add, Ordering::SeqCst);
            // SAFETY: the local entry is 8 bytes of the poster's registered memory.
            unsafe { std::ptr::write_unaligned(wr.sges[0].addr as *mut u64, old) };
        }
    }
    BYTES.fetch_add(len, Ordering::Relaxed);
    WcStatus::Success
}

/// The NIC thread of one queue pair: executes its send queue in order, one work request at a
/// time under the queue pair's lock (so a reset or drop never races a copy), and delivers
/// completions: signaled successes and every error, the later work requests of an errored queue
/// pair flushed.
fn nic(shared: Arc<Shared>) {
    let mut g = lock(&shared.inner);
    loop {
        while g.sq.is_empty() && !g.closed {
            g.nic_asleep = true;
            g = shared
                .doorbell
                .wait(g)
                .expect("lock poisoned: a panic left this state half-updated");
            g.nic_asleep = false;
        }
        if g.closed {
            return;
        }
        let wr = g.sq.pop_front().expect("not empty");
        let (status, executed) = if g.states.state() == QpState::Error {
            (WcStatus::Flush, false)
        } else {
            WRS.fetch_add(1, Ordering::Relaxed);
            (execute(&shared.dev, g.remote.as_ref(), &wr), true)
        };
        if status != WcStatus::Success {
            if executed {
                ERRORS.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    qpn = shared.qpn,
                    wr_id = wr.wr_id,
                    ?status,
                    "simulated NIC: error completion"
                );
            }
            g.states.fail();
        }
        if wr.signaled || status != WcStatus::Success {
            g.cq.push_back(Completion {
                wr_id: wr.wr_id,
                status,
            });
            if std::mem::take(&mut g.armed) {
                EVENTS.fetch_add(1, Ordering::Relaxed);
                // A full socket buffer means unread events are pending anyway.
                let _ = (&shared.channel_tx).write(&[1]);
            }
        }
        // Let pollers and resets in between work requests.
        drop(g);
        g = lock(&shared.inner);
    }
}

impl SimQp {
    /// True when its NIC has executed every posted work request (their completions are in the
    /// completion queue).
    pub fn drained(&self) -> bool {
        lock(&self.shared.inner).sq.is_empty()
    }
}

impl Drop for SimQp {
    fn drop(&mut self) {
        {
            let mut g = lock(&self.shared.inner);
            g.closed = true;
            g.sq.clear();
        }
        self.shared.doorbell.notify_all();
        if let Some(t) = self.nic.take() {
            let _ = t.join();
        }
    }
}

impl QueuePair for SimQp {
    fn endpoint(&self) -> QpEndpoint {
        let qpn = self.shared.qpn;
        QpEndpoint {
            qpn,
            psn: qpn.wrapping_mul(2654435761) & 0xff_ffff,
            lid: 0,
            gid: self.shared.dev.gid,
        }
    }

    fn state(&self) -> QpState {
        lock(&self.shared.inner).states.state()
    }

    fn connect(&mut self, remote: &QpEndpoint) -> Result<(), RdmaError> {
        let mut g = lock(&self.shared.inner);
        g.states.init()?;
        // A peer whose memory is not attached here is like an unreachable port: the queue pair
        // connects, and its work requests fail with RetryExceeded. (A service's queue pairs are
        // passive, one-sided targets: they never reach the client's memory.)
        let peer = lock(fabric()).get(&remote.gid).cloned();
        g.states.rtr()?;
        g.states.rts()?;
        g.remote = peer;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), RdmaError> {
        let mut g = lock(&self.shared.inner);
        g.states.reset();
        g.sq.clear();
        g.cq.clear();
        g.remote = None;
        g.armed = false;
        Ok(())
    }

    unsafe fn post_send(&mut self, wrs: &[WorkRequest]) -> Result<(), RdmaError> {
        let asleep = {
            let mut g = lock(&self.shared.inner);
            g.states.check_post()?;
            if g.sq.len() + wrs.len() > self.depth {
                return Err(RdmaError::Limit {
                    what: format!("posting {} work requests", wrs.len()),
                    limit: "send queue depth",
                    max: self.depth as u64,
                    wanted: (g.sq.len() + wrs.len()) as u64,
                });
            }
            g.sq.extend(wrs.iter().cloned());
            g.nic_asleep
        };
        if self.nic.is_none() {
            let shared = self.shared.clone();
            let t = std::thread::Builder::new()
                .name(format!("sim-nic-{:x}", self.shared.qpn))
                .spawn(move || nic(shared))
                .map_err(|e| RdmaError::Call {
                    call: "post_send",
                    reason: format!("starting the simulated NIC's thread: {e}"),
                })?;
            self.nic = Some(t);
        } else if asleep {
            self.shared.doorbell.notify_one();
        }
        Ok(())
    }

    fn poll_cq(&mut self, out: &mut Vec<Completion>, max: usize) -> Result<usize, RdmaError> {
        let mut g = lock(&self.shared.inner);
        let n = max.min(g.cq.len());
        out.extend(g.cq.drain(..n));
        Ok(n)
    }

    fn req_notify(&mut self) -> Result<(), RdmaError> {
        lock(&self.shared.inner).armed = true;
        Ok(())
    }

    fn wait_event(&mut self, timeout: Duration) -> Result<bool, RdmaError> {
        let call = |e: std::io::Error| RdmaError::Call {
            call: "wait_event",
            reason: e.to_string(),
        };
        self.channel_rx
            .set_read_timeout(Some(timeout.max(Duration::from_micros(1))))
            .map_err(call)?;
        let mut buf = [0u8; 64];
        match (&self.channel_rx).read(&mut buf) {
            Ok(0) => Err(call(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(call(e)),
        }
    }
}

#[cfg(test)]
#[path = "sim_tests.rs"]
mod tests;
