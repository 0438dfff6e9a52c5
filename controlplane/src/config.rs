//! Config files (CONTRACT.md "Config files" and "`ock.mmc.*` keys accepted"): the helpers every
//! MemCache binary shares (sizes, URLs, log levels, the `ock.mmc.*` key = value format, TLS
//! settings, format detection and loading) and the meta service's own [`MetaConfig`].
//!
//! Services read TOML; for users arriving from Ascend MemCache the `ock.mmc.*` key = value files
//! are accepted too. A file whose name ends in `.toml` is TOML; otherwise a file whose first
//! non-comment line starts with `ock.` is a key = value file, and anything else is TOML.
//!
//! Every error names the key, the file or the value that is wrong.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

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

/// Meta service `ock.mmc.*` keys (besides `ock.mmc.tls.*`).
pub const META_OCK_KEYS: &[&str] = &[
    OCK_META_SERVICE_URL,
    "ock.mmc.meta_service.metrics_url",
    OCK_LOG_LEVEL,
    "ock.mmc.evict_threshold_high",
    "ock.mmc.evict_threshold_low",
    "ock.mmc.meta.lease_ms",
    "ock.mmc.meta.pending_timeout_ms",
    "ock.mmc.meta.member_timeout_ms",
];

/// The `ock.mmc.tls.*` keys, in [`TlsConfig`] field order.
pub const TLS_OCK_KEYS: &[&str] = &[
    "ock.mmc.tls.enable",
    "ock.mmc.tls.ca.path",
    "ock.mmc.tls.crl.path",
    "ock.mmc.tls.cert.path",
    "ock.mmc.tls.key.path",
    "ock.mmc.tls.key.pass.path",
    "ock.mmc.tls.package.path",
    "ock.mmc.tls.decrypter.path",
];

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
    /// The TOML does not parse or does not fit the schema (unknown key, wrong type, bad value);
    /// toml's message names the key and shows the offending line.
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
    fn value(value: &str, reason: impl Into<String>) -> Self {
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

    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// Bytes for people: "512 B", "1.5 KiB", "8.0 GiB" (binary units, one decimal); the inverse of
/// [`parse_size`] for whole units.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a byte size: plain bytes (`"512"`, `"0"`) or a number with a unit, case-insensitive,
/// optionally separated by spaces: `B`, `K`/`KB`/`KiB`, `M`/`MB`/`MiB`, `G`/`GB`/`GiB`,
/// `T`/`TB`/`TiB`. All units are binary (1 KB = 1024 bytes), as in Ascend MemCache. A decimal
/// fraction is accepted when the result is a whole number of bytes (`"1.5GB"`). Overflow, negative
/// numbers and anything else are rejected.
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    const HINT: &str = "expected a size such as 1GB, 200MB, 2048KB or plain bytes";
    let t = s.trim();
    let num_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(num_end);
    if num.is_empty() {
        return Err(ConfigError::value(s, HINT));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0u32,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(ConfigError::value(
                s,
                format!("{HINT} (unknown unit; units are B, KB, MB, GB, TB, binary)"),
            ))
        }
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (num, None),
    };
    let digits_ok = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int_part) || frac_part.is_some_and(|f| !digits_ok(f)) {
        return Err(ConfigError::value(s, HINT));
    }
    let too_large = || ConfigError::value(s, "size too large (does not fit in 64 bits)");
    let int: u128 = int_part.parse::<u64>().map_err(|_| too_large())?.into();
    let mut total = int << shift;
    if let Some(frac) = frac_part {
        let frac = frac.trim_end_matches('0');
        if frac.len() > 18 {
            return Err(ConfigError::value(s, "too many decimal places"));
        }
        if !frac.is_empty() {
            let scale = 10u128.pow(frac.len() as u32);
            let f: u128 = frac.parse::<u64>().map_err(|_| too_large())?.into();
            let bytes = f << shift;
            let (whole, rest) = (bytes / scale, bytes % scale);
            if rest != 0 {
                return Err(ConfigError::value(s, "not a whole number of bytes"));
            }
            total += whole;
        }
    }
    u64::try_from(total).map_err(|_| too_large())
}

/// Parses `tcp://host:port` (or bare `host:port`) into a socket address. Port 0 is allowed (any
/// free port). IPv6 literals go in brackets (`tcp://[::1]:5000`). A host name is resolved and the
/// first IPv4 address wins (else the first address).
pub fn parse_tcp_url(s: &str) -> Result<SocketAddr, ConfigError> {
    let t = s.trim();
    let rest = match t.find("://") {
        Some(i) => {
            let scheme = &t[..i];
            if !scheme.eq_ignore_ascii_case("tcp") {
                return Err(ConfigError::value(
                    s,
                    format!("unsupported scheme `{scheme}://`, expected tcp://host:port"),
                ));
            }
            &t[i + 3..]
        }
        None => t,
    };
    parse_host_port(rest).map_err(|reason| ConfigError::value(s, reason))
}

/// Parses the address of the HTTP metrics endpoint: `http://host:port`, `tcp://host:port` or
/// `host:port`, with an optional trailing `/`.
pub fn parse_metrics_url(s: &str) -> Result<SocketAddr, ConfigError> {
    let t = s.trim();
    let rest = match t.find("://") {
        Some(i) => {
            let scheme = &t[..i];
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("tcp") {
                return Err(ConfigError::value(
                    s,
                    format!("unsupported scheme `{scheme}://`, expected http://host:port"),
                ));
            }
            &t[i + 3..]
        }
        None => t,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    parse_host_port(rest).map_err(|reason| ConfigError::value(s, reason))
}

fn parse_host_port(s: &str) -> Result<SocketAddr, String> {
    if s.is_empty() {
        return Err("missing host:port".into());
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or("missing port (expected host:port)")?;
    if host.is_empty() {
        return Err("missing host (expected host:port)".into());
    }
    if host.contains([':', '/', '[', ']']) || host.contains(char::is_whitespace) {
        return Err(format!(
            "invalid host `{host}` (IPv6 addresses go in brackets: [::1]:port)"
        ));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid port `{port}` (expected 0..65535)"))?;
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host `{host}`: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("host `{host}` has no address"))
}

/// Parses a boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off` (case-insensitive).
pub fn parse_bool(s: &str) -> Result<bool, ConfigError> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::value(s, "expected true or false")),
    }
}

