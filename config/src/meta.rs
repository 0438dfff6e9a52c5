//! The meta service's settings, [`MetaConfig`], and their keys, [`META_KEYS`].

use super::discovery::OptEtcdUrl;
use super::table::{
    self, Bool, Flag, Int, Key, Level, MetricsUrl, OptTcpUrl, Path, TcpUrl, TomlApplier,
};
use super::{load_config, ConfigError, Format, LogLevel, OckFile, TlsConfig};
use super::{META_CONFIG_ENV, OCK_LOG_LEVEL, OCK_META_SERVICE_URL};
use crate::logging::Format as LogFormatKind;
use crate::{config_key, config_struct};

/// What a put asking for more replicas than there are live services gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplicaPolicy {
    /// It fails with -3013 (the contract's behaviour).
    #[default]
    Strict,
    /// It stores one replica per live service (at least one); repair adds the rest later.
    BestEffort,
}

impl ReplicaPolicy {
    /// `strict` or `best_effort` (case-insensitive, `-` for `_` accepted).
    pub fn parse(s: &str) -> Result<ReplicaPolicy, ConfigError> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "strict" => Ok(ReplicaPolicy::Strict),
            "best_effort" => Ok(ReplicaPolicy::BestEffort),
            _ => Err(ConfigError::value(
                s,
                "expected a replica policy: strict or best_effort",
            )),
        }
    }
}

/// A [`ReplicaPolicy`].
pub struct Policy;

impl table::Kind for Policy {
    type Value = ReplicaPolicy;
    const NAME: &'static str = "`strict` or `best_effort`";
    fn from_text(s: &str) -> Result<ReplicaPolicy, ConfigError> {
        ReplicaPolicy::parse(s)
    }
}

