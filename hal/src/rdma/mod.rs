//! RDMA verbs, behind one trait, for the one-sided transport.
//!
//! * [`lower`]: the lowering of a transfer list into chains of one-sided work requests (a pure
//!   function: no verbs types, no I/O).
//! * [`Device`] / [`QueuePair`]: what the transport needs of a verbs provider: device discovery and
//!   limits ([`DeviceAttr`]), one protection domain per opened device, memory registration
//!   ([`Device::reg_mr`], [`register_region`] splits a region above `max_mr_size`), RC queue pairs
//!   with their state machine ([`QpStates`]), posting chains of work requests and polling
//!   completions.
//! * [`sim`] (feature `os`): a simulated NIC behind the same traits: queue pairs as queues, memory
//!   regions with real lkeys and rkeys and bounds checks, one-sided READ, WRITE and FETCH_ADD
//!   executed against the remote process's registered memory (its memfds, mapped), completions in
//!   order, errors injectable.
//! * `verbs` (feature `rdma`): the binding to the system's libibverbs (through `rdma-sys`).
//!
//! [`provider`] picks one: `MMC_RDMA_PROVIDER` / the `rdma_provider` key (`sim`, `verbs`, `none`),
//! by default the real one when it is built in and finds a device, else none.

pub mod lower;
#[cfg(feature = "os")]
pub mod safe;
#[cfg(feature = "os")]
pub mod sim;
#[cfg(feature = "rdma")]
pub mod verbs;

mod qp;

#[cfg(feature = "os")]
use std::sync::Arc;

pub use qp::{QpState, QpStates};

/// Access flags of a memory region (the values of `ibv_access_flags`).
pub mod access {
    /// The NIC may write into the region for a local operation (a READ's destination).
    pub const LOCAL_WRITE: u32 = 1;
    /// Peers may WRITE into it.
    pub const REMOTE_WRITE: u32 = 2;
    /// Peers may READ it.
    pub const REMOTE_READ: u32 = 4;
    /// Peers may run atomics on it.
    pub const REMOTE_ATOMIC: u32 = 8;
}

/// Huge-page size: pool arenas are split into MRs at multiples of it.
pub const HUGE_PAGE: u64 = 2 << 20;

/// Most MRs one region may be split into.
pub const REGION_MRS_MAX: usize = 4096;

/// Why a verbs call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RdmaError {
    /// No provider, or no device.
    #[error("no RDMA device: {0}")]
    NoDevice(String),
    /// A request past a device limit; names the limit.
    #[error("{what} needs {wanted}, past the device limit {limit} = {max}")]
    Limit {
        /// What was asked.
        what: String,
        /// The limit's name (`max_mr_size`, `max_sge`, ...).
        limit: &'static str,
        /// The limit's value.
        max: u64,
        /// What was needed.
        wanted: u64,
    },
    /// A queue pair transition that its state does not allow.
    #[error("queue pair {qpn}: {op} in state {state:?}")]
    QpState {
        /// The queue pair.
        qpn: u32,
        /// What was tried.
        op: &'static str,
        /// Its state.
        state: QpState,
    },
    /// The peer is not reachable on this fabric.
    #[error("no path to the peer: {0}")]
    Unreachable(String),
    /// The provider refused the call (errno or reason).
    #[error("{call} failed: {reason}")]
    Call {
        /// The verbs call.
        call: &'static str,
        /// Why.
        reason: String,
    },
}

/// A device's identity and limits (`ibv_query_device` / `ibv_query_port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAttr {
    /// Its name (`mlx5_0`, `sim0`).
    pub name: String,
    /// Which fabric it is on: two devices with the same fabric reach each other (the GID's subnet
    /// prefix for a real port; `sim:<host>` for the simulated NIC, which spans one host).
    pub fabric: String,
    /// Scatter-gather entries per work request.
    pub max_sge: u32,
    /// Work requests a send queue holds.
    pub max_qp_wr: u32,
    /// Bytes one memory region may span.
    pub max_mr_size: u64,
    /// Bytes one message (work request) may move.
    pub max_msg_sz: u64,
    /// Bytes a WRITE may carry inline.
    pub max_inline: u32,
}

