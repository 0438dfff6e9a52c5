//! Same-host shared memory with TLS on, with real processes: the pools go only to a peer of the
//! same user (`SO_PEERCRED`) that sends the secret of the service's current incarnation, which
//! the meta service hands to authenticated clients; a new incarnation (here: after a meta
//! restart) has a new secret and the old one is refused; refused peers use TCP while TLS clients
//! keep working.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::tls::{flags, good_tls, round_trip, rustix_uid, s, shm_probe, TlsCluster};
use common::{bin, pattern, wait_until};
use mmc_config::{DataOpType, TlsConfig};
use mmc_controlplane::msg::ServiceAddr;
use mmc_dataplane::{Client, PutOptions};

/// `mmc get KEY` run as user `nobody` (65534) with copies of the good certificate and key it can
/// read; None (printed as SKIPPED) when it cannot run here.
fn get_as_nobody(c: &TlsCluster, key: &str) -> Option<Output> {
    let dir = c.dir.path().join("nobody");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = |name: &str, from: &Path| {
        let to = dir.join(name);
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
        s(&to)
    };
    let pki = &c.pki;
    let tls = TlsConfig {
        ca_path: copy("ca.pem", &pki.ca),
        crl_path: copy("crl.pem", &pki.crl),
        cert_path: copy("node.pem", &pki.node_cert),
        key_path: copy("node.key", &pki.node_key_enc),
        key_pass_path: copy("pass", &pki.pass),
        ..good_tls(pki)
    };
    let out = Command::new(bin("mmc"))
        .args(flags(&tls))
        .args(["--meta", &format!("tcp://{}", c.meta_addr), "get", key])
        .uid(65534)
        .gid(65534)
        .output();
    match out {
        Ok(o) if o.status.success() || !o.stderr.is_empty() => Some(o),
        other => {
            println!("SKIPPED: mmc as nobody did not run: {other:?}");
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
        // A real client as another user, which learns the secret from the meta service: refused
        // the pools, it gets the object over TLS/TCP.
        if let Some(out) = get_as_nobody(&c, "k") {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "mmc get as nobody: {err}");
            assert!(out.stdout == pattern("k", 4096), "the object's bytes");
            assert!(
                err.contains("same-host shared memory unavailable: using TCP"),
                "the fallback is logged: {err}"
            );
            println!("mmc get as nobody: fell back to TCP");
        }
    }
    // TLS clients keep working, through shared memory.
    let fresh = Client::connect(&c.config(good_tls(&c.pki), None)).unwrap();
    round_trip(&fresh, "k2", 1 << 20);
    round_trip(&client, "k3", 1 << 20);
    assert_eq!(fresh.mapped_services().len(), 1);
}

/// The path and the secret (hex) of a shm endpoint.
fn split(endpoint: &str) -> (String, String) {
    let (path, secret) = endpoint.rsplit_once('#').expect("PATH#SECRET");
    (path.to_string(), secret.to_string())
}

#[test]
fn each_incarnation_has_its_own_secret_and_an_old_one_is_refused() {
    let mut c = TlsCluster::start(1);
    let client = Client::connect(&c.config(good_tls(&c.pki), None)).unwrap();
    round_trip(&client, "k", 4096);
    assert_eq!(client.mapped_services().len(), 1);
    let before: ServiceAddr = c.services("k")[0].clone();
    let (path, old) = split(&before.shm_endpoint);

    // A peer that sends no secret at all: nothing, and the service says why.
    if let Some(out) = shm_probe(&path, "", None) {
        assert_eq!(out, "nofds");
        c.locals[0].logged(&["shm request refused", "no secret sent"]);
    }

    // A new incarnation: the meta service restarts (SIGKILL), the service rejoins it. (Objects
    // not yet in the service's index are lost with the meta service: look up new ones.)
    c.restart_meta();
    // Probed over TCP: a put there lands only once the service's fence is open at the new
    // incarnation. (A client that asks for the pools while the service is still registering is
    // refused, and uses TCP for that whole incarnation.)
    let prober = Client::connect(&c.config(good_tls(&c.pki), Some(DataOpType::Tcp))).unwrap();
    let (mut after, mut i) = (None, 0);
    let took = wait_until(
        "the local service rejoined under a new incarnation",
        Duration::from_secs(30),
        || {
            i += 1;
            let key = format!("probe-{i}");
            after = prober
                .put(&key, b"x", &PutOptions::default())
                .ok()
                .and_then(|()| c.try_services(&key))
                .map(|s| s[0].clone())
                .filter(|s| s.incarnation != before.incarnation);
            after.is_some()
        },
    );
    let after = after.unwrap();
    println!(
        "incarnation {} -> {} after {took:?}",
        before.incarnation, after.incarnation
    );
    let (path2, new) = split(&after.shm_endpoint);
    assert_eq!(path2, path, "the same socket");
    assert_ne!(new, old, "a new incarnation has a new secret");

    // The old secret is refused; the new one opens the pools.
    if let Some(out) = shm_probe(&path, &old, None) {
        assert_eq!(out, "nofds", "the previous incarnation's secret");
        let line = c.locals[0].logged(&["shm request refused", "wrong secret"]);
        println!("local: {line}");
        let out = shm_probe(&path, &new, None).unwrap();
        assert!(out.starts_with("fds "), "{out}");
    }

    // TLS clients keep working: the old one maps the service again at the new incarnation (with
    // the secret the meta service now hands out), and a new one maps it.
    round_trip(&client, "k-after", 1 << 20);
    assert_eq!(client.mapped_services().len(), 1, "mapped again");
    let fresh = Client::connect(&c.config(good_tls(&c.pki), None)).unwrap();
    round_trip(&fresh, "k-fresh", 1 << 20);
    assert_eq!(fresh.mapped_services().len(), 1);
    let line = c.locals[0].logged(&["pools handed to a same-host client"]);
    println!("local: {line}");
}
