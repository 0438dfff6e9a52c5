//! MemCache configuration (CONTRACT.md "Config files" and "`ock.mmc.*` keys accepted"): every
//! binary's settings and the helpers they share (sizes, URLs, log levels, the `ock.mmc.*` key =
//! value format, TLS settings, format detection and loading), the meta service's [`MetaConfig`],
//! the local service's [`LocalConfig`] and the client's [`ClientConfig`]; plus the start-up
//! chores every binary shares: [`logging`] and [`fsutil`]. It knows nothing of the wire protocol.
//!
//! Services read TOML; for users arriving from Ascend MemCache the `ock.mmc.*` key = value files
//! are accepted too. A file whose name ends in `.toml` is TOML; otherwise a file whose first
//! non-comment line starts with `ock.` is a key = value file, and anything else is TOML.
//!
//! Every key is declared once, in a key table ([`table`]): [`META_KEYS`], [`TLS_KEYS`],
//! [`LOCAL_KEYS`] and [`CLIENT_KEYS`]. TOML and key = value parsing, the binaries' flags
//! ([`flags`]), validation and the README's key list ([`keys_markdown`]) are derived from the
//! tables.
//!
//! Every error names the key, the file or the value that is wrong.
#![forbid(unsafe_code)]

pub mod discovery;
mod files;
pub mod flags;
pub mod fsutil;
mod local_client;
pub mod logging;
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

pub use discovery::{is_etcd_url, parse_etcd_url, parse_meta_url, EtcdUrl, MetaUrl};
pub use files::{config_path, from_toml, load_config, load_text, Format};
pub use local_client::{
    client_and_local_from_text, is_local_or_client_ock_key, load_client_and_local,
    local_and_client_ock_keys, ClientConfig, DataOpType, DataPoller, LocalConfig, OptProtocol,
    Poller, Protocol, RdmaCallerMemory, RdmaProvider, CLIENT_KEYS, DEFAULT_CLIENT_TIMEOUT_MS,
    LOCAL_CONFIG_ENV, LOCAL_KEYS,
};
pub use meta::{MetaConfig, ReplicaPolicy, META_KEYS};
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

/// The README's key list, generated from the tables (`config/tests/readme_configs.rs` checks
/// that the README holds exactly this).
pub fn keys_markdown() -> String {
    use table::MARKDOWN_HEADER;
    let sections = [
        (
            "Meta service: top level of `meta.toml`, `mmc-meta.conf`, `mmc-meta` flags.",
            table::markdown_rows(META_KEYS, ""),
        ),
        (
            "Local service: top level or `[local]` of `local.toml`, `mmc-local.conf`, `mmc-local` flags.",
            table::markdown_rows(LOCAL_KEYS, ""),
        ),
        (
            "Client: top level or `[client]` of the same file.",
            table::markdown_rows(CLIENT_KEYS, ""),
        ),
        (
            "TLS, for all three: `[tls]` (or `[local.tls]`, `[client.tls]`); the flags are those of `mmc-meta`, `mmc-local` and `mmc` (see Security).",
            table::markdown_rows(TLS_KEYS, "tls."),
        ),
    ];
    let mut out = String::new();
    for (i, (title, rows)) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{title}\n\n{MARKDOWN_HEADER}{rows}"));
    }
    out
}
