//! The RDMA transport between real processes over the simulated NIC: two `mmc-local` processes
//! (`--protocol rdma --rdma-provider sim`, pools registered as 4 MiB MRs so transfers cross MR
//! boundaries) and a client in this process (`transport = rdma`, `rdma_provider = sim`), whose
//! one-sided READs and WRITEs land in the services' pools with no service thread on the data path.
//! Faults are injected into this process's simulated NIC, so the tests run one at a time.
//!
//! `MMC_RDMA_TEST_PROVIDER=verbs` (scripts/rdma-check.sh, on a host with an RDMA device and a
//! build with `--features mmc-hal/rdma`) runs the byte-exact and mixed-pool tests over the real
//! device instead (loopback queue pairs between the processes); the fault-injection and
//! MR-counter tests need the simulated NIC and say so.

mod common;

use std::sync::Mutex;

use common::{pattern, Cluster};
use mmc_config::{DataOpType, RdmaCallerMemory, RdmaProvider};
use mmc_dataplane::{Client, ClientConfig, Code, PutOptions};
use mmc_hal::rdma::sim::{self, Fault};
use mmc_hal::rdma::WcStatus;

static SERIAL: Mutex<()> = Mutex::new(());

/// The provider under test: the simulated NIC unless `MMC_RDMA_TEST_PROVIDER=verbs`.
fn provider() -> (&'static str, RdmaProvider) {
    match std::env::var("MMC_RDMA_TEST_PROVIDER").as_deref() {
        Ok("verbs") => ("verbs", RdmaProvider::Verbs),
        _ => ("sim", RdmaProvider::Sim),
    }
}

fn sim_only(test: &str) -> bool {
    if provider().1 != RdmaProvider::Sim {
        println!("skipped {test}: it needs the simulated NIC (injected faults, its counters or its services)");
        return false;
    }
    true
}

const MIB: usize = 1 << 20;

fn cluster(n: usize) -> Cluster {
    let mut c = Cluster::start(&[], &[]);
    for _ in 0..n {
        c.add_local_env(
            &[
                "--dram",
                "48MB",
                "--protocol",
                "rdma",
                "--rdma-provider",
                "sim",
            ],
            &[("MMC_RDMA_SIM_LIMITS", "max_mr_size=4194304")],
        );
    }
    c
}

fn rdma_client(c: &Cluster) -> Client {
    let client = Client::connect(&ClientConfig {
        transport: Some(DataOpType::Rdma),
        rdma_provider: RdmaProvider::Sim,
        ..c.client_config()
    })
    .expect("client connects");
    assert_eq!(
        client
            .rdma_fabric()
            .as_deref()
            .map(|f| f.starts_with("sim:")),
        Some(true)
    );
    client
}

fn two() -> PutOptions {
    PutOptions {
        replicas: 2,
        ..PutOptions::default()
    }
}

/// Put `keys` in one batch with two replicas, each `size(i)` bytes of its key's pattern; every
/// key must land. Their values.
fn put_batch(client: &Client, keys: &[String], size: impl Fn(usize) -> usize) -> Vec<Vec<u8>> {
    let vals: Vec<Vec<u8>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| pattern(k, size(i)))
        .collect();
    let kr: Vec<&str> = keys.iter().map(String::as_str).collect();
    let vr: Vec<&[u8]> = vals.iter().map(Vec::as_slice).collect();
    let res = client.batch_put(&kr, &vr, &two()).unwrap();
    assert!(res.iter().all(Result::is_ok), "{res:?}");
    vals
}

/// Read `keys` back in one batch: the errors of the keys that failed, and whether every value
/// matched `vals`.
fn get_batch(client: &Client, keys: &[String], vals: &[Vec<u8>]) -> (Vec<String>, bool) {
    let kr: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut outs: Vec<Vec<u8>> = vals.iter().map(|v| vec![0u8; v.len()]).collect();
    let mut bufs: Vec<&mut [u8]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
    let got = client.batch_get_into(&kr, &mut bufs).unwrap();
    let bad = got
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    (bad, outs == vals)
}

