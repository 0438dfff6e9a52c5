//! Every documented error code a Rust caller can provoke, through real processes.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{pattern, Cluster};
use mmc_controlplane::msg::{Reply, Request, PREFERRED_AFFINITY};
use mmc_dataplane::{Client, ClientConfig, Code, PutOptions};
use mmc_meta_service::rpc::MetaConn;

const MIB: u64 = 1024 * 1024;

#[test]
fn invalid_parameters_are_3000() {
    let cluster = Cluster::start(&["64MB"], &[]);
    let c = cluster.client();
    let opts = PutOptions::default();
    let key255 = "k".repeat(255);
    let key256 = "k".repeat(256);
    c.put(&key255, b"ok", &opts).unwrap();
    assert_eq!(c.get(&key255).unwrap(), b"ok");
    for bad in ["", key256.as_str()] {
        assert_eq!(c.put(bad, b"x", &opts).unwrap_err().code().as_i32(), -3000);
        assert_eq!(c.get(bad).unwrap_err().code().as_i32(), -3000);
        assert_eq!(c.exist(bad).unwrap_err().code().as_i32(), -3000);
        assert_eq!(c.remove(bad).unwrap_err().code().as_i32(), -3000);
        assert_eq!(c.query(bad).unwrap_err().code().as_i32(), -3000);
    }
    // Zero-size value, zero-size buffer, too-small buffer, mismatched batch lengths, 9 replicas.
    assert_eq!(
        c.put("empty", b"", &opts).unwrap_err().code().as_i32(),
        -3000
    );
    assert_eq!(
        c.put_parts("empty", &[b"", b""], &opts)
            .unwrap_err()
            .code()
            .as_i32(),
        -3000
    );
    assert_eq!(
        c.get_into(&key255, &mut []).unwrap_err().code().as_i32(),
        -3000
    );
    let mut one = [9u8; 1];
    assert_eq!(
        c.get_into(&key255, &mut one).unwrap_err().code().as_i32(),
        -3000
    );
    assert_eq!(one, [9], "nothing copied into a too-small buffer");
    assert_eq!(
        c.batch_put(&["a", "b"], &[b"x"], &opts)
            .unwrap_err()
            .code()
            .as_i32(),
        -3000
    );
    let nine = PutOptions {
        replicas: 9,
        ..PutOptions::default()
    };
    assert_eq!(
        c.put("nine", b"x", &nine).unwrap_err().code().as_i32(),
        -3000
    );
}

#[test]
fn missing_existing_and_no_space() {
    let cluster = Cluster::start(&["16MB"], &[]);
    let c = cluster.client();
    let opts = PutOptions::default();
    assert_eq!(c.get("nope").unwrap_err().code().as_i32(), -3007);
    assert_eq!(
        c.get_into("nope", &mut [0u8; 8])
            .unwrap_err()
            .code()
            .as_i32(),
        -3007
    );
    assert_eq!(c.query("nope").unwrap_err().code().as_i32(), -3007);
    assert_eq!(c.remove("nope").unwrap_err().code().as_i32(), -3007);
    assert_eq!(c.exist("nope").unwrap_err().code().as_i32(), -3007);
    c.put("dup", b"first", &opts).unwrap();
    assert_eq!(
        c.put("dup", b"second", &opts).unwrap_err().code().as_i32(),
        -3006
    );
    assert_eq!(c.get("dup").unwrap(), b"first");
    // Larger than the whole pool: no eviction can make room.
    let big = vec![1u8; 17 * MIB as usize];
    assert_eq!(
        c.put("big", &big, &opts).unwrap_err().code().as_i32(),
        -3013
    );
    // Two replicas on a one-service cluster cannot be honoured.
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    assert_eq!(c.put("two", b"x", &two).unwrap_err().code().as_i32(), -3013);
    // A preferred service that does not exist.
    let nowhere = PutOptions {
        policy: PREFERRED_AFFINITY,
        preferred: vec![999],
        ..PutOptions::default()
    };
    assert_eq!(
        c.put("nowhere", b"x", &nowhere)
            .unwrap_err()
            .code()
            .as_i32(),
        -3013
    );
    assert_eq!(
        c.exist("big").unwrap_err().code().as_i32(),
        -3007,
        "a failed put leaves nothing"
    );
}

