//! Shard-per-core data loops (the alternative to a thread per connection): a fixed set of shard
//! threads, each owning its connections and their buffers, fed new connections through a bounded
//! crossbeam queue. A shard waits for readable connections with a poller, mio (epoll) or io_uring
//! (`POLL_ADD`), chosen in config, blocking or, in busy-poll mode (`busy_poll_us` > 0), spinning on
//! zero-timeout waits. A ready connection's requests are then served to completion with a blocking
//! socket, so that large transfers use plain vectored reads and writes straight into and out of the
//! pools.

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use mmc_hal::uring::UringPoller;
use mmc_tls::Stream;
use tracing::{debug, warn};

use super::data_server::{cut_off, serve_one, Conn, CONNS_MAX};
use super::Inner;
use mmc_config::DataPoller;

/// The token of a shard's wake-up source.
const WAKE: usize = usize::MAX;
/// Connections handed to one shard and not yet picked up.
const NEW_CONNS_MAX: usize = 1024;
/// How often a blocking shard looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// Polls an io_uring shard can arm between two waits.
const URING_ENTRIES: u32 = 256;

/// How the acceptor wakes a shard.
#[derive(Clone)]
enum Wake {
    Mio(Arc<Waker>),
    EventFd(Arc<OwnedFd>),
}

/// The acceptor's handle on one shard.
#[derive(Clone)]
pub(super) struct Shard {
    queue: Arc<ArrayQueue<Stream>>,
    wake: Wake,
}

impl Shard {
    /// Hand a new connection to this shard; gives it back when the shard's queue is full.
    pub(super) fn hand(&self, stream: Stream) -> Result<(), Stream> {
        self.queue.push(stream)?;
        self.wake();
        Ok(())
    }

    pub(super) fn wake(&self) {
        match &self.wake {
            Wake::Mio(w) => {
                let _ = w.wake();
            }
            Wake::EventFd(fd) => {
                let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
            }
        }
    }
}

/// What a shard waits with.
trait Readiness: Send {
    /// Watch `fd` for readability under `token` (first time).
    fn add(&mut self, fd: &TcpStream, token: usize) -> std::io::Result<()>;
    /// Watch it again after its requests were served (one-shot pollers).
    fn rearm(&mut self, fd: &TcpStream, token: usize) -> std::io::Result<()>;
    fn remove(&mut self, fd: &TcpStream);
    /// Tokens that became ready (including [`WAKE`]) within `timeout`.
    fn wait(&mut self, timeout: Duration, ready: &mut Vec<usize>) -> std::io::Result<()>;
    /// Consume a wake-up.
    fn woken(&mut self) -> std::io::Result<()>;
}

struct MioReadiness {
    poll: Poll,
    events: Events,
}

impl Readiness for MioReadiness {
    fn add(&mut self, s: &TcpStream, token: usize) -> std::io::Result<()> {
        let fd = s.as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
    }

    fn rearm(&mut self, _: &TcpStream, _: usize) -> std::io::Result<()> {
        Ok(()) // edge-triggered: stays registered
    }

    fn remove(&mut self, s: &TcpStream) {
        let fd = s.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
    }

    fn wait(&mut self, timeout: Duration, ready: &mut Vec<usize>) -> std::io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        ready.extend(self.events.iter().map(|e| e.token().0));
        Ok(())
    }

    fn woken(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct UringReadiness {
    ring: UringPoller,
    eventfd: Arc<OwnedFd>,
    tokens: Vec<u64>,
}

impl Readiness for UringReadiness {
    fn add(&mut self, s: &TcpStream, token: usize) -> std::io::Result<()> {
        self.ring.arm(s.as_fd(), token as u64)
    }

    fn rearm(&mut self, s: &TcpStream, token: usize) -> std::io::Result<()> {
        self.ring.arm(s.as_fd(), token as u64)
    }

    fn remove(&mut self, _: &TcpStream) {
        // A poll still armed completes later with a token no connection has: it is ignored.
    }

    fn wait(&mut self, timeout: Duration, ready: &mut Vec<usize>) -> std::io::Result<()> {
        self.tokens.clear();
        self.ring.wait(timeout, &mut self.tokens)?;
        ready.extend(self.tokens.iter().map(|t| *t as usize));
        Ok(())
    }

    fn woken(&mut self) -> std::io::Result<()> {
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&*self.eventfd, &mut counter);
        self.ring.arm(self.eventfd.as_fd(), WAKE as u64)
    }
}

