//! Baselines measured in the same run: memcpy of the same bytes (same layouts), raw TCP streams
//! (as many as the client uses) of the same bytes over loopback, and a 64-byte TCP ping-pong (blocking, and busy-polling).

use std::hint::black_box;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use mmc_hal::Arena;

use crate::kv::{KvCache, BLOCK_BYTES};
use crate::pattern::{fill, seed};
use crate::report::{Row, BUSY_POLL, MEMCPY, TCP_PINGPONG, TCP_STREAM};

/// The bulk workloads' shapes: (workload, shape, object sizes of one call).
pub fn bulk_shapes() -> Vec<(&'static str, &'static str, Vec<usize>)> {
    vec![
        ("batch-1m", "64 x 1 MiB", vec![1 << 20; 64]),
        ("batch-8m", "16 x 8 MiB", vec![8 << 20; 16]),
        ("deepseek-r1", "8 keys x 122 pieces", vec![BLOCK_BYTES; 8]),
    ]
}

fn filled(len: usize, s: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(&mut v, seed(s, len as u64));
    v
}

/// memcpy of one call's bytes, `reps` times each way, between the caller's kind of buffers
/// (pre-touched heap memory) and a pool's kind of memory (a pre-faulted `mmc_hal::Arena`, as the
/// local services use): "copy in" is what a put must do at least, "copy out" what a get must do.
/// The DeepSeek block is gathered from / scattered into the engine's layout (122 pieces per key).
/// Returns the rows and the arena's page kind.
pub fn memcpy_rows(reps: usize) -> Result<(Vec<Row>, String), String> {
    let shapes = bulk_shapes();
    let max: usize = shapes
        .iter()
        .map(|(_, _, s)| s.iter().sum::<usize>())
        .max()
        .unwrap_or(0);
    let arena = Arena::new("mmc-bench-memcpy", max as u64, true)
        .map_err(|e| format!("memcpy baseline arena: {e}"))?;
    let kind = arena.page_kind().to_string();
    let mut rows = Vec::new();
    for (workload, shape, sizes) in shapes {
        let total: usize = sizes.iter().sum();
        let n = sizes.len();
        let (mut ins, mut outs) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        if workload == "deepseek-r1" {
            let mut src = KvCache::new(n, 0, 1);
            for b in 0..n {
                src.fill_block(b, seed(0xD5, b as u64));
            }
            let mut dst = KvCache::new(n, 0xA5, 2);
            let all: Vec<usize> = (0..n).collect();
            for rep in 0..=reps {
                let t = Instant::now();
                let mut at = 0u64;
                for b in 0..n {
                    for p in src.parts(b) {
                        arena.copy_in(at, black_box(p)).map_err(|e| e.to_string())?;
                        at += p.len() as u64;
                    }
                }
                let t_in = t.elapsed();
                let t = Instant::now();
                let mut at = 0u64;
                for parts in dst.parts_mut(&all).iter_mut() {
                    for p in parts.iter_mut() {
                        arena.copy_out(at, p).map_err(|e| e.to_string())?;
                        at += p.len() as u64;
                    }
                }
                black_box(&mut dst);
                if rep > 0 {
                    ins.push(t_in);
                    outs.push(t.elapsed());
                }
            }
        } else {
            let src: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &s)| filled(s, i as u64))
                .collect();
            let mut dst: Vec<Vec<u8>> = sizes.iter().map(|&s| vec![0xA5u8; s]).collect();
            for rep in 0..=reps {
                let t = Instant::now();
                let mut at = 0u64;
                for s in &src {
                    arena.copy_in(at, black_box(s)).map_err(|e| e.to_string())?;
                    at += s.len() as u64;
                }
                let t_in = t.elapsed();
                let t = Instant::now();
                let mut at = 0u64;
                for d in dst.iter_mut() {
                    arena.copy_out(at, d).map_err(|e| e.to_string())?;
                    at += d.len() as u64;
                }
                black_box(&mut dst);
                if rep > 0 {
                    ins.push(t_in);
                    outs.push(t.elapsed());
                }
            }
        }
        for (op, calls) in [("copy in", &ins), ("copy out", &outs)] {
            rows.push(Row::from_calls(
                workload,
                op,
                MEMCPY,
                "-",
                shape,
                (n * reps) as u64,
                (total * reps) as u64,
                calls,
                true,
            ));
        }
    }
    Ok((rows, kind))
}

/// TCP streams of the raw TCP baseline: as many as the client opens to one service for a large
/// batch (`TCP_LANES` in `dataplane/src/transport/tcp.rs`; every bulk shape here is above its
/// 4 MiB threshold), so the ratio compares the same number of streams.
pub const TCP_STREAMS: usize = 2;

