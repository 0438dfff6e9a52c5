//! The "fresh" workload: first writes into never-used pool space, as an engine writes its KV
//! cache (every round new keys, nothing removed), into a pool larger than the host's huge-page
//! reserve (so it lives on ordinary pages, as it does on most hosts), on the own and host
//! placements, each with a new pool and a new client (a fresh mapping of the pool).
//!
//! Just before each placement, in the same process, the same rounds are copied with memcpy into
//! fresh memory of the pool's size: a pre-faulted arena never written before (what the pool is
//! when its service has started: the put's target, "copy in"), and fresh anonymous memory whose
//! first touch faults ("copy in first-touch", for reference). The put's ratio is against the
//! former. The minor page faults this process took inside the timed puts are counted
//! (`getrusage`), which shows whether the client's mapping was populated.

use std::time::{Duration, Instant};

use mmc_controlplane::msg::PREFERRED_AFFINITY;
use mmc_dataplane::{Client, ClientConfig, LocalConfig, PutOptions};
use mmc_hal::Arena;

use crate::cluster::Cluster;
use crate::pattern::{fill, seed};
use crate::progress::Progress;
use crate::report::{Row, HOST, MEMCPY, OWN};
use crate::workloads::{all_ok, verify_objects, Checks, Context, Ctx, Place, R};

pub const NAME: &str = "fresh";
/// One round: a batch_put of 16 new 8 MiB objects.
const OBJECTS: usize = 16;
const OBJECT_BYTES: usize = 8 << 20;
const ROUND_BYTES: u64 = (OBJECTS * OBJECT_BYTES) as u64;
const SHAPE: &str = "16 x 8 MiB";
/// The host rows written right after the client mapped the pool, while its populate runs.
pub const AT_MAPPING: &str = "put at mapping";
/// The last rows of each placement: the same rounds again into space the fresh rounds used and
/// freed (warm pages): the put path's own speed in this pool, so fresh / reused is the cost of
/// first writes alone.
pub const REUSED: &str = "put reused";
/// The longest wait for a mapping's populate before the populated rounds.
const POPULATE_WAIT: Duration = Duration::from_secs(60);

/// Rounds of one placement.
pub fn rounds(quick: bool) -> usize {
    if quick {
        2
    } else {
        6
    }
}

/// Bytes of the host's 2 MiB huge-page reserve (`HugePages_Total`).
pub fn huge_reserve_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mut total = 0u64;
    let mut kb = 0u64;
    for line in meminfo.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("HugePages_Total:"), Some(v)) => total = v,
            (Some("Hugepagesize:"), Some(v)) => kb = v,
            _ => {}
        }
    }
    total * kb * 1024
}

/// The pool of one placement: larger than the huge-page reserve, and the rounds (twice: host
/// writes once racing its populate, once after it) fill at most three quarters of it (below the
/// eviction watermark).
pub fn pool_bytes(quick: bool) -> u64 {
    let need = (2 * rounds(quick) as u64 * ROUND_BYTES * 4).div_ceil(3);
    let floor = if quick { 512 << 20 } else { 1 << 30 };
    need.max(floor).max(huge_reserve_bytes() + (256 << 20))
}

/// Minor page faults of this process so far (every thread's: the copies', and a populate
/// thread's, which takes one fault per 16 pages with fault-around).
fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage for the duration of the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_minflt
}

/// The source buffers of round `round` (filled outside the timed part).
fn fill_round(src: &mut [Vec<u8>], round: usize) {
    for (i, s) in src.iter_mut().enumerate() {
        fill(s, seed(0xF5E5 + round as u64, i as u64));
    }
}

/// memcpy of every round into fresh memory of `pool` bytes: a pre-faulted arena ("copy in") and
/// anonymous memory touched for the first time ("copy in first-touch"); the arena's page kind.
fn baselines(
    pl: &str,
    pool: u64,
    rounds: usize,
    src: &mut [Vec<u8>],
) -> Result<(Vec<Row>, String), String> {
    let arena = Arena::new("mmc-bench-fresh", pool, true)
        .map_err(|e| format!("fresh memcpy baseline arena: {e}"))?;
    let kind = arena.page_kind().to_string();
    let mut anon = vec![0u8; rounds * ROUND_BYTES as usize]; // calloc: untouched pages
    let (mut into_arena, mut into_anon) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        fill_round(src, round);
        let base = round as u64 * ROUND_BYTES;
        let t = Instant::now();
        for (i, s) in src.iter().enumerate() {
            arena
                .copy_in(base + (i * OBJECT_BYTES) as u64, s)
                .map_err(|e| format!("fresh memcpy baseline: {e}"))?;
        }
        into_arena.push(t.elapsed());
        let t = Instant::now();
        for (i, s) in src.iter().enumerate() {
            let at = base as usize + i * OBJECT_BYTES;
            anon[at..at + s.len()].copy_from_slice(s);
        }
        into_anon.push(t.elapsed());
    }
    std::hint::black_box(&anon);
    let n = (rounds * OBJECTS) as u64;
    let bytes = rounds as u64 * ROUND_BYTES;
    let row = |op: &str, calls: &[Duration]| {
        Row::from_calls(NAME, op, MEMCPY, pl, SHAPE, n, bytes, calls, true)
    };
    Ok((
        vec![
            row("copy in", &into_arena),
            row("copy in first-touch", &into_anon),
        ],
        kind,
    ))
}

