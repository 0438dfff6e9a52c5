//! The local service's side of the RDMA transport. At start it opens the configured verbs
//! provider (`rdma_provider`, `MMC_RDMA_PROVIDER`), registers every pool (split into MRs at the
//! device's `max_mr_size`, huge-page aligned) with remote read and write access and the fence
//! page with remote read and atomic access. A client connects with a
//! [`DataRequest::RdmaConnect`](mmc_controlplane::msg::DataRequest) on the data endpoint: the
//! service creates an RC queue pair, connects it to the client's and answers with its endpoint and
//! its MRs ([`RdmaHello`]). After that the service's CPU takes no part in a transfer: the client's
//! one-sided READs and WRITEs land in the pools, and the client enters and leaves the epoch fence
//! with FETCH_ADDs on the fence page, so a re-registration drains RDMA copies as it drains the
//! others. Queue pairs are kept for the service's life, at most [`QPS_MAX`] (the oldest goes).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use mmc_config::{DataOpType, RdmaProvider};
use mmc_controlplane::msg::{ArchivedRdmaPeer, DataReply, RdmaHello, RdmaMr, RdmaPeer};
use mmc_controlplane::wire::{self, Kind, WireError};
use mmc_controlplane::Code;
use mmc_hal::fence::SharedFence;
use mmc_hal::rdma::safe::Registered;
use mmc_hal::rdma::{self, access, Device, Mr, ProviderKind, QpEndpoint, QueuePair};
use rkyv::util::AlignedVec;
use tracing::{info, warn};

use super::{Inner, Pool};

/// Queue pairs one service keeps.
pub(crate) const QPS_MAX: usize = 1024;

/// The hal provider for a configured one.
pub(crate) fn provider_kind(p: RdmaProvider) -> ProviderKind {
    ProviderKind::from_env_or(match p {
        RdmaProvider::Auto => ProviderKind::Auto,
        RdmaProvider::Sim => ProviderKind::Sim,
        RdmaProvider::Verbs => ProviderKind::Verbs,
        RdmaProvider::None => ProviderKind::None,
    })
}

/// The service's device, its registered memory and its queue pairs.
pub(crate) struct RdmaServer {
    dev: Arc<dyn Device>,
    /// (pool index, offset in the pool, MR), in pool order.
    pool_mrs: Vec<(usize, u64, Mr)>,
    fence_mr: Mr,
    /// The registrations (deregistered when the service goes, before its pools).
    _regs: (Vec<Registered>, Registered),
    qps: Mutex<VecDeque<Box<dyn QueuePair>>>,
}

