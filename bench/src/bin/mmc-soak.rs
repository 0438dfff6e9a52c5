//! `mmc-soak`: a long mixed load against a running cluster (`scripts/soak.sh` starts one and runs
//! this), to show that nothing grows or breaks over minutes: T threads over a few clients (half
//! of them forced to TCP, half on the fastest transport), each looping over puts (1 KiB .. 4 MiB,
//! log-uniform), gets, exists, removes, batch puts and batch gets (2..8 keys of 1 .. 256 KiB) on
//! a key space far larger than the pools, so eviction runs all the time. Every byte read back is
//! checked against the pattern its put wrote (derived from the key and the size).
//!
//! It samples the resident memory (`VmRSS`, and `RssAnon`: the heap, without the pools' shared
//! pages) of the processes given with `--watch NAME:PID` after the warm-up and at the end, and
//! exits 1 when any grew by more than `--rss-growth-max-mb`, when a byte read back was wrong, or
//! when a watched process died.

#[path = "../pattern.rs"]
mod pattern;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use mmc_config::{logging, DataOpType, LogLevel};
use mmc_dataplane::{Client, ClientConfig, PutOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "MemCache soak load: mixed operations and sizes for minutes; \
                            RSS of the services before and after"
)]
struct Args {
    /// The meta service, e.g. tcp://127.0.0.1:5000.
    #[arg(long)]
    meta: String,
    /// Load threads.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Clients the threads share (odd-numbered ones use TCP only).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Total run time in seconds, warm-up included.
    #[arg(long, default_value_t = 120)]
    duration_s: u64,
    /// Warm-up in seconds: RSS is first sampled at its end.
    #[arg(long, default_value_t = 15)]
    warmup_s: u64,
    /// Keys of single puts, gets and removes (each object up to 4 MiB, 0.5 MiB on average).
    #[arg(long, default_value_t = 400)]
    keys: u64,
    /// Keys of batch puts, gets and exists (each object up to 256 KiB, 46 KiB on average).
    #[arg(long, default_value_t = 2_000)]
    batch_keys: u64,
    /// Timeout of every call, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// A process to sample, NAME:PID (repeat).
    #[arg(long, value_name = "NAME:PID")]
    watch: Vec<String>,
    /// Most VmRSS growth allowed per watched process, after the warm-up, in MiB.
    #[arg(long, default_value_t = 32)]
    rss_growth_max_mb: u64,
    /// Seed of the operations' choices (default: the clock).
    #[arg(long)]
    seed: Option<u64>,
}

const KIB: usize = 1024;
const BIG_MAX: usize = 4 * KIB * KIB;
const BATCH_VALUE_MAX: usize = 256 * KIB;
const BATCH_KEYS_MAX: usize = 8;
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What a thread does next, with its weight (of 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Put,
    Get,
    Exist,
    Remove,
    BatchPut,
    BatchGet,
}

const MIX: [(Op, u32); 6] = [
    (Op::Put, 25),
    (Op::Get, 30),
    (Op::Exist, 10),
    (Op::Remove, 10),
    (Op::BatchPut, 10),
    (Op::BatchGet, 15),
];

/// Per operation: how many calls (per key for batches) ended with each code (0 = success).
#[derive(Default)]
struct Tally {
    codes: BTreeMap<(Op, i32), u64>,
}

impl Tally {
    fn add(&mut self, op: Op, code: i32) {
        *self.codes.entry((op, code)).or_default() += 1;
    }
}

/// A cheap key hash for the pattern's seed (FNV-1a).
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The bytes every put of `key` with `len` bytes writes.
fn fill(buf: &mut [u8], key: &str) {
    pattern::fill(buf, pattern::seed(key_hash(key), buf.len() as u64));
}

fn verify(key: &str, got: &[u8], scratch: &mut Vec<u8>) -> bool {
    scratch.resize(got.len(), 0);
    fill(scratch, key);
    pattern::first_diff(scratch, got).is_none()
}

/// A size between `lo` and `hi`, log-uniform.
fn size(rng: &mut StdRng, lo: usize, hi: usize) -> usize {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    (rng.gen_range(a..=b).exp() as usize).clamp(lo, hi)
}

fn code<T>(r: &mmc_dataplane::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.code().as_i32(),
    }
}

struct Shared {
    stop: AtomicBool,
    ops: AtomicU64,
    wrong: AtomicU64,
    tally: Mutex<Tally>,
}

