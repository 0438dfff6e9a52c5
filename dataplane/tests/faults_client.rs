//! A client killed (SIGKILL) in the middle of a batch put, through real processes: the keys of
//! its unfinished batch are free again at once (its meta connections close), what it committed
//! before stays readable, and other clients' objects and operations are untouched. Prints its
//! figures.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{self, Kind, Load, Spec};
use common::{pattern, Cluster};
use mmc_config::ClientConfig;
use mmc_dataplane::{Client, PutOptions};

const CHILD_ENV: &str = "MMC_TEST_BATCH_WRITER_META";
const KEYS_PER_BATCH: usize = 32;
const OBJECT_BYTES: usize = 64 * 1024;
/// The batch during which the writer is killed.
const KILL_BATCH: usize = 10;
/// The writer dwells this long between that batch's allocation and its writes, so that the kill
/// lands while its keys are pending even on a loaded machine.
const DWELL_MS: u64 = 2_000;

fn child_key(batch: usize, i: usize) -> String {
    format!("batch-{batch:03}-{i:02}")
}

/// The writer, run as a child process of this test binary: batch puts, one after another,
/// announcing each batch on stdout once the meta service placed it. Without the variable it
/// does nothing.
#[test]
fn batch_writer_child() {
    let Ok(meta_url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let client = Client::connect(&ClientConfig {
        meta_url,
        timeout_ms: 60_000,
        ..ClientConfig::default()
    })
    .expect("child connects");
    let batch = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let announced = batch.clone();
    client.set_transfer_hook(Box::new(move || {
        let b = announced.load(std::sync::atomic::Ordering::Acquire);
        println!("BATCH {b}");
        if b >= KILL_BATCH {
            std::thread::sleep(Duration::from_millis(DWELL_MS));
        }
    }));
    for b in 0..KILL_BATCH + 100 {
        batch.store(b, std::sync::atomic::Ordering::Release);
        let keys: Vec<String> = (0..KEYS_PER_BATCH).map(|i| child_key(b, i)).collect();
        let values: Vec<Vec<u8>> = keys.iter().map(|k| pattern(k, OBJECT_BYTES)).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let results = client
            .batch_put(&keys, &values, &PutOptions::default())
            .expect("batch accepted");
        assert!(results.iter().all(|r| r.is_ok()), "batch {b}: {results:?}");
    }
}

#[test]
fn a_client_killed_mid_batch_put_frees_its_pending_keys_at_once() {
    let cluster = Cluster::start(&["128MB", "128MB"], &[]);
    let c = cluster.client();
    let sentinels = load::preload(&c, "others", 100, OBJECT_BYTES, 1);
    // Another client keeps working through the whole episode.
    let other = Arc::new(cluster.client_with(5_000, None));
    let others = Load::start(
        other.clone(),
        other,
        Spec {
            prefix: "others-load".into(),
            puts_per_s: 10,
            gets_per_s: 25,
            object_bytes: OBJECT_BYTES,
            replicas: 1,
            max: Duration::from_secs(30),
        },
        sentinels,
    );
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "batch_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, cluster.meta_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let wanted = format!("BATCH {KILL_BATCH}");
    loop {
        let line = lines
            .next()
            .expect("the writer announced its batch")
            .unwrap();
        if line.trim() == wanted {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    let killed_at = others.now();
    // The batch in flight: each key is free at once (its put succeeds here) or was committed.
    let keys: Vec<String> = (0..KEYS_PER_BATCH)
        .map(|i| child_key(KILL_BATCH, i))
        .collect();
    let mut pending = keys.clone();
    let mut attempts = 0;
    let mut committed_in_flight = 0;
    while !pending.is_empty() {
        attempts += 1;
        let refs: Vec<&str> = pending.iter().map(String::as_str).collect();
        let values: Vec<Vec<u8>> = pending.iter().map(|k| pattern(k, OBJECT_BYTES)).collect();
        let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let results = c.batch_put(&refs, &values, &PutOptions::default()).unwrap();
        let mut left = Vec::new();
        for (key, r) in pending.iter().zip(results) {
            match r {
                Ok(()) => {}
                // Committed by the writer before it died, or still reserved.
                Err(e) if e.code().as_i32() == -3006 => {
                    if c.exist(key).is_ok() {
                        committed_in_flight += 1;
                    } else {
                        left.push(key.clone());
                    }
                }
                Err(e) => panic!("put of {key} after the writer's death: {e}"),
            }
        }
        pending = left;
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "{} keys still reserved {:?} after the writer died",
            pending.len(),
            killed.elapsed()
        );
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let freed_after = killed.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let report = others.finish();
    // Everything the writer committed before, and the batch written here, reads back exact.
    let mut wrong = 0;
    let mut lost = 0;
    for b in 0..=KILL_BATCH {
        for i in 0..KEYS_PER_BATCH {
            let key = child_key(b, i);
            match c.get(&key) {
                Ok(bytes) => wrong += (bytes != pattern(&key, OBJECT_BYTES)) as usize,
                Err(_) => lost += 1,
            }
        }
    }
    let (others_lost, others_wrong) = report.read_back(&c);
    println!(
        "client kill -9 mid batch put ({KEYS_PER_BATCH} keys x {OBJECT_BYTES} B per batch, killed \
         in batch {KILL_BATCH} between its allocation and its writes): {} of its keys free again \
         {:.1} ms after the kill was reaped ({attempts} batch puts), {committed_in_flight} already \
         committed; its {KILL_BATCH} earlier batches and the freed keys read back: lost {lost}, \
         wrong bytes {wrong}",
        KEYS_PER_BATCH - committed_in_flight,
        freed_after.as_secs_f64() * 1e3
    );
    println!(
        "  another client meanwhile: puts {}; gets {} (after the kill {}); wrong bytes {}; its {} \
         objects (100 written before) read back: lost {others_lost:?}, wrong bytes {others_wrong}",
        report.all(Kind::Put),
        report.all(Kind::Get),
        report.tally(Kind::Get, killed_at, Duration::MAX),
        report.wrong_bytes,
        report.committed.len()
    );
    assert_eq!(
        committed_in_flight, 0,
        "killed before the writes: nothing committed"
    );
    assert!(freed_after < Duration::from_secs(1), "free at once");
    assert_eq!((lost, wrong), (0, 0));
    assert_eq!(report.wrong_bytes + others_wrong, 0);
    assert!(others_lost.is_empty(), "others' objects intact");
    assert_eq!(
        report.all(Kind::Put).failures() + report.all(Kind::Get).failures(),
        0
    );
}
