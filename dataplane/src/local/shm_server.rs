//! The local service's shared-memory endpoint: a Unix socket where a client on the same host
//! receives the pools' memfds and the segment ids they back. The client then maps the pools and
//! copies into and out of them itself: no socket, no copy in this service.
//!
//! Who gets the descriptors: the socket is a file (mode 0600) in a private runtime folder
//! (`$XDG_RUNTIME_DIR/mmc`, else `/tmp/mmc-UID`, mode 0700, refused if another user owns it or
//! others can enter it); a connecting peer must run as this service's user (`SO_PEERCRED`) and
//! must send, first thing, the secret of this service's current incarnation (32 random bytes).
//! A fresh secret is drawn for every registration the service sends (at start, and each time it
//! registers again: after a meta restart, a missed heartbeat, ...), so each incarnation has its
//! own and an earlier one is refused from the moment the next registration leaves. The secret
//! travels only inside the endpoint string the service registers with the meta service
//! (`PATH#HEX`), which the meta service hands to its clients with the incarnation: with TLS on,
//! only peers that passed the mutual TLS handshake learn it. A peer that fails either check is
//! logged and dropped, and a client that cannot map a service uses TCP. (Abstract sockets, used
//! before, have no permissions: any process in the network namespace could connect.)

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mmc_controlplane::msg::{Request, ShmHello};
use mmc_controlplane::wire;
use mmc_core::fence::FENCE_PAGE_BYTES;
use mmc_core::local::Membership;
use mmc_hal::device::IpcHandle;
use rkyv::util::AlignedVec;
use tracing::{debug, warn};

use super::data_server::CONNS_MAX;
use super::Inner;

/// Bytes of the secret a peer must send.
pub(crate) const SECRET_BYTES: usize = 32;
/// How long a connecting peer has to send the secret.
const SECRET_TIMEOUT: Duration = Duration::from_millis(500);

/// A bound shm endpoint: the listener and its socket file.
pub(super) struct Bound {
    pub(super) listener: UnixListener,
    pub(super) path: PathBuf,
}

/// The secret a same-host peer must send: the one in the last registration this service sent
/// (so, once registered, that of its current incarnation).
pub(crate) struct Secret {
    path: PathBuf,
    current: Mutex<[u8; SECRET_BYTES]>,
}

