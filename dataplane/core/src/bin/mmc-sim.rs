//! `mmc-sim`: run the whole-cluster simulation from seeds.
//!
//! ```text
//! mmc-sim [--seed N] [--seeds K] [--steps N] [--canary] [--rdma]
//! ```
//! Without `--seed`, seeds come from `MMC_SIM_SEED` or the clock; `--seeds K` runs K consecutive
//! seeds. Exit 0 when every invariant held, 1 on the first failure (seed and step printed, to
//! replay with `--seed`), 2 on bad usage. With `--canary` one protection (the epoch fence) is
//! switched off on purpose, so the run is expected to fail.

use std::process::ExitCode;
use std::time::Instant;

use mmc_core::sim::{run, SimConfig};

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "mmc-sim: {msg}\nusage: mmc-sim [--seed N] [--seeds K] [--steps N] [--canary] [--rdma]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut seed: Option<u64> = std::env::var("MMC_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut seeds = 1u64;
    let mut steps = 100_000u64;
    let mut canary = false;
    let mut rdma = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Option<u64> {
            args.next().and_then(|v| v.parse().ok()).or_else(|| {
                eprintln!("{name} needs a number");
                None
            })
        };
        match a.as_str() {
            "--seed" => match num("--seed") {
                Some(v) => seed = Some(v),
                None => return usage("--seed needs a number"),
            },
            "--seeds" => match num("--seeds") {
                Some(v) if v > 0 => seeds = v,
                _ => return usage("--seeds needs a number above 0"),
            },
            "--steps" => match num("--steps") {
                Some(v) if v > 0 => steps = v,
                _ => return usage("--steps needs a number above 0"),
            },
            "--canary" => canary = true,
            "--rdma" => rdma = true,
            "-h" | "--help" => {
                println!("usage: mmc-sim [--seed N] [--seeds K] [--steps N] [--canary] [--rdma]");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let first = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_007)
            .unwrap_or(1)
    });
    for s in first..first + seeds {
        let mut cfg = SimConfig::new(s, steps);
        cfg.canary = canary;
        cfg.rdma = rdma;
        let started = Instant::now();
        println!(
            "mmc-sim: seed {s}, {steps} steps{}",
            if canary { ", canary (fence off)" } else { "" }
        );
        if rdma {
            println!("mmc-sim: --rdma: half the copies to other hosts go one-sided (lowered work requests)");
        }
        match run(cfg) {
            Ok(sum) => println!(
                "mmc-sim: seed {s} ok in {:.1} s: {} simulated ms, {} operations ({} with a success), {} gets verified byte for byte, {} checks, {} faults ({} meta restarts, {} re-registrations), {} exact index checks, {} index resets sent, {} oversize puts refused without eviction, {} freezes watched ({} paused and re-admitted, keeping {} objects), {} rejoins after meta restarts ({} objects rebuilt), {} repairs ({} held, {} refused by the checksum), {} one-sided RDMA copies ({} work requests, {} error completions)",
                started.elapsed().as_secs_f64(), sum.sim_ms, sum.ops, sum.ops_ok, sum.gets_verified, sum.checks, sum.faults, sum.meta_restarts, sum.reregistrations, sum.index_exact_checks, sum.index_resets, sum.oversize_refused, sum.pauses_watched, sum.pauses_readmitted, sum.pause_objects_kept, sum.rejoins, sum.objects_rebuilt, sum.repairs_run, sum.repairs_ok, sum.repairs_mismatched, sum.rdma_copies, sum.rdma_wrs, sum.rdma_error_completions
            ),
            Err(f) => {
                println!("mmc-sim: FAILED {f}");
                println!("mmc-sim: replay with: scripts/sim.sh --seed {} --steps {}{}{}", f.seed, f.step, if canary { " --canary" } else { "" }, if rdma { " --rdma" } else { "" });
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