/// A registered memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mr {
    /// Its first byte's address in the registering process.
    pub addr: u64,
    /// Its length.
    pub len: u64,
    /// Key for local scatter-gather entries.
    pub lkey: u32,
    /// Key peers name it by.
    pub rkey: u32,
}

/// What a peer needs to connect a queue pair to this one (exchanged over the control channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QpEndpoint {
    /// Queue pair number.
    pub qpn: u32,
    /// First packet sequence number.
    pub psn: u32,
    /// Port LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Port GID.
    pub gid: [u8; 16],
}

/// A one-sided operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// RDMA WRITE: local pieces into the remote range.
    Write,
    /// RDMA READ: the remote range into local pieces.
    Read,
    /// ATOMIC FETCH_AND_ADD of `add` on the remote 8-byte word; the old value lands in the one
    /// 8-byte local piece.
    FetchAdd {
        /// Added (wrapping: `u64::MAX` subtracts 1).
        add: u64,
    },
}

/// A local scatter-gather entry: registered memory of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sge {
    /// Address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Key of the local MR that holds it.
    pub lkey: u32,
}

/// One work request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkRequest {
    /// Returned in its completion.
    pub wr_id: u64,
    /// The operation.
    pub opcode: Opcode,
    /// Local pieces, in order.
    pub sges: Vec<Sge>,
    /// Remote address (in the peer's address space).
    pub remote_addr: u64,
    /// The remote MR's key.
    pub rkey: u32,
    /// Generates a completion when it succeeds (errors always do).
    pub signaled: bool,
    /// Waits for earlier READs and atomics of the queue pair to complete before it starts
    /// (`IBV_SEND_FENCE`).
    pub fence: bool,
    /// Carry the bytes in the work request (small WRITEs).
    pub inline: bool,
}

impl WorkRequest {
    /// Bytes it moves.
    pub fn len(&self) -> u64 {
        self.sges.iter().map(|s| s.len as u64).sum()
    }

    /// True when it moves no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A completion's status (the `ibv_wc_status` values that matter here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WcStatus {
    /// Done.
    Success,
    /// A local piece outside its MR, or with the wrong lkey or access.
    LocalProtection,
    /// A local piece longer than the message limit.
    LocalLength,
    /// The remote range is outside the rkey's MR, or the key or access is wrong.
    RemoteAccess,
    /// The peer refused the request (bad opcode, misaligned atomic).
    RemoteInvalidRequest,
    /// The peer did not answer (transport retry counter exceeded).
    RetryExceeded,
    /// Flushed: an earlier work request of the queue pair failed.
    Flush,
    /// Any other status, by its number.
    Other(u32),
}

/// One completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The work request's id.
    pub wr_id: u64,
    /// How it ended.
    pub status: WcStatus,
}

/// An opened device: its protection domain, its memory regions and queue pairs.
pub trait Device: Send + Sync {
    /// Identity and limits.
    fn attr(&self) -> &DeviceAttr;

    /// Register `len` bytes at `addr` (one MR; `len <= max_mr_size`) with `access`
    /// ([`access`] flags).
    ///
    /// # Safety
    /// The memory must stay mapped until [`Device::dereg_mr`], and with remote access flags
    /// peers may read or write it at any time until then.
    unsafe fn reg_mr(&self, addr: u64, len: u64, access: u32) -> Result<Mr, RdmaError>;

    /// Deregister an MR: its keys are refused from now on.
    fn dereg_mr(&self, mr: &Mr) -> Result<(), RdmaError>;

    /// A reliable-connected queue pair with a send queue of `depth` work requests and its own
    /// completion queue, in state Reset.
    fn create_qp(&self, depth: u32) -> Result<Box<dyn QueuePair>, RdmaError>;
}

/// A reliable-connected queue pair with its completion queue.
pub trait QueuePair: Send {
    /// What a peer connects to.
    fn endpoint(&self) -> QpEndpoint;

    /// Where its state machine is.
    fn state(&self) -> QpState;

