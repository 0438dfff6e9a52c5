//! The io_uring experiment for the bulk TCP path: the same raw TCP streams as the baseline
//! (`baselines::TCP_STREAMS` in parallel, a receiving thread each into a pool arena), sent two
//! ways, interleaved call by call (A B, B A, ...) so both see the same machine:
//!
//! - `send write`: blocking `write` of the stream's bytes (what the client's TCP backend does,
//!   with vectored writes);
//! - `send io_uring`: one `IORING_OP_SEND` per stream (`MSG_WAITALL`), each stream's own ring;
//! - `send io_uring zc`: one `IORING_OP_SEND_ZC` per stream from a **registered buffer**
//!   (`IORING_RECVSEND_FIXED_BUF`, `MSG_WAITALL`), each stream's own ring, waiting for the send's
//!   completion and for the kernel's notification that it no longer reads the buffer.
//!
//! Whether the io_uring path is worth building into the client is decided by these rows: it
//! is kept only if it beats plain writes here, where nothing else differs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types, IoUring};

use crate::baselines::{bulk_shapes, Sinks};
use crate::pattern::{fill, seed};
use crate::report::{Row, TCP_STREAM};

/// Ops of the two rows of each shape.
pub const WRITE: &str = "send write";
pub const URING: &str = "send io_uring";
pub const URING_ZC: &str = "send io_uring zc";

/// How one call sends its bytes.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    Write,
    Uring,
    UringZc,
}

/// One stream's ring, with the source buffer registered as fixed buffer 0.
struct ZcSender {
    ring: IoUring,
}

impl ZcSender {
    fn new(src: &[u8]) -> std::io::Result<ZcSender> {
        let ring = IoUring::new(8)?;
        let iov = libc::iovec {
            iov_base: src.as_ptr() as *mut libc::c_void,
            iov_len: src.len(),
        };
        // SAFETY: `src` is the caller's buffer, which `rows` keeps alive (and does not move or
        // free) until every sender, and so every ring holding the registration, is dropped.
        unsafe { ring.submitter().register_buffers(&[iov])? };
        Ok(ZcSender { ring })
    }

    /// Send all of `bytes` (a slice of the registered buffer) on `s`, zero-copy (`zc`) or not;
    /// returns once the kernel has completed the send and released the buffer (every
    /// notification received).
    fn send(&mut self, s: &TcpStream, bytes: &[u8], zc: bool) -> std::io::Result<()> {
        let fd = types::Fd(s.as_raw_fd());
        let (mut sent, mut notifs) = (0usize, 0usize);
        while sent < bytes.len() {
            let left = &bytes[sent..];
            let len = left.len().min(1 << 30) as u32;
            let sqe = if zc {
                opcode::SendZc::new(fd, left.as_ptr(), len)
                    .buf_index(Some(0))
                    .flags(libc::MSG_WAITALL)
                    .build()
            } else {
                opcode::Send::new(fd, left.as_ptr(), len)
                    .flags(libc::MSG_WAITALL)
                    .build()
            };
            // SAFETY: `left` lies inside the registered buffer (fixed buffer 0), which outlives
            // this call; the loop below waits for the send's completion (and, zero-copy, for
            // every notification) before returning, so the kernel is done with the bytes then.
            unsafe {
                self.ring
                    .submission()
                    .push(&sqe)
                    .map_err(|_| std::io::Error::other("io_uring submission queue full"))?;
            }
            let mut done = false;
            while !done {
                self.ring.submit_and_wait(1)?;
                for cqe in self.ring.completion() {
                    if cqueue::notif(cqe.flags()) {
                        notifs -= 1;
                        continue;
                    }
                    if cqueue::more(cqe.flags()) {
                        notifs += 1;
                    }
                    if cqe.result() < 0 {
                        return Err(std::io::Error::from_raw_os_error(-cqe.result()));
                    }
                    sent += cqe.result() as usize;
                    done = true;
                }
            }
        }
        while notifs > 0 {
            self.ring.submit_and_wait(1)?;
            notifs -= self
                .ring
                .completion()
                .filter(|c| cqueue::notif(c.flags()))
                .count();
        }
        Ok(())
    }
}

