//! Meta memory per object: a [`MetaCore`] in this process (the sans-IO core the meta service runs)
//! filled with N committed objects, as vLLM / LMCache fill it: ~77-byte block keys, one replica,
//! small objects. Reports bytes of meta memory per object (heap in use, from glibc's `mallinfo2`,
//! and the resident set, both as deltas over the fill, the members' space allocators included) and
//! the time per insert (an `Alloc` and a `Commit` per object, in batches of [`BATCH`]).
//!
//! Full runs fill 10 M objects, then 50 M when the machine has the memory (`MemAvailable` above
//! the 10 M run's bytes per object times 50 M, with a quarter to spare); `--quick` fills 200 k.

use std::time::{Duration, Instant};

use mmc_controlplane::meta::{MetaCore, MetaParams};
use mmc_controlplane::msg::{self, AllocRequest, CommitItem, Reply, Request, SegmentSpec};

use crate::report::{Row, MMC};

pub const NAME: &str = "meta-scale";

/// Keys per `Alloc` / `Commit`.
const BATCH: usize = 256;
/// Bytes of every object: a small block (only the meta service's bookkeeping is measured).
const OBJECT_BYTES: u64 = 4096;
/// Objects per segment: under the space allocator's 2^20 allocations per segment.
const PER_SEGMENT: u64 = 1 << 20;
/// The targets.
const TARGET_BYTES_PER_OBJECT: f64 = 200.0;
const TARGET_50M_BYTES: u64 = 16 << 30;

/// What one fill measured.
pub struct Fill {
    pub objects: u64,
    pub heap_bytes: u64,
    pub rss_bytes: u64,
    pub batches: Vec<Duration>,
}

impl Fill {
    pub fn heap_per_object(&self) -> f64 {
        self.heap_bytes as f64 / self.objects as f64
    }
    pub fn rss_per_object(&self) -> f64 {
        self.rss_bytes as f64 / self.objects as f64
    }
}

/// A realistic block key: LMCache's `fmt@model@world_size@worker@chunk_hash`, 77 bytes.
pub fn block_key(i: u64) -> String {
    // A 128-bit hash-looking chunk id, distinct per i.
    let a = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let b = a.rotate_left(29).wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ i;
    format!(
        "lmcache@meta-llama/Llama-3.1-8B-Instruct@8@{}@{a:016x}{b:016x}",
        i % 8
    )
}

/// Bytes of heap in use (glibc's main arena plus mmapped chunks), if known.
fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's own counters; no pointer is passed.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// `MemAvailable` of this machine, in bytes.
pub fn mem_available() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Register enough DRAM-only members for `n` objects of [`OBJECT_BYTES`].
fn register(core: &mut MetaCore, now: u64, n: u64) -> Vec<(u32, u64)> {
    let members = n.div_ceil(PER_SEGMENT - PER_SEGMENT / 16).max(1);
    (0..members)
        .map(|i| {
            let reply = core.handle(
                now,
                Request::Register(msg::Register {
                    rank: None,
                    create_id: 0,
                    host: format!("host-{i}"),
                    data_endpoint: format!("10.0.{}.{}:7000", i / 250, i % 250),
                    shm_endpoint: String::new(),
                    segments: vec![SegmentSpec {
                        media: msg::MEDIA_DRAM,
                        capacity: PER_SEGMENT * OBJECT_BYTES,
                    }],
                }),
            );
            match reply {
                Reply::Registered {
                    rank, incarnation, ..
                } => (rank, incarnation),
                other => panic!("registration refused: {other:?}"),
            }
        })
        .collect()
}

