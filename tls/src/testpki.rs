//! Certificates for tests (feature `testpki`; the `mmc-testpki` tool writes them for the C and
//! Python tests): a CA, a good node certificate for 127.0.0.1 (used by every process of a test
//! cluster), the same key encrypted with a password, and the bad cases: a certificate from
//! another CA, a revoked one (with the CRL that revokes it), an expired one.

use std::path::{Path, PathBuf};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};

/// The password of `node-enc.key`.
pub const PASSWORD: &str = "mmc-test-pass";

/// Paths of the files [`write`] makes (all PEM; keys unencrypted unless said).
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    /// Revokes `revoked.pem` (serial 3) and nothing else.
    pub crl: PathBuf,
    pub node_cert: PathBuf,
    pub node_key: PathBuf,
    /// `node_key`, encrypted (PKCS#8, PBES2: PBKDF2-SHA256, AES-256-CBC) with [`PASSWORD`].
    pub node_key_enc: PathBuf,
    /// Holds [`PASSWORD`] and a newline.
    pub pass: PathBuf,
    /// Holds another password.
    pub wrong_pass: PathBuf,
    /// Holds [`PASSWORD`] reversed: what a decrypter that reverses its input turns into it.
    pub pass_reversed: PathBuf,
    pub other_ca: PathBuf,
    /// Signed by `other_ca`.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
    pub revoked_cert: PathBuf,
    pub revoked_key: PathBuf,
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn ca(name: &str) -> Result<(rcgen::Certificate, KeyPair), BoxError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2099, 1, 1);
    let key = KeyPair::generate()?;
    let cert = p.self_signed(&key)?;
    Ok((cert, key))
}

fn leaf(
    name: &str,
    serial: u64,
    validity: (i32, i32),
    issuer: &(rcgen::Certificate, KeyPair),
) -> Result<(String, String), BoxError> {
    let mut p = CertificateParams::new(vec!["localhost".to_string()])?;
    p.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.serial_number = Some(SerialNumber::from(serial));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = date_time_ymd(validity.0, 1, 1);
    p.not_after = date_time_ymd(validity.1, 1, 1);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer.0, &issuer.1)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn encrypt(key_pem: &str, password: &str) -> Result<String, BoxError> {
    use pkcs8::der::Decode;
    use rand::RngCore;
    let (_, der) = pkcs8::der::pem::decode_vec(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let info = pkcs8::PrivateKeyInfo::from_der(&der).map_err(|e| e.to_string())?;
    let (mut salt, mut iv) = ([0u8; 16], [0u8; 16]);
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let params = pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &salt, &iv)
        .map_err(|e| e.to_string())?;
    let doc = info
        .encrypt_with_params(params, password)
        .map_err(|e| e.to_string())?;
    Ok(doc
        .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
        .map_err(|e| e.to_string())?
        .to_string())
}

/// Write a fresh test PKI into `dir` (created if missing).
pub fn write(dir: &Path) -> Result<Pki, BoxError> {
    std::fs::create_dir_all(dir)?;
    let f = |name: &str| dir.join(name);
    let pki = Pki {
        dir: dir.to_path_buf(),
        ca: f("ca.pem"),
        crl: f("crl.pem"),
        node_cert: f("node.pem"),
        node_key: f("node.key"),
        node_key_enc: f("node-enc.key"),
        pass: f("pass.txt"),
        wrong_pass: f("wrong-pass.txt"),
        pass_reversed: f("pass-reversed.txt"),
        other_ca: f("other-ca.pem"),
        rogue_cert: f("rogue.pem"),
        rogue_key: f("rogue.key"),
        revoked_cert: f("revoked.pem"),
        revoked_key: f("revoked.key"),
        expired_cert: f("expired.pem"),
        expired_key: f("expired.key"),
    };
    let ca = ca("mmc test CA")?;
    let other = ca_other()?;
    std::fs::write(&pki.ca, ca.0.pem())?;
    std::fs::write(&pki.other_ca, other.0.pem())?;
    let (cert, key) = leaf("mmc node", 2, (2020, 2099), &ca)?;
    std::fs::write(&pki.node_cert, cert)?;
    std::fs::write(&pki.node_key_enc, encrypt(&key, PASSWORD)?)?;
    std::fs::write(&pki.node_key, key)?;
    std::fs::write(&pki.pass, format!("{PASSWORD}\n"))?;
    std::fs::write(&pki.wrong_pass, "not-the-password\n")?;
    std::fs::write(
        &pki.pass_reversed,
        PASSWORD.chars().rev().collect::<String>(),
    )?;
    let (cert, key) = leaf("mmc revoked", 3, (2020, 2099), &ca)?;
    std::fs::write(&pki.revoked_cert, cert)?;
    std::fs::write(&pki.revoked_key, key)?;
    let (cert, key) = leaf("mmc expired", 4, (2020, 2021), &ca)?;
    std::fs::write(&pki.expired_cert, cert)?;
    std::fs::write(&pki.expired_key, key)?;
    let (cert, key) = leaf("mmc rogue", 2, (2020, 2099), &other)?;
    std::fs::write(&pki.rogue_cert, cert)?;
    std::fs::write(&pki.rogue_key, key)?;
    let crl = CertificateRevocationListParams {
        this_update: date_time_ymd(2024, 1, 1),
        next_update: date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(3u64),
            revocation_time: date_time_ymd(2024, 1, 1),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.0, &ca.1)?;
    std::fs::write(&pki.crl, crl.pem()?)?;
    Ok(pki)
}

fn ca_other() -> Result<(rcgen::Certificate, KeyPair), BoxError> {
    ca("another CA")
}
