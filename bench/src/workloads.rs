//! The workload list and the shared run context.
//!
//! Each workload writes its own keys (under the run's prefix), measures the client calls only,
//! verifies what it read byte for byte, records where its objects landed, and removes its keys
//! before the next one starts, so the store never holds more than one workload's data.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use mmc_dataplane::{Client, Error, PutOptions};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::pattern::{fill, first_diff, seed};
use crate::report::{Placement, Row, StatusSnap};

/// Keys per metadata call when removing or querying in bulk.
const KEYS_PER_CALL: usize = 4096;

/// A failed client call, with what the benchmark was doing.
pub struct Failure {
    pub what: String,
    pub err: Error,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (code {})", self.what, self.err, self.err.code())
    }
}

pub type R<T> = Result<T, Failure>;

pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> R<T>;
}

impl<T> Context<T> for Result<T, Error> {
    fn context(self, what: impl FnOnce() -> String) -> R<T> {
        self.map_err(|err| Failure { what: what(), err })
    }
}

/// The first per-key error of a batch, as a `Failure` naming the key.
fn all_ok<T, K: AsRef<str>>(results: Vec<Result<T, Error>>, keys: &[K], what: &str) -> R<Vec<T>> {
    results
        .into_iter()
        .zip(keys)
        .map(|(r, k)| r.context(|| format!("{what} {:?}", k.as_ref())))
        .collect()
}

/// Progress lines on stderr.
pub struct Progress {
    start: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            start: Instant::now(),
            quiet,
        }
    }

    pub fn say(&self, msg: impl fmt::Display) {
        if !self.quiet {
            eprintln!(
                "[mmc-bench {:6.2}s] {msg}",
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

/// What every workload shares: the client, the run's settings, and what has been recorded.
pub struct Ctx<'a> {
    pub client: &'a Client,
    pub prefix: String,
    pub memcpy_gbps: f64,
    pub opts: PutOptions,
    pub progress: Progress,
    pub placements: Vec<Placement>,
    pub status: Vec<StatusSnap>,
    pub verify_messages: Vec<String>,
    pub verify_failures: u64,
    /// Keys written and not yet removed (for cleanup after an error).
    live: BTreeSet<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(client: &'a Client, prefix: String, memcpy_gbps: f64, progress: Progress) -> Self {
        Ctx {
            client,
            prefix,
            memcpy_gbps,
            opts: PutOptions::default(),
            progress,
            placements: Vec::new(),
            status: Vec::new(),
            verify_messages: Vec::new(),
            verify_failures: 0,
            live: BTreeSet::new(),
        }
    }

    pub fn key(&self, workload: &str, tag: impl fmt::Display) -> String {
        format!("{}/{workload}/{tag}", self.prefix)
    }

    /// Remember keys about to be written, so they are removed even if the run fails.
    pub fn track<K: AsRef<str>>(&mut self, keys: &[K]) {
        self.live
            .extend(keys.iter().map(|k| k.as_ref().to_string()));
    }

    /// A verification failure: printed loudly at once, counted for `--check`.
    pub fn verify_failed(&mut self, msg: String) {
        eprintln!("mmc-bench: VERIFICATION FAILED: {msg}");
        self.verify_failures += 1;
        if self.verify_messages.len() < 100 {
            self.verify_messages.push(msg);
        }
    }

    /// Remove keys; missing ones are fine.
    pub fn remove<K: AsRef<str>>(&mut self, keys: &[K]) -> R<()> {
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let refs: Vec<&str> = chunk.iter().map(AsRef::as_ref).collect();
            let results = self
                .client
                .batch_remove(&refs)
                .context(|| format!("remove {} keys", refs.len()))?;
            for (r, k) in results.into_iter().zip(&refs) {
                match r {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(err) => {
                        return Err(Failure {
                            what: format!("remove {k:?}"),
                            err,
                        })
                    }
                }
                self.live.remove(*k);
            }
        }
        Ok(())
    }

    /// Best-effort removal of every key still live; returns how many could not be removed.
    pub fn cleanup(&mut self) -> usize {
        let keys: Vec<String> = self.live.iter().cloned().collect();
        if keys.is_empty() {
            return 0;
        }
        self.progress
            .say(format!("cleanup: removing {} keys", keys.len()));
        if let Err(f) = self.remove(&keys) {
            eprintln!("mmc-bench: cleanup failed: {f}");
        }
        self.live.len()
    }

    /// Record where `keys` landed (one `batch_query`).
    pub fn record_placement<K: AsRef<str>>(&mut self, workload: &str, keys: &[K]) -> R<()> {
        let mut replicas = Vec::new();
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let refs: Vec<&str> = chunk.iter().map(AsRef::as_ref).collect();
            let infos = self
                .client
                .batch_query(&refs)
                .context(|| format!("query {} keys", refs.len()))?;
            for info in all_ok(infos, &refs, "query")? {
                replicas.extend(info.replicas.iter().map(|r| (r.rank, r.media, r.len)));
            }
        }
        self.placements
            .push(Placement::tally(workload, keys.len() as u64, &replicas));
        Ok(())
    }

    /// Keep a snapshot of the meta service's status.
    pub fn snapshot(&mut self, when: &str) -> R<()> {
        let s = self.client.status().context(|| format!("status {when}"))?;
        self.status.push(StatusSnap::new(when, &s));
        Ok(())
    }

    fn row(
        &self,
        workload: &str,
        op: &str,
        objects: u64,
        bytes: u64,
        calls: &[Duration],
        bulk: bool,
    ) -> Row {
        Row::from_calls(workload, op, objects, bytes, calls, bulk, self.memcpy_gbps)
    }
}

