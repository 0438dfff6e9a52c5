//! The layer-wise path's phases, each its own call (`Client::stage_puts`, `write_ranges`,
//! `finish_puts`, `lease`, `read_ranges`, `release_leases`), through every transport: the
//! client's own pool, same-host mapped pools, TCP. Pieces are written out of order at arbitrary
//! offsets; every byte is checked.

mod common;

use std::time::{Duration, Instant};

use common::{pattern, Cluster};
use mmc_config::DataOpType;
use mmc_controlplane::Code;
use mmc_dataplane::{Client, ClientConfig, PoolRange, PutOptions, StagedPut};

const MIB: u64 = 1024 * 1024;

fn at(s: &StagedPut, replica: usize, offset: u64) -> PoolRange {
    let r = &s.replicas[replica];
    let svc = s.services.iter().find(|a| a.rank == r.rank).unwrap();
    PoolRange {
        rank: r.rank,
        incarnation: svc.incarnation,
        segment: r.segment,
        offset: r.offset + offset,
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[test]
fn staged_puts_and_leased_reads_on_every_transport() {
    let cluster = Cluster::start(&["64MB"], &[]);
    let embedded = cluster.embedded_client(64 * MIB);
    let shm = Client::connect(&cluster.client_config()).unwrap();
    let tcp = Client::connect(&ClientConfig {
        transport: Some(DataOpType::Tcp),
        ..cluster.client_config()
    })
    .unwrap();
    for (name, c) in [("embedded", &embedded), ("shm", &shm), ("tcp", &tcp)] {
        let keys = [format!("{name}-a"), format!("{name}-b")];
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let sizes = [100_003u64, 7];
        let staged: Vec<StagedPut> = c
            .stage_puts(&keys, &sizes, &PutOptions::default())
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        if name == "embedded" {
            assert_eq!(staged[0].replicas[0].rank, c.local_rank().unwrap());
        }
        // Staged, not committed: readers do not see it; a second staging of the key is refused.
        assert_eq!(c.exist(keys[0]).unwrap_err().code(), Code::ObjectNotExists);
        let again = c.stage_puts(&keys[..1], &sizes[..1], &PutOptions::default());
        assert_eq!(
            again.unwrap()[0].as_ref().unwrap_err().code(),
            Code::DuplicatedObject
        );
        let data: Vec<Vec<u8>> = keys
            .iter()
            .zip(sizes)
            .map(|(k, n)| pattern(k, n as usize))
            .collect();
        // Object a in three pieces, last first; object b whole.
        let cut = [0usize, 40_000, 40_001, 100_003];
        let mut writes = Vec::new();
        for w in (0..3).rev() {
            let (from, to) = (cut[w], cut[w + 1]);
            writes.push((at(&staged[0], 0, from as u64), &data[0][from..to]));
        }
        writes.push((at(&staged[1], 0, 0), &data[1][..]));
        let services = [staged[0].services.clone(), staged[1].services.clone()].concat();
        let outcomes = c.write_ranges(writes, &services, deadline());
        assert!(outcomes.iter().all(Result::is_ok), "{name}: {outcomes:?}");
        let crcs: Vec<u32> = data
            .iter()
            .map(|d| mmc_dataplane::checksum([&d[..]]))
            .collect();
        let tokens: Vec<u64> = staged.iter().map(|s| s.token).collect();
        let done = c.finish_puts(&keys, &tokens, &[true, true], &crcs).unwrap();
        assert!(done.iter().all(Result::is_ok), "{name}: {done:?}");
        assert_eq!(c.get(keys[0]).unwrap(), data[0], "{name}");
        assert_eq!(c.get(keys[1]).unwrap(), data[1], "{name}");

        // Leased reads at any offset; the object removed meanwhile stays readable.
        let leased: Vec<_> = c
            .lease(&keys)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(leased[0].size, sizes[0]);
        assert_eq!(leased[0].crc, crcs[0]);
        c.remove(keys[0]).unwrap();
        let l = &leased[0];
        let r = &l.replicas[0];
        let inc = l
            .services
            .iter()
            .find(|s| s.rank == r.rank)
            .unwrap()
            .incarnation;
        let mut out = vec![0u8; 60_000];
        let from = PoolRange {
            rank: r.rank,
            incarnation: inc,
            segment: r.segment,
            offset: r.offset + 40_003,
        };
        let o = c.read_ranges(vec![(from, &mut out[..])], &l.services, deadline());
        assert!(o[0].is_ok(), "{name}: {o:?}");
        assert_eq!(&out[..], &data[0][40_003..100_003], "{name}");
        c.release_leases(leased.iter().map(|l| l.lease).collect());
        // A failed writer's key: finished as failed, it is free again.
        let s = c
            .stage_puts(&keys[..1], &[5], &PutOptions::default())
            .unwrap();
        let token = s[0].as_ref().unwrap().token;
        c.finish_puts(&keys[..1], &[token], &[false], &[0]).unwrap()[0]
            .as_ref()
            .unwrap();
        assert_eq!(c.exist(keys[0]).unwrap_err().code(), Code::ObjectNotExists);
        c.put(keys[0], b"fresh", &PutOptions::default()).unwrap();
        c.batch_remove(&keys).unwrap();
    }
}

/// A stale incarnation in a pool range is refused by the fence on every transport.
#[test]
fn a_range_of_another_incarnation_is_refused() {
    let cluster = Cluster::start(&["32MB"], &[]);
    let shm = Client::connect(&cluster.client_config()).unwrap();
    let tcp = Client::connect(&ClientConfig {
        transport: Some(DataOpType::Tcp),
        ..cluster.client_config()
    })
    .unwrap();
    for c in [&shm, &tcp] {
        let s = c.stage_puts(&["k"], &[64], &PutOptions::default()).unwrap();
        let s = s[0].as_ref().unwrap();
        let mut bad = at(s, 0, 0);
        bad.incarnation += 1;
        let o = c.write_ranges(vec![(bad, &[1u8; 64][..])], &s.services, deadline());
        assert_eq!(o[0].as_ref().unwrap_err().code(), Code::NotConnectLocal);
        c.finish_puts(&["k"], &[s.token], &[false], &[0]).unwrap();
    }
}