/// Every call form once, byte-exact, keys prefixed `tag`: put / get / get_into from 1 byte to
/// 9 MiB (across 4 MiB MRs and, in bounce mode, 8 MiB staging rounds), batch put / batch get of
/// 64 keys with 2 replicas, 122-piece layers. The bytes the NIC must have moved.
fn every_call_form(client: &Client, tag: &str) -> u64 {
    let opts = PutOptions::default();
    let sizes = [1usize, 7, 4096, 300_000, 9 * MIB + 3];
    for (i, len) in sizes.into_iter().enumerate() {
        let key = format!("{tag}one/{i}");
        let v = pattern(&key, len);
        client.put(&key, &v, &opts).unwrap();
        assert!(client.get(&key).unwrap() == v, "{key}");
        let mut buf = vec![0u8; len + 5];
        assert_eq!(client.get_into(&key, &mut buf).unwrap(), len as u64);
        assert!(buf[..len] == v[..] && buf[len..] == [0; 5]);
    }
    // Nothing went over shared memory: the client mapped no pool.
    assert!(client.mapped_services().is_empty());

    let keys: Vec<String> = (0..64).map(|i| format!("{tag}batch/{i}")).collect();
    let vals = put_batch(client, &keys, |i| 1 + i * 1000);
    let (bad, exact) = get_batch(client, &keys, &vals);
    assert!(bad.is_empty() && exact, "{bad:?}");

    // layers: 61 x (K 128 KiB + V 16 KiB) gathered into one object, scattered back.
    let layers: Vec<Vec<u8>> = (0..122)
        .map(|i| {
            pattern(
                &format!("{tag}l{i}"),
                if i % 2 == 0 { 128 << 10 } else { 16 << 10 },
            )
        })
        .collect();
    let parts: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    let lk = format!("{tag}layers");
    client.put_parts(&lk, &parts, &opts).unwrap();
    let mut back: Vec<Vec<u8>> = layers.iter().map(|l| vec![0u8; l.len()]).collect();
    let mut views: Vec<&mut [u8]> = back.iter_mut().map(Vec::as_mut_slice).collect();
    client.get_into_parts(&lk, &mut views).unwrap();
    assert!(back == layers);

    (sizes.iter().sum::<usize>() * 3
        + vals.iter().map(Vec::len).sum::<usize>() * 3
        + layers.iter().map(Vec::len).sum::<usize>() * 2) as u64
}

#[test]
fn every_call_form_is_byte_exact_over_the_simulated_nic() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let c = cluster(2);
    let client = rdma_client(&c);
    let before = sim::stats();
    let want = every_call_form(&client, "");
    let after = sim::stats();
    let moved = after.bytes - before.bytes;
    println!(
        "simulated NIC: {} work requests, {} bytes (data {want}), {} errors",
        after.wrs - before.wrs,
        moved,
        after.errors - before.errors
    );
    assert!(
        moved >= want,
        "every byte went over the NIC: {moved} < {want}"
    );
    assert_eq!(after.errors, before.errors);
}

/// `rdma_caller_memory = bounce`: every call form byte-exact through the queue pairs' staging
/// buffers, none of the caller's memory registered (registered buffers included), and an error
/// completion mid-round recovered from the other replica.
#[test]
fn bounce_buffers_carry_every_call_form_without_registering_caller_memory() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !sim_only("bounce_buffers_carry_every_call_form_without_registering_caller_memory") {
        return;
    }
    let c = cluster(2);
    let client = Client::connect(&ClientConfig {
        transport: Some(DataOpType::Rdma),
        rdma_provider: RdmaProvider::Sim,
        rdma_caller_memory: RdmaCallerMemory::Bounce,
        ..c.client_config()
    })
    .expect("client connects");
    let before = sim::stats();
    let s0 = client.rdma_mr_stats().unwrap();
    let want = every_call_form(&client, "bounce/");
    // A registered buffer is copied too, never registered with the device.
    let v = pattern("reg", 3 * MIB);
    client.put("reg", &v, &PutOptions::default()).unwrap();
    let mut buf = vec![0u8; 4 * MIB];
    client.register_memory(buf.as_ptr() as usize, buf.len());
    client.get_into("reg", &mut buf).unwrap();
    assert!(buf[..v.len()] == v[..]);
    client.unregister_memory(buf.as_ptr() as usize, buf.len());
    let s1 = client.rdma_mr_stats().unwrap();
    let after = sim::stats();
    println!(
        "bounce: {} bytes staged in {} rounds, {} MRs registered (staging buffers), {} work requests",
        s1.staged_bytes - s0.staged_bytes,
        s1.staging_rounds - s0.staging_rounds,
        after.mrs_registered - before.mrs_registered,
        after.wrs - before.wrs
    );
    assert_eq!(
        (s1.pinned_registrations, s1.call_registrations, s1.hits),
        (s0.pinned_registrations, s0.call_registrations, s0.hits),
        "no caller memory registered: {s1:?}"
    );
    assert!(s1.staged_bytes - s0.staged_bytes >= want + 3 * MIB as u64);
    assert!(after.bytes - before.bytes >= want);
    // The 9 MiB object needed two rounds of the 8 MiB staging buffer; every other call one.
    assert!(s1.staging_rounds - s0.staging_rounds > 20);
    // Staging buffers and queue pair scratch words only: a handful, not one per call.
    assert!(after.mrs_registered - before.mrs_registered <= 32);

    // An error completion mid-round: the batch get falls over to the other replica.
    let keys: Vec<String> = (0..6).map(|i| format!("bounce/rep/{i}")).collect();
    let vals = put_batch(&client, &keys, |_| 2 * MIB + 1);
    let errors = sim::stats().errors;
    sim::inject_error(4, WcStatus::RetryExceeded);
    let (bad, exact) = get_batch(&client, &keys, &vals);
    assert!(bad.is_empty() && exact, "{bad:?}");
    assert_eq!(sim::stats().errors, errors + 1);
}

