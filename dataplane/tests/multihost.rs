//! Multi-host defaults through real processes on four hosts (network namespaces joined by veth
//! pairs and a bridge, `common::netns`): the meta service, two local services and the `mmc`
//! client each on a host of its own. Every service binds the wildcard address with no
//! `advertise_url`, as the README's multi-host example does: each local service must advertise
//! its host's routable address (toward the meta service), not 0.0.0.0, so that the client on the
//! fourth host reaches both. Skips (prints why) without root or `ip netns`.

mod common;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::netns::{self, Net};
use common::{bin, pattern};

/// Wait for `path` to hold a line (an addr file), bounded.
fn wait_line(path: &Path, child: &mut Child, what: &str) -> String {
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
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills its processes on drop (before the `Net` guard deletes the namespaces).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn wildcard_binds_advertise_routable_addresses_across_four_hosts() {
    if let Some(why) = netns::unavailable() {
        println!("skipped: {why}");
        return;
    }
    let net = Net::create(&["meta", "l0", "l1", "cl"]);
    let dir = tempfile::tempdir().unwrap();
    let mut procs = Procs(Vec::new());
    let meta_file = dir.path().join("meta.addr");
    let mut meta = net
        .command("meta", &bin("mmc-meta"))
        .args(["--listen", "tcp://0.0.0.0:0", "--log-level", "warn"])
        .arg("--addr-file")
        .arg(&meta_file)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let bound = wait_line(&meta_file, &mut meta, "mmc-meta");
    procs.0.push(meta);
    let port = bound.rsplit(':').next().unwrap();
    let meta_url = format!("tcp://{}:{port}", net.addr("meta"));
    let mut endpoints = Vec::new();
    for host in ["l0", "l1"] {
        let file = dir.path().join(format!("{host}.addr"));
        let mut local = net
            .command(host, &bin("mmc-local"))
            .args(["--meta", &meta_url, "--listen", "tcp://0.0.0.0:0"])
            .args(["--dram", "32MB", "--log-level", "warn", "--addr-file"])
            .arg(&file)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let line = wait_line(&file, &mut local, "mmc-local");
        procs.0.push(local);
        let bound_port = line.split(':').nth(1).unwrap().split(' ').next().unwrap();
        endpoints.push(format!("{}:{bound_port}", net.addr(host)));
    }

    let mmc = |args: &[&str]| -> Output {
        net.command("cl", &bin("mmc"))
            .args(["--meta", &meta_url, "--timeout", "10"])
            .args(args)
            .output()
            .unwrap()
    };
    // Both services advertise their own host's address.
    let status = mmc(&["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status));
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let mut advertised: Vec<String> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["endpoint"].as_str().unwrap().to_string())
        .collect();
    advertised.sort();
    endpoints.sort();
    assert_eq!(advertised, endpoints, "{v}");

    // Data moves between the client's host and both services' hosts: 2 replicas of each object.
    let started = Instant::now();
    let mut moved = 0usize;
    for i in 0..4 {
        let key = format!("mh{i}");
        let data = pattern(&key, 256 * 1024 + i);
        let src = dir.path().join(format!("{key}.in"));
        let dst = dir.path().join(format!("{key}.out"));
        std::fs::write(&src, &data).unwrap();
        let put = mmc(&["put", &key, src.to_str().unwrap(), "--replicas", "2"]);
        assert!(put.status.success(), "{}", text(&put));
        let get = mmc(&["get", &key, dst.to_str().unwrap()]);
        assert!(get.status.success(), "{}", text(&get));
        assert!(std::fs::read(&dst).unwrap() == data, "{key} read back");
        moved += 2 * data.len();
    }
    let info = mmc(&["info", "mh0"]);
    let info_text = text(&info);
    for e in &endpoints {
        assert!(
            info_text.contains(e.as_str()),
            "a replica on {e}: {info_text}"
        );
    }
    println!(
        "4 hosts: {} bytes written and read across the bridge in {:?}; advertised {advertised:?}",
        moved,
        started.elapsed()
    );
    drop(procs);
}
