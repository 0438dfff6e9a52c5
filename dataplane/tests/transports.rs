//! Every transport moves the same bytes: the client's own pool (plain copies), same-host shared
//! memory (mapped pools), and TCP; and the lowering of batches and layers into per-service
//! scatter-gather lists (split across services, adjacent pieces, pieces of 1 byte to 64 MiB).

mod common;

use common::{pattern, Cluster};
use mmc_config::DataOpType;
use mmc_controlplane::msg::PREFERRED_AFFINITY;
use mmc_dataplane::{Client, ClientConfig, PutOptions};

const MIB: usize = 1024 * 1024;

fn client(cluster: &Cluster, transport: Option<DataOpType>) -> Client {
    Client::connect(&ClientConfig {
        transport,
        ..cluster.client_config()
    })
    .unwrap()
}

/// Pieces of 1 byte to 64 MiB, put through one transport and read through each of the others.
#[test]
fn every_transport_reads_what_every_other_wrote() {
    let cluster = Cluster::start(&["160MB", "160MB"], &[]);
    let embedded = cluster.embedded_client(160 * MIB as u64);
    let shm = client(&cluster, None);
    let tcp = client(&cluster, Some(DataOpType::Tcp));
    let ranks = [cluster.locals[0].rank, cluster.locals[1].rank];
    let sizes = [1usize, 7, 4096, 65_537, MIB + 3, 64 * MIB];
    for (name, writer) in [("embedded", &embedded), ("shm", &shm), ("tcp", &tcp)] {
        for (i, size) in sizes.iter().enumerate() {
            let key = format!("{name}-{i}");
            let data = pattern(&key, *size);
            // Alternate the target service; the embedded writer keeps every other one at home.
            let opts = if name == "embedded" && i % 2 == 0 {
                PutOptions::default()
            } else {
                PutOptions {
                    policy: PREFERRED_AFFINITY,
                    preferred: vec![ranks[i % 2] as i32],
                    ..PutOptions::default()
                }
            };
            writer
                .put(&key, &data, &opts)
                .unwrap_or_else(|e| panic!("{name} put {size}: {e}"));
            for (rname, reader) in [("embedded", &embedded), ("shm", &shm), ("tcp", &tcp)] {
                let mut out = vec![0u8; *size];
                let n = reader
                    .get_into(&key, &mut out)
                    .unwrap_or_else(|e| panic!("{rname} get {key}: {e}"));
                assert_eq!(n as usize, *size);
                assert!(out == data, "{rname} read of {key} ({size} bytes) differs");
            }
            writer.remove(&key).unwrap();
        }
    }
}

/// A batch whose keys live on three services, each key split into many pieces (some adjacent in
/// memory, some 1 byte), read back into a different split.
#[test]
fn batches_split_across_services_and_pieces() {
    let cluster = Cluster::start(&["64MB", "64MB"], &[]);
    let embedded = cluster.embedded_client(64 * MIB as u64);
    let ranks = [
        embedded.local_rank().unwrap(),
        cluster.locals[0].rank,
        cluster.locals[1].rank,
    ];
    for transport in [None, Some(DataOpType::Tcp)] {
        let c = client(&cluster, transport);
        let tag = format!("{transport:?}");
        let keys: Vec<String> = (0..12).map(|i| format!("{tag}-k{i}")).collect();
        let values: Vec<Vec<u8>> = (0..12).map(|i| pattern(&keys[i], 1 + i * 37_000)).collect();
        for (i, key) in keys.iter().enumerate() {
            let opts = PutOptions {
                policy: PREFERRED_AFFINITY,
                preferred: vec![ranks[i % 3] as i32],
                ..PutOptions::default()
            };
            // Pieces of 1 byte, then thirds.
            let v = &values[i];
            let (a, rest) = v.split_at(1);
            let third = rest.len() / 3;
            let parts: Vec<&[u8]> = vec![
                a,
                &rest[..third],
                &rest[third..2 * third],
                &rest[2 * third..],
            ];
            embedded.put_parts(key, &parts, &opts).unwrap();
        }
        // Read all twelve in one batch; each into pieces of 1000 bytes (adjacent in one buffer).
        let mut flat: Vec<Vec<u8>> = values
            .iter()
            .map(|v| vec![0u8; v.len().div_ceil(1000) * 1000])
            .collect();
        let mut pieces: Vec<Vec<&mut [u8]>> = flat
            .iter_mut()
            .map(|f| f.chunks_mut(1000).collect())
            .collect();
        let mut views: Vec<&mut [&mut [u8]]> =
            pieces.iter_mut().map(|p| p.as_mut_slice()).collect();
        let refs: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        let results = c.batch_get_into_parts(&refs, &mut views).unwrap();
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap() as usize, values[i].len());
            assert!(flat[i][..values[i].len()] == values[i][..], "{tag} key {i}");
        }
        let removed = c.batch_remove(&refs).unwrap();
        assert!(removed.iter().all(|r| r.is_ok()));
    }
}

