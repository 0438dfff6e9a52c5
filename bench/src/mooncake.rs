//! Mooncake Store, measured with the project's own peer harness in `bench/peers/mooncake/`
//! (`install.sh` puts the pinned PyPI wheel into a venv; `up.sh` starts its master and metadata
//! server on 127.0.0.1; `workloads.py --mode own|tcp` runs mmc-bench's workloads against it and
//! writes JSON). Everything runs in a lo-only network namespace (its client binds every
//! address). Only with `--peers mooncake`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{tail, Proc};
use crate::progress::Progress;
use crate::report::{Row, MOONCAKE, OWN, TCP};
use crate::workloads::Plan;

/// Where the venv and the harness are.
pub struct Opts {
    pub venv: Option<PathBuf>,
    pub dir: Option<PathBuf>,
}

/// The harness folder: `--mooncake-dir`, else `bench/peers/mooncake` of this repository (found
/// from the crate's source folder, or from the working directory).
fn scripts_dir(opts: &Opts) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match &opts.dir {
        Some(d) => vec![d.clone()],
        None => vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/mooncake"),
            PathBuf::from("bench/peers/mooncake"),
        ],
    };
    candidates
        .into_iter()
        .find(|d| d.join("up.sh").is_file() && d.join("workloads.py").is_file())
        .ok_or_else(|| {
            "bench/peers/mooncake/up.sh and workloads.py not found (pass --mooncake-dir DIR)"
                .to_string()
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
                set MOONCAKE_VENV (bench/peers/mooncake/install.sh DIR makes one; scripts/bench.sh \
                runs it)",
        )?;
    let python = venv.join("bin/python");
    if !python.is_file() || !venv.join("bin/mooncake_master").is_file() {
        return Err(format!(
            "{} has no python or mooncake_master (bench/peers/mooncake/install.sh DIR)",
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
        .arg(scripts.join("up.sh"))
        .env("NETNS", &ns.0)
        .env("VENV", &venv)
        .env("RUN_DIR", &run_dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("up.sh: {e}"))?;
    if !up.status.success() {
        return Err(format!(
            "bench/peers/mooncake/up.sh failed: {}{}",
            String::from_utf8_lossy(&up.stdout).trim(),
            String::from_utf8_lossy(&up.stderr).trim()
        ));
    }

    let rounds = plan.batch_rounds.max(2).to_string();
    let (n_small, cap, segment) = if plan.quick {
        ("300", "5", "512")
    } else {
        ("2000", "15", "1024")
    };
    let mut rows = Vec::new();
    for mode in ["own", "tcp"] {
        progress.say(format!("mooncake: workloads.py --mode {mode}"));
        let json = run_dir.join(format!("{mode}.json"));
        let args: Vec<String> = [
            "netns",
            "exec",
            &ns.0,
            &python.display().to_string(),
            &scripts.join("workloads.py").display().to_string(),
            "--mode",
            mode,
            "--n-4k",
            n_small,
            "--rounds",
            &rounds,
            "--cap-s",
            cap,
            "--segment-mib",
            segment,
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
        let placement = if mode == "own" { OWN } else { TCP };
        rows.extend(rows_of(&v, placement));
        progress.step();
    }
    Ok(rows)
}

/// Rows of the harness's results (named by mmc-bench's workloads and ops already); a result
/// with errors (a failed call or a wrong byte read back) gives no row.
fn rows_of(v: &Value, placement: &str) -> Vec<Row> {
    let results = v["results"].as_array().cloned().unwrap_or_default();
    let mut rows = Vec::new();
    for r in &results {
        let (Some(workload), Some(op), Some(shape)) = (
            r["workload"].as_str(),
            r["op"].as_str(),
            r["shape"].as_str(),
        ) else {
            continue;
        };
        let calls = r["calls"].as_u64().unwrap_or(0);
        let secs = r["seconds"].as_f64().unwrap_or(0.0);
        if calls == 0 || secs <= 0.0 || r["errors"].as_u64().unwrap_or(1) > 0 {
            continue;
        }
        let bytes = r["bytes"].as_u64().unwrap_or(0);
        rows.push(Row::from_figures(
            workload,
            op,
            MOONCAKE,
            placement,
            shape,
            r["objects"].as_u64().unwrap_or(0),
            bytes,
            calls,
            secs,
            r["p50_us"].as_f64(),
            r["p99_us"].as_f64(),
            workload != "4k" && bytes > 0,
        ));
    }
    rows
}
