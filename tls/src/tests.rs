//! Handshakes over loopback with certificates made here: who is accepted and who is refused.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::testpki::{self, Pki};

fn pki() -> (tempfile::TempDir, Pki) {
    let dir = tempfile::tempdir().unwrap();
    let pki = testpki::write(dir.path()).unwrap();
    (dir, pki)
}

fn config(pki: &Pki, cert: &Path, key: &Path) -> TlsConfig {
    TlsConfig {
        enable: true,
        ca_path: pki.ca.display().to_string(),
        crl_path: pki.crl.display().to_string(),
        cert_path: cert.display().to_string(),
        key_path: key.display().to_string(),
        ..TlsConfig::default()
    }
}

use std::path::Path;

fn ctx(c: &TlsConfig) -> Arc<TlsContext> {
    TlsContext::from_config(c).unwrap().unwrap()
}

/// Serve one connection with `server`: echo one 5-byte message. Returns the accept's outcome.
fn serve_once(
    server: Arc<TlsContext>,
) -> (
    std::net::SocketAddr,
    std::thread::JoinHandle<Result<(), String>>,
) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (tcp, _) = l.accept().unwrap();
        let mut s = server.accept(tcp).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        s.write_all(&buf).map_err(|e| e.to_string())?;
        s.flush().map_err(|e| e.to_string())?;
        Ok(())
    });
    (addr, t)
}

fn talk(client: &TlsContext, addr: std::net::SocketAddr) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).unwrap();
    let mut s = client
        .connect(tcp, addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.write_all(b"hello").map_err(|e| e.to_string())?;
    let mut back = [0u8; 5];
    s.read_exact(&mut back).map_err(|e| e.to_string())?;
    assert_eq!(&back, b"hello");
    Ok(())
}

#[test]
fn good_peers_talk_and_bad_ones_are_refused() {
    let (_d, pki) = pki();
    let good = ctx(&config(&pki, &pki.node_cert, &pki.node_key));
    let (addr, t) = serve_once(good.clone());
    talk(&good, addr).unwrap();
    t.join().unwrap().unwrap();

    // Each bad client: the server refuses its handshake (TLS 1.3: the client may learn only on
    // its first read).
    let bad_clients = [
        ("another CA", &pki.rogue_cert, &pki.rogue_key),
        ("revoked", &pki.revoked_cert, &pki.revoked_key),
        ("expired", &pki.expired_cert, &pki.expired_key),
    ];
    for (what, cert, key) in bad_clients {
        let mut c = config(&pki, cert, key);
        if what == "another CA" {
            c.ca_path = pki.other_ca.display().to_string();
            c.crl_path.clear();
        }
        let bad = ctx(&c);
        let (addr, t) = serve_once(good.clone());
        assert!(talk(&bad, addr).is_err(), "{what}: client must fail");
        let refused = t.join().unwrap().unwrap_err();
        assert!(refused.contains("handshake"), "{what}: {refused}");
        println!("{what}: server said {refused}");
    }

    // A server with a bad certificate is refused by a good client.
    for (what, cert, key) in [
        ("revoked", &pki.revoked_cert, &pki.revoked_key),
        ("expired", &pki.expired_cert, &pki.expired_key),
    ] {
        let bad = ctx(&config(&pki, cert, key));
        let (addr, t) = serve_once(bad);
        let e = talk(&good, addr).unwrap_err();
        println!("server {what}: client said {e}");
        assert!(t.join().unwrap().is_err());
    }
}

#[test]
fn a_client_without_a_certificate_is_refused() {
    let (_d, pki) = pki();
    let good = ctx(&config(&pki, &pki.node_cert, &pki.node_key));
    let (addr, t) = serve_once(good.clone());
    let anon = good
        .without_client_certificate(&pki.ca.display().to_string())
        .unwrap();
    assert!(talk(&anon, addr).is_err());
    let e = t.join().unwrap().unwrap_err();
    assert!(e.contains("certificate"), "{e}");
}

