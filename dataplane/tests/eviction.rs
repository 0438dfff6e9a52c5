//! Watermark eviction through real processes.

mod common;

use common::{pattern, Cluster};
use mmc_dataplane::PutOptions;

/// A writer that puts three times the pool's capacity: every put succeeds, use never passes the
/// high watermark, the oldest objects go first and the newest stay.
#[test]
fn overfilling_writer_stays_under_the_high_watermark() {
    let cluster = Cluster::start(&["64MB"], &["--evict-high", "90", "--evict-low", "70"]);
    let c = cluster.client();
    let value = pattern("v", 1 << 20);
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
    let value = pattern("v", 1 << 20);
    c.put("hot", &value, &PutOptions::default()).unwrap();
    for i in 0..100 {
        c.put(&format!("cold-{i}"), &value, &PutOptions::default())
            .unwrap();
        assert_eq!(c.get("hot").unwrap().len(), value.len());
    }
    assert!(c.exist("hot").is_ok());
    assert!(c.exist("cold-0").is_err());
}