/// Parses an integer of type `T` (surrounding whitespace ignored).
pub fn parse_int<T>(s: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    s.trim().parse::<T>().map_err(|e| {
        ConfigError::value(
            s,
            format!(
                "expected an integer of type {} ({e})",
                std::any::type_name::<T>()
            ),
        )
    })
}

/// Fails when `value` does not fit in a C `char[capacity]` (with its terminating NUL).
pub fn check_capacity(key: &str, value: &str, capacity: usize) -> Result<(), ConfigError> {
    if value.len() >= capacity {
        return Err(ConfigError::invalid(
            key,
            format!(
                "is {} bytes long; at most {} bytes fit",
                value.len(),
                capacity - 1
            ),
        ));
    }
    Ok(())
}

/// Checks that `value` is a usable `tcp://host:port` URL that fits the C array.
pub fn check_tcp_url(key: &str, value: &str) -> Result<(), ConfigError> {
    parse_tcp_url(value).map_err(|e| e.for_key(key))?;
    check_capacity(key, value, URL_CAPACITY)
}

/// A byte size in TOML: an integer number of bytes or a size string (`"1GB"`, see [`parse_size`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        parse_size(s).map(ByteSize)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes or a string such as \"1GB\", \"200MB\", \"2048KB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Log level
// ---------------------------------------------------------------------------------------------

/// Log level, numbered as the C API does: 0 debug, 1 info, 2 warn, 3 error.
///
/// In TOML it is a string (`"debug"`, `"info"`, `"warn"`/`"warning"`, `"error"`) or a number 0..3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// Parses `debug`, `info`, `warn`/`warning`, `error` (case-insensitive) or `0`..`3`.
    pub fn parse(s: &str) -> Result<LogLevel, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "debug" | "0" => Ok(LogLevel::Debug),
            "info" | "1" => Ok(LogLevel::Info),
            "warn" | "warning" | "2" => Ok(LogLevel::Warn),
            "error" | "3" => Ok(LogLevel::Error),
            _ => Err(ConfigError::value(
                s,
                "expected a log level: debug, info, warn, error (or 0..3)",
            )),
        }
    }

    /// The level from its C number (0 debug .. 3 error).
    pub fn from_i32(v: i32) -> Option<LogLevel> {
        match v {
            0 => Some(LogLevel::Debug),
            1 => Some(LogLevel::Info),
            2 => Some(LogLevel::Warn),
            3 => Some(LogLevel::Error),
            _ => None,
        }
    }

    /// The C number: 0 debug, 1 info, 2 warn, 3 error.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The `tracing` filter directive: `"debug"`, `"info"`, `"warn"` or `"error"`.
    pub fn as_filter_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_filter_str())
    }
}

impl FromStr for LogLevel {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        LogLevel::parse(s)
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LogLevel;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a log level: \"debug\", \"info\", \"warn\", \"error\" or 0..3")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LogLevel, E> {
                i32::try_from(v)
                    .ok()
                    .and_then(LogLevel::from_i32)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LogLevel, E> {
                i32::try_from(v)
                    .ok()
                    .and_then(LogLevel::from_i32)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LogLevel, E> {
                LogLevel::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// `ock.mmc.*` key = value files
// ---------------------------------------------------------------------------------------------

/// A parsed `key = value` file (Ascend MemCache's `mmc-meta.conf` / `mmc-local.conf`).
///
/// Syntax: one `key = value` per line; blank lines and lines starting with `#` are ignored; a `#`
/// at the start of a value or after whitespace starts a trailing comment; keys and values are
/// trimmed; a value in matching single or double quotes has them removed (and may then contain
/// `#`). When a key appears more than once the last one wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OckFile {
    /// (key, value, 1-based line number), in file order.
    entries: Vec<(String, String, usize)>,
}

impl OckFile {
    /// Parses the text of a key = value file. A malformed line is an error naming its number.
    pub fn parse(text: &str) -> Result<OckFile, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let syntax = |reason| ConfigError::Syntax {
                line,
                reason,
                text: t.to_string(),
            };
            let (key, rest) = t
                .split_once('=')
                .ok_or_else(|| syntax("expected `key = value`"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(syntax("missing key before `=`"));
            }
            if key.contains(|c: char| c.is_whitespace() || c == '#' || c == '"' || c == '\'') {
                return Err(syntax("invalid key"));
            }
            let value = parse_ock_value(rest.trim()).map_err(syntax)?;
            entries.push((key.to_string(), value, line));
        }
        Ok(OckFile { entries })
    }

    /// The value of `key` (the last one if it appears more than once).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|(_, v, _)| v.as_str())
    }

    /// The line `key` is set on (the last one if it appears more than once).
    pub fn line(&self, key: &str) -> Option<usize> {
        self.entry(key).map(|(_, _, l)| *l)
    }

    fn entry(&self, key: &str) -> Option<&(String, String, usize)> {
        self.entries.iter().rev().find(|(k, _, _)| k == key)
    }

    /// Every key in file order (a key set twice appears twice).
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|(k, _, _)| k.as_str())
    }

    /// Every `(key, value, line)` in file order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, usize)> + '_ {
        self.entries
            .iter()
            .map(|(k, v, l)| (k.as_str(), v.as_str(), *l))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file sets nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses the value of `key` with `parse`, if the key is present; an error names the key.
    pub fn parse_key<T>(
        &self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(key)
            .map(|v| parse(v).map_err(|e| e.for_key(key)))
            .transpose()
    }

    /// Sets `*target` from `key` when present (see [`OckFile::parse_key`]).
    pub fn set<T>(
        &self,
        key: &str,
        target: &mut T,
        parse: impl FnOnce(&str) -> Result<T, ConfigError>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = self.parse_key(key, parse)? {
            *target = v;
        }
        Ok(())
    }

    /// The keys (with their line) for which `is_known` is false, in file order.
    pub fn unknown_keys(&self, is_known: impl Fn(&str) -> bool) -> Vec<(&str, usize)> {
        self.entries
            .iter()
            .filter(|(k, _, _)| !is_known(k))
            .map(|(k, _, l)| (k.as_str(), *l))
            .collect()
    }

    /// Logs a warning naming each key for which `is_known` is false (`what` names the reader, as
    /// in "meta service"); returns how many there were.
    pub fn warn_unknown(&self, what: &str, is_known: impl Fn(&str) -> bool) -> usize {
        let unknown = self.unknown_keys(is_known);
        for (key, line) in &unknown {
            tracing::warn!("{what} config: ignoring unknown key `{key}` (line {line})");
        }
        unknown.len()
    }
}