    /// Reset -> Init -> RTR -> RTS towards `remote`.
    fn connect(&mut self, remote: &QpEndpoint) -> Result<(), RdmaError>;

    /// Back to Reset: outstanding work requests are dropped without completions.
    fn reset(&mut self) -> Result<(), RdmaError>;

    /// Post a chain of work requests, in order. At most the send queue's depth may be
    /// outstanding (posted and not yet completed, counting unsignaled ones up to the next
    /// signaled completion).
    ///
    /// # Safety
    /// Every local piece must lie in memory that stays valid, and for a READ or FETCH_ADD is not
    /// accessed otherwise, until the work request completes or the queue pair is reset.
    unsafe fn post_send(&mut self, wrs: &[WorkRequest]) -> Result<(), RdmaError>;

    /// Move up to `max` completions into `out` (in posting order); how many.
    fn poll_cq(&mut self, out: &mut Vec<Completion>, max: usize) -> Result<usize, RdmaError>;

    /// Arm the completion queue (`ibv_req_notify_cq`): the next completion added to it raises
    /// one event on its completion channel. One-shot: arm again after each event. Completions
    /// already in the queue raise none, so poll once more after arming before waiting.
    fn req_notify(&mut self) -> Result<(), RdmaError>;

    /// Block up to `timeout` for an event on the completion channel (`ibv_get_cq_event`, then
    /// `ibv_ack_cq_events`): true when one came, false when the time passed. An event may be
    /// stale (raised for completions already polled): poll, and arm again when nothing came.
    fn wait_event(&mut self, timeout: std::time::Duration) -> Result<bool, RdmaError>;
}

/// Split `len` bytes at `addr` into MRs of at most `max_mr_size` bytes each, cut at huge-page
/// multiples (so a huge-page arena is registered in whole huge pages): `(addr, len)` per MR.
/// A limit that cannot be met (an MR limit below one huge page, more than [`REGION_MRS_MAX`]
/// pieces) is an error that names it.
pub fn split_region(addr: u64, len: u64, max_mr_size: u64) -> Result<Vec<(u64, u64)>, RdmaError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if len <= max_mr_size {
        return Ok(vec![(addr, len)]);
    }
    let chunk = max_mr_size / HUGE_PAGE * HUGE_PAGE;
    if chunk == 0 {
        return Err(RdmaError::Limit {
            what: format!("registering {len} bytes in huge-page pieces"),
            limit: "max_mr_size",
            max: max_mr_size,
            wanted: HUGE_PAGE,
        });
    }
    let pieces = len.div_ceil(chunk);
    if pieces > REGION_MRS_MAX as u64 {
        return Err(RdmaError::Limit {
            what: format!("registering {len} bytes with max_mr_size {max_mr_size}"),
            limit: "MRs per region",
            max: REGION_MRS_MAX as u64,
            wanted: pieces,
        });
    }
    let mut out = Vec::with_capacity(pieces as usize);
    let mut at = 0;
    while at < len {
        let n = chunk.min(len - at);
        out.push((addr + at, n));
        at += n;
    }
    Ok(out)
}

/// Register a region with [`split_region`]'s pieces; on failure the MRs already made are
/// deregistered.
///
/// # Safety
/// As [`Device::reg_mr`], for the whole region.
pub unsafe fn register_region(
    dev: &dyn Device,
    addr: u64,
    len: u64,
    access: u32,
) -> Result<Vec<Mr>, RdmaError> {
    let mut mrs = Vec::new();
    for (a, n) in split_region(addr, len, dev.attr().max_mr_size)? {
        // SAFETY: the pieces lie inside the region the caller vouches for.
        match unsafe { dev.reg_mr(a, n, access) } {
            Ok(mr) => mrs.push(mr),
            Err(e) => {
                for mr in &mrs {
                    let _ = dev.dereg_mr(mr);
                }
                return Err(e);
            }
        }
    }
    Ok(mrs)
}