/// The meta service's keys (TOML names at the top level; `[tls]` holds [`TLS_KEYS`](super::TLS_KEYS)).
pub static META_KEYS: &[Key<MetaConfig>] = &[
    config_key!(MetaConfig {
        name: "listen_url",
        aliases: ["discovery_url"],
        ock: OCK_META_SERVICE_URL,
        flag: Flag::Value("listen"),
        kind: TcpUrl,
        field: listen_url,
        default: "tcp://127.0.0.1:5000",
        doc: "Where the meta service listens (port 0 = any free port).",
    }),
    config_key!(MetaConfig {
        name: "etcd_url", ock: "ock.mmc.meta.etcd_url", flag: Flag::Value("etcd"),
        kind: OptEtcdUrl, field: etcd_url, default: "",
        doc: "High availability: the etcd cluster (`etcd://host:2379,host2:2379[/prefix]`) through which two or three meta services elect a leader; only the leader listens, and publishes `advertise_url` there for clients and local services (whose `meta_url` is then the same `etcd://` URL). Empty = a single meta service.",
    }),
    config_key!(MetaConfig {
        name: "advertise_url", ock: "ock.mmc.meta.advertise_url", flag: Flag::Value("advertise"),
        kind: OptTcpUrl, field: advertise_url, default: "",
        doc: "With `etcd_url`: the address the leader publishes; empty = the bound address (which must then not be a wildcard).",
    }),
    config_key!(MetaConfig {
        name: "etcd_lease_s", ock: "ock.mmc.meta.etcd_lease_s", flag: Flag::Value("etcd-lease-s"),
        kind: Int<u64>, field: etcd_lease_s, default: "3", min: 1, max: 60,
        doc: "With `etcd_url`: the leader's etcd lease in seconds. A leader that has not renewed it for two thirds of this stops serving; a standby takes over once it expires.",
    }),
    config_key!(MetaConfig {
        name: "log_level",
        ock: OCK_LOG_LEVEL,
        flag: Flag::Value("log-level"),
        kind: Level,
        field: log_level,
        default: "info",
        doc: "Log level.",
    }),
    config_key!(MetaConfig {
        name: "log_format", ock: "ock.mmc.log_format", flag: Flag::Value("log-format"),
        kind: LogFormatKind, field: log_format, default: "text",
        doc: "Log lines as text, or one JSON object per line.",
    }),
    config_key!(MetaConfig {
        name: "log_path", ock: "ock.mmc.log_path", flag: Flag::Value("log-path"), kind: Path,
        field: log_path, default: "",
        doc: "A folder for the log file (`mmc-meta.log`, `mmc-local.log`), rotated by size; empty = standard error.",
    }),
    config_key!(MetaConfig {
        name: "log_rotation_file_size", ock: "ock.mmc.log_rotation_file_size",
        kind: crate::logging::FileSize, field: log_rotation_file_size, default: "20",
        doc: "With `log_path`: the log file is rotated when it would pass this size (a plain number is MiB; 4 KiB to 4 GiB).",
    }),
    config_key!(MetaConfig {
        name: "log_rotation_file_count", ock: "ock.mmc.log_rotation_file_count", kind: Int<u32>,
        field: log_rotation_file_count, default: "50", min: 1, max: 1000,
        doc: "With `log_path`: log files kept, the current one included (the oldest is deleted).",
    }),
    config_key!(MetaConfig {
        name: "evict_threshold_high", ock: "ock.mmc.evict_threshold_high",
        flag: Flag::Value("evict-high"), kind: Int<u16>, field: evict_threshold_high,
        default: "90", min: 1, max: 100,
        doc: "Eviction starts when a tier's used space passes this percentage.",
    }),
    config_key!(MetaConfig {
        name: "evict_threshold_low", ock: "ock.mmc.evict_threshold_low",
        flag: Flag::Value("evict-low"), kind: Int<u16>, field: evict_threshold_low,
        default: "80", min: 1, max: 99,
        doc: "... and runs until it is below this percentage (below `evict_threshold_high`).",
    }),
    config_key!(MetaConfig {
        name: "metrics_url",
        ock: "ock.mmc.meta_service.metrics_url",
        flag: Flag::Value("metrics"),
        kind: MetricsUrl,
        field: metrics_url,
        default: "",
        doc: "HTTP address for `GET /metrics` (OpenMetrics text, which Prometheus scrapes) and `/health`; HTTPS with mutual TLS when `tls.enable` is on; empty = off.",
    }),
    config_key!(MetaConfig {
        name: "lease_ms", ock: "ock.mmc.meta.lease_ms", kind: Int<u64>, field: lease_ms,
        default: "10000", min: 1, doc: "How long a read holds an object (its lease).",
    }),
    config_key!(MetaConfig {
        name: "pending_timeout_ms", ock: "ock.mmc.meta.pending_timeout_ms", kind: Int<u64>,
        field: pending_timeout_ms, default: "30000", min: 1,
        doc: "An uncommitted put is reclaimed after this long.",
    }),
    config_key!(MetaConfig {
        name: "member_timeout_ms", ock: "ock.mmc.meta.member_timeout_ms",
        flag: Flag::Value("member-timeout-ms"), kind: Int<u64>, field: member_timeout_ms,
        default: "5000", min: 1,
        doc: "A local service silent this long is paused: no new puts there, its replicas not offered to readers, its objects kept.",
    }),
    config_key!(MetaConfig {
        name: "member_grace_ms", ock: "ock.mmc.meta.member_grace_ms",
        flag: Flag::Value("member-grace-ms"), kind: Int<u64>, field: member_grace_ms,
        default: "20000",
        doc: "A paused local service that heartbeats again within this long after its timeout is re-admitted with its objects; past it they are dropped (0 = drop at the timeout).",
    }),
    config_key!(MetaConfig {
        name: "replica_policy", ock: "ock.mmc.meta.replica_policy",
        flag: Flag::Value("replica-policy"), kind: Policy, field: replica_policy,
        default: "strict",
        doc: "A put asking for more replicas than there are live local services: `strict` fails it with -3013; `best_effort` stores one replica per live service and repairs the rest when services return. Either way, an object that lost a replica with a dead service is repaired onto a live one with room.",
    }),
    config_key!(MetaConfig {
        name: "rebuild_window_ms", ock: "ock.mmc.meta.rebuild_window_ms",
        flag: Flag::Value("rebuild-window-ms"), kind: Int<u64>, field: rebuild_window_ms,
        default: "2000",
        doc: "After a start, gets, exists and removes of keys the directory does not know yet wait up to this long (within the caller's timeout) for the local services to rejoin with their indexes (0 = no wait). Ends early when a brand-new local service registers before any rejoined.",
    }),
    config_key!(MetaConfig {
        name: "heartbeat_ms", ock: "ock.mmc.meta.heartbeat_ms",
        flag: Flag::Value("heartbeat-ms"), kind: Int<u64>, field: heartbeat_ms,
        default: "0",
        doc: "The heartbeat period the meta service asks of local services (a service's own `heartbeat_ms` may make it shorter); at least 10 and at most half of `member_timeout_ms`. 0 = `member_timeout_ms` / 5, clamped to 50..1000.",
    }),
    config_key!(MetaConfig {
        name: "suspect_on_close", ock: "ock.mmc.meta.suspect_on_close",
        flag: Flag::Value("suspect-on-close"), kind: Bool, field: suspect_on_close,
        default: "true",
        doc: "Pause a local service at once when its heartbeat connection closes (a killed process's socket is closed by its kernel); false = only its lease and clients' reports pause it.",
    }),
    config_key!(MetaConfig {
        name: "probe_dead", ock: "ock.mmc.meta.probe_dead",
        flag: Flag::Value("probe-dead"), kind: Bool, field: probe_dead,
        default: "true",
        doc: "After a hint (its connection closed, a client's report) pauses a local service, connect to its data endpoint: refused (or reset) on every attempt = its process is gone, dropped with its objects at once; accepted and held open, or unanswered = it stays paused (lease and grace decide).",
    }),
    config_key!(MetaConfig {
        name: "probe_attempts", ock: "ock.mmc.meta.probe_attempts",
        flag: Flag::Value("probe-attempts"), kind: Int<u32>, field: probe_attempts,
        default: "3", min: 1, max: 10,
        doc: "Connects one probe makes (every one must be refused to confirm a death).",
    }),
    config_key!(MetaConfig {
        name: "probe_interval_ms", ock: "ock.mmc.meta.probe_interval_ms",
        flag: Flag::Value("probe-interval-ms"), kind: Int<u64>, field: probe_interval_ms,
        default: "100", min: 1, max: 1000,
        doc: "Time between a probe's connects, and each connect's timeout.",
    }),
];

