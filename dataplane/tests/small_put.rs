//! Small puts through leased slots (one meta round trip), over real processes: the own, same-host
//! and TCP placements, slots given back at a client's end, and a meta restart under them.

mod common;

use std::time::Duration;

use common::{pattern, wait_until, Cluster};
use mmc_config::DataOpType;
use mmc_dataplane::{Client, Error, PutOptions};

const MIB: u64 = 1024 * 1024;
const N: usize = 200;

fn put_and_check(writer: &Client, reader: &Client, prefix: &str) {
    let opts = PutOptions::default();
    for i in 0..N {
        let key = format!("{prefix}-{i}");
        // Sizes around the 4 KiB class and in larger ones: every one fits its slot.
        let size = [4096, 1, 4000, 9000, 65536][i % 5];
        writer.put(&key, &pattern(&key, size), &opts).unwrap();
    }
    assert!(
        writer.slots_held() > 0,
        "{prefix}: puts went through leased slots"
    );
    // Create-only, as every put.
    let again = writer.put(&format!("{prefix}-0"), b"x", &opts);
    assert!(matches!(again, Err(Error::Exists { .. })), "{again:?}");
    for i in 0..N {
        let key = format!("{prefix}-{i}");
        let size = [4096, 1, 4000, 9000, 65536][i % 5];
        assert_eq!(reader.get(&key).unwrap(), pattern(&key, size), "{key}");
        reader.exist(&key).unwrap();
    }
}

#[test]
fn small_puts_use_leased_slots_on_every_placement() {
    let cluster = Cluster::start(&["64MB"], &[]);
    let reader = cluster.client_with(10_000, Some(DataOpType::Tcp));
    let own = cluster.embedded_client(64 * MIB);
    let host = cluster.client();
    let tcp = cluster.client_with(10_000, Some(DataOpType::Tcp));
    put_and_check(&own, &reader, "own");
    put_and_check(&host, &reader, "host");
    put_and_check(&tcp, &reader, "tcp");
    let held = own.slots_held() + host.slots_held() + tcp.slots_held();
    let status = reader.status().unwrap();
    println!(
        "3 x {N} puts: {} objects, {} pending (slots held: {held})",
        status.objects, status.pending
    );
    assert_eq!(status.objects, 3 * N as u64);
    assert_eq!(
        status.pending, held as u64,
        "slots are the only pending entries"
    );
    // A client's end gives its slots back at once (not at the end of their lease).
    drop(host);
    drop(tcp);
    let left = own.slots_held() as u64;
    let took = wait_until("slots given back", Duration::from_secs(5), || {
        reader.status().unwrap().pending == left
    });
    println!("slots of two dropped clients given back in {took:.2?}");
}

#[test]
fn leased_puts_survive_a_meta_restart() {
    let mut cluster = Cluster::start(&["64MB"], &["--rebuild-window-ms", "3000"]);
    let writer = cluster.client_with(10_000, None);
    let opts = PutOptions::default();
    for i in 0..50 {
        let key = format!("before-{i}");
        writer.put(&key, &pattern(&key, 4096), &opts).unwrap();
    }
    assert!(writer.slots_held() > 0);
    // The service's index learns of commits with its next heartbeat (1 s): let it.
    std::thread::sleep(Duration::from_millis(2_500));
    cluster.restart_meta();
    // The old slots are unknown to the new run: the first put after the restart finds out and
    // goes the normal way; later ones lease again. No put fails once the service rejoined, and
    // no object of the old run is overwritten.
    let reader = cluster.client_with(10_000, Some(DataOpType::Tcp));
    wait_until("the service rejoined", Duration::from_secs(10), || {
        reader.exist("before-0").is_ok()
    });
    for i in 0..50 {
        let key = format!("after-{i}");
        writer.put(&key, &pattern(&key, 4096), &opts).unwrap();
    }
    for i in 0..50 {
        for p in ["before", "after"] {
            let key = format!("{p}-{i}");
            assert_eq!(reader.get(&key).unwrap(), pattern(&key, 4096), "{key}");
        }
    }
}
