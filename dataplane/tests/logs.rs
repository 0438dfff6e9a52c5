//! Log settings of the binaries: JSON lines in a file under `log_path`, rotated by size.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bin, wait_until};

#[test]
fn json_logs_go_to_a_rotated_file_under_log_path() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let addr_file = dir.path().join("meta.addr");
    // Debug level with 64 KiB files, 2 kept: the meta service logs each heartbeat and request.
    let conf = dir.path().join("meta.conf");
    std::fs::write(
        &conf,
        format!(
            "ock.mmc.meta_service_url = tcp://127.0.0.1:0\n\
             ock.mmc.log_level = debug\n\
             ock.mmc.log_format = json\n\
             ock.mmc.log_path = {}\n\
             ock.mmc.log_rotation_file_size = 64KB\n\
             ock.mmc.log_rotation_file_count = 2\n",
            logs.display()
        ),
    )
    .unwrap();
    let mut meta = Command::new(bin("mmc-meta"))
        .arg("--config")
        .arg(&conf)
        .arg("--addr-file")
        .arg(&addr_file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = logs.join("mmc-meta.log");
    wait_until("the log file appears", Duration::from_secs(10), || {
        addr_file.exists() && std::fs::metadata(&log).is_ok_and(|m| m.len() > 0)
    });
    let addr = std::fs::read_to_string(&addr_file).unwrap();
    // Requests of a client that does not exist: each is a debug line ("connection closed").
    let started = std::time::Instant::now();
    while !logs.join("mmc-meta.log.1").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no rotation within 60 s"
        );
        for _ in 0..200 {
            drop(std::net::TcpStream::connect(addr.trim()).unwrap());
        }
    }
    let _ = meta.kill();
    let out = meta.wait_with_output().unwrap();
    assert!(out.stderr.is_empty(), "logs went to the file, not stderr");
    let rotated = std::fs::read_to_string(logs.join("mmc-meta.log.1")).unwrap();
    let mut lines = 0;
    for line in rotated.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        lines += 1;
    }
    let size = std::fs::metadata(logs.join("mmc-meta.log.1"))
        .unwrap()
        .len();
    assert!(size <= 64 << 10, "rotated at 64 KiB: {size}");
    assert!(size > 32 << 10, "filled before rotating: {size}");
    assert!(!logs.join("mmc-meta.log.2").exists(), "2 files kept in all");
    println!(
        "{lines} JSON lines ({size} bytes) in mmc-meta.log.1 after {:?}",
        started.elapsed()
    );
}