/// One benchmark workload.
pub trait Workload {
    fn name(&self) -> &'static str;
    /// The most bytes it keeps in the store at once.
    fn live_bytes(&self) -> u64;
    fn run(&self, ctx: &mut Ctx<'_>) -> R<Vec<Row>>;
}

/// Sizes of the run.
pub struct Plan {
    pub quick: bool,
    /// DeepSeek-R1 blocks (keys).
    pub blocks: usize,
}

/// The workloads, in run order (`--workloads` picks a subset by name).
pub fn list(plan: &Plan) -> Vec<Box<dyn Workload>> {
    let q = plan.quick;
    vec![
        Box::new(DeepSeekBlocks {
            blocks: plan.blocks,
            batch: 8,
            get_passes: if q { 2 } else { 3 },
        }),
        Box::new(SmallObjects {
            count: if q { 500 } else { 2000 },
            size: 4 << 10,
        }),
        Box::new(BigBatch {
            keys: 16,
            size: 8 << 20,
            rounds: if q { 2 } else { 4 },
        }),
        Box::new(ExistBatch {
            keys: 1000,
            size: 64,
            calls: if q { 20 } else { 100 },
        }),
    ]
}

/// Names `list` knows, for `--workloads`.
pub const NAMES: &[&str] = &["deepseek-r1", "small-4k", "batch-8m", "exist"];

fn elapsed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

// ---- DeepSeek-R1 KV blocks ------------------------------------------------------------------

/// DeepSeek-R1 (MLA): 61 layers; per layer and block a 128 KiB latent cache piece and a 16 KiB
/// rope piece.
const LAYERS: usize = 61;
const KV_PIECE: usize = 128 << 10;
const PE_PIECE: usize = 16 << 10;
const BLOCK_BYTES: usize = LAYERS * (KV_PIECE + PE_PIECE);

/// The engine's paged KV cache: per layer, two tensors each holding every block slot; a block
/// table maps logical block `b` to slot `slot[b]`.
struct KvCache {
    kv: Vec<Vec<u8>>,
    pe: Vec<Vec<u8>>,
    slot: Vec<usize>,
}

impl KvCache {
    /// `poison` fills every byte (so the pages are touched before anything is timed).
    fn new(blocks: usize, poison: u8, table_seed: u64) -> KvCache {
        let mut slot: Vec<usize> = (0..blocks).collect();
        slot.shuffle(&mut StdRng::seed_from_u64(table_seed));
        KvCache {
            kv: (0..LAYERS)
                .map(|_| vec![poison; blocks * KV_PIECE])
                .collect(),
            pe: (0..LAYERS)
                .map(|_| vec![poison; blocks * PE_PIECE])
                .collect(),
            slot,
        }
    }