#[test]
fn plaintext_is_refused_both_ways_and_fast() {
    let (_d, pki) = pki();
    let good = ctx(&config(&pki, &pki.node_cert, &pki.node_key));
    // A plaintext client to a TLS server.
    let (addr, t) = serve_once(good.clone());
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.write_all(&[0u8; 32]).unwrap();
    let e = t.join().unwrap().unwrap_err();
    assert!(e.contains("plaintext"), "{e}");
    // A TLS client to a server that never answers a handshake (a plaintext server waiting for
    // a whole frame): the handshake times out with a reason, well before the caller's deadline.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    let _held = l.accept().unwrap();
    let start = Instant::now();
    let e = good
        .connect(tcp, addr, Duration::from_millis(300))
        .err()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(e.to_string().contains("without TLS"), "{e}");
    // ... and one that closes on it.
    let tcp = TcpStream::connect(addr).unwrap();
    drop(l.accept().unwrap());
    let e = good
        .connect(tcp, addr, Duration::from_secs(2))
        .err()
        .unwrap();
    assert!(e.to_string().contains("handshake"), "{e}");
}

#[test]
fn encrypted_keys_need_the_right_password() {
    let (_d, pki) = pki();
    let mut c = config(&pki, &pki.node_cert, &pki.node_key_enc);
    let e = TlsContext::from_config(&c).unwrap_err();
    assert!(e.to_string().contains("key_pass_path"), "{e}");
    c.key_pass_path = pki.wrong_pass.display().to_string();
    let e = TlsContext::from_config(&c).unwrap_err();
    assert!(e.to_string().contains("wrong password"), "{e}");
    c.key_pass_path = pki.pass.display().to_string();
    let good = ctx(&c);
    let (addr, t) = serve_once(good.clone());
    talk(&good, addr).unwrap();
    t.join().unwrap().unwrap();
}

/// Build the decrypter the README documents (it reverses its input) with gcc.
pub(crate) fn build_decrypter(dir: &Path) -> Option<std::path::PathBuf> {
    let src = dir.join("rev.c");
    std::fs::write(
        &src,
        r#"#include <stddef.h>
int mmc_tls_decrypt(const char *cipher, size_t cipher_len, char *plain, size_t *plain_len) {
    if (cipher_len > *plain_len) return -1;
    for (size_t i = 0; i < cipher_len; i++) plain[i] = cipher[cipher_len - 1 - i];
    *plain_len = cipher_len;
    return 0;
}
"#,
    )
    .unwrap();
    let so = dir.join("librev.so");
    let built = std::process::Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status();
    match built {
        Ok(s) if s.success() => Some(so),
        other => {
            println!("SKIPPED: gcc could not build the decrypter: {other:?}");
            None
        }
    }
}

#[test]
fn a_decrypter_library_turns_the_stored_password_into_the_real_one() {
    let (d, pki) = pki();
    let Some(so) = build_decrypter(d.path()) else {
        return;
    };
    let mut c = config(&pki, &pki.node_cert, &pki.node_key_enc);
    c.key_pass_path = pki.pass_reversed.display().to_string();
    c.decrypter_lib_path = so.display().to_string();
    let good = ctx(&c);
    let (addr, t) = serve_once(good.clone());
    talk(&good, addr).unwrap();
    t.join().unwrap().unwrap();
    // The stored password itself (not reversed) does not open the key through the library.
    c.key_pass_path = pki.pass.display().to_string();
    assert!(TlsContext::from_config(&c).is_err());
    // A library without the function is named in the error.
    c.decrypter_lib_path = "libc.so.6".into();
    let e = TlsContext::from_config(&c).unwrap_err();
    assert!(e.to_string().contains(DECRYPT_SYMBOL), "{e}");
}

#[test]
fn tls_off_is_none_and_bad_paths_are_named() {
    assert!(TlsContext::from_config(&TlsConfig::default())
        .unwrap()
        .is_none());
    let (_d, pki) = pki();
    let mut c = config(&pki, &pki.node_cert, &pki.node_key);
    c.ca_path = "/nonexistent/ca.pem".into();
    let e = TlsContext::from_config(&c).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}