/// Space held by a reader's lease is not taken; a put that needs it waits (bounded by the
/// timeout) and fails with -3013 if it never frees, or succeeds once the lease is released.
#[test]
fn put_waits_for_leased_space_within_its_timeout() {
    let cluster = Cluster::start(&["8MB"], &["--evict-high", "95", "--evict-low", "90"]);
    let c = cluster.client();
    let value = pattern("v", 5 * MIB as usize);
    c.put("leased", &value, &PutOptions::default()).unwrap();
    // A reader in the middle of a get: it holds a lease on "leased" (raw protocol, no release).
    let addr = cluster.meta_addr.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reader = MetaConn::connect(addr, deadline).unwrap();
    let lease = match reader
        .call(
            &Request::Lookup {
                keys: vec!["leased".into()],
            },
            deadline,
        )
        .unwrap()
    {
        Reply::Lookup { items, .. } => items[0].lease,
        other => panic!("{other:?}"),
    };
    c.remove("leased").unwrap();
    assert_eq!(
        c.exist("leased").unwrap_err().code().as_i32(),
        -3007,
        "removed keys vanish at once"
    );

    let short = Client::connect(&ClientConfig {
        timeout_ms: 1000,
        ..cluster.client_config()
    })
    .unwrap();
    let start = Instant::now();
    assert_eq!(
        short
            .put("next", &value, &PutOptions::default())
            .unwrap_err()
            .code()
            .as_i32(),
        -3013
    );
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "the put waited for its timeout"
    );

    // Release the lease while a put waits: the put then succeeds.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        reader
            .send_oneway(
                &Request::Release {
                    leases: vec![lease],
                },
                deadline,
            )
            .unwrap();
        reader
    });
    let start = Instant::now();
    c.put("next", &value, &PutOptions::default()).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(c.get("next").unwrap(), value);
    drop(releaser.join());
}

#[test]
fn meta_unreachable_is_3017() {
    // A port with nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ClientConfig {
        meta_url: format!("tcp://127.0.0.1:{port}"),
        timeout_ms: 2000,
        ..ClientConfig::default()
    };
    assert_eq!(
        Client::connect(&config).err().unwrap().code().as_i32(),
        -3017
    );

    // The meta service dies under a connected client.
    let mut cluster = Cluster::start(&["16MB"], &[]);
    let c = cluster.client();
    c.put("k", b"v", &PutOptions::default()).unwrap();
    cluster.kill_meta();
    assert_eq!(c.get("k").unwrap_err().code().as_i32(), -3017);
    assert_eq!(
        c.put("k2", b"v", &PutOptions::default())
            .unwrap_err()
            .code()
            .as_i32(),
        -3017
    );
}

#[test]
fn local_service_unreachable_is_3018() {
    // Without the probe, which would soon drop the dead service and its object (-3007 then).
    let mut cluster = Cluster::start(&["16MB", "16MB"], &["--probe-dead", "false"]);
    let c = cluster.client();
    let victim = cluster.locals[0].rank;
    let opts = PutOptions {
        policy: PREFERRED_AFFINITY,
        preferred: vec![victim as i32],
        ..PutOptions::default()
    };
    c.put("on-victim", &pattern("x", 4096), &opts).unwrap();
    cluster.kill_local(0);
    // The data path finds the service gone, or the meta service already paused it (its
    // connection closed): either way its object is not reachable.
    assert_eq!(c.get("on-victim").unwrap_err().code().as_i32(), -3018);
    // A put pinned to it fails: on the data path (-3018) or, once the meta service paused it,
    // at placement (-3013: the preferred service has no room in placement).
    let code = c.put("again", b"v", &opts).unwrap_err().code().as_i32();
    assert!(
        matches!(code, -3018 | -3013),
        "put pinned to a dead service: {code}"
    );
    // The failed put is aborted, so its key is free; other services still work.
    assert_eq!(c.exist("again").unwrap_err().code().as_i32(), -3007);
    c.put("elsewhere", b"v", &PutOptions::default()).unwrap();
    assert_eq!(c.get("elsewhere").unwrap(), b"v");
}

