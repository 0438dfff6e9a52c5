//! Same-host shared memory with TLS on, with real processes: the pools go only to a peer of the
//! same user (`SO_PEERCRED`) that sends the service's secret, which the meta service hands to
//! authenticated clients; refused peers use TCP while TLS clients keep working.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};

use common::tls::{flags, good_tls, round_trip, rustix_uid, s, shm_probe, TlsCluster};
use common::{bin, pattern};
use mmc_config::TlsConfig;
use mmc_dataplane::Client;

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

