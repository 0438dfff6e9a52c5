//! MemCache workloads, each run on one placement (a client plus put options that put the data in
//! the caller's own process, in another process on this host, or behind TCP only).
//!
//! Each workload writes its own keys (under the run's prefix), times the client calls only,
//! verifies every byte it reads back, checks that its objects landed where the placement says, and
//! removes its keys before the next one starts.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use mmc_dataplane::{Client, Error, PutOptions};

use crate::kv::{diff_blocks, KvCache, BLOCK_BYTES, LAYERS};
use crate::pattern::{fill, first_diff, seed};
use crate::progress::Progress;
use crate::report::{Row, MMC};

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
pub(crate) fn all_ok<T, K: AsRef<str>>(
    results: Vec<Result<T, Error>>,
    keys: &[K],
    what: &str,
) -> R<Vec<T>> {
    results
        .into_iter()
        .zip(keys)
        .map(|(r, k)| r.context(|| format!("{what} {:?}", k.as_ref())))
        .collect()
}

/// Verification failures of the whole run (every system).
#[derive(Default)]
pub struct Checks {
    pub failures: u64,
    pub messages: Vec<String>,
}

impl Checks {
    /// Printed loudly at once, counted for `--check`.
    pub fn fail(&mut self, msg: String) {
        eprintln!("mmc-bench: VERIFICATION FAILED: {msg}");
        self.failures += 1;
        if self.messages.len() < 100 {
            self.messages.push(msg);
        }
    }
}

/// Where a workload's data goes: one client and the put options that place it.
pub struct Place<'a> {
    /// `OWN`, `HOST` or `TCP`.
    pub name: &'static str,
    pub client: &'a Client,
    pub opts: PutOptions,
    /// The rank every object must land on.
    pub rank: u32,
}

/// What every workload of one placement shares.
pub struct Ctx<'a> {
    pub place: Place<'a>,
    pub prefix: String,
    pub progress: &'a Progress,
    pub checks: &'a mut Checks,
    /// Keys written and not yet removed (for cleanup after an error).
    live: BTreeSet<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        place: Place<'a>,
        prefix: String,
        progress: &'a Progress,
        checks: &'a mut Checks,
    ) -> Self {
        Ctx {
            place,
            prefix,
            progress,
            checks,
            live: BTreeSet::new(),
        }
    }

    pub(crate) fn client(&self) -> &'a Client {
        self.place.client
    }

    pub fn key(&self, workload: &str, tag: impl fmt::Display) -> String {
        format!("{}/{}/{workload}/{tag}", self.prefix, self.place.name)
    }

    pub(crate) fn track<K: AsRef<str>>(&mut self, keys: &[K]) {
        self.live
            .extend(keys.iter().map(|k| k.as_ref().to_string()));
    }

    pub(crate) fn say(&self, msg: impl fmt::Display) {
        self.progress.say(format!("mmc {}: {msg}", self.place.name));
    }

    /// Remove keys; missing ones are fine.
    pub fn remove<K: AsRef<str>>(&mut self, keys: &[K]) -> R<()> {
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let refs: Vec<&str> = chunk.iter().map(AsRef::as_ref).collect();
            let results = self
                .client()
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
        if let Err(f) = self.remove(&keys) {
            eprintln!("mmc-bench: cleanup failed: {f}");
        }
        self.live.len()
    }

    /// Every replica of `keys` must be on the placement's rank (else the figures would be of
    /// another path): a verification failure otherwise.
    pub(crate) fn check_placement<K: AsRef<str>>(&mut self, workload: &str, keys: &[K]) -> R<()> {
        let mut elsewhere = BTreeSet::new();
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let refs: Vec<&str> = chunk.iter().map(AsRef::as_ref).collect();
            let infos = self
                .client()
                .batch_query(&refs)
                .context(|| format!("query {} keys", refs.len()))?;
            for info in all_ok(infos, &refs, "query")? {
                elsewhere.extend(
                    info.replicas
                        .iter()
                        .map(|r| r.rank)
                        .filter(|&r| r != self.place.rank),
                );
            }
        }
        if !elsewhere.is_empty() {
            let msg = format!(
                "{workload} on placement {}: objects landed on rank(s) {elsewhere:?}, expected only \
                 rank {}",
                self.place.name, self.place.rank
            );
            self.checks.fail(msg);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn row(
        &self,
        workload: &str,
        op: &str,
        shape: &str,
        objects: u64,
        bytes: u64,
        calls: &[Duration],
        bulk: bool,
    ) -> Row {
        Row::from_calls(
            workload,
            op,
            MMC,
            self.place.name,
            shape,
            objects,
            bytes,
            calls,
            bulk,
        )
    }
}

