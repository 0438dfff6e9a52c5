//! The seed corpus of the `meta_requests` fuzz target (fuzz/corpus/meta_requests), made here
//! from request sequences a cluster sends: puts, gets and removes, eviction and time passing,
//! membership changes, and a restarted meta service's rebuild from rejoining services. The
//! committed seeds must be exactly what this makes; regenerate with
//! `MMC_WRITE_FUZZ_SEEDS=1 cargo test -p mmc-controlplane --test fuzz_seeds_meta` and commit.

use mmc_controlplane::meta::{MetaCore, MetaParams, INCARNATION_EPOCH_SHIFT};
use mmc_controlplane::msg::*;
use mmc_controlplane::wire;
use rkyv::util::AlignedVec;

#[path = "common/seed_files.rs"]
mod seed_files;
use seed_files::write_or_check;

/// The target's core: epoch 1 (see fuzz/fuzz_targets/meta_requests.rs).
fn params() -> MetaParams {
    MetaParams {
        epoch: 1,
        ..MetaParams::default()
    }
}

/// The first id the core hands out.
const FIRST: u64 = (1 << INCARNATION_EPOCH_SHIFT) + 1;

fn encode(req: &Request) -> AlignedVec {
    let mut out = AlignedVec::new();
    wire::encode_payload(req, &mut out).unwrap();
    out
}

/// One record of the `meta_requests` target: a time step (x 40 ms), the payload's length, the
/// payload.
fn record(step: u8, req: &Request) -> Vec<u8> {
    let payload = encode(req);
    let len = u16::try_from(payload.len()).expect("a seed request fits a record");
    [&[step][..], &len.to_le_bytes(), &payload].concat()
}

fn register(rank: u32, host: &str, capacity: u64) -> Request {
    Request::Register(Register {
        rank: Some(rank),
        create_id: 0,
        host: host.into(),
        data_endpoint: format!("127.0.0.1:{}", 7000 + rank),
        shm_endpoint: String::new(),
        segments: vec![SegmentSpec {
            media: MEDIA_DRAM,
            capacity,
        }],
    })
}

/// Chunk `chunk` of service `rank`'s rejoin (its earlier incarnation: 100 + rank), holding
/// (key, offset, len, version) in its one pool.
fn rejoin(
    rank: u32,
    host: &str,
    chunk: u32,
    last: bool,
    entries: &[(&str, u64, u64, u64)],
) -> Request {
    let Request::Register(register) = register(rank, host, 1 << 20) else {
        unreachable!()
    };
    Request::Rejoin(Rejoin {
        register,
        previous: 100 + u64::from(rank),
        chunk,
        last,
        entries: entries
            .iter()
            .map(|&(key, offset, len, version)| RejoinEntry {
                key: key.into(),
                pool: 0,
                offset,
                len,
                version,
                crc: 0xabcd,
                want: 2,
            })
            .collect(),
    })
}

fn alloc(items: &[(&str, u64)], replicas: u16) -> Request {
    Request::Alloc(AllocRequest {
        writer_rank: Some(0),
        client_id: 77,
        media: MEDIA_NONE,
        policy: NATIVE_AFFINITY,
        replicas,
        preferred: vec![],
        items: items.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
    })
}

fn commit(items: &[(&str, u64)]) -> Request {
    Request::Commit {
        items: items
            .iter()
            .map(|(k, token)| {
                (
                    k.to_string(),
                    CommitItem {
                        token: *token,
                        ok: true,
                        crc: 0,
                    },
                )
            })
            .collect(),
    }
}

