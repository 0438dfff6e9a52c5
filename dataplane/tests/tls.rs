//! Mutual TLS on every channel and authenticated shared memory, with real processes and
//! certificates made here (`mmc_tls::testpki`): a good client works end to end (Rust client over
//! TCP and shared memory, the `mmc` CLI); plaintext peers, certificates from another CA, revoked
//! or expired ones, and wrong key passwords are refused and logged; an encrypted key and a
//! decrypter library built here work; shared memory refuses another user and a process without
//! the secret while TLS clients keep working.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, pattern, wait_file, wait_until};
use mmc_config::{DataOpType, TlsConfig};
use mmc_controlplane::msg::{Reply, Request, ServiceAddr};
use mmc_dataplane::{Client, ClientConfig, Code, PutOptions};
use mmc_meta_service::rpc::MetaConn;
use mmc_tls::testpki::{self, Pki};
use mmc_tls::TlsContext;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The good node identity: encrypted key and its password.
fn good_tls(pki: &Pki) -> TlsConfig {
    TlsConfig {
        enable: true,
        ca_path: s(&pki.ca),
        crl_path: s(&pki.crl),
        cert_path: s(&pki.node_cert),
        key_path: s(&pki.node_key_enc),
        key_pass_path: s(&pki.pass),
        ..TlsConfig::default()
    }
}

fn tls_with(pki: &Pki, cert: &Path, key: &Path) -> TlsConfig {
    TlsConfig {
        cert_path: s(cert),
        key_path: s(key),
        key_pass_path: String::new(),
        ..good_tls(pki)
    }
}

/// The `--tls*` flags for `tls`.
fn flags(tls: &TlsConfig) -> Vec<String> {
    let mut f = vec!["--tls".to_string()];
    for (flag, v) in [
        ("--tls-ca", &tls.ca_path),
        ("--tls-crl", &tls.crl_path),
        ("--tls-cert", &tls.cert_path),
        ("--tls-key", &tls.key_path),
        ("--tls-key-pass", &tls.key_pass_path),
        ("--tls-decrypter", &tls.decrypter_lib_path),
    ] {
        if !v.is_empty() {
            f.push(flag.to_string());
            f.push(v.clone());
        }
    }
    f
}

/// One process whose log (standard error) goes to a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait (bounded) until the log holds a line with every one of `parts`; returns that line.
    fn logged(&self, parts: &[&str]) -> String {
        let mut found = String::new();
        wait_until(
            &format!("a log line with {parts:?}"),
            Duration::from_secs(10),
            || {
                let log = self.log();
                match log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                    Some(l) => {
                        found = l.to_string();
                        true
                    }
                    None => false,
                }
            },
        );
        found
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TlsCluster {
    dir: tempfile::TempDir,
    pki: Pki,
    meta: Proc,
    meta_addr: String,
    locals: Vec<Proc>,
}