impl Secret {
    fn new(path: PathBuf) -> std::io::Result<Secret> {
        Ok(Secret {
            path,
            current: Mutex::new(random_secret()?),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [u8; SECRET_BYTES]> {
        // A plain array: a panic elsewhere cannot leave it half-written.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint string with the current secret: `PATH#HEX`.
    pub(crate) fn endpoint(&self) -> String {
        format!("{}#{}", self.path.display(), hex(&*self.lock()))
    }

    /// Draw a new secret (the old one is refused from now on) and return the new endpoint
    /// string. Fails only if /dev/urandom cannot be read: then the old secret stays.
    fn renew(&self) -> std::io::Result<String> {
        *self.lock() = random_secret()?;
        Ok(self.endpoint())
    }

    fn matches(&self, got: &[u8]) -> bool {
        same(got, &*self.lock())
    }

    /// Put the shm endpoint with this incarnation's secret into a registration about to be sent:
    /// a new secret for a `Register` and for the first chunk of a `Rejoin` (its later chunks must
    /// carry the same registration). Other requests, and registrations that offer no shared
    /// memory, are left alone.
    pub(crate) fn stamp(&self, request: &mut Request) {
        let (register, renew) = match request {
            Request::Register(r) => (r, true),
            Request::Rejoin(j) => (&mut j.register, j.chunk == 0),
            _ => return,
        };
        if register.shm_endpoint.is_empty() {
            return;
        }
        register.shm_endpoint = if renew {
            match self.renew() {
                Ok(e) => {
                    debug!("shm secret renewed for the next incarnation");
                    e
                }
                Err(e) => {
                    // Without a fresh secret, offer no shared memory rather than reuse the old.
                    warn!(error = %e, "shm secret not renewed: this incarnation offers no shared memory");
                    String::new()
                }
            }
        } else {
            self.endpoint()
        };
    }
}

/// The private folder for sockets: `$XDG_RUNTIME_DIR/mmc`, else `/tmp/mmc-UID`; created 0700,
/// and refused when it is a link, another user's, or open to others.
fn runtime_dir() -> std::io::Result<PathBuf> {
    let uid = rustix::process::geteuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() && Path::new(&d).is_dir() => Path::new(&d).join("mmc"),
        _ => PathBuf::from(format!("/tmp/mmc-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let m = std::fs::symlink_metadata(&dir)?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a folder of user {uid} closed to others (mode {:o}, owner {})",
                dir.display(),
                m.mode() & 0o7777,
                m.uid()
            ),
        ));
    }
    Ok(dir)
}

/// Remove socket files of services whose process is gone (killed before it could clean up).
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("shm-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn random_secret() -> std::io::Result<[u8; SECRET_BYTES]> {
    let mut s = [0u8; SECRET_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut s)?;
    Ok(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Bind a fresh socket in the runtime folder, and draw a first secret.
pub(super) fn bind() -> std::io::Result<(Bound, Secret)> {
    let dir = runtime_dir()?;
    remove_stale(&dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = dir.join(format!("shm-{}-{nanos:08x}.sock", std::process::id()));
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let secret = Secret::new(path.clone())?;
    Ok((Bound { listener, path }, secret))
}

/// Wake the accept loop of the socket at `path` (it then sees the stop flag).
pub(super) fn wake(path: &Path) {
    if let Ok(s) = UnixStream::connect(path) {
        drop(s);
    }
}

/// Connect to an endpoint made by [`bind`] and send its secret.
pub(crate) fn connect(endpoint: &str, timeout: Duration) -> std::io::Result<UnixStream> {
    let invalid =
        |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string());
    let (path, secret) = endpoint
        .rsplit_once('#')
        .ok_or_else(|| invalid("no secret in the shm endpoint"))?;
    let secret = unhex(secret)
        .filter(|s| s.len() == SECRET_BYTES)
        .ok_or_else(|| invalid("malformed secret in the shm endpoint"))?;
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&secret)?;
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

/// Equal in constant time (the secret's bytes are not revealed by how long a refusal takes).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether the peer on `stream` may have the pools: same user, and it sent the secret. Logs why not.
fn admitted(stream: &mut UnixStream, secret: &Secret) -> bool {
    let cred = match rustix::net::sockopt::socket_peercred(&*stream) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "shm request refused: peer credentials unknown");
            return false;
        }
    };
    let (pid, uid) = (cred.pid.as_raw_nonzero().get(), cred.uid.as_raw());
    let ours = rustix::process::geteuid().as_raw();
    if uid != ours {
        warn!(
            peer_pid = pid,
            peer_uid = uid,
            uid = ours,
            "shm request refused: the peer runs as another user"
        );
        return false;
    }
    let mut got = [0u8; SECRET_BYTES];
    let read = stream
        .set_read_timeout(Some(SECRET_TIMEOUT))
        .and_then(|_| stream.read_exact(&mut got));
    if let Err(e) = read {
        warn!(peer_pid = pid, error = %e, "shm request refused: no secret sent");
        return false;
    }
    if !secret.matches(&got) {
        warn!(
            peer_pid = pid,
            "shm request refused: wrong secret (not this incarnation's: the peer did not learn it \
             from the meta service, or learnt it before the service registered again)"
        );
        return false;
    }
    true
}

pub(super) fn accept_loop(bound: Bound, inner: Arc<Inner>) {
    let Bound { listener, path } = bound;
    let Some(secret) = inner.shm_secret.as_ref() else {
        warn!("shm endpoint without a secret: no shared memory offered");
        return;
    };
    let mut payload = AlignedVec::new();
    // Connections stay open while their client lives: a client sees this service die as the end of
    // its connection, and stops using the mapped pools.
    let mut open: Vec<UnixStream> = Vec::new();
    for stream in listener.incoming() {
        if inner.stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
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
        if !admitted(&mut stream, secret) {
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
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_compare() {
        let s = random_secret().unwrap();
        assert_eq!(unhex(&hex(&s)).unwrap(), s);
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
        assert!(same(&s, &s));
        let mut t = s;
        t[31] ^= 1;
        assert!(!same(&s, &t) && !same(&s, &s[..31]));
    }

    #[test]
    fn each_registration_gets_a_new_secret_and_rejoin_chunks_share_one() {
        use mmc_controlplane::msg::{Register, Rejoin};
        let secret = Secret::new(PathBuf::from("/run/x.sock")).unwrap();
        let register = Register {
            rank: Some(1),
            create_id: 0,
            host: "h".into(),
            data_endpoint: "127.0.0.1:1".into(),
            shm_endpoint: "/run/x.sock#00".into(),
            segments: Vec::new(),
        };
        let endpoint = |r: &Request| match r {
            Request::Register(r) => r.shm_endpoint.clone(),
            Request::Rejoin(j) => j.register.shm_endpoint.clone(),
            _ => unreachable!(),
        };
        let mut seen = Vec::new();
        for _ in 0..3 {
            let mut r = Request::Register(register.clone());
            secret.stamp(&mut r);
            seen.push(endpoint(&r));
        }
        let rejoin = |chunk| {
            Request::Rejoin(Rejoin {
                register: register.clone(),
                previous: 1,
                chunk,
                last: false,
                entries: Vec::new(),
            })
        };
        let (mut first, mut second) = (rejoin(0), rejoin(1));
        secret.stamp(&mut first);
        secret.stamp(&mut second);
        assert_eq!(endpoint(&first), endpoint(&second));
        seen.push(endpoint(&first));
        for (i, e) in seen.iter().enumerate() {
            assert!(e.starts_with("/run/x.sock#"), "{e}");
            assert!(!seen[..i].contains(e), "secret reused: {seen:?}");
        }
        // Only the last one is accepted.
        let current = unhex(seen.last().unwrap().rsplit_once('#').unwrap().1).unwrap();
        let older = unhex(seen[0].rsplit_once('#').unwrap().1).unwrap();
        assert!(secret.matches(&current) && !secret.matches(&older));
        // A registration without shared memory stays without.
        let mut none = Request::Register(Register {
            shm_endpoint: String::new(),
            ..register
        });
        secret.stamp(&mut none);
        assert_eq!(endpoint(&none), "");
    }
}
