//! The local service's data endpoint: scatter-gather reads and writes against the pools. Raw bytes
//! go straight between the socket and the pool with vectored I/O; buffers are per connection and
//! reused, so the steady state allocates nothing per request.
//!
//! Every request is fenced: it names the (rank, incarnation) it was planned for; the copy enters the
//! service's epoch fence with that incarnation, the core checks each piece's segment belongs to it,
//! and after the copy the fence must still hold (a read then says so after its bytes).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mmc_controlplane::msg::{ArchivedDataRequest, ArchivedPiece, DataReply};
use mmc_controlplane::wire::{self, Kind, WireError};
use mmc_controlplane::Code;
use mmc_core::local::{LocalCore, Refused};
use mmc_tls::{secure, Stream};
use rkyv::util::AlignedVec;
use tracing::{debug, warn};

use super::metrics::{Dir, Transport};
use super::shards::Shard;
use super::Inner;

/// Open data connections (served by their own threads, or by the shards together); more are
/// refused until some close.
pub(crate) const CONNS_MAX: usize = 4096;

/// Most pieces one request may carry (a batch of 16384 keys, one piece each, fits).
pub(crate) const PIECES_MAX: usize = 65536;

/// Accept data connections: each goes to the next shard when there are shards, else to a thread
/// of its own. With TLS on, each connection's handshake runs on a thread of its own first (so a
/// slow or hostile peer holds up neither the acceptor nor a shard); a peer that fails it is
/// refused and logged with its address.
pub(super) fn accept_loop(listener: TcpListener, inner: Arc<Inner>, shards: Vec<Shard>) {
    let mut threads = Vec::new();
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        if inner.stop.load(Ordering::Acquire) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let peer = stream.peer_addr().ok();
        // A peer may idle between requests, but not stall in one nor stop taking its replies.
        let idle = Some(std::time::Duration::from_millis(wire::FRAME_IDLE_MS));
        let set = stream.set_nodelay(true).and_then(|_| {
            stream.set_read_timeout(idle)?;
            stream.set_write_timeout(idle)
        });
        if let Err(e) = set {
            warn!(?peer, error = %e, "data connection refused: socket options not set");
            continue;
        }
        inner.stats.conns_opened.fetch_add(1, Ordering::Relaxed);
        threads.retain(|t: &std::thread::JoinHandle<()>| !t.is_finished());
        if !shards.is_empty() {
            next_id += 1;
            let shard = shards[(next_id % shards.len() as u64) as usize].clone();
            let counted = inner.clone();
            let hand = move |stream: Stream| {
                if shard.hand(stream).is_err() {
                    counted.stats.conns_closed.fetch_add(1, Ordering::Relaxed);
                    warn!(?peer, "data connection refused: shard queue full");
                }
            };
            match inner.tls.clone() {
                None => hand(Stream::Plain(stream)),
                Some(_) if threads.len() >= CONNS_MAX => {
                    inner.stats.conns_closed.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        ?peer,
                        limit = CONNS_MAX,
                        "data connection refused: too many TLS handshakes in flight"
                    )
                }
                Some(tls) => threads.push({
                    let counted_tls = inner.clone();
                    std::thread::Builder::new()
                        .name("mmc-local-handshake".into())
                        .spawn(
                            move || match secure(stream, Some(&tls), peer, idle, "data") {
                                Some(s) => hand(s),
                                None => {
                                    counted_tls
                                        .stats
                                        .conns_closed
                                        .fetch_add(1, Ordering::Relaxed);
                                }
                            },
                        )
                        .expect("spawn a handshake thread")
                }),
            }
            continue;
        }
        let open = inner
            .conns
            .lock()
            .expect("data connections lock poisoned")
            .len();
        if open >= CONNS_MAX {
            warn!(
                ?peer,
                open,
                limit = CONNS_MAX,
                "data connection refused: too many open connections"
            );
            inner.stats.conns_closed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        next_id += 1;
        let id = next_id;
        if let Ok(c) = stream.try_clone() {
            inner
                .conns
                .lock()
                .expect("data connections lock poisoned")
                .insert(id, c);
        }
        let i = inner.clone();
        threads.push(
            std::thread::Builder::new()
                .name("mmc-local-conn".into())
                .spawn(move || {
                    if let Some(stream) = secure(stream, i.tls.as_deref(), peer, idle, "data") {
                        match serve(stream, &i) {
                            Ok(()) | Err(WireError::Closed) => {
                                debug!(?peer, "data connection closed")
                            }
                            Err(e) => cut_off(peer, &e),
                        }
                    }
                    // Dropping the registry's clone closes the socket: the peer sees the end.
                    i.conns
                        .lock()
                        .expect("data connections lock poisoned")
                        .remove(&id);
                    i.stats.conns_closed.fetch_add(1, Ordering::Relaxed);
                })
                .expect("spawn a data connection thread"),
        );
    }
    for shard in &shards {
        shard.wake();
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Per-connection state, reused across requests.
pub(super) struct Conn {
    payload: AlignedVec,
    reply: AlignedVec,
    /// (pool index, offset, len) of the current request, in order.
    ranges: Vec<(usize, u64, u64)>,
    runs: Vec<(u64, u64)>,
    /// Staging for TLS: decrypted bytes on their way into the pool, pool bytes on their way to be
    /// encrypted (empty until a TLS connection moves bytes; plain connections use the socket).
    staging: Vec<u8>,
}

/// Bytes staged per copy step of a TLS transfer.
const STAGING_BYTES: usize = 256 << 10;

impl Conn {
    pub(super) fn new() -> Conn {
        Conn {
            payload: AlignedVec::new(),
            reply: AlignedVec::new(),
            ranges: Vec::new(),
            runs: Vec::new(),
            staging: Vec::new(),
        }
    }
}

/// Log why a data connection was cut off, with the limit it broke.
pub(super) fn cut_off(peer: Option<std::net::SocketAddr>, e: &WireError) {
    if e.is_timeout() {
        warn!(
            ?peer,
            error = %e,
            limit_ms = wire::FRAME_IDLE_MS,
            "data connection cut off: stalled mid-request or not reading"
        );
    } else {
        warn!(?peer, error = %e, "data connection cut off");
    }
}

fn serve(mut stream: Stream, inner: &Inner) -> Result<(), WireError> {
    let mut c = Conn::new();
    loop {
        if !inner.busy_poll.is_zero() && !stream.has_buffered() {
            wire::spin_until_readable(&stream, inner.busy_poll);
        }
        serve_one(&mut stream, inner, &mut c)?;
    }
}

/// Read one request from `stream` and answer it, moving its bytes between the socket and the pool.
/// Returns at once when no request began within the socket's read timeout.
pub(super) fn serve_one(stream: &mut Stream, inner: &Inner, c: &mut Conn) -> Result<(), WireError> {
    let Some(header) = wire::read_request(&mut *stream, &mut c.payload)? else {
        return Ok(()); // idle between requests
    };
    let started = std::time::Instant::now();
    if header.kind != Kind::DataRequest {
        return Err(WireError::Payload(format!(
            "expected a data request, got {:?}",
            header.kind
        )));
    }
    // Validated in place, not deserialized: the request costs no allocation.
    let req = rkyv::access::<ArchivedDataRequest, rkyv::rancor::Error>(&c.payload)
        .map_err(|e| WireError::Payload(e.to_string()))?;
    let (write, rank, incarnation, pieces) = match req {
        ArchivedDataRequest::Write {
            rank,
            incarnation,
            pieces,
        } => (
            true,
            rank.to_native(),
            incarnation.to_native(),
            pieces.as_slice(),
        ),
        ArchivedDataRequest::Read {
            rank,
            incarnation,
            pieces,
        } => (
            false,
            rank.to_native(),
            incarnation.to_native(),
            pieces.as_slice(),
        ),
        ArchivedDataRequest::RdmaConnect {
            rank,
            incarnation,
            peer,
        } => {
            if header.raw_len != 0 {
                return Err(WireError::Payload(
                    "an RDMA connection request carries no raw bytes".into(),
                ));
            }
            let args = (rank.to_native(), incarnation.to_native(), peer);
            return super::rdma_server::serve(stream, inner, &mut c.reply, header.req_id, args);
        }
    };
    // Entered before the checks, left after the copy: a re-registration waits for this copy.
    let guard = match incarnation {
        0 => Err((Code::NotConnectLocal, "fence: incarnation 0".to_string())),
        _ => inner
            .fence
            .enter(incarnation)
            .map_err(|s| (Code::NotConnectLocal, s.to_string())),
    };
    let dir = if write { Dir::Write } else { Dir::Read };
    let total = guard.as_ref().map_err(|e| e.clone()).and_then(|_| {
        match resolve(inner, rank, incarnation, pieces, &mut c.ranges) {
            Ok(total) if write && total != header.raw_len => Err((
                Code::InvalidParam,
                format!(
                    "pieces add up to {total} bytes but {} follow",
                    header.raw_len
                ),
            )),
            other => other,
        }
    });
    match (write, total) {
        (true, Ok(_)) => {
            fill(inner, &c.ranges, &mut c.runs, &mut c.staging, &mut *stream)?;
            // A write that crossed a re-registration (only after a drain that timed out) may have
            // landed in space the new incarnation placed: the put fails, its space is never
            // committed.
            let held = guard.as_ref().map(|g| g.still(incarnation));
            let held = matches!(held, Ok(Ok(())));
            reply_fence(
                stream,
                &mut c.reply,
                header.req_id,
                held,
                (rank, incarnation),
                "write",
            )?;
            record(inner, dir, held, header.raw_len, started);
        }
        (true, Err((code, why))) => {
            warn!(code = code.as_i32(), why, "write refused");
            discard(&mut *stream, header.raw_len)?;
            reply(&mut *stream, &mut c.reply, header.req_id, code, &why, 0)?;
            let took = started.elapsed();
            inner
                .stats
                .record(Transport::Tcp, dir, code.as_i32(), 0, took);
        }
        (false, Ok(total)) => {
            reply(
                &mut *stream,
                &mut c.reply,
                header.req_id,
                Code::Ok,
                "",
                total,
            )?;
            drain(inner, &c.ranges, &mut c.runs, &mut c.staging, &mut *stream)?;
            // The bytes are sent; this says whether they are the object's.
            let held = guard.as_ref().map(|g| g.still(incarnation));
            let held = matches!(held, Ok(Ok(())));
            reply_fence(
                stream,
                &mut c.reply,
                header.req_id,
                held,
                (rank, incarnation),
                "read",
            )?;
            record(inner, dir, held, total, started);
        }
        (false, Err((code, why))) => {
            warn!(code = code.as_i32(), why, "read refused");
            reply(&mut *stream, &mut c.reply, header.req_id, code, &why, 0)?;
            let took = started.elapsed();
            inner
                .stats
                .record(Transport::Tcp, dir, code.as_i32(), 0, took);
        }
    }
    drop(guard);
    Ok(())
}

/// Map pieces to (pool, offset, len), checking every bound, and that each segment belongs to
/// `rank` at `incarnation`, before a byte moves.
/// Count a served transfer: `held` = the fence held through the copy.
fn record(inner: &Inner, dir: Dir, held: bool, bytes: u64, started: std::time::Instant) {
    let code = if held {
        0
    } else {
        Code::NotConnectLocal.as_i32()
    };
    inner
        .stats
        .record(Transport::Tcp, dir, code, bytes, started.elapsed());
}

fn resolve(
    inner: &Inner,
    rank: u32,
    incarnation: u64,
    pieces: &[ArchivedPiece],
    out: &mut Vec<(usize, u64, u64)>,
) -> Result<u64, (Code, String)> {
    out.clear();
    if pieces.len() > PIECES_MAX {
        return Err((
            Code::InvalidParam,
            format!("{} pieces, the limit is {PIECES_MAX}", pieces.len()),
        ));
    }
    let core = inner
        .core
        .read()
        .expect("local core lock poisoned: a core step panicked");
    let refused = |why: Refused| (why.code(), why.to_string());
    let m = core.check_fence(rank, incarnation).map_err(refused)?;
    let mut total = 0u64;
    for p in pieces {
        let (segment, offset, len) = (
            p.segment.to_native(),
            p.offset.to_native(),
            p.len.to_native(),
        );
        let pool =
            LocalCore::resolve(m, segment, offset, len, &inner.pool_lens).map_err(refused)?;
        debug_assert!(offset + len <= inner.pools[pool].mem.len());
        total += len; // cannot overflow: every piece lies inside a pool of at most 2^63 bytes
        out.push((pool, offset, len));
    }
    Ok(total)
}

/// Group consecutive ranges of the same pool into runs, coalescing adjacent ones, and hand each
/// run to `f`.
fn for_each_run(
    ranges: &[(usize, u64, u64)],
    runs: &mut Vec<(u64, u64)>,
    mut f: impl FnMut(usize, &[(u64, u64)]) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let mut i = 0;
    while i < ranges.len() {
        let pool = ranges[i].0;
        runs.clear();
        while i < ranges.len() && ranges[i].0 == pool {
            let (_, off, len) = ranges[i];
            match runs.last_mut() {
                Some(last) if last.0 + last.1 == off => last.1 += len,
                _ => runs.push((off, len)),
            }
            i += 1;
        }
        f(pool, runs)?;
    }
    Ok(())
}

fn hal(e: mmc_hal::HalError) -> WireError {
    WireError::Io(std::io::Error::other(e.to_string()))
}

/// Socket -> pool. A plain socket reads straight into the pool (vectored); a TLS session
/// decrypts into `staging`, which is then copied into the pool.
fn fill(
    inner: &Inner,
    ranges: &[(usize, u64, u64)],
    runs: &mut Vec<(u64, u64)>,
    staging: &mut Vec<u8>,
    s: &mut Stream,
) -> Result<(), WireError> {
    for_each_run(ranges, runs, |pool, runs| {
        let mem = &inner.pools[pool].mem;
        let Stream::Plain(tcp) = &mut *s else {
            staging.resize(STAGING_BYTES, 0);
            for &(offset, len) in runs {
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(STAGING_BYTES as u64) as usize;
                    s.read_exact(&mut staging[..n])?;
                    mem.copy_in(offset + at, &staging[..n]).map_err(hal)?;
                    at += n as u64;
                }
            }
            return Ok(());
        };
        mem.fill_from(runs, tcp).map_err(hal)
    })
}

