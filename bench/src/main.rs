//! `mmc-bench`: MemCache's KV-cache workloads side by side with their baselines and peers.
//!
//! With no `--meta` it starts its own cluster on 127.0.0.1 (a meta service in this process and
//! `mmc-local` processes built next to this binary) and stops it at the end. Every workload runs on
//! three placements: the data in the caller's own process (an embedded local service), in another
//! process on this host, and behind TCP only. Baselines are measured in the same run: memcpy of
//! the same bytes, raw TCP streams (as many as the client uses) of the same bytes, a TCP
//! ping-pong, Redis and memcached (started here when installed), and Mooncake Store with `--peers mooncake`. Every byte read back
//! is verified; the targets are judged as pass / short.

mod allocs;
mod baselines;
mod chart;
mod cluster;
mod extra;
mod fresh;
mod kv;
mod meta_ops;
mod meta_scale;
mod mooncake;
mod pattern;
mod peers;
mod progress;
mod rdma;
mod rdma_caller;
mod report;
mod steady;
mod targets;
mod tls_rows;
mod uring_send;
mod workloads;

#[global_allocator]
static ALLOC: allocs::Counting = allocs::Counting;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use mmc_config::logging;
use mmc_config::DataOpType;
use mmc_config::{parse_size, LogLevel};
use mmc_controlplane::msg::PREFERRED_AFFINITY;
use mmc_dataplane::{Client, ClientConfig, LocalConfig, PutOptions};

use crate::cluster::{Cluster, TempDir};
use crate::extra::Extra;
use crate::progress::Progress;
use crate::report::{Machine, Report, Row, HOST, MEMCACHED, OWN, REDIS, TCP};
use crate::workloads::{Checks, Ctx, Place, Plan, NAMES};

