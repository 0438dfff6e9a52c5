//! The local service's settings, [`LocalConfig`], and their keys, [`LOCAL_KEYS`].

use crate::discovery::DiscoveryUrl;
use crate::logging::Format as LogFormatKind;
use crate::table::{
    self, Bool, Flag, Int, Key, Level, MetricsUrl, OptInt, OptTcpUrl, Path, Size, TcpUrl,
};
use crate::{config_key, config_struct};
use crate::{
    load_config, ConfigError, Format, LogLevel, OckFile, TlsConfig, OCK_LOG_LEVEL,
    OCK_META_SERVICE_URL,
};

use super::types::{DeviceBackendName, OptProtocol, Poller};
use super::LOCAL_CONFIG_ENV;
use super::{
    client_and_local_from_toml, local_and_client_ock_keys, DataOpType, DataPoller, Rdma,
    RdmaProvider,
};

/// The local service's keys (TOML names at the top level or in `[local]`; `[tls]` holds
/// [`TLS_KEYS`](crate::TLS_KEYS)).
pub static LOCAL_KEYS: &[Key<LocalConfig>] = &[
    config_key!(LocalConfig {
        name: "meta_url", aliases: ["discovery_url"], ock: OCK_META_SERVICE_URL,
        flag: Flag::Value("meta"), kind: DiscoveryUrl, field: meta_url,
        default: "tcp://127.0.0.1:5000", doc: "Where to find the meta service: its address, or the etcd cluster in which the meta leader publishes its own (high availability).",
    }),
    config_key!(LocalConfig {
        name: "data_url", aliases: ["hcom_url"], ock: "ock.mmc.local_service.hcom_url",
        flag: Flag::Value("listen"), kind: TcpUrl, field: data_url,
        default: "tcp://127.0.0.1:0",
        doc: "Where the data endpoint listens (port 0 = any free port).",
    }),
    config_key!(LocalConfig {
        name: "advertise_url", aliases: ["bm_ip_port"], ock: "ock.mmc.local_service.bm_ip_port",
        flag: Flag::Value("advertise"), kind: OptTcpUrl, field: advertise_url, default: "",
        doc: "The address other hosts use to reach the data endpoint; empty = the bound address, or, when `data_url` binds a wildcard (0.0.0.0, [::]), this host's address toward the meta service.",
    }),
    config_key!(LocalConfig {
        name: "dram_size", ock: "ock.mmc.local_service.dram.size", flag: Flag::Value("dram"),
        kind: Size, field: dram_bytes, default: "256MB",
        doc: "Host memory this service gives the pool (DRAM and HBM 0 = a pure client).",
    }),
    config_key!(LocalConfig {
        name: "hbm_size", ock: "ock.mmc.local_service.hbm.size", flag: Flag::Value("hbm"),
        kind: Size, field: hbm_bytes, default: "0",
        doc: "Device memory (HBM) this service gives the pool, on `device_id`, through the device backend.",
    }),
    config_key!(LocalConfig {
        name: "rank_id", ock: "ock.mmc.local_service.rank_id", flag: Flag::Value("rank"),
        kind: OptInt<u32>, field: rank_id, default: "",
        doc: "A fixed local service id; unset = the meta service assigns one.",
    }),
    config_key!(LocalConfig {
        name: "world_size", ock: "ock.mmc.local_service.world_size", kind: Int<u32>,
        field: world_size, default: "1", doc: "Ascend MemCache's world size (the C `worldSize`).",
    }),
    config_key!(LocalConfig {
        name: "create_id", ock: "ock.mmc.local_service.create_id", flag: Flag::Value("create-id"),
        kind: Int<i32>, field: create_id, default: "0",
        doc: "An id the caller gives this instance, shown in logs and status.",
    }),
    config_key!(LocalConfig {
        name: "device_id", ock: "ock.mmc.local_service.device_id", kind: Int<u32>,
        field: device_id, default: "0", doc: "The device id (the C `deviceId`).",
    }),
    config_key!(LocalConfig {
        name: "device_backend", ock: "ock.mmc.local_service.device_backend",
        flag: Flag::Value("device-backend"), kind: DeviceBackendName, field: device_backend,
        default: "auto",
        doc: "Device memory backend (`auto` probes cuda, then ascend); `MMC_DEVICE_BACKEND` overrides it.",
    }),
    config_key!(LocalConfig {
        name: "protocol", ock: "ock.mmc.local_service.protocol", flag: Flag::Value("protocol"),
        kind: OptProtocol, field: protocol, default: "auto",
        doc: "The C `dataOpType` (`host_tcp`, ... accepted). `auto` (or empty): TCP, same-host shared memory, and RDMA when a device is found; `tcp` / `host_tcp`: TCP only (same-host clients are not offered the pools' shared memory, nor RDMA); `shm` / `host_shm`: the same as `auto`; `rdma` / `host_rdma`: all three, and an RDMA device (see `rdma_provider`) is expected: without one the service warns and serves TCP and shared memory.",
    }),
    config_key!(LocalConfig {
        name: "rdma_provider", ock: "ock.mmc.local_service.rdma_provider",
        flag: Flag::Value("rdma-provider"), kind: Rdma, field: rdma_provider, default: "auto",
        doc: "RDMA verbs provider: `auto` (libibverbs when built in and a device is listed), `sim` (the simulated NIC, same host only), `verbs`, `none`; `MMC_RDMA_PROVIDER` overrides it.",
    }),
    config_key!(LocalConfig {
        name: "log_level", ock: OCK_LOG_LEVEL, flag: Flag::Value("log-level"), kind: Level,
        field: log_level, default: "info", doc: "Log level.",
    }),
    config_key!(LocalConfig {
        name: "log_format", ock: "ock.mmc.log_format", flag: Flag::Value("log-format"),
        kind: LogFormatKind, field: log_format, default: "text",
        doc: "Log lines as text, or one JSON object per line.",
    }),
    config_key!(LocalConfig {
        name: "log_path", ock: "ock.mmc.log_path", flag: Flag::Value("log-path"), kind: Path,
        field: log_path, default: "",
        doc: "A folder for the log file (`mmc-meta.log`, `mmc-local.log`), rotated by size; empty = standard error.",
    }),
    config_key!(LocalConfig {
        name: "log_rotation_file_size", ock: "ock.mmc.log_rotation_file_size",
        kind: crate::logging::FileSize, field: log_rotation_file_size, default: "20",
        doc: "With `log_path`: the log file is rotated when it would pass this size (a plain number is MiB; 4 KiB to 4 GiB).",
    }),
    config_key!(LocalConfig {
        name: "log_rotation_file_count", ock: "ock.mmc.log_rotation_file_count", kind: Int<u32>,
        field: log_rotation_file_count, default: "50", min: 1, max: 1000,
        doc: "With `log_path`: log files kept, the current one included (the oldest is deleted).",
    }),
    config_key!(LocalConfig {
        name: "heartbeat_ms", ock: "ock.mmc.local_service.heartbeat_ms", kind: Int<u64>,
        field: heartbeat_ms, default: "1000", min: 1,
        doc: "How often it reports to the meta service.",
    }),
    config_key!(LocalConfig {
        name: "prefault", ock: "ock.mmc.local_service.prefault",
        flag: Flag::Switch("no-prefault", "false"), kind: Bool, field: prefault, default: "true",
        doc: "Touch the pool's pages at start so the first writes do not fault.",
    }),
    config_key!(LocalConfig {
        name: "busy_poll_us", ock: "ock.mmc.local_service.busy_poll_us",
        flag: Flag::Value("busy-poll-us"), kind: Int<u64>, field: busy_poll_us, default: "0",
        doc: "Spin this long on each data connection for its next request before blocking; 0 = block.",
    }),
    config_key!(LocalConfig {
        name: "data_shards", ock: "ock.mmc.local_service.data_shards",
        flag: Flag::Value("data-shards"), kind: Int<u32>, field: data_shards, default: "0",
        doc: "Shard threads serving data connections; 0 = a thread per connection.",
    }),
    config_key!(LocalConfig {
        name: "data_poller", ock: "ock.mmc.local_service.data_poller",
        flag: Flag::Value("data-poller"), kind: Poller, field: data_poller, default: "mio",
        doc: "What shard loops wait with.",
    }),
    config_key!(LocalConfig {
        name: "metrics_url", ock: "ock.mmc.local_service.metrics_url",
        flag: Flag::Value("metrics"), kind: MetricsUrl, field: metrics_url, default: "",
        doc: "HTTP address for this service's `GET /metrics` (OpenMetrics text, which Prometheus scrapes) and `/health`; HTTPS with mutual TLS when `tls.enable` is on; empty = off.",
    }),
];

