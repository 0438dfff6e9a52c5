//! The shm backend: the client's side of the same-host shared-memory transport. Map a local
//! service's pools (memfds received over its shm socket) and its fence page; each job is one
//! memcpy per run between the caller's slices and the mapped pool, inside the service's shared
//! fence word (entered before, checked after), done before `submit` returns. It refuses (by the
//! fence, -3018) a job planned for another incarnation than the mapping's, and (`LinkNotFound`) a
//! segment the mapping lacks; the chooser sends it only same-host ranks it mapped. A host pool's
//! page tables are populated on a background thread from the moment it is mapped
//! (`mmc_hal::Arena::from_fd_populate`; `MMC_SHM_POPULATE=off|read|write`, default read), so first
//! writes into never-used pool space do not each take a page fault.

use std::sync::Arc;
use std::time::Duration;

use mmc_controlplane::msg::{ServiceAddr, ShmHello};
use mmc_controlplane::{wire, Error, Result};
use mmc_core::fence::{Fence, SharedFence, FENCE_PAGE_BYTES};
use mmc_core::transport::{Completions, Job, Transport};
use mmc_hal::{Arena, Populate};
use rkyv::util::AlignedVec;

use crate::local::pool::{DevicePool, PoolMem};
use crate::local::{device_error, shm_server, stale};
use mmc_hal::device::{Batch, IpcHandle};

/// One mapped service, as a backend.
pub(crate) struct Shm<'a>(pub(crate) &'a ShmMap);

impl Transport for Shm<'_> {
    fn submit(&mut self, jobs: Vec<Job<'_>>, done: &mut Completions) {
        let map = self.0;
        super::copy_jobs(jobs, done, map);
    }
}

/// A same-host local service's pools, mapped into this process.
pub(crate) struct ShmMap {
    pub(crate) incarnation: u64,
    segments: Vec<(u32, PoolMem)>,
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
        let with_fd = hello
            .devices
            .iter()
            .zip(&hello.handles)
            .filter(|(d, h)| **d < 0 || h.is_empty())
            .count();
        if hello.incarnation != addr.incarnation
            || hello.devices.len() != hello.segments.len()
            || hello.handles.len() != hello.segments.len()
            || with_fd + 1 != fds.len()
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
        let mut fds = fds.into_iter();
        let populate = Populate::from_env();
        let mut segments = Vec::with_capacity(hello.segments.len());
        for (((segment, len), device), handle) in hello
            .segments
            .into_iter()
            .zip(hello.devices)
            .zip(hello.handles)
        {
            let name = format!("rank{}-segment{segment}", addr.rank);
            let mem = if device < 0 {
                let fd = fds.next().expect("counted above");
                // The service pre-faulted the pool, but this mapping's page tables start
                // empty: populate them in the background (copies need not wait for it).
                PoolMem::Host(Arc::new(
                    Arena::from_fd_populate(&name, fd, len, populate)
                        .map_err(|e| unreachable(e.to_string()))?,
                ))
            } else {
                let handle = if handle.is_empty() {
                    IpcHandle::Fd {
                        fd: fds.next().expect("counted above"),
                        len,
                    }
                } else {
                    IpcHandle::Opaque { bytes: handle, len }
                };
                match import(&hello.device_backend, &handle, device as u32, len) {
                    Ok(pool) => PoolMem::Device(pool),
                    Err(why) => {
                        // This segment goes over TCP (the chooser finds it unmapped).
                        tracing::info!(rank = addr.rank, segment, reason = %why,
                            "same-host device pool not mapped: TCP serves it");
                        continue;
                    }
                }
            };
            segments.push((segment, mem));
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
        self.pool_of(f)?
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
        self.pool_of(f)?
            .copy_out(offset, dst)
            .map_err(|e| Error::InvalidParam(e.to_string()))?;
        guard
            .still(f.incarnation)
            .map_err(|s| stale(&self.endpoint, s))
    }

    /// The pool of `f.segment`, which must be one of this mapping's incarnation.
    fn pool_of(&self, f: Fence) -> Result<&PoolMem> {
        if f.incarnation != self.incarnation {
            return Err(Error::LocalUnreachable {
                endpoint: self.endpoint.clone(),
                reason: format!(
                    "fence: planned for incarnation {}, the pools were mapped under {}",
                    f.incarnation, self.incarnation
                ),
            });
        }
        self.pool(f.segment).ok_or_else(|| Error::Remote {
            code: mmc_controlplane::Code::LinkNotFound,
            context: format!("segment {} is not in the mapped pools", f.segment),
        })
    }

    /// Device copies between `f.segment` and device memory, one synchronization, inside the
    /// service's epoch fence.
    pub(crate) fn dev_copies(
        &self,
        f: Fence,
        write: bool,
        items: &[(u64, u64, u64)],
    ) -> Result<()> {
        let guard = self
            .fence
            .enter(f.incarnation)
            .map_err(|s| stale(&self.endpoint, s))?;
        let pool = self.pool_of(f)?;
        let mut batch = Batch::new();
        for &(offset, addr, len) in items {
            pool.dev_copy(&mut batch, offset, addr, len, write)
                .map_err(device_error)?;
        }
        batch.run_active().map_err(device_error)?;
        guard
            .still(f.incarnation)
            .map_err(|s| stale(&self.endpoint, s))
    }

    /// False once the service closed its end (it stopped or died).
    pub(crate) fn alive(&self) -> bool {
        shm_server::peer_alive(&self.stream)
    }

    /// Host pools of this mapping whose background populate still runs.
    pub(crate) fn pools_populating(&self) -> usize {
        self.segments
            .iter()
            .filter(|(_, m)| matches!(m, PoolMem::Host(a) if !a.populated()))
            .count()
    }

    pub(crate) fn pool(&self, segment: u32) -> Option<&PoolMem> {
        self.segments
            .iter()
            .find(|(s, _)| *s == segment)
            .map(|(_, a)| a)
    }

    /// The mapped pool of `segment`, shared (the simulated NIC's view of the service's MRs).
    pub(crate) fn arena_arc(&self, segment: u32) -> Option<Arc<Arena>> {
        self.pool(segment)?.host_arc().cloned()
    }

    /// The mapped fence page, shared.
    pub(crate) fn fence_arc(&self) -> Arc<SharedFence> {
        self.fence.clone()
    }
}

/// Import a same-host service's device pool, if this process runs the same device backend.
fn import(
    backend: &str,
    handle: &IpcHandle,
    device: u32,
    len: u64,
) -> std::result::Result<DevicePool, String> {
    let dev = mmc_hal::device::active();
    if dev.kind().name() != backend {
        return Err(format!(
            "the pool is device memory of the {backend} backend; this process runs {}",
            dev.kind()
        ));
    }
    DevicePool::import(dev, handle, device, len).map_err(|e| e.to_string())
}

impl super::PoolCopies for ShmMap {
    fn copy_in(&self, f: Fence, offset: u64, src: &[u8]) -> Result<()> {
        ShmMap::copy_in(self, f, offset, src)
    }

    fn copy_out(&self, f: Fence, offset: u64, dst: &mut [u8]) -> Result<()> {
        ShmMap::copy_out(self, f, offset, dst)
    }

    fn dev_copies(&self, f: Fence, write: bool, items: &[(u64, u64, u64)]) -> Result<()> {
        ShmMap::dev_copies(self, f, write, items)
    }
}
