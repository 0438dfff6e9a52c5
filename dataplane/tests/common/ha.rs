//! A highly available cluster for integration tests: an `etcd` process (Debian's `etcd-server`)
//! on 127.0.0.1 in a temp dir, several `mmc-meta` electing a leader through it, and `mmc-local`
//! processes that find the leader through etcd. Everything is killed when it drops.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mmc_config::{parse_etcd_url, TlsConfig};
use mmc_dataplane::ClientConfig;
use mmc_meta_service::etcd::Etcd;
use mmc_tls::testpki::Pki;
use mmc_tls::TlsContext;

use super::{bin, signal_pid, wait_file, wait_until, Local};

/// The `etcd` binary: `$MMC_ETCD`, else `etcd` on the PATH, else /usr/bin/etcd. None when absent
/// (the caller skips with a printed reason).
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MMC_ETCD") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("etcd"))
        .find(|p| p.exists())
}

/// A free TCP port on 127.0.0.1 (bound, then released for the process that takes it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// etcd, the meta services, the local services.
pub struct HaCluster {
    pub dir: tempfile::TempDir,
    etcd: Child,
    /// `etcd://127.0.0.1:PORT/PREFIX`: what every meta, local service and client is given.
    pub url: String,
    pub etcd_client: Etcd,
    /// One slot per meta service (None once killed).
    pub metas: Vec<Option<Child>>,
    meta_args: Vec<String>,
    pub locals: Vec<Local>,
    /// `[tls]` of every process, when started by [`HaCluster::start_tls`].
    tls: Option<TlsConfig>,
}

impl HaCluster {
    /// etcd (with short raft timers, so that 1-2 s leases are allowed) and `metas` meta services
    /// with these extra flags; returns once etcd answers. None when no etcd binary is installed.
    pub fn start(metas: usize, meta_args: &[&str]) -> Option<HaCluster> {
        HaCluster::launch(metas, meta_args, None)
    }

    /// [`HaCluster::start`] with TLS everywhere: etcd serves HTTPS with `pki`'s node certificate
    /// and requires client certificates of its CA (`--client-cert-auth`); every meta service,
    /// local service and client has `tls`.
    pub fn start_tls(metas: usize, pki: &Pki, tls: TlsConfig) -> Option<HaCluster> {
        HaCluster::launch(metas, &[], Some((pki, tls)))
    }

    fn launch(
        metas: usize,
        meta_args: &[&str],
        tls: Option<(&Pki, TlsConfig)>,
    ) -> Option<HaCluster> {
        let etcd_bin = etcd_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{client_port}");
        let etcd_tls: Vec<String> = match &tls {
            None => Vec::new(),
            Some((pki, _)) => vec![
                "--cert-file".into(),
                pki.node_cert.display().to_string(),
                "--key-file".into(),
                pki.node_key.display().to_string(),
                "--trusted-ca-file".into(),
                pki.ca.display().to_string(),
                "--client-cert-auth".into(),
            ],
        };
        let peer = format!("http://127.0.0.1:{peer_port}");
        let etcd = Command::new(etcd_bin)
            .args(["--name", "mmc-test", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("mmc-test={peer}")])
            .args(["--heartbeat-interval", "25", "--election-timeout", "250"])
            .args(["--log-level", "error"])
            .args(&etcd_tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        let url = format!("etcd://127.0.0.1:{client_port}/mmc-test");
        let tls = tls.map(|(_, t)| t);
        let ctx = tls.as_ref().map(|t| {
            TlsContext::from_config(t)
                .expect("TLS context")
                .expect("TLS on")
        });
        let etcd_client = Etcd::with_tls(parse_etcd_url(&url).expect("etcd url"), ctx.as_deref());
        let mut meta_args: Vec<String> = meta_args.iter().map(|a| a.to_string()).collect();
        meta_args.extend(tls.as_ref().map(super::tls::flags).unwrap_or_default());
        let mut cluster = HaCluster {
            dir,
            etcd,
            url,
            etcd_client,
            metas: Vec::new(),
            meta_args,
            locals: Vec::new(),
            tls,
        };
        let key = cluster.etcd_client.url().leader_key();
        wait_until("etcd answers", Duration::from_secs(20), || {
            cluster
                .etcd_client
                .get(&key, Instant::now() + Duration::from_millis(500))
                .is_ok()
        });
        for i in 0..metas {
            let child = cluster.spawn_meta(i);
            cluster.metas.push(Some(child));
        }
        Some(cluster)
    }

    fn addr_file(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("meta{i}.addr"))
    }