const EXIT_VERIFY: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_ERROR: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "MemCache benchmark: KV-cache workloads on three placements (own process, same host, \
             TCP) against memcpy, raw TCP streams, Redis, memcached and (--peers mooncake) \
             Mooncake Store, measured in one run; table, JSON and PNG chart"
)]
struct Args {
    /// Use a running cluster's meta service (e.g. tcp://127.0.0.1:5000) instead of starting one.
    #[arg(long)]
    meta: Option<String>,
    /// Smaller counts: well under a minute in a release build.
    #[arg(long)]
    quick: bool,
    /// Exit 1 if any byte read back differs (an operation that fails always exits 3).
    #[arg(long)]
    check: bool,
    /// Write every figure, the targets and the machine as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the chart as PNG and SVG (FILE with the extensions .png and .svg).
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// Extra peers to measure (comma-separated): mooncake.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    peers: Vec<String>,
    /// Skip Redis and memcached.
    #[arg(long)]
    no_kv_peers: bool,
    /// Only these placements (comma-separated): own, host, tcp.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    placements: Vec<String>,
    /// Only these workloads (comma-separated): first-write, 4k, batch-1m, batch-8m, deepseek-r1,
    /// exist, fresh (first writes into never-used space of a pool larger than the huge-page
    /// reserve, own and host), steady (a pool at its eviction watermark: every put evicts; own
    /// and host, each with a cluster of its own).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    workloads: Vec<String>,
    /// DRAM of each local service the benchmark starts (and of its own embedded one); default
    /// 1GB, 512MB with --quick.
    #[arg(long, value_name = "SIZE")]
    dram: Option<String>,
    /// Measure 4 KiB latency with busy-polling too (an extra mmc-local with --busy-poll-us 50, a
    /// client with busy_poll_us 50, a busy-poll ping-pong); on by default in full runs, off with
    /// --quick unless given.
    #[arg(long)]
    busy_poll: bool,
    /// How long the busy-poll rows' client and local service spin for each reply / request
    /// before blocking. 50 covers a loopback round trip (about 15-50 us on the project's VM) and
    /// soon stops burning a core on an idle connection.
    #[arg(long, default_value_t = 50, value_name = "US")]
    busy_poll_us: u64,
    /// The Python venv with mooncake-transfer-engine-non-cuda (default $MOONCAKE_VENV;
    /// `bench/peers/mooncake/install.sh DIR` makes one).
    #[arg(long, value_name = "DIR")]
    mooncake_venv: Option<PathBuf>,
    /// The Mooncake peer harness, with up.sh and workloads.py (default: this repository's
    /// bench/peers/mooncake).
    #[arg(long, value_name = "DIR")]
    mooncake_dir: Option<PathBuf>,
    /// Every client checks each get's bytes against the object's CRC-32C (`verify_reads`): run
    /// with and without to see its cost.
    #[arg(long)]
    verify_reads: bool,
    /// Client timeout per call, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// Measure raw TCP sent with io_uring (SEND_ZC from a registered buffer) against plain
    /// writes, interleaved (uring_send.rs); on by default in full runs, off with --quick unless
    /// given.
    #[arg(long)]
    uring_send: bool,
    /// debug, info, warn or error (RUST_LOG overrides).
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// The RDMA provider of the rdma rows: `sim` (the simulated NIC: software overhead) or
    /// `verbs` (a real device, build with `--features mmc-hal/rdma`); `none` skips them.
    #[arg(long, default_value = "sim", value_name = "NAME")]
    rdma_provider: String,
    /// Measure the TCP placement with mutual TLS 1.3 on too (batch-8m and 4k, against a second
    /// cluster with TLS on every channel, certificates made at run time); on by default in full
    /// runs, off with --quick unless given.
    #[arg(long)]
    tls: bool,
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

fn check_list(what: &str, given: &[String], known: &[&str]) -> Result<(), Fail> {
    for g in given {
        if !known.contains(&g.as_str()) {
            return Err(Fail::Usage(format!(
                "unknown {what} {g:?}; known: {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn run(args: &Args) -> Result<ExitCode, Fail> {
    let started = Instant::now();
    let level = LogLevel::parse(&args.log_level).map_err(|e| Fail::Usage(e.to_string()))?;
    logging::init(level);
    check_list("workload", &args.workloads, NAMES)?;
    check_list("placement", &args.placements, &[OWN, HOST, TCP])?;
    check_list("peer", &args.peers, &["mooncake"])?;
    let mut names: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| args.workloads.is_empty() || args.workloads.iter().any(|w| w == n))
        .collect();
    // The meta service's own rows (in-process core, and a meta process): no placement, no peers.
    let meta_names = meta_ops::take(&mut names);
    let placements: Vec<&'static str> = [OWN, HOST, TCP]
        .into_iter()
        .filter(|p| args.placements.is_empty() || args.placements.iter().any(|w| w == p))
        .collect();
    let plan = Plan::new(args.quick);
    let dram = match &args.dram {
        Some(s) => parse_size(s).map_err(|e| Fail::Usage(format!("--dram: {e}")))?,
        None if args.quick => 512 << 20,
        None => 1 << 30,
    };
    if dram < plan.peak_bytes() + (64 << 20) {
        return Err(Fail::Usage(format!(
            "--dram {dram}: each pool needs at least {} MiB for this plan",
            (plan.peak_bytes() >> 20) + 64
        )));
    }
    let mooncake = args.peers.iter().any(|p| p == "mooncake");
    let kv_peers: Vec<&'static str> = if args.no_kv_peers {
        Vec::new()
    } else {
        vec![REDIS, MEMCACHED]
    };
    // Busy-poll rows: 4 KiB on host and tcp, in full runs or with --busy-poll; only with the
    // cluster this run starts (it needs its own busy-polling mmc-local).
    let busy_places: Vec<&'static str> =
        if (args.busy_poll || !args.quick) && args.meta.is_none() && names.contains(&"4k") {
            placements
                .iter()
                .copied()
                .filter(|p| *p == HOST || *p == TCP)
                .collect()
        } else {
            Vec::new()
        };
    let busy_poll = !busy_places.is_empty();
    // The data-server comparison: tcp 16 x 8 MiB on an mmc-local with shard threads (full runs).
    let shards_row = !args.quick
        && args.meta.is_none()
        && names.contains(&"batch-8m")
        && placements.contains(&TCP);
    let tls_names: Vec<&str> =
        if (args.tls || !args.quick) && args.meta.is_none() && placements.contains(&TCP) {
            names
                .iter()
                .copied()
                .filter(|n| ["batch-8m", "4k"].contains(n))
                .collect()
        } else {
            Vec::new()
        };
    let peer_workloads = names
        .iter()
        .filter(|n| **n != "first-write" && !workloads::own_setup(n))
        .count() as u64;
    // Workloads with pools of their own: own, and host with the cluster this run starts.
    let own_host = |name: &str| -> Vec<&'static str> {
        let wanted = |p: &&str| *p == OWN || (*p == HOST && args.meta.is_none());
        match names.contains(&name) {
            true => placements.iter().copied().filter(wanted).collect(),
            false => Vec::new(),
        }
    };
    let (fresh_places, steady_places) = (own_host(fresh::NAME), own_host(steady::NAME));
    let per_placement = names.iter().filter(|n| !workloads::own_setup(n)).count();
    let steps =
        3 + if busy_poll {
            1 + busy_places.len() as u64
        } else {
            0
        } + 2 * u64::from(shards_row)
            + (placements.len() * per_placement) as u64
            + fresh_places.len() as u64
            + steady_places.len() as u64
            + tls_names.len() as u64
            + kv_peers.len() as u64 * peer_workloads
            + if mooncake { 2 } else { 0 };
    let progress = Progress::new(steps, args.quiet);
    let dir = TempDir::new().map_err(Fail::Run)?;
    let mut notes: Vec<String> = Vec::new();
    let mut checks = Checks::default();
    let mut op_failures: Vec<String> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    notes.push(
        "latency (blocking rows): every call blocks, threads not pinned; ratios against the \
         blocking 64-byte ping-pong"
            .into(),
    );
    if busy_poll {
        let us = args.busy_poll_us;
        notes.push(format!(
            "latency (busy-poll rows): a client with busy_poll_us {us} and an extra \
             mmc-local with --busy-poll-us {us} (the meta service still answers from \
             blocking threads); tcp = transport forced to TCP, host = shared memory for data, so \
             only the meta round trips spin; ratios against the busy-poll ping-pong (both ends \
             spinning on non-blocking reads); {} cores, so a spinning side competes with the \
             other side for a core",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        ));
    } else if args.busy_poll {
        let why = if args.meta.is_some() {
            "needs the cluster mmc-bench starts (--meta given)"
        } else {
            "needs the 4k workload on host or tcp"
        };
        progress.note(format!("busy-poll rows skipped: {why}"));
        notes.push(format!("busy-poll rows skipped: {why}"));
    }

    // Baselines first, on a quiet machine.
    let reps = if args.quick { 4 } else { 8 };
    progress.say("baseline: memcpy of the same bytes");
    match baselines::memcpy_rows(reps) {
        Ok((r, kind)) => {
            rows.extend(r);
            notes.push(format!(
                "memcpy baseline: caller's heap buffers <-> a pre-faulted pool arena ({kind}), \
                 1 thread"
            ));
        }
        Err(e) => notes.push(format!("memcpy baseline failed: {e}")),
    }
    progress.step();
    let streams = baselines::TCP_STREAMS;
    progress.say(format!(
        "baseline: {streams} TCP streams of the same bytes over loopback"
    ));
    match baselines::tcp_stream_rows(3 * reps, streams) {
        Ok((r, note)) => {
            rows.extend(r);
            notes.push(note);
        }
        Err(e) => notes.push(format!("tcp stream baseline failed: {e}")),
    }
    progress.step();
    if args.uring_send || !args.quick {
        progress.say("experiment: raw TCP with io_uring SEND_ZC vs write, interleaved");
        match uring_send::rows(reps, streams) {
            Ok((r, note)) => {
                rows.extend(r);
                notes.push(note);
            }
            Err(e) => notes.push(format!("io_uring send experiment failed: {e}")),
        }
    }
    progress.say("baseline: 64-byte TCP ping-pong (blocking)");
    match baselines::ping_pong_row(if args.quick { 1000 } else { 5000 }, false) {
        Ok(r) => rows.push(r),
        Err(e) => notes.push(format!("ping-pong baseline failed: {e}")),
    }
    progress.step();
    if busy_poll {
        progress.say("baseline: 64-byte TCP ping-pong (both ends busy-polling)");
        match baselines::ping_pong_row(if args.quick { 1000 } else { 5000 }, true) {
            Ok(r) => rows.push(r),
            Err(e) => notes.push(format!("busy-poll ping-pong baseline failed: {e}")),
        }
        progress.step();
    }

    // The cluster.
    let mut cluster = None;
    let meta = match &args.meta {
        Some(m) => m.clone(),
        None => {
            progress.say("starting a meta service and local services on 127.0.0.1");
            let mut c = Cluster::start(&dir.0, level).map_err(Fail::Run)?;
            // The tcp placement's service offers TCP only (`--protocol tcp`), as its client
            // asks for (`transport = tcp`): both ends force it.
            for &pl in placements.iter().filter(|p| **p != OWN) {
                let flags: &[&str] = if pl == TCP {
                    &["--protocol", "tcp"]
                } else {
                    &[]
                };
                c.add_local_with(dram, flags).map_err(Fail::Run)?;
            }
            let url = c.meta_url.clone();
            for l in &c.locals {
                notes.push(format!(
                    "mmc-local rank {} at {}, {} MiB DRAM",
                    l.rank,
                    l.endpoint,
                    dram >> 20
                ));
            }
            cluster = Some(c);
            url
        }
    };
    let config = ClientConfig {
        meta_url: meta.clone(),
        timeout_ms: args.timeout_ms,
        log_level: level,
        verify_reads: args.verify_reads,
        ..ClientConfig::default()
    };
    notes.push(if args.verify_reads {
        "verify_reads on: every get checks its bytes against the object's CRC-32C".into()
    } else {
        "verify_reads off (the default); puts always compute the CRC-32C".into()
    });
    // The ranks of the local services the host and tcp placements write to.
    let remote_ranks: Vec<u32> = match &cluster {
        Some(c) => c.locals.iter().map(|l| l.rank).collect(),
        None => {
            let probe = Client::connect(&config)
                .map_err(|e| Fail::Run(format!("connect to {meta}: {e} (code {})", e.code())))?;
            let status = probe
                .status()
                .map_err(|e| Fail::Run(format!("status: {e}")))?;
            let mut ranks: Vec<u32> = status
                .segments
                .iter()
                .filter(|s| s.alive)
                .map(|s| s.rank)
                .collect();
            ranks.dedup();
            ranks
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let prefix = format!("mmc-bench-{}-{now}", std::process::id());
    let local_base = LocalConfig {
        meta_url: meta.clone(),
        data_url: "tcp://127.0.0.1:0".into(),
        dram_bytes: dram,
        log_level: level,
        ..LocalConfig::default()
    };
    let mut next_remote = 0;
    for &pl in &placements {
        let (client, opts, rank) = match pl {
            OWN => {
                progress.say("mmc own: starting an embedded local service in this process");
                let c = Client::with_local_service(&config, &local_base).map_err(|e| {
                    Fail::Run(format!(
                        "client with an embedded local service: {e} (code {})",
                        e.code()
                    ))
                })?;
                let rank = c.local_rank().expect("embedded service has a rank");
                (c, PutOptions::default(), rank)
            }
            _ => {
                let Some(&rank) = remote_ranks.get(next_remote.min(remote_ranks.len().max(1) - 1))
                else {
                    notes.push(format!(
                        "placement {pl} skipped: no local service is registered"
                    ));
                    continue;
                };
                next_remote += 1;
                let cfg = ClientConfig {
                    transport: if pl == TCP {
                        Some(DataOpType::Tcp)
                    } else {
                        None
                    },
                    ..config.clone()
                };
                let c = Client::connect(&cfg).map_err(|e| {
                    Fail::Run(format!("connect to {meta}: {e} (code {})", e.code()))
                })?;
                let opts = PutOptions {
                    policy: PREFERRED_AFFINITY,
                    preferred: vec![rank as i32],
                    ..PutOptions::default()
                };
                (c, opts, rank)
            }
        };
        let place = Place {
            name: pl,
            client: &client,
            opts,
            rank,
        };
        let mut ctx = Ctx::new(place, prefix.clone(), &progress, &mut checks);
        match workloads::run_all(&mut ctx, &plan, &names) {
            Ok(r) => rows.extend(r),
            Err(f) => {
                progress.note(format!("placement {pl}: FAILED: {f}"));
                op_failures.push(format!("{pl}: {f}"));
            }
        }
        op_failures.extend(workloads::tcp_forced(pl, &client));
        let left = ctx.cleanup();
        if left > 0 {
            progress.note(format!(
                "{left} keys under {prefix}/{pl} could not be removed"
            ));
        }
    }
    // First writes into never-used space: a new, large pool and a new client per placement.
    if !fresh_places.is_empty() {
        let setup = fresh::Setup {
            quick: args.quick,
            config: &config,
            local: local_base.clone(),
            prefix: &prefix,
            progress: &progress,
        };
        let (r, n, f) = fresh::run(&setup, &fresh_places, cluster.as_mut(), &mut checks);
        rows.extend(r);
        notes.extend(n);
        op_failures.extend(f);
    }
    // A pool at its eviction watermark: a cluster of its own per placement.
    if !steady_places.is_empty() {
        let setup = steady::Setup {
            quick: args.quick,
            dir: &dir.0,
            log_level: level,
            config: &config,
            local: local_base.clone(),
            prefix: &prefix,
            progress: &progress,
        };
        let (r, n, f) = steady::run(&setup, &steady_places, &mut checks);
        rows.extend(r);
        notes.extend(n);
        op_failures.extend(f);
    }
    let (r, n) = meta_ops::run(&meta_names, args.quick, &progress);
    rows.extend(r);
    notes.extend(n);
    // Busy-poll rows, the shard-mode data servers and RDMA: extra mmc-local processes.
    if let Some(c) = cluster.as_mut() {
        let extra = Extra {
            meta: &meta,
            prefix: &prefix,
            plan: &plan,
            progress: &progress,
        };
        let out = extra::Out {
            rows: &mut rows,
            notes: &mut notes,
            checks: &mut checks,
            op_failures: &mut op_failures,
        };
        extra::rows(
            c,
            &extra,
            &config,
            args,
            &busy_places,
            shards_row,
            &names,
            out,
        );
    }
    drop(cluster);
    match rdma::overhead(args.quick) {
        _ if args.rdma_provider == "none" => {}
        Ok(r) => rows.extend(r),
        Err(e) => {
            progress.note(format!("rdma overhead rows: FAILED: {e}"));
            op_failures.push(format!("rdma overhead: {e}"));
        }
    }
    if !tls_names.is_empty() {
        progress.say("starting a cluster with mutual TLS 1.3 on every channel for the TLS rows");
        let dram_tls = plan.peak_bytes() + (64 << 20);
        match tls_rows::rows(
            &dir.0,
            &config,
            dram_tls,
            &tls_names,
            &prefix,
            &plan,
            &progress,
            &mut checks,
        ) {
            Ok((r, note)) => {
                rows.extend(r);
                notes.push(note);
            }
            Err(f) => {
                progress.note(format!("TLS rows: FAILED: {f}"));
                op_failures.push(format!("TLS rows: {f}"));
            }
        }
    }

    // Redis and memcached.
    for &peer in &kv_peers {
        progress.say(format!("{peer}: starting"));
        match peers::start(peer, &dir.0) {
            Ok(server) => {
                match peers::run(&server, &plan, &names, &mut checks, &progress) {
                    Ok(r) => rows.extend(r),
                    Err(e) => {
                        progress.note(format!("{peer}: failed: {e}"));
                        notes.push(format!("{peer} failed: {e}"));
                    }
                }
                drop(server);
            }
            Err(e) => {
                progress.note(format!("{peer} skipped: {e}"));
                notes.push(format!("{peer} skipped: {e}"));
                progress.set_len(steps - peer_workloads);
            }
        }
    }
    if mooncake {
        let opts = mooncake::Opts {
            venv: args.mooncake_venv.clone(),
            dir: args.mooncake_dir.clone(),
        };
        match mooncake::run(&opts, &dir.0, &plan, &progress) {
            Ok(r) => rows.extend(r),
            Err(e) => {
                progress.note(format!("mooncake skipped: {e}"));
                notes.push(format!("mooncake skipped: {e}"));
            }
        }
    }
    progress.finish();

    report::add_ratios(&mut rows);
    let targets = targets::judge(&rows, busy_poll);
    let machine = Machine::probe();
    let subtitle = format!(
        "{}{} cores {}, {}; {}",
        if args.quick { "--quick, " } else { "" },
        machine.cpus,
        machine.cpu_model,
        match &args.meta {
            Some(_) => "existing cluster".to_string(),
            None => "cluster started by mmc-bench".to_string(),
        },
        if busy_poll {
            format!("bp = busy-poll {} us", args.busy_poll_us)
        } else {
            "blocking calls".to_string()
        }
    ) + if args.verify_reads {
        "; verify_reads"
    } else {
        ""
    };

    println!();
    println!(
        "MemCache benchmark{}: {} ({} cores, {}, kernel {}); meta {}",
        if args.quick { " (quick)" } else { "" },
        if args.meta.is_some() {
            "existing cluster"
        } else {
            "cluster started by mmc-bench: meta in-process, mmc-local processes"
        },
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        meta
    );
    println!(
        "placements: own = data in this process's embedded pool; host = another process on this \
         host (transport auto); tcp = another process reached by TCP only"
    );
    println!();
    print!("{}", report::table(&rows));
    println!();
    print!("{}", report::targets_table(&targets));
    println!();
    for n in &notes {
        println!("note: {n}");
    }
    let met = targets.iter().filter(|t| t.pass == Some(true)).count();
    let short = targets.iter().filter(|t| t.pass == Some(false)).count();
    println!(
        "targets: {met} met, {short} short, {} not measured",
        targets.len() - met - short
    );
    if checks.failures == 0 && op_failures.is_empty() {
        println!("verification: every byte read back matched; every operation succeeded");
    } else {
        println!(
            "verification: {} byte/answer FAILURES, {} failed operations (see stderr)",
            checks.failures,
            op_failures.len()
        );
    }
    println!("run took {:.1} s", started.elapsed().as_secs_f64());

    if let Some(path) = &args.chart {
        for p in chart::write(path, &rows, &subtitle).map_err(Fail::Run)? {
            eprintln!("mmc-bench: wrote {}", p.display());
        }
    }
    if let Some(path) = &args.json {
        let report = Report {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            quick: args.quick,
            meta: meta.clone(),
            started_cluster: args.meta.is_none(),
            machine,
            rows,
            targets,
            notes,
            verify_failures: checks.failures,
            verify_messages: checks
                .messages
                .iter()
                .cloned()
                .chain(op_failures.iter().cloned())
                .collect(),
            seconds: started.elapsed().as_secs_f64(),
        };
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Fail::Run(format!("encode JSON: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| Fail::Run(format!("write {}: {e}", path.display())))?;
        eprintln!("mmc-bench: wrote {}", path.display());
    }
    drop(dir);
    if !op_failures.is_empty() {
        return Ok(ExitCode::from(EXIT_ERROR));
    }
    Ok(if args.check && checks.failures > 0 {
        ExitCode::from(EXIT_VERIFY)
    } else {
        ExitCode::SUCCESS
    })
}