    fn poison(&mut self, byte: u8) {
        for t in self.kv.iter_mut().chain(self.pe.iter_mut()) {
            t.fill(byte);
        }
    }

    /// Block `b`'s pieces, layer by layer: (kv, pe).
    fn kv_range(&self, b: usize) -> std::ops::Range<usize> {
        let s = self.slot[b];
        s * KV_PIECE..(s + 1) * KV_PIECE
    }

    fn pe_range(&self, b: usize) -> std::ops::Range<usize> {
        let s = self.slot[b];
        s * PE_PIECE..(s + 1) * PE_PIECE
    }

    /// Fill block `b` with its pattern (piece `2l` = layer l's kv, `2l+1` its pe).
    fn fill_block(&mut self, b: usize, key_seed: u64) {
        let (kr, pr) = (self.kv_range(b), self.pe_range(b));
        for l in 0..LAYERS {
            fill(&mut self.kv[l][kr.clone()], seed(key_seed, 2 * l as u64));
            fill(
                &mut self.pe[l][pr.clone()],
                seed(key_seed, 2 * l as u64 + 1),
            );
        }
    }

    /// The 122 pieces of block `b`, in object order.
    fn parts(&self, b: usize) -> Vec<&[u8]> {
        let (kr, pr) = (self.kv_range(b), self.pe_range(b));
        (0..LAYERS)
            .flat_map(|l| [&self.kv[l][kr.clone()], &self.pe[l][pr.clone()]])
            .collect()
    }

    /// Mutable pieces of each block in `blocks`, each in object order.
    fn parts_mut(&mut self, blocks: &[usize]) -> Vec<Vec<&mut [u8]>> {
        let mut out: Vec<Vec<&mut [u8]>> = blocks
            .iter()
            .map(|_| Vec::with_capacity(2 * LAYERS))
            .collect();
        for (kv, pe) in self.kv.iter_mut().zip(self.pe.iter_mut()) {
            let mut kv_slots: Vec<Option<&mut [u8]>> =
                kv.chunks_exact_mut(KV_PIECE).map(Some).collect();
            let mut pe_slots: Vec<Option<&mut [u8]>> =
                pe.chunks_exact_mut(PE_PIECE).map(Some).collect();
            for (o, &b) in out.iter_mut().zip(blocks) {
                let s = self.slot[b];
                o.push(kv_slots[s].take().expect("each block once per batch"));
                o.push(pe_slots[s].take().expect("each block once per batch"));
            }
        }
        out
    }
}

pub struct DeepSeekBlocks {
    pub blocks: usize,
    /// Keys per batch call.
    pub batch: usize,
    /// Times every block is read back.
    pub get_passes: usize,
}

impl Workload for DeepSeekBlocks {
    fn name(&self) -> &'static str {
        "deepseek-r1"
    }