fn elapsed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

/// Sizes of the run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    /// 4 KiB objects, one per call.
    pub small_count: usize,
    /// Rounds of the 64 x 1 MiB and 16 x 8 MiB batches.
    pub batch_rounds: usize,
    /// DeepSeek-R1 blocks (keys), read back `deepseek_passes` times.
    pub deepseek_blocks: usize,
    pub deepseek_passes: usize,
    /// `batch_exist` calls of 1000 keys.
    pub exist_calls: usize,
    /// Warm passes of the first-write test.
    pub warm_passes: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                small_count: 300,
                batch_rounds: 2,
                deepseek_blocks: 16,
                deepseek_passes: 2,
                exist_calls: 30,
                warm_passes: 2,
            }
        } else {
            Plan {
                quick,
                small_count: 2000,
                batch_rounds: 6,
                deepseek_blocks: 32,
                deepseek_passes: 3,
                exist_calls: 200,
                warm_passes: 3,
            }
        }
    }

    /// The most bytes one workload keeps in the store at once.
    pub fn peak_bytes(&self) -> u64 {
        ((self.deepseek_blocks * BLOCK_BYTES) as u64).max(128 << 20)
    }
}

/// Workload names, in run order (`--workloads` picks a subset).
pub const NAMES: &[&str] = &[
    "first-write",
    "4k",
    "batch-1m",
    "batch-8m",
    "deepseek-r1",
    "exist",
    crate::fresh::NAME,
    crate::meta_scale::NAME,
    crate::meta_ops::NAME,
    crate::steady::NAME,
];

/// A tcp row whose client mapped a service's pools (shared memory) instead of crossing TCP: an
/// error naming the ranks.
pub fn tcp_forced(pl: &str, client: &Client) -> Option<String> {
    let mapped = client.mapped_services();
    (pl == crate::report::TCP && !mapped.is_empty())
        .then(|| format!("{pl}: the client mapped the pools of ranks {mapped:?} (not TCP)"))
}

/// Workloads that run with clusters and pools of their own, not in [`run_all`].
pub fn own_setup(name: &str) -> bool {
    name == crate::fresh::NAME || name == crate::steady::NAME
}

/// Run `names` (in `NAMES` order) on one placement.
pub fn run_all(ctx: &mut Ctx<'_>, plan: &Plan, names: &[&str]) -> R<Vec<Row>> {
    let mut rows = Vec::new();
    for &w in NAMES.iter().filter(|w| names.contains(w) && !own_setup(w)) {
        let r = match w {
            "first-write" => first_write(ctx, plan)?,
            "4k" => small(ctx, plan.small_count, 4 << 10)?,
            "batch-1m" => big_batch(ctx, "batch-1m", 64, 1 << 20, plan.batch_rounds)?,
            "batch-8m" => big_batch(ctx, "batch-8m", 16, 8 << 20, plan.batch_rounds)?,
            "deepseek-r1" => deepseek(ctx, plan.deepseek_blocks, 8, plan.deepseek_passes)?,
            "exist" => exist(ctx, 1000, plan.exist_calls)?,
            _ => Vec::new(),
        };
        rows.extend(r);
        ctx.progress.step();
    }
    Ok(rows)
}