/// One call over every stream: the length, the bytes (written or sent zero-copy), then the
/// acknowledgement; the streams in parallel threads. Its duration.
fn call(
    conns: &mut [TcpStream],
    rings: &mut [ZcSender],
    way: Way,
    src: &[u8],
    total: usize,
) -> Result<Duration, String> {
    let part = total.div_ceil(conns.len());
    let t = Instant::now();
    std::thread::scope(|sc| {
        let threads: Vec<_> = conns
            .iter_mut()
            .zip(rings.iter_mut())
            .enumerate()
            .map(|(i, (s, z))| {
                let bytes = &src[(i * part).min(total)..((i + 1) * part).min(total)];
                sc.spawn(move || {
                    s.write_all(&(bytes.len() as u64).to_le_bytes())?;
                    match way {
                        Way::Write => s.write_all(bytes)?,
                        Way::Uring => z.send(s, bytes, false)?,
                        Way::UringZc => z.send(s, bytes, true)?,
                    }
                    s.read_exact(&mut [0u8; 1])
                })
            })
            .collect();
        threads.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| "sender thread panicked".to_string())?
                .map_err(|e| format!("raw tcp send: {e}"))
        })
    })?;
    Ok(t.elapsed())
}

/// The three rows per bulk shape (`reps` calls each, interleaved) and a note with the ratios.
pub fn rows(reps: usize, streams: usize) -> Result<(Vec<Row>, String), String> {
    let streams = streams.max(1);
    let shapes = bulk_shapes();
    let max: usize = shapes
        .iter()
        .map(|(_, _, s)| s.iter().sum::<usize>())
        .max()
        .unwrap_or(0);
    let mut src = vec![0u8; max];
    fill(&mut src, seed(0x0121, max as u64));
    let (sinks, mut conns) = Sinks::start(streams, max)?;
    let mut zc: Vec<ZcSender> = (0..streams)
        .map(|_| ZcSender::new(&src))
        .collect::<std::io::Result<_>>()
        .map_err(|e| format!("io_uring (SEND_ZC needs Linux 6.0): {e}"))?;
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for (workload, shape, sizes) in shapes {
        let total: usize = sizes.iter().sum();
        let ways = [Way::Write, Way::Uring, Way::UringZc];
        let mut calls: [Vec<Duration>; 3] = Default::default();
        for rep in 0..=reps {
            // A B C, then B C A, then C A B: none always goes first.
            for k in 0..ways.len() {
                let w = (rep + k) % ways.len();
                let d = call(&mut conns, &mut zc, ways[w], &src, total)?;
                if rep > 0 {
                    calls[w].push(d);
                }
            }
        }
        let objects = (sizes.len() * reps) as u64;
        let bytes = (total * reps) as u64;
        let r: Vec<Row> = [WRITE, URING, URING_ZC]
            .iter()
            .zip(&calls)
            .map(|(op, c)| {
                Row::from_calls(
                    workload, op, TCP_STREAM, "-", shape, objects, bytes, c, true,
                )
            })
            .collect();
        let x = |i: usize| r[i].gbps / r[0].gbps.max(1e-9);
        ratios.push(format!(
            "{workload}: write {:.2} GB/s, io_uring {:.2}x, io_uring zc {:.2}x",
            r[0].gbps,
            x(1),
            x(2)
        ));
        rows.extend(r);
    }
    drop(zc);
    drop(conns);
    sinks.join()?;
    let note = format!(
        "io_uring experiment: {streams} raw TCP streams sent with write, io_uring SEND and \
         io_uring SEND_ZC from a registered buffer, interleaved call by call: {}",
        ratios.join("; ")
    );
    Ok((rows, note))
}