/// The puts of one placement: `rounds` batch_puts of new keys (timed), each read back and verified
/// (not timed); the row (`op`) and the minor faults taken inside the timed puts. The keys stay
/// (so the next rounds go to never-used space too) and are added to `written`.
fn puts(
    ctx: &mut Ctx<'_>,
    op: &str,
    rounds: usize,
    src: &mut [Vec<u8>],
    written: &mut Vec<String>,
) -> R<(Row, i64)> {
    let mut dst: Vec<Vec<u8>> = (0..OBJECTS).map(|_| vec![0xA5u8; OBJECT_BYTES]).collect();
    let mut calls = Vec::with_capacity(rounds);
    let mut faults = 0;
    let mut all_keys = Vec::new();
    for round in 0..rounds {
        ctx.say(format!(
            "{NAME}: {op}: round {} of {rounds}, batch_put {SHAPE} of new keys",
            round + 1
        ));
        fill_round(src, round);
        let keys: Vec<String> = (0..OBJECTS)
            .map(|i| ctx.key(NAME, format!("{op}/r{round}/{i}")))
            .collect();
        let krefs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values: Vec<&[u8]> = src.iter().map(Vec::as_slice).collect();
        ctx.track(&krefs);
        let f0 = minor_faults();
        let t = Instant::now();
        let res = ctx.client().batch_put(&krefs, &values, &ctx.place.opts);
        calls.push(t.elapsed());
        faults += minor_faults() - f0;
        let res = res.context(|| format!("{NAME}: batch_put of {OBJECTS} keys"))?;
        all_ok(res, &krefs, &format!("{NAME}: put"))?;
        let mut bufs: Vec<&mut [u8]> = dst.iter_mut().map(Vec::as_mut_slice).collect();
        let res = ctx
            .client()
            .batch_get_into(&krefs, &mut bufs)
            .context(|| format!("{NAME}: batch_get_into of {OBJECTS} keys"))?;
        let sizes = all_ok(res, &krefs, &format!("{NAME}: get"))?;
        verify_objects(ctx, NAME, &krefs, &sizes, src, &dst);
        all_keys.extend(keys);
    }
    ctx.check_placement(NAME, &all_keys)?;
    written.extend(all_keys);
    let bytes = rounds as u64 * ROUND_BYTES;
    let row = ctx.row(
        NAME,
        op,
        SHAPE,
        (rounds * OBJECTS) as u64,
        bytes,
        &calls,
        true,
    );
    Ok((row, faults))
}

/// What the fresh workload needs from the run.
pub struct Setup<'a> {
    pub quick: bool,
    pub config: &'a ClientConfig,
    pub local: LocalConfig,
    pub prefix: &'a str,
    pub progress: &'a Progress,
}

