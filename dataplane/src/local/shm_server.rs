//! The local service's shared-memory endpoint: a Unix socket (abstract namespace) where a client on
//! the same host receives the pools' memfds and the segment ids they back. The client then maps
//! the pools and copies into and out of them itself: no socket, no copy in this service.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mmc_controlplane::msg::ShmHello;
use mmc_controlplane::wire;
use mmc_core::fence::FENCE_PAGE_BYTES;
use mmc_core::local::Membership;
use mmc_hal::device::IpcHandle;
use rkyv::util::AlignedVec;
use tracing::{debug, warn};

use super::data_server::CONNS_MAX;
use super::Inner;

/// Bind a fresh abstract socket; returns it and its endpoint string (`@name`).
pub(super) fn bind() -> std::io::Result<(UnixListener, String)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("mmc-shm-{}-{nanos:08x}", std::process::id());
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    Ok((listener, format!("@{name}")))
}

/// Connect to an endpoint made by [`bind`].
pub(crate) fn connect(endpoint: &str, timeout: Duration) -> std::io::Result<UnixStream> {
    let name = endpoint.strip_prefix('@').ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an abstract socket name",
        )
    })?;
    let stream = UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    stream.set_read_timeout(Some(timeout))?;
    Ok(stream)
}

/// The hello for membership `m`, and per pool the descriptor a device pool was exported as (if
/// any). `None` (logged) when a device pool cannot be exported: the client then uses TCP.
fn hello(inner: &Inner, m: &Membership) -> Option<(ShmHello, Vec<Option<OwnedFd>>)> {
    let mut devices = Vec::with_capacity(inner.pools.len());
    let mut handles = Vec::with_capacity(inner.pools.len());
    let mut exported = Vec::with_capacity(inner.pools.len());
    let mut backend = "none";
    for p in &inner.pools {
        let Some(d) = p.mem.device() else {
            devices.push(-1);
            handles.push(Vec::new());
            exported.push(None);
            continue;
        };
        backend = d.dev.kind().name();
        devices.push(d.device as i32);
        match d.dev.export(d.addr) {
            Ok(IpcHandle::Fd { fd, .. }) => {
                handles.push(Vec::new());
                exported.push(Some(fd));
            }
            Ok(IpcHandle::Opaque { bytes, .. }) => {
                handles.push(bytes);
                exported.push(None);
            }
            Err(e) => {
                warn!(error = %e, "device pool not exported: same-host clients use TCP");
                return None;
            }
        }
    }
    let hello = ShmHello {
        rank: m.rank,
        incarnation: m.incarnation,
        segments: m
            .segments
            .iter()
            .zip(&inner.pools)
            .map(|(s, p)| (*s, p.mem.len()))
            .collect(),
        devices,
        handles,
        device_backend: backend.to_string(),
        fence_bytes: FENCE_PAGE_BYTES,
    };
    Some((hello, exported))
}

/// True while the peer of `stream` has not closed it (a non-blocking peek).
pub(crate) fn peer_alive(stream: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    match rustix::net::recv(
        stream,
        &mut b,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    ) {
        Ok((0, _)) => false,
        Ok(_) => true,
        Err(e) => e == rustix::io::Errno::AGAIN,
    }
}

pub(super) fn accept_loop(listener: UnixListener, inner: Arc<Inner>) {
    let mut payload = AlignedVec::new();
    // Connections stay open while their client lives: a client sees this service die as the end of
    // its connection, and stops using the mapped pools.
    let mut open: Vec<UnixStream> = Vec::new();
    for stream in listener.incoming() {
        if inner.stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        open.retain(peer_alive);
        inner
            .stats
            .shm_clients
            .store(open.len() as u64, Ordering::Relaxed);
        if open.len() >= CONNS_MAX {
            warn!(
                open = open.len(),
                limit = CONNS_MAX,
                "shm connection refused: too many open connections"
            );
            continue;
        }
        // While registering again there is nothing to hand over: the client falls back to TCP,
        // which refuses the old incarnation too.
        let Some(m) = inner.membership() else {
            debug!("shm hello refused: registering again");
            continue;
        };
        let Some((hello, exported)) = hello(&inner, &m) else {
            continue;
        };
        if let Err(e) = wire::encode_payload(&hello, &mut payload) {
            warn!(error = %e, "shm hello not encoded");
            continue;
        }
        // In pool order: a host pool's memfd, or a device pool's exported descriptor.
        let mut fds: Vec<BorrowedFd<'_>> = inner
            .pools
            .iter()
            .zip(&exported)
            .filter_map(|(p, e)| match (p.mem.arena(), e) {
                (Some(a), _) => Some(a.as_fd()),
                (None, Some(fd)) => Some(fd.as_fd()),
                (None, None) => None,
            })
            .collect();
        fds.push(inner.fence.as_fd());
        match mmc_hal::fdpass::send_with_fds(&stream, &payload, &fds) {
            Ok(()) => {
                debug!(rank = m.rank, "pools handed to a same-host client");
                open.push(stream);
                inner.stats.shm_handovers.fetch_add(1, Ordering::Relaxed);
                inner
                    .stats
                    .shm_clients
                    .store(open.len() as u64, Ordering::Relaxed);
            }
            Err(e) => warn!(error = %e, "handing the pools over failed"),
        }
    }
}