config_struct! {
    keys: META_KEYS;
    /// The meta service's settings (`mmc-meta --config meta.toml`, or `mmc-meta.conf`); the keys
    /// are [`META_KEYS`].
    #[derive(Clone, Debug, PartialEq)]
    pub struct MetaConfig {
        /// Where it listens: `tcp://ip:port`.
        pub listen_url: String,
        /// `etcd://...`: elect a leader through etcd; empty = single meta service.
        pub etcd_url: String,
        /// The address the leader publishes in etcd; empty = the bound address.
        pub advertise_url: String,
        /// The leader's etcd lease, in seconds.
        pub etcd_lease_s: u64,
        pub log_level: LogLevel,
        /// Text or JSON log lines.
        pub log_format: crate::logging::LogFormat,
        /// A folder for the log file; empty = standard error.
        pub log_path: String,
        /// Rotate the log file past this many bytes.
        pub log_rotation_file_size: u64,
        /// Log files kept, the current one included.
        pub log_rotation_file_count: u32,
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
        /// A local service silent this long is paused (out of placement, objects kept).
        pub member_timeout_ms: u64,
        /// ... and dropped with its objects when silent this much longer.
        pub member_grace_ms: u64,
        /// Puts asking for more replicas than there are live services: fail, or store fewer.
        pub replica_policy: ReplicaPolicy,
        /// After a start, requests about unknown keys wait this long for services to rejoin.
        pub rebuild_window_ms: u64,
        /// The heartbeat period asked of local services; 0 = derived from `member_timeout_ms`.
        pub heartbeat_ms: u64,
        /// Pause a local service whose heartbeat connection closes.
        pub suspect_on_close: bool,
        /// Probe a local service paused by a hint; drop it if nothing listens at its endpoint.
        pub probe_dead: bool,
        /// Connects per probe.
        pub probe_attempts: u32,
        /// Time between a probe's connects, and each connect's timeout.
        pub probe_interval_ms: u64,
    }
}

impl MetaConfig {
    /// How the binary logs, from the log keys.
    pub fn log_settings(&self) -> crate::logging::LogSettings {
        crate::logging::LogSettings {
            level: self.log_level,
            format: self.log_format,
            path: self.log_path.clone(),
            file_bytes: self.log_rotation_file_size,
            file_count: self.log_rotation_file_count,
        }
    }
    /// Parses TOML: the [`META_KEYS`] at the top level and a `[tls]` table; keys not set keep
    /// their defaults. An unknown key is an error naming it (and the closest known key); a bad
    /// value is an error naming the key. Does not [`validate`](MetaConfig::validate).
    pub fn from_toml_str(text: &str) -> Result<MetaConfig, ConfigError> {
        let t = table::parse_toml(text)?;
        let mut c = MetaConfig::default();
        let mut a = TomlApplier::new(META_KEYS, "");
        for (name, v) in &t {
            if name == "tls" {
                c.tls.apply_toml("tls", v)?;
            } else if !a.apply(name, v, &mut c)? {
                let known = table::toml_names(META_KEYS).chain(["tls"]);
                return Err(table::unknown_toml_key(name, "", known));
            }
        }
        Ok(c)
    }

