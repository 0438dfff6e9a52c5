//! The seed corpus of the `frame` and `msg` fuzz targets (fuzz/corpus/), made here from real
//! messages: one valid encoding of every message variant, frames as the peers send them, and the
//! edge cases of the frame header. The committed seeds must be exactly what this makes, so a
//! change to the messages' encoding shows up here; regenerate with
//! `MMC_WRITE_FUZZ_SEEDS=1 cargo test -p mmc-controlplane --test fuzz_seeds` and commit.

use mmc_controlplane::msg::*;
use mmc_controlplane::wire::{self, Header, Kind, META_BYTES_MAX, RAW_BYTES_MAX};
use rkyv::util::AlignedVec;

#[path = "common/seed_files.rs"]
mod seed_files;
use seed_files::write_or_check;

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
                repaired: vec![
                    RepairDone { token: 5, ok: true },
                    RepairDone {
                        token: 6,
                        ok: false,
                    },
                ],
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
                    (
                        "k".into(),
                        CommitItem {
                            token: 9,
                            ok: true,
                            crc: 0x1234_5678,
                        },
                    ),
                    (
                        "big".into(),
                        CommitItem {
                            token: 10,
                            ok: false,
                            crc: 0,
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
            "rejoin",
            Request::Rejoin(Rejoin {
                register: Register {
                    rank: Some(1),
                    create_id: 3,
                    host: "host-a".into(),
                    data_endpoint: "127.0.0.1:7001".into(),
                    shm_endpoint: String::new(),
                    segments: vec![SegmentSpec {
                        media: MEDIA_DRAM,
                        capacity: 1 << 30,
                    }],
                },
                previous: 7,
                chunk: 0,
                last: true,
                entries: vec![RejoinEntry {
                    key: "k".into(),
                    pool: 0,
                    offset: 4096,
                    len: 100,
                    version: 9,
                    crc: 0x1234_5678,
                    want: 2,
                }],
            }),
        ),
        (
            "suspect",
            Request::Suspect {
                rank: 2,
                incarnation: 8,
            },
        ),
        (
            "lease_slots",
            Request::LeaseSlots(SlotRequest {
                writer_rank: Some(1),
                client_id: 7,
                media: MEDIA_DRAM,
                policy: PREFERRED_AFFINITY,
                replicas: 1,
                size: 4096,
                count: 32,
                preferred: vec![1],
            }),
        ),
        (
            "put_leased",
            Request::PutLeased {
                client_id: 7,
                items: vec![LeasedPut {
                    token: 12,
                    key: "k".into(),
                    size: 4096,
                    crc: 0x1234_5678,
                    ok: true,
                }],
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
                        version: 9,
                        crc: 0x1234_5678,
                        want: 2,
                    },
                    IndexChange::Removed {
                        key: "old".into(),
                        segment: 2,
                        offset: 8192,
                    },
                ],
                index_more: true,
                repairs: vec![RepairTask {
                    token: 5,
                    segment: 2,
                    offset: 8192,
                    len: 4096,
                    crc: 0x1234_5678,
                    source: service(2),
                    source_segment: 4,
                    source_offset: 0,
                }],
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
                    crc: 0x1234_5678,
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
            "busy",
            Reply::Busy {
                retry_ms: 1000,
                message: "rebuilding".into(),
            },
        ),
        (
            "error",
            Reply::Error {
                code: -3000,
                message: "bad request".into(),
            },
        ),
        (
            "slots",
            Reply::Slots {
                lease_ms: 30_000,
                items: vec![AllocItem {
                    code: 0,
                    retry: false,
                    token: 12,
                    replicas: vec![replica(1, 4096)],
                }],
                services: vec![service(1)],
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
        (
            "rdma-connect",
            DataRequest::RdmaConnect {
                rank: 1,
                incarnation: 7,
                peer: rdma_peer(),
            },
        ),
    ]
}

fn rdma_peer() -> RdmaPeer {
    RdmaPeer {
        qpn: 0x101,
        psn: 0x4242,
        lid: 0,
        gid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
        fabric: "sim:host".into(),
    }
}

fn rdma_hello() -> RdmaHello {
    let mr = |segment, seg_offset, addr| RdmaMr {
        segment,
        seg_offset,
        addr,
        len: 4 << 20,
        rkey: 0x1122,
    };
    RdmaHello {
        peer: rdma_peer(),
        mrs: vec![mr(2, 0, 1 << 40), mr(2, 4 << 20, (1 << 40) + (4 << 20))],
        fence: mr(u32::MAX, 0, 1 << 39),
    }
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
        devices: vec![-1, 0],
        handles: vec![Vec::new(), vec![7; 64]],
        device_backend: "cuda".into(),
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
    encodable!(Request, Reply, DataRequest, DataReply, ShmHello, RdmaHello);
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
    seeds.push(("rdma-hello".into(), encode(&rdma_hello()).to_vec()));
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
            "rdma" => wire::decode_payload::<RdmaHello>(&aligned).is_ok(),
            other => panic!("seed kind {other}"),
        };
        assert!(ok, "seed {name} does not decode");
    }
    write_or_check("msg", &seeds);
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
