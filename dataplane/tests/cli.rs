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
