//! `verify_reads` over real processes: bytes corrupted in a local service's pool behind its back
//! are never returned by a client that verifies. With one replica the get fails with -3103; with
//! two, it returns the good replica's bytes. A client that does not verify returns the corrupt
//! bytes (which shows the corruption reached the reader, and that the check is what stops it).
//!
//! The corruption goes through no hook in the binaries: the test maps the pool exactly as a
//! same-host client does (the memfds a local service hands out on its shm socket) and writes into
//! it outside any put.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{pattern, Cluster};
use mmc_controlplane::msg::{Replica, Reply, Request, ServiceAddr, ShmHello};
use mmc_controlplane::wire;
use mmc_dataplane::{Client, ClientConfig, Code, PutOptions};
use mmc_hal::Arena;
use mmc_meta_service::rpc::MetaConn;

const OBJECT_BYTES: usize = 256 * 1024;

/// The replicas of `key`, in the order the meta service gives them (the order a client without a
/// pool of its own reads them in), and the services' addresses. The read lease is given back.
fn replicas(cluster: &Cluster, key: &str) -> (Vec<Replica>, Vec<ServiceAddr>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = cluster.meta_addr.parse().expect("meta address");
    let mut conn = MetaConn::connect(addr, deadline).expect("meta connection");
    let reply = conn
        .call(
            &Request::Lookup {
                keys: vec![key.to_string()],
            },
            deadline,
        )
        .expect("lookup");
    let Reply::Lookup {
        mut items,
        services,
        ..
    } = reply
    else {
        panic!("lookup answered {reply:?}")
    };
    let item = items.remove(0);
    assert_eq!(item.code, 0, "{key} is found");
    conn.send_oneway(
        &Request::Release {
            leases: vec![item.lease],
        },
        deadline,
    )
    .expect("release");
    (item.replicas, services)
}

/// Overwrite `bytes` at `at` bytes into `replica`, in its service's pool mapped as a same-host
/// client maps it.
fn scribble(services: &[ServiceAddr], replica: &Replica, at: u64, bytes: &[u8]) {
    let addr = services
        .iter()
        .find(|s| s.rank == replica.rank)
        .expect("an address for the replica's service");
    // `PATH#HEX-SECRET`: connect to the socket file and send the secret first.
    let (path, secret) = addr
        .shm_endpoint
        .rsplit_once('#')
        .expect("a shm endpoint with its secret");
    let secret: Vec<u8> = (0..secret.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&secret[i..i + 2], 16).expect("hex secret"))
        .collect();
    let mut stream = UnixStream::connect(path).expect("connect to the shm socket");
    stream.write_all(&secret).expect("send the secret");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    let mut fds = Vec::new();
    let n = mmc_hal::fdpass::recv_with_fds(&stream, &mut buf, &mut fds).expect("the pools' fds");
    let mut payload = rkyv::util::AlignedVec::<16>::new();
    payload.extend_from_slice(&buf[..n]);
    let hello: ShmHello = wire::decode_payload(&payload).expect("shm hello");
    let i = hello
        .segments
        .iter()
        .position(|(s, _)| *s == replica.segment)
        .expect("the replica's segment is handed over");
    let len = hello.segments[i].1;
    let fd = fds.into_iter().nth(i).expect("one fd per segment");
    let pool = Arena::from_fd("corrupted-by-test", fd, len).expect("map the pool");
    assert!(at + bytes.len() as u64 <= replica.len);
    pool.copy_in(replica.offset + at, bytes)
        .expect("write into the pool");
}

/// Flip every bit of 16 bytes in the middle of `replica`.
fn corrupt(services: &[ServiceAddr], replica: &Replica, key: &str) {
    let at = replica.len / 2;
    let good = &pattern(key, OBJECT_BYTES)[at as usize..at as usize + 16];
    let bad: Vec<u8> = good.iter().map(|b| !b).collect();
    scribble(services, replica, at, &bad);
}

fn client(cluster: &Cluster, verify_reads: bool) -> Client {
    Client::connect(&ClientConfig {
        verify_reads,
        ..cluster.client_config()
    })
    .expect("client connects")
}

/// A verifying client that reads over TCP (not the same-host mapped pools).
fn tcp_client(cluster: &Cluster) -> Client {
    Client::connect(&ClientConfig {
        verify_reads: true,
        transport: Some(mmc_config::DataOpType::Tcp),
        ..cluster.client_config()
    })
    .expect("client connects")
}

