//! The client's side of the same-host shared-memory transport: map a local service's pools (memfds
//! received over its shm socket) and copy into and out of them directly.

use std::time::Duration;

use mmc_controlplane::msg::{ServiceAddr, ShmHello};
use mmc_controlplane::{wire, Error, Result};
use mmc_hal::Arena;
use rkyv::util::AlignedVec;

use crate::local::shm_server;

/// A same-host local service's pools, mapped into this process.
pub(crate) struct ShmMap {
    pub(crate) incarnation: u64,
    segments: Vec<(u32, Arena)>,
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
        if hello.incarnation != addr.incarnation || hello.segments.len() != fds.len() {
            return Err(unreachable(format!(
                "stale or malformed hand-over (incarnation {} for {}, {} segments for {} descriptors)",
                hello.incarnation,
                addr.incarnation,
                hello.segments.len(),
                fds.len()
            )));
        }
        let mut segments = Vec::with_capacity(fds.len());
        for ((segment, len), fd) in hello.segments.into_iter().zip(fds) {
            let name = format!("rank{}-segment{segment}", addr.rank);
            let arena = Arena::from_fd(&name, fd, len).map_err(|e| unreachable(e.to_string()))?;
            segments.push((segment, arena));
        }
        tracing::debug!(
            rank = addr.rank,
            segments = segments.len(),
            "mapped a same-host local service's pools"
        );
        Ok(ShmMap {
            incarnation: hello.incarnation,
            segments,
            stream,
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
            .map(|(_, a)| a)
    }
}
