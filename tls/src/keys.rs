//! Reading the PEM files: certificate chain, private key (plain or encrypted PKCS#8), CA, CRLs.

use std::path::Path;

use pkcs8::der::Decode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use rustls::RootCertStore;
use zeroize::Zeroizing;

use crate::{decrypt, TlsError};
use mmc_config::TlsConfig;

const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

fn read(what: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(Path::new(path)).map_err(|e| TlsError::Read {
        what,
        path: path.to_string(),
        reason: e.to_string(),
    })
}

fn bad(what: &'static str, path: &str, reason: impl ToString) -> TlsError {
    TlsError::Bad {
        what,
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// Every certificate of a PEM file, in order (this side's first, then its intermediates).
pub(crate) fn cert_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read("certificate", path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", path, e))?;
    if chain.is_empty() {
        return Err(bad("certificate", path, "no CERTIFICATE in the file"));
    }
    Ok(chain)
}

/// The trust anchors: every certificate of the CA file.
pub(crate) fn roots(path: &str) -> Result<RootCertStore, TlsError> {
    let pem = read("CA certificate", path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad("CA certificate", path, e))?;
        roots
            .add(cert)
            .map_err(|e| bad("CA certificate", path, e))?;
    }
    if roots.is_empty() {
        return Err(bad("CA certificate", path, "no CERTIFICATE in the file"));
    }
    Ok(roots)
}

/// The revocation lists of `path` (none when it is empty).
pub(crate) fn crls(path: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let pem = read("CRL", path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("CRL", path, e))?;
    if crls.is_empty() {
        return Err(bad("CRL", path, "no X509 CRL in the file"));
    }
    Ok(crls)
}

/// This side's private key. An `ENCRYPTED PRIVATE KEY` (PKCS#8, PBES2) is decrypted with the
/// password: the contents of `key_pass_path` (one trailing newline dropped), first turned into
/// the real password by the `decrypter_lib_path` library when one is set.
pub(crate) fn private_key(tls: &TlsConfig) -> Result<PrivateKeyDer<'static>, TlsError> {
    let path = tls.key_path.as_str();
    let pem = Zeroizing::new(read("private key", path)?);
    let encrypted = std::str::from_utf8(&pem)
        .map(|s| s.contains(&format!("-----BEGIN {ENCRYPTED_LABEL}-----")))
        .unwrap_or(false);
    if !encrypted {
        return PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad("private key", path, e));
    }
    if tls.key_pass_path.is_empty() {
        return Err(bad(
            "private key",
            path,
            "the key is encrypted and tls.key_pass_path is not set",
        ));
    }
    let password = password(tls)?;
    let (label, der) = pkcs8::der::pem::decode_vec(&pem)
        .map_err(|e| bad("private key", path, format!("PEM: {e}")))?;
    let der = Zeroizing::new(der);
    if label != ENCRYPTED_LABEL {
        return Err(bad(
            "private key",
            path,
            format!("unexpected PEM label {label}"),
        ));
    }
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der)
        .map_err(|e| bad("private key", path, format!("encrypted PKCS#8: {e}")))?;
    let plain = info.decrypt(password.as_slice()).map_err(|e| {
        bad(
            "private key",
            path,
            format!(
                "cannot decrypt it with the password of tls.key_pass_path (wrong password?): {e}"
            ),
        )
    })?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        plain.as_bytes().to_vec(),
    )))
}

/// The key's password: the file's bytes, without one trailing newline, through the decrypter
/// library when one is set.
fn password(tls: &TlsConfig) -> Result<Zeroizing<Vec<u8>>, TlsError> {
    let mut stored = Zeroizing::new(read("key password", &tls.key_pass_path)?);
    if stored.last() == Some(&b'\n') {
        stored.pop();
        if stored.last() == Some(&b'\r') {
            stored.pop();
        }
    }
    if tls.decrypter_lib_path.is_empty() {
        return Ok(stored);
    }
    decrypt::decrypt(&tls.decrypter_lib_path, &stored)
}
