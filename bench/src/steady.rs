//! The "steady" workload: a pool that sits at its eviction watermark, so every put evicts, as a
//! KV cache does once it has filled up and keeps turning over.
//!
//! Each placement (own, host) gets a cluster of its own: an in-process meta service whose
//! watermarks are one point apart (`evict_threshold_high` 90, `evict_threshold_low` 89) and a
//! single pool of [`pool_bytes`], so an 8 MiB object crossing 90% evicts at least one older
//! object and no put ever finds free room without evicting. Untimed, batches of new keys fill the
//! pool past its watermark; then each timed round is a `batch_put` of 16 new 8 MiB keys (every
//! object evicts), read back and verified untimed. The meta service's `evicted_total` before and
//! after the timed rounds says how many objects the timed puts evicted (at least one per put,
//! else the workload is not in steady state: a verification failure).
//!
//! Just before each placement, in the same process, the same bytes are copied with memcpy into a
//! pre-faulted arena of the pool's size at rotating offsets (space that was written before, as
//! evicted space is): the put's ratio is against that.

use std::path::Path;
use std::time::{Duration, Instant};

use mmc_config::{LogLevel, MetaConfig};
use mmc_controlplane::msg::PREFERRED_AFFINITY;
use mmc_dataplane::{Client, ClientConfig, LocalConfig, PutOptions};
use mmc_hal::Arena;

use crate::cluster::Cluster;
use crate::pattern::{fill, seed};
use crate::progress::Progress;
use crate::report::{find, Row, Target, HOST, MEMCPY, MMC, OWN};
use crate::workloads::{all_ok, verify_objects, Checks, Context, Ctx, Place, R};

pub const NAME: &str = "steady";
const OBJECTS: usize = 16;
const OBJECT_BYTES: usize = 8 << 20;
const ROUND_BYTES: u64 = (OBJECTS * OBJECT_BYTES) as u64;
const SHAPE: &str = "16 x 8 MiB";
const EVICT_HIGH: u16 = 90;
const EVICT_LOW: u16 = 89;

/// Timed rounds of one placement.
pub fn rounds(quick: bool) -> usize {
    if quick {
        3
    } else {
        8
    }
}

/// The pool of each placement.
pub fn pool_bytes(quick: bool) -> u64 {
    if quick {
        256 << 20
    } else {
        512 << 20
    }
}

/// Fill `src` with the bytes of round `round`.
fn fill_round(src: &mut [Vec<u8>], round: usize) {
    for (i, s) in src.iter_mut().enumerate() {
        fill(s, seed(0x57EA + round as u64, i as u64));
    }
}

/// memcpy of the timed rounds into a pre-faulted arena of `pool` bytes, each round at the next
/// offset (wrapping), every page written once before the timed copies.
fn baseline(pl: &str, pool: u64, rounds: usize, src: &mut [Vec<u8>]) -> Result<Row, String> {
    let arena = Arena::new("mmc-bench-steady", pool, true)
        .map_err(|e| format!("steady memcpy baseline arena: {e}"))?;
    let slots = (pool / ROUND_BYTES).max(1);
    for slot in 0..slots {
        for (i, s) in src.iter().enumerate() {
            arena
                .copy_in(slot * ROUND_BYTES + (i * OBJECT_BYTES) as u64, s)
                .map_err(|e| format!("steady memcpy baseline: {e}"))?;
        }
    }
    let mut calls = Vec::with_capacity(rounds);
    for round in 0..rounds {
        fill_round(src, round);
        let base = (round as u64 % slots) * ROUND_BYTES;
        let t = Instant::now();
        for (i, s) in src.iter().enumerate() {
            arena
                .copy_in(base + (i * OBJECT_BYTES) as u64, s)
                .map_err(|e| format!("steady memcpy baseline: {e}"))?;
        }
        calls.push(t.elapsed());
    }
    let n = (rounds * OBJECTS) as u64;
    Ok(Row::from_calls(
        NAME,
        "copy in",
        MEMCPY,
        pl,
        SHAPE,
        n,
        rounds as u64 * ROUND_BYTES,
        &calls,
        true,
    ))
}

