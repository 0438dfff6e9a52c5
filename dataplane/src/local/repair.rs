//! Replica repair, driven: the meta service hands this service [`RepairTask`]s on heartbeat
//! replies (see `mmc_controlplane::meta`, `repair.rs`); one worker thread reads each source
//! replica over the data path (TCP, through the source's epoch fence), in chunks, writes it into
//! the space the meta service reserved here (through this service's own fence), checks the
//! object's CRC-32C, and hands the outcome to the core, which reports it on the next heartbeat.
//! The queue is bounded; a task that does not fit fails at once (the meta service frees its
//! space and tries again later).

use std::io::IoSliceMut;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmc_controlplane::msg::{Piece, RepairTask};
use mmc_controlplane::{Error, Result};
use mmc_core::local::LocalCore;
use tracing::{debug, info, warn};

use super::{stale, Inner};
use crate::transport::tcp::DataConn;

/// Tasks queued for the worker at most.
pub(super) const QUEUE: usize = 2 * mmc_controlplane::msg::REPAIRS_MAX;
/// Bytes read per request (and held in memory at once).
const CHUNK: u64 = 4 << 20;
/// One chunk's read, at most.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(5);

/// A task and the incarnation it was handed to.
pub(super) type Queued = (u64, RepairTask);

/// Queue `task` (received under `incarnation`), or fail it at once when the queue is full.
pub(super) fn submit(
    inner: &Inner,
    tx: Option<&SyncSender<Queued>>,
    incarnation: u64,
    task: RepairTask,
) {
    let token = task.token;
    let refused = match tx {
        Some(tx) => match tx.try_send((incarnation, task)) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => "the repair queue is full",
            Err(TrySendError::Disconnected(_)) => "the repair worker stopped",
        },
        None => "the service is starting",
    };
    debug!(token, refused, "repair task not run");
    done(inner, incarnation, token, false);
}

/// The worker: runs queued tasks until the service stops.
pub(super) fn run(inner: Arc<Inner>, rx: Receiver<Queued>) {
    while !inner.stop.load(std::sync::atomic::Ordering::Acquire) {
        let (incarnation, task) = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(q) => q,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let started = Instant::now();
        let ok = match copy(&inner, incarnation, &task) {
            Ok(()) => {
                info!(
                    token = task.token,
                    bytes = task.len,
                    from = task.source.rank,
                    ms = started.elapsed().as_millis() as u64,
                    "replica repaired"
                );
                true
            }
            Err(e) => {
                warn!(token = task.token, from = %task.source.data_endpoint, error = %e, "repair failed");
                false
            }
        };
        inner.stats.repairs[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
        done(&inner, incarnation, task.token, ok);
    }
}

fn done(inner: &Inner, incarnation: u64, token: u64, ok: bool) {
    inner
        .core
        .write()
        .expect("local core lock poisoned: a core step panicked")
        .on_repaired(incarnation, token, ok);
}

/// Read the source replica chunk by chunk into the reserved space; check the checksum.
fn copy(inner: &Inner, incarnation: u64, task: &RepairTask) -> Result<()> {
    let connect_by = Instant::now() + CHUNK_TIMEOUT;
    let mut conn = DataConn::connect(
        &task.source.data_endpoint,
        inner.tls.as_ref(),
        connect_by,
        inner.busy_poll,
    )?;
    let mut buf = vec![0u8; CHUNK.min(task.len) as usize];
    let mut crc = 0u32;
    let mut at = 0u64;
    while at < task.len {
        let n = CHUNK.min(task.len - at);
        let chunk = &mut buf[..n as usize];
        let piece = Piece {
            segment: task.source_segment,
            offset: task.source_offset + at,
            len: n,
        };
        let deadline = Instant::now() + CHUNK_TIMEOUT;
        let read = conn.read(
            task.source.rank,
            task.source.incarnation,
            vec![piece],
            &mut [IoSliceMut::new(chunk)],
            deadline,
        );
        if let Err(e) = read {
            conn.abort();
            return Err(e);
        }
        crc = crc32c::crc32c_append(crc, chunk);
        write_here(inner, incarnation, task.segment, task.offset + at, chunk)?;
        at += n;
    }
    if crc != task.crc {
        return Err(Error::Checksum {
            key: format!("(repair {})", task.token),
            rank: task.source.rank,
            segment: task.source_segment,
            offset: task.source_offset,
            expected: task.crc,
            actual: crc,
        });
    }
    Ok(())
}

/// Write into this service's own pool, inside its fence at `incarnation`.
fn write_here(
    inner: &Inner,
    incarnation: u64,
    segment: u32,
    offset: u64,
    bytes: &[u8],
) -> Result<()> {
    let endpoint = "this service (repair)";
    let guard = inner
        .fence
        .enter(incarnation)
        .map_err(|s| stale(endpoint, s))?;
    let pool = {
        let core = inner
            .core
            .read()
            .expect("local core lock poisoned: a core step panicked");
        let rank = core.membership().map_or(u32::MAX, |m| m.rank);
        let m = core
            .check_fence(rank, incarnation)
            .map_err(|why| super::refused(endpoint, why))?;
        LocalCore::resolve(m, segment, offset, bytes.len() as u64, &inner.pool_lens)
            .map_err(|why| super::refused(endpoint, why))?
    };
    inner.pools[pool]
        .mem
        .copy_in(offset, bytes)
        .map_err(|e| Error::Internal(e.to_string()))?;
    guard.still(incarnation).map_err(|s| stale(endpoint, s))
}
