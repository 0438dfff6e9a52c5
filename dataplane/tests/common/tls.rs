//! A TLS cluster for integration tests: a TLS `mmc-meta` and TLS `mmc-local` processes with
//! certificates made by `mmc_tls::testpki`, their logs in files, and probes of the shm socket.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{bin, pattern, wait_file, wait_until};
use mmc_config::{DataOpType, TlsConfig};
use mmc_controlplane::msg::{Reply, Request, ServiceAddr};
use mmc_dataplane::{Client, ClientConfig, PutOptions};
use mmc_meta_service::rpc::MetaConn;
use mmc_tls::testpki::{self, Pki};
use mmc_tls::TlsContext;

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The good node identity: encrypted key and its password.
pub fn good_tls(pki: &Pki) -> TlsConfig {
    TlsConfig {
        enable: true,
        ca_path: s(&pki.ca),
        crl_path: s(&pki.crl),
        cert_path: s(&pki.node_cert),
        key_path: s(&pki.node_key_enc),
        key_pass_path: s(&pki.pass),
        ..TlsConfig::default()
    }
}

pub fn tls_with(pki: &Pki, cert: &Path, key: &Path) -> TlsConfig {
    TlsConfig {
        cert_path: s(cert),
        key_path: s(key),
        key_pass_path: String::new(),
        ..good_tls(pki)
    }
}

/// The `--tls*` flags for `tls`.
pub fn flags(tls: &TlsConfig) -> Vec<String> {
    let mut f = vec!["--tls".to_string()];
    for (flag, v) in [
        ("--tls-ca", &tls.ca_path),
        ("--tls-crl", &tls.crl_path),
        ("--tls-cert", &tls.cert_path),
        ("--tls-key", &tls.key_path),
        ("--tls-key-pass", &tls.key_pass_path),
        ("--tls-decrypter", &tls.decrypter_lib_path),
    ] {
        if !v.is_empty() {
            f.push(flag.to_string());
            f.push(v.clone());
        }
    }
    f
}

/// One process whose log (standard error) goes to a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) until the log holds a line with every one of `parts`; returns that line.
    pub fn logged(&self, parts: &[&str]) -> String {
        let mut found = String::new();
        wait_until(
            &format!("a log line with {parts:?}"),
            Duration::from_secs(10),
            || {
                let log = self.log();
                match log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                    Some(l) => {
                        found = l.to_string();
                        true
                    }
                    None => false,
                }
            },
        );
        found
    }
}

impl Proc {
    /// Send `signal` (`STOP`, `CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{signal} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct TlsCluster {
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub meta: Proc,
    pub meta_addr: String,
    pub locals: Vec<Proc>,
    /// The meta service's flags, kept for [`TlsCluster::restart_meta`].
    meta_args: Vec<String>,
}

pub fn start(
    dir: &Path,
    name: &str,
    program: &str,
    args: &[String],
    envs: &[(&str, &Path)],
) -> (Proc, String) {
    let addr_file = dir.join(format!("{name}.addr"));
    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(bin(program));
    cmd.args(args)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let addr = wait_file(&addr_file, &mut child, name);
    (Proc { child, log }, addr)
}

impl TlsCluster {
    /// A TLS meta service (flags) and `locals` TLS local services: the first configured by a TOML
    /// `[tls]` table, the others by an `ock.mmc.tls.*` file. Each local service's runtime folder
    /// (its shm socket) is `DIR/runN`.
    pub fn start(locals: usize) -> TlsCluster {
        TlsCluster::start_with(locals, &[])
    }

