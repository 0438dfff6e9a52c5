//! Values: sizes, URLs, booleans, integers, log levels, and the checks they share.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::{ConfigError, URL_CAPACITY};

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

/// A `tcp://` URL value kept as written (trimmed), after checking that it parses.
pub fn url_string(v: &str) -> Result<String, ConfigError> {
    parse_tcp_url(v)?;
    Ok(v.trim().to_string())
}