/// The value part of a `key = value` line (already trimmed): quotes removed, comment stripped.
fn parse_ock_value(v: &str) -> Result<String, &'static str> {
    if let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let inner = &v[1..];
        let end = inner.find(q).ok_or("unterminated quote")?;
        let after = inner[end + 1..].trim_start();
        if !(after.is_empty() || after.starts_with('#')) {
            return Err("unexpected text after the closing quote");
        }
        return Ok(inner[..end].to_string());
    }
    let bytes = v.as_bytes();
    let end = (0..bytes.len())
        .find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()))
        .unwrap_or(bytes.len());
    Ok(v[..end].trim_end().to_string())
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// TLS settings (the C `mmc_tls_config`). In TOML, a `[tls]` table with these field names
/// (`decrypter_path` is accepted for `decrypter_lib_path`); in key = value files, `ock.mmc.tls.*`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub enable: bool,
    pub ca_path: String,
    pub crl_path: String,
    pub cert_path: String,
    pub key_path: String,
    pub key_pass_path: String,
    pub package_path: String,
    #[serde(alias = "decrypter_path")]
    pub decrypter_lib_path: String,
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
        let s = |v: &str| Ok(v.to_string());
        ock.set(TLS_OCK_KEYS[0], &mut self.enable, parse_bool)?;
        ock.set(TLS_OCK_KEYS[1], &mut self.ca_path, s)?;
        ock.set(TLS_OCK_KEYS[2], &mut self.crl_path, s)?;
        ock.set(TLS_OCK_KEYS[3], &mut self.cert_path, s)?;
        ock.set(TLS_OCK_KEYS[4], &mut self.key_path, s)?;
        ock.set(TLS_OCK_KEYS[5], &mut self.key_pass_path, s)?;
        ock.set(TLS_OCK_KEYS[6], &mut self.package_path, s)?;
        ock.set(TLS_OCK_KEYS[7], &mut self.decrypter_lib_path, s)?;
        Ok(())
    }

    /// Whether `key` is one of the `ock.mmc.tls.*` keys.
    pub fn is_ock_key(key: &str) -> bool {
        TLS_OCK_KEYS.contains(&key)
    }

    /// Paths fit the C arrays; with TLS enabled, the CA, certificate and key paths are set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let paths = [
            ("tls.ca_path", &self.ca_path),
            ("tls.crl_path", &self.crl_path),
            ("tls.cert_path", &self.cert_path),
            ("tls.key_path", &self.key_path),
            ("tls.key_pass_path", &self.key_pass_path),
            ("tls.package_path", &self.package_path),
            ("tls.decrypter_lib_path", &self.decrypter_lib_path),
        ];
        for (key, value) in paths {
            check_capacity(key, value, TLS_PATH_CAPACITY)?;
        }
        if self.enable {
            let required = [
                ("tls.ca_path", &self.ca_path),
                ("tls.cert_path", &self.cert_path),
                ("tls.key_path", &self.key_path),
            ];
            for (key, value) in required {
                if value.is_empty() {
                    return Err(ConfigError::invalid(key, "must be set when TLS is enabled"));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// The syntax of a config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// Ascend MemCache's `ock.mmc.*` key = value lines.
    Ock,
}

impl Format {
    /// A `.toml` file is TOML; otherwise the text is `ock` when its first non-blank, non-comment
    /// line starts with `ock.`, and TOML when it does not.
    pub fn detect(path: &Path, text: &str) -> Format {
        let is_toml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        if is_toml {
            return Format::Toml;
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let first = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        match first {
            Some(l) if l.starts_with("ock.") => Format::Ock,
            _ => Format::Toml,
        }
    }
}

/// Reads a config file and detects its format ([`Format::detect`]). A read error names the path.
pub fn load_text(path: &Path) -> Result<(String, Format), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let format = Format::detect(path, &text);
    Ok((text, format))
}

/// The config file to read: `explicit` if given, else the path in environment variable `env_var`
/// (unset or empty = none).
pub fn config_path(explicit: Option<&Path>, env_var: &str) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    match std::env::var_os(env_var) {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => None,
    }
}

/// Finds the file ([`config_path`]), reads it ([`load_text`]) and hands its text and format to
/// `parse`; any error is returned naming the file. `Ok(None)` when there is no file to read.
pub fn load_config<T>(
    explicit: Option<&Path>,
    env_var: &str,
    parse: impl FnOnce(&str, Format) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    let Some(path) = config_path(explicit, env_var) else {
        return Ok(None);
    };
    let (text, format) = load_text(&path)?;
    tracing::debug!("reading config file {} ({format:?})", path.display());
    parse(&text, format).map(Some).map_err(|e| e.in_file(&path))
}

fn toml_error(e: toml::de::Error) -> ConfigError {
    ConfigError::Toml(e.to_string().trim_end().to_string())
}

/// Parses TOML text into `T` (a `deny_unknown_fields` schema), mapping errors to
/// [`ConfigError::Toml`].
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(toml_error)
}

