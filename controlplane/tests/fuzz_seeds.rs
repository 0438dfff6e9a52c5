//! The seed corpus of the `frame` and `msg` fuzz targets (fuzz/corpus/), made here from real
//! messages: one valid encoding of every message variant, frames as the peers send them, and the
//! edge cases of the frame header. The committed seeds must be exactly what this makes, so a
//! change to the messages' encoding shows up here; regenerate with
//! `MMC_WRITE_FUZZ_SEEDS=1 cargo test -p mmc-controlplane --test fuzz_seeds` and commit.

use std::path::{Path, PathBuf};

use mmc_controlplane::msg::*;
use mmc_controlplane::wire::{self, Header, Kind, META_BYTES_MAX, RAW_BYTES_MAX};
use rkyv::util::AlignedVec;

fn replica(rank: u32, offset: u64) -> Replica {
    Replica {
        rank,
        segment: rank * 2,
        media: MEDIA_DRAM,
        offset,
        len: 4096,
    }
}

fn service(rank: u32) -> ServiceAddr {
    ServiceAddr {
        rank,
        incarnation: 7,
        host: "host-a".into(),
        data_endpoint: "127.0.0.1:7001".into(),
        shm_endpoint: "@mmc-shm-1".into(),
    }
}

fn keys() -> Vec<String> {
    vec![
        "k".into(),
        "layer/0/block/17".into(),
        "x".repeat(KEY_BYTES_MAX),
    ]
}

fn requests() -> Vec<(&'static str, Request)> {
    vec![
        (
            "register",
            Request::Register(Register {
                rank: Some(1),
                create_id: 3,
                host: "host-a".into(),
                data_endpoint: "127.0.0.1:7001".into(),
                shm_endpoint: "@mmc-shm-1".into(),
                segments: vec![
                    SegmentSpec {
                        media: MEDIA_DRAM,
                        capacity: 1 << 30,
                    },
                    SegmentSpec {
                        media: MEDIA_HBM,
                        capacity: 1 << 20,
                    },
                ],
            }),
        ),
        (
            "heartbeat",
            Request::Heartbeat {
                rank: 1,
                incarnation: 7,
                index_seq: 12,
                index_resync: false,
            },
        ),
        (
            "unregister",
            Request::Unregister {
                rank: 1,
                incarnation: 7,
            },
        ),
        (
            "alloc",
            Request::Alloc(AllocRequest {
                writer_rank: Some(0),
                client_id: 0x1234_5678,
                media: MEDIA_NONE,
                policy: PREFERRED_AFFINITY,
                replicas: 2,
                preferred: vec![1, 2],
                items: vec![("k".into(), 4096), ("big".into(), 1 << 40)],
            }),
        ),
        (
            "commit",
            Request::Commit {
                items: vec![
                    ("k".into(), CommitItem { token: 9, ok: true }),
                    (
                        "big".into(),
                        CommitItem {
                            token: 10,
                            ok: false,
                        },
                    ),
                ],
            },
        ),
        ("lookup", Request::Lookup { keys: keys() }),
        (
            "release",
            Request::Release {
                leases: vec![1, u64::MAX],
            },
        ),
        ("query", Request::Query { keys: keys() }),
        ("exist", Request::Exist { keys: keys() }),
        ("remove", Request::Remove { keys: vec![] }),
        ("status", Request::Status),
        (
            "suspect",
            Request::Suspect {
                rank: 2,
                incarnation: 8,
            },
        ),
    ]
}

