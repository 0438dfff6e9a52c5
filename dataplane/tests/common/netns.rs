//! Hosts in network namespaces, for partition tests: each host is a namespace with one address
//! on a bridge that lives in a namespace of its own (the switch), and this process's (root)
//! namespace has one more port on that bridge, so a client running in the test process reaches
//! every host. Cutting a host takes its switch port down: the meta service, the other hosts and
//! the client all lose it at once, while its processes keep running (a partition, not a death).
//!
//! ```text
//!   root ns (client) ── m<tag> 198.18.N.1 ──┐
//!                                           │ switch ns: bridge sw0 (its own iptables: empty)
//!   host ns "meta"  ── eth0 198.18.N.2 ─────┤ port p0
//!   host ns "l0"    ── eth0 198.18.N.3 ─────┤ port p1   <- `ip link set p1 down` = partition
//!   host ns "l1"    ── eth0 198.18.N.4 ─────┘ port p2
//! ```
//!
//! Names carry this process's id and a counter, so parallel test processes never collide; the
//! [`Net`] guard kills nothing but deletes every namespace and link it made, also when the test
//! fails (callers stop their processes first). Namespaces left by a killed test process (whose
//! pid is gone) are deleted by the next [`Net::create`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use mmc_config::DataOpType;
use mmc_dataplane::{Client, ClientConfig};

use super::{bin, wait_file, Local};

/// Prefix of every namespace these tests make: `mmcnet-<pid>-<n>-<host>`.
const PREFIX: &str = "mmcnet-";

/// Why partition tests cannot run here, or `None` when they can: they need root and a working
/// `ip netns` (a container without CAP_SYS_ADMIN / CAP_NET_ADMIN cannot make namespaces).
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Some(format!("not root (euid {euid})"));
    }
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    match ip(&["netns", "add", &probe]) {
        Ok(()) => {
            let veth = ip(&[
                "-n", &probe, "link", "add", "name", "a", "type", "veth", "peer", "name", "b",
            ]);
            let _ = ip(&["netns", "del", &probe]);
            veth.err()
                .map(|e| format!("`ip netns` works but veth pairs do not: {e}"))
        }
        Err(e) => Some(format!("`ip netns add` is not available: {e}")),
    }
}

/// Run `ip ARGS`; `Err` with its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `ip ARGS`, panicking with its stderr when it fails (after the probe, a failure is a bug).
fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

/// Delete namespaces left by test processes that are gone (killed before their guard ran).
fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
}

/// One host: its namespace, its address, its port on the switch.
struct Host {
    name: String,
    ns: String,
    addr: String,
    port: String,
}

/// The namespaces and links of one test (see the module doc); deleted on drop.
pub struct Net {
    switch: String,
    hosts: Vec<Host>,
    /// The root namespace's port on the switch.
    root_link: String,
    /// This process's address on the switch.
    pub root_addr: String,
}

impl Net {
    /// A switch and one namespace per host name, each with an address, all links up. Call
    /// [`unavailable`] first: this panics when a step fails.
    pub fn create(host_names: &[&str]) -> Net {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(host_names.len() < 200, "one /24 for every host");
        sweep_stale();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let subnet = free_subnet(pid, n);
        let tag = format!("{pid}-{n}");
        let switch = format!("{PREFIX}{tag}-sw");
        // Interface names are at most 15 bytes; this one lives in the root namespace.
        let root_link = format!("mmc{pid:x}n{n}");
        let mut net = Net {
            switch: switch.clone(),
            hosts: Vec::new(),
            root_link: root_link.clone(),
            root_addr: format!("198.18.{subnet}.1"),
        };
        // From here on, a panic drops `net`, which deletes what was made so far.
        ip_ok(&["netns", "add", &switch]);
        ip_ok(&["-n", &switch, "link", "set", "lo", "up"]);
        ip_ok(&[
            "-n", &switch, "link", "add", "name", "sw0", "type", "bridge",
        ]);
        ip_ok(&["-n", &switch, "link", "set", "sw0", "up"]);
        ip_ok(&[
            "link", "add", "name", &root_link, "type", "veth", "peer", "name", "uplink", "netns",
            &switch,
        ]);
        ip_ok(&["-n", &switch, "link", "set", "uplink", "master", "sw0"]);
        ip_ok(&["-n", &switch, "link", "set", "uplink", "up"]);
        let cidr = format!("{}/24", net.root_addr);
        ip_ok(&["addr", "add", &cidr, "dev", &root_link]);
        ip_ok(&["link", "set", &root_link, "up"]);
        for (i, name) in host_names.iter().enumerate() {
            let ns = format!("{PREFIX}{tag}-{name}");
            let port = format!("p{i}");
            let addr = format!("198.18.{subnet}.{}", i + 2);
            ip_ok(&["netns", "add", &ns]);
            net.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                addr: addr.clone(),
                port: port.clone(),
            });
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            ip_ok(&[
                "-n", &switch, "link", "add", "name", &port, "type", "veth", "peer", "name",
                "eth0", "netns", &ns,
            ]);
            ip_ok(&["-n", &switch, "link", "set", &port, "master", "sw0"]);
            ip_ok(&["-n", &switch, "link", "set", &port, "up"]);
            let cidr = format!("{addr}/24");
            ip_ok(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// The address of host `name`.
    pub fn addr(&self, name: &str) -> &str {
        &self.host(name).addr
    }

    /// The namespace of host `name`.
    pub fn ns(&self, name: &str) -> &str {
        &self.host(name).ns
    }

    /// `program` to be run in host `name`'s namespace (`ip netns exec`, which execs it: the
    /// child's pid is the program's). It is killed if this thread dies first (the test process
    /// was killed), so no service outlives a test.
    pub fn command(&self, name: &str, program: &Path) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(name)]).arg(program);
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Partition host `name`: its switch port goes down; its processes run on, unreachable.
    pub fn cut(&self, name: &str) {
        ip_ok(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.host(name).port,
            "down",
        ]);
    }

    /// Heal the partition of host `name`.
    pub fn heal(&self, name: &str) {
        ip_ok(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.host(name).port,
            "up",
        ]);
    }
}