    fn live_bytes(&self) -> u64 {
        (self.blocks * BLOCK_BYTES) as u64
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> R<Vec<Row>> {
        let name = self.name();
        let n = self.blocks;
        if n == 0 {
            return Ok(Vec::new());
        }
        ctx.progress.say(format!(
            "{name}: {n} blocks of {LAYERS} x (128 + 16) KiB = {} pieces, {:.1} MiB each; \
             allocating 2 x {:.0} MiB of layer tensors",
            2 * LAYERS,
            BLOCK_BYTES as f64 / 1048576.0,
            (n * BLOCK_BYTES) as f64 / 1048576.0
        ));
        let keys: Vec<String> = (0..n).map(|b| ctx.key(name, format!("blk{b}"))).collect();
        let mut src = KvCache::new(n, 0, 1);
        for b in 0..n {
            src.fill_block(b, seed(0xD5, b as u64));
        }
        // The reader's cache: other buffers, another block table.
        let mut dst = KvCache::new(n, 0xA5, 2);
        let all: Vec<usize> = (0..n).collect();
        let batches: Vec<&[usize]> = all.chunks(self.batch.max(1)).collect();

        ctx.progress
            .say(format!("{name}: put, {} batches", batches.len()));
        let mut put_calls = Vec::with_capacity(batches.len());
        for batch in &batches {
            let bkeys: Vec<&str> = batch.iter().map(|&b| keys[b].as_str()).collect();
            let parts: Vec<Vec<&[u8]>> = batch.iter().map(|&b| src.parts(b)).collect();
            let values: Vec<&[&[u8]]> = parts.iter().map(Vec::as_slice).collect();
            ctx.track(&bkeys);
            let (res, t) = elapsed(|| ctx.client.batch_put_parts(&bkeys, &values, &ctx.opts));
            let res = res.context(|| format!("{name}: batch_put_parts of {} keys", bkeys.len()))?;
            all_ok(res, &bkeys, &format!("{name}: put"))?;
            put_calls.push(t);
        }
        ctx.record_placement(name, &keys)?;
        ctx.snapshot(&format!("after {name} put"))?;

        let mut get_calls = Vec::with_capacity(batches.len() * self.get_passes);
        for pass in 0..self.get_passes {
            ctx.progress.say(format!(
                "{name}: get pass {}/{}, {} batches",
                pass + 1,
                self.get_passes,
                batches.len()
            ));
            if pass > 0 {
                dst.poison(0xA5 ^ pass as u8);
            }
            for batch in &batches {
                let bkeys: Vec<&str> = batch.iter().map(|&b| keys[b].as_str()).collect();
                let mut parts = dst.parts_mut(batch);
                let mut views: Vec<&mut [&mut [u8]]> =
                    parts.iter_mut().map(Vec::as_mut_slice).collect();
                let (res, t) = elapsed(|| ctx.client.batch_get_into_parts(&bkeys, &mut views));
                let res = res
                    .context(|| format!("{name}: batch_get_into_parts of {} keys", bkeys.len()))?;
                let sizes = all_ok(res, &bkeys, &format!("{name}: get"))?;
                get_calls.push(t);
                for (size, k) in sizes.iter().zip(&bkeys) {
                    if *size != BLOCK_BYTES as u64 {
                        ctx.verify_failed(format!(
                            "{name}: get {k:?} returned {size} bytes, expected {BLOCK_BYTES}"
                        ));
                    }
                }
            }
            self.verify(ctx, &src, &dst, &keys, pass);
        }
        ctx.progress.say(format!("{name}: removing {n} keys"));
        ctx.remove(&keys)?;
        let total = (n * BLOCK_BYTES) as u64;
        Ok(vec![
            ctx.row(
                name,
                "batch_put_parts x8",
                n as u64,
                total,
                &put_calls,
                true,
            ),
            ctx.row(
                name,
                "batch_get_into_parts x8",
                (n * self.get_passes) as u64,
                total * self.get_passes as u64,
                &get_calls,
                true,
            ),
        ])
    }
}

impl DeepSeekBlocks {
    fn verify(
        &self,
        ctx: &mut Ctx<'_>,
        src: &KvCache,
        dst: &KvCache,
        keys: &[String],
        pass: usize,
    ) {
        let (bad, messages) = diff_blocks(src, dst, keys, 5);
        for m in messages {
            ctx.verify_failed(format!("{}: pass {}: {m}", self.name(), pass + 1));
        }
        if bad > 5 {
            ctx.verify_failed(format!(
                "{}: pass {}: {bad} pieces differ in all",
                self.name(),
                pass + 1
            ));
        }
    }
}

/// Compare every block's pieces in `dst` (its block table) with `src` (its own); returns how many
/// pieces differ and a message for each of the first `max_messages`.
fn diff_blocks(
    src: &KvCache,
    dst: &KvCache,
    keys: &[String],
    max_messages: usize,
) -> (usize, Vec<String>) {
    let mut bad = 0;
    let mut messages = Vec::new();
    for (b, key) in keys.iter().enumerate() {
        let (skr, spr) = (src.kv_range(b), src.pe_range(b));
        let (dkr, dpr) = (dst.kv_range(b), dst.pe_range(b));
        for l in 0..LAYERS {
            let pairs = [
                ("kv", &src.kv[l][skr.clone()], &dst.kv[l][dkr.clone()]),
                ("pe", &src.pe[l][spr.clone()], &dst.pe[l][dpr.clone()]),
            ];
            for (what, want, got) in pairs {
                if let Some(at) = first_diff(want, got) {
                    bad += 1;
                    if messages.len() < max_messages {
                        messages.push(format!(
                            "key {key:?} layer {l} {what} piece differs at byte {at}"
                        ));
                    }
                }
            }
        }
    }
    (bad, messages)
}

// ---- 4 KiB objects, one key per call -----------------------------------------------------------

pub struct SmallObjects {
    pub count: usize,
    pub size: usize,
}

impl Workload for SmallObjects {
    fn name(&self) -> &'static str {
        "small-4k"
    }