// ---------------------------------------------------------------------------------------------
// Meta service
// ---------------------------------------------------------------------------------------------

/// The meta service's settings (`mmc-meta --config meta.toml`, or `mmc-meta.conf`).
#[derive(Clone, Debug, PartialEq)]
pub struct MetaConfig {
    /// Where it listens: `tcp://ip:port`.
    pub listen_url: String,
    pub log_level: LogLevel,
    /// Eviction starts when a tier's used space passes this percentage.
    pub evict_threshold_high: u16,
    /// ... and runs until it is below this percentage.
    pub evict_threshold_low: u16,
    /// HTTP `/metrics` and `/health` endpoint; empty = off.
    pub metrics_url: String,
    pub tls: TlsConfig,
    /// How long a read holds an object (its lease).
    pub lease_ms: u64,
    /// An uncommitted put is reclaimed after this long.
    pub pending_timeout_ms: u64,
    /// A local service silent this long is dead.
    pub member_timeout_ms: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig {
            listen_url: "tcp://127.0.0.1:5000".to_string(),
            log_level: LogLevel::Info,
            evict_threshold_high: 90,
            evict_threshold_low: 80,
            metrics_url: String::new(),
            tls: TlsConfig::default(),
            lease_ms: 10_000,
            pending_timeout_ms: 30_000,
            member_timeout_ms: 5_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    #[serde(alias = "discovery_url")]
    listen_url: Option<String>,
    log_level: Option<LogLevel>,
    evict_threshold_high: Option<u16>,
    evict_threshold_low: Option<u16>,
    metrics_url: Option<String>,
    lease_ms: Option<u64>,
    pending_timeout_ms: Option<u64>,
    member_timeout_ms: Option<u64>,
    tls: Option<TlsConfig>,
}

impl MetaConfig {
    /// Parses TOML: `listen_url` (alias `discovery_url`), `log_level`, `evict_threshold_high`,
    /// `evict_threshold_low`, `metrics_url`, `lease_ms`, `pending_timeout_ms`,
    /// `member_timeout_ms` and a `[tls]` table; keys not set keep their defaults. An unknown key
    /// is an error naming it. Does not [`validate`](MetaConfig::validate).
    pub fn from_toml_str(text: &str) -> Result<MetaConfig, ConfigError> {
        let raw: RawMeta = from_toml(text)?;
        let d = MetaConfig::default();
        Ok(MetaConfig {
            listen_url: raw.listen_url.unwrap_or(d.listen_url),
            log_level: raw.log_level.unwrap_or(d.log_level),
            evict_threshold_high: raw.evict_threshold_high.unwrap_or(d.evict_threshold_high),
            evict_threshold_low: raw.evict_threshold_low.unwrap_or(d.evict_threshold_low),
            metrics_url: raw.metrics_url.unwrap_or(d.metrics_url),
            tls: raw.tls.unwrap_or(d.tls),
            lease_ms: raw.lease_ms.unwrap_or(d.lease_ms),
            pending_timeout_ms: raw.pending_timeout_ms.unwrap_or(d.pending_timeout_ms),
            member_timeout_ms: raw.member_timeout_ms.unwrap_or(d.member_timeout_ms),
        })
    }

    /// Reads the [`META_OCK_KEYS`] and `ock.mmc.tls.*` of a key = value file; keys not set keep
    /// their defaults. A bad value is an error naming the key; an unknown key is only a warning.
    /// Does not [`validate`](MetaConfig::validate) (but URLs must parse).
    pub fn from_ock(ock: &OckFile) -> Result<MetaConfig, ConfigError> {
        let mut c = MetaConfig::default();
        ock.set(OCK_META_SERVICE_URL, &mut c.listen_url, url_string)?;
        ock.set(
            "ock.mmc.meta_service.metrics_url",
            &mut c.metrics_url,
            |v| {
                if !v.is_empty() {
                    parse_metrics_url(v)?;
                }
                Ok(v.to_string())
            },
        )?;
        ock.set(OCK_LOG_LEVEL, &mut c.log_level, LogLevel::parse)?;
        ock.set(
            "ock.mmc.evict_threshold_high",
            &mut c.evict_threshold_high,
            parse_int,
        )?;
        ock.set(
            "ock.mmc.evict_threshold_low",
            &mut c.evict_threshold_low,
            parse_int,
        )?;
        ock.set("ock.mmc.meta.lease_ms", &mut c.lease_ms, parse_int)?;
        ock.set(
            "ock.mmc.meta.pending_timeout_ms",
            &mut c.pending_timeout_ms,
            parse_int,
        )?;
        ock.set(
            "ock.mmc.meta.member_timeout_ms",
            &mut c.member_timeout_ms,
            parse_int,
        )?;
        c.tls.apply_ock(ock)?;
        ock.warn_unknown("meta service", MetaConfig::is_ock_key);
        Ok(c)
    }

    /// Whether the meta service reads `key` from a key = value file.
    pub fn is_ock_key(key: &str) -> bool {
        META_OCK_KEYS.contains(&key) || TlsConfig::is_ock_key(key)
    }

