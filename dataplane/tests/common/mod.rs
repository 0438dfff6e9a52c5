//! A real cluster for integration tests: `mmc-meta` and `mmc-local` processes on 127.0.0.1 with
//! ephemeral ports, killed when the `Cluster` drops.
#![allow(dead_code)]

pub mod ha;
pub mod load;
pub mod netns;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmc_config::DataOpType;
use mmc_dataplane::{Client, ClientConfig, LocalConfig};

/// A binary of this workspace (built by `cargo build --workspace --bins`, which scripts/test.sh runs
/// first; built here on demand otherwise).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--workspace", "--bins"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
    }
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// Wait for `path` to hold a line, bounded.
pub fn wait_file(path: &Path, child: &mut Child, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') || (!s.is_empty() && !s.contains(' ')) {
                return s.trim().to_string();
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not start within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Local {
    pub child: Child,
    pub endpoint: String,
    pub rank: u32,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub meta: Child,
    pub meta_addr: String,
    /// The meta service's extra flags, kept for [`Cluster::restart_meta`].
    pub meta_args: Vec<String>,
    pub locals: Vec<Local>,
}

impl Cluster {
    /// A meta service (with extra flags) and one `mmc-local` per DRAM size.
    pub fn start(dram_sizes: &[&str], meta_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr_file = dir.path().join("meta.addr");
        let mut meta = Command::new(bin("mmc-meta"))
            .args([
                "--listen",
                "tcp://127.0.0.1:0",
                "--log-level",
                "warn",
                "--addr-file",
            ])
            .arg(&addr_file)
            .args(meta_args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn mmc-meta");
        let meta_addr = wait_file(&addr_file, &mut meta, "mmc-meta");
        let mut cluster = Cluster {
            dir,
            meta,
            meta_addr,
            meta_args: meta_args.iter().map(|a| a.to_string()).collect(),
            locals: Vec::new(),
        };
        for size in dram_sizes {
            cluster.add_local(size);
        }
        cluster
    }

    pub fn meta_url(&self) -> String {
        format!("tcp://{}", self.meta_addr)
    }

    pub fn add_local(&mut self, dram: &str) -> &Local {
        self.add_local_with(&["--dram", dram])
    }

    /// An `mmc-local` with these pool flags (`--dram`, `--hbm`, ...).
    pub fn add_local_with(&mut self, pool_args: &[&str]) -> &Local {
        self.add_local_env(pool_args, &[])
    }

    /// An `mmc-local` with these flags and environment variables.
    pub fn add_local_env(&mut self, pool_args: &[&str], envs: &[(&str, &str)]) -> &Local {
        let n = self.locals.len();
        let addr_file = self.dir.path().join(format!("local{n}.addr"));
        let mut child = Command::new(bin("mmc-local"))
            .args(["--meta", &self.meta_url(), "--listen", "tcp://127.0.0.1:0"])
            .args(pool_args)
            .args([
                "--log-level",
                "warn",
                "--create-id",
                &n.to_string(),
                "--addr-file",
            ])
            .arg(&addr_file)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn mmc-local");
        let line = wait_file(&addr_file, &mut child, "mmc-local");
        let mut it = line.split_whitespace();
        let endpoint = it.next().expect("endpoint").to_string();
        let rank = it.next().expect("rank").parse().expect("rank number");
        self.locals.push(Local {
            child,
            endpoint,
            rank,
        });
        self.locals.last().expect("just pushed")
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            meta_url: self.meta_url(),
            timeout_ms: 30_000,
            ..ClientConfig::default()
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.client_config()).expect("client connects")
    }

    /// A client with this timeout and transport (`None`: own pool, same-host shm, then TCP).
    pub fn client_with(&self, timeout_ms: u64, transport: Option<DataOpType>) -> Client {
        Client::connect(&ClientConfig {
            timeout_ms,
            transport,
            ..self.client_config()
        })
        .expect("client connects")
    }

    /// The index in `locals` of the service with this rank.
    pub fn local_of(&self, rank: u32) -> usize {
        self.locals
            .iter()
            .position(|l| l.rank == rank)
            .unwrap_or_else(|| panic!("no local service has rank {rank}"))
    }

    /// A client with a local service of `dram` bytes inside this test process.
    pub fn embedded_client(&self, dram: u64) -> Client {
        let local = LocalConfig {
            meta_url: self.meta_url(),
            data_url: "tcp://127.0.0.1:0".into(),
            dram_bytes: dram,
            ..LocalConfig::default()
        };
        Client::with_local_service(&self.client_config(), &local).expect("embedded client starts")
    }

    pub fn kill_local(&mut self, i: usize) {
        let l = &mut self.locals[i];
        let _ = l.child.kill();
        let _ = l.child.wait();
    }

    pub fn kill_meta(&mut self) {
        let _ = self.meta.kill();
        let _ = self.meta.wait();
    }

    /// Kill the meta service (SIGKILL) and start a fresh one on the same address and flags: it
    /// knows nothing, and hands out segment ids and incarnations from 1 again.
    pub fn restart_meta(&mut self) {
        self.kill_meta();
        let addr_file = self.dir.path().join("meta-restarted.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut meta = Command::new(bin("mmc-meta"))
            .args([
                "--listen",
                &format!("tcp://{}", self.meta_addr),
                "--log-level",
                "warn",
                "--addr-file",
            ])
            .arg(&addr_file)
            .args(&self.meta_args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn mmc-meta again");
        let addr = wait_file(&addr_file, &mut meta, "mmc-meta (restarted)");
        assert_eq!(addr, self.meta_addr, "the meta service came back elsewhere");
        self.meta = meta;
    }

    /// Send `signal` (`STOP`, `CONT`, ...) to local service `i`.
    pub fn signal_local(&self, i: usize, signal: &str) {
        signal_pid(self.locals[i].child.id(), signal);
    }

    /// Send `signal` (`STOP`, `CONT`, ...) to the meta service.
    pub fn signal_meta(&self, signal: &str) {
        signal_pid(self.meta.id(), signal);
    }
}

/// Wait for `cond`, checked every 10 ms, at most `limit`; returns how long it took.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

fn signal_pid(pid: u32, signal: &str) {
    let pid = pid.to_string();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for l in &mut self.locals {
            let _ = l.child.kill();
            let _ = l.child.wait();
        }
        let _ = self.meta.kill();
        let _ = self.meta.wait();
    }
}

/// The seeded RNG of the tests: prints its seed, takes `MMC_TEST_SEED` to replay.
pub struct Rng(u64);

impl Rng {
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("MMC_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        println!("{test}: seed {seed} (replay with MMC_TEST_SEED={seed})");
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Deterministic bytes for `key` (cheap to make and to check).
pub fn pattern(key: &str, len: usize) -> Vec<u8> {
    let mut s: u64 = key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.truncate(len);
    out
}
