//! Data round trips through real `mmc-meta` and `mmc-local` processes.

mod common;

use common::{pattern, Cluster, Rng};
use mmc_controlplane::msg::PREFERRED_AFFINITY;
use mmc_dataplane::{Code, PutOptions};

const MIB: u64 = 1024 * 1024;

/// 1,000 objects of 1 byte to 8 MiB, written through one client (with its own embedded local
/// service) and spread over that service and two `mmc-local` processes, read back byte-exact
/// through another client that holds none of them.
#[test]
fn thousand_objects_round_trip_between_services() {
    let cluster = Cluster::start(&["512MB", "512MB"], &[]);
    let writer = cluster.embedded_client(512 * MIB);
    let reader = cluster.embedded_client(16 * MIB);
    let ranks = [
        writer.local_rank().expect("embedded"),
        cluster.locals[0].rank,
        cluster.locals[1].rank,
    ];
    let mut rng = Rng::from_env("thousand_objects");
    let prefix = format!("rt-{}", rng.next());
    // Log-uniform sizes from 1 byte to 8 MiB, with both ends present.
    let sizes: Vec<usize> = (0..1000)
        .map(|i| match i {
            0 => 1,
            1 => 8 * MIB as usize,
            _ => (2f64.powf(rng.below(23_000) as f64 / 1000.0)) as usize + 1,
        })
        .collect();
    let keys: Vec<String> = (0..1000).map(|i| format!("{prefix}-{i}")).collect();
    let total: usize = sizes.iter().sum();
    println!(
        "{} objects, {} MiB in all",
        keys.len(),
        total / MIB as usize
    );

    // Batches of 50, each batch placed on one of the three services in turn.
    for (batch, chunk) in (0..1000).collect::<Vec<_>>().chunks(50).enumerate() {
        let opts = PutOptions {
            policy: PREFERRED_AFFINITY,
            preferred: vec![ranks[batch % 3] as i32],
            ..PutOptions::default()
        };
        let values: Vec<Vec<u8>> = chunk.iter().map(|&i| pattern(&keys[i], sizes[i])).collect();
        let refs: Vec<&str> = chunk.iter().map(|&i| keys[i].as_str()).collect();
        let vals: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        for (i, r) in writer
            .batch_put(&refs, &vals, &opts)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            r.unwrap_or_else(|e| panic!("put {}: {e}", refs[i]));
        }
    }
    let status = reader.status().unwrap();
    for rank in ranks {
        let objects: u64 = status
            .segments
            .iter()
            .filter(|s| s.rank == rank)
            .map(|s| s.objects)
            .sum();
        assert!(objects >= 300, "rank {rank} holds {objects} objects");
    }

    // Read back through the other client, in batches of 25, into exactly-sized buffers.
    for chunk in (0..1000).collect::<Vec<_>>().chunks(25) {
        let refs: Vec<&str> = chunk.iter().map(|&i| keys[i].as_str()).collect();
        let mut bufs: Vec<Vec<u8>> = chunk.iter().map(|&i| vec![0u8; sizes[i]]).collect();
        let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        let results = reader.batch_get_into(&refs, &mut views).unwrap();
        for (j, r) in results.into_iter().enumerate() {
            let i = chunk[j];
            assert_eq!(
                r.unwrap_or_else(|e| panic!("get {}: {e}", keys[i])),
                sizes[i] as u64
            );
            assert!(
                bufs[j] == pattern(&keys[i], sizes[i]),
                "bytes of {} differ",
                keys[i]
            );
        }
    }
    // And single gets through the writer, whose own pool serves a third of them by plain copies.
    for i in (0..1000).step_by(37) {
        assert_eq!(
            writer.get(&keys[i]).unwrap(),
            pattern(&keys[i], sizes[i]),
            "{}",
            keys[i]
        );
    }
}

