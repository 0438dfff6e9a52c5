//! Where the meta service is found: a fixed `tcp://host:port`, or `etcd://host:port[,host:port...]`
//! naming an etcd cluster in which the elected meta leader publishes its address (high
//! availability, see the README's "High availability with etcd").

use std::net::SocketAddr;

use super::table;
use super::values::{check_capacity, parse_tcp_url};
use super::{ConfigError, URL_CAPACITY};

/// The key prefix in etcd when the URL gives none (`etcd://h:2379/PREFIX` sets one, so several
/// clusters can share one etcd).
pub const ETCD_PREFIX_DEFAULT: &str = "mmc";

/// An `etcd://` URL: the endpoints to try, in order, and the key prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    /// `host:port` of each etcd member (not resolved here: names are resolved at each call).
    pub endpoints: Vec<String>,
    /// The prefix of the keys this cluster uses (`mmc` unless the URL has a path).
    pub prefix: String,
}

impl EtcdUrl {
    /// The key holding the meta leader's advertised `tcp://host:port` (under its lease).
    pub fn leader_key(&self) -> String {
        format!("/{}/meta/leader", self.prefix)
    }

    /// The key holding the last epoch a meta leader started with (incarnations stay monotonic
    /// across leaders whatever their clocks say).
    pub fn epoch_key(&self) -> String {
        format!("/{}/meta/epoch", self.prefix)
    }
}

/// Where a client or a local service finds the meta service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaUrl {
    /// One meta service at a fixed address.
    Tcp(SocketAddr),
    /// The leader that an etcd cluster names.
    Etcd(EtcdUrl),
}

/// Whether `s` is an `etcd://` URL (scheme case-insensitive).
pub fn is_etcd_url(s: &str) -> bool {
    s.trim()
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("etcd://"))
}

/// Parses `etcd://host:port[,host:port...][/prefix]`. Hosts are names or IP literals (IPv6 in
/// brackets); every port must be given.
pub fn parse_etcd_url(s: &str) -> Result<EtcdUrl, ConfigError> {
    let t = s.trim();
    if !is_etcd_url(t) {
        return Err(ConfigError::value(
            s,
            "expected etcd://host:port[,host:port...][/prefix]",
        ));
    }
    let rest = &t[7..];
    let (hosts, prefix) = match rest.split_once('/') {
        Some((h, p)) => (h, p.trim_matches('/')),
        None => (rest, ""),
    };
    if !prefix.is_empty()
        && !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return Err(ConfigError::value(
            s,
            format!("invalid key prefix `{prefix}` (letters, digits, - _ . / only)"),
        ));
    }
    let mut endpoints = Vec::new();
    for h in hosts.split(',') {
        let h = h.trim();
        let bad = |why: &str| ConfigError::value(s, format!("etcd endpoint `{h}`: {why}"));
        let (host, port) = h.rsplit_once(':').ok_or_else(|| bad("missing port"))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("missing host"));
        }
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(bad("IPv6 addresses go in brackets: [::1]:2379"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad("invalid port (1..65535)")),
        }
        endpoints.push(h.to_string());
    }
    Ok(EtcdUrl {
        endpoints,
        prefix: if prefix.is_empty() {
            ETCD_PREFIX_DEFAULT.to_string()
        } else {
            prefix.to_string()
        },
    })
}

/// Parses a meta URL: `tcp://host:port` (or bare `host:port`) or an `etcd://` URL.
pub fn parse_meta_url(s: &str) -> Result<MetaUrl, ConfigError> {
    if is_etcd_url(s) {
        parse_etcd_url(s).map(MetaUrl::Etcd)
    } else {
        parse_tcp_url(s).map(MetaUrl::Tcp)
    }
}

/// A meta URL: `tcp://host:port` or `etcd://host:port,...` (kept as written, trimmed).
pub struct DiscoveryUrl;

impl table::Kind for DiscoveryUrl {
    type Value = String;
    const NAME: &'static str = "`tcp://host:port` or `etcd://host:port,...`";
    fn from_text(s: &str) -> Result<String, ConfigError> {
        parse_meta_url(s)?;
        Ok(s.trim().to_string())
    }
    fn check(key: &str, v: &String) -> Result<(), ConfigError> {
        parse_meta_url(v).map_err(|e| e.for_key(key))?;
        check_capacity(key, v, URL_CAPACITY)
    }
}

/// An `etcd://` URL or empty (off).
pub struct OptEtcdUrl;

impl table::Kind for OptEtcdUrl {
    type Value = String;
    const NAME: &'static str = "`etcd://host:port,...` or empty";
    fn from_text(s: &str) -> Result<String, ConfigError> {
        if !s.trim().is_empty() {
            parse_etcd_url(s)?;
        }
        Ok(s.trim().to_string())
    }
    fn check(key: &str, v: &String) -> Result<(), ConfigError> {
        if v.is_empty() {
            return Ok(());
        }
        parse_etcd_url(v).map_err(|e| e.for_key(key))?;
        check_capacity(key, v, URL_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_urls_parse() {
        let u = parse_etcd_url("etcd://10.0.0.1:2379, etcd-2:2379,[::1]:2380").unwrap();
        assert_eq!(u.endpoints, ["10.0.0.1:2379", "etcd-2:2379", "[::1]:2380"]);
        assert_eq!(u.prefix, "mmc");
        assert_eq!(u.leader_key(), "/mmc/meta/leader");
        let u = parse_etcd_url("ETCD://h:1/team-a/cache").unwrap();
        assert_eq!(u.prefix, "team-a/cache");
        assert_eq!(u.epoch_key(), "/team-a/cache/meta/epoch");
        for bad in [
            "etcd://",
            "etcd://h",
            "etcd://h:0",
            "etcd://:2379",
            "etcd://h:2379,",
            "etcd://::1:2379",
            "etcd://h:2379/a b",
            "tcp://h:2379",
        ] {
            assert!(parse_etcd_url(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn meta_urls_are_tcp_or_etcd() {
        assert!(matches!(
            parse_meta_url("tcp://127.0.0.1:5000").unwrap(),
            MetaUrl::Tcp(_)
        ));
        assert!(matches!(
            parse_meta_url("etcd://127.0.0.1:2379").unwrap(),
            MetaUrl::Etcd(_)
        ));
        assert!(parse_meta_url("http://127.0.0.1:2379").is_err());
    }

    #[test]
    fn meta_ha_settings_are_checked() {
        use crate::MetaConfig;
        let c = MetaConfig::from_toml_str(
            "listen_url = \"tcp://0.0.0.0:5000\"\netcd_url = \"etcd://10.0.0.1:2379\"\n",
        )
        .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("advertise_url"), "{e}");
        let c = MetaConfig {
            advertise_url: "tcp://10.0.0.5:5000".into(),
            ..c
        };
        c.validate().unwrap();
        assert!(MetaConfig::from_toml_str("etcd_url = \"tcp://10.0.0.1:2379\"").is_err());
        assert!(MetaConfig::from_toml_str("etcd_lease_s = 0")
            .unwrap()
            .validate()
            .is_err());
        // Local services and clients take either form of meta_url.
        let text = "meta_url = \"etcd://10.0.0.1:2379,10.0.0.2:2379/a\"\n";
        let c = crate::ClientConfig::from_toml_str(text).unwrap();
        let l = crate::LocalConfig::from_toml_str(text).unwrap();
        c.validate().unwrap();
        l.validate().unwrap();
    }
}