#[test]
fn a_silent_meta_service_times_out_with_3004() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for s in listener.incoming().take(4) {
            conns.push(s);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    let config = ClientConfig {
        meta_url: format!("tcp://{addr}"),
        timeout_ms: 1000,
        ..ClientConfig::default()
    };
    let c = Client::connect(&config).unwrap();
    let start = Instant::now();
    assert_eq!(c.exist("k").unwrap_err().code().as_i32(), -3004);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert_eq!(
        c.put("k", b"v", &PutOptions::default())
            .unwrap_err()
            .code()
            .as_i32(),
        -3004
    );
    drop(c);
    drop(hold);
}

#[test]
fn error_codes_match_the_contract() {
    // -3019 (call before init) belongs to the C and Python layers: a Rust `Client` exists only once
    // connected. Its mapping is checked here; the layers test the call itself.
    assert_eq!(
        mmc_dataplane::Error::ClientNotInit.code(),
        Code::ClientNotInit
    );
    assert_eq!(Code::ClientNotInit.as_i32(), -3019);
}

/// Garbage, truncated and out-of-bounds requests to a local service's data endpoint and to the
/// meta service are refused on their connection; both services keep serving everyone else.
#[test]
fn malformed_requests_never_take_a_service_down() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use mmc_controlplane::msg::{DataReply, DataRequest, Piece};
    use mmc_controlplane::wire::{self, Kind};

    let cluster = Cluster::start(&["16MB"], &[]);
    let c = cluster.client();
    c.put("k", &pattern("k", 10_000), &PutOptions::default())
        .unwrap();
    let timeout = Some(Duration::from_secs(5));
    for target in [
        cluster.locals[0].endpoint.clone(),
        cluster.meta_addr.clone(),
    ] {
        // Garbage: the peer closes the connection.
        let mut s = TcpStream::connect(&target).unwrap();
        s.set_read_timeout(timeout).unwrap();
        s.write_all(&[0xAB; 100]).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "{target} closes on garbage"
        );
        // A header that promises more than it sends, then hangs up.
        let mut s = TcpStream::connect(&target).unwrap();
        let head = wire::Header {
            kind: Kind::DataRequest,
            flags: 0,
            meta_len: 1000,
            req_id: 1,
            raw_len: 0,
        };
        s.write_all(&head.encode()).unwrap();
        s.write_all(&[1, 2, 3]).unwrap();
        drop(s);
    }
    // A well-formed read outside the pool, of an unknown segment, or planned for another
    // incarnation or rank: error replies, no crash. The service's incarnation is what a lookup
    // names (the meta service numbers them from its start time).
    let mut s = TcpStream::connect(&cluster.locals[0].endpoint).unwrap();
    s.set_read_timeout(timeout).unwrap();
    let segment = c.query("k").unwrap().replicas[0].segment;
    let rank = cluster.locals[0].rank;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut meta = MetaConn::connect(cluster.meta_addr.parse().unwrap(), deadline).unwrap();
    let inc = match meta
        .call(
            &Request::Lookup {
                keys: vec!["k".into()],
            },
            deadline,
        )
        .unwrap()
    {
        Reply::Lookup { services, .. } => services[0].incarnation,
        other => panic!("{other:?}"),
    };
    for (rank, incarnation, segment, offset, want) in [
        (rank, inc, segment, u64::MAX - 5, -3000),
        (rank, inc, segment, 1 << 40, -3000),
        (rank, inc, 9999, 0, -3014),
        (rank, inc + 1, segment, 0, -3018),
        (rank, 0, segment, 0, -3018),
        (rank + 1, inc, segment, 0, -3018),
    ] {
        let req = DataRequest::Read {
            rank,
            incarnation,
            pieces: vec![Piece {
                segment,
                offset,
                len: 10,
            }],
        };
        let mut payload = rkyv::util::AlignedVec::new();
        wire::encode_payload(&req, &mut payload).unwrap();
        wire::write_frame(&mut s, Kind::DataRequest, 7, &payload, 0).unwrap();
        let h = wire::read_frame(&mut s, &mut payload).unwrap();
        let reply: DataReply = wire::decode_payload(&payload).unwrap();
        assert_eq!((h.raw_len, reply.code), (0, want), "{}", reply.message);
    }
    assert_eq!(c.get("k").unwrap(), pattern("k", 10_000));
    c.put("k2", b"still serving", &PutOptions::default())
        .unwrap();
}
