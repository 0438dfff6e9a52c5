//! Start-up guards: a pool larger than the host can give is refused at once, with both numbers.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::bin;
use mmc_dataplane::{LocalConfig, LocalService};

/// `MemAvailable` of this host, in bytes.
fn mem_available() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemAvailable in /proc/meminfo");
    kb * 1024
}

/// The number before " bytes (" that follows `after` in `text`.
fn bytes_after(text: &str, after: &str) -> u64 {
    let rest = &text[text
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} in {text}"))
        + after.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number after {after:?} in {text}"))
}

#[test]
fn a_pool_larger_than_the_host_is_refused_at_once_with_both_numbers() {
    let started = Instant::now();
    let out = Command::new(bin("mmc-local"))
        .args([
            "--dram",
            "100TB",
            "--meta",
            "tcp://127.0.0.1:9",
            "--log-level",
            "error",
        ])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(5), "refused after {took:?}");
    assert_eq!(
        bytes_after(&stderr, "the DRAM pool needs "),
        100u64 << 40,
        "{stderr}"
    );
    let can = bytes_after(&stderr, "this host can give only ");
    let avail = mem_available();
    assert!(
        can > 0 && can <= avail + avail / 10,
        "{can} vs MemAvailable {avail}: {stderr}"
    );
    assert!(
        stderr.contains("MemAvailable") && stderr.contains("-3016"),
        "{stderr}"
    );
    println!("mmc-local --dram 100TB refused in {took:?}: {stderr}");

    // The embedded service (C and Python start it the same way) is refused the same.
    let started = Instant::now();
    let err = LocalService::start(&LocalConfig {
        meta_url: "tcp://127.0.0.1:9".into(),
        dram_bytes: 64 << 40,
        ..LocalConfig::default()
    })
    .err()
    .expect("a 64 TiB embedded pool is refused");
    let text = err.to_string();
    assert_eq!(
        bytes_after(&text, "the DRAM pool needs "),
        64u64 << 40,
        "{text}"
    );
    assert!(text.contains("dram_size 64.0 TiB"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
