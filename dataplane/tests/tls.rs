//! Mutual TLS on every channel, with real processes and certificates made here
//! (`mmc_tls::testpki`): a good client works end to end (Rust client over TCP and shared memory,
//! the `mmc` CLI); plaintext peers, peers without a certificate, certificates from another CA,
//! revoked or expired ones, and wrong key passwords are refused and logged; a TLS client facing a
//! plaintext or a silent server gets -3017 / -3018 within its timeout; an encrypted key and a
//! decrypter library built here work. Shared memory: `tls_shm.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::ha::HaCluster;
use common::tls::{flags, good_tls, round_trip, s, start, tls_with, TlsCluster};
use common::{bin, pattern, wait_until};
use mmc_config::{DataOpType, TlsConfig};
use mmc_dataplane::{Client, ClientConfig, Code, PutOptions};
use mmc_meta_service::rpc::MetaConn;
use mmc_tls::TlsContext;

#[test]
fn tls_on_every_channel_end_to_end_and_plaintext_refused() {
    let c = TlsCluster::start(2);
    // Rust client over TCP (data path over TLS), and over shared memory (the secret from the
    // meta service), both with the encrypted key.
    let tcp = Client::connect(&c.config(good_tls(&c.pki), Some(DataOpType::Tcp))).unwrap();
    let started = Instant::now();
    for i in 0..16 {
        round_trip(&tcp, &format!("tcp-{i}"), 1 << 20);
    }
    println!("16 x 1 MiB put+get over TLS/TCP: {:?}", started.elapsed());
    let shm = Client::connect(&c.config(good_tls(&c.pki), None)).unwrap();
    for i in 0..8 {
        round_trip(&shm, &format!("shm-{i}"), 256 << 10);
    }
    assert_eq!(
        shm.mapped_services().len(),
        2,
        "both same-host services mapped"
    );
    let mut back = vec![0u8; 1 << 20];
    shm.get_into("tcp-3", &mut back).unwrap();
    assert!(back == pattern("tcp-3", 1 << 20));

    // The CLI, configured by a file (TOML [tls] + [client] transport = tcp) and by flags.
    let tls = good_tls(&c.pki);
    let file = c.dir.path().join("cli.toml");
    std::fs::write(
        &file,
        format!(
            "meta_url = \"tcp://{}\"\n[client]\ntransport = \"tcp\"\n[tls]\nenable = true\nca_path = \"{}\"\ncert_path = \"{}\"\nkey_path = \"{}\"\nkey_pass_path = \"{}\"\n",
            c.meta_addr, tls.ca_path, tls.cert_path, tls.key_path, tls.key_pass_path
        ),
    )
    .unwrap();
    let data = c.dir.path().join("data.bin");
    std::fs::write(&data, pattern("cli", 300_000)).unwrap();
    let out = Command::new(bin("mmc"))
        .arg("--config")
        .arg(&file)
        .args(["put", "cli-key"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mmc put: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin("mmc"))
        .args(flags(&tls))
        .args([
            "--meta",
            &format!("tcp://{}", c.meta_addr),
            "get",
            "cli-key",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mmc get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == pattern("cli", 300_000));

    // A plaintext client: -3017 at once, and the meta service logs it with its address.
    let plain = ClientConfig {
        tls: TlsConfig::default(),
        ..c.config(TlsConfig::default(), Some(DataOpType::Tcp))
    };
    let started = Instant::now();
    let e = Client::connect(&plain)
        .and_then(|c| c.put("plain", b"x", &PutOptions::default()))
        .expect_err("a plaintext client is refused");
    assert_eq!(e.code(), Code::NotConnectMeta, "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let line = c
        .meta
        .logged(&["plaintext peer", "127.0.0.1:", "channel=\"meta\""]);
    println!("meta: {line}");
    // The CLI without TLS: exit 4, the code printed.
    let out = Command::new(bin("mmc"))
        .args(["--meta", &format!("tcp://{}", c.meta_addr), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-3017"));

    // A plaintext peer on a data endpoint (a request header in the clear): refused and logged.
    let endpoint = c.services("tcp-0")[0].data_endpoint.clone();
    let mut raw = TcpStream::connect(&endpoint).unwrap();
    raw.write_all(&[0x4du8; 32]).unwrap();
    let line = c.locals.iter().find_map(|l| {
        let log = l.log();
        log.lines()
            .find(|x| x.contains("plaintext peer") && x.contains("channel=\"data\""))
            .map(String::from)
    });
    let line = match line {
        Some(l) => l,
        None => {
            // Wait on the service that owns the endpoint.
            let mut found = String::new();
            wait_until("the data refusal logged", Duration::from_secs(10), || {
                c.locals.iter().any(|l| {
                    l.log()
                        .lines()
                        .find(|x| x.contains("plaintext peer") && x.contains("channel=\"data\""))
                        .map(|x| found = x.to_string())
                        .is_some()
                })
            });
            found
        }
    };
    println!("local: {line}");
    // The TLS clients keep working.
    round_trip(&tcp, "after", 4096);
    round_trip(&shm, "after-shm", 4096);
}

#[test]
fn shard_loops_serve_tls_connections() {
    // Two data servers with shard loops (mio, io_uring): TLS connections are handed to the shards
    // after their handshake; requests already decrypted inside a session must not wait for the
    // socket to become readable again.
    let mut c = TlsCluster::start(0);
    c.add_local_with(&["--data-shards", "2"]);
    c.add_local_with(&["--data-shards", "2", "--data-poller", "io_uring"]);
    let client = Client::connect(&c.config(good_tls(&c.pki), Some(DataOpType::Tcp))).unwrap();
    let started = Instant::now();
    for i in 0..32 {
        round_trip(
            &client,
            &format!("shard-{i}"),
            if i % 2 == 0 { 4096 } else { 1 << 20 },
        );
    }
    let keys: Vec<String> = (0..16).map(|i| format!("batch-{i}")).collect();
    let data: Vec<Vec<u8>> = keys.iter().map(|k| pattern(k, 256 << 10)).collect();
    for (k, d) in keys.iter().zip(&data) {
        client.put(k, d, &PutOptions::default()).unwrap();
    }
    for (k, d) in keys.iter().zip(&data) {
        assert!(&client.get(k).unwrap() == d, "{k}");
    }
    println!(
        "TLS through shard loops: 32 round trips and 16 x 256 KiB in {:?}",
        started.elapsed()
    );
    assert_eq!(client.status().unwrap().segments.len(), 2);
}

#[test]
fn bad_certificates_and_passwords_are_refused_and_logged() {
    let c = TlsCluster::start(1);
    let pki = &c.pki;
    let cases = [
        ("another CA", tls_with(pki, &pki.rogue_cert, &pki.rogue_key)),
        (
            "revoked",
            tls_with(pki, &pki.revoked_cert, &pki.revoked_key),
        ),
        (
            "expired",
            tls_with(pki, &pki.expired_cert, &pki.expired_key),
        ),
    ];
    for (what, tls) in cases {
        let started = Instant::now();
        let r = Client::connect(&c.config(tls, Some(DataOpType::Tcp)));
        let e = r.err().unwrap_or_else(|| panic!("{what}: connected"));
        assert_eq!(e.code(), Code::NotConnectMeta, "{what}: {e}");
        println!("{what}: client got {e} after {:?}", started.elapsed());
    }
    let log = c.meta.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("TLS handshake failed") && l.contains("127.0.0.1:"))
        .count();
    assert!(refusals >= 3, "three handshakes refused and logged:\n{log}");
    for reason in ["UnknownIssuer", "Revoked", "certificate expired"] {
        assert!(log.contains(reason), "the meta log names {reason}:\n{log}");
    }

    // A wrong key password: the service does not start, and says why.
    let mut wrong = good_tls(pki);
    wrong.key_pass_path = s(&pki.wrong_pass);
    let out = Command::new(bin("mmc-local"))
        .args(["--meta", &format!("tcp://{}", c.meta_addr), "--dram", "8MB"])
        .args(flags(&wrong))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong password"), "{err}");
    let e = Client::connect(&c.config(wrong, None))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("wrong password"), "{e}");

    // A TLS client to a plaintext meta service: -3017 with the reason, quickly.
    let plain = common::Cluster::start(&[], &[]);
    let started = Instant::now();
    let e = Client::connect(&ClientConfig {
        meta_url: plain.meta_url(),
        timeout_ms: 10_000,
        tls: good_tls(pki),
        ..ClientConfig::default()
    })
    .err()
    .expect("a TLS client cannot talk to a plaintext server");
    assert_eq!(e.code(), Code::NotConnectMeta, "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    println!(
        "TLS client -> plaintext meta: {e} after {:?}",
        started.elapsed()
    );
}

/// Build the decrypter the README documents (it reverses its input) with gcc.
fn build_decrypter(dir: &Path) -> Option<PathBuf> {
    let src = dir.join("rev.c");
    std::fs::write(
        &src,
        "#include <stddef.h>\n\
         int mmc_tls_decrypt(const char *cipher, size_t cipher_len, char *plain, size_t *plain_len) {\n\
             if (cipher_len > *plain_len) return -1;\n\
             for (size_t i = 0; i < cipher_len; i++) plain[i] = cipher[cipher_len - 1 - i];\n\
             *plain_len = cipher_len;\n\
             return 0;\n\
         }\n",
    )
    .unwrap();
    let so = dir.join("librev.so");
    match Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
    {
        Ok(st) if st.success() => Some(so),
        other => {
            println!("SKIPPED: gcc could not build the decrypter: {other:?}");
            None
        }
    }
}

#[test]
fn a_decrypter_library_opens_the_key() {
    let c = TlsCluster::start(1);
    let Some(so) = build_decrypter(c.dir.path()) else {
        return;
    };
    let tls = TlsConfig {
        key_pass_path: s(&c.pki.pass_reversed),
        decrypter_lib_path: s(&so),
        ..good_tls(&c.pki)
    };
    // A second local service whose key opens only through the library.
    let args: Vec<String> = [
        "--meta",
        &format!("tcp://{}", c.meta_addr),
        "--listen",
        "tcp://127.0.0.1:0",
        "--dram",
        "16MB",
        "--create-id",
        "7",
    ]
    .map(String::from)
    .into_iter()
    .chain(flags(&tls))
    .collect();
    let (_p, line) = start(c.dir.path(), "dec", "mmc-local", &args, &[]);
    println!("local service with a decrypted key: {line}");
    let client = Client::connect(&c.config(tls, Some(DataOpType::Tcp))).unwrap();
    for i in 0..4 {
        round_trip(&client, &format!("dec-{i}"), 64 << 10);
    }
    assert_eq!(client.status().unwrap().segments.len(), 2);
}

#[test]
fn a_peer_without_a_certificate_is_refused_and_logged() {
    let c = TlsCluster::start(1);
    let good = TlsContext::from_config(&good_tls(&c.pki)).unwrap().unwrap();
    let anon = good.without_client_certificate(&s(&c.pki.ca)).unwrap();

    // The meta channel, through the connection code clients and local services use.
    let addr: SocketAddr = c.meta_addr.parse().unwrap();
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(5);
    let e = MetaConn::connect_with(addr, Some(&anon), deadline)
        .err()
        .expect("a peer without a certificate is refused by the meta service");
    assert_eq!(e.code(), Code::NotConnectMeta, "{e}");
    assert!(
        e.to_string().contains("refused this side's certificate"),
        "{e}"
    );
    println!("no certificate -> meta: {e} after {:?}", started.elapsed());
    let line = c.meta.logged(&[
        "connection refused: TLS handshake failed",
        "no certificates",
        "peer=Some(127.0.0.1:",
        "channel=\"meta\"",
    ]);
    println!("meta: {line}");

    // The data channel of a local service.
    let client = Client::connect(&c.config(good_tls(&c.pki), Some(DataOpType::Tcp))).unwrap();
    round_trip(&client, "k", 4096);
    let data: SocketAddr = c.services("k")[0].data_endpoint.parse().unwrap();
    let e = anon
        .connect(
            TcpStream::connect(data).unwrap(),
            data,
            Duration::from_secs(5),
        )
        .err()
        .expect("a peer without a certificate is refused by the data endpoint");
    println!("no certificate -> data: {e}");
    let line = c.locals[0].logged(&[
        "connection refused: TLS handshake failed",
        "no certificates",
        "peer=Some(127.0.0.1:",
        "channel=\"data\"",
    ]);
    println!("local: {line}");

    // A client configured for TLS without a certificate does not start, and names the setting.
    let none = TlsConfig {
        cert_path: String::new(),
        key_path: String::new(),
        key_pass_path: String::new(),
        ..good_tls(&c.pki)
    };
    let e = Client::connect(&c.config(none, None))
        .err()
        .expect("TLS without a certificate is a configuration error");
    assert!(e.to_string().contains("tls.cert_path"), "{e}");

    // The good client keeps working.
    round_trip(&client, "k2", 1 << 20);
}

/// A put of a fresh key through `client`, until it works (bounded).
fn put_until_ok(client: &Client, what: &str) {
    let mut i = 0;
    wait_until(what, Duration::from_secs(20), || {
        i += 1;
        client
            .put(&format!("{what}-{i}"), b"x", &PutOptions::default())
            .is_ok()
    });
}

#[test]
fn a_silent_server_is_an_error_within_the_timeout_not_a_hang() {
    const TIMEOUT_MS: u64 = 1_500;
    // Generous: the timeout, plus a loaded machine's scheduling.
    let bound = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(4);
    let c = TlsCluster::start(1);
    let config = |meta_url: String| ClientConfig {
        meta_url,
        timeout_ms: TIMEOUT_MS,
        transport: Some(DataOpType::Tcp),
        tls: good_tls(&c.pki),
        ..ClientConfig::default()
    };

    // A listener that never accepts: the kernel completes the TCP handshake, nothing answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let e = Client::connect(&config(format!("tcp://{}", silent.local_addr().unwrap())))
        .err()
        .expect("no meta service answers");
    let took = started.elapsed();
    println!("TLS client -> silent listener: {e} after {took:?}");
    assert_eq!(e.code(), Code::NotConnectMeta, "{e}");
    assert!(e.to_string().contains("no answer within"), "{e}");
    assert!(took < bound, "{took:?}");

    // The real meta service, stopped (SIGSTOP): its socket still completes TCP handshakes.
    c.meta.signal("STOP");
    let started = Instant::now();
    let r = Client::connect(&config(format!("tcp://{}", c.meta_addr)));
    let took = started.elapsed();
    c.meta.signal("CONT");
    let e = r.err().expect("a stopped meta service does not answer");
    println!("TLS client -> stopped mmc-meta: {e} after {took:?}");
    assert_eq!(e.code(), Code::NotConnectMeta, "{e}");
    assert!(e.to_string().contains("no answer within"), "{e}");
    assert!(took < bound, "{took:?}");

    // A stopped local service: the meta service places a put there, the data endpoint's TLS
    // handshake gets no answer: -3018 within the timeout.
    let client = Client::connect(&config(format!("tcp://{}", c.meta_addr))).unwrap();
    put_until_ok(&client, "before");
    let fresh = Client::connect(&config(format!("tcp://{}", c.meta_addr))).unwrap();
    c.locals[0].signal("STOP");
    let started = Instant::now();
    let r = fresh.put("silent", &[7u8; 4096], &PutOptions::default());
    let took = started.elapsed();
    c.locals[0].signal("CONT");
    let e = r.expect_err("a stopped local service does not answer");
    println!("TLS client -> stopped mmc-local: {e} after {took:?}");
    assert_eq!(e.code(), Code::NotConnectLocal, "{e}");
    assert!(e.to_string().contains("no answer within"), "{e}");
    assert!(took < bound, "{took:?}");

    // Both services answer again once resumed; the clients work.
    put_until_ok(&client, "after");
    put_until_ok(&fresh, "fresh-after");
    round_trip(&fresh, "back", 1 << 20);
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// GET `path` from the metrics endpoint at `port` over HTTPS with `tls`: the whole answer.
fn https_get(tls: &TlsContext, port: u16, path: &str) -> std::io::Result<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = tls.connect_https(TcpStream::connect(addr)?, addr, Duration::from_secs(5))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    s.flush()?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

#[test]
fn metrics_and_health_are_https_with_mutual_tls() {
    let (meta_port, local_port) = (free_port(), free_port());
    let mut c = TlsCluster::start_with(0, &["--metrics", &format!("127.0.0.1:{meta_port}")]);
    c.add_local_with(&["--metrics", &format!("127.0.0.1:{local_port}")]);
    let good = TlsContext::from_config(&good_tls(&c.pki)).unwrap().unwrap();
    let anon = good.without_client_certificate(&s(&c.pki.ca)).unwrap();
    for (port, proc, what) in [
        (meta_port, &c.meta, "mmc-meta"),
        (local_port, &c.locals[0], "mmc-local"),
    ] {
        proc.logged(&["metrics and health on https://"]);
        let metrics = https_get(&good, port, "/metrics").unwrap();
        assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{what}: {metrics}");
        assert!(metrics.trim_end().ends_with("# EOF"), "{what}: {metrics}");
        let health = https_get(&good, port, "/health").unwrap();
        assert!(health.starts_with("HTTP/1.1 200 OK"), "{what}: {health}");

        // Plain HTTP: refused (no answer), and logged with the peer.
        let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(plain, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert!(answer.is_empty(), "{what} answered plain HTTP");
        proc.logged(&[
            "plaintext peer",
            "peer=Some(127.0.0.1:",
            "channel=\"metrics\"",
        ]);

        // A scraper without a certificate: refused, and logged.
        let e = https_get(&anon, port, "/metrics").expect_err("refused without a certificate");
        println!("{what}: no certificate -> {e}");
        proc.logged(&["no certificates", "channel=\"metrics\""]);
    }
}

#[test]
fn etcd_is_https_with_mutual_tls() {
    // etcd with TLS and client certificates; the meta, local service and client reach it over
    // HTTPS with the cluster's CA, certificate and key.
    let dir = tempfile::tempdir().unwrap();
    let pki = mmc_tls::testpki::write(dir.path()).unwrap();
    let Some(mut ha) = HaCluster::start_tls(1, &pki, good_tls(&pki)) else {
        println!("SKIPPED: no etcd binary (Debian: etcd-server)");
        return;
    };
    let leader = ha.wait_leader(None, Duration::from_secs(30));
    println!("leader elected over HTTPS: meta {leader}");
    ha.add_local("32MB");
    let client = Client::connect(&ha.client_config(10_000)).unwrap();
    round_trip(&client, "through-etcd", 1 << 20);

    // Plain HTTP to etcd's TLS port, and HTTPS without a client certificate: refused.
    let url = mmc_config::parse_etcd_url(&ha.url).unwrap();
    let key = url.leader_key();
    let soon = || Instant::now() + Duration::from_secs(3);
    let plain = mmc_meta_service::etcd::Etcd::new(url.clone());
    let e = plain
        .get(&key, soon())
        .expect_err("plain HTTP to an HTTPS etcd");
    println!("plain HTTP -> etcd: {e}");
    let good = TlsContext::from_config(&good_tls(&pki)).unwrap().unwrap();
    let anon = good.without_client_certificate(&s(&pki.ca)).unwrap();
    let anon = mmc_meta_service::etcd::Etcd::with_tls(url, Some(&anon));
    let e = anon.get(&key, soon()).expect_err("no client certificate");
    println!("HTTPS without a certificate -> etcd: {e}");
    assert!(
        ha.etcd_client.get(&key, soon()).unwrap().is_some(),
        "the leader key over HTTPS"
    );
}

#[test]
fn repairs_between_local_services_run_over_tls() {
    // Best effort: two replicas asked, one service, one stored; a second service joins and the
    // meta service has it copy each object from the first (local <-> local, over TLS).
    let mut c = TlsCluster::start_with(0, &["--replica-policy", "best_effort"]);
    c.add_local();
    let client = Client::connect(&c.config(good_tls(&c.pki), Some(DataOpType::Tcp))).unwrap();
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    let keys: Vec<String> = (0..8).map(|i| format!("rep-{i}")).collect();
    for k in &keys {
        client.put(k, &pattern(k, 256 << 10), &two).unwrap();
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let replicas = || -> Vec<usize> {
        client
            .batch_query(&refs)
            .unwrap()
            .into_iter()
            .map(|r| r.map_or(0, |i| i.replicas.len()))
            .collect()
    };
    assert!(replicas().iter().all(|n| *n == 1), "{:?}", replicas());
    c.add_local();
    let took = wait_until("every object repaired", Duration::from_secs(20), || {
        replicas().iter().all(|n| *n == 2)
    });
    println!("8 objects repaired onto the second service over TLS in {took:?}");
    // The repaired replicas hold the bytes: stop the first service, read everything back.
    let _ = c.locals[0].child.kill();
    let _ = c.locals[0].child.wait();
    wait_until(
        "reads served by the repaired replicas",
        Duration::from_secs(15),
        || client.get(&keys[0]).is_ok(),
    );
    for k in &keys {
        assert!(client.get(k).unwrap() == pattern(k, 256 << 10), "{k}");
    }
    assert!(
        !c.locals[1].log().contains("TLS handshake failed"),
        "no refused handshake on the repair path"
    );
}