fn start(
    dir: &Path,
    name: &str,
    program: &str,
    args: &[String],
    envs: &[(&str, &Path)],
) -> (Proc, String) {
    let addr_file = dir.join(format!("{name}.addr"));
    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(bin(program));
    cmd.args(args)
        .arg("--addr-file")
        .arg(&addr_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let addr = wait_file(&addr_file, &mut child, name);
    (Proc { child, log }, addr)
}

impl TlsCluster {
    /// A TLS meta service (flags) and `locals` TLS local services: the first configured by a TOML
    /// `[tls]` table, the others by an `ock.mmc.tls.*` file. Each local service's runtime folder
    /// (its shm socket) is `DIR/runN`.
    fn start(locals: usize) -> TlsCluster {
        let dir = tempfile::tempdir().unwrap();
        let pki = testpki::write(&dir.path().join("pki")).unwrap();
        let tls = good_tls(&pki);
        let mut args: Vec<String> = ["--listen", "tcp://127.0.0.1:0", "--log-level", "info"]
            .map(String::from)
            .into();
        args.extend(flags(&tls));
        let (meta, meta_addr) = start(dir.path(), "meta", "mmc-meta", &args, &[]);
        let mut c = TlsCluster {
            dir,
            pki,
            meta,
            meta_addr,
            locals: Vec::new(),
        };
        for _ in 0..locals {
            c.add_local();
        }
        c
    }

    fn add_local(&mut self) {
        self.add_local_with(&[]);
    }

    /// [`TlsCluster::add_local`] with extra `mmc-local` flags.
    fn add_local_with(&mut self, extra: &[&str]) {
        let n = self.locals.len();
        let tls = good_tls(&self.pki);
        let config = self.dir.path().join(format!("local{n}.conf"));
        let text = if n == 0 {
            format!(
                "[tls]\nenable = true\nca_path = \"{}\"\ncrl_path = \"{}\"\ncert_path = \"{}\"\nkey_path = \"{}\"\nkey_pass_path = \"{}\"\n",
                tls.ca_path, tls.crl_path, tls.cert_path, tls.key_path, tls.key_pass_path
            )
        } else {
            format!(
                "ock.mmc.tls.enable = true\nock.mmc.tls.ca.path = {}\nock.mmc.tls.crl.path = {}\nock.mmc.tls.cert.path = {}\nock.mmc.tls.key.path = {}\nock.mmc.tls.key.pass.path = {}\n",
                tls.ca_path, tls.crl_path, tls.cert_path, tls.key_path, tls.key_pass_path
            )
        };
        let config = config.with_extension(if n == 0 { "toml" } else { "conf" });
        std::fs::write(&config, text).unwrap();
        let run = self.dir.path().join(format!("run{n}"));
        std::fs::create_dir_all(&run).unwrap();
        let args: Vec<String> = [
            "--config",
            &s(&config),
            "--meta",
            &format!("tcp://{}", self.meta_addr),
            "--listen",
            "tcp://127.0.0.1:0",
            "--dram",
            "64MB",
            "--create-id",
            &n.to_string(),
            "--log-level",
            "debug",
        ]
        .map(String::from)
        .into_iter()
        .chain(extra.iter().map(|a| a.to_string()))
        .collect();
        let (p, _) = start(
            self.dir.path(),
            &format!("local{n}"),
            "mmc-local",
            &args,
            &[("XDG_RUNTIME_DIR", &run)],
        );
        self.locals.push(p);
    }

    fn config(&self, tls: TlsConfig, transport: Option<DataOpType>) -> ClientConfig {
        ClientConfig {
            meta_url: format!("tcp://{}", self.meta_addr),
            timeout_ms: 10_000,
            transport,
            tls,
            ..ClientConfig::default()
        }
    }

    /// The local services' addresses, as the meta service gives them to an authenticated client
    /// (in a lookup of `key`, which must exist; its read lease is given back).
    fn services(&self, key: &str) -> Vec<ServiceAddr> {
        let ctx = TlsContext::from_config(&good_tls(&self.pki)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = self.meta_addr.parse().unwrap();
        let mut conn = MetaConn::connect_with(addr, ctx.as_ref(), deadline).unwrap();
        let keys = vec![key.to_string()];
        let Ok(Reply::Lookup {
            items, services, ..
        }) = conn.call(&Request::Lookup { keys }, deadline)
        else {
            panic!("lookup of {key} failed");
        };
        let leases = items.iter().map(|i| i.lease).collect();
        conn.send_oneway(&Request::Release { leases }, deadline)
            .unwrap();
        services
    }
}

fn round_trip(client: &Client, key: &str, len: usize) {
    let data = pattern(key, len);
    client
        .put(key, &data, &PutOptions::default())
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
    let mut back = vec![0u8; len];
    client
        .get_into(key, &mut back)
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    assert!(back == data, "{key}: bytes differ");
}

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

/// A same-host process asking for the pools: from `python3` (optionally as another user), with
/// `secret` (hex) sent first. Returns what it saw: `fds N`, `nofds`, or an error.
fn shm_probe(path: &str, secret: &str, uid: Option<u32>) -> Option<String> {
    let script = "import socket,sys\n\
        s=socket.socket(socket.AF_UNIX); s.settimeout(3)\n\
        try:\n  s.connect(sys.argv[1])\nexcept OSError as e:\n  print('connect-refused', e); sys.exit(0)\n\
        try:\n  s.sendall(bytes.fromhex(sys.argv[2]))\nexcept OSError as e:\n  print('send-refused', e); sys.exit(0)\n\
        try:\n  m,anc,f,a=s.recvmsg(4096, socket.CMSG_SPACE(64*4))\nexcept OSError as e:\n  print('recv-error', e); sys.exit(0)\n\
        n=sum(len(d)//4 for (l,t,d) in anc)\n\
        print(('fds %d' % n) if n else 'nofds')\n";
    // As another user, the system interpreter (a per-user one, e.g. pyenv's, may be unreadable).
    let python = match uid {
        Some(_) if Path::new("/usr/bin/python3").exists() => "/usr/bin/python3",
        _ => "python3",
    };
    let mut cmd = Command::new(python);
    cmd.args(["-c", script, path, secret]);
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid);
    }
    match cmd.output() {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        other => {
            println!("SKIPPED: python3 probe did not run: {other:?}");
            None
        }
    }
}

#[test]
fn shared_memory_needs_the_same_user_and_the_secret() {
    let c = TlsCluster::start(1);
    let client = Client::connect(&c.config(good_tls(&c.pki), None)).unwrap();
    round_trip(&client, "k", 4096);
    assert_eq!(client.mapped_services().len(), 1);
    let endpoint = c.services("k")[0].shm_endpoint.clone();
    let (path, secret) = endpoint.rsplit_once('#').expect("PATH#SECRET");
    assert!(
        path.starts_with(&s(c.dir.path())),
        "the socket is in XDG_RUNTIME_DIR: {path}"
    );
    let meta = std::fs::metadata(path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // The right secret, same user: the pools (and the fence page).
    if let Some(out) = shm_probe(path, secret, None) {
        assert!(out.starts_with("fds "), "{out}");
        // No secret, or a wrong one: nothing, and the service says why.
        let wrong = "00".repeat(32);
        assert_eq!(shm_probe(path, &wrong, None).unwrap(), "nofds");
        c.locals[0].logged(&["shm request refused", "wrong secret"]);
    }

    // Another user, with the secret: refused by SO_PEERCRED (the folder and socket opened up for
    // the test, so the check itself is what refuses).
    let root = rustix_uid() == 0;
    if !root {
        println!("SKIPPED: another-user probe needs root (to run it as nobody)");
    } else {
        for p in [
            c.dir.path().to_path_buf(),
            Path::new(path)
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .to_path_buf(),
            Path::new(path).parent().unwrap().to_path_buf(),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        if let Some(out) = shm_probe(path, secret, Some(65534)) {
            assert!(!out.starts_with("fds"), "another user got the pools: {out}");
            println!("another user: {out}");
            let line =
                c.locals[0].logged(&["shm request refused", "another user", "peer_uid=65534"]);
            println!("local: {line}");
        }
    }
    // TLS clients keep working, through shared memory.
    let fresh = Client::connect(&c.config(good_tls(&c.pki), None)).unwrap();
    round_trip(&fresh, "k2", 1 << 20);
    round_trip(&client, "k3", 1 << 20);
    assert_eq!(fresh.mapped_services().len(), 1);
}

fn rustix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        })
        .unwrap_or(u32::MAX)
}