/// `streams` raw TCP streams over loopback, in parallel: one call's bytes split evenly over them,
/// each sent from one buffer by its own thread; a receiving thread per connection (as the local
/// service's default data server has) reads them into its range of a pre-faulted pool arena and
/// acknowledges with one byte; timed from the first byte written to the last acknowledgement.
/// The rows and a note saying so.
pub fn tcp_stream_rows(reps: usize, streams: usize) -> Result<(Vec<Row>, String), String> {
    let streams = streams.max(1);
    let shapes = bulk_shapes();
    let max: usize = shapes
        .iter()
        .map(|(_, _, s)| s.iter().sum::<usize>())
        .max()
        .unwrap_or(0);
    let (sinks, mut conns) = Sinks::start(streams, max)?;
    let src = filled(max, 7);
    let mut rows = Vec::new();
    for (workload, shape, sizes) in shapes {
        let total: usize = sizes.iter().sum();
        // Stream i sends [i * part, min((i + 1) * part, total)).
        let part = total.div_ceil(streams);
        let mut calls = Vec::with_capacity(reps);
        for rep in 0..=reps {
            let t = Instant::now();
            std::thread::scope(|sc| {
                let sent: Vec<_> = conns
                    .iter_mut()
                    .enumerate()
                    .map(|(i, s)| {
                        let bytes = &src[(i * part).min(total)..((i + 1) * part).min(total)];
                        sc.spawn(move || {
                            let mut ack = [0u8; 1];
                            s.write_all(&(bytes.len() as u64).to_le_bytes())
                                .and_then(|_| s.write_all(bytes))
                                .and_then(|_| s.read_exact(&mut ack))
                        })
                    })
                    .collect();
                sent.into_iter().try_for_each(|h| {
                    h.join()
                        .map_err(|_| "tcp stream sender panicked".to_string())?
                        .map_err(|e| format!("tcp stream: {e}"))
                })
            })?;
            if rep > 0 {
                calls.push(t.elapsed());
            }
        }
        rows.push(Row::from_calls(
            workload,
            "send",
            TCP_STREAM,
            "-",
            shape,
            (sizes.len() * reps) as u64,
            (total * reps) as u64,
            &calls,
            true,
        ));
    }
    drop(conns);
    sinks.join()?;
    let note = format!(
        "tcp-stream baseline: {streams} raw TCP streams in parallel (as many as the client's \
         connections to one service for a large batch), the bytes split evenly, each received \
         by its own thread into a pre-faulted pool arena"
    );
    Ok((rows, note))
}

/// The receiving end of raw TCP streams: a thread per connection reading each message (an 8-byte
/// length, then the bytes) into its own range of a pre-faulted pool arena, as a local service's
/// default data server does, and acknowledging it with one byte.
pub struct Sinks(Vec<std::thread::JoinHandle<std::io::Result<()>>>);

impl Sinks {
    /// `streams` receivers of up to `max / streams` (rounded up) bytes a message each, and the
    /// connected sending ends (`TCP_NODELAY`).
    pub fn start(streams: usize, max: usize) -> Result<(Sinks, Vec<TcpStream>), String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("addr: {e}"))?;
        let slot = max.div_ceil(streams) as u64;
        let arena = std::sync::Arc::new(
            Arena::new("mmc-bench-tcp-sink", slot * streams as u64, true)
                .map_err(|e| format!("tcp sink arena: {e}"))?,
        );
        let mut conns = Vec::with_capacity(streams);
        let mut sinks = Vec::with_capacity(streams);
        for i in 0..streams {
            let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            conns.push(s);
            let (mut s, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            let (arena, at) = (arena.clone(), i as u64 * slot);
            sinks.push(std::thread::spawn(move || -> std::io::Result<()> {
                s.set_nodelay(true)?;
                let mut len = [0u8; 8];
                loop {
                    if s.read_exact(&mut len).is_err() {
                        return Ok(());
                    }
                    let n = u64::from_le_bytes(len);
                    arena
                        .fill_from(&[(at, n)], &mut s)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    s.write_all(&[1])?;
                }
            }));
        }
        Ok((Sinks(sinks), conns))
    }

    /// Wait for every receiver (after the sending ends were dropped).
    pub fn join(self) -> Result<(), String> {
        for sink in self.0 {
            sink.join()
                .map_err(|_| "tcp sink thread panicked".to_string())?
                .map_err(|e| format!("tcp sink: {e}"))?;
        }
        Ok(())
    }
}

/// 64-byte ping-pong over loopback TCP (an echo thread in this process). `busy` = both ends
/// spin on non-blocking reads (and writes) instead of blocking: the busy-poll baseline; else both
/// ends block.
pub fn ping_pong_row(iters: usize, busy: bool) -> Result<Row, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("addr: {e}"))?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_nonblocking(busy)?;
        let mut buf = [0u8; 64];
        while read_full(&mut s, &mut buf)? {
            write_full(&mut s, &buf)?;
        }
        Ok(())
    });
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_nonblocking(busy).map_err(|e| e.to_string())?;
    let mut buf = [7u8; 64];
    let warm = 100;
    let mut calls = Vec::with_capacity(iters);
    for i in 0..warm + iters {
        let t = Instant::now();
        let ok = write_full(&mut s, &buf)
            .and_then(|_| read_full(&mut s, &mut buf))
            .map_err(|e| format!("ping-pong: {e}"))?;
        if !ok {
            return Err("ping-pong: the echo thread closed the connection".into());
        }
        if i >= warm {
            calls.push(t.elapsed());
        }
    }
    drop(s);
    let _ = echo.join();
    let mut row = Row::from_calls(
        "4k",
        "ping-pong",
        TCP_PINGPONG,
        "-",
        "64 B",
        iters as u64,
        0,
        &calls,
        false,
    );
    if busy {
        row.wait = BUSY_POLL;
    }
    Ok(row)
}

/// Read all of `buf`, spinning while a non-blocking socket has nothing (a blocking one blocks).
/// `Ok(false)` at end of stream before the first byte.
fn read_full(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Write all of `buf`, spinning while a non-blocking socket is full.
fn write_full(s: &mut TcpStream, buf: &[u8]) -> std::io::Result<()> {
    let mut put = 0;
    while put < buf.len() {
        match s.write(&buf[put..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => put += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