/// Verify a batch of big objects read back.
pub(crate) fn verify_objects(
    ctx: &mut Ctx<'_>,
    what: &str,
    keys: &[&str],
    sizes: &[u64],
    src: &[Vec<u8>],
    dst: &[Vec<u8>],
) {
    for ((k, got), (want, have)) in keys.iter().zip(sizes).zip(src.iter().zip(dst)) {
        let diff = first_diff(want, have);
        if *got != want.len() as u64 || diff.is_some() {
            ctx.checks.fail(format!(
                "{what}: get {k:?}: {got} bytes (expected {}), first difference at {diff:?}",
                want.len()
            ));
        }
    }
}

// ---- First write into a fresh pool ----------------------------------------------------------

/// 16 x 8 MiB into the placement's pool before anything else touched it, then again (after
/// removing the keys) into the now warm pool.
fn first_write(ctx: &mut Ctx<'_>, plan: &Plan) -> R<Vec<Row>> {
    let name = "first-write";
    let (n, size) = (16usize, 8usize << 20);
    let mut src: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; size]).collect();
    let mut dst: Vec<Vec<u8>> = (0..n).map(|_| vec![0xA5u8; size]).collect();
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for pass in 0..=plan.warm_passes {
        ctx.say(format!(
            "{name}: pass {} of {}, batch_put 16 x 8 MiB{}",
            pass + 1,
            plan.warm_passes + 1,
            if pass == 0 {
                " into the fresh pool"
            } else {
                ""
            }
        ));
        for (i, s) in src.iter_mut().enumerate() {
            fill(s, seed(0xF1 + pass as u64, i as u64));
        }
        let keys: Vec<String> = (0..n)
            .map(|i| ctx.key(name, format!("p{pass}/{i}")))
            .collect();
        let krefs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values: Vec<&[u8]> = src.iter().map(Vec::as_slice).collect();
        ctx.track(&krefs);
        let (res, t) = elapsed(|| ctx.client().batch_put(&krefs, &values, &ctx.place.opts));
        let res = res.context(|| format!("{name}: batch_put of {n} keys"))?;
        all_ok(res, &krefs, &format!("{name}: put"))?;
        if pass == 0 {
            cold.push(t);
            ctx.check_placement(name, &krefs)?;
        } else {
            warm.push(t);
        }
        let mut bufs: Vec<&mut [u8]> = dst.iter_mut().map(Vec::as_mut_slice).collect();
        let res = ctx
            .client()
            .batch_get_into(&krefs, &mut bufs)
            .context(|| format!("{name}: batch_get_into of {n} keys"))?;
        let sizes = all_ok(res, &krefs, &format!("{name}: get"))?;
        verify_objects(ctx, name, &krefs, &sizes, &src, &dst);
        ctx.remove(&keys)?;
    }
    let bytes = (n * size) as u64;
    let shape = "16 x 8 MiB";
    Ok(vec![
        ctx.row(name, "put cold", shape, n as u64, bytes, &cold, true),
        ctx.row(
            name,
            "put warm",
            shape,
            (n * warm.len()) as u64,
            bytes * warm.len() as u64,
            &warm,
            true,
        ),
    ])
}

// ---- 4 KiB objects, one key per call --------------------------------------------------------