/// Fill a new core with `n` committed objects, measuring heap and RSS over the fill.
pub fn fill(n: u64, mut on_progress: impl FnMut(u64)) -> Result<Fill, String> {
    let heap0 = heap_in_use();
    let rss0 = rss();
    let now = 1;
    let mut core = MetaCore::new(MetaParams::default());
    let members = register(&mut core, now, n);
    let mut batches = Vec::with_capacity((n as usize).div_ceil(BATCH));
    let mut done = 0u64;
    let mut keys: Vec<String> = Vec::with_capacity(BATCH);
    while done < n {
        let count = (n - done).min(BATCH as u64);
        keys.clear();
        keys.extend((done..done + count).map(block_key));
        let t = Instant::now();
        let alloc = Request::Alloc(AllocRequest {
            writer_rank: None,
            client_id: 1,
            media: msg::MEDIA_DRAM,
            policy: msg::NATIVE_AFFINITY,
            replicas: 1,
            preferred: Vec::new(),
            items: keys.iter().map(|k| (k.clone(), OBJECT_BYTES)).collect(),
        });
        let Reply::Alloc { items, .. } = core.handle(now, alloc) else {
            return Err("alloc refused".into());
        };
        let mut commit = Vec::with_capacity(items.len());
        for (key, item) in keys.iter().zip(&items) {
            if item.code != 0 {
                return Err(format!("alloc of {key} failed: code {}", item.code));
            }
            commit.push((
                key.clone(),
                CommitItem {
                    token: item.token,
                    ok: true,
                    crc: 0,
                },
            ));
        }
        let Reply::Commit { codes } = core.handle(now, Request::Commit { items: commit }) else {
            return Err("commit refused".into());
        };
        batches.push(t.elapsed());
        if let Some(c) = codes.iter().find(|c| **c != 0) {
            return Err(format!("commit failed: code {c}"));
        }
        done += count;
        // The local services acknowledge their index changes, as their heartbeats do.
        if (done / BATCH as u64).is_multiple_of(16) || done == n {
            for &(rank, incarnation) in &members {
                let seq = core.index_outbox(rank).map_or(0, |o| o.last_seq());
                core.handle(
                    now,
                    Request::Heartbeat {
                        rank,
                        incarnation,
                        index_seq: seq,
                        index_resync: false,
                        repaired: Vec::new(),
                    },
                );
            }
        }
        if done.is_multiple_of(1 << 20) {
            on_progress(done);
        }
    }
    let Reply::Status(status) = core.handle(now, Request::Status) else {
        return Err("status refused".into());
    };
    if status.objects != n {
        return Err(format!(
            "{} objects in the directory, {n} put",
            status.objects
        ));
    }
    let heap1 = heap_in_use();
    let rss1 = rss();
    let fill = Fill {
        objects: n,
        heap_bytes: match (heap0, heap1) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => rss1.saturating_sub(rss0),
        },
        rss_bytes: rss1.saturating_sub(rss0),
        batches,
    };
    drop(core);
    Ok(fill)
}

/// The rows and notes of the meta-scale workload.
pub fn run(quick: bool, progress: &crate::progress::Progress) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let sizes: Vec<u64> = if quick {
        vec![200_000]
    } else {
        vec![10_000_000, 50_000_000]
    };
    let mut per_object: Option<f64> = None;
    for n in sizes {
        if n > 10_000_000 {
            let want = per_object.map_or(u64::MAX, |b| (b * n as f64 * 1.25) as u64);
            let have = mem_available();
            if want > have {
                let msg = format!(
                    "{NAME}: {n} objects skipped: about {} MiB needed, {} MiB available",
                    want >> 20,
                    have >> 20
                );
                progress.note(&msg);
                notes.push(msg);
                continue;
            }
        }
        progress.say(format!("{NAME}: filling a meta core with {n} objects"));
        match fill(n, |done| progress.say(format!("{NAME}: {done} of {n}"))) {
            Ok(f) => {
                let shape = format!("{n} objects x 1 replica, {BATCH} per batch");
                let row = Row::from_calls(
                    NAME,
                    "alloc+commit",
                    MMC,
                    "-",
                    &shape,
                    f.objects,
                    0,
                    &f.batches,
                    false,
                );
                let us = row.seconds * 1e6 / n as f64;
                let heap = f.heap_per_object();
                let met = if n > 10_000_000 {
                    let total = f.heap_bytes.max(f.rss_bytes);
                    format!(
                        "{} MiB in all, target < 16 GiB: {}",
                        total >> 20,
                        if total < TARGET_50M_BYTES {
                            "met"
                        } else {
                            "short"
                        }
                    )
                } else {
                    format!(
                        "target <= {TARGET_BYTES_PER_OBJECT} B: {}",
                        if heap <= TARGET_BYTES_PER_OBJECT {
                            "met"
                        } else {
                            "short"
                        }
                    )
                };
                notes.push(format!(
                    "{NAME}: {n} objects ({}-byte keys): {heap:.0} B of heap per object, \
                     {:.0} B resident per object, {us:.2} us per insert ({met})",
                    block_key(0).len(),
                    f.rss_per_object(),
                ));
                if n == 10_000_000 || per_object.is_none() {
                    per_object = Some(heap.max(f.rss_per_object()));
                }
                let mut row = row;
                row.bytes_per_object = Some(heap.max(f.rss_per_object()));
                rows.push(row);
            }
            Err(e) => notes.push(format!("{NAME}: {n} objects failed: {e}")),
        }
    }
    (rows, notes)
}