/// Every form of get, in the order: get, get_into, batch_get_into, get_into_parts,
/// batch_get_into_parts. Each result is the bytes read, or the error code.
fn every_get(c: &Client, key: &str) -> Vec<Result<Vec<u8>, i32>> {
    let code = |e: mmc_dataplane::Error| e.code().as_i32();
    let mut out = vec![c.get(key).map_err(code)];
    let mut buf = vec![0u8; OBJECT_BYTES + 100];
    out.push(
        c.get_into(key, &mut buf)
            .map(|n| buf[..n as usize].to_vec())
            .map_err(code),
    );
    let mut buf = vec![0u8; OBJECT_BYTES];
    out.push({
        let mut bufs: [&mut [u8]; 1] = [&mut buf];
        match c.batch_get_into(&[key], &mut bufs) {
            Ok(mut r) => r.remove(0).map(|_| buf.clone()).map_err(code),
            Err(e) => Err(code(e)),
        }
    });
    // Layer-wise: three uneven pieces.
    let (mut a, mut b, mut d) = (vec![0u8; 1000], vec![0u8; 100_000], vec![0u8; 200_000]);
    let joined = |a: &[u8], b: &[u8], d: &[u8], n: u64| {
        let mut v = [a, b, d].concat();
        v.truncate(n as usize);
        v
    };
    out.push(
        {
            let mut parts: [&mut [u8]; 3] = [&mut a, &mut b, &mut d];
            c.get_into_parts(key, &mut parts).map_err(code)
        }
        .map(|n| joined(&a, &b, &d, n)),
    );
    out.push(
        {
            let mut parts: [&mut [u8]; 3] = [&mut a, &mut b, &mut d];
            let mut bufs: [&mut [&mut [u8]]; 1] = [&mut parts];
            match c.batch_get_into_parts(&[key], &mut bufs) {
                Ok(mut r) => r.remove(0).map_err(code),
                Err(e) => Err(code(e)),
            }
        }
        .map(|n| joined(&a, &b, &d, n)),
    );
    out
}

#[test]
fn verify_reads_fails_a_key_whose_only_replica_is_corrupt() {
    let cluster = Cluster::start(&["32MB"], &[]);
    let writer = client(&cluster, false);
    for key in ["lone-bad", "lone-good"] {
        writer
            .put(key, &pattern(key, OBJECT_BYTES), &PutOptions::default())
            .expect("put");
    }
    let (reps, services) = replicas(&cluster, "lone-bad");
    assert_eq!(reps.len(), 1);
    corrupt(&services, &reps[0], "lone-bad");

    let checked = client(&cluster, true);
    assert!(checked.verify_reads());
    let started = Instant::now();
    for r in every_get(&checked, "lone-bad") {
        assert_eq!(r, Err(Code::UnmatchedRet.as_i32()), "every form refuses it");
    }
    let refused_us = started.elapsed().as_micros();
    assert!(
        checked.mapped_services().contains(&reps[0].rank),
        "read through shm"
    );
    for r in every_get(&tcp_client(&cluster), "lone-bad") {
        assert_eq!(r, Err(Code::UnmatchedRet.as_i32()), "over TCP too");
    }
    for r in every_get(&checked, "lone-good") {
        assert_eq!(r.as_deref(), Ok(&pattern("lone-good", OBJECT_BYTES)[..]));
    }
    // Without the check the corrupt bytes come back: the check is what refuses them.
    let unchecked = client(&cluster, false);
    for r in every_get(&unchecked, "lone-bad") {
        let bytes = r.expect("read without checking");
        assert_ne!(bytes, pattern("lone-bad", OBJECT_BYTES));
        assert_eq!(bytes.len(), OBJECT_BYTES);
    }
    println!(
        "integrity, 1 replica: 5 get forms (shm, then TCP) refused the corrupt object with -3103 \
         ({refused_us} us for the 5 over shm); the intact one read back in all 5; an unchecked \
         client returned 5 corrupt copies"
    );
}

#[test]
fn verify_reads_falls_over_to_the_intact_replica() {
    let cluster = Cluster::start(&["32MB", "32MB"], &[]);
    let writer = client(&cluster, false);
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    for key in ["pair-one-bad", "pair-both-bad"] {
        writer
            .put(key, &pattern(key, OBJECT_BYTES), &two)
            .expect("put");
    }
    let (reps, services) = replicas(&cluster, "pair-one-bad");
    assert_eq!(reps.len(), 2);
    assert_ne!(reps[0].rank, reps[1].rank);
    // The replica a pure client reads first.
    corrupt(&services, &reps[0], "pair-one-bad");
    let (both, services) = replicas(&cluster, "pair-both-bad");
    for r in &both {
        corrupt(&services, r, "pair-both-bad");
    }

    let checked = client(&cluster, true);
    let good = pattern("pair-one-bad", OBJECT_BYTES);
    for r in every_get(&checked, "pair-one-bad") {
        assert_eq!(r.as_deref(), Ok(&good[..]), "the intact replica's bytes");
    }
    for r in every_get(&checked, "pair-both-bad") {
        assert_eq!(r, Err(Code::UnmatchedRet.as_i32()), "no replica matches");
    }
    let over_tcp = tcp_client(&cluster);
    for r in every_get(&over_tcp, "pair-one-bad") {
        assert_eq!(r.as_deref(), Ok(&good[..]), "over TCP too");
    }
    let unchecked = client(&cluster, false);
    let first = unchecked
        .get("pair-one-bad")
        .expect("read without checking");
    assert_ne!(first, good, "the replica read first is the corrupt one");
    println!(
        "integrity, 2 replicas: 5 get forms (shm and TCP) returned the intact replica's bytes \
         past a corrupt one; with both corrupt all 5 answered -3103"
    );
}