    /// Reads the `ock.mmc.*` names of [`META_KEYS`] and [`TLS_KEYS`](super::TLS_KEYS) from a
    /// key = value file; keys not set keep their defaults. A bad value is an error naming the
    /// key; an unknown key is a warning naming it and the closest known key. Does not
    /// [`validate`](MetaConfig::validate) (but URLs must parse).
    pub fn from_ock(ock: &OckFile) -> Result<MetaConfig, ConfigError> {
        let mut c = MetaConfig::default();
        table::apply_ock(META_KEYS, ock, &mut c)?;
        c.tls.apply_ock(ock)?;
        ock.warn_unknown("meta service", &MetaConfig::ock_keys());
        Ok(c)
    }

    /// Every `ock.mmc.*` key the meta service reads.
    pub fn ock_keys() -> Vec<&'static str> {
        table::ock_names(META_KEYS)
            .chain(table::ock_names(super::TLS_KEYS))
            .collect()
    }

    /// Whether the meta service reads `key` from a key = value file.
    pub fn is_ock_key(key: &str) -> bool {
        MetaConfig::ock_keys().contains(&key)
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
    pub fn load(path: Option<&std::path::Path>) -> Result<MetaConfig, ConfigError> {
        let cfg = load_config(path, META_CONFIG_ENV, |text, format| {
            let c = MetaConfig::from_text(text, format)?;
            c.validate()?;
            Ok(c)
        })?;
        Ok(cfg.unwrap_or_default())
    }

    /// Checks every key by kind and range (URLs parse and fit the C arrays, percentages, timeouts
    /// above zero), that `evict_threshold_low < evict_threshold_high`, that an explicit
    /// `heartbeat_ms` is at least 10 and at most half of `member_timeout_ms`, and the TLS
    /// settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        table::validate(META_KEYS, self, "")?;
        let (low, high) = (self.evict_threshold_low, self.evict_threshold_high);
        if low >= high {
            return Err(ConfigError::Invalid {
                key: "evict_threshold_low".to_string(),
                reason: format!("{low} must be below evict_threshold_high ({high})"),
            });
        }
        let (beat, timeout) = (self.heartbeat_ms, self.member_timeout_ms);
        if beat != 0 && beat < HEARTBEAT_MS_MIN {
            return Err(ConfigError::Invalid {
                key: "heartbeat_ms".to_string(),
                reason: format!(
                    "{beat} ms is below {HEARTBEAT_MS_MIN} ms, the shortest period a local \
                     service heartbeats at (0 = derived from member_timeout_ms)"
                ),
            });
        }
        if beat != 0 && beat.saturating_mul(2) > timeout {
            return Err(ConfigError::Invalid {
                key: "heartbeat_ms".to_string(),
                reason: format!(
                    "{beat} ms must be at most half of member_timeout_ms ({timeout} ms), so that \
                     one late heartbeat does not pause a local service (0 = derived)"
                ),
            });
        }
        if !self.etcd_url.is_empty() && self.advertise_url.is_empty() {
            let listen =
                super::parse_tcp_url(&self.listen_url).map_err(|e| e.for_key("listen_url"))?;
            if listen.ip().is_unspecified() {
                return Err(ConfigError::Invalid {
                    key: "advertise_url".to_string(),
                    reason: format!(
                        "must be set with etcd_url when listen_url ({}) is a wildcard address: \
                         the leader publishes it for other hosts to reach",
                        self.listen_url
                    ),
                });
            }
        }
        self.tls.validate()
    }

    /// The heartbeat period asked of local services: `heartbeat_ms`, or when 0,
    /// `member_timeout_ms` / 5 clamped to 50..1000 ms.
    pub fn heartbeat_period_ms(&self) -> u64 {
        match self.heartbeat_ms {
            0 => (self.member_timeout_ms / 5).clamp(50, 1_000),
            ms => ms,
        }
    }
}

/// The shortest heartbeat period a local service uses, whatever it is asked (`mmc-local` floors
/// its period at 10 ms).
const HEARTBEAT_MS_MIN: u64 = 10;