fn replies() -> Vec<(&'static str, Reply)> {
    vec![
        (
            "registered",
            Reply::Registered {
                rank: 1,
                incarnation: 7,
                segments: vec![2, 3],
                heartbeat_ms: 500,
            },
        ),
        (
            "heartbeat",
            Reply::Heartbeat {
                index_first_seq: 13,
                index_changes: vec![
                    IndexChange::Reset,
                    IndexChange::Added {
                        key: "k".into(),
                        segment: 2,
                        offset: 0,
                        len: 4096,
                    },
                    IndexChange::Removed {
                        key: "old".into(),
                        segment: 2,
                        offset: 8192,
                    },
                ],
                index_more: true,
            },
        ),
        ("ack", Reply::Ack { code: 0 }),
        (
            "alloc",
            Reply::Alloc {
                items: vec![
                    AllocItem {
                        code: 0,
                        retry: false,
                        token: 9,
                        replicas: vec![replica(1, 0), replica(2, 4096)],
                    },
                    AllocItem {
                        code: -3013,
                        retry: true,
                        token: 0,
                        replicas: vec![],
                    },
                ],
                services: vec![service(1), service(2)],
            },
        ),
        (
            "commit",
            Reply::Commit {
                codes: vec![0, -3007],
            },
        ),
        (
            "lookup",
            Reply::Lookup {
                lease_ms: 3000,
                items: vec![LookupItem {
                    code: 0,
                    size: 4096,
                    lease: 44,
                    replicas: vec![replica(1, 0)],
                }],
                services: vec![service(1)],
            },
        ),
        (
            "query",
            Reply::Query {
                items: vec![QueryItem {
                    code: 0,
                    size: 4096,
                    replicas: vec![replica(1, 0), replica(2, 0)],
                }],
            },
        ),
        (
            "codes",
            Reply::Codes {
                codes: vec![0, 1, -3007],
            },
        ),
        (
            "status",
            Reply::Status(Status {
                segments: vec![SegmentStatus {
                    segment: 2,
                    rank: 1,
                    create_id: 3,
                    media: MEDIA_DRAM,
                    capacity: 1 << 30,
                    used: 4096,
                    objects: 1,
                    alive: true,
                    host: "host-a".into(),
                    data_endpoint: "127.0.0.1:7001".into(),
                }],
                objects: 1,
                pending: 0,
                leases: 1,
                evicted_total: 5,
                evict_threshold_high: 90,
                evict_threshold_low: 80,
            }),
        ),
        (
            "error",
            Reply::Error {
                code: -3000,
                message: "bad request".into(),
            },
        ),
    ]
}

fn pieces() -> Vec<Piece> {
    vec![
        Piece {
            segment: 2,
            offset: 0,
            len: 10,
        },
        Piece {
            segment: 3,
            offset: 4096,
            len: 6,
        },
    ]
}

fn data_requests() -> Vec<(&'static str, DataRequest)> {
    vec![
        (
            "write",
            DataRequest::Write {
                rank: 1,
                incarnation: 7,
                pieces: pieces(),
            },
        ),
        (
            "read",
            DataRequest::Read {
                rank: 1,
                incarnation: 7,
                pieces: pieces(),
            },
        ),
    ]
}

fn data_reply(code: i32, message: &str) -> DataReply {
    DataReply {
        code,
        message: message.into(),
    }
}

fn shm_hello() -> ShmHello {
    ShmHello {
        rank: 1,
        incarnation: 7,
        segments: vec![(2, 1 << 30), (3, 1 << 20)],
        fence_bytes: 4096,
    }
}

fn encode<T: wire_encode::Encodable>(msg: &T) -> AlignedVec {
    let mut out = AlignedVec::new();
    msg.encode_into(&mut out);
    out
}

mod wire_encode {
    use super::*;

    /// The message types, encoded as the peers encode them.
    pub trait Encodable {
        fn encode_into(&self, out: &mut AlignedVec);
    }

    macro_rules! encodable {
        ($($t:ty),*) => {$(
            impl Encodable for $t {
                fn encode_into(&self, out: &mut AlignedVec) {
                    wire::encode_payload(self, out).unwrap();
                }
            }
        )*};
    }
    encodable!(Request, Reply, DataRequest, DataReply, ShmHello);
}

/// The seeds of the `msg` target: every variant of every message type, as a payload.
fn msg_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, m) in requests() {
        seeds.push((format!("request-{name}"), encode(&m).to_vec()));
    }
    for (name, m) in replies() {
        seeds.push((format!("reply-{name}"), encode(&m).to_vec()));
    }
    for (name, m) in data_requests() {
        seeds.push((format!("data-request-{name}"), encode(&m).to_vec()));
    }
    seeds.push(("data-reply".into(), encode(&data_reply(0, "")).to_vec()));
    seeds.push(("shm-hello".into(), encode(&shm_hello()).to_vec()));
    seeds
}

fn pick<T>(list: Vec<(&'static str, T)>, name: &str) -> T {
    list.into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("no message {name}"))
}

fn frame(kind: Kind, req_id: u64, payload: &[u8], raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::write_frame(&mut out, kind, req_id, payload, raw.len() as u64).unwrap();
    out.extend_from_slice(raw);
    out
}

fn header(kind: Kind, meta_len: u32, raw_len: u64) -> Vec<u8> {
    Header {
        kind,
        flags: 0,
        meta_len,
        req_id: 1,
        raw_len,
    }
    .encode()
    .to_vec()
}