config_struct! {
    keys: LOCAL_KEYS;
    /// The local service's settings (`mmc-local --config local.toml`, or `mmc-local.conf`); the
    /// keys are [`LOCAL_KEYS`].
    #[derive(Clone, Debug, PartialEq)]
    pub struct LocalConfig {
        /// Where to find the meta service.
        pub meta_url: String,
        /// Where the data endpoint listens, `tcp://ip:port` (port 0 = any free port).
        pub data_url: String,
        /// The address other hosts use to reach the data endpoint; empty = `data_url`'s bound
        /// address.
        pub advertise_url: String,
        /// Bytes of host memory this service contributes to the pool.
        pub dram_bytes: u64,
        /// Bytes of device memory this service contributes to the pool.
        pub hbm_bytes: u64,
        /// A fixed local service id; `None` = the meta service assigns one at registration.
        pub rank_id: Option<u32>,
        pub world_size: u32,
        /// An id the caller gives this instance, shown in logs and status.
        pub create_id: i32,
        pub device_id: u32,
        /// The device backend: `auto`, `none`, `sim`, `cuda` or `ascend`.
        pub device_backend: String,
        /// What the service offers besides TCP; `None` = auto (see the key's doc).
        pub protocol: Option<DataOpType>,
        /// The RDMA verbs provider whose device serves one-sided transfers.
        pub rdma_provider: RdmaProvider,
        pub log_level: LogLevel,
        /// Text or JSON log lines.
        pub log_format: crate::logging::LogFormat,
        /// A folder for the log file; empty = standard error.
        pub log_path: String,
        /// Rotate the log file past this many bytes.
        pub log_rotation_file_size: u64,
        /// Log files kept, the current one included.
        pub log_rotation_file_count: u32,
        pub tls: TlsConfig,
        /// How often it reports to the meta service.
        pub heartbeat_ms: u64,
        /// Touch the pool's pages at start so the first writes do not fault.
        pub prefault: bool,
        /// Busy-poll each data connection this long for the next request before blocking (lower
        /// latency, burns a core while spinning); 0 = block at once.
        pub busy_poll_us: u64,
        /// Data connections are served by this many shard threads (each owning its connections,
        /// waiting with mio, or spinning in busy-poll mode); 0 = a thread per connection.
        pub data_shards: u32,
        /// What shard loops wait with: mio (epoll) or io_uring.
        pub data_poller: DataPoller,
        /// HTTP `/metrics` and `/health` of this service; empty = off.
        pub metrics_url: String,
    }
}