#[test]
fn key_and_bounds_violations_are_caught_and_the_next_call_works() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !sim_only("key_and_bounds_violations_are_caught_and_the_next_call_works") {
        return;
    }
    let c = cluster(1);
    let client = rdma_client(&c);
    let v = pattern("victim", 2 * MIB);
    client.put("victim", &v, &PutOptions::default()).unwrap();
    for (i, f) in [Fault::BadRkey, Fault::OutOfBounds].into_iter().enumerate() {
        let errors = sim::stats().errors;
        // The third work request of the get (after the fence's two) gets the fault.
        sim::inject(2, f);
        let Err(e) = client.get("victim") else {
            panic!("{f:?}: the get succeeded");
        };
        assert_eq!(e.code(), Code::NotConnectLocal, "{f:?}: {e}");
        assert!(e.to_string().contains("RemoteAccess"), "{e}");
        assert_eq!(sim::stats().errors, errors + 1);
        // The queue pair was reset and reconnected: the next calls work, bytes intact.
        assert!(client.get("victim").unwrap() == v);
        let k = format!("after/{i}");
        client
            .put(&k, &pattern(&k, 1000), &PutOptions::default())
            .unwrap();
        assert!(client.get(&k).unwrap() == pattern(&k, 1000));
    }
    // A write aimed out of bounds never lands: the pool's other object is intact.
    sim::inject(2, Fault::OutOfBounds);
    let w = pattern("w", 3 * MIB);
    let r = client.put("w", &w, &PutOptions::default());
    println!(
        "put with an out-of-bounds write: {:?} (an error completion fails the put with -3018)",
        r.as_ref().err()
    );
    assert!(client.get("victim").unwrap() == v);
    if r.is_ok() {
        assert!(client.get("w").unwrap() == w);
    }
}

#[test]
fn an_error_completion_mid_chain_falls_over_to_the_other_replica() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !sim_only("an_error_completion_mid_chain_falls_over_to_the_other_replica") {
        return;
    }
    let c = cluster(2);
    let client = rdma_client(&c);
    let keys: Vec<String> = (0..16).map(|i| format!("rep/{i}")).collect();
    let vals = put_batch(&client, &keys, |_| MIB + 17);
    for status in [
        WcStatus::RetryExceeded,
        WcStatus::RemoteAccess,
        WcStatus::Flush,
    ] {
        let errors = sim::stats().errors;
        // Mid-chain: after the fence and a few data work requests.
        sim::inject_error(5, status);
        let (bad, exact) = get_batch(&client, &keys, &vals);
        assert!(bad.is_empty(), "{status:?}: {bad:?}");
        assert!(exact, "{status:?}");
        assert_eq!(sim::stats().errors, errors + 1, "{status:?} was injected");
    }
    // A put hit mid-chain is placed again and reads back exact.
    sim::inject_error(4, WcStatus::RetryExceeded);
    let w = pattern("again", 2 * MIB);
    let r = client.put("again", &w, &PutOptions::default());
    println!(
        "put with an error completion mid-chain: {:?}",
        r.as_ref().err()
    );
    match r {
        Ok(()) => assert!(client.get("again").unwrap() == w),
        Err(e) => assert_eq!(e.code(), Code::NotConnectLocal),
    }
}

