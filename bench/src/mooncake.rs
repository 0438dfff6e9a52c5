//! Mooncake Store, measured with the peer scripts in `shared/peers/mooncake/` as their header
//! comments say: a lo-only network namespace (its client binds 0.0.0.0), `mooncake_up.sh` starts
//! the master and the metadata server in it, `mooncake_bench.py --mode local|remote` measures the
//! client's own segment and another process over TCP. Only with `--peers mooncake`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{tail, Proc};
use crate::progress::Progress;
use crate::report::{Row, MOONCAKE, OWN, TCP};
use crate::workloads::Plan;

const MIB: u64 = 1 << 20;

/// Where the venv and the scripts are.
pub struct Opts {
    pub venv: Option<PathBuf>,
    pub dir: Option<PathBuf>,
}

/// The scripts' folder: `--mooncake-dir`, else `shared/peers/mooncake` beside the repository.
fn scripts_dir(opts: &Opts) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match &opts.dir {
        Some(d) => vec![d.clone()],
        None => vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/mooncake"),
            PathBuf::from("../shared/peers/mooncake"),
        ],
    };
    candidates
        .into_iter()
        .find(|d| d.join("mooncake_up.sh").is_file() && d.join("mooncake_bench.py").is_file())
        .ok_or_else(|| {
            "mooncake_up.sh / mooncake_bench.py not found (pass --mooncake-dir DIR)".to_string()
        })
}

fn run_cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace: on drop, every process in it (all started by this run) is stopped by id
/// and the namespace removed.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        for _ in 0..3 {
            let pids = run_cmd("ip", &["netns", "pids", &self.0]).unwrap_or_default();
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if pids.is_empty() {
                break;
            }
            for p in &pids {
                let _ = Command::new("kill")
                    .args(["-TERM", p])
                    .stderr(Stdio::null())
                    .status();
            }
            std::thread::sleep(Duration::from_millis(500));
            for p in &pids {
                let _ = Command::new("kill")
                    .args(["-KILL", p])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = run_cmd("ip", &["netns", "del", &self.0]);
    }
}