/// Start `count` shard threads waiting with `poller`.
pub(super) fn start(
    inner: &Arc<Inner>,
    count: usize,
    poller: DataPoller,
) -> std::io::Result<(Vec<Shard>, Vec<JoinHandle<()>>)> {
    assert!(count > 0);
    let mut shards = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count);
    // The shards share the server's connection limit.
    let conns_max = (CONNS_MAX / count).max(1);
    for i in 0..count {
        let queue = Arc::new(ArrayQueue::new(NEW_CONNS_MAX));
        let (readiness, wake): (Box<dyn Readiness>, Wake) = match poller {
            DataPoller::Mio => {
                let poll = Poll::new()?;
                let waker = Arc::new(Waker::new(poll.registry(), Token(WAKE))?);
                let r = MioReadiness {
                    poll,
                    events: Events::with_capacity(256),
                };
                (Box::new(r), Wake::Mio(waker))
            }
            DataPoller::IoUring => {
                let eventfd = Arc::new(rustix::event::eventfd(
                    0,
                    rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
                )?);
                let mut ring = UringPoller::new(URING_ENTRIES)?;
                ring.arm(eventfd.as_fd(), WAKE as u64)?;
                let r = UringReadiness {
                    ring,
                    eventfd: eventfd.clone(),
                    tokens: Vec::with_capacity(256),
                };
                (Box::new(r), Wake::EventFd(eventfd))
            }
        };
        let (q, inner) = (queue.clone(), inner.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("mmc-local-shard-{i}"))
                .spawn(move || shard_loop(readiness, &q, &inner, conns_max))?,
        );
        shards.push(Shard { queue, wake });
    }
    Ok((shards, threads))
}

/// Whether bytes are waiting on `s`: `Some(true)` yes, `Some(false)` no, `None` closed or broken.
fn has_bytes(s: &TcpStream) -> Option<bool> {
    let mut b = [0u8; 1];
    match rustix::net::recv(
        s,
        &mut b,
        rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
    ) {
        Ok((0, _)) => None,
        Ok(_) => Some(true),
        Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Some(false),
        Err(_) => None,
    }
}

fn shard_loop(
    mut readiness: Box<dyn Readiness>,
    queue: &ArrayQueue<Stream>,
    inner: &Inner,
    conns_max: usize,
) {
    let mut conns: HashMap<usize, (Stream, Conn)> = HashMap::new();
    let mut ready: Vec<usize> = Vec::with_capacity(256);
    let mut next_token = 0usize;
    let timeout = if inner.busy_poll.is_zero() {
        STOP_CHECK
    } else {
        Duration::ZERO
    };
    while !inner.stop.load(Ordering::Acquire) {
        ready.clear();
        if let Err(e) = readiness.wait(timeout, &mut ready) {
            warn!(error = %e, "shard wait failed");
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        // By index: a new TLS connection whose first request came with its handshake is already
        // readable inside its session (not on its socket), and is appended to `ready`.
        let mut next = 0;
        while next < ready.len() {
            let token = ready[next];
            next += 1;
            if token == WAKE {
                if let Err(e) = readiness.woken() {
                    warn!(error = %e, "shard wake-up not re-armed");
                }
                while let Some(mut stream) = queue.pop() {
                    if conns.len() >= conns_max {
                        warn!(
                            peer = ?stream.tcp().peer_addr().ok(),
                            open = conns.len(),
                            limit = conns_max,
                            "data connection refused: too many open connections on this shard"
                        );
                        inner.stats.conns_closed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let token = next_token;
                    next_token = (next_token + 1) % (WAKE - 1);
                    let added = stream
                        .tcp()
                        .set_nonblocking(true)
                        .and_then(|_| readiness.add(stream.tcp(), token));
                    match added {
                        Ok(()) => {
                            if stream.has_buffered() {
                                ready.push(token);
                            }
                            conns.insert(token, (stream, Conn::new()));
                        }
                        Err(e) => {
                            inner.stats.conns_closed.fetch_add(1, Ordering::Relaxed);
                            warn!(error = %e, "shard could not take a connection")
                        }
                    }
                }
                continue;
            }
            // Serve every request that is ready, then wait for the connection again.
            let Some((stream, conn)) = conns.get_mut(&token) else {
                continue; // a stale completion of a connection already gone
            };
            let mut keep = true;
            loop {
                let buffered = stream.has_buffered();
                match has_bytes(stream.tcp()) {
                    _ if buffered => {}
                    Some(true) => {}
                    Some(false) => break,
                    None => {
                        keep = false;
                        break;
                    }
                }
                let served = stream
                    .tcp()
                    .set_nonblocking(false)
                    .map_err(mmc_controlplane::wire::WireError::Io)
                    .and_then(|_| serve_one(stream, inner, conn));
                if let Err(e) = served.and_then(|_| Ok(stream.tcp().set_nonblocking(true)?)) {
                    match e {
                        mmc_controlplane::wire::WireError::Closed => {
                            debug!("data connection closed")
                        }
                        e => cut_off(stream.tcp().peer_addr().ok(), &e),
                    }
                    keep = false;
                    break;
                }
            }
            if keep {
                if let Err(e) = readiness.rearm(stream.tcp(), token) {
                    warn!(error = %e, "data connection not re-armed: closing it");
                    keep = false;
                }
            }
            if !keep {
                if let Some((stream, _)) = conns.remove(&token) {
                    readiness.remove(stream.tcp());
                    inner.stats.conns_closed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
