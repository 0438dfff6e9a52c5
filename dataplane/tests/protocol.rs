//! `protocol = tcp` (`host_tcp`) on a local service really forces TCP: the service offers no
//! same-host shared memory, so a client with the automatic transport on the same host moves its
//! bytes over the service's TCP data endpoint (counted by the service's own metrics), while a
//! service with the default `auto` hands the same client its mapped pools.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{pattern, Cluster};
use mmc_controlplane::msg::PREFERRED_AFFINITY;
use mmc_dataplane::PutOptions;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The sum of `mmc_local_bytes_total` samples with these labels, scraped from `/metrics`.
fn bytes_total(port: u16, labels: &[&str]) -> f64 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with("mmc_local_bytes_total{"))
        .filter(|l| labels.iter().all(|w| l.contains(w)))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .expect("a sample value")
        })
        .sum()
}

#[test]
fn protocol_tcp_offers_no_shared_memory() {
    const LEN: usize = 1 << 20;
    let mut cluster = Cluster::start(&[], &[]);
    let (p_auto, p_flag, p_file) = (free_port(), free_port(), free_port());
    let metrics = |p: u16| format!("127.0.0.1:{p}");
    let auto = cluster
        .add_local_with(&["--dram", "32MB", "--metrics", &metrics(p_auto)])
        .rank;
    // The flag, with the C spelling.
    let flag = cluster
        .add_local_with(&[
            "--dram",
            "32MB",
            "--protocol",
            "host_tcp",
            "--metrics",
            &metrics(p_flag),
        ])
        .rank;
    // The `ock.mmc.*` key in the service's config file.
    let conf = cluster.dir.path().join("mmc-local.conf");
    std::fs::write(&conf, "ock.mmc.local_service.protocol = tcp\n").unwrap();
    let file = cluster
        .add_local_env(
            &["--dram", "32MB", "--metrics", &metrics(p_file)],
            &[("MMC_LOCAL_CONFIG_PATH", conf.to_str().unwrap())],
        )
        .rank;
    // One client with the automatic transport, on the same host as all three.
    let c = cluster.client();
    for (name, rank, port) in [
        ("auto", auto, p_auto),
        ("flag", flag, p_flag),
        ("file", file, p_file),
    ] {
        let key = format!("k-{name}");
        let data = pattern(&key, LEN);
        let opts = PutOptions {
            policy: PREFERRED_AFFINITY,
            preferred: vec![rank as i32],
            ..PutOptions::default()
        };
        c.put(&key, &data, &opts).unwrap();
        assert!(
            c.get(&key).unwrap() == data,
            "{name}: bytes read back differ"
        );
        let written = bytes_total(port, &["transport=\"tcp\"", "op=\"write\""]);
        let read = bytes_total(port, &["transport=\"tcp\"", "op=\"read\""]);
        if rank == auto {
            // Shared memory: the client copied the bytes itself, none crossed TCP.
            assert_eq!((written, read), (0.0, 0.0), "{name}");
        } else {
            assert_eq!((written, read), (LEN as f64, LEN as f64), "{name}");
        }
    }
    assert_eq!(c.mapped_services(), vec![auto]);
}