    /// [`TlsCluster::start`] with extra `mmc-meta` flags.
    pub fn start_with(locals: usize, meta_extra: &[&str]) -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let pki = testpki::write(&dir.path().join("pki")).unwrap();
        let tls = good_tls(&pki);
        let mut meta_args: Vec<String> = ["--log-level", "info"].map(String::from).into();
        meta_args.extend(flags(&tls));
        meta_args.extend(meta_extra.iter().map(|a| a.to_string()));
        let args: Vec<String> = ["--listen", "tcp://127.0.0.1:0"]
            .map(String::from)
            .into_iter()
            .chain(meta_args.iter().cloned())
            .collect();
        let (meta, meta_addr) = start(dir.path(), "meta", "mmc-meta", &args, &[]);
        let mut c = TlsCluster {
            dir,
            pki,
            meta,
            meta_addr,
            locals: Vec::new(),
            meta_args,
        };
        for _ in 0..locals {
            c.add_local();
        }
        c
    }

    pub fn add_local(&mut self) {
        self.add_local_with(&[]);
    }

    /// [`TlsCluster::add_local`] with extra `mmc-local` flags.
    pub fn add_local_with(&mut self, extra: &[&str]) {
        let n = self.locals.len();
        let tls = good_tls(&self.pki);
        let config = self.dir.path().join(format!("local{n}.conf"));
        let text = if n == 0 {
            format!(
                "[tls]\nenable = true\nca_path = \"{}\"\ncrl_path = \"{}\"\ncert_path = \"{}\"\nkey_path = \"{}\"\nkey_pass_path = \"{}\"\n",
                tls.ca_path, tls.crl_path, tls.cert_path, tls.key_path, tls.key_pass_path
            )
        } else {
            format!(
                "ock.mmc.tls.enable = true\nock.mmc.tls.ca.path = {}\nock.mmc.tls.crl.path = {}\nock.mmc.tls.cert.path = {}\nock.mmc.tls.key.path = {}\nock.mmc.tls.key.pass.path = {}\n",
                tls.ca_path, tls.crl_path, tls.cert_path, tls.key_path, tls.key_pass_path
            )
        };
        let config = config.with_extension(if n == 0 { "toml" } else { "conf" });
        std::fs::write(&config, text).unwrap();
        let run = self.dir.path().join(format!("run{n}"));
        std::fs::create_dir_all(&run).unwrap();
        let args: Vec<String> = [
            "--config",
            &s(&config),
            "--meta",
            &format!("tcp://{}", self.meta_addr),
            "--listen",
            "tcp://127.0.0.1:0",
            "--dram",
            "64MB",
            "--create-id",
            &n.to_string(),
            "--log-level",
            "debug",
        ]
        .map(String::from)
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .collect();
        let (p, _) = start(
            self.dir.path(),
            &format!("local{n}"),
            "mmc-local",
            &args,
            &[("XDG_RUNTIME_DIR", &run)],
        );
        self.locals.push(p);
    }

    pub fn config(&self, tls: TlsConfig, transport: Option<DataOpType>) -> ClientConfig {
        ClientConfig {
            meta_url: format!("tcp://{}", self.meta_addr),
            timeout_ms: 10_000,
            transport,
            tls,
            ..ClientConfig::default()
        }
    }

    /// The local services' addresses, as the meta service gives them to an authenticated client
    /// (in a lookup of `key`, which must exist; its read lease is given back).
    pub fn services(&self, key: &str) -> Vec<ServiceAddr> {
        self.try_services(key)
            .unwrap_or_else(|| panic!("lookup of {key} failed"))
    }

    /// [`TlsCluster::services`], or None when the lookup fails (no such key, the meta service
    /// rebuilding or unreachable).
    pub fn try_services(&self, key: &str) -> Option<Vec<ServiceAddr>> {
        let ctx = TlsContext::from_config(&good_tls(&self.pki)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = self.meta_addr.parse().unwrap();
        let mut conn = MetaConn::connect_with(addr, ctx.as_ref(), deadline).ok()?;
        let keys = vec![key.to_string()];
        let Ok(Reply::Lookup {
            items, services, ..
        }) = conn.call(&Request::Lookup { keys }, deadline)
        else {
            return None;
        };
        let leases = items.iter().map(|i| i.lease).collect();
        conn.send_oneway(&Request::Release { leases }, deadline)
            .ok()?;
        (!services.is_empty()).then_some(services)
    }

    /// Kill the meta service (SIGKILL) and start a fresh one on the same address and flags (log:
    /// `meta-restarted.log`): the local services rejoin it under new incarnations.
    pub fn restart_meta(&mut self) {
        let _ = self.meta.child.kill();
        let _ = self.meta.child.wait();
        let args: Vec<String> = ["--listen".to_string(), format!("tcp://{}", self.meta_addr)]
            .into_iter()
            .chain(self.meta_args.iter().cloned())
            .collect();
        let (meta, addr) = start(self.dir.path(), "meta-restarted", "mmc-meta", &args, &[]);
        assert_eq!(addr, self.meta_addr, "the meta service came back elsewhere");
        self.meta = meta;
    }
}

pub fn round_trip(client: &Client, key: &str, len: usize) {
    let data = pattern(key, len);
    client
        .put(key, &data, &PutOptions::default())
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    let mut back = vec![0u8; len];
    client
        .get_into(key, &mut back)
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    assert!(back == data, "{key}: bytes differ");
}

/// A same-host process asking for the pools: from `python3` (optionally as another user), with
/// `secret` (hex) sent first. Returns what it saw: `fds N`, `nofds`, or an error.
pub fn shm_probe(path: &str, secret: &str, uid: Option<u32>) -> Option<String> {
    let script = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX); s.settimeout(3)\n\
        try:\n  s.connect(sys.argv[1])\nexcept OSError as e:\n  print('connect-refused', e); sys.exit(0)\n\
        try:\n  s.sendall(bytes.fromhex(sys.argv[2]))\nexcept OSError as e:\n  print('send-refused', e); sys.exit(0)\n\
        try:\n  m,anc,f,a=s.recvmsg(4096, socket.CMSG_SPACE(64*4))\nexcept OSError as e:\n  print('recv-error', e); sys.exit(0)\n\
        n=sum(len(d)//4 for (l,t,d) in anc)\n\
        print(('fds %d' % n) if n else 'nofds')\n";
    // As another user, the system interpreter (a per-user one, e.g. pyenv's, may be unreadable).
    let python = match uid {
        Some(_) if Path::new("/usr/bin/python3").exists() => "/usr/bin/python3",
        _ => "python3",
    };
    let mut cmd = Command::new(python);
    cmd.args(["-c", script, path, secret]);
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid);
    }
    match cmd.output() {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        other => {
            println!("SKIPPED: python3 probe did not run: {other:?}");
            None
        }
    }
}

pub fn rustix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        })
        .unwrap_or(u32::MAX)
}
