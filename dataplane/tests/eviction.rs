//! Watermark eviction and admission before eviction, through real processes.

mod common;

use std::time::{Duration, Instant};

use common::{pattern, Cluster};
use mmc_controlplane::msg::{self, AllocRequest, Reply, Request};
use mmc_dataplane::{Client, PutOptions};
use mmc_meta_service::rpc::MetaConn;

const MIB: usize = 1 << 20;

/// A writer that puts three times the pool's capacity: every put succeeds, use never passes the
/// high watermark, the oldest objects go first and the newest stay.
#[test]
fn overfilling_writer_stays_under_the_high_watermark() {
    let cluster = Cluster::start(&["64MB"], &["--evict-high", "90", "--evict-low", "70"]);
    let c = cluster.client();
    let value = pattern("v", MIB);
    for i in 0..192 {
        c.put(&format!("obj-{i}"), &value, &PutOptions::default())
            .unwrap_or_else(|e| panic!("put {i} failed: {e}"));
        let s = c.status().unwrap();
        let (cap, used) = s
            .segments
            .iter()
            .fold((0, 0), |(c, u), g| (c + g.capacity, u + g.used));
        assert!(
            used * 100 <= cap * 90,
            "after put {i}: {used} of {cap} bytes used"
        );
    }
    let s = c.status().unwrap();
    assert!(s.evicted_total > 100, "evicted {}", s.evicted_total);
    assert!(c.exist("obj-191").is_ok() && c.exist("obj-190").is_ok());
    assert!(c.exist("obj-0").is_err(), "least recently used goes first");
    assert_eq!(c.get("obj-191").unwrap(), value);
}

/// A read keeps recency fresh: an object read often survives the eviction of its peers.
#[test]
fn reads_refresh_recency() {
    let cluster = Cluster::start(&["32MB"], &[]);
    let c = cluster.client();
    let value = pattern("v", MIB);
    c.put("hot", &value, &PutOptions::default()).unwrap();
    for i in 0..100 {
        c.put(&format!("cold-{i}"), &value, &PutOptions::default())
            .unwrap();
        assert_eq!(c.get("hot").unwrap().len(), value.len());
    }
    assert!(c.exist("hot").is_ok());
    assert!(c.exist("cold-0").is_err());
}

fn sentinels_intact(c: &Client, keys: &[String]) -> usize {
    keys.iter()
        .filter(|k| c.get(k).ok() == Some(pattern(k, MIB / 2)))
        .count()
}

/// A put larger than the whole pool, or a raw request claiming a huge size, fails with -3013 at
/// once and evicts nothing: every object already stored still reads back exact.
#[test]
fn oversized_puts_fail_at_once_and_evict_nothing() {
    let cluster = Cluster::start(&["16MB", "16MB"], &[]);
    let c = cluster.client();
    let keys: Vec<String> = (0..16).map(|i| format!("sentinel-{i}")).collect();
    for k in &keys {
        c.put(k, &pattern(k, MIB / 2), &PutOptions::default())
            .unwrap();
    }
    // Over the whole pool (two services, 32 MiB), and over each service though under their sum.
    for size in [40 * MIB, 24 * MIB] {
        let start = Instant::now();
        let err = c
            .put("too-big", &vec![7u8; size], &PutOptions::default())
            .unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.code().as_i32(), -3013, "{err}");
        assert!(
            took < Duration::from_secs(2),
            "{size} B: -3013 after {took:?}, not at once"
        );
        println!("put of {size} B into a 32 MiB pool: -3013 after {took:?}");
    }
    // A mutated request: sizes no pool holds, through the raw protocol.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut meta = MetaConn::connect(cluster.meta_addr.parse().unwrap(), deadline).unwrap();
    let sizes = [u64::MAX, 1 << 62, (1 << 40) + 1];
    for replicas in [1, 2] {
        let req = Request::Alloc(AllocRequest {
            writer_rank: None,
            client_id: 0,
            media: msg::MEDIA_NONE,
            policy: msg::NATIVE_AFFINITY,
            replicas,
            preferred: vec![],
            items: sizes.iter().map(|s| (format!("huge-{s}"), *s)).collect(),
        });
        match meta.call(&req, deadline).unwrap() {
            Reply::Alloc { items, .. } => {
                assert!(
                    items.iter().all(|i| i.code == -3013 && !i.retry),
                    "{items:?}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    let s = c.status().unwrap();
    assert_eq!(
        s.evicted_total, 0,
        "nothing evicted for puts that cannot fit"
    );
    let intact = sentinels_intact(&c, &keys);
    println!("sentinels intact: {intact} of {}", keys.len());
    assert_eq!(intact, keys.len());
    c.put("after", b"still serving", &PutOptions::default())
        .unwrap();
    assert_eq!(c.get("after").unwrap(), b"still serving");
}