#[test]
fn registered_buffers_hit_the_mr_cache_until_unregistered() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !sim_only("registered_buffers_hit_the_mr_cache_until_unregistered") {
        return;
    }
    let c = cluster(1);
    let client = rdma_client(&c);
    let v = pattern("cached", 256 << 10);
    client.put("cached", &v, &PutOptions::default()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let s0 = client.rdma_mr_stats().unwrap();
    client.register_memory(buf.as_ptr() as usize, buf.len());
    for _ in 0..5 {
        buf.fill(0);
        client.get_into("cached", &mut buf).unwrap();
        assert!(buf[..v.len()] == v[..]);
    }
    let s1 = client.rdma_mr_stats().unwrap();
    assert_eq!(
        s1.pinned_registrations - s0.pinned_registrations,
        1,
        "{s1:?}"
    );
    assert_eq!(s1.hits - s0.hits, 4, "{s1:?}");
    assert_eq!(s1.call_registrations, s0.call_registrations, "{s1:?}");
    client.unregister_memory(buf.as_ptr() as usize, buf.len());
    let s2 = client.rdma_mr_stats().unwrap();
    assert_eq!(s2.invalidations - s1.invalidations, 1);
    assert_eq!(s2.generation, s1.generation + 1);
    client.get_into("cached", &mut buf).unwrap();
    assert!(buf[..v.len()] == v[..]);
    let s3 = client.rdma_mr_stats().unwrap();
    assert_eq!(
        s3.call_registrations - s2.call_registrations,
        1,
        "per call again: {s3:?}"
    );
    assert_eq!(s3.hits, s2.hits);
}

/// `busy_poll_us = 0`: the client sleeps on the completion channel (armed, one-shot) until the
/// simulated NIC's thread raises the event; `busy_poll_us > 0`: it spins on the completion queue
/// (here for up to 2 s, never reached) and arms no channel. Both byte-exact, across 4 MiB MRs.
#[test]
fn blocking_and_busy_poll_completion_modes_are_both_byte_exact() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !sim_only("blocking_and_busy_poll_completion_modes_are_both_byte_exact") {
        return;
    }
    let c = cluster(2);
    for (busy_poll_us, mode) in [(0u64, "blocking"), (2_000_000, "busy-poll")] {
        let client = Client::connect(&ClientConfig {
            transport: Some(DataOpType::Rdma),
            rdma_provider: RdmaProvider::Sim,
            busy_poll_us,
            ..c.client_config()
        })
        .expect("client connects");
        let before = sim::stats();
        let keys: Vec<String> = (0..12).map(|i| format!("{mode}/{i}")).collect();
        let vals = put_batch(&client, &keys, |i| 1 + i * 500_000);
        let kr: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (bad, exact) = get_batch(&client, &keys, &vals);
        assert!(bad.is_empty() && exact, "{mode}: {bad:?}");
        for (k, v) in kr.iter().zip(&vals).step_by(5) {
            assert!(client.get(k).unwrap() == *v, "{mode}: {k}");
        }
        let after = sim::stats();
        let events = after.events - before.events;
        println!(
            "{mode}: {} work requests, {} completion-channel events",
            after.wrs - before.wrs,
            events
        );
        assert!(client.mapped_services().is_empty());
        if busy_poll_us == 0 {
            assert!(events > 0, "blocking mode sleeps on the completion channel");
        } else {
            assert_eq!(events, 0, "busy-poll mode never arms the channel");
        }
    }
}

/// A batch whose transfers span two services runs each service's share on a thread of its own
/// (a queue pair each), with the MR cache and with bounce buffers, byte-exact.
#[test]
fn a_batch_over_two_services_serves_them_in_parallel() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !sim_only("a_batch_over_two_services_serves_them_in_parallel") {
        return;
    }
    let c = cluster(2);
    let mut most = 0;
    for mode in [RdmaCallerMemory::MrCache, RdmaCallerMemory::Bounce] {
        let client = Client::connect(&ClientConfig {
            transport: Some(DataOpType::Rdma),
            rdma_provider: RdmaProvider::Sim,
            rdma_caller_memory: mode,
            ..c.client_config()
        })
        .expect("client connects");
        let s0 = client.rdma_mr_stats().unwrap();
        let keys: Vec<String> = (0..8).map(|i| format!("par/{mode:?}/{i}")).collect();
        let vals = put_batch(&client, &keys, |_| 2 * MIB + 3);
        let (bad, exact) = get_batch(&client, &keys, &vals);
        assert!(bad.is_empty() && exact, "{mode:?}: {bad:?}");
        let s1 = client.rdma_mr_stats().unwrap();
        println!(
            "{mode:?}: {} batches over both services in parallel threads, at most {} services at once",
            s1.parallel_batches - s0.parallel_batches,
            s1.max_parallel_services
        );
        // The put (both replicas) spans both services; the get reads one replica per key, and
        // the keys' first replicas are spread over both.
        assert!(s1.parallel_batches - s0.parallel_batches >= 1, "{mode:?}");
        most = most.max(s1.max_parallel_services);
    }
    // 16 MiB per service and direction: the two threads overlap.
    assert!(most >= 2, "two services' shares ran at once");
}

