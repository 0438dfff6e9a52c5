//! TLS settings (the C `mmc_tls_config`): a `[tls]` table in TOML, `ock.mmc.tls.*` in key = value
//! files.

use super::table::{self, as_table, Bool, Flag, Key, Path, TomlApplier};
use super::{ConfigError, OckFile};
use crate::{config_key, config_struct};

/// The TLS keys (TOML names inside `[tls]`).
pub static TLS_KEYS: &[Key<TlsConfig>] = &[
    config_key!(TlsConfig {
        name: "enable",
        ock: "ock.mmc.tls.enable",
        flag: Flag::Switch("tls", "true"),
        kind: Bool,
        field: enable,
        default: "false",
        doc: "Mutual TLS 1.3 on every TCP channel (meta, data, repairs, metrics; etcd over HTTPS); same-host shared memory then also needs the secret only authenticated peers learn.",
    }),
    config_key!(TlsConfig {
        name: "ca_path",
        ock: "ock.mmc.tls.ca.path",
        flag: Flag::Value("tls-ca"),
        kind: Path,
        field: ca_path,
        default: "",
        doc: "PEM file of the CA: the only one trusted; both sides must present a certificate it signed (required with TLS).",
    }),
    config_key!(TlsConfig {
        name: "crl_path",
        ock: "ock.mmc.tls.crl.path",
        flag: Flag::Value("tls-crl"),
        kind: Path,
        field: crl_path,
        default: "",
        doc: "PEM file of revocation lists (X509 CRL) checked against every peer; empty = no revocation check.",
    }),
    config_key!(TlsConfig {
        name: "cert_path",
        ock: "ock.mmc.tls.cert.path",
        flag: Flag::Value("tls-cert"),
        kind: Path,
        field: cert_path,
        default: "",
        doc: "PEM file of this side's certificate chain (required with TLS).",
    }),
    config_key!(TlsConfig {
        name: "key_path",
        ock: "ock.mmc.tls.key.path",
        flag: Flag::Value("tls-key"),
        kind: Path,
        field: key_path,
        default: "",
        doc: "PEM file of this side's private key: PKCS#8, SEC1 or PKCS#1; or an encrypted PKCS#8 key (`ENCRYPTED PRIVATE KEY`) with `key_pass_path` (required with TLS).",
    }),
    config_key!(TlsConfig {
        name: "key_pass_path",
        ock: "ock.mmc.tls.key.pass.path",
        flag: Flag::Value("tls-key-pass"),
        kind: Path,
        field: key_pass_path,
        default: "",
        doc: "File holding the encrypted key's password (one trailing newline ignored); with `decrypter_lib_path`, its contents are what the library decrypts.",
    }),
    config_key!(TlsConfig {
        name: "package_path",
        ock: "ock.mmc.tls.package.path",
        kind: Path,
        field: package_path,
        default: "",
        doc: "Accepted for compatibility (an OpenSSL library in Ascend MemCache) and unused: TLS is built in (rustls).",
    }),
    config_key!(TlsConfig {
        name: "decrypter_lib_path",
        aliases: ["decrypter_path"],
        ock: "ock.mmc.tls.decrypter.path",
        flag: Flag::Value("tls-decrypter"),
        kind: Path,
        field: decrypter_lib_path,
        default: "",
        doc: "Shared library loaded at start-up whose `mmc_tls_decrypt` turns the contents of `key_pass_path` into the password (see Security).",
    }),
];

config_struct! {
    keys: TLS_KEYS;
    /// TLS settings (the C `mmc_tls_config`); the keys are [`TLS_KEYS`].
    #[derive(Clone, Debug, PartialEq)]
    pub struct TlsConfig {
        pub enable: bool,
        pub ca_path: String,
        pub crl_path: String,
        pub cert_path: String,
        pub key_path: String,
        pub key_pass_path: String,
        pub package_path: String,
        pub decrypter_lib_path: String,
    }
}

impl TlsConfig {
    /// The TLS settings of a key = value file (defaults for keys not set).
    pub fn from_ock(ock: &OckFile) -> Result<TlsConfig, ConfigError> {
        let mut tls = TlsConfig::default();
        tls.apply_ock(ock)?;
        Ok(tls)
    }

    /// Overrides the fields whose `ock.mmc.tls.*` key is set.
    pub fn apply_ock(&mut self, ock: &OckFile) -> Result<(), ConfigError> {
        table::apply_ock(TLS_KEYS, ock, self)
    }

    /// Overrides the fields that TOML table `value` (found at `path`, e.g. `"local.tls"`) sets;
    /// an unknown key is an error naming it and the closest known one.
    pub fn apply_toml(&mut self, path: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let mut a = TomlApplier::new(TLS_KEYS, path);
        for (name, v) in as_table(path, value)? {
            if !a.apply(name, v, self)? {
                return Err(table::unknown_toml_key(
                    name,
                    path,
                    table::toml_names(TLS_KEYS),
                ));
            }
        }
        Ok(())
    }

    /// Whether `key` is one of the `ock.mmc.tls.*` keys.
    pub fn is_ock_key(key: &str) -> bool {
        table::ock_names(TLS_KEYS).any(|k| k == key)
    }

    /// Paths fit the C arrays; with TLS enabled, the CA, certificate and key paths are set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        table::validate(TLS_KEYS, self, "tls.")?;
        if self.enable {
            let required = [
                ("tls.ca_path", &self.ca_path),
                ("tls.cert_path", &self.cert_path),
                ("tls.key_path", &self.key_path),
            ];
            for (key, value) in required {
                if value.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: key.to_string(),
                        reason: "must be set when TLS is enabled".to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}