fn small(ctx: &mut Ctx<'_>, n: usize, size: usize) -> R<Vec<Row>> {
    let name = "4k";
    let keys: Vec<String> = (0..n).map(|i| ctx.key(name, i)).collect();
    let mut src = vec![0u8; n * size];
    for (i, c) in src.chunks_exact_mut(size).enumerate() {
        fill(c, seed(0x4B, i as u64));
    }
    ctx.say(format!("{name}: {n} single-key puts of {size} bytes"));
    let mut put_calls = Vec::with_capacity(n);
    // Heap allocations of the calling thread per call: put, get, exist.
    let mut allocs: [Vec<u64>; 3] = std::array::from_fn(|_| Vec::with_capacity(n));
    for (key, value) in keys.iter().zip(src.chunks_exact(size)) {
        ctx.track(std::slice::from_ref(key));
        let ((res, t), a) =
            crate::allocs::counted(|| elapsed(|| ctx.client().put(key, value, &ctx.place.opts)));
        res.context(|| format!("{name}: put {key:?}"))?;
        put_calls.push(t);
        allocs[0].push(a);
    }
    ctx.check_placement(name, &keys)?;

    ctx.say(format!("{name}: {n} single-key get_into and exist calls"));
    let mut buf = vec![0u8; size];
    let mut get_calls = Vec::with_capacity(n);
    let mut bad = 0;
    for (key, want) in keys.iter().zip(src.chunks_exact(size)) {
        buf.fill(0xA5);
        let ((res, t), a) =
            crate::allocs::counted(|| elapsed(|| ctx.client().get_into(key, &mut buf)));
        let got = res.context(|| format!("{name}: get_into {key:?}"))?;
        get_calls.push(t);
        allocs[1].push(a);
        let diff = first_diff(want, &buf);
        if got != size as u64 || diff.is_some() {
            bad += 1;
            if bad <= 5 {
                ctx.checks.fail(format!(
                    "{name}: get {key:?}: {got} bytes (expected {size}), first difference at {diff:?}"
                ));
            }
        }
    }
    if bad > 5 {
        ctx.checks
            .fail(format!("{name}: {bad} of {n} objects differ"));
    }
    let mut exist_calls = Vec::with_capacity(n);
    for key in &keys {
        let ((res, t), a) = crate::allocs::counted(|| elapsed(|| ctx.client().exist(key)));
        allocs[2].push(a);
        match res {
            Ok(()) => {}
            Err(Error::NotFound { .. }) => {
                ctx.checks
                    .fail(format!("{name}: {key:?} was put but exist says missing"));
            }
            Err(err) => {
                return Err(Failure {
                    what: format!("{name}: exist {key:?}"),
                    err,
                })
            }
        }
        exist_calls.push(t);
    }
    let warm = (n / 4).min(100);
    ctx.say(format!(
        "{name}: heap allocations per call (calling thread, after {warm} warm-up calls): put {:.1}, get {:.1}, exist {:.1}",
        crate::allocs::per_call(&allocs[0], warm),
        crate::allocs::per_call(&allocs[1], warm),
        crate::allocs::per_call(&allocs[2], warm),
    ));
    ctx.remove(&keys)?;
    let total = (n * size) as u64;
    let mut rows = vec![
        ctx.row(name, "put", "1 x 4 KiB", n as u64, total, &put_calls, false),
        ctx.row(name, "get", "1 x 4 KiB", n as u64, total, &get_calls, false),
        ctx.row(name, "exist", "1 key", n as u64, 0, &exist_calls, false),
    ];
    for (row, counts) in rows.iter_mut().zip(&allocs) {
        row.allocs_per_call = Some(crate::allocs::per_call(counts, warm));
    }
    Ok(rows)
}

// ---- A batch of big objects -----------------------------------------------------------------

