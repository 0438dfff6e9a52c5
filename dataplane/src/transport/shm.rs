//! The shm backend: the client's side of the same-host shared-memory transport. Map a local
//! service's pools (memfds received over its shm socket) and its fence page; each job is one
//! memcpy per run between the caller's slices and the mapped pool, inside the service's shared
//! fence word (entered before, checked after), done before `submit` returns. It refuses (by the
//! fence, -3018) a job planned for another incarnation than the mapping's, and (`LinkNotFound`) a
//! segment the mapping lacks; the chooser sends it only same-host ranks it mapped.

use std::sync::Arc;
use std::time::Duration;

use mmc_controlplane::msg::{ServiceAddr, ShmHello};
use mmc_controlplane::{wire, Error, Result};
use mmc_core::fence::{Fence, SharedFence, FENCE_PAGE_BYTES};
use mmc_core::transport::{Completions, Job, Transport};
use mmc_hal::Arena;
use rkyv::util::AlignedVec;

use crate::local::{shm_server, stale};

/// One mapped service, as a backend.
pub(crate) struct Shm<'a>(pub(crate) &'a ShmMap);

impl Transport for Shm<'_> {
    fn submit(&mut self, jobs: Vec<Job<'_>>, done: &mut Completions) {
        let map = self.0;
        super::copy_jobs(
            jobs,
            done,
            |f, offset, src| map.copy_in(f, offset, src),
            |f, offset, dst| map.copy_out(f, offset, dst),
        );
    }
}

/// A same-host local service's pools, mapped into this process.
pub(crate) struct ShmMap {
    pub(crate) incarnation: u64,
    segments: Vec<(u32, Arc<Arena>)>,
    /// The service's fence word, shared with it and its other clients.
    fence: Arc<SharedFence>,
    endpoint: String,
    /// Open while the service lives.
    stream: std::os::unix::net::UnixStream,
}

impl ShmMap {
    pub(crate) fn open(addr: &ServiceAddr, timeout: Duration) -> Result<ShmMap> {
        let unreachable = |reason: String| Error::LocalUnreachable {
            endpoint: addr.shm_endpoint.clone(),
            reason,
        };
        let stream = shm_server::connect(&addr.shm_endpoint, timeout)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut buf = [0u8; 4096];
        let mut fds = Vec::new();
        let n = mmc_hal::fdpass::recv_with_fds(&stream, &mut buf, &mut fds)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut payload = AlignedVec::<16>::new();
        payload.extend_from_slice(&buf[..n]);
        let hello: ShmHello =
            wire::decode_payload(&payload).map_err(|e| unreachable(e.to_string()))?;
        if hello.incarnation != addr.incarnation
            || hello.segments.len() + 1 != fds.len()
            || hello.fence_bytes != FENCE_PAGE_BYTES
        {
            return Err(unreachable(format!(
                "stale or malformed hand-over (incarnation {} for {}, {} segments and a fence \
                 page of {} bytes for {} descriptors)",
                hello.incarnation,
                addr.incarnation,
                hello.segments.len(),
                hello.fence_bytes,
                fds.len()
            )));
        }
        let fence_fd = fds
            .pop()
            .expect("checked above: one more than the segments");
        let fence = SharedFence::from_fd(fence_fd).map_err(|e| unreachable(e.to_string()))?;
        let mut segments = Vec::with_capacity(fds.len());
        for ((segment, len), fd) in hello.segments.into_iter().zip(fds) {
            let name = format!("rank{}-segment{segment}", addr.rank);
            let arena = Arena::from_fd(&name, fd, len).map_err(|e| unreachable(e.to_string()))?;
            segments.push((segment, Arc::new(arena)));
        }
        tracing::debug!(
            rank = addr.rank,
            segments = segments.len(),
            "mapped a same-host local service's pools"
        );
        Ok(ShmMap {
            incarnation: hello.incarnation,
            segments,
            fence: Arc::new(fence),
            endpoint: addr.shm_endpoint.clone(),
            stream,
        })
    }

    /// True while the service is still at the incarnation these mappings were handed over in
    /// (false while it registers again, and after): then the mapping is stale.
    pub(crate) fn current(&self) -> bool {
        self.fence.incarnation() == self.incarnation
    }

    /// Copy `src` into `f.segment` at `offset`, inside the service's epoch fence.
    pub(crate) fn copy_in(&self, f: Fence, offset: u64, src: &[u8]) -> Result<()> {
        let guard = self
            .fence
            .enter(f.incarnation)
            .map_err(|s| stale(&self.endpoint, s))?;
        self.arena_of(f)?
            .copy_in(offset, src)
            .map_err(|e| Error::InvalidParam(e.to_string()))?;
        guard
            .still(f.incarnation)
            .map_err(|s| stale(&self.endpoint, s))
    }

    /// Copy out of `f.segment` at `offset` into `dst`, inside the service's epoch fence: bytes
    /// copied while the fence moved are an error, never the object's.
    pub(crate) fn copy_out(&self, f: Fence, offset: u64, dst: &mut [u8]) -> Result<()> {
        let guard = self
            .fence
            .enter(f.incarnation)
            .map_err(|s| stale(&self.endpoint, s))?;
        self.arena_of(f)?
            .copy_out(offset, dst)
            .map_err(|e| Error::InvalidParam(e.to_string()))?;
        guard
            .still(f.incarnation)
            .map_err(|s| stale(&self.endpoint, s))
    }

    /// The pool of `f.segment`, which must be one of this mapping's incarnation.
    fn arena_of(&self, f: Fence) -> Result<&Arena> {
        if f.incarnation != self.incarnation {
            return Err(Error::LocalUnreachable {
                endpoint: self.endpoint.clone(),
                reason: format!(
                    "fence: planned for incarnation {}, the pools were mapped under {}",
                    f.incarnation, self.incarnation
                ),
            });
        }
        self.arena(f.segment).ok_or_else(|| Error::Remote {
            code: mmc_controlplane::Code::LinkNotFound,
            context: format!("segment {} is not in the mapped pools", f.segment),
        })
    }

    /// False once the service closed its end (it stopped or died).
    pub(crate) fn alive(&self) -> bool {
        shm_server::peer_alive(&self.stream)
    }

    pub(crate) fn arena(&self, segment: u32) -> Option<&Arena> {
        self.segments
            .iter()
            .find(|(s, _)| *s == segment)
            .map(|(_, a)| &**a)
    }

    /// The mapped pool of `segment`, shared (the simulated NIC's view of the service's MRs).
    pub(crate) fn arena_arc(&self, segment: u32) -> Option<Arc<Arena>> {
        self.segments
            .iter()
            .find(|(s, _)| *s == segment)
            .map(|(_, a)| a.clone())
    }

    /// The mapped fence page, shared.
    pub(crate) fn fence_arc(&self) -> Arc<SharedFence> {
        self.fence.clone()
    }
}