    /// Parses text in the given format (see [`MetaConfig::from_toml_str`], [`MetaConfig::from_ock`]).
    pub fn from_text(text: &str, format: Format) -> Result<MetaConfig, ConfigError> {
        match format {
            Format::Toml => MetaConfig::from_toml_str(text),
            Format::Ock => MetaConfig::from_ock(&OckFile::parse(text)?),
        }
    }

    /// Loads and validates the config file at `path`, or, with no path, the one named by
    /// `MMC_META_CONFIG_PATH`; with neither, the defaults. Errors name the file.
    pub fn load(path: Option<&Path>) -> Result<MetaConfig, ConfigError> {
        let cfg = load_config(path, META_CONFIG_ENV, |text, format| {
            let c = MetaConfig::from_text(text, format)?;
            c.validate()?;
            Ok(c)
        })?;
        Ok(cfg.unwrap_or_default())
    }

    /// Checks `0 < evict_threshold_low < evict_threshold_high <= 100`, that `listen_url` (and
    /// `metrics_url` if set) parse and fit the C arrays, that the timeouts are above zero and the
    /// TLS settings ([`TlsConfig::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_tcp_url("listen_url", &self.listen_url)?;
        if !self.metrics_url.is_empty() {
            parse_metrics_url(&self.metrics_url).map_err(|e| e.for_key("metrics_url"))?;
            check_capacity("metrics_url", &self.metrics_url, URL_CAPACITY)?;
        }
        let (low, high) = (self.evict_threshold_low, self.evict_threshold_high);
        if high == 0 || high > 100 {
            return Err(ConfigError::invalid(
                "evict_threshold_high",
                format!("{high} is not a percentage in 1..=100"),
            ));
        }
        if low == 0 || low >= high {
            return Err(ConfigError::invalid(
                "evict_threshold_low",
                format!("{low} must be above 0 and below evict_threshold_high ({high})"),
            ));
        }
        for (key, v) in [
            ("lease_ms", self.lease_ms),
            ("pending_timeout_ms", self.pending_timeout_ms),
            ("member_timeout_ms", self.member_timeout_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be above 0"));
            }
        }
        self.tls.validate()
    }
}