/// Run both modes; rows for what the script measured. `Err` says why Mooncake cannot run here.
pub fn run(opts: &Opts, work: &Path, plan: &Plan, progress: &Progress) -> Result<Vec<Row>, String> {
    let venv = opts
        .venv
        .clone()
        .or_else(|| std::env::var_os("MOONCAKE_VENV").map(PathBuf::from))
        .ok_or(
            "no Python venv with mooncake-transfer-engine-non-cuda: pass --mooncake-venv DIR or \
                set MOONCAKE_VENV (scripts/bench.sh creates one)",
        )?;
    let python = venv.join("bin/python");
    if !python.is_file() || !venv.join("bin/mooncake_master").is_file() {
        return Err(format!(
            "{} has no python or mooncake_master (pip install mooncake-transfer-engine-non-cuda)",
            venv.display()
        ));
    }
    let scripts = scripts_dir(opts)?;
    let run_dir = work.join("mooncake");
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;

    let ns = Netns(format!("mmcbench{}", std::process::id()));
    run_cmd("ip", &["netns", "add", &ns.0]).map_err(|e| format!("network namespace: {e}"))?;
    run_cmd(
        "ip",
        &["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"],
    )?;

    progress.say("mooncake: starting master and metadata server (lo-only namespace)");
    let up = Command::new("bash")
        .arg(scripts.join("mooncake_up.sh"))
        .env("NETNS", &ns.0)
        .env("VENV", &venv)
        .env("RUN_DIR", &run_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("mooncake_up.sh: {e}"))?;
    if !up.status.success() {
        return Err(format!(
            "mooncake_up.sh failed: {}{}",
            String::from_utf8_lossy(&up.stdout).trim(),
            String::from_utf8_lossy(&up.stderr).trim()
        ));
    }

    let rounds = plan.batch_rounds.to_string();
    let (n_small, n_1m, cap) = if plan.quick {
        ("300", "50", "5")
    } else {
        ("2000", "200", "15")
    };
    let mut rows = Vec::new();
    for mode in ["local", "remote"] {
        progress.say(format!("mooncake: mooncake_bench.py --mode {mode}"));
        let json = run_dir.join(format!("{mode}.json"));
        let args: Vec<String> = [
            "netns",
            "exec",
            &ns.0,
            "env",
            "MC_TCP_BIND_ADDRESS=127.0.0.1",
            &python.display().to_string(),
            &scripts.join("mooncake_bench.py").display().to_string(),
            "--mode",
            mode,
            "--n-small",
            n_small,
            "--n-1m",
            n_1m,
            "--rounds",
            &rounds,
            "--cap-s",
            cap,
            "--provider-max-s",
            "600",
            "--json",
            &json.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut p = Proc::spawn(
            &format!("mooncake_bench.py --mode {mode}"),
            Path::new("ip"),
            &args,
            run_dir.join(format!("{mode}.log")),
        )?;
        let t = Instant::now();
        loop {
            match p.check_alive() {
                Ok(()) if t.elapsed() > Duration::from_secs(600) => {
                    return Err(format!("mooncake --mode {mode}: no result within 600 s"))
                }
                Ok(()) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => break,
            }
        }
        let text = std::fs::read_to_string(&json).map_err(|_| {
            format!(
                "mooncake --mode {mode} wrote no JSON; last lines of its log:\n{}",
                tail(&p.log, 15)
            )
        })?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?;
        let placement = if mode == "local" { OWN } else { TCP };
        rows.extend(rows_of(&v, placement));
        progress.step();
    }
    Ok(rows)
}

/// Map the script's results to rows.
fn rows_of(v: &Value, placement: &str) -> Vec<Row> {
    let map: &[(&str, &str, &str, &str, u64, u64, bool)] = &[
        // (script test, workload, op, shape, objects per op, bytes per op, bulk)
        ("put 4KiB", "4k", "put", "1 x 4 KiB", 1, 4096, false),
        ("get 4KiB", "4k", "get", "1 x 4 KiB", 1, 4096, false),
        (
            "is_exist hit (4KiB keys)",
            "4k",
            "exist",
            "1 key",
            1,
            0,
            false,
        ),
        (
            "batch_is_exist x1000",
            "exist",
            "batch_exist",
            "1000 keys",
            1000,
            0,
            false,
        ),
        (
            "batch_put_from 16x8MiB pass1",
            "first-write",
            "put cold",
            "16 x 8 MiB",
            16,
            128 * MIB,
            true,
        ),
        (
            "batch_put_from 16x8MiB pass2",
            "first-write",
            "put warm",
            "16 x 8 MiB",
            16,
            128 * MIB,
            true,
        ),
        (
            "batch_put_from 64x1MiB pass2",
            "batch-1m",
            "put",
            "64 x 1 MiB",
            64,
            64 * MIB,
            true,
        ),
        (
            "batch_get_into 64x1MiB pass2",
            "batch-1m",
            "get",
            "64 x 1 MiB",
            64,
            64 * MIB,
            true,
        ),
        (
            "batch_put_from 16x8MiB pass2",
            "batch-8m",
            "put",
            "16 x 8 MiB",
            16,
            128 * MIB,
            true,
        ),
        (
            "batch_get_into 16x8MiB pass2",
            "batch-8m",
            "get",
            "16 x 8 MiB",
            16,
            128 * MIB,
            true,
        ),
    ];
    let results = v["results"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    for &(test, workload, op, shape, objs, bytes, bulk) in map {
        let Some(r) = results.iter().find(|r| r["test"] == test) else {
            continue;
        };
        let ops = r["ops"].as_u64().unwrap_or(0);
        let wall = r["wall_s"].as_f64().unwrap_or(0.0);
        if ops == 0 || wall <= 0.0 || r["errors"].as_u64().unwrap_or(0) > 0 {
            continue;
        }
        rows.push(Row::from_figures(
            workload,
            op,
            MOONCAKE,
            placement,
            shape,
            ops * objs,
            ops * bytes,
            ops,
            wall,
            r["p50_us"].as_f64(),
            r["p99_us"].as_f64(),
            bulk,
        ));
    }
    rows
}