/// Pool -> socket: straight from the pool on a plain socket, through `staging` for TLS.
fn drain(
    inner: &Inner,
    ranges: &[(usize, u64, u64)],
    runs: &mut Vec<(u64, u64)>,
    staging: &mut Vec<u8>,
    s: &mut Stream,
) -> Result<(), WireError> {
    for_each_run(ranges, runs, |pool, runs| {
        let mem = &inner.pools[pool].mem;
        let Stream::Plain(tcp) = &mut *s else {
            staging.resize(STAGING_BYTES, 0);
            for &(offset, len) in runs {
                let mut at = 0;
                while at < len {
                    let n = (len - at).min(STAGING_BYTES as u64) as usize;
                    mem.copy_out(offset + at, &mut staging[..n]).map_err(hal)?;
                    s.write_all(&staging[..n])?;
                    at += n as u64;
                }
            }
            return s.flush().map_err(WireError::Io);
        };
        mem.drain_to(runs, tcp).map_err(hal)
    })
}

fn discard(s: &mut impl Read, mut n: u64) -> Result<(), WireError> {
    let mut scratch = [0u8; 16 * 1024];
    while n > 0 {
        let want = n.min(scratch.len() as u64) as usize;
        let got = s.read(&mut scratch[..want])?;
        if got == 0 {
            return Err(WireError::Closed);
        }
        n -= got as u64;
    }
    Ok(())
}

