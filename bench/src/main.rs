//! `mmc-bench`: a KV-cache workload against a running MemCache cluster.
//!
//! It connects as a client (a pure client unless `--embedded-dram` gives it its own local
//! service), runs the workload list in `workloads.rs`, verifies every byte it reads back, prints a
//! table with a memcpy baseline measured in the same run, and removes every key it wrote.

mod pattern;
mod report;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use mmc_controlplane::config::{parse_size, LogLevel};
use mmc_controlplane::logging;
use mmc_dataplane::{Client, ClientConfig, LocalConfig};

use crate::report::{human_bytes, Report, Row};
use crate::workloads::{Ctx, Plan, Progress, NAMES};

/// Exit codes.
const EXIT_VERIFY: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_ERROR: u8 = 3;

/// Bytes the memcpy baseline copies.
const MEMCPY_BYTES: usize = 64 << 20;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "MemCache benchmark: a DeepSeek-R1 KV-cache workload, small objects, big batches and \
             batch_exist, each verified byte for byte and compared with a memcpy baseline"
)]
struct Args {
    /// The meta service, e.g. tcp://127.0.0.1:5000 (default $MMC_META_URL).
    #[arg(long)]
    meta: Option<String>,
    /// Smaller counts: well under 20 s in a release build.
    #[arg(long)]
    quick: bool,
    /// DeepSeek-R1 blocks (one key of 61 x (128 + 16) KiB each); default 64, 32 with --quick.
    #[arg(long, value_name = "N")]
    blocks: Option<usize>,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Exit with 1 if any read-back verification failed.
    #[arg(long)]
    check: bool,
    /// Run a local service inside this process with this much DRAM (e.g. 1GB); writes then land
    /// in the client's own pool. Default: a pure client.
    #[arg(long, value_name = "SIZE")]
    embedded_dram: Option<String>,
    /// Only these workloads (comma-separated): deepseek-r1, small-4k, batch-8m, exist.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    workloads: Vec<String>,
    /// Client timeout per call, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// debug, info, warn or error (RUST_LOG overrides).
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(Fail::Usage(msg)) => {
            eprintln!("mmc-bench: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Fail::Run(msg)) => {
            eprintln!("mmc-bench: error: {msg}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

enum Fail {
    Usage(String),
    Run(String),
}

fn run(args: &Args) -> Result<ExitCode, Fail> {
    let level = LogLevel::parse(&args.log_level).map_err(|e| Fail::Usage(e.to_string()))?;
    logging::init(level);
    let meta = args
        .meta
        .clone()
        .or_else(|| std::env::var("MMC_META_URL").ok())
        .ok_or_else(|| Fail::Usage("--meta tcp://IP:PORT is required".into()))?;
    for w in &args.workloads {
        if !NAMES.contains(&w.as_str()) {
            return Err(Fail::Usage(format!(
                "unknown workload {w:?}; known: {}",
                NAMES.join(", ")
            )));
        }
    }
    let embedded_dram = args
        .embedded_dram
        .as_deref()
        .map(|s| parse_size(s).map_err(|e| Fail::Usage(format!("--embedded-dram: {e}"))))
        .transpose()?;
    let progress = Progress::new(args.quiet);

    let config = ClientConfig {
        meta_url: meta.clone(),
        timeout_ms: args.timeout_ms,
        log_level: level,
        ..ClientConfig::default()
    };
    let connected = match embedded_dram {
        None => Client::connect(&config),
        Some(dram_bytes) => Client::with_local_service(
            &config,
            &LocalConfig {
                meta_url: meta.clone(),
                data_url: "tcp://127.0.0.1:0".into(),
                dram_bytes,
                log_level: level,
                ..LocalConfig::default()
            },
        ),
    };
    let client = connected.map_err(|e| {
        Fail::Run(format!(
            "connect to {meta}{}: {e} (code {})",
            if embedded_dram.is_some() {
                " with an embedded local service"
            } else {
                ""
            },
            e.code()
        ))
    })?;
    progress.say(format!(
        "connected to {meta} as {}",
        match client.local_rank() {
            Some(r) => format!("a client with an embedded local service (rank {r})"),
            None => "a pure client".into(),
        }
    ));

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let prefix = format!("mmc-bench-{}-{now}", std::process::id());

    progress.say(format!(
        "memcpy baseline: {} MiB, 1 thread, pre-touched destination",
        MEMCPY_BYTES >> 20
    ));
    let samples = pattern::memcpy_gbps(MEMCPY_BYTES, 7);
    let memcpy = pattern::median(&samples);

    let plan = Plan {
        quick: args.quick,
        blocks: args.blocks.unwrap_or(if args.quick { 32 } else { 64 }),
    };
    let list: Vec<_> = workloads::list(&plan)
        .into_iter()
        .filter(|w| args.workloads.is_empty() || args.workloads.iter().any(|n| n == w.name()))
        .collect();

    let mut ctx = Ctx::new(&client, prefix.clone(), memcpy, progress);
    // Room check: one workload's data is live at a time.
    let status = client
        .status()
        .map_err(|e| Fail::Run(format!("status: {e} (code {})", e.code())))?;
    let free: u64 = status
        .segments
        .iter()
        .filter(|g| g.alive)
        .map(|g| g.capacity.saturating_sub(g.used))
        .sum();
    let peak = list.iter().map(|w| w.live_bytes()).max().unwrap_or(0);
    if status.segments.iter().all(|g| !g.alive) {
        eprintln!(
            "mmc-bench: warning: no live local service is registered with {meta}: puts will fail \
             (start mmc-local, or pass --embedded-dram SIZE)"
        );
    } else if peak > free {
        eprintln!(
            "mmc-bench: warning: the largest workload keeps {} live but the pools have {} free; \
             puts may fail or evict (lower --blocks)",
            human_bytes(peak),
            human_bytes(free)
        );
    }

    let mut rows = vec![Row::from_calls(
        "memcpy",
        "copy 64 MiB (median of 7)",
        1,
        MEMCPY_BYTES as u64,
        &[std::time::Duration::from_secs_f64(
            MEMCPY_BYTES as f64 / (memcpy * 1e9),
        )],
        true,
        memcpy,
    )];
    let mut failure = None;
    for w in &list {
        match w.run(&mut ctx) {
            Ok(r) => rows.extend(r),
            Err(f) => {
                failure = Some(format!("{}: {f}", w.name()));
                break;
            }
        }
    }
    let left = ctx.cleanup();
    if left > 0 {
        eprintln!("mmc-bench: warning: {left} keys under {prefix}/ could not be removed");
    }
    if let Some(msg) = failure {
        if ctx.verify_failures > 0 {
            eprintln!(
                "mmc-bench: also {} verification failures before the error",
                ctx.verify_failures
            );
        }
        return Err(Fail::Run(msg));
    }

    println!();
    println!(
        "MemCache benchmark{}: meta {meta}, {}, latency per call: blocking client calls, threads \
         not pinned",
        if args.quick { " (quick)" } else { "" },
        match client.local_rank() {
            Some(r) => format!(
                "client with embedded local service rank {r} ({})",
                human_bytes(embedded_dram.unwrap_or(0))
            ),
            None => "pure client (every byte over TCP)".into(),
        }
    );
    println!();
    print!("{}", report::table(&rows));
    println!();
    println!("placement (replicas per local service):");
    for p in &ctx.placements {
        println!("  {}", report::placement_lines(p));
    }
    for s in &ctx.status {
        print!("{}", report::status_lines(s));
    }
    if ctx.verify_failures == 0 {
        println!("verification: every byte read back matched");
    } else {
        println!(
            "verification: {} FAILURES (see stderr){}",
            ctx.verify_failures,
            if args.check {
                ""
            } else {
                "; pass --check to exit non-zero"
            }
        );
    }

    if let Some(path) = &args.json {
        let report = Report {
            meta: meta.clone(),
            key_prefix: prefix,
            quick: args.quick,
            embedded_dram,
            client_rank: client.local_rank(),
            latency_mode: "blocking, not pinned",
            memcpy_gbps: memcpy,
            memcpy_gbps_samples: samples,
            rows,
            placement: ctx.placements.clone(),
            status: ctx.status.clone(),
            verify_failures: ctx.verify_failures,
            verify_messages: ctx.verify_messages.clone(),
        };
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Fail::Run(format!("encode JSON: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| Fail::Run(format!("write {}: {e}", path.display())))?;
        eprintln!("mmc-bench: wrote {}", path.display());
    }

    Ok(if args.check && ctx.verify_failures > 0 {
        ExitCode::from(EXIT_VERIFY)
    } else {
        ExitCode::SUCCESS
    })
}