/// The seeds of the `frame` target: a control byte (how the stream trickles in: see
/// `mmc_fuzz::Trickle`), then frames as the peers send them, and the header's edge cases.
fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    const WHOLE: u8 = 0x00;
    const CLIENT: u8 = 0x08;
    // Pieces of at most 4 bytes, a read timeout after every 3 reads.
    const TRICKLE: u8 = 0x33;
    let with = |control: u8, stream: Vec<u8>| [vec![control], stream].concat();
    let mut seeds = Vec::new();
    let rq = |r: &Request| encode(r).to_vec();
    let alloc = pick(requests(), "alloc");
    let commit = pick(requests(), "commit");
    seeds.push((
        "meta-alloc-then-commit".into(),
        with(
            WHOLE,
            [
                frame(Kind::MetaRequest, 1, &rq(&alloc), &[]),
                frame(Kind::MetaRequest, 2, &rq(&commit), &[]),
            ]
            .concat(),
        ),
    ));
    seeds.push((
        "meta-lookup-trickled".into(),
        with(
            TRICKLE,
            frame(
                Kind::MetaRequest,
                3,
                &rq(&Request::Lookup { keys: keys() }),
                &[],
            ),
        ),
    ));
    seeds.push((
        "meta-oneway-release".into(),
        with(
            WHOLE,
            frame(
                Kind::MetaOneway,
                4,
                &rq(&Request::Release { leases: vec![44] }),
                &[],
            ),
        ),
    ));
    let lookup_reply = &pick(replies(), "lookup");
    seeds.push((
        "client-lookup-reply".into(),
        with(
            CLIENT,
            frame(Kind::MetaReply, 3, &encode(lookup_reply), &[]),
        ),
    ));
    let write = &pick(data_requests(), "write");
    let read = &pick(data_requests(), "read");
    seeds.push((
        "data-write-with-raw-then-read".into(),
        with(
            WHOLE,
            [
                frame(Kind::DataRequest, 5, &encode(write), &[0xab; 16]),
                frame(Kind::DataRequest, 6, &encode(read), &[]),
            ]
            .concat(),
        ),
    ));
    seeds.push((
        "client-data-reply-with-raw".into(),
        with(
            CLIENT | 0x02,
            [
                frame(Kind::DataReply, 6, &encode(&data_reply(0, "")), &[7; 16]),
                frame(
                    Kind::DataReply,
                    6,
                    &encode(&data_reply(-3018, "fence")),
                    &[],
                ),
            ]
            .concat(),
        ),
    ));
    // Edge cases: the largest payload claimed, then a little; one byte over the limit; the
    // largest raw run claimed; bad magic; half a header.
    let mut claim = header(Kind::MetaRequest, META_BYTES_MAX, 0);
    claim.extend_from_slice(&[0u8; 100]);
    seeds.push(("edge-claims-max-payload".into(), with(WHOLE, claim)));
    seeds.push((
        "edge-payload-over-limit".into(),
        with(WHOLE, header(Kind::MetaRequest, META_BYTES_MAX + 1, 0)),
    ));
    let mut raw = frame(Kind::DataRequest, 7, &encode(write), &[1; 8]);
    raw[24..32].copy_from_slice(&RAW_BYTES_MAX.to_le_bytes());
    seeds.push(("edge-claims-max-raw".into(), with(WHOLE, raw)));
    let mut bad = header(Kind::MetaRequest, 0, 0);
    bad[0] = b'X';
    seeds.push(("edge-bad-magic".into(), with(WHOLE, bad)));
    seeds.push((
        "edge-half-header".into(),
        with(TRICKLE, header(Kind::MetaRequest, 64, 0)[..16].to_vec()),
    ));
    seeds
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
                    },
                )
            })
            .collect(),
    }
}