/// After a copy: tell the peer whether the fence of (`rank`, `incarnation`) held all along.
fn reply_fence(
    s: &mut Stream,
    buf: &mut AlignedVec,
    req_id: u64,
    held: bool,
    (rank, incarnation): (u32, u64),
    what: &str,
) -> Result<(), WireError> {
    if held {
        return reply(s, buf, req_id, Code::Ok, "", 0);
    }
    let why = format!("fence: incarnation {incarnation} ended during the {what}");
    warn!(rank, incarnation, what, "copy crossed a re-registration");
    reply(s, buf, req_id, Code::NotConnectLocal, &why, 0)
}

fn reply(
    s: &mut Stream,
    buf: &mut AlignedVec,
    req_id: u64,
    code: Code,
    why: &str,
    raw_len: u64,
) -> Result<(), WireError> {
    let r = DataReply {
        code: code.as_i32(),
        message: why.to_string(),
    };
    wire::encode_payload(&r, buf)?;
    wire::write_frame(s, Kind::DataReply, req_id, buf, raw_len)?;
    Ok(s.flush()?) // a no-op on a plain socket; TLS: every record handed to the socket
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_of(ranges: &[(usize, u64, u64)]) -> Vec<(usize, Vec<(u64, u64)>)> {
        let mut out = Vec::new();
        let mut runs = Vec::new();
        for_each_run(ranges, &mut runs, |pool, r| {
            out.push((pool, r.to_vec()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn adjacent_pieces_coalesce_within_a_pool() {
        let got = runs_of(&[
            (0, 0, 10),
            (0, 10, 5),
            (0, 100, 1),
            (1, 0, 4),
            (1, 4, 4),
            (0, 101, 9),
        ]);
        assert_eq!(
            got,
            vec![
                (0, vec![(0, 15), (100, 1)]),
                (1, vec![(0, 8)]),
                (0, vec![(101, 9)]),
            ]
        );
        assert!(runs_of(&[]).is_empty());
    }

    #[test]
    fn discard_consumes_exactly_n_bytes() {
        let data = vec![7u8; 40_000];
        let mut r = std::io::Cursor::new(&data);
        discard(&mut r, 39_999).unwrap();
        assert_eq!(r.position(), 39_999);
        let mut short = std::io::Cursor::new(&data[..10]);
        assert!(matches!(discard(&mut short, 11), Err(WireError::Closed)));
    }
}