/// One load thread: its own RNG and buffers; results merged into `shared` at the end.
fn load(client: &Client, args: &Args, seed: u64, shared: &Shared) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut value = vec![0u8; BIG_MAX];
    let mut scratch = Vec::with_capacity(BIG_MAX);
    let mut batch_bufs: Vec<Vec<u8>> = (0..BATCH_KEYS_MAX)
        .map(|_| vec![0u8; BATCH_VALUE_MAX])
        .collect();
    let total: u32 = MIX.iter().map(|(_, w)| w).sum();
    let opts = PutOptions::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut pick = rng.gen_range(0..total);
        let op = MIX
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map(|(op, _)| *op)
            .expect("a weight covers every pick");
        let big = format!("soak-{}", rng.gen_range(0..args.keys));
        let batch: Vec<String> = (0..rng.gen_range(2..=BATCH_KEYS_MAX))
            .map(|_| format!("soak-b-{}", rng.gen_range(0..args.batch_keys)))
            .collect();
        let batch: Vec<&str> = batch.iter().map(String::as_str).collect();
        match op {
            Op::Put => {
                let len = size(&mut rng, KIB, BIG_MAX);
                fill(&mut value[..len], &big);
                tally.add(op, code(&client.put(&big, &value[..len], &opts)));
            }
            Op::Get => {
                let r = client.get(&big);
                if let Ok(bytes) = &r {
                    if !verify(&big, bytes, &mut scratch) {
                        shared.wrong.fetch_add(1, Ordering::Relaxed);
                        eprintln!("soak: WRONG BYTES for {big} ({} bytes)", bytes.len());
                    }
                }
                tally.add(op, code(&r));
            }
            Op::Exist => match client.batch_exist(&batch) {
                Ok(rs) => rs.iter().for_each(|r| tally.add(op, code(r))),
                Err(e) => tally.add(op, e.code().as_i32()),
            },
            Op::Remove => tally.add(op, code(&client.remove(&big))),
            Op::BatchPut => {
                let mut values = Vec::with_capacity(batch.len());
                for (key, buf) in batch.iter().zip(batch_bufs.iter_mut()) {
                    let len = size(&mut rng, KIB, BATCH_VALUE_MAX);
                    fill(&mut buf[..len], key);
                    values.push(&buf[..len]);
                }
                match client.batch_put(&batch, &values, &opts) {
                    Ok(rs) => rs.iter().for_each(|r| tally.add(op, code(r))),
                    Err(e) => tally.add(op, e.code().as_i32()),
                }
            }
            Op::BatchGet => {
                let mut bufs: Vec<&mut [u8]> = batch_bufs
                    .iter_mut()
                    .take(batch.len())
                    .map(|b| &mut b[..])
                    .collect();
                match client.batch_get_into(&batch, &mut bufs) {
                    Ok(rs) => {
                        for ((key, r), buf) in batch.iter().zip(&rs).zip(&bufs) {
                            if let Ok(n) = r {
                                if !verify(key, &buf[..*n as usize], &mut scratch) {
                                    shared.wrong.fetch_add(1, Ordering::Relaxed);
                                    eprintln!("soak: WRONG BYTES for {key} ({n} bytes, batch)");
                                }
                            }
                            tally.add(op, code(r));
                        }
                    }
                    Err(e) => tally.add(op, e.code().as_i32()),
                }
            }
        }
        shared.ops.fetch_add(1, Ordering::Relaxed);
    }
    let mut all = shared.tally.lock().expect("tally lock");
    for (k, n) in tally.codes {
        *all.codes.entry(k).or_default() += n;
    }
}