/// A 198.18.N.0/24 (benchmarking range, RFC 2544) that no address of the root namespace uses.
fn free_subnet(pid: u32, n: u32) -> u32 {
    let used = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let start = (pid.wrapping_mul(7) + n) % 250 + 1;
    (0..250)
        .map(|i| (start + i - 1) % 250 + 1)
        .find(|s| !used.contains(&format!(" 198.18.{s}.")))
        .expect("a free 198.18.N.0/24")
}

impl Drop for Net {
    fn drop(&mut self) {
        // The root's veth goes with the switch namespace, but only once the kernel has cleaned
        // that namespace up (asynchronously): delete it now so that its address is gone too.
        let _ = ip(&["link", "del", &self.root_link]);
        for h in &self.hosts {
            if let Err(e) = ip(&["netns", "del", &h.ns]) {
                eprintln!("netns cleanup: {e}");
            }
        }
        if let Err(e) = ip(&["netns", "del", &self.switch]) {
            eprintln!("netns cleanup: {e}");
        }
    }
}

/// A meta service and local services, each in a namespace of its own ("meta", "l0", "l1", ...),
/// reached by this process's clients over TCP through the switch. Processes are killed, then the
/// namespaces deleted, on drop; when the test is failing (or `MMC_TEST_LOGS` is set), the tail of
/// each service's log (its stderr, at `warn`) is printed first.
pub struct NetCluster {
    pub meta: Child,
    pub meta_addr: String,
    pub locals: Vec<Local>,
    pub dir: tempfile::TempDir,
    logs: Vec<(String, PathBuf)>,
    /// Last: deleted after the processes are gone.
    pub net: Net,
}

impl NetCluster {
    /// One namespace for the meta service (with `meta_args`) and one per local service (one per
    /// DRAM size), each service on its namespace's address.
    pub fn start(dram_sizes: &[&str], meta_args: &[&str]) -> NetCluster {
        let mut hosts = vec!["meta".to_string()];
        hosts.extend((0..dram_sizes.len()).map(|i| format!("l{i}")));
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let net = Net::create(&hosts);
        let dir = tempfile::tempdir().expect("temp dir");
        let addr_file = dir.path().join("meta.addr");
        let log = dir.path().join("meta.log");
        let mut meta = net
            .command("meta", &bin("mmc-meta"))
            .args(["--listen", &format!("tcp://{}:0", net.addr("meta"))])
            .args(["--log-level", "warn", "--addr-file"])
            .arg(&addr_file)
            .args(meta_args)
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("meta log file"))
            .spawn()
            .expect("spawn mmc-meta in its namespace");
        let meta_addr = wait_file(&addr_file, &mut meta, "mmc-meta");
        let mut cluster = NetCluster {
            meta,
            meta_addr,
            locals: Vec::new(),
            dir,
            logs: vec![("meta".into(), log)],
            net,
        };
        for (i, dram) in dram_sizes.iter().enumerate() {
            cluster.add_local(&format!("l{i}"), dram);
        }
        cluster
    }

    pub fn meta_url(&self) -> String {
        format!("tcp://{}", self.meta_addr)
    }

    fn add_local(&mut self, host: &str, dram: &str) {
        let addr_file = self.dir.path().join(format!("{host}.addr"));
        let log = self.dir.path().join(format!("{host}.log"));
        let n = self.locals.len();
        let mut child = self
            .net
            .command(host, &bin("mmc-local"))
            .args(["--meta", &self.meta_url()])
            .args(["--listen", &format!("tcp://{}:0", self.net.addr(host))])
            .args(["--dram", dram, "--log-level", "warn"])
            .args(["--create-id", &n.to_string(), "--addr-file"])
            .arg(&addr_file)
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("local log file"))
            .spawn()
            .expect("spawn mmc-local in its namespace");
        let line = wait_file(&addr_file, &mut child, "mmc-local");
        let mut it = line.split_whitespace();
        let endpoint = it.next().expect("endpoint").to_string();
        let rank = it.next().expect("rank").parse().expect("rank number");
        self.locals.push(Local {
            child,
            endpoint,
            rank,
        });
        self.logs.push((host.to_string(), log));
    }

    /// A client in this process (the root namespace), forced to TCP: shared memory would
    /// bypass the network, and so the partition.
    pub fn client(&self, timeout_ms: u64) -> Client {
        let config = ClientConfig {
            meta_url: self.meta_url(),
            timeout_ms,
            transport: Some(DataOpType::Tcp),
            ..ClientConfig::default()
        };
        Client::connect(&config).expect("client connects through the switch")
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for l in &mut self.locals {
            let _ = l.child.kill();
            let _ = l.child.wait();
        }
        let _ = self.meta.kill();
        let _ = self.meta.wait();
        if std::thread::panicking() || std::env::var_os("MMC_TEST_LOGS").is_some() {
            for (name, path) in &self.logs {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                eprintln!("---- {name} log, last {} lines ----", tail.len());
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
    }
}