/// One batch_put of new keys `tag/0..16` (timed), read back and verified (untimed).
fn round(
    ctx: &mut Ctx<'_>,
    tag: &str,
    src: &[Vec<u8>],
    dst: &mut [Vec<u8>],
) -> R<(Duration, Vec<String>)> {
    let keys: Vec<String> = (0..OBJECTS)
        .map(|i| ctx.key(NAME, format!("{tag}/{i}")))
        .collect();
    let krefs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values: Vec<&[u8]> = src.iter().map(Vec::as_slice).collect();
    ctx.track(&krefs);
    let t = Instant::now();
    let res = ctx.client().batch_put(&krefs, &values, &ctx.place.opts);
    let took = t.elapsed();
    let res = res.context(|| format!("{NAME}: batch_put of {OBJECTS} keys"))?;
    all_ok(res, &krefs, &format!("{NAME}: put"))?;
    let mut bufs: Vec<&mut [u8]> = dst.iter_mut().map(Vec::as_mut_slice).collect();
    let res = ctx
        .client()
        .batch_get_into(&krefs, &mut bufs)
        .context(|| format!("{NAME}: batch_get_into of {OBJECTS} keys"))?;
    let sizes = all_ok(res, &krefs, &format!("{NAME}: get"))?;
    verify_objects(ctx, NAME, &krefs, &sizes, src, dst);
    Ok((took, keys))
}

/// Objects the meta service has evicted so far.
fn evicted(ctx: &Ctx<'_>) -> R<u64> {
    ctx.client()
        .status()
        .map(|s| s.evicted_total)
        .context(|| format!("{NAME}: status"))
}

/// Fill past the watermark (untimed), then the timed rounds; the row and the objects the timed
/// puts evicted.
fn measure(ctx: &mut Ctx<'_>, pool: u64, rounds: usize, src: &mut [Vec<u8>]) -> R<(Row, u64)> {
    let mut dst: Vec<Vec<u8>> = (0..OBJECTS).map(|_| vec![0xA5u8; OBJECT_BYTES]).collect();
    // Enough rounds to pass the high watermark, and one more.
    let fill_rounds = (pool * u64::from(EVICT_HIGH) / 100).div_ceil(ROUND_BYTES) as usize + 1;
    ctx.say(format!(
        "{NAME}: filling the {} MiB pool past its watermark ({fill_rounds} x {SHAPE})",
        pool >> 20
    ));
    for r in 0..fill_rounds {
        fill_round(src, 1000 + r);
        round(ctx, &format!("fill{r}"), src, &mut dst)?;
    }
    let before = evicted(ctx)?;
    let mut calls = Vec::with_capacity(rounds);
    let mut keys = Vec::new();
    for r in 0..rounds {
        ctx.say(format!(
            "{NAME}: round {} of {rounds}, batch_put {SHAPE} of new keys (each evicts)",
            r + 1
        ));
        fill_round(src, r);
        let (took, k) = round(ctx, &format!("r{r}"), src, &mut dst)?;
        calls.push(took);
        keys.extend(k);
    }
    let during = evicted(ctx)? - before;
    ctx.check_placement(NAME, &keys[keys.len() - OBJECTS..])?;
    let row = ctx.row(
        NAME,
        "put",
        SHAPE,
        (rounds * OBJECTS) as u64,
        rounds as u64 * ROUND_BYTES,
        &calls,
        true,
    );
    Ok((row, during))
}

/// What the steady workload needs from the run.
pub struct Setup<'a> {
    pub quick: bool,
    pub dir: &'a Path,
    pub log_level: LogLevel,
    pub config: &'a ClientConfig,
    pub local: LocalConfig,
    pub prefix: &'a str,
    pub progress: &'a Progress,
}