    /// Start meta service `i` (its addr file appears when it is elected).
    fn spawn_meta(&self, i: usize) -> Child {
        let _ = std::fs::remove_file(self.addr_file(i));
        Command::new(bin("mmc-meta"))
            .args(["--listen", "tcp://127.0.0.1:0", "--etcd", &self.url])
            .args(["--log-level", "warn", "--addr-file"])
            .arg(self.addr_file(i))
            .args(&self.meta_args)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn mmc-meta")
    }

    /// Meta service `i` started again (after [`HaCluster::kill_meta`]).
    pub fn restart_meta(&mut self, i: usize) {
        assert!(self.metas[i].is_none(), "meta {i} still runs");
        self.metas[i] = Some(self.spawn_meta(i));
    }

    /// The meta services that say they lead (their addr file exists): (index, address).
    pub fn leaders(&self) -> Vec<(usize, String)> {
        (0..self.metas.len())
            .filter(|&i| self.metas[i].is_some())
            .filter_map(|i| {
                let s = std::fs::read_to_string(self.addr_file(i)).ok()?;
                (!s.trim().is_empty()).then(|| (i, s.trim().to_string()))
            })
            .collect()
    }

    /// What etcd names as the leader (`tcp://ip:port`), if anyone.
    pub fn leader_in_etcd(&self) -> Option<String> {
        let key = self.etcd_client.url().leader_key();
        self.etcd_client
            .get(&key, Instant::now() + Duration::from_secs(1))
            .ok()
            .flatten()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }

    /// The epoch key: the floor above which the next leader numbers incarnations and tokens.
    pub fn epoch_in_etcd(&self) -> u64 {
        let key = self.etcd_client.url().epoch_key();
        let kv = self
            .etcd_client
            .get(&key, Instant::now() + Duration::from_secs(1))
            .expect("etcd answers")
            .expect("a leader wrote the epoch key");
        String::from_utf8_lossy(&kv.value)
            .parse()
            .expect("the epoch key holds a number")
    }

    /// Wait (bounded) until exactly one meta service other than `not` leads and etcd names it;
    /// its index.
    pub fn wait_leader(&self, not: Option<usize>, limit: Duration) -> usize {
        let mut leader = None;
        wait_until("one meta leader", limit, || {
            let l = self.leaders();
            leader = match l.as_slice() {
                [(i, addr)]
                    if Some(*i) != not
                        && self.leader_in_etcd() == Some(format!("tcp://{addr}")) =>
                {
                    Some(*i)
                }
                _ => None,
            };
            leader.is_some()
        });
        leader.expect("waited for it")
    }

    /// kill -9 meta service `i`.
    pub fn kill_meta(&mut self, i: usize) {
        if let Some(mut c) = self.metas[i].take() {
            kill(&mut c);
        }
    }

    /// Send `signal` (`TERM`, `STOP`, ...) to meta service `i`.
    pub fn signal_meta(&self, i: usize, signal: &str) {
        signal_pid(self.metas[i].as_ref().expect("meta runs").id(), signal);
    }

    /// Send `signal` (`STOP`, `CONT`) to etcd.
    pub fn signal_etcd(&self, signal: &str) {
        signal_pid(self.etcd.id(), signal);
    }

    /// An `mmc-local` of `dram` that finds the meta service through etcd.
    pub fn add_local(&mut self, dram: &str) {
        let n = self.locals.len();
        let addr_file = self.dir.path().join(format!("local{n}.addr"));
        let mut child = Command::new(bin("mmc-local"))
            .args(["--meta", &self.url, "--listen", "tcp://127.0.0.1:0"])
            .args(["--dram", dram, "--log-level", "warn", "--addr-file"])
            .arg(&addr_file)
            .args(self.tls.as_ref().map(super::tls::flags).unwrap_or_default())
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
    }

    pub fn client_config(&self, timeout_ms: u64) -> ClientConfig {
        ClientConfig {
            meta_url: self.url.clone(),
            timeout_ms,
            tls: self.tls.clone().unwrap_or_default(),
            ..ClientConfig::default()
        }
    }
}

impl Drop for HaCluster {
    fn drop(&mut self) {
        for l in &mut self.locals {
            kill(&mut l.child);
        }
        for m in self.metas.iter_mut().flatten() {
            kill(m);
        }
        kill(&mut self.etcd);
    }
}