/// The seeds of the `meta_requests` target: request sequences a cluster sends, so the fuzzer
/// starts from a core with members and objects. The target's core runs with epoch 1, so its ids
/// (incarnations, put tokens and leases alike) start at [`FIRST`], and a rejoining service's
/// earlier incarnation is below it.
fn meta_requests_seeds() -> Vec<(String, Vec<u8>)> {
    let two_members = [
        record(0, &register(0, "host-a", 1 << 20)),
        record(0, &register(1, "host-b", 1 << 20)),
    ]
    .concat();
    let put_get = [
        two_members.clone(),
        record(1, &alloc(&[("a", 4096), ("b", 100_000)], 2)),
        record(1, &commit(&[("a", FIRST), ("b", FIRST + 1)])),
        record(
            1,
            &Request::Lookup {
                keys: vec!["a".into(), "b".into(), "c".into()],
            },
        ),
        record(
            1,
            &Request::Release {
                leases: vec![FIRST],
            },
        ),
        record(
            1,
            &Request::Query {
                keys: vec!["b".into()],
            },
        ),
        record(
            1,
            &Request::Exist {
                keys: vec!["a".into()],
            },
        ),
        record(
            1,
            &Request::Remove {
                keys: vec!["a".into()],
            },
        ),
        record(0, &Request::Status),
    ]
    .concat();
    // Puts that fill the pools past the watermark (eviction), one that can never fit, then time
    // passing: pending puts reclaimed, a member silent past its timeout and grace.
    let evict_and_time = [
        two_members.clone(),
        record(0, &alloc(&[("x", 600_000)], 1)),
        record(0, &commit(&[("x", FIRST)])),
        record(0, &alloc(&[("y", 600_000)], 1)),
        record(0, &commit(&[("y", FIRST + 1)])),
        record(0, &alloc(&[("z", 900_000), ("huge", 1 << 40)], 1)),
        record(0, &alloc(&[("pending", 1000)], 1)),
        record(
            100,
            &Request::Heartbeat {
                rank: 0,
                incarnation: FIRST,
                index_seq: 0,
                index_resync: false,
                repaired: vec![],
            },
        ),
        record(
            255,
            &Request::Lookup {
                keys: vec!["x".into(), "y".into()],
            },
        ),
        record(255, &Request::Status),
    ]
    .concat();
    let membership = [
        two_members.clone(),
        record(0, &alloc(&[("m", 5000)], 2)),
        record(0, &commit(&[("m", FIRST)])),
        record(
            0,
            &Request::Suspect {
                rank: 1,
                incarnation: FIRST + 1,
            },
        ),
        record(
            1,
            &Request::Heartbeat {
                rank: 1,
                incarnation: FIRST + 1,
                index_seq: 1,
                index_resync: true,
                repaired: vec![],
            },
        ),
        record(
            1,
            &Request::Unregister {
                rank: 0,
                incarnation: FIRST,
            },
        ),
        record(1, &register(0, "host-a", 1 << 20)),
        record(
            1,
            &Request::Lookup {
                keys: vec!["m".into()],
            },
        ),
    ]
    .concat();
    // A restarted meta service: two services rejoin with the objects they hold (one chunk of
    // two, then a last one; the second service holds a replica of "r1" too), then gets.
    let rejoin_a = [
        record(
            0,
            &rejoin(
                0,
                "host-a",
                0,
                false,
                &[("r1", 0, 4096, 3), ("r2", 4096, 100, 4)],
            ),
        ),
        record(0, &rejoin(0, "host-a", 1, true, &[("r3", 8192, 5000, 5)])),
    ]
    .concat();
    let rejoin = [
        rejoin_a,
        record(0, &rejoin(1, "host-b", 0, true, &[("r1", 0, 4096, 3)])),
        record(
            1,
            &Request::Lookup {
                keys: vec!["r1".into(), "r2".into(), "r3".into()],
            },
        ),
        record(1, &Request::Status),
    ]
    .concat();
    // Space leases: slots granted, one bound and committed, one given back, one refused (another
    // client), then the rest expire.
    let lease = |replicas: u16| {
        Request::LeaseSlots(SlotRequest {
            writer_rank: None,
            client_id: 5,
            media: MEDIA_DRAM,
            policy: NATIVE_AFFINITY,
            replicas,
            size: 4096,
            count: 4,
            preferred: vec![],
        })
    };
    let leased = |client_id: u64, token: u64, key: &str, ok: bool| Request::PutLeased {
        client_id,
        items: vec![LeasedPut {
            token,
            key: key.into(),
            size: 4000,
            crc: 7,
            ok,
        }],
    };
    let slots = [
        two_members.clone(),
        record(0, &lease(2)),
        record(1, &leased(5, FIRST, "s", true)),
        record(1, &leased(5, FIRST + 1, "", false)),
        record(1, &leased(6, FIRST + 2, "t", true)),
        record(
            1,
            &Request::Lookup {
                keys: vec!["s".into()],
            },
        ),
        record(255, &lease(1)),
        record(255, &Request::Status),
    ]
    .concat();
    vec![
        ("slots".into(), slots),
        ("rejoin".into(), rejoin),
        ("put-get-remove".into(), put_get),
        ("evict-and-time".into(), evict_and_time),
        ("membership".into(), membership),
    ]
}

#[test]
fn meta_requests_seeds_are_current() {
    let seeds = meta_requests_seeds();
    // The sequences do what they say on a fresh core: both members register, the puts commit,
    // the rejoined objects are found.
    for (name, bytes) in &seeds {
        let mut core = MetaCore::new(params());
        let (mut rest, mut now) = (&bytes[..], 0u64);
        let mut replies = Vec::new();
        while let [step, lo, hi, tail @ ..] = rest {
            let len = usize::from(u16::from_le_bytes([*lo, *hi]));
            let mut payload = AlignedVec::<16>::new();
            payload.extend_from_slice(&tail[..len]);
            rest = &tail[len..];
            now += u64::from(*step) * 40;
            let req: Request = wire::decode_payload(&payload).unwrap();
            replies.push(core.handle(now, req));
            core.check_invariants();
        }
        let registered = replies
            .iter()
            .filter(|r| matches!(r, Reply::Registered { .. }))
            .count();
        assert!(registered >= 2, "{name}: {replies:?}");
        let committed = replies.iter().any(|r| {
            matches!(r, Reply::Commit { codes } if !codes.is_empty() && codes.iter().all(|c| *c == 0))
        });
        let found = replies.iter().any(|r| {
            matches!(r, Reply::Lookup { items, .. } if items.len() == 3 && items.iter().all(|i| i.code == 0))
        });
        if name == "rejoin" {
            assert!(
                found,
                "{name}: the rejoined objects are not all found: {replies:?}"
            );
        } else {
            assert!(committed, "{name}: no commit succeeded: {replies:?}");
        }
    }
    write_or_check("meta_requests", &seeds);
}