#[test]
fn a_service_without_rdma_is_reached_over_tcp() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Mixed pool: one service with the simulated NIC, one without any device.
    let mut c = cluster(1);
    c.add_local_env(&["--dram", "16MB", "--rdma-provider", "none"], &[]);
    let client = rdma_client(&c);
    let before = sim::stats();
    let keys: Vec<String> = (0..8).map(|i| format!("mixed/{i}")).collect();
    let vals: Vec<Vec<u8>> = keys.iter().map(|k| pattern(k, 100_000)).collect();
    let kr: Vec<&str> = keys.iter().map(String::as_str).collect();
    let vr: Vec<&[u8]> = vals.iter().map(Vec::as_slice).collect();
    assert!(client
        .batch_put(&kr, &vr, &two())
        .unwrap()
        .iter()
        .all(Result::is_ok));
    for (k, v) in kr.iter().zip(&vals) {
        assert!(client.get(k).unwrap() == *v);
    }
    let moved = sim::stats().bytes - before.bytes;
    if provider().1 != RdmaProvider::Sim {
        return;
    }
    // One replica of each object went over RDMA, the other over TCP (no shared memory: forced).
    assert!((8 * 100_000..8 * 100_000 * 4).contains(&moved), "{moved}");
}

/// The real device, where there is one: a loopback queue pair on it (the verbs binding's own
/// test covers more); without one (or without the `rdma` feature) it says why it skips.
#[test]
fn a_real_device_is_detected_or_the_skip_is_explained() {
    use mmc_hal::rdma::{provider as open, ProviderKind};
    match open(ProviderKind::Verbs, "test") {
        Ok(Some(dev)) => {
            let mut qp = dev.create_qp(16).expect("a queue pair");
            let ep = qp.endpoint();
            qp.connect(&ep).expect("a loopback connection");
            println!(
                "RDMA device {} on fabric {}",
                dev.attr().name,
                dev.attr().fabric
            );
        }
        Ok(None) => unreachable!("verbs is never `none`"),
        Err(e) => println!("skipped: no RDMA device here ({e})"),
    }
}

#[test]
fn a_re_registered_service_is_reconnected_and_its_objects_read_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A meta restart makes every service register again with a new incarnation: the client's
    // queue pairs (of the old incarnation) go and new ones connect; reads through the fence of
    // the new incarnation return the rejoined objects.
    let mut c = cluster(2);
    let client = rdma_client(&c);
    let keys: Vec<String> = (0..8).map(|i| format!("rejoin/{i}")).collect();
    let vals: Vec<Vec<u8>> = keys.iter().map(|k| pattern(k, 300_000)).collect();
    let kr: Vec<&str> = keys.iter().map(String::as_str).collect();
    let vr: Vec<&[u8]> = vals.iter().map(Vec::as_slice).collect();
    assert!(client
        .batch_put(&kr, &vr, &PutOptions::default())
        .unwrap()
        .iter()
        .all(Result::is_ok));
    // The services' indexes lag by up to a heartbeat (1 s): let them catch up first.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    c.kill_meta();
    c.restart_meta();
    let start = std::time::Instant::now();
    let before = sim::stats();
    loop {
        let mut outs: Vec<Vec<u8>> = vals.iter().map(|v| vec![0u8; v.len()]).collect();
        let mut bufs: Vec<&mut [u8]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
        let got = client.batch_get_into(&kr, &mut bufs);
        if got.as_ref().is_ok_and(|g| g.iter().all(Result::is_ok)) {
            assert!(outs == vals, "rejoined objects read back exact");
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "objects not back after 20 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!(
        "objects back over RDMA {:.2?} after the meta restart",
        start.elapsed()
    );
    if provider().1 == RdmaProvider::Sim {
        assert!(
            sim::stats().bytes - before.bytes >= 8 * 300_000,
            "read over the NIC"
        );
    }
}
