//! A writer killed (SIGKILL) between a put's allocation and its commit: its meta connections
//! close, so the meta service reclaims its pending put at once and another client can put the
//! same key well within a second (not at `pending_timeout_ms`, 30 s). Prints its figures.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{pattern, Cluster};
use mmc_config::ClientConfig;
use mmc_dataplane::{Client, PutOptions};

const CHILD_ENV: &str = "MMC_TEST_WRITER_CHILD_META";
const KEY: &str = "writer-death-key";

/// The writer, run as a child process of this test binary: it stops forever between the meta
/// reply and the first copy, after saying so on stdout. Without the variable it does nothing.
#[test]
fn writer_child() {
    let Ok(meta_url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let client = Client::connect(&ClientConfig {
        meta_url,
        timeout_ms: 60_000,
        ..ClientConfig::default()
    })
    .expect("child connects");
    client.set_transfer_hook(Box::new(|| {
        println!("PENDING");
        std::thread::sleep(Duration::from_secs(3600));
    }));
    // A batch put: allocate, write, commit. (A single small put writes into a leased slot and
    // reserves no key before its one commit: nothing of it is pending.)
    let value = pattern(KEY, 4096);
    let _ = client.batch_put(&[KEY], &[&value], &PutOptions::default());
}

#[test]
fn a_killed_writer_frees_its_keys_at_once() {
    let cluster = Cluster::start(&["64MB"], &[]);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, cluster.meta_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("writer said PENDING").unwrap();
        if line.contains("PENDING") {
            break;
        }
    }
    let client = cluster.client();
    let value = pattern(KEY, 4096);
    // While the writer lives its put is pending: the key is taken.
    let taken = client.put(KEY, &value, &PutOptions::default());
    assert!(
        taken.is_err(),
        "the pending key is reserved while its writer lives"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client.put(KEY, &value, &PutOptions::default()) {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    killed.elapsed() < Duration::from_secs(5),
                    "key still reserved {:?} after the writer died: {e}",
                    killed.elapsed()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    let free_after = killed.elapsed();
    let mut buf = vec![0u8; 4096];
    client.get_into(KEY, &mut buf).expect("read back");
    assert_eq!(buf, value);
    println!(
        "writer killed mid-put: key free again {:.1} ms after the kill was reaped ({attempts} puts), \
         pending timeout 30000 ms"
    , free_after.as_secs_f64() * 1e3);
    assert!(free_after < Duration::from_secs(1));
}
