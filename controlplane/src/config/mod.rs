//! Config files (CONTRACT.md "Config files" and "`ock.mmc.*` keys accepted"): the helpers every
//! MemCache binary shares (sizes, URLs, log levels, the `ock.mmc.*` key = value format, TLS
//! settings, format detection and loading) and the meta service's own [`MetaConfig`].
//!
//! Services read TOML; for users arriving from Ascend MemCache the `ock.mmc.*` key = value files
//! are accepted too. A file whose name ends in `.toml` is TOML; otherwise a file whose first
//! non-comment line starts with `ock.` is a key = value file, and anything else is TOML.
//!
//! Every key is declared once, in a key table ([`table`]): [`META_KEYS`] and [`TLS_KEYS`] here,
//! `LOCAL_KEYS` and `CLIENT_KEYS` in the data plane. TOML and key = value parsing, the binaries'
//! flags ([`flags`]), validation and the README's key list are derived from the tables.
//!
//! Every error names the key, the file or the value that is wrong.

mod files;
pub mod flags;
mod meta;
mod ock;
pub mod table;
mod tls;
mod values;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_table;

use std::path::{Path, PathBuf};

pub use files::{config_path, from_toml, load_config, load_text, Format};
pub use meta::{MetaConfig, META_KEYS};
pub use ock::OckFile;
pub use table::Key;
pub use tls::{TlsConfig, TLS_KEYS};
pub use values::{
    check_capacity, check_tcp_url, format_size, parse_bool, parse_int, parse_metrics_url,
    parse_size, parse_tcp_url, url_string, ByteSize, LogLevel,
};

/// Environment variable naming the meta service's config file when no path is given.
pub const META_CONFIG_ENV: &str = "MMC_META_CONFIG_PATH";

/// Size of the C `char[]` arrays for URLs (`discoveryURL`, `metricsURL`, `bmIpPort`, ...),
/// including the terminating NUL.
pub const URL_CAPACITY: usize = 1024;
/// Size of the C `char[]` arrays for TLS paths, including the terminating NUL.
pub const TLS_PATH_CAPACITY: usize = 256;
/// Size of the C `dataOpType` array, including the terminating NUL.
pub const PROTOCOL_CAPACITY: usize = 64;

/// `ock.mmc.meta_service_url`: where the meta service listens (meta) or is found (local, client).
pub const OCK_META_SERVICE_URL: &str = "ock.mmc.meta_service_url";
/// `ock.mmc.log_level`.
pub const OCK_LOG_LEVEL: &str = "ock.mmc.log_level";

/// A config file or value that cannot be used. The message always names the key, the file or
/// the value that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something inside a file is wrong; `inner` says what.
    #[error("config file {}: {inner}", path.display())]
    File {
        path: PathBuf,
        inner: Box<ConfigError>,
    },
    /// A line of a `key = value` file is malformed (line numbers start at 1).
    #[error("line {line}: {reason}: `{text}`")]
    Syntax {
        line: usize,
        reason: &'static str,
        text: String,
    },
    /// The TOML does not parse (toml's message shows the offending line), or has a key no table
    /// knows (the message names it and the closest known key). A known key with a bad value is a
    /// [`ConfigError::KeyValue`].
    #[error("invalid TOML config: {0}")]
    Toml(String),
    /// A value that does not parse, before it is known which key it belongs to (the result of
    /// [`parse_size`], [`parse_tcp_url`], ... called directly).
    #[error("invalid value `{value}`: {reason}")]
    Value { value: String, reason: String },
    /// A key's value that does not parse.
    #[error("invalid value `{value}` for `{key}`: {reason}")]
    KeyValue {
        key: String,
        value: String,
        reason: String,
    },
    /// A setting that parsed but is not usable (found by `validate`).
    #[error("invalid setting `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub(crate) fn value(value: &str, reason: impl Into<String>) -> Self {
        ConfigError::Value {
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Attaches the key a [`ConfigError::Value`] belongs to; other errors are returned unchanged.
    pub fn for_key(self, key: &str) -> Self {
        match self {
            ConfigError::Value { value, reason } => ConfigError::KeyValue {
                key: key.to_string(),
                value,
                reason,
            },
            other => other,
        }
    }

    /// Attaches the file an error was found in (unless it already names a file).
    pub fn in_file(self, path: &Path) -> Self {
        match self {
            e @ (ConfigError::Io { .. } | ConfigError::File { .. }) => e,
            other => ConfigError::File {
                path: path.to_path_buf(),
                inner: Box::new(other),
            },
        }
    }

    pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}