/// A `tcp://` URL value kept as written, after checking that it parses.
pub fn url_string(v: &str) -> Result<String, ConfigError> {
    parse_tcp_url(v)?;
    Ok(v.trim().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn format_size_reads_back() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        for bytes in [1u64 << 10, 8 << 20, 3 << 30, 2 << 40] {
            assert_eq!(
                parse_size(&format_size(bytes).replace(".0", "")).unwrap(),
                bytes
            );
        }
    }

    use super::*;
    use std::io::Write;

    const GIB: u64 = 1 << 30;

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("512", 512),
            ("512B", 512),
            ("512 b", 512),
            ("1K", 1024),
            ("1k", 1024),
            ("2048KB", 2048 * 1024),
            ("2048kib", 2048 * 1024),
            ("200mb", 200 << 20),
            ("200MB", 200 << 20),
            ("200MiB", 200 << 20),
            ("200 M", 200 << 20),
            ("1GB", GIB),
            ("1g", GIB),
            ("1 GiB", GIB),
            ("  1gib  ", GIB),
            ("1.5GB", 3 * GIB / 2),
            ("0.5k", 512),
            ("2TB", 2 << 40),
            ("1t", 1 << 40),
            ("1tib", 1 << 40),
            ("18446744073709551615", u64::MAX),
            ("16777215TB", 16_777_215u64 << 40),
        ];
        for (s, want) in ok {
            assert_eq!(parse_size(s).unwrap(), want, "{s}");
        }
        let bad = [
            "",
            "  ",
            "GB",
            "abc",
            "-1",
            "-1GB",
            "+1",
            "1.5",
            "0.3k",
            "1..5GB",
            ".5GB",
            "1.GB",
            "1PB",
            "1 G B",
            "1GBx",
            "1e3",
            "0x10",
            "18446744073709551616",
            "16777216TB",
            "99999999999999999999999GB",
            "1.0000000000000000001GB",
        ];
        for s in bad {
            let e = parse_size(s).unwrap_err();
            assert!(matches!(e, ConfigError::Value { .. }), "{s}: {e:?}");
            assert!(e.to_string().contains(&format!("`{s}`")), "{e}");
        }
    }

    #[test]
    fn urls() {
        let a = |s: &str| parse_tcp_url(s).unwrap().to_string();
        assert_eq!(a("tcp://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(a("TCP://10.1.2.3:80"), "10.1.2.3:80");
        assert_eq!(a("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(a(" tcp://0.0.0.0:0 "), "0.0.0.0:0");
        assert_eq!(a("tcp://[::1]:7000"), "[::1]:7000");
        assert_eq!(a("localhost:5000"), "127.0.0.1:5000");
        assert_eq!(a("tcp://localhost:0"), "127.0.0.1:0");
        for bad in [
            "",
            "tcp://",
            "http://127.0.0.1:5000",
            "udp://1.2.3.4:5",
            "127.0.0.1",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:",
            "tcp://:5000",
            "tcp://127.0.0.1:65536",
            "tcp://127.0.0.1:-1",
            "tcp://127.0.0.1:5000/path",
            "tcp://::1:5000",
            "tcp://no such host:5000",
            "tcp://nonexistent.invalid:5000",
        ] {
            let e = parse_tcp_url(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
        assert_eq!(
            parse_metrics_url("http://0.0.0.0:9100/")
                .unwrap()
                .to_string(),
            "0.0.0.0:9100"
        );
        assert_eq!(
            parse_metrics_url("127.0.0.1:9100").unwrap().to_string(),
            "127.0.0.1:9100"
        );
        assert!(parse_metrics_url("https://1.2.3.4:1").is_err());
        assert!(parse_metrics_url("http://1.2.3.4:1/metrics").is_err());
    }

    #[test]
    fn bools_ints_levels() {
        for t in ["true", "TRUE", "1", "yes", "on"] {
            assert!(parse_bool(t).unwrap(), "{t}");
        }
        for f in ["false", "0", "No", "off"] {
            assert!(!parse_bool(f).unwrap(), "{f}");
        }
        assert!(parse_bool("maybe").is_err());
        assert_eq!(parse_int::<u16>(" 90 ").unwrap(), 90);
        let e = parse_int::<u16>("70000").unwrap_err().to_string();
        assert!(e.contains("`70000`") && e.contains("u16"), "{e}");
        assert!(parse_int::<u32>("-1").is_err());

        let cases = [
            ("debug", LogLevel::Debug),
            ("0", LogLevel::Debug),
            ("INFO", LogLevel::Info),
            ("1", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("Warning", LogLevel::Warn),
            ("2", LogLevel::Warn),
            ("error", LogLevel::Error),
            (" 3 ", LogLevel::Error),
        ];
        for (s, want) in cases {
            assert_eq!(LogLevel::parse(s).unwrap(), want, "{s}");
        }
        for bad in ["4", "-1", "trace", "", "verbose"] {
            assert!(LogLevel::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(LogLevel::Debug.as_i32(), 0);
        assert_eq!(LogLevel::Error.as_i32(), 3);
        assert_eq!(LogLevel::Warn.as_filter_str(), "warn");
        assert_eq!(LogLevel::default(), LogLevel::Info);
        for l in [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ] {
            assert_eq!(LogLevel::from_i32(l.as_i32()), Some(l));
            assert_eq!(LogLevel::parse(&l.to_string()).unwrap(), l);
        }
        assert_eq!(LogLevel::from_i32(4), None);
    }

    #[test]
    fn ock_parsing() {
        let text = "\u{feff}# a comment\n\
                    \n\
                    ock.mmc.a = 1\n\
                    \t ock.mmc.b=two words   \n\
                    ock.mmc.c = \"quoted # not a comment\"  # comment\n\
                    ock.mmc.d = 'single'\n\
                    ock.mmc.e = value # trailing comment\n\
                    ock.mmc.f = a#b\n\
                    ock.mmc.g =\n\
                    ock.mmc.h = # only a comment\n\
                    \x20  # indented comment\n\
                    ock.mmc.a = 3\r\n\
                    ock.mmc.i = x = y\n";
        let f = OckFile::parse(text).unwrap();
        assert_eq!(f.get("ock.mmc.a"), Some("3"));
        assert_eq!(f.line("ock.mmc.a"), Some(12));
        assert_eq!(f.get("ock.mmc.b"), Some("two words"));
        assert_eq!(f.get("ock.mmc.c"), Some("quoted # not a comment"));
        assert_eq!(f.get("ock.mmc.d"), Some("single"));
        assert_eq!(f.get("ock.mmc.e"), Some("value"));
        assert_eq!(f.get("ock.mmc.f"), Some("a#b"));
        assert_eq!(f.get("ock.mmc.g"), Some(""));
        assert_eq!(f.get("ock.mmc.h"), Some(""));
        assert_eq!(f.get("ock.mmc.i"), Some("x = y"));
        assert_eq!(f.get("ock.mmc.zz"), None);
        assert_eq!(f.len(), 10);
        let keys: Vec<&str> = f.keys().collect();
        assert_eq!(keys[0], "ock.mmc.a");
        assert_eq!(keys[9], "ock.mmc.i");
        assert_eq!(f.entries().nth(1), Some(("ock.mmc.b", "two words", 4)));
        assert!(OckFile::parse("").unwrap().is_empty());
        assert!(OckFile::parse("# only\n\n").unwrap().is_empty());

        for (text, line) in [
            ("ock.mmc.a = 1\nthis line has no equals sign\n", 2),
            ("\n\n= value\n", 3),
            ("a b = c\n", 1),
            ("ock.mmc.a = \"unterminated\n", 1),
            ("ock.mmc.a = \"x\" y\n", 1),
        ] {
            let e = OckFile::parse(text).unwrap_err();
            assert!(
                matches!(e, ConfigError::Syntax { line: l, .. } if l == line),
                "{text:?}: {e:?}"
            );
            assert!(e.to_string().starts_with(&format!("line {line}:")), "{e}");
        }
    }

    #[test]
    fn tls_from_ock_and_toml() {
        let ock = OckFile::parse(
            "ock.mmc.tls.enable = true\n\
             ock.mmc.tls.ca.path = /ca\n\
             ock.mmc.tls.crl.path = /crl\n\
             ock.mmc.tls.cert.path = /cert\n\
             ock.mmc.tls.key.path = /key\n\
             ock.mmc.tls.key.pass.path = /pass\n\
             ock.mmc.tls.package.path = /pkg\n\
             ock.mmc.tls.decrypter.path = /lib.so\n",
        )
        .unwrap();
        let want = TlsConfig {
            enable: true,
            ca_path: "/ca".into(),
            crl_path: "/crl".into(),
            cert_path: "/cert".into(),
            key_path: "/key".into(),
            key_pass_path: "/pass".into(),
            package_path: "/pkg".into(),
            decrypter_lib_path: "/lib.so".into(),
        };
        assert_eq!(TlsConfig::from_ock(&ock).unwrap(), want);
        want.validate().unwrap();
        let e = TlsConfig::from_ock(&OckFile::parse("ock.mmc.tls.enable = sure").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ock.mmc.tls.enable") && e.contains("sure"),
            "{e}"
        );

        let toml_cfg = MetaConfig::from_toml_str(
            "[tls]\nenable = true\nca_path = \"/ca\"\ncrl_path = \"/crl\"\ncert_path = \"/cert\"\n\
             key_path = \"/key\"\nkey_pass_path = \"/pass\"\npackage_path = \"/pkg\"\n\
             decrypter_lib_path = \"/lib.so\"\n",
        )
        .unwrap();
        assert_eq!(toml_cfg.tls, want);
        let e = MetaConfig::from_toml_str("[tls]\nenabled = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("enabled"), "{e}");

        let missing = TlsConfig {
            enable: true,
            ca_path: "/ca".into(),
            ..TlsConfig::default()
        };
        let e = missing.validate().unwrap_err().to_string();
        assert!(e.contains("tls.cert_path"), "{e}");
        TlsConfig::default().validate().unwrap();
        let long = TlsConfig {
            ca_path: "x".repeat(256),
            ..TlsConfig::default()
        };
        assert!(long
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tls.ca_path"));
    }

    #[test]
    fn meta_from_toml() {
        let c = MetaConfig::from_toml_str(
            "listen_url = \"tcp://0.0.0.0:6000\"\nlog_level = \"debug\"\n\
             evict_threshold_high = 95\nevict_threshold_low = 70\n\
             metrics_url = \"http://0.0.0.0:9100\"\nlease_ms = 1\npending_timeout_ms = 2\n\
             member_timeout_ms = 3\n[tls]\nenable = false\nca_path = \"/ca\"\n",
        )
        .unwrap();
        assert_eq!(
            c,
            MetaConfig {
                listen_url: "tcp://0.0.0.0:6000".into(),
                log_level: LogLevel::Debug,
                evict_threshold_high: 95,
                evict_threshold_low: 70,
                metrics_url: "http://0.0.0.0:9100".into(),
                tls: TlsConfig {
                    ca_path: "/ca".into(),
                    ..TlsConfig::default()
                },
                lease_ms: 1,
                pending_timeout_ms: 2,
                member_timeout_ms: 3,
            }
        );
        c.validate().unwrap();

        assert_eq!(
            MetaConfig::from_toml_str("").unwrap(),
            MetaConfig::default()
        );
        MetaConfig::default().validate().unwrap();
        let c = MetaConfig::from_toml_str("discovery_url = \"tcp://1.2.3.4:1\"\nlog_level = 3")
            .unwrap();
        assert_eq!(c.listen_url, "tcp://1.2.3.4:1");
        assert_eq!(c.log_level, LogLevel::Error);

        let e = MetaConfig::from_toml_str("listen_url = \"tcp://1.2.3.4:1\"\nbogus_key = 1\n")
            .unwrap_err();
        assert!(matches!(e, ConfigError::Toml(_)));
        assert!(e.to_string().contains("bogus_key"), "{e}");
        let e = MetaConfig::from_toml_str("log_level = \"loud\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log_level") && e.contains("loud"), "{e}");
        let e = MetaConfig::from_toml_str("log_level = 7")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log_level"), "{e}");
        let e = MetaConfig::from_toml_str("evict_threshold_high = 70000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("evict_threshold_high"), "{e}");
        let e = MetaConfig::from_toml_str("lease_ms = \"10s\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lease_ms"), "{e}");
        assert!(MetaConfig::from_toml_str("not toml at all").is_err());
    }

    #[test]
    fn meta_from_ock() {
        let ock = OckFile::parse(
            "# mmc-meta.conf\n\
             ock.mmc.meta_service_url = tcp://0.0.0.0:6000\n\
             ock.mmc.meta_service.metrics_url = http://0.0.0.0:9100\n\
             ock.mmc.log_level = warning\n\
             ock.mmc.evict_threshold_high = 85\n\
             ock.mmc.evict_threshold_low = 60\n\
             ock.mmc.meta.lease_ms = 1000\n\
             ock.mmc.meta.pending_timeout_ms = 2000\n\
             ock.mmc.meta.member_timeout_ms = 3000\n\
             ock.mmc.tls.enable = false\n\
             ock.mmc.tls.ca.path = /ca\n\
             ock.mmc.some.future_key = 1\n",
        )
        .unwrap();
        let c = MetaConfig::from_ock(&ock).unwrap();
        assert_eq!(
            c,
            MetaConfig {
                listen_url: "tcp://0.0.0.0:6000".into(),
                log_level: LogLevel::Warn,
                evict_threshold_high: 85,
                evict_threshold_low: 60,
                metrics_url: "http://0.0.0.0:9100".into(),
                tls: TlsConfig {
                    ca_path: "/ca".into(),
                    ..TlsConfig::default()
                },
                lease_ms: 1000,
                pending_timeout_ms: 2000,
                member_timeout_ms: 3000,
            }
        );
        // The unknown key is a warning, not an error.
        assert_eq!(
            ock.unknown_keys(MetaConfig::is_ock_key),
            vec![("ock.mmc.some.future_key", 12)]
        );
        assert_eq!(ock.warn_unknown("test", MetaConfig::is_ock_key), 1);

        for (line, key) in [
            (
                "ock.mmc.evict_threshold_high = lots",
                "ock.mmc.evict_threshold_high",
            ),
            (
                "ock.mmc.evict_threshold_low = -5",
                "ock.mmc.evict_threshold_low",
            ),
            ("ock.mmc.log_level = chatty", "ock.mmc.log_level"),
            (
                "ock.mmc.meta_service_url = tcp://nowhere",
                "ock.mmc.meta_service_url",
            ),
            (
                "ock.mmc.meta_service.metrics_url = ftp://x:1",
                "ock.mmc.meta_service.metrics_url",
            ),
            ("ock.mmc.meta.lease_ms = 1.5", "ock.mmc.meta.lease_ms"),
            (
                "ock.mmc.meta.pending_timeout_ms = x",
                "ock.mmc.meta.pending_timeout_ms",
            ),
            (
                "ock.mmc.meta.member_timeout_ms = ",
                "ock.mmc.meta.member_timeout_ms",
            ),
        ] {
            let e = MetaConfig::from_ock(&OckFile::parse(line).unwrap()).unwrap_err();
            assert!(matches!(e, ConfigError::KeyValue { .. }), "{line}: {e:?}");
            assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
        }
    }

    #[test]
    fn meta_validate() {
        let with = |low, high| MetaConfig {
            evict_threshold_low: low,
            evict_threshold_high: high,
            ..MetaConfig::default()
        };
        with(80, 90).validate().unwrap();
        with(1, 100).validate().unwrap();
        for (low, high) in [(90, 90), (95, 90), (0, 90), (80, 101), (0, 0)] {
            let e = with(low, high).validate().unwrap_err();
            assert!(
                e.to_string().contains("evict_threshold"),
                "{low} {high}: {e}"
            );
        }
        let e = with(90, 80).validate().unwrap_err().to_string();
        assert!(e.contains("evict_threshold_low"), "{e}");

        let bad_url = MetaConfig {
            listen_url: "nope".into(),
            ..MetaConfig::default()
        };
        assert!(bad_url
            .validate()
            .unwrap_err()
            .to_string()
            .contains("listen_url"));
        let bad_metrics = MetaConfig {
            metrics_url: "x".into(),
            ..MetaConfig::default()
        };
        assert!(bad_metrics
            .validate()
            .unwrap_err()
            .to_string()
            .contains("metrics_url"));
        let zero = MetaConfig {
            member_timeout_ms: 0,
            ..MetaConfig::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("member_timeout_ms"));
        let long = MetaConfig {
            listen_url: format!("tcp://{}:1", "a".repeat(1100)),
            ..MetaConfig::default()
        };
        assert!(long.validate().is_err());
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn format_detection_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let toml_p = write(d, "meta.toml", "listen_url = \"tcp://127.0.0.1:7001\"\n");
        let ock_p = write(
            d,
            "mmc-meta.conf",
            "# comment\n\nock.mmc.meta_service_url = tcp://127.0.0.1:7002\n",
        );
        let toml_noext = write(d, "meta", "# c\nlisten_url = \"tcp://127.0.0.1:7003\"\n");
        // A `.toml` file is TOML even when it looks like ock (this one is valid TOML).
        let ock_in_toml = write(d, "x.toml", "ock.mmc.meta_service_url = \"x\"\n");

        assert_eq!(load_text(&toml_p).unwrap().1, Format::Toml);
        assert_eq!(load_text(&ock_p).unwrap().1, Format::Ock);
        assert_eq!(load_text(&toml_noext).unwrap().1, Format::Toml);
        assert_eq!(load_text(&ock_in_toml).unwrap().1, Format::Toml);
        assert_eq!(
            Format::detect(Path::new("a.TOML"), "ock.mmc.x = 1"),
            Format::Toml
        );
        assert_eq!(Format::detect(Path::new("a.conf"), ""), Format::Toml);

        let c = MetaConfig::load(Some(&toml_p)).unwrap();
        assert_eq!(c.listen_url, "tcp://127.0.0.1:7001");
        let c = MetaConfig::load(Some(&ock_p)).unwrap();
        assert_eq!(c.listen_url, "tcp://127.0.0.1:7002");
        let c = MetaConfig::load(Some(&toml_noext)).unwrap();
        assert_eq!(c.listen_url, "tcp://127.0.0.1:7003");

        // Errors name the file (and the key).
        let e = MetaConfig::load(Some(&ock_in_toml))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml") && e.contains("ock"), "{e}");
        let missing = d.join("missing.toml");
        let e = MetaConfig::load(Some(&missing)).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert!(e.to_string().contains("missing.toml"), "{e}");
        let bad_ock = write(d, "bad.conf", "ock.mmc.log_level = info\ngarbage\n");
        let e = MetaConfig::load(Some(&bad_ock)).unwrap_err().to_string();
        assert!(e.contains("bad.conf") && e.contains("line 2"), "{e}");
        let invalid = write(
            d,
            "invalid.toml",
            "evict_threshold_high = 50\nevict_threshold_low = 60\n",
        );
        let e = MetaConfig::load(Some(&invalid)).unwrap_err().to_string();
        assert!(
            e.contains("invalid.toml") && e.contains("evict_threshold_low"),
            "{e}"
        );
    }

    /// The only test that touches `MMC_META_CONFIG_PATH` (environment variables are process-wide).
    #[test]
    fn load_via_env_var() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "mmc-meta.conf",
            "ock.mmc.meta_service_url = tcp://127.0.0.1:7010\n",
        );
        std::env::remove_var(META_CONFIG_ENV);
        assert_eq!(MetaConfig::load(None).unwrap(), MetaConfig::default());
        std::env::set_var(META_CONFIG_ENV, "");
        assert_eq!(MetaConfig::load(None).unwrap(), MetaConfig::default());
        std::env::set_var(META_CONFIG_ENV, &p);
        assert_eq!(
            MetaConfig::load(None).unwrap().listen_url,
            "tcp://127.0.0.1:7010"
        );
        // An explicit path wins over the variable.
        let q = write(
            dir.path(),
            "other.toml",
            "listen_url = \"tcp://127.0.0.1:7011\"\n",
        );
        assert_eq!(
            MetaConfig::load(Some(&q)).unwrap().listen_url,
            "tcp://127.0.0.1:7011"
        );
        std::env::set_var(META_CONFIG_ENV, dir.path().join("nope.conf"));
        let e = MetaConfig::load(None).unwrap_err().to_string();
        assert!(e.contains("nope.conf"), "{e}");
        std::env::remove_var(META_CONFIG_ENV);
    }
}