/// Which provider to use (`MMC_RDMA_PROVIDER`, the `rdma_provider` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// The system's libibverbs when built in (feature `rdma`) and it lists a device, else none.
    Auto,
    /// The simulated NIC.
    Sim,
    /// The system's libibverbs (feature `rdma`).
    Verbs,
    /// No RDMA.
    None,
}

impl ProviderKind {
    /// Parse `auto`, `sim`, `verbs` or `none` (case-insensitive; empty = auto).
    pub fn parse(s: &str) -> Option<ProviderKind> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => ProviderKind::Auto,
            "sim" => ProviderKind::Sim,
            "verbs" | "ibverbs" => ProviderKind::Verbs,
            "none" | "off" => ProviderKind::None,
            _ => return None,
        })
    }

    /// `MMC_RDMA_PROVIDER` when set and valid, else `configured`.
    pub fn from_env_or(configured: ProviderKind) -> ProviderKind {
        match std::env::var("MMC_RDMA_PROVIDER") {
            Ok(v) => ProviderKind::parse(&v).unwrap_or_else(|| {
                tracing::warn!(value = %v, "MMC_RDMA_PROVIDER: expected auto, sim, verbs or none; ignored");
                configured
            }),
            Err(_) => configured,
        }
    }
}

/// Open the first device of the provider `kind` picks (`host` names this host, for the simulated
/// NIC's fabric). `Ok(None)`: no RDMA here (with auto, or none).
#[cfg(feature = "os")]
pub fn provider(kind: ProviderKind, host: &str) -> Result<Option<Arc<dyn Device>>, RdmaError> {
    match kind {
        ProviderKind::None => Ok(None),
        ProviderKind::Sim => Ok(Some(sim::SimDevice::open(host) as Arc<dyn Device>)),
        ProviderKind::Verbs => verbs_device().map(Some),
        ProviderKind::Auto => match verbs_device() {
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                tracing::debug!(error = %e, "no RDMA device: transfers use shared memory or TCP");
                Ok(None)
            }
        },
    }
}

#[cfg(all(feature = "os", feature = "rdma"))]
fn verbs_device() -> Result<Arc<dyn Device>, RdmaError> {
    verbs::VerbsDevice::open_first().map(|d| d as Arc<dyn Device>)
}

#[cfg(all(feature = "os", not(feature = "rdma")))]
fn verbs_device() -> Result<Arc<dyn Device>, RdmaError> {
    Err(RdmaError::NoDevice(
        "this build has no libibverbs binding (cargo feature `rdma`)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_split_at_huge_pages_below_the_mr_limit() {
        assert_eq!(split_region(0x1000, 0, 1 << 30).unwrap(), vec![]);
        assert_eq!(
            split_region(0x1000, 100, 1 << 30).unwrap(),
            vec![(0x1000, 100)]
        );
        // 9 MiB with a 5 MiB limit: 4 MiB pieces (whole huge pages), the last 1 MiB.
        let p = split_region(1 << 30, 9 << 20, 5 << 20).unwrap();
        assert_eq!(
            p,
            vec![
                (1 << 30, 4 << 20),
                ((1 << 30) + (4 << 20), 4 << 20),
                ((1 << 30) + (8 << 20), 1 << 20)
            ]
        );
        assert_eq!(p.iter().map(|x| x.1).sum::<u64>(), 9 << 20);
    }

    #[test]
    fn a_limit_that_cannot_be_met_is_named() {
        let e = split_region(0, 8 << 20, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("max_mr_size"), "{e}");
        let e = split_region(0, 1 << 40, 2 << 20).unwrap_err();
        assert!(e.to_string().contains("MRs per region"), "{e}");
    }

    #[test]
    fn provider_names_parse() {
        assert_eq!(ProviderKind::parse(" SIM "), Some(ProviderKind::Sim));
        assert_eq!(ProviderKind::parse(""), Some(ProviderKind::Auto));
        assert_eq!(ProviderKind::parse("verbs"), Some(ProviderKind::Verbs));
        assert_eq!(ProviderKind::parse("none"), Some(ProviderKind::None));
        assert_eq!(ProviderKind::parse("roce"), None);
    }
}