impl LocalConfig {
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
    /// Parses TOML (see the module docs): the [`LOCAL_KEYS`] and `[tls]` at the top level or in
    /// a `[local]` section. The client's keys are known too (one file holds both); any other key
    /// is an error naming it and the closest known key. Does not [`validate`](LocalConfig::validate).
    pub fn from_toml_str(text: &str) -> Result<LocalConfig, ConfigError> {
        client_and_local_from_toml(text).map(|(_, local)| local)
    }

    /// Reads the `ock.mmc.*` names of [`LOCAL_KEYS`] and the `ock.mmc.tls.*` keys of a key =
    /// value file; keys not set keep their defaults. A bad value is an error naming the key; a
    /// key that neither the local service nor the client knows is a warning. Does not validate
    /// (but URLs must parse).
    pub fn from_ock(ock: &OckFile) -> Result<LocalConfig, ConfigError> {
        let c = LocalConfig::from_ock_quiet(ock)?;
        ock.warn_unknown("local service", &local_and_client_ock_keys());
        Ok(c)
    }

    /// [`LocalConfig::from_ock`] without the warnings.
    pub(crate) fn from_ock_quiet(ock: &OckFile) -> Result<LocalConfig, ConfigError> {
        let mut c = LocalConfig::default();
        table::apply_ock(LOCAL_KEYS, ock, &mut c)?;
        c.tls.apply_ock(ock)?;
        Ok(c)
    }

    /// Parses text in the given format.
    pub fn from_text(text: &str, format: Format) -> Result<LocalConfig, ConfigError> {
        match format {
            Format::Toml => LocalConfig::from_toml_str(text),
            Format::Ock => LocalConfig::from_ock(&OckFile::parse(text)?),
        }
    }

    /// Loads and validates the file at `path`, or, with no path, the one named by
    /// `MMC_LOCAL_CONFIG_PATH`; with neither, the defaults. Errors name the file.
    pub fn load(path: Option<&std::path::Path>) -> Result<LocalConfig, ConfigError> {
        let cfg = load_config(path, LOCAL_CONFIG_ENV, |text, format| {
            let c = LocalConfig::from_text(text, format)?;
            c.validate()?;
            Ok(c)
        })?;
        Ok(cfg.unwrap_or_default())
    }

    /// Checks every key by kind and range (URLs parse and fit the C arrays, pool sizes fit the
    /// address space, `heartbeat_ms` above 0) and the TLS settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        table::validate(LOCAL_KEYS, self, "")?;
        self.tls.validate()
    }

    /// No DRAM and no HBM: this service contributes nothing to the pool (a pure client).
    pub fn is_pure_client(&self) -> bool {
        self.dram_bytes == 0 && self.hbm_bytes == 0
    }
}