/// Every batch call with a mix of present, missing and invalid keys gives per-key codes.
#[test]
fn batch_calls_mix_present_and_missing_keys() {
    let cluster = Cluster::start(&["64MB", "64MB"], &[]);
    let c = cluster.client();
    let long = "k".repeat(256);
    let a = pattern("a", 1000);
    let b = pattern("b", 70_000);
    let put = c
        .batch_put(
            &["a", "b", "", &long],
            &[&a, &b, &a, &a],
            &PutOptions::default(),
        )
        .unwrap();
    let codes: Vec<i32> = put.iter().map(code).collect();
    assert_eq!(codes, vec![0, 0, -3000, -3000]);
    // A batch with an existing key: that key fails with -3006, the others are stored.
    let again = c
        .batch_put(&["a", "c"], &[&b, &b], &PutOptions::default())
        .unwrap();
    assert_eq!(again.iter().map(code).collect::<Vec<_>>(), vec![-3006, 0]);
    assert_eq!(
        c.get("a").unwrap(),
        a,
        "a put of an existing key leaves the value unchanged"
    );

    let keys = ["a", "missing", "b", "c", "also-missing"];
    let exist: Vec<i32> = c.batch_exist(&keys).unwrap().iter().map(code).collect();
    assert_eq!(exist, vec![0, -3007, 0, 0, -3007]);
    let query = c.batch_query(&keys).unwrap();
    assert_eq!(query[0].as_ref().unwrap().size, 1000);
    assert_eq!(query[2].as_ref().unwrap().size, 70_000);
    assert_eq!(query[1].as_ref().unwrap_err().code(), Code::ObjectNotExists);
    assert_eq!(query[2].as_ref().unwrap().replicas.len(), 1);

    let mut bufs: Vec<Vec<u8>> = vec![
        vec![0; 1000],
        vec![0; 10],
        vec![0; 70_000],
        vec![0; 10],
        vec![0; 5],
    ];
    let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
    let got = c.batch_get_into(&keys, &mut views).unwrap();
    let codes: Vec<i32> = got.iter().map(code).collect();
    // "c" is 70,000 bytes and its buffer holds 10: -3000, and nothing is copied into it.
    assert_eq!(codes, vec![0, -3007, 0, -3000, -3007]);
    assert_eq!(bufs[0], a);
    assert_eq!(bufs[2], b);
    assert_eq!(bufs[3], vec![0; 10]);

    let removed: Vec<i32> = c
        .batch_remove(&["a", "missing", "c"])
        .unwrap()
        .iter()
        .map(code)
        .collect();
    assert_eq!(removed, vec![0, -3007, 0]);
    let exist: Vec<i32> = c.batch_exist(&keys).unwrap().iter().map(code).collect();
    assert_eq!(exist, vec![-3007, -3007, 0, -3007, -3007]);
    // Too many keys in one batch is refused as a whole.
    let many: Vec<String> = (0..16385).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
    assert_eq!(c.batch_exist(&refs).unwrap_err().code(), Code::InvalidParam);
}

fn code<T>(r: &Result<T, mmc_dataplane::Error>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.code().as_i32(),
    }
}

/// A DeepSeek-R1 KV block (61 layers x (128 KiB + 16 KiB)) put layer-wise, read back into
/// buffers split differently, into one flat buffer, and through a batch of layered gets.
#[test]
fn layered_put_reads_back_into_different_splits() {
    let cluster = Cluster::start(&["256MB"], &[]);
    let c = cluster.client();
    let embedded = cluster.embedded_client(64 * MIB);
    let layers = 61;
    let (k, v) = (128 * 1024, 16 * 1024);
    let whole = pattern("kv-block", layers * (k + v));
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    for _ in 0..layers {
        pieces.push(&whole[at..at + k]);
        pieces.push(&whole[at + k..at + k + v]);
        at += k + v;
    }
    assert_eq!(pieces.len(), 122);
    c.put_parts("block-remote", &pieces, &PutOptions::default())
        .unwrap();
    embedded
        .put_parts("block-local", &pieces, &PutOptions::default())
        .unwrap();

    for client in [&c, &embedded] {
        for key in ["block-remote", "block-local"] {
            // Uneven pieces: 7 of them, the last one with room to spare.
            let mut bufs: Vec<Vec<u8>> = vec![
                vec![0; 1],
                vec![0; 300_001],
                vec![0; 4096],
                vec![0; 2_000_000],
                vec![0; 65_536],
                vec![0; 3_000_000],
                vec![0; 4_000_000],
            ];
            let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            let size = client.get_into_parts(key, &mut views).unwrap();
            assert_eq!(size as usize, whole.len());
            let flat: Vec<u8> = bufs.concat();
            assert_eq!(&flat[..whole.len()], &whole[..], "{key}");
            assert!(
                flat[whole.len()..].iter().all(|b| *b == 0),
                "bytes past the object untouched"
            );

            let mut flat = vec![0u8; whole.len()];
            assert_eq!(
                client.get_into(key, &mut flat).unwrap() as usize,
                whole.len()
            );
            assert!(flat == whole);
        }
    }
    // A batch of layered gets, each split into 61 x 144 KiB pieces.
    let mut a: Vec<Vec<u8>> = (0..layers).map(|_| vec![0; k + v]).collect();
    let mut b: Vec<Vec<u8>> = (0..layers).map(|_| vec![0; k + v]).collect();
    let mut av: Vec<&mut [u8]> = a.iter_mut().map(|x| x.as_mut_slice()).collect();
    let mut bv: Vec<&mut [u8]> = b.iter_mut().map(|x| x.as_mut_slice()).collect();
    let mut both: Vec<&mut [&mut [u8]]> = vec![&mut av, &mut bv];
    let r = c
        .batch_get_into_parts(&["block-remote", "block-local"], &mut both)
        .unwrap();
    assert!(r.iter().all(|r| r.is_ok()));
    assert!(a.concat() == whole && b.concat() == whole);
    // Too small by one byte: refused, nothing copied.
    let mut short = vec![7u8; whole.len() - 1];
    assert_eq!(
        c.get_into("block-remote", &mut short).unwrap_err().code(),
        Code::InvalidParam
    );
    assert!(short.iter().all(|b| *b == 7));
}