fn big_batch(ctx: &mut Ctx<'_>, name: &str, n: usize, size: usize, rounds: usize) -> R<Vec<Row>> {
    let mut src: Vec<Vec<u8>> = (0..n).map(|_| vec![0u8; size]).collect();
    let mut dst: Vec<Vec<u8>> = (0..n).map(|_| vec![0xA5u8; size]).collect();
    let mut put_calls = Vec::new();
    let mut get_calls = Vec::new();
    for round in 0..rounds {
        ctx.say(format!(
            "{name}: round {}/{rounds}: batch put + get of {n} x {} MiB",
            round + 1,
            size >> 20
        ));
        // Fresh data per round: a stale read from the previous round would not match.
        for (i, s) in src.iter_mut().enumerate() {
            fill(s, seed(0xB16 + round as u64, i as u64));
        }
        for d in dst.iter_mut() {
            d[0] ^= 0xFF;
        }
        let keys: Vec<String> = (0..n)
            .map(|i| ctx.key(name, format!("r{round}/{i}")))
            .collect();
        let krefs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values: Vec<&[u8]> = src.iter().map(Vec::as_slice).collect();
        ctx.track(&krefs);
        let (res, t) = elapsed(|| ctx.client().batch_put(&krefs, &values, &ctx.place.opts));
        let res = res.context(|| format!("{name}: batch_put of {n} keys"))?;
        all_ok(res, &krefs, &format!("{name}: put"))?;
        put_calls.push(t);
        if round == 0 {
            ctx.check_placement(name, &krefs)?;
        }
        let mut bufs: Vec<&mut [u8]> = dst.iter_mut().map(Vec::as_mut_slice).collect();
        let (res, t) = elapsed(|| ctx.client().batch_get_into(&krefs, &mut bufs));
        let res = res.context(|| format!("{name}: batch_get_into of {n} keys"))?;
        let sizes = all_ok(res, &krefs, &format!("{name}: get"))?;
        get_calls.push(t);
        verify_objects(
            ctx,
            &format!("{name} round {}", round + 1),
            &krefs,
            &sizes,
            &src,
            &dst,
        );
        ctx.remove(&keys)?;
    }
    let per_round = (n * size) as u64;
    let r = rounds as u64;
    let shape = format!("{n} x {} MiB", size >> 20);
    Ok(vec![
        ctx.row(
            name,
            "put",
            &shape,
            n as u64 * r,
            per_round * r,
            &put_calls,
            true,
        ),
        ctx.row(
            name,
            "get",
            &shape,
            n as u64 * r,
            per_round * r,
            &get_calls,
            true,
        ),
    ])
}

// ---- DeepSeek-R1 KV blocks ------------------------------------------------------------------