    fn live_bytes(&self) -> u64 {
        (self.count * self.size) as u64
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> R<Vec<Row>> {
        let name = self.name();
        let (n, size) = (self.count, self.size);
        if n == 0 {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = (0..n).map(|i| ctx.key(name, i)).collect();
        let mut src = vec![0u8; n * size];
        for (i, c) in src.chunks_exact_mut(size).enumerate() {
            fill(c, seed(0x4B, i as u64));
        }
        ctx.progress
            .say(format!("{name}: {n} single-key puts of {size} bytes"));
        let mut put_calls = Vec::with_capacity(n);
        for (key, value) in keys.iter().zip(src.chunks_exact(size)) {
            ctx.track(std::slice::from_ref(key));
            let (res, t) = elapsed(|| ctx.client.put(key, value, &ctx.opts));
            res.context(|| format!("{name}: put {key:?}"))?;
            put_calls.push(t);
        }
        ctx.record_placement(name, &keys)?;

        ctx.progress
            .say(format!("{name}: {n} single-key get_into calls"));
        let mut buf = vec![0u8; size];
        let mut get_calls = Vec::with_capacity(n);
        let mut bad = 0;
        for (key, want) in keys.iter().zip(src.chunks_exact(size)) {
            buf.fill(0xA5);
            let (res, t) = elapsed(|| ctx.client.get_into(key, &mut buf));
            let got = res.context(|| format!("{name}: get_into {key:?}"))?;
            get_calls.push(t);
            let diff = first_diff(want, &buf);
            if got != size as u64 || diff.is_some() {
                bad += 1;
                if bad <= 5 {
                    ctx.verify_failed(format!(
                        "{name}: get {key:?}: {got} bytes (expected {size}), first difference at {diff:?}"
                    ));
                }
            }
        }
        if bad > 5 {
            ctx.verify_failed(format!("{name}: {bad} of {n} objects differ"));
        }
        ctx.remove(&keys)?;
        let total = (n * size) as u64;
        Ok(vec![
            ctx.row(name, "put", n as u64, total, &put_calls, false),
            ctx.row(name, "get_into", n as u64, total, &get_calls, false),
        ])
    }
}

// ---- A batch of big objects ---------------------------------------------------------------------

pub struct BigBatch {
    pub keys: usize,
    pub size: usize,
    /// Put/get/remove rounds, each with fresh keys and fresh data.
    pub rounds: usize,
}

impl Workload for BigBatch {
    fn name(&self) -> &'static str {
        "batch-8m"
    }

    fn live_bytes(&self) -> u64 {
        (self.keys * self.size) as u64
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> R<Vec<Row>> {
        let name = self.name();
        let (n, size) = (self.keys, self.size);
        if n == 0 || self.rounds == 0 {
            return Ok(Vec::new());
        }
        let mut src: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; size]).collect();
        let mut dst: Vec<Vec<u8>> = (0..n).map(|_| vec![0xA5u8; size]).collect();
        let mut put_calls = Vec::new();
        let mut get_calls = Vec::new();
        for round in 0..self.rounds {
            ctx.progress.say(format!(
                "{name}: round {}/{}: batch put + get of {n} x {} MiB",
                round + 1,
                self.rounds,
                size >> 20
            ));
            // Fresh data per round: a stale read from the previous round would not match.
            for (i, s) in src.iter_mut().enumerate() {
                fill(s, seed(0xB16 + round as u64, i as u64));
            }
            let keys: Vec<String> = (0..n)
                .map(|i| ctx.key(name, format!("r{round}/{i}")))
                .collect();
            let krefs: Vec<&str> = keys.iter().map(String::as_str).collect();
            let values: Vec<&[u8]> = src.iter().map(Vec::as_slice).collect();
            ctx.track(&krefs);
            let (res, t) = elapsed(|| ctx.client.batch_put(&krefs, &values, &ctx.opts));
            let res = res.context(|| format!("{name}: batch_put of {n} keys"))?;
            all_ok(res, &krefs, &format!("{name}: put"))?;
            put_calls.push(t);
            if round == 0 {
                ctx.record_placement(name, &keys)?;
            }
            let mut bufs: Vec<&mut [u8]> = dst.iter_mut().map(Vec::as_mut_slice).collect();
            let (res, t) = elapsed(|| ctx.client.batch_get_into(&krefs, &mut bufs));
            let res = res.context(|| format!("{name}: batch_get_into of {n} keys"))?;
            let sizes = all_ok(res, &krefs, &format!("{name}: get"))?;
            get_calls.push(t);
            for ((k, got), (want, have)) in krefs.iter().zip(&sizes).zip(src.iter().zip(&dst)) {
                let diff = first_diff(want, have);
                if *got != size as u64 || diff.is_some() {
                    ctx.verify_failed(format!(
                        "{name}: round {}: get {k:?}: {got} bytes (expected {size}), first difference at {diff:?}",
                        round + 1
                    ));
                }
            }
            ctx.remove(&keys)?;
        }
        let per_round = (n * size) as u64;
        let r = self.rounds as u64;
        let label = format!("{n} x {} MiB", size >> 20);
        Ok(vec![
            ctx.row(
                name,
                &format!("batch_put {label}"),
                n as u64 * r,
                per_round * r,
                &put_calls,
                true,
            ),
            ctx.row(
                name,
                &format!("batch_get_into {label}"),
                n as u64 * r,
                per_round * r,
                &get_calls,
                true,
            ),
        ])
    }
}