/// Eight threads sharing one client put and get at once, with correct data.
#[test]
fn concurrent_threads_share_one_client() {
    let cluster = Cluster::start(&["256MB", "256MB"], &[]);
    let c = cluster.embedded_client(128 * MIB);
    std::thread::scope(|s| {
        for t in 0..8 {
            let c = &c;
            s.spawn(move || {
                for i in 0..40 {
                    let key = format!("t{t}-{i}");
                    let data = pattern(&key, 1 + (i * 7919 + t * 104_729) % 600_000);
                    c.put(&key, &data, &PutOptions::default()).unwrap();
                    assert_eq!(c.get(&key).unwrap(), data);
                }
            });
        }
    });
    assert_eq!(c.status().unwrap().objects, 320);
}

/// A local service with an HBM pool (on the simulated device) and a DRAM pool: media requests land on
/// the tier asked for, and "any" takes the highest tier with room.
#[test]
fn media_tiers_are_honoured() {
    use mmc_controlplane::msg::{MEDIA_DRAM, MEDIA_HBM, MEDIA_NONE};
    let mut cluster = Cluster::start(&[], &[]);
    cluster.add_local_with(&["--dram", "32MB", "--hbm", "16MB", "--device-backend", "sim"]);
    let c = cluster.client_with(30_000, Some(mmc_config::DataOpType::Tcp));
    for (key, media, want) in [
        ("h", MEDIA_HBM, MEDIA_HBM),
        ("d", MEDIA_DRAM, MEDIA_DRAM),
        ("n", MEDIA_NONE, MEDIA_HBM),
    ] {
        let opts = PutOptions {
            media,
            ..PutOptions::default()
        };
        let data = pattern(key, 300_000);
        c.put(key, &data, &opts).unwrap();
        assert_eq!(c.query(key).unwrap().replicas[0].media, want, "{key}");
        assert_eq!(c.get(key).unwrap(), data);
    }
    // "Any" goes to HBM while it has room (demotion moves the least recently used down to DRAM
    // when HBM passes its high watermark, see tests/device.rs); one HBM cannot hold goes to DRAM.
    let big = pattern("big", 8 * MIB as usize);
    c.put("big-any", &big, &PutOptions::default()).unwrap();
    assert_eq!(c.query("big-any").unwrap().replicas[0].media, MEDIA_HBM);
    let huge = pattern("huge", 20 * MIB as usize);
    c.put("huge-any", &huge, &PutOptions::default()).unwrap();
    assert_eq!(c.query("huge-any").unwrap().replicas[0].media, MEDIA_DRAM);
    assert_eq!(c.get("huge-any").unwrap(), huge);
    let s = c.status().unwrap();
    assert_eq!(s.segments.len(), 2);
}
