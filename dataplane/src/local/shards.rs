//! Shard-per-core data loops (the alternative to a thread per connection): a fixed set of shard
//! threads, each owning its connections and their buffers, fed new connections through a bounded
//! crossbeam queue and woken by a mio waker. A shard waits for requests with mio (blocking mode) or
//! spins on a zero-timeout poll (busy-poll mode, when `busy_poll_us` > 0); a ready connection's
//! request is then served to completion with a blocking socket, so that large transfers use plain
//! vectored reads and writes straight into and out of the pools.

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use super::data_server::{serve_one, Conn};
use super::Inner;

const WAKER: Token = Token(usize::MAX);
/// Connections handed to one shard and not yet picked up.
const NEW_CONNS_MAX: usize = 1024;
/// How often a blocking shard looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// The acceptor's handle on one shard.
pub(super) struct Shard {
    queue: Arc<ArrayQueue<TcpStream>>,
    waker: Arc<Waker>,
}

impl Shard {
    /// Hand a new connection to this shard; gives it back when the shard's queue is full.
    pub(super) fn hand(&self, stream: TcpStream) -> Result<(), TcpStream> {
        self.queue.push(stream)?;
        let _ = self.waker.wake();
        Ok(())
    }

    pub(super) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// Start `count` shard threads.
pub(super) fn start(
    inner: &Arc<Inner>,
    count: usize,
) -> std::io::Result<(Vec<Shard>, Vec<JoinHandle<()>>)> {
    assert!(count > 0);
    let mut shards = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count);
    for i in 0..count {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let queue = Arc::new(ArrayQueue::new(NEW_CONNS_MAX));
        let (q, inner) = (queue.clone(), inner.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("mmc-local-shard-{i}"))
                .spawn(move || shard_loop(poll, &q, &inner))?,
        );
        shards.push(Shard { queue, waker });
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

fn shard_loop(mut poll: Poll, queue: &ArrayQueue<TcpStream>, inner: &Inner) {
    let mut events = Events::with_capacity(256);
    let mut conns: HashMap<usize, (TcpStream, Conn)> = HashMap::new();
    let mut next_token = 0usize;
    let timeout = if inner.busy_poll.is_zero() {
        STOP_CHECK
    } else {
        Duration::ZERO
    };
    while !inner.stop.load(Ordering::Acquire) {
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                warn!(error = %e, "shard poll failed");
            }
            continue;
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                while let Some(stream) = queue.pop() {
                    let token = next_token;
                    next_token = next_token.wrapping_add(1) % (usize::MAX - 1);
                    let fd = stream.as_raw_fd();
                    let registered = stream.set_nonblocking(true).and_then(|_| {
                        poll.registry().register(
                            &mut SourceFd(&fd),
                            Token(token),
                            Interest::READABLE,
                        )
                    });
                    match registered {
                        Ok(()) => {
                            conns.insert(token, (stream, Conn::new()));
                        }
                        Err(e) => warn!(error = %e, "shard could not take a connection"),
                    }
                }
                continue;
            }
            let token = ev.token().0;
            // Edge-triggered: serve every request that is ready, then wait again.
            let mut keep = true;
            if let Some((stream, conn)) = conns.get_mut(&token) {
                loop {
                    match has_bytes(stream) {
                        Some(true) => {}
                        Some(false) => break,
                        None => {
                            keep = false;
                            break;
                        }
                    }
                    let served = stream
                        .set_nonblocking(false)
                        .map_err(mmc_controlplane::wire::WireError::Io)
                        .and_then(|_| serve_one(stream, inner, conn));
                    if let Err(e) = served.and_then(|_| Ok(stream.set_nonblocking(true)?)) {
                        debug!(error = %e, "data connection closed");
                        keep = false;
                        break;
                    }
                }
            }
            if !keep {
                if let Some((stream, _)) = conns.remove(&token) {
                    let fd = stream.as_raw_fd();
                    let _ = poll.registry().deregister(&mut SourceFd(&fd));
                }
            }
        }
    }
}