/// Run the fresh workload on `placements` (own, host; host needs `cluster`). Rows, notes, and
/// failed operations.
pub fn run(
    s: &Setup<'_>,
    placements: &[&'static str],
    mut cluster: Option<&mut Cluster>,
    checks: &mut Checks,
) -> (Vec<Row>, Vec<String>, Vec<String>) {
    let (mut rows, mut notes, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    let pool = pool_bytes(s.quick);
    let rounds = rounds(s.quick);
    let mut src: Vec<Vec<u8>> = (0..OBJECTS).map(|_| vec![0u8; OBJECT_BYTES]).collect();
    for &pl in placements.iter().filter(|p| **p == OWN || **p == HOST) {
        s.progress.say(format!(
            "{NAME} {pl}: memcpy baselines into {} MiB of fresh memory",
            pool >> 20
        ));
        match baselines(pl, pool, rounds, &mut src) {
            Ok((r, kind)) => {
                rows.extend(r);
                notes.push(format!(
                    "{NAME} {pl}: pool and memcpy arena of {} MiB (huge-page reserve {} MiB), \
                     the arena on {kind}",
                    pool >> 20,
                    huge_reserve_bytes() >> 20
                ));
            }
            Err(e) => {
                notes.push(format!("{NAME} {pl}: baseline failed: {e}"));
                s.progress.step();
                continue;
            }
        }
        // A new pool and a new client (a new mapping of the pool) for this placement.
        let started = match pl {
            OWN => Client::with_local_service(
                s.config,
                &LocalConfig {
                    dram_bytes: pool,
                    ..s.local.clone()
                },
            )
            .map(|c| {
                let rank = c.local_rank().expect("embedded service has a rank");
                (c, rank)
            })
            .map_err(|e| format!("client with an embedded {} MiB pool: {e}", pool >> 20)),
            _ => match cluster.as_deref_mut() {
                None => Err("needs the cluster mmc-bench starts (--meta given)".to_string()),
                Some(c) => c.add_local(pool).map(|l| l.rank).and_then(|rank| {
                    Client::connect(s.config)
                        .map(|c| (c, rank))
                        .map_err(|e| format!("connect: {e}"))
                }),
            },
        };
        let (client, rank) = match started {
            Ok(x) => x,
            Err(e) => {
                notes.push(format!("{NAME} {pl} skipped: {e}"));
                s.progress.step();
                continue;
            }
        };
        let place = Place {
            name: pl,
            client: &client,
            opts: PutOptions {
                policy: PREFERRED_AFFINITY,
                preferred: vec![rank as i32],
                ..PutOptions::default()
            },
            rank,
        };
        let mut ctx = Ctx::new(place, format!("{}-{NAME}", s.prefix), s.progress, checks);
        // The client's first call (which maps a same-host pool): must not wait for its populate.
        let key = ctx.key(NAME, "first-call");
        ctx.track(std::slice::from_ref(&key));
        let mapped_at = Instant::now();
        let first = client.put(&key, &[0x5A; 4096], &ctx.place.opts);
        let first_ms = mapped_at.elapsed().as_secs_f64() * 1e3;
        match first {
            Ok(()) => notes.push(format!(
                "{NAME} {pl}: the new client's first call (a 4 KiB put{}) took \
                 {first_ms:.1} ms",
                if pl == HOST {
                    ", which maps the pool"
                } else {
                    ""
                }
            )),
            Err(e) => failures.push(format!("{NAME} {pl}: first 4 KiB put: {e}")),
        }
        // Host: the first rounds race the populate of the mapping the first call made; then,
        // once it is done (as for an engine that mapped the pool before its first writes), the
        // same rounds again into further never-used space. Own: its pool was pre-faulted.
        let ops: &[&str] = if pl == HOST {
            &[AT_MAPPING, "put", REUSED]
        } else {
            &["put", REUSED]
        };
        let mut written = Vec::new();
        for &op in ops {
            if op == REUSED {
                // Free the space the fresh rounds used: these rounds write into it again.
                if let Err(f) = ctx.remove(&written) {
                    failures.push(format!("{NAME} {pl}: {f}"));
                    break;
                }
                written.clear();
            }
            if op == "put" && pl == HOST {
                let waited = Instant::now();
                while client.pools_populating() > 0 && waited.elapsed() < POPULATE_WAIT {
                    std::thread::sleep(Duration::from_millis(5));
                }
                notes.push(format!(
                    "{NAME} {pl}: after the first rounds ({:.0} ms after the mapping) the bench \
                     waited {:.0} ms more for the populate of the {} MiB mapping{}",
                    (waited - mapped_at).as_secs_f64() * 1e3,
                    waited.elapsed().as_secs_f64() * 1e3,
                    pool >> 20,
                    if client.pools_populating() > 0 {
                        " (NOT finished: the wait is bounded)"
                    } else {
                        ""
                    }
                ));
            }
            match puts(&mut ctx, op, rounds, &mut src, &mut written) {
                Ok((row, faults)) => {
                    let pages = (rounds as u64 * ROUND_BYTES / 4096) as f64;
                    notes.push(format!(
                        "{NAME} {pl} {op}: {faults} minor page faults in this process (populate \
                         included) inside the timed puts ({:.2} per 4 KiB page written; 1 = every \
                         first write faults)",
                        faults as f64 / pages
                    ));
                    rows.push(row);
                }
                Err(f) => {
                    s.progress.note(format!("{NAME} {pl}: FAILED: {f}"));
                    failures.push(format!("{NAME} {pl}: {f}"));
                    break;
                }
            }
        }
        let left = ctx.cleanup();
        if left > 0 {
            s.progress
                .note(format!("{left} {NAME} keys on {pl} could not be removed"));
        }
        s.progress.step();
    }
    (rows, notes, failures)
}