/// A client forced to TCP never maps a pool; an automatic one on the same host does, and stops
/// using it when the service dies.
#[test]
fn shared_memory_follows_the_service_lifetime() {
    // Without the probe, which would soon drop the dead service and its object (-3007 then).
    let mut cluster = Cluster::start(&["32MB"], &["--probe-dead", "false"]);
    let c = client(&cluster, None);
    let tcp = client(&cluster, Some(DataOpType::Tcp));
    c.put("k", &pattern("k", 5000), &PutOptions::default())
        .unwrap();
    assert_eq!(c.get("k").unwrap(), pattern("k", 5000));
    assert_eq!(tcp.get("k").unwrap(), pattern("k", 5000));
    assert_eq!(c.mapped_services(), vec![cluster.locals[0].rank]);
    assert!(tcp.mapped_services().is_empty());
    cluster.kill_local(0);
    // The read fails as unreachable, never with stale bytes: at the data path (which drops the
    // mapping) or, once the meta service paused the service (its connection closed), at the
    // lookup (the mapping then stays until the client next reaches for that service).
    assert_eq!(c.get("k").unwrap_err().code().as_i32(), -3018);
}

/// Busy-polling services and clients move the same bytes as blocking ones.
#[test]
fn busy_poll_mode_round_trips() {
    let mut cluster = Cluster::start(&[], &[]);
    cluster.add_local_with(&["--dram", "32MB", "--busy-poll-us", "200"]);
    let c = Client::connect(&ClientConfig {
        transport: Some(DataOpType::Tcp),
        busy_poll_us: 200,
        ..cluster.client_config()
    })
    .unwrap();
    for i in 0..50 {
        let key = format!("bp-{i}");
        let data = pattern(&key, 4096 + i * 1000);
        c.put(&key, &data, &PutOptions::default()).unwrap();
        assert_eq!(c.get(&key).unwrap(), data);
    }
}

/// Shard loops (mio and io_uring, blocking and busy-polling) serve the same bytes as a thread per connection, with
/// several clients at once, many requests per connection, and connections that come and go.
#[test]
fn shard_loops_serve_many_connections() {
    let mut cluster = Cluster::start(&[], &[]);
    cluster.add_local_with(&["--dram", "64MB", "--data-shards", "2"]);
    cluster.add_local_with(&[
        "--dram",
        "64MB",
        "--data-shards",
        "1",
        "--busy-poll-us",
        "100",
    ]);
    let ranks = [cluster.locals[0].rank, cluster.locals[1].rank];
    std::thread::scope(|s| {
        for t in 0..4 {
            let cluster = &cluster;
            s.spawn(move || {
                let c = client(cluster, Some(DataOpType::Tcp));
                for i in 0..30 {
                    let key = format!("shard-{t}-{i}");
                    let data = pattern(&key, 1 + (i * 7919 + t * 31) % 300_000);
                    let opts = PutOptions {
                        policy: PREFERRED_AFFINITY,
                        preferred: vec![ranks[(i + t) % ranks.len()] as i32],
                        ..PutOptions::default()
                    };
                    c.put(&key, &data, &opts).unwrap();
                    assert_eq!(c.get(&key).unwrap(), data, "{key}");
                }
            });
        }
    });
    // A fresh connection after the others left, and a malformed request on its own connection.
    let c = client(&cluster, Some(DataOpType::Tcp));
    assert_eq!(c.get("shard-0-0").unwrap(), pattern("shard-0-0", 1));
    use std::io::Write;
    for local in &cluster.locals {
        let mut raw = std::net::TcpStream::connect(&local.endpoint).unwrap();
        raw.write_all(&[0xEE; 64]).unwrap();
        drop(raw);
    }
    assert_eq!(c.get("shard-1-3").unwrap().len(), 1 + (3 * 7919 + 31));
}