/// (VmRSS, RssAnon) of `pid` in KiB, or `None` when it is gone.
fn rss_kib(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:").unwrap_or(0)))
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(LogLevel::Warn);
    let watched: Vec<(String, String)> = match args
        .watch
        .iter()
        .map(|w| {
            w.split_once(':')
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .ok_or_else(|| format!("--watch {w}: expected NAME:PID"))
        })
        .collect::<Result<_, _>>()
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("mmc-soak: {e}");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let clients: Vec<Client> = match (0..args.clients.max(1))
        .map(|i| {
            Client::connect(&ClientConfig {
                meta_url: args.meta.clone(),
                timeout_ms: args.timeout_ms,
                transport: (i % 2 == 1).then_some(DataOpType::Tcp),
                ..ClientConfig::default()
            })
        })
        .collect::<Result<_, _>>()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mmc-soak: cannot connect to {}: {e}", args.meta);
            return ExitCode::from(3);
        }
    };
    println!(
        "soak: {} threads on {} clients (odd ones TCP only), {} s (warm-up {} s), {} keys of \
         1 KiB .. 4 MiB and {} of 1 .. 256 KiB, seed {seed}",
        args.threads,
        clients.len(),
        args.duration_s,
        args.warmup_s,
        args.keys,
        args.batch_keys
    );
    let idle: Vec<String> = watched
        .iter()
        .map(|(n, p)| match rss_kib(p) {
            Some((rss, anon)) => format!(
                "{n} {:.1} MiB (anon {:.1})",
                rss as f64 / 1024.0,
                anon as f64 / 1024.0
            ),
            None => format!("{n} GONE"),
        })
        .collect();
    println!("soak: VmRSS before the load: {}", idle.join(", "));
    let shared = Shared {
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        wrong: AtomicU64::new(0),
        tally: Mutex::new(Tally::default()),
    };
    let started = Instant::now();
    let duration = Duration::from_secs(args.duration_s);
    let warmup = Duration::from_secs(args.warmup_s.min(args.duration_s / 2));
    let mut at_start: Option<Vec<Option<(u64, u64)>>> = None;
    let mut at_end = Vec::new();
    std::thread::scope(|s| {
        for t in 0..args.threads {
            let (client, args, shared) = (&clients[t % clients.len()], &args, &shared);
            s.spawn(move || load(client, args, seed.wrapping_add(t as u64), shared));
        }
        let mut last = (Instant::now(), 0u64);
        let mut next_report = started + REPORT_EVERY;
        while started.elapsed() < duration {
            std::thread::sleep(Duration::from_millis(100));
            if at_start.is_none() && started.elapsed() >= warmup {
                at_start = Some(watched.iter().map(|(_, p)| rss_kib(p)).collect());
            }
            if Instant::now() >= next_report {
                let ops = shared.ops.load(Ordering::Relaxed);
                let rate = (ops - last.1) as f64 / last.0.elapsed().as_secs_f64();
                let rss: Vec<String> = watched
                    .iter()
                    .map(|(n, p)| match rss_kib(p) {
                        Some((rss, _)) => format!("{n} {:.1} MiB", rss as f64 / 1024.0),
                        None => format!("{n} GONE"),
                    })
                    .collect();
                println!(
                    "soak: {:>4} s  {ops} ops  {rate:.0} ops/s  wrong {}  RSS {}",
                    started.elapsed().as_secs(),
                    shared.wrong.load(Ordering::Relaxed),
                    rss.join(", ")
                );
                last = (Instant::now(), ops);
                next_report += REPORT_EVERY;
            }
        }
        at_end = watched.iter().map(|(_, p)| rss_kib(p)).collect();
        shared.stop.store(true, Ordering::Relaxed);
    });
    let elapsed = started.elapsed();

    let tally = shared.tally.into_inner().expect("tally lock");
    let ops = shared.ops.load(Ordering::Relaxed);
    let wrong = shared.wrong.load(Ordering::Relaxed);
    println!(
        "\nsoak: {ops} operations in {:.0} s ({:.0}/s); outcomes per key (code: count; 0 = ok, \
         -3006 exists, -3007 not found):",
        elapsed.as_secs_f64(),
        ops as f64 / elapsed.as_secs_f64()
    );
    let mut errors: BTreeMap<i32, u64> = BTreeMap::new();
    for op in MIX.iter().map(|(op, _)| *op) {
        let line: Vec<String> = tally
            .codes
            .iter()
            .filter(|((o, _), _)| *o == op)
            .map(|((_, c), n)| format!("{c}: {n}"))
            .collect();
        println!("  {:<9} {}", format!("{op:?}"), line.join(", "));
    }
    for ((_, c), n) in &tally.codes {
        if ![0, -3006, -3007].contains(c) {
            *errors.entry(*c).or_default() += n;
        }
    }
    println!("soak: errors by code (other than ok / exists / not found): {errors:?}");
    println!("soak: wrong bytes: {wrong}");
    match clients[0].status() {
        Ok(st) => {
            let used: u64 = st.segments.iter().map(|s| s.used).sum();
            let capacity: u64 = st.segments.iter().map(|s| s.capacity).sum();
            println!(
                "soak: at the end: {} objects, {:.1} of {:.1} MiB used, {} evicted in all, {} \
                 services alive of {}",
                st.objects,
                used as f64 / (1 << 20) as f64,
                capacity as f64 / (1 << 20) as f64,
                st.evicted_total,
                st.segments.iter().filter(|s| s.alive).count(),
                st.segments.len()
            );
        }
        Err(e) => {
            println!("soak: status failed at the end: {e}");
        }
    }
    let mut failed = wrong > 0;
    println!(
        "soak: RSS after the warm-up -> at the end (growth bound {} MiB per process):",
        args.rss_growth_max_mb
    );
    let at_start = at_start.unwrap_or_else(|| vec![None; watched.len()]);
    for (((name, pid), start), end) in watched.iter().zip(&at_start).zip(&at_end) {
        match (start, end) {
            (Some((r0, a0)), Some((r1, a1))) => {
                let grown = r1.saturating_sub(*r0);
                let over = grown > args.rss_growth_max_mb * 1024;
                failed |= over;
                println!(
                    "  {name:<5} (pid {pid}): VmRSS {:.1} -> {:.1} MiB ({:+.1}), RssAnon {:.1} \
                     -> {:.1} MiB ({:+.1}){}",
                    *r0 as f64 / 1024.0,
                    *r1 as f64 / 1024.0,
                    (*r1 as f64 - *r0 as f64) / 1024.0,
                    *a0 as f64 / 1024.0,
                    *a1 as f64 / 1024.0,
                    (*a1 as f64 - *a0 as f64) / 1024.0,
                    if over { "  OVER THE BOUND" } else { "" }
                );
            }
            _ => {
                failed = true;
                println!("  {name:<5} (pid {pid}): GONE");
            }
        }
    }
    if failed {
        println!("soak: FAILED");
        ExitCode::from(1)
    } else {
        println!("soak: passed");
        ExitCode::SUCCESS
    }
}