// ---- batch_exist --------------------------------------------------------------------------------

pub struct ExistBatch {
    pub keys: usize,
    pub size: usize,
    /// `batch_exist` calls, each over every key.
    pub calls: usize,
}

impl Workload for ExistBatch {
    fn name(&self) -> &'static str {
        "exist"
    }

    fn live_bytes(&self) -> u64 {
        (self.keys * self.size) as u64
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> R<Vec<Row>> {
        let name = self.name();
        let n = self.keys;
        if n == 0 || self.calls == 0 {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = (0..n).map(|i| ctx.key(name, i)).collect();
        let krefs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut data = vec![0u8; n * self.size];
        for (i, c) in data.chunks_exact_mut(self.size).enumerate() {
            fill(c, seed(0xE7, i as u64));
        }
        let values: Vec<&[u8]> = data.chunks_exact(self.size).collect();
        ctx.progress.say(format!(
            "{name}: batch_put of {n} x {} B, then {} batch_exist calls",
            self.size, self.calls
        ));
        ctx.track(&krefs);
        let (res, put_t) = elapsed(|| ctx.client.batch_put(&krefs, &values, &ctx.opts));
        let res = res.context(|| format!("{name}: batch_put of {n} keys"))?;
        all_ok(res, &krefs, &format!("{name}: put"))?;
        ctx.record_placement(name, &keys)?;

        let mut calls = Vec::with_capacity(self.calls);
        let mut missing = 0;
        for _ in 0..self.calls {
            let (res, t) = elapsed(|| ctx.client.batch_exist(&krefs));
            let res = res.context(|| format!("{name}: batch_exist of {n} keys"))?;
            calls.push(t);
            for (r, k) in res.into_iter().zip(&krefs) {
                match r {
                    Ok(()) => {}
                    Err(Error::NotFound { .. }) => {
                        missing += 1;
                        if missing <= 5 {
                            ctx.verify_failed(format!(
                                "{name}: {k:?} was put but is reported missing"
                            ));
                        }
                    }
                    Err(err) => {
                        return Err(Failure {
                            what: format!("{name}: exist {k:?}"),
                            err,
                        })
                    }
                }
            }
        }
        if missing > 5 {
            ctx.verify_failed(format!("{name}: {missing} keys reported missing in all"));
        }
        ctx.remove(&keys)?;
        let total = (n * self.size) as u64;
        Ok(vec![
            ctx.row(
                name,
                &format!("batch_put {n} x {} B", self.size),
                n as u64,
                total,
                &[put_t],
                false,
            ),
            ctx.row(
                name,
                &format!("batch_exist {n}"),
                (n * self.calls) as u64,
                0,
                &calls,
                false,
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `parts_mut` hands out, filled from `parts`, reproduces every block under the other
    /// block table; one flipped byte is caught in the right piece.
    #[test]
    fn kv_layout_round_trips_through_another_block_table() {
        let n = 3;
        let keys: Vec<String> = (0..n).map(|b| format!("k{b}")).collect();
        let mut src = KvCache::new(n, 0, 1);
        for b in 0..n {
            src.fill_block(b, seed(7, b as u64));
        }
        let mut dst = KvCache::new(n, 0xA5, 2);
        assert_ne!(
            src.slot, dst.slot,
            "the test needs two different block tables"
        );
        assert_eq!(diff_blocks(&src, &dst, &keys, 10).0, 2 * LAYERS * n);
        let blocks: Vec<usize> = (0..n).collect();
        let mut parts = dst.parts_mut(&blocks);
        for (b, p) in parts.iter_mut().enumerate() {
            let want = src.parts(b);
            assert_eq!(p.len(), 2 * LAYERS);
            assert_eq!(want.iter().map(|w| w.len()).sum::<usize>(), BLOCK_BYTES);
            for (d, s) in p.iter_mut().zip(want) {
                d.copy_from_slice(s);
            }
        }
        assert_eq!(diff_blocks(&src, &dst, &keys, 10), (0, Vec::new()));
        let s = dst.slot[1];
        dst.pe[60][s * PE_PIECE + 100] ^= 1;
        let (bad, msgs) = diff_blocks(&src, &dst, &keys, 10);
        assert_eq!(bad, 1);
        assert!(
            msgs[0].contains("\"k1\" layer 60 pe piece differs at byte 100"),
            "{msgs:?}"
        );
    }
}