/// The seeds of the `meta_requests` target: request sequences a cluster sends (MetaCore's ids
/// start at 1 with epoch 0: incarnations, put tokens and leases alike), so the fuzzer starts
/// from a core with members and objects.
fn meta_requests_seeds() -> Vec<(String, Vec<u8>)> {
    let two_members = [
        record(0, &register(0, "host-a", 1 << 20)),
        record(0, &register(1, "host-b", 1 << 20)),
    ]
    .concat();
    let put_get = [
        two_members.clone(),
        record(1, &alloc(&[("a", 4096), ("b", 100_000)], 2)),
        record(1, &commit(&[("a", 1), ("b", 2)])),
        record(
            1,
            &Request::Lookup {
                keys: vec!["a".into(), "b".into(), "c".into()],
            },
        ),
        record(1, &Request::Release { leases: vec![1] }),
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
        record(0, &commit(&[("x", 1)])),
        record(0, &alloc(&[("y", 600_000)], 1)),
        record(0, &commit(&[("y", 2)])),
        record(0, &alloc(&[("z", 900_000), ("huge", 1 << 40)], 1)),
        record(0, &alloc(&[("pending", 1000)], 1)),
        record(
            100,
            &Request::Heartbeat {
                rank: 0,
                incarnation: 1,
                index_seq: 0,
                index_resync: false,
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
        two_members,
        record(0, &alloc(&[("m", 5000)], 2)),
        record(0, &commit(&[("m", 1)])),
        record(
            0,
            &Request::Suspect {
                rank: 1,
                incarnation: 2,
            },
        ),
        record(
            1,
            &Request::Heartbeat {
                rank: 1,
                incarnation: 2,
                index_seq: 1,
                index_resync: true,
            },
        ),
        record(
            1,
            &Request::Unregister {
                rank: 0,
                incarnation: 1,
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
    vec![
        ("put-get-remove".into(), put_get),
        ("evict-and-time".into(), evict_and_time),
        ("membership".into(), membership),
    ]
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// With `MMC_WRITE_FUZZ_SEEDS` set, writes `seeds` as `seed-NAME` files of the target's corpus
/// (removing other `seed-*` files); without, checks that the committed ones are exactly these.
fn write_or_check(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = corpus_dir(target);
    let want: Vec<(String, &Vec<u8>)> = seeds
        .iter()
        .map(|(n, b)| (format!("seed-{n}"), b))
        .collect();
    let committed = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("seed-"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    if std::env::var_os("MMC_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for name in committed(&dir) {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        for (name, bytes) in &want {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        return;
    }
    let hint =
        "run MMC_WRITE_FUZZ_SEEDS=1 cargo test -p mmc-controlplane --test fuzz_seeds and commit";
    let mut names: Vec<String> = want.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(
        committed(&dir),
        names,
        "seed files of {target} differ; {hint}"
    );
    for (name, bytes) in &want {
        let got = std::fs::read(dir.join(name)).unwrap();
        assert!(&got == *bytes, "{target}/{name} is stale; {hint}");
    }
}

#[test]
fn msg_seeds_are_current() {
    let seeds = msg_seeds();
    // Every seed is a valid message of its type: the fuzzer starts inside the valid space.
    for (name, bytes) in &seeds {
        let mut aligned = AlignedVec::<16>::new();
        aligned.extend_from_slice(bytes);
        let ok = match name.split('-').next().unwrap() {
            "request" => wire::decode_payload::<Request>(&aligned).is_ok(),
            "reply" => wire::decode_payload::<Reply>(&aligned).is_ok(),
            "data" if name.starts_with("data-request") => {
                wire::decode_payload::<DataRequest>(&aligned).is_ok()
            }
            "data" => wire::decode_payload::<DataReply>(&aligned).is_ok(),
            "shm" => wire::decode_payload::<ShmHello>(&aligned).is_ok(),
            other => panic!("seed kind {other}"),
        };
        assert!(ok, "seed {name} does not decode");
    }
    write_or_check("msg", &seeds);
}

#[test]
fn meta_requests_seeds_are_current() {
    use mmc_controlplane::meta::{MetaCore, MetaParams};
    let seeds = meta_requests_seeds();
    // The sequences do what they say on a fresh core: both members register, the puts commit.
    for (name, bytes) in &seeds {
        let mut core = MetaCore::new(MetaParams::default());
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
        assert!(committed, "{name}: no commit succeeded: {replies:?}");
    }
    write_or_check("meta_requests", &seeds);
}

#[test]
fn frame_seeds_are_current() {
    let seeds = frame_seeds();
    // The valid streams read back whole, frame by frame.
    for (name, stream) in seeds.iter().filter(|(n, _)| !n.starts_with("edge-")) {
        let mut r = std::io::Cursor::new(&stream[1..]);
        let mut payload = AlignedVec::new();
        let mut frames = 0;
        while (r.position() as usize) < stream.len() - 1 {
            let h = wire::read_frame(&mut r, &mut payload)
                .unwrap_or_else(|e| panic!("seed {name}: {e}"));
            r.set_position(r.position() + h.raw_len);
            frames += 1;
        }
        assert!(frames >= 1, "seed {name} holds no frame");
    }
    write_or_check("frame", &seeds);
}