/// Run the steady workload on `placements` (own, host), each with a cluster of its own. Rows,
/// notes, and failed operations.
pub fn run(
    s: &Setup<'_>,
    placements: &[&'static str],
    checks: &mut Checks,
) -> (Vec<Row>, Vec<String>, Vec<String>) {
    let (mut rows, mut notes, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    let pool = pool_bytes(s.quick);
    let rounds = rounds(s.quick);
    let mut src: Vec<Vec<u8>> = (0..OBJECTS).map(|_| vec![0u8; OBJECT_BYTES]).collect();
    for &pl in placements.iter().filter(|p| **p == OWN || **p == HOST) {
        s.progress.say(format!(
            "{NAME} {pl}: memcpy baseline into {} MiB",
            pool >> 20
        ));
        match baseline(pl, pool, rounds, &mut src) {
            Ok(r) => rows.push(r),
            Err(e) => {
                notes.push(format!("{NAME} {pl}: baseline failed: {e}"));
                s.progress.step();
                continue;
            }
        }
        match placement(s, pl, pool, rounds, &mut src, checks) {
            Ok((row, during)) => {
                let puts = (rounds * OBJECTS) as u64;
                notes.push(format!(
                    "{NAME} {pl}: one {} MiB pool at its watermark (evict high {EVICT_HIGH}%, \
                     low {EVICT_LOW}%); the {puts} timed puts evicted {during} objects",
                    pool >> 20
                ));
                if during < puts {
                    checks.fail(format!(
                        "{NAME} {pl}: {puts} puts evicted only {during} objects: not every put \
                         evicted (not at the watermark)"
                    ));
                }
                rows.push(row);
            }
            Err(e) => {
                s.progress.note(format!("{NAME} {pl}: FAILED: {e}"));
                failures.push(format!("{NAME} {pl}: {e}"));
            }
        }
        s.progress.step();
    }
    (rows, notes, failures)
}

/// One placement: its cluster, client and rounds.
fn placement(
    s: &Setup<'_>,
    pl: &'static str,
    pool: u64,
    rounds: usize,
    src: &mut [Vec<u8>],
    checks: &mut Checks,
) -> Result<(Row, u64), String> {
    // A folder of its own: the cluster names its files local1.addr, ... as the main one does.
    let dir = s.dir.join(format!("{NAME}-{pl}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut cluster = Cluster::start_meta(
        &dir,
        &MetaConfig {
            log_level: s.log_level,
            evict_threshold_high: EVICT_HIGH,
            evict_threshold_low: EVICT_LOW,
            ..MetaConfig::default()
        },
    )?;
    let config = ClientConfig {
        meta_url: cluster.meta_url.clone(),
        ..s.config.clone()
    };
    let (client, rank) = if pl == OWN {
        let local = LocalConfig {
            meta_url: cluster.meta_url.clone(),
            dram_bytes: pool,
            ..s.local.clone()
        };
        let c = Client::with_local_service(&config, &local)
            .map_err(|e| format!("client with an embedded {} MiB pool: {e}", pool >> 20))?;
        let rank = c.local_rank().expect("embedded service has a rank");
        (c, rank)
    } else {
        let rank = cluster.add_local(pool)?.rank;
        let c = Client::connect(&config).map_err(|e| format!("connect: {e}"))?;
        (c, rank)
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
    let res = measure(&mut ctx, pool, rounds, src).map_err(|f| f.to_string());
    ctx.cleanup();
    drop(ctx);
    drop(client);
    drop(cluster);
    res
}

/// The steady-state target: a put into a pool at its watermark (every put evicts) >= 85% of
/// memcpy of the same bytes measured just before (the same bar as the warm batch rows).
pub fn judge(rows: &[Row]) -> Vec<Target> {
    let mut out = Vec::new();
    for pl in [OWN, HOST] {
        let (Some(r), Some(b)) = (
            find(rows, MMC, pl, NAME, "put"),
            find(rows, MEMCPY, pl, NAME, "copy in"),
        ) else {
            continue;
        };
        let x = r.gbps / b.gbps;
        out.push(Target {
            name: format!("{pl}: steady state (every put evicts) put >= 85% of memcpy"),
            detail: format!(
                "{:.2} GB/s = {:.0}% of memcpy {:.2} GB/s ({SHAPE} rounds into a pool at its \
                 eviction watermark)",
                r.gbps,
                x * 100.0,
                b.gbps
            ),
            pass: Some(x >= 0.85),
        });
    }
    out
}
