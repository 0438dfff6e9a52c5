//! The `mmc` tool against real processes: exit codes and messages.

mod common;

use std::process::{Command, Output};

use common::{bin, pattern, Cluster};

fn mmc(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(bin("mmc"))
        .args(["--meta", &cluster.meta_url(), "--timeout", "10"])
        .args(args)
        .output()
        .expect("run mmc")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn mmc_round_trips_a_file_and_reports() {
    let cluster = Cluster::start(&["64MB", "64MB"], &[]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    let dst = dir.path().join("out.bin");
    let data = pattern("file", 3 * 1024 * 1024 + 17);
    std::fs::write(&src, &data).unwrap();

    let put = mmc(&cluster, &["put", "file-key", src.to_str().unwrap()]);
    assert!(put.status.success(), "{}", text(&put));
    let get = mmc(&cluster, &["get", "file-key", dst.to_str().unwrap()]);
    assert!(get.status.success(), "{}", text(&get));
    assert!(std::fs::read(&dst).unwrap() == data, "file round trip");

    // To standard output too.
    let out = mmc(&cluster, &["get", "file-key"]);
    assert!(out.status.success() && out.stdout == data);

    let again = mmc(&cluster, &["put", "file-key", src.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(text(&again).contains("-3006"));

    let info = mmc(&cluster, &["info", "file-key"]);
    assert!(info.status.success());
    let info_text = text(&info);
    assert!(
        info_text.contains(&format!("{} bytes", data.len())),
        "{info_text}"
    );
    assert!(info_text.contains("DRAM"), "{info_text}");

    let exists = mmc(&cluster, &["exists", "file-key", "nope"]);
    assert_eq!(exists.status.code(), Some(1));
    assert!(text(&exists).contains("file-key: exists") && text(&exists).contains("nope: missing"));

    let status = mmc(&cluster, &["status"]);
    assert!(status.status.success());
    let s = text(&status);
    assert!(
        s.contains("local services 2") && s.contains("objects 1"),
        "{s}"
    );

    let rm = mmc(&cluster, &["rm", "file-key"]);
    assert!(rm.status.success(), "{}", text(&rm));
    let gone = mmc(&cluster, &["get", "file-key", dst.to_str().unwrap()]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(text(&gone).contains("-3007"));

    let bad = mmc(&cluster, &["put", &"k".repeat(256), src.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

#[test]
fn mmc_says_when_the_meta_service_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(bin("mmc"))
        .args(["--meta", &format!("tcp://127.0.0.1:{port}"), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let t = text(&out);
    assert!(
        t.contains("-3017") && t.contains("cannot reach the meta service"),
        "{t}"
    );
}

#[test]
fn mmc_status_json_describes_the_cluster_and_top_shows_rates() {
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let mut cluster = Cluster::start(&["32MB", "48MB"], &["--metrics", &metrics]);
    let client = cluster.client();
    for i in 0..5 {
        let key = format!("s{i}");
        client
            .put(&key, &pattern(&key, 100_000), &Default::default())
            .unwrap();
    }
    let json = |cluster: &Cluster| -> serde_json::Value {
        let out = mmc(cluster, &["status", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).expect("mmc status --json prints JSON")
    };
    let v = json(&cluster);
    assert_eq!(v["local_services"], 2, "{v}");
    assert_eq!(v["live_local_services"], 2, "{v}");
    assert_eq!(v["objects"], 5, "{v}");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m["health"] == "live"), "{v}");
    let objects: u64 = members.iter().map(|m| m["objects"].as_u64().unwrap()).sum();
    assert_eq!(objects, 5);
    let dram = &v["media"][0];
    assert_eq!(dram["media"], "DRAM");
    assert_eq!(dram["capacity_bytes"], 80u64 << 20);
    assert!(dram["used_bytes"].as_u64().unwrap() >= 500_000, "{v}");
    let endpoints: Vec<&str> = members
        .iter()
        .map(|m| m["endpoint"].as_str().unwrap())
        .collect();
    for l in &cluster.locals {
        assert!(endpoints.contains(&l.endpoint.as_str()), "{v}");
    }

    // A killed service leaves the status (the meta service's probe drops it at once).
    cluster.kill_local(0);
    common::wait_until(
        "the killed service leaves the status",
        std::time::Duration::from_secs(30),
        || json(&cluster)["local_services"] == 1,
    );

    let text_out = mmc(&cluster, &["status"]);
    let t = text(&text_out);
    assert!(t.contains("DRAM  [") && t.contains("live"), "{t}");

    // Rates over one interval, with puts going on meanwhile.
    let started = std::time::Instant::now();
    let top = std::thread::scope(|s| {
        let top = s.spawn(|| {
            mmc(
                &cluster,
                &[
                    "top",
                    "--metrics",
                    &metrics,
                    "--interval",
                    "1",
                    "--count",
                    "1",
                ],
            )
        });
        let mut i = 0;
        while !top.is_finished() && i < 200 {
            let key = format!("t{i}");
            let _ = client.put(&key, &pattern(&key, 1000), &Default::default());
            std::thread::sleep(std::time::Duration::from_millis(10));
            i += 1;
        }
        top.join().unwrap()
    });
    assert!(top.status.success(), "{}", text(&top));
    let out = String::from_utf8_lossy(&top.stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("puts/s") && lines[0].contains("objects/s"),
        "{out}"
    );
    let puts_per_s: f64 = lines[1].split_whitespace().next().unwrap().parse().unwrap();
    assert!(puts_per_s > 0.0, "{out}");
    println!("mmc top over {:?}:\n{out}", started.elapsed());
}
