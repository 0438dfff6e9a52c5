//! A throw-away cluster on 127.0.0.1: an in-process meta service and `mmc-local` processes, plus
//! the peer servers (Redis, memcached). Everything it starts is stopped when it is dropped, also on
//! error or panic.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmc_config::{LogLevel, MetaConfig};
use mmc_meta_service::MetaServer;

/// How long a started process may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Start `program args`, stdout and stderr to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Proc, String> {
        let out =
            std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("dup {}: {e}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {}: {e}", program.display()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// `Err` with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => Err(format!(
                "{} exited ({st}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 15)
            )),
            Err(e) => Err(format!("{}: wait: {e}", self.name)),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM first (a clean stop deregisters), SIGKILL if it lingers.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(3) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A scratch directory removed when dropped (kept when `MMC_BENCH_KEEP_DIR=1`).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Result<TempDir, String> {
        let base = std::env::temp_dir();
        for i in 0..100u32 {
            let p = base.join(format!("mmc-bench-{}-{i}", std::process::id()));
            if std::fs::create_dir(&p).is_ok() {
                return Ok(TempDir(p));
            }
        }
        Err(format!(
            "could not create a directory under {}",
            base.display()
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var("MMC_BENCH_KEEP_DIR").as_deref() == Ok("1") {
            eprintln!("mmc-bench: kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A local service process: its data endpoint and rank.
pub struct Local {
    /// Kept to stop it when the cluster is dropped.
    _proc: Proc,
    pub endpoint: String,
    pub rank: u32,
    /// The extra flags it was started with.
    pub flags: String,
}

/// The cluster this run started (the meta service in-process).
pub struct Cluster {
    pub meta_url: String,
    meta: Option<MetaServer>,
    pub locals: Vec<Local>,
    pub dir: PathBuf,
    bin_dir: PathBuf,
}

/// The directory of this executable (where `mmc-local` is built too).
pub fn bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

impl Cluster {
    /// Start a meta service in this process on an ephemeral port.
    pub fn start(dir: &Path, log_level: LogLevel) -> Result<Cluster, String> {
        Cluster::start_with_tls(dir, log_level, mmc_config::TlsConfig::default())
    }

    /// [`Cluster::start`] with these TLS settings for the meta service (its local services need
    /// the matching `--tls*` flags).
    pub fn start_with_tls(
        dir: &Path,
        log_level: LogLevel,
        tls: mmc_config::TlsConfig,
    ) -> Result<Cluster, String> {
        Cluster::start_meta(
            dir,
            &MetaConfig {
                log_level,
                tls,
                ..MetaConfig::default()
            },
        )
    }

    /// [`Cluster::start`] with this meta service config (its listen URL is replaced by an
    /// ephemeral port on 127.0.0.1).
    pub fn start_meta(dir: &Path, config: &MetaConfig) -> Result<Cluster, String> {
        let bin = bin_dir();
        if !bin.join("mmc-local").is_file() {
            return Err(format!(
                "{} is missing: build it next to mmc-bench (cargo build --bins -p mmc-dataplane), \
                 or pass --meta URL of a running cluster",
                bin.join("mmc-local").display()
            ));
        }
        let meta = MetaServer::start(&MetaConfig {
            listen_url: "tcp://127.0.0.1:0".into(),
            ..config.clone()
        })
        .map_err(|e| format!("start the meta service: {e}"))?;
        Ok(Cluster {
            meta_url: format!("tcp://{}", meta.local_addr()),
            meta: Some(meta),
            locals: Vec::new(),
            dir: dir.to_path_buf(),
            bin_dir: bin,
        })
    }

    /// Start an `mmc-local` process with `dram` bytes and wait until it has registered.
    pub fn add_local(&mut self, dram: u64) -> Result<&Local, String> {
        self.add_local_with(dram, &[])
    }

    /// `add_local` with extra `mmc-local` flags (e.g. `--busy-poll-us 50`, `--data-shards 2`).
    pub fn add_local_with(&mut self, dram: u64, extra: &[&str]) -> Result<&Local, String> {
        let n = self.locals.len() + 1;
        let addr_file = self.dir.join(format!("local{n}.addr"));
        let args: Vec<String> = [
            "--meta",
            &self.meta_url,
            "--dram",
            &dram.to_string(),
            "--listen",
            "tcp://127.0.0.1:0",
            "--log-level",
            "warn",
            "--addr-file",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([addr_file.display().to_string()])
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
        let mut proc = Proc::spawn(
            &format!("mmc-local {n}"),
            &self.bin_dir.join("mmc-local"),
            &args,
            self.dir.join(format!("local{n}.log")),
        )?;
        let t = Instant::now();
        let line = loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file) {
                if s.ends_with('\n') {
                    break s;
                }
            }
            proc.check_alive()?;
            if t.elapsed() > START_TIMEOUT {
                return Err(format!("{} did not register within 60 s", proc.name));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut it = line.split_whitespace();
        let endpoint = it.next().unwrap_or_default().to_string();
        let rank = it
            .next()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| format!("{}: bad address file {line:?}", addr_file.display()))?;
        self.locals.push(Local {
            _proc: proc,
            endpoint,
            rank,
            flags: extra.join(" "),
        });
        Ok(self.locals.last().expect("just pushed"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Local services first (they deregister), then the meta service.
        self.locals.clear();
        if let Some(m) = self.meta.take() {
            m.stop();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, read, released; a tiny race is acceptable here).
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// Find a program on `$PATH` (or the usual sbin directories, where apt puts servers).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file());
    found
}

/// Wait until `127.0.0.1:port` accepts a connection, or the process exits.
pub fn wait_port(proc: &mut Proc, port: u16) -> Result<(), String> {
    let t = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        proc.check_alive()?;
        if t.elapsed() > Duration::from_secs(20) {
            return Err(format!(
                "{} did not listen on port {port} within 20 s",
                proc.name
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