impl RdmaServer {
    /// Open the provider and register the pools and the fence page; `None` (logged) when there is
    /// no device or registration fails: the service then serves TCP and shared memory only.
    pub(crate) fn open(
        provider: RdmaProvider,
        protocol: Option<DataOpType>,
        pools: &[Pool],
        fence: &Arc<SharedFence>,
    ) -> Option<RdmaServer> {
        let forced = protocol == Some(DataOpType::Rdma);
        if protocol == Some(DataOpType::Tcp) {
            info!("protocol = tcp: RDMA not offered");
            return None;
        }
        let dev = match rdma::provider(provider_kind(provider), &super::host_id()) {
            Ok(Some(d)) => d,
            Ok(None) => {
                if forced {
                    warn!("protocol = rdma but no RDMA device (rdma_provider = auto finds none; `sim` selects the simulated NIC): serving TCP and same-host shared memory");
                }
                return None;
            }
            Err(e) => {
                warn!(error = %e, "RDMA unavailable: serving TCP and same-host shared memory");
                return None;
            }
        };
        let remote = access::LOCAL_WRITE | access::REMOTE_READ | access::REMOTE_WRITE;
        let mut pool_regs = Vec::new();
        for (i, p) in pools.iter().enumerate() {
            // Host pools only: a device (HBM) pool is reached over TCP or same-host IPC.
            let Some(arena) = p.mem.host_arc() else {
                continue;
            };
            match Registered::new(dev.clone(), arena.clone(), remote) {
                Ok(r) => pool_regs.push((i, r)),
                Err(e) => {
                    warn!(error = %e, pool = i, "RDMA: registering a pool failed; serving TCP and shared memory");
                    return None;
                }
            }
        }
        let fence_access = access::LOCAL_WRITE | access::REMOTE_READ | access::REMOTE_ATOMIC;
        let fence_reg = match Registered::new(dev.clone(), fence.clone(), fence_access) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "RDMA: registering the fence page failed; serving TCP and shared memory");
                return None;
            }
        };
        let mut pool_mrs = Vec::new();
        for (i, r) in &pool_regs {
            pool_mrs.extend(r.mrs().iter().map(|mr| (*i, mr.addr - r.base(), *mr)));
        }
        let fence_mr = fence_reg.mrs()[0];
        info!(device = %dev.attr().name, fabric = %dev.attr().fabric, mrs = pool_mrs.len(),
            "RDMA: pools registered; one-sided transfers offered");
        Some(RdmaServer {
            dev,
            pool_mrs,
            fence_mr,
            _regs: (pool_regs.into_iter().map(|(_, r)| r).collect(), fence_reg),
            qps: Mutex::new(VecDeque::new()),
        })
    }

    /// Answer a client's connection request: a queue pair connected to its, and the MRs.
    fn connect(
        &self,
        inner: &Inner,
        rank: u32,
        incarnation: u64,
        peer: &ArchivedRdmaPeer,
    ) -> Result<RdmaHello, (Code, String)> {
        let fabric = &self.dev.attr().fabric;
        if peer.fabric.as_str() != fabric {
            return Err((
                Code::LinkNotFound,
                format!(
                    "RDMA: the client's device is on fabric {}, this service's on {fabric}",
                    peer.fabric
                ),
            ));
        }
        let segments = {
            let core = inner
                .core
                .read()
                .expect("local core lock poisoned: a core step panicked");
            let m = core
                .check_fence(rank, incarnation)
                .map_err(|why| (why.code(), why.to_string()))?;
            m.segments.clone()
        };
        let internal = |e: rdma::RdmaError| (Code::LinkNotFound, format!("RDMA: {e}"));
        let mut qp = self.dev.create_qp(16).map_err(internal)?;
        let remote = QpEndpoint {
            qpn: peer.qpn.to_native(),
            psn: peer.psn.to_native(),
            lid: peer.lid.to_native(),
            gid: peer.gid,
        };
        qp.connect(&remote).map_err(internal)?;
        let ep = qp.endpoint();
        {
            let mut qps = self.qps.lock().expect("RDMA queue pairs lock poisoned");
            if qps.len() >= QPS_MAX {
                qps.pop_front();
            }
            qps.push_back(qp);
        }
        let mrs = self
            .pool_mrs
            .iter()
            .map(|(pool, seg_offset, mr)| RdmaMr {
                segment: segments[*pool],
                seg_offset: *seg_offset,
                addr: mr.addr,
                len: mr.len,
                rkey: mr.rkey,
            })
            .collect();
        Ok(RdmaHello {
            peer: RdmaPeer {
                qpn: ep.qpn,
                psn: ep.psn,
                lid: ep.lid,
                gid: ep.gid,
                fabric: fabric.clone(),
            },
            mrs,
            fence: RdmaMr {
                segment: u32::MAX,
                seg_offset: 0,
                addr: self.fence_mr.addr,
                len: self.fence_mr.len,
                rkey: self.fence_mr.rkey,
            },
        })
    }
}

/// Serve one `RdmaConnect`: the reply frame, then the encoded hello as its raw bytes.
pub(super) fn serve(
    stream: &mut impl std::io::Write,
    inner: &Inner,
    reply: &mut AlignedVec,
    req_id: u64,
    (rank, incarnation, peer): (u32, u64, &ArchivedRdmaPeer),
) -> Result<(), WireError> {
    let out = match inner.rdma.as_ref() {
        Some(r) => r.connect(inner, rank, incarnation, peer),
        None => Err((
            Code::LinkNotFound,
            "RDMA: this local service has no RDMA device".to_string(),
        )),
    };
    let (code, why, hello) = match out {
        Ok(h) => {
            let mut b = AlignedVec::new();
            wire::encode_payload(&h, &mut b)?;
            (Code::Ok, String::new(), b)
        }
        Err((code, why)) => {
            warn!(code = code.as_i32(), why, "RDMA connection refused");
            (code, why, AlignedVec::new())
        }
    };
    let r = DataReply {
        code: code.as_i32(),
        message: why,
    };
    wire::encode_payload(&r, reply)?;
    wire::write_frame(
        &mut *stream,
        Kind::DataReply,
        req_id,
        reply,
        hello.len() as u64,
    )?;
    stream.write_all(&hello).map_err(WireError::Io)
}