fn deepseek(ctx: &mut Ctx<'_>, n: usize, batch: usize, passes: usize) -> R<Vec<Row>> {
    let name = "deepseek-r1";
    ctx.say(format!(
        "{name}: {n} blocks of {LAYERS} x (128 + 16) KiB = {} pieces each",
        2 * LAYERS
    ));
    let keys: Vec<String> = (0..n).map(|b| ctx.key(name, format!("blk{b}"))).collect();
    let mut src = KvCache::new(n, 0, 1);
    for b in 0..n {
        src.fill_block(b, seed(0xD5, b as u64));
    }
    // The reader's cache: other buffers, another block table.
    let mut dst = KvCache::new(n, 0xA5, 2);
    let all: Vec<usize> = (0..n).collect();
    let batches: Vec<&[usize]> = all.chunks(batch.max(1)).collect();

    ctx.say(format!(
        "{name}: batch_put_parts, {} batches of {batch}",
        batches.len()
    ));
    let mut put_calls = Vec::with_capacity(batches.len());
    for b in &batches {
        let bkeys: Vec<&str> = b.iter().map(|&i| keys[i].as_str()).collect();
        let parts: Vec<Vec<&[u8]>> = b.iter().map(|&i| src.parts(i)).collect();
        let values: Vec<&[&[u8]]> = parts.iter().map(Vec::as_slice).collect();
        ctx.track(&bkeys);
        let (res, t) = elapsed(|| {
            ctx.client()
                .batch_put_parts(&bkeys, &values, &ctx.place.opts)
        });
        let res = res.context(|| format!("{name}: batch_put_parts of {} keys", bkeys.len()))?;
        all_ok(res, &bkeys, &format!("{name}: put"))?;
        put_calls.push(t);
    }
    ctx.check_placement(name, &keys)?;

    let mut get_calls = Vec::with_capacity(batches.len() * passes);
    for pass in 0..passes {
        ctx.say(format!(
            "{name}: batch_get_into_parts, pass {}/{passes}",
            pass + 1
        ));
        if pass > 0 {
            dst.poison(0xA5 ^ pass as u8);
        }
        for b in &batches {
            let bkeys: Vec<&str> = b.iter().map(|&i| keys[i].as_str()).collect();
            let mut parts = dst.parts_mut(b);
            let mut views: Vec<&mut [&mut [u8]]> =
                parts.iter_mut().map(Vec::as_mut_slice).collect();
            let (res, t) = elapsed(|| ctx.client().batch_get_into_parts(&bkeys, &mut views));
            let res =
                res.context(|| format!("{name}: batch_get_into_parts of {} keys", bkeys.len()))?;
            let sizes = all_ok(res, &bkeys, &format!("{name}: get"))?;
            get_calls.push(t);
            for (size, k) in sizes.iter().zip(&bkeys) {
                if *size != BLOCK_BYTES as u64 {
                    ctx.checks.fail(format!(
                        "{name}: get {k:?} returned {size} bytes, expected {BLOCK_BYTES}"
                    ));
                }
            }
        }
        let (bad, messages) = diff_blocks(&src, &dst, &keys, 5);
        for m in messages {
            ctx.checks.fail(format!("{name}: pass {}: {m}", pass + 1));
        }
        if bad > 5 {
            ctx.checks.fail(format!(
                "{name}: pass {}: {bad} pieces differ in all",
                pass + 1
            ));
        }
    }
    ctx.remove(&keys)?;
    let total = (n * BLOCK_BYTES) as u64;
    let shape = format!("{batch} keys x {} pieces", 2 * LAYERS);
    Ok(vec![
        ctx.row(name, "put", &shape, n as u64, total, &put_calls, true),
        ctx.row(
            name,
            "get",
            &shape,
            (n * passes) as u64,
            total * passes as u64,
            &get_calls,
            true,
        ),
    ])
}

// ---- batch_exist ----------------------------------------------------------------------------

fn exist(ctx: &mut Ctx<'_>, n: usize, calls: usize) -> R<Vec<Row>> {
    let name = "exist";
    let size = 64;
    let keys: Vec<String> = (0..n).map(|i| ctx.key(name, i)).collect();
    let krefs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut data = vec![0u8; n * size];
    for (i, c) in data.chunks_exact_mut(size).enumerate() {
        fill(c, seed(0xE7, i as u64));
    }
    let values: Vec<&[u8]> = data.chunks_exact(size).collect();
    ctx.say(format!(
        "{name}: batch_put of {n} x {size} B, then {calls} batch_exist calls"
    ));
    ctx.track(&krefs);
    let res = ctx
        .client()
        .batch_put(&krefs, &values, &ctx.place.opts)
        .context(|| format!("{name}: batch_put of {n} keys"))?;
    all_ok(res, &krefs, &format!("{name}: put"))?;

    let mut times = Vec::with_capacity(calls);
    let mut missing = 0;
    for _ in 0..calls {
        let (res, t) = elapsed(|| ctx.client().batch_exist(&krefs));
        let res = res.context(|| format!("{name}: batch_exist of {n} keys"))?;
        times.push(t);
        for (r, k) in res.into_iter().zip(&krefs) {
            match r {
                Ok(()) => {}
                Err(Error::NotFound { .. }) => {
                    missing += 1;
                    if missing <= 5 {
                        ctx.checks
                            .fail(format!("{name}: {k:?} was put but is reported missing"));
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
        ctx.checks
            .fail(format!("{name}: {missing} keys reported missing in all"));
    }
    ctx.remove(&keys)?;
    Ok(vec![ctx.row(
        name,
        "batch_exist",
        &format!("{n} keys"),
        (n * calls) as u64,
        0,
        &times,
        false,
    )])
}
