//! Config of the local service (`mmc-local`) and of clients (CONTRACT.md "Config files").
//!
//! Both read the file named by `MMC_LOCAL_CONFIG_PATH` when no path is given, because in an
//! embedded deployment one file configures both:
//! - a key = value file (`mmc-local.conf`) holds the local service's and the client's `ock.mmc.*`
//!   keys side by side; each reader knows the other's keys and does not warn about them;
//! - a TOML file holds the keys of both at the top level, or in `[local]` and `[client]` sections
//!   (a section's keys override the top-level ones; top-level `meta_url`, `rank_id`, `log_level`
//!   and `[tls]` are shared by both). Keys that belong to neither are an error.
//!
//! The shared helpers (sizes, URLs, log levels, TLS, format detection) are in the control plane's
//! `config` module.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use mmc_controlplane::config::{
    check_capacity, check_tcp_url, from_toml, load_config, parse_bool, parse_int, parse_size,
    url_string, ByteSize, ConfigError, Format, LogLevel, OckFile, TlsConfig, OCK_LOG_LEVEL,
    OCK_META_SERVICE_URL, URL_CAPACITY,
};

/// Environment variable naming the local service's (and the client's) config file.
pub const LOCAL_CONFIG_ENV: &str = "MMC_LOCAL_CONFIG_PATH";

/// Default client timeout (the C API's `timeOut` 0 = 60 s).
pub const DEFAULT_CLIENT_TIMEOUT_MS: u64 = 60_000;

const OCK_PROTOCOL: &str = "ock.mmc.local_service.protocol";
const OCK_HCOM_URL: &str = "ock.mmc.local_service.hcom_url";
const OCK_BM_IP_PORT: &str = "ock.mmc.local_service.bm_ip_port";
const OCK_DRAM_SIZE: &str = "ock.mmc.local_service.dram.size";
const OCK_HBM_SIZE: &str = "ock.mmc.local_service.hbm.size";
const OCK_WORLD_SIZE: &str = "ock.mmc.local_service.world_size";
const OCK_RANK_ID: &str = "ock.mmc.local_service.rank_id";
const OCK_CREATE_ID: &str = "ock.mmc.local_service.create_id";
const OCK_DEVICE_ID: &str = "ock.mmc.local_service.device_id";
const OCK_HEARTBEAT_MS: &str = "ock.mmc.local_service.heartbeat_ms";
const OCK_PREFAULT: &str = "ock.mmc.local_service.prefault";
const OCK_LOCAL_BUSY_POLL: &str = "ock.mmc.local_service.busy_poll_us";
const OCK_DATA_SHARDS: &str = "ock.mmc.local_service.data_shards";
const OCK_DATA_POLLER: &str = "ock.mmc.local_service.data_poller";
const OCK_CLIENT_BUSY_POLL: &str = "ock.mmc.client.busy_poll_us";
const OCK_CLIENT_TIMEOUT: &str = "ock.mmc.client.timeout.seconds";
const OCK_CLIENT_READ_POOL: &str = "ock.mmc.client.read_thread_pool.size";
const OCK_CLIENT_WRITE_POOL: &str = "ock.mmc.client.write_thread_pool.size";
const OCK_CLIENT_TRANSPORT: &str = "ock.mmc.client.transport";

/// Local service `ock.mmc.*` keys (besides `ock.mmc.tls.*`).
pub const LOCAL_OCK_KEYS: &[&str] = &[
    OCK_META_SERVICE_URL,
    OCK_PROTOCOL,
    OCK_HCOM_URL,
    OCK_BM_IP_PORT,
    OCK_DRAM_SIZE,
    OCK_HBM_SIZE,
    OCK_WORLD_SIZE,
    OCK_RANK_ID,
    OCK_CREATE_ID,
    OCK_DEVICE_ID,
    OCK_HEARTBEAT_MS,
    OCK_PREFAULT,
    OCK_LOCAL_BUSY_POLL,
    OCK_DATA_SHARDS,
    OCK_DATA_POLLER,
    OCK_LOG_LEVEL,
];

/// Client `ock.mmc.*` keys (besides `ock.mmc.tls.*`).
pub const CLIENT_OCK_KEYS: &[&str] = &[
    OCK_META_SERVICE_URL,
    OCK_CLIENT_TIMEOUT,
    OCK_CLIENT_READ_POOL,
    OCK_CLIENT_WRITE_POOL,
    OCK_CLIENT_TRANSPORT,
    OCK_CLIENT_BUSY_POLL,
    OCK_LOG_LEVEL,
];

/// Whether a local service or client reads `key` from a key = value file (the two share the file,
/// so each knows the other's keys).
pub fn is_local_or_client_ock_key(key: &str) -> bool {
    LOCAL_OCK_KEYS.contains(&key) || CLIENT_OCK_KEYS.contains(&key) || TlsConfig::is_ock_key(key)
}

// ---------------------------------------------------------------------------------------------
// Data transport
// ---------------------------------------------------------------------------------------------

/// How a local service moves data (the C `dataOpType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DataOpType {
    #[default]
    Tcp,
    Shm,
    Rdma,
}

impl DataOpType {
    /// Parses `tcp`/`host_tcp`, `shm`/`host_shm`, `rdma`/`host_rdma` (case-insensitive).
    pub fn parse(s: &str) -> Result<DataOpType, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" | "host_tcp" => Ok(DataOpType::Tcp),
            "shm" | "host_shm" => Ok(DataOpType::Shm),
            "rdma" | "host_rdma" => Ok(DataOpType::Rdma),
            _ => Err(ConfigError::Value {
                value: s.to_string(),
                reason: "expected a protocol: tcp, shm, rdma (or host_tcp, host_shm, host_rdma)"
                    .to_string(),
            }),
        }
    }

    /// `"tcp"`, `"shm"` or `"rdma"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataOpType::Tcp => "tcp",
            DataOpType::Shm => "shm",
            DataOpType::Rdma => "rdma",
        }
    }
}

impl fmt::Display for DataOpType {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataOpType {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        DataOpType::parse(s)
    }
}

impl<'de> Deserialize<'de> for DataOpType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DataOpType::parse(&s).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Config structs
// ---------------------------------------------------------------------------------------------

/// The local service's settings (`mmc-local --config local.toml`, or `mmc-local.conf`).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalConfig {
    /// Where to find the meta service.
    pub meta_url: String,
    /// Where the data endpoint listens, `tcp://ip:port` (port 0 = any free port).
    pub data_url: String,
    /// The address other hosts use to reach the data endpoint; empty = `data_url`'s bound address.
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
    pub protocol: DataOpType,
    pub log_level: LogLevel,
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
}

/// What the local service's shard loops wait for readable connections with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataPoller {
    /// epoll, through mio.
    #[default]
    Mio,
    /// io_uring `POLL_ADD`.
    IoUring,
}

impl DataPoller {
    /// `mio` / `epoll`, or `io_uring` / `uring`.
    pub fn parse(s: &str) -> Result<DataPoller, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mio" | "epoll" => Ok(DataPoller::Mio),
            "io_uring" | "iouring" | "uring" => Ok(DataPoller::IoUring),
            other => Err(ConfigError::Value {
                value: other.to_string(),
                reason: "expected mio or io_uring".to_string(),
            }),
        }
    }
}

impl<'de> Deserialize<'de> for DataPoller {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DataPoller::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            meta_url: "tcp://127.0.0.1:5000".to_string(),
            data_url: "tcp://127.0.0.1:0".to_string(),
            advertise_url: String::new(),
            dram_bytes: 256 << 20,
            hbm_bytes: 0,
            rank_id: None,
            world_size: 1,
            create_id: 0,
            device_id: 0,
            protocol: DataOpType::Tcp,
            log_level: LogLevel::Info,
            tls: TlsConfig::default(),
            heartbeat_ms: 1_000,
            prefault: true,
            busy_poll_us: 0,
            data_shards: 0,
            data_poller: DataPoller::Mio,
        }
    }
}

/// A client's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// Where to find the meta service.
    pub meta_url: String,
    /// The local service this client belongs to (in an embedded deployment).
    pub rank_id: u32,
    pub timeout_ms: u64,
    /// 0 = default.
    pub read_threads: u32,
    /// 0 = default.
    pub write_threads: u32,
    /// Force one transport to other local services (`tcp`, or `shm` where on the same host);
    /// `None` = the fastest that reaches each one (the client's own pool, then shared memory on the
    /// same host, then TCP).
    pub transport: Option<DataOpType>,
    /// Busy-poll this long for each reply before blocking; 0 = block at once.
    pub busy_poll_us: u64,
    pub log_level: LogLevel,
    pub tls: TlsConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            meta_url: "tcp://127.0.0.1:5000".to_string(),
            rank_id: 0,
            timeout_ms: DEFAULT_CLIENT_TIMEOUT_MS,
            read_threads: 0,
            write_threads: 0,
            transport: None,
            busy_poll_us: 0,
            log_level: LogLevel::Info,
            tls: TlsConfig::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TOML schema
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocal {
    #[serde(alias = "discovery_url")]
    meta_url: Option<String>,
    #[serde(alias = "hcom_url")]
    data_url: Option<String>,
    #[serde(alias = "bm_ip_port")]
    advertise_url: Option<String>,
    dram_size: Option<ByteSize>,
    hbm_size: Option<ByteSize>,
    rank_id: Option<u32>,
    world_size: Option<u32>,
    create_id: Option<i32>,
    device_id: Option<u32>,
    protocol: Option<DataOpType>,
    log_level: Option<LogLevel>,
    heartbeat_ms: Option<u64>,
    prefault: Option<bool>,
    busy_poll_us: Option<u64>,
    data_shards: Option<u32>,
    data_poller: Option<DataPoller>,
    tls: Option<TlsConfig>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    #[serde(alias = "discovery_url")]
    meta_url: Option<String>,
    rank_id: Option<u32>,
    timeout_seconds: Option<u64>,
    timeout_ms: Option<u64>,
    read_thread_pool_size: Option<u32>,
    write_thread_pool_size: Option<u32>,
    transport: Option<DataOpType>,
    busy_poll_us: Option<u64>,
    log_level: Option<LogLevel>,
    tls: Option<TlsConfig>,
}

/// A whole TOML file: every local and client key at the top level, plus optional sections.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(alias = "discovery_url")]
    meta_url: Option<String>,
    rank_id: Option<u32>,
    log_level: Option<LogLevel>,
    tls: Option<TlsConfig>,
    // Local service.
    #[serde(alias = "hcom_url")]
    data_url: Option<String>,
    #[serde(alias = "bm_ip_port")]
    advertise_url: Option<String>,
    dram_size: Option<ByteSize>,
    hbm_size: Option<ByteSize>,
    world_size: Option<u32>,
    create_id: Option<i32>,
    device_id: Option<u32>,
    protocol: Option<DataOpType>,
    heartbeat_ms: Option<u64>,
    prefault: Option<bool>,
    busy_poll_us: Option<u64>,
    data_shards: Option<u32>,
    data_poller: Option<DataPoller>,
    // Client.
    timeout_seconds: Option<u64>,
    timeout_ms: Option<u64>,
    read_thread_pool_size: Option<u32>,
    write_thread_pool_size: Option<u32>,
    transport: Option<DataOpType>,
    // Sections.
    local: Option<RawLocal>,
    client: Option<RawClient>,
}

impl RawFile {
    fn local(&self) -> RawLocal {
        let top = RawLocal {
            meta_url: self.meta_url.clone(),
            data_url: self.data_url.clone(),
            advertise_url: self.advertise_url.clone(),
            dram_size: self.dram_size,
            hbm_size: self.hbm_size,
            rank_id: self.rank_id,
            world_size: self.world_size,
            create_id: self.create_id,
            device_id: self.device_id,
            protocol: self.protocol,
            log_level: self.log_level,
            heartbeat_ms: self.heartbeat_ms,
            prefault: self.prefault,
            busy_poll_us: self.busy_poll_us,
            data_shards: self.data_shards,
            data_poller: self.data_poller,
            tls: self.tls.clone(),
        };
        match &self.local {
            Some(section) => section.clone().or(top),
            None => top,
        }
    }

    fn client(&self) -> RawClient {
        let top = RawClient {
            meta_url: self.meta_url.clone(),
            rank_id: self.rank_id,
            timeout_seconds: self.timeout_seconds,
            timeout_ms: self.timeout_ms,
            read_thread_pool_size: self.read_thread_pool_size,
            write_thread_pool_size: self.write_thread_pool_size,
            transport: self.transport,
            busy_poll_us: self.busy_poll_us,
            log_level: self.log_level,
            tls: self.tls.clone(),
        };
        match &self.client {
            Some(section) => section.clone().or(top),
            None => top,
        }
    }
}

impl RawLocal {
    /// Fields set here win over `base`'s.
    fn or(self, base: RawLocal) -> RawLocal {
        RawLocal {
            meta_url: self.meta_url.or(base.meta_url),
            data_url: self.data_url.or(base.data_url),
            advertise_url: self.advertise_url.or(base.advertise_url),
            dram_size: self.dram_size.or(base.dram_size),
            hbm_size: self.hbm_size.or(base.hbm_size),
            rank_id: self.rank_id.or(base.rank_id),
            world_size: self.world_size.or(base.world_size),
            create_id: self.create_id.or(base.create_id),
            device_id: self.device_id.or(base.device_id),
            protocol: self.protocol.or(base.protocol),
            log_level: self.log_level.or(base.log_level),
            heartbeat_ms: self.heartbeat_ms.or(base.heartbeat_ms),
            prefault: self.prefault.or(base.prefault),
            busy_poll_us: self.busy_poll_us.or(base.busy_poll_us),
            data_shards: self.data_shards.or(base.data_shards),
            data_poller: self.data_poller.or(base.data_poller),
            tls: self.tls.or(base.tls),
        }
    }

    fn into_config(self) -> LocalConfig {
        let d = LocalConfig::default();
        LocalConfig {
            meta_url: self.meta_url.unwrap_or(d.meta_url),
            data_url: self.data_url.unwrap_or(d.data_url),
            advertise_url: self.advertise_url.unwrap_or(d.advertise_url),
            dram_bytes: self.dram_size.map_or(d.dram_bytes, |s| s.0),
            hbm_bytes: self.hbm_size.map_or(d.hbm_bytes, |s| s.0),
            rank_id: self.rank_id.or(d.rank_id),
            world_size: self.world_size.unwrap_or(d.world_size),
            create_id: self.create_id.unwrap_or(d.create_id),
            device_id: self.device_id.unwrap_or(d.device_id),
            protocol: self.protocol.unwrap_or(d.protocol),
            log_level: self.log_level.unwrap_or(d.log_level),
            tls: self.tls.unwrap_or(d.tls),
            heartbeat_ms: self.heartbeat_ms.unwrap_or(d.heartbeat_ms),
            prefault: self.prefault.unwrap_or(d.prefault),
            busy_poll_us: self.busy_poll_us.unwrap_or(d.busy_poll_us),
            data_shards: self.data_shards.unwrap_or(d.data_shards),
            data_poller: self.data_poller.unwrap_or(d.data_poller),
        }
    }
}

impl RawClient {
    /// Fields set here win over `base`'s; a timeout set here (in either unit) replaces `base`'s.
    fn or(self, base: RawClient) -> RawClient {
        let own_timeout = self.timeout_ms.is_some() || self.timeout_seconds.is_some();
        let (timeout_ms, timeout_seconds) = if own_timeout {
            (self.timeout_ms, self.timeout_seconds)
        } else {
            (base.timeout_ms, base.timeout_seconds)
        };
        RawClient {
            meta_url: self.meta_url.or(base.meta_url),
            rank_id: self.rank_id.or(base.rank_id),
            timeout_seconds,
            timeout_ms,
            read_thread_pool_size: self.read_thread_pool_size.or(base.read_thread_pool_size),
            write_thread_pool_size: self.write_thread_pool_size.or(base.write_thread_pool_size),
            transport: self.transport.or(base.transport),
            busy_poll_us: self.busy_poll_us.or(base.busy_poll_us),
            log_level: self.log_level.or(base.log_level),
            tls: self.tls.or(base.tls),
        }
    }

    fn into_config(self) -> Result<ClientConfig, ConfigError> {
        let d = ClientConfig::default();
        let timeout_ms = match (self.timeout_ms, self.timeout_seconds) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "timeout_ms".to_string(),
                    reason: "set either timeout_ms or timeout_seconds, not both".to_string(),
                })
            }
            (Some(ms), None) => client_timeout_ms(ms),
            (None, Some(secs)) => {
                client_timeout_secs(secs).map_err(|e| e.for_key("timeout_seconds"))?
            }
            (None, None) => d.timeout_ms,
        };
        Ok(ClientConfig {
            meta_url: self.meta_url.unwrap_or(d.meta_url),
            rank_id: self.rank_id.unwrap_or(d.rank_id),
            timeout_ms,
            read_threads: self.read_thread_pool_size.unwrap_or(d.read_threads),
            write_threads: self.write_thread_pool_size.unwrap_or(d.write_threads),
            transport: self.transport,
            busy_poll_us: self.busy_poll_us.unwrap_or(d.busy_poll_us),
            log_level: self.log_level.unwrap_or(d.log_level),
            tls: self.tls.unwrap_or(d.tls),
        })
    }
}

/// A timeout in milliseconds; 0 = the default (as the C API's `timeOut` 0).
fn client_timeout_ms(ms: u64) -> u64 {
    if ms == 0 {
        DEFAULT_CLIENT_TIMEOUT_MS
    } else {
        ms
    }
}

/// A timeout in seconds, in milliseconds; 0 = the default.
fn client_timeout_secs(secs: u64) -> Result<u64, ConfigError> {
    secs.checked_mul(1000)
        .map(client_timeout_ms)
        .ok_or_else(|| ConfigError::Value {
            value: secs.to_string(),
            reason: "timeout too large".to_string(),
        })
}

// ---------------------------------------------------------------------------------------------
// Key = value files
// ---------------------------------------------------------------------------------------------

fn optional_url(v: &str) -> Result<String, ConfigError> {
    if v.trim().is_empty() {
        Ok(String::new())
    } else {
        url_string(v)
    }
}

fn local_from_ock(ock: &OckFile) -> Result<LocalConfig, ConfigError> {
    let mut c = LocalConfig::default();
    ock.set(OCK_META_SERVICE_URL, &mut c.meta_url, url_string)?;
    ock.set(OCK_PROTOCOL, &mut c.protocol, DataOpType::parse)?;
    ock.set(OCK_HCOM_URL, &mut c.data_url, url_string)?;
    ock.set(OCK_BM_IP_PORT, &mut c.advertise_url, optional_url)?;
    ock.set(OCK_DRAM_SIZE, &mut c.dram_bytes, parse_size)?;
    ock.set(OCK_HBM_SIZE, &mut c.hbm_bytes, parse_size)?;
    ock.set(OCK_WORLD_SIZE, &mut c.world_size, parse_int)?;
    ock.set(OCK_RANK_ID, &mut c.rank_id, parse_rank)?;
    ock.set(OCK_CREATE_ID, &mut c.create_id, parse_int)?;
    ock.set(OCK_DEVICE_ID, &mut c.device_id, parse_int)?;
    ock.set(OCK_HEARTBEAT_MS, &mut c.heartbeat_ms, parse_int)?;
    ock.set(OCK_PREFAULT, &mut c.prefault, parse_bool)?;
    ock.set(OCK_LOCAL_BUSY_POLL, &mut c.busy_poll_us, parse_int)?;
    ock.set(OCK_DATA_SHARDS, &mut c.data_shards, parse_int)?;
    ock.set(OCK_DATA_POLLER, &mut c.data_poller, DataPoller::parse)?;
    ock.set(OCK_LOG_LEVEL, &mut c.log_level, LogLevel::parse)?;
    c.tls.apply_ock(ock)?;
    Ok(c)
}

/// An empty rank id means "not fixed".
fn parse_rank(v: &str) -> Result<Option<u32>, ConfigError> {
    if v.trim().is_empty() {
        Ok(None)
    } else {
        parse_int(v).map(Some)
    }
}

fn client_from_ock(ock: &OckFile) -> Result<ClientConfig, ConfigError> {
    let mut c = ClientConfig::default();
    ock.set(OCK_META_SERVICE_URL, &mut c.meta_url, url_string)?;
    if let Some(Some(rank)) = ock.parse_key(OCK_RANK_ID, parse_rank)? {
        c.rank_id = rank;
    }
    ock.set(OCK_CLIENT_TIMEOUT, &mut c.timeout_ms, |v| {
        client_timeout_secs(parse_int(v)?)
    })?;
    ock.set(OCK_CLIENT_READ_POOL, &mut c.read_threads, parse_int)?;
    ock.set(OCK_CLIENT_WRITE_POOL, &mut c.write_threads, parse_int)?;
    if let Some(t) = ock.parse_key(OCK_CLIENT_TRANSPORT, DataOpType::parse)? {
        c.transport = Some(t);
    }
    ock.set(OCK_CLIENT_BUSY_POLL, &mut c.busy_poll_us, parse_int)?;
    ock.set(OCK_LOG_LEVEL, &mut c.log_level, LogLevel::parse)?;
    c.tls.apply_ock(ock)?;
    Ok(c)
}

fn check_size(key: &str, bytes: u64) -> Result<(), ConfigError> {
    if usize::try_from(bytes).map_or(true, |b| b > isize::MAX as usize) {
        return Err(ConfigError::Invalid {
            key: key.to_string(),
            reason: format!("{bytes} bytes does not fit in this machine's address space"),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

impl LocalConfig {
    /// Parses TOML (see the module docs): `meta_url` (alias `discovery_url`), `data_url` (alias
    /// `hcom_url`), `advertise_url` (alias `bm_ip_port`), `dram_size`, `hbm_size` (bytes or a size
    /// string such as `"1GB"`), `rank_id`, `world_size`, `create_id`, `device_id`, `protocol`,
    /// `log_level`, `heartbeat_ms`, `prefault`, `[tls]`, or the same in a `[local]` section. An
    /// unknown key is an error naming it. Does not [`validate`](LocalConfig::validate).
    pub fn from_toml_str(text: &str) -> Result<LocalConfig, ConfigError> {
        Ok(from_toml::<RawFile>(text)?.local().into_config())
    }

    /// Reads the [`LOCAL_OCK_KEYS`] and `ock.mmc.tls.*` of a key = value file; keys not set keep
    /// their defaults. A bad value is an error naming the key; a key that neither the local
    /// service nor the client knows is a warning. Does not validate (but URLs must parse).
    pub fn from_ock(ock: &OckFile) -> Result<LocalConfig, ConfigError> {
        let c = local_from_ock(ock)?;
        ock.warn_unknown("local service", is_local_or_client_ock_key);
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
    pub fn load(path: Option<&Path>) -> Result<LocalConfig, ConfigError> {
        let cfg = load_config(path, LOCAL_CONFIG_ENV, |text, format| {
            let c = LocalConfig::from_text(text, format)?;
            c.validate()?;
            Ok(c)
        })?;
        Ok(cfg.unwrap_or_default())
    }

    /// Checks that `meta_url`, `data_url` and `advertise_url` (if set) parse and fit the C arrays,
    /// that the pool sizes fit the address space, `heartbeat_ms` is above 0 and the TLS settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_tcp_url("meta_url", &self.meta_url)?;
        check_tcp_url("data_url", &self.data_url)?;
        if !self.advertise_url.is_empty() {
            check_tcp_url("advertise_url", &self.advertise_url)?;
        }
        check_size("dram_size", self.dram_bytes)?;
        check_size("hbm_size", self.hbm_bytes)?;
        if self.heartbeat_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "heartbeat_ms".to_string(),
                reason: "must be above 0".to_string(),
            });
        }
        self.tls.validate()
    }

    /// No DRAM and no HBM: this service contributes nothing to the pool (a pure client).
    pub fn is_pure_client(&self) -> bool {
        self.dram_bytes == 0 && self.hbm_bytes == 0
    }
}

impl ClientConfig {
    /// Parses TOML (see the module docs): `meta_url` (alias `discovery_url`), `rank_id`,
    /// `timeout_seconds` or `timeout_ms` (0 = default 60 s), `read_thread_pool_size`,
    /// `write_thread_pool_size`, `log_level`, `[tls]`, or the same in a `[client]` section. An
    /// unknown key is an error naming it. Does not [`validate`](ClientConfig::validate).
    pub fn from_toml_str(text: &str) -> Result<ClientConfig, ConfigError> {
        from_toml::<RawFile>(text)?.client().into_config()
    }

    /// Reads the [`CLIENT_OCK_KEYS`] and `ock.mmc.tls.*` of a key = value file (the rank comes from
    /// `ock.mmc.local_service.rank_id` when set); `ock.mmc.client.timeout.seconds` 0 = default.
    /// A bad value is an error naming the key; a key that neither the local service nor the
    /// client knows is a warning.
    pub fn from_ock(ock: &OckFile) -> Result<ClientConfig, ConfigError> {
        let c = client_from_ock(ock)?;
        ock.warn_unknown("client", is_local_or_client_ock_key);
        Ok(c)
    }

    /// Parses text in the given format.
    pub fn from_text(text: &str, format: Format) -> Result<ClientConfig, ConfigError> {
        match format {
            Format::Toml => ClientConfig::from_toml_str(text),
            Format::Ock => ClientConfig::from_ock(&OckFile::parse(text)?),
        }
    }

    /// Loads and validates the file at `path`, or, with no path, the one named by
    /// `MMC_LOCAL_CONFIG_PATH`; with neither, the defaults. Errors name the file.
    pub fn load(path: Option<&Path>) -> Result<ClientConfig, ConfigError> {
        let cfg = load_config(path, LOCAL_CONFIG_ENV, |text, format| {
            let c = ClientConfig::from_text(text, format)?;
            c.validate()?;
            Ok(c)
        })?;
        Ok(cfg.unwrap_or_default())
    }

    /// Checks that `meta_url` parses and fits the C array, `timeout_ms` is above 0 and the TLS
    /// settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_tcp_url("meta_url", &self.meta_url)?;
        check_capacity("meta_url", &self.meta_url, URL_CAPACITY)?;
        if self.timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                key: "timeout_ms".to_string(),
                reason: "must be above 0".to_string(),
            });
        }
        self.tls.validate()
    }
}

/// Parses both configs from one text (TOML with top-level keys and/or `[client]` and `[local]`
/// sections, or a key = value file, whose unknown keys are warned about once).
pub fn client_and_local_from_text(
    text: &str,
    format: Format,
) -> Result<(ClientConfig, LocalConfig), ConfigError> {
    match format {
        Format::Toml => {
            let raw: RawFile = from_toml(text)?;
            Ok((raw.client().into_config()?, raw.local().into_config()))
        }
        Format::Ock => {
            let ock = OckFile::parse(text)?;
            let pair = (client_from_ock(&ock)?, local_from_ock(&ock)?);
            ock.warn_unknown("local service and client", is_local_or_client_ock_key);
            Ok(pair)
        }
    }
}

/// Loads and validates the client and local service settings of an embedded deployment from the
/// file at `path`, or, with no path, the one named by `MMC_LOCAL_CONFIG_PATH`; with neither, the
/// defaults. Errors name the file.
pub fn load_client_and_local(
    path: Option<&Path>,
) -> Result<(ClientConfig, LocalConfig), ConfigError> {
    let pair = load_config(path, LOCAL_CONFIG_ENV, |text, format| {
        let (client, local) = client_and_local_from_text(text, format)?;
        client.validate()?;
        local.validate()?;
        Ok((client, local))
    })?;
    Ok(pair.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    const GIB: u64 = 1 << 30;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    const FULL_OCK: &str = "# mmc-local.conf\n\
        ock.mmc.meta_service_url = tcp://10.0.0.1:5000\n\
        ock.mmc.local_service.protocol = host_shm\n\
        ock.mmc.local_service.hcom_url = tcp://0.0.0.0:6000\n\
        ock.mmc.local_service.bm_ip_port = tcp://10.0.0.2:6000\n\
        ock.mmc.local_service.dram.size = 2GB\n\
        ock.mmc.local_service.hbm.size = 512mb\n\
        ock.mmc.local_service.world_size = 8\n\
        ock.mmc.local_service.rank_id = 3\n\
        ock.mmc.local_service.create_id = -7\n\
        ock.mmc.local_service.device_id = 2\n\
        ock.mmc.local_service.heartbeat_ms = 250\n\
        ock.mmc.local_service.prefault = false\n\
        ock.mmc.log_level = debug\n\
        \n\
        ock.mmc.client.timeout.seconds = 30\n\
        ock.mmc.client.read_thread_pool.size = 4\n\
        ock.mmc.client.write_thread_pool.size = 5\n\
        ock.mmc.tls.enable = false\n\
        ock.mmc.tls.cert.path = \"/etc/cert.pem\"\n";

    fn full_local() -> LocalConfig {
        LocalConfig {
            meta_url: "tcp://10.0.0.1:5000".into(),
            data_url: "tcp://0.0.0.0:6000".into(),
            advertise_url: "tcp://10.0.0.2:6000".into(),
            dram_bytes: 2 * GIB,
            hbm_bytes: 512 << 20,
            rank_id: Some(3),
            world_size: 8,
            create_id: -7,
            device_id: 2,
            protocol: DataOpType::Shm,
            log_level: LogLevel::Debug,
            tls: TlsConfig {
                cert_path: "/etc/cert.pem".into(),
                ..TlsConfig::default()
            },
            heartbeat_ms: 250,
            prefault: false,
            busy_poll_us: 0,
            data_shards: 0,
            data_poller: DataPoller::Mio,
        }
    }

    fn full_client() -> ClientConfig {
        ClientConfig {
            meta_url: "tcp://10.0.0.1:5000".into(),
            rank_id: 3,
            timeout_ms: 30_000,
            read_threads: 4,
            write_threads: 5,
            transport: None,
            busy_poll_us: 0,
            log_level: LogLevel::Debug,
            tls: TlsConfig {
                cert_path: "/etc/cert.pem".into(),
                ..TlsConfig::default()
            },
        }
    }

    #[test]
    fn client_transport_from_toml_and_ock() {
        let c = ClientConfig::from_toml_str("[client]\ntransport = \"tcp\"").unwrap();
        assert_eq!(c.transport, Some(DataOpType::Tcp));
        let ock = OckFile::parse("ock.mmc.client.transport = host_shm").unwrap();
        assert_eq!(
            ClientConfig::from_ock(&ock).unwrap().transport,
            Some(DataOpType::Shm)
        );
        assert_eq!(ClientConfig::default().transport, None);
    }

    #[test]
    fn data_op_type() {
        for (s, want) in [
            ("tcp", DataOpType::Tcp),
            ("host_tcp", DataOpType::Tcp),
            ("TCP", DataOpType::Tcp),
            ("shm", DataOpType::Shm),
            ("Host_SHM", DataOpType::Shm),
            ("rdma", DataOpType::Rdma),
            (" host_rdma ", DataOpType::Rdma),
        ] {
            assert_eq!(DataOpType::parse(s).unwrap(), want, "{s}");
            assert_eq!(DataOpType::parse(want.as_str()).unwrap(), want);
        }
        for bad in ["", "udp", "host_udp", "tcp6"] {
            let e = DataOpType::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
        assert_eq!(DataOpType::Rdma.to_string(), "rdma");
        assert_eq!(DataOpType::default(), DataOpType::Tcp);
    }

    #[test]
    fn defaults() {
        let l = LocalConfig::default();
        assert_eq!(l.dram_bytes, 256 << 20);
        assert_eq!(l.rank_id, None);
        assert!(l.prefault);
        l.validate().unwrap();
        let c = ClientConfig::default();
        assert_eq!(c.timeout_ms, 60_000);
        c.validate().unwrap();
        assert_eq!(LocalConfig::from_toml_str("").unwrap(), l);
        assert_eq!(ClientConfig::from_toml_str("").unwrap(), c);
        assert!(!l.is_pure_client());
        assert!(LocalConfig { dram_bytes: 0, ..l }.is_pure_client());
    }

    #[test]
    fn local_from_toml() {
        let text = "meta_url = \"tcp://10.0.0.1:5000\"\n\
            data_url = \"tcp://0.0.0.0:6000\"\n\
            advertise_url = \"tcp://10.0.0.2:6000\"\n\
            dram_size = \"2GB\"\n\
            hbm_size = 536870912\n\
            rank_id = 3\nworld_size = 8\ncreate_id = -7\ndevice_id = 2\n\
            protocol = \"host_shm\"\nlog_level = \"debug\"\nheartbeat_ms = 250\nprefault = false\n\
            [tls]\ncert_path = \"/etc/cert.pem\"\n";
        assert_eq!(LocalConfig::from_toml_str(text).unwrap(), full_local());

        // Aliases, and the same keys in a [local] section.
        let text = "discovery_url = \"tcp://10.0.0.1:5000\"\n\
            hcom_url = \"tcp://0.0.0.0:6000\"\nbm_ip_port = \"tcp://10.0.0.2:6000\"\n\
            [local]\ndram_size = \"2 GiB\"\nhbm_size = \"512M\"\nrank_id = 3\nworld_size = 8\n\
            create_id = -7\ndevice_id = 2\nprotocol = \"shm\"\nlog_level = 0\nheartbeat_ms = 250\n\
            prefault = false\n[local.tls]\ncert_path = \"/etc/cert.pem\"\n";
        assert_eq!(LocalConfig::from_toml_str(text).unwrap(), full_local());

        // Client keys are known (one file holds both); unknown keys are errors naming the key.
        LocalConfig::from_toml_str("timeout_seconds = 5\nread_thread_pool_size = 2").unwrap();
        for (text, key) in [
            ("dram_sise = 1", "dram_sise"),
            ("[local]\ntimeout_seconds = 1", "timeout_seconds"),
            ("[tls]\nca = \"x\"", "ca"),
            ("[extra]\nx = 1", "extra"),
        ] {
            let e = LocalConfig::from_toml_str(text).unwrap_err();
            assert!(matches!(e, ConfigError::Toml(_)), "{e:?}");
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
        // Bad values name the key.
        for (text, key) in [
            ("dram_size = \"lots\"", "dram_size"),
            ("hbm_size = -1", "hbm_size"),
            ("hbm_size = \"1PB\"", "hbm_size"),
            ("protocol = \"udp\"", "protocol"),
            ("rank_id = -1", "rank_id"),
            ("prefault = \"yes please\"", "prefault"),
            ("[local]\nworld_size = \"8\"", "world_size"),
        ] {
            let e = LocalConfig::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn local_and_client_from_ock() {
        let ock = OckFile::parse(FULL_OCK).unwrap();
        assert_eq!(LocalConfig::from_ock(&ock).unwrap(), full_local());
        assert_eq!(ClientConfig::from_ock(&ock).unwrap(), full_client());
        // Neither warns about the other's keys.
        assert!(ock.unknown_keys(is_local_or_client_ock_key).is_empty());
        assert_eq!(
            client_and_local_from_text(FULL_OCK, Format::Ock).unwrap(),
            (full_client(), full_local())
        );

        // An unknown key is a warning, not an error.
        let text = format!("{FULL_OCK}ock.mmc.local_service.future_knob = 1\n");
        let ock = OckFile::parse(&text).unwrap();
        assert_eq!(LocalConfig::from_ock(&ock).unwrap(), full_local());
        assert_eq!(ClientConfig::from_ock(&ock).unwrap(), full_client());
        assert_eq!(
            ock.unknown_keys(is_local_or_client_ock_key),
            vec![("ock.mmc.local_service.future_knob", 21)]
        );

        // Empty rank id = not fixed; timeout 0 = default.
        let ock = OckFile::parse(
            "ock.mmc.local_service.rank_id =\nock.mmc.client.timeout.seconds = 0\n\
             ock.mmc.local_service.bm_ip_port = \"\"",
        )
        .unwrap();
        assert_eq!(LocalConfig::from_ock(&ock).unwrap().rank_id, None);
        assert_eq!(LocalConfig::from_ock(&ock).unwrap().advertise_url, "");
        let c = ClientConfig::from_ock(&ock).unwrap();
        assert_eq!((c.rank_id, c.timeout_ms), (0, 60_000));

        // Bad values name the key.
        for line in [
            "ock.mmc.meta_service_url = 10.0.0.1",
            "ock.mmc.local_service.protocol = udp",
            "ock.mmc.local_service.hcom_url = http://1.2.3.4:5",
            "ock.mmc.local_service.bm_ip_port = nowhere",
            "ock.mmc.local_service.dram.size = 2XB",
            "ock.mmc.local_service.hbm.size = -1",
            "ock.mmc.local_service.world_size = many",
            "ock.mmc.local_service.rank_id = -1",
            "ock.mmc.local_service.create_id = 3000000000",
            "ock.mmc.local_service.device_id = gpu0",
            "ock.mmc.local_service.heartbeat_ms = 1s",
            "ock.mmc.local_service.prefault = maybe",
            "ock.mmc.log_level = 9",
            "ock.mmc.tls.enable = 2",
        ] {
            let key = line.split(" = ").next().unwrap();
            let ock = OckFile::parse(line).unwrap();
            let e = LocalConfig::from_ock(&ock).unwrap_err();
            assert!(matches!(e, ConfigError::KeyValue { .. }), "{line}: {e:?}");
            assert!(e.to_string().contains(&format!("`{key}`")), "{e}");
        }
        for line in [
            "ock.mmc.client.timeout.seconds = 1.5",
            "ock.mmc.client.timeout.seconds = 18446744073709551615",
            "ock.mmc.client.read_thread_pool.size = -4",
            "ock.mmc.client.write_thread_pool.size = x",
            "ock.mmc.local_service.rank_id = r",
        ] {
            let key = line.split(" = ").next().unwrap();
            let ock = OckFile::parse(line).unwrap();
            let e = ClientConfig::from_ock(&ock).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{e}");
        }
    }

    #[test]
    fn client_from_toml() {
        let text = "meta_url = \"tcp://10.0.0.1:5000\"\nrank_id = 3\ntimeout_seconds = 30\n\
            read_thread_pool_size = 4\nwrite_thread_pool_size = 5\nlog_level = \"debug\"\n\
            [tls]\ncert_path = \"/etc/cert.pem\"\n";
        assert_eq!(ClientConfig::from_toml_str(text).unwrap(), full_client());
        let text = "[client]\ndiscovery_url = \"tcp://10.0.0.1:5000\"\nrank_id = 3\n\
            timeout_ms = 30000\nread_thread_pool_size = 4\nwrite_thread_pool_size = 5\n\
            log_level = 0\n[client.tls]\ncert_path = \"/etc/cert.pem\"\n";
        assert_eq!(ClientConfig::from_toml_str(text).unwrap(), full_client());
        assert_eq!(
            ClientConfig::from_toml_str("timeout_ms = 0")
                .unwrap()
                .timeout_ms,
            60_000
        );
        // A section's timeout replaces the top-level one, whatever the unit.
        let c = ClientConfig::from_toml_str("timeout_ms = 5\n[client]\ntimeout_seconds = 2\n");
        assert_eq!(c.unwrap().timeout_ms, 2_000);

        let e = ClientConfig::from_toml_str("timeout_ms = 1\ntimeout_seconds = 1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("timeout_ms") && e.contains("timeout_seconds"),
            "{e}"
        );
        let e = ClientConfig::from_toml_str("timeout_seconds = 18446744073709552")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timeout_seconds"), "{e}");
        for (text, key) in [
            ("[client]\ndram_size = 1", "dram_size"),
            ("[client]\nbogus = 1", "bogus"),
            ("read_threads = 1", "read_threads"),
        ] {
            let e = ClientConfig::from_toml_str(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let e = ClientConfig::from_toml_str("read_thread_pool_size = -1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("read_thread_pool_size"), "{e}");
    }

    #[test]
    fn combined_toml() {
        let text = "meta_url = \"tcp://10.0.0.1:5000\"\nlog_level = \"warn\"\n\
            [client]\ntimeout_seconds = 7\nrank_id = 1\n\
            [local]\ndram_size = \"1GB\"\nhbm_size = \"1GB\"\nprotocol = \"rdma\"\n\
            log_level = \"error\"\n";
        let (c, l) = client_and_local_from_text(text, Format::Toml).unwrap();
        assert_eq!(c.meta_url, "tcp://10.0.0.1:5000");
        assert_eq!(l.meta_url, "tcp://10.0.0.1:5000");
        assert_eq!(
            (c.timeout_ms, c.rank_id, c.log_level),
            (7_000, 1, LogLevel::Warn)
        );
        assert_eq!((l.dram_bytes, l.hbm_bytes), (GIB, GIB));
        assert_eq!(
            (l.protocol, l.log_level, l.rank_id),
            (DataOpType::Rdma, LogLevel::Error, None)
        );
        // The single-config readers accept the combined file too.
        assert_eq!(ClientConfig::from_toml_str(text).unwrap(), c);
        assert_eq!(LocalConfig::from_toml_str(text).unwrap(), l);
        // A section can override the shared meta_url.
        let (c, l) = client_and_local_from_text(
            "meta_url = \"tcp://1.1.1.1:1\"\n[local]\nmeta_url = \"tcp://2.2.2.2:2\"\n",
            Format::Toml,
        )
        .unwrap();
        assert_eq!(
            (c.meta_url.as_str(), l.meta_url.as_str()),
            ("tcp://1.1.1.1:1", "tcp://2.2.2.2:2")
        );
        let e = client_and_local_from_text("[local]\nnope = 1\n", Format::Toml)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn validation() {
        LocalConfig::default().validate().unwrap();
        let bad = |c: LocalConfig, key: &str| {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        };
        let d = LocalConfig::default;
        bad(
            LocalConfig {
                meta_url: "x".into(),
                ..d()
            },
            "meta_url",
        );
        bad(
            LocalConfig {
                data_url: "tcp://1.2.3.4".into(),
                ..d()
            },
            "data_url",
        );
        bad(
            LocalConfig {
                advertise_url: "tcp://:1".into(),
                ..d()
            },
            "advertise_url",
        );
        bad(
            LocalConfig {
                dram_bytes: u64::MAX,
                ..d()
            },
            "dram_size",
        );
        bad(
            LocalConfig {
                hbm_bytes: 1 << 63,
                ..d()
            },
            "hbm_size",
        );
        bad(
            LocalConfig {
                heartbeat_ms: 0,
                ..d()
            },
            "heartbeat_ms",
        );
        let tls = TlsConfig {
            enable: true,
            ..TlsConfig::default()
        };
        bad(LocalConfig { tls, ..d() }, "tls.ca_path");
        bad(
            LocalConfig {
                data_url: format!("tcp://127.0.0.1:1{}", " ".repeat(1100)),
                ..d()
            },
            "data_url",
        );
        LocalConfig {
            advertise_url: "10.0.0.9:7000".into(),
            ..d()
        }
        .validate()
        .unwrap();

        let c = ClientConfig {
            timeout_ms: 0,
            ..ClientConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("timeout_ms"));
        let c = ClientConfig {
            meta_url: "tcp://1.2.3.4:99999".into(),
            ..ClientConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("meta_url"));
    }

    #[test]
    fn load_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ock = write(d, "mmc-local.conf", FULL_OCK);
        assert_eq!(LocalConfig::load(Some(&ock)).unwrap(), full_local());
        assert_eq!(ClientConfig::load(Some(&ock)).unwrap(), full_client());
        assert_eq!(
            load_client_and_local(Some(&ock)).unwrap(),
            (full_client(), full_local())
        );

        let toml_p = write(
            d,
            "embedded.toml",
            "meta_url = \"tcp://127.0.0.1:7100\"\n[client]\ntimeout_seconds = 3\n\
             [local]\ndram_size = \"64MB\"\ndata_url = \"tcp://127.0.0.1:0\"\n",
        );
        let (c, l) = load_client_and_local(Some(&toml_p)).unwrap();
        assert_eq!(
            (c.meta_url.as_str(), c.timeout_ms),
            ("tcp://127.0.0.1:7100", 3_000)
        );
        assert_eq!(
            (l.meta_url.as_str(), l.dram_bytes),
            ("tcp://127.0.0.1:7100", 64 << 20)
        );
        assert_eq!(LocalConfig::load(Some(&toml_p)).unwrap(), l);
        assert_eq!(ClientConfig::load(Some(&toml_p)).unwrap(), c);

        // Errors name the file and what is wrong.
        let bad = write(d, "bad.toml", "[local]\ndram_size = \"huge\"\n");
        for e in [
            LocalConfig::load(Some(&bad)).unwrap_err().to_string(),
            load_client_and_local(Some(&bad)).unwrap_err().to_string(),
        ] {
            assert!(e.contains("bad.toml") && e.contains("dram_size"), "{e}");
        }
        let invalid = write(
            d,
            "invalid.conf",
            "ock.mmc.local_service.heartbeat_ms = 0\n",
        );
        let e = LocalConfig::load(Some(&invalid)).unwrap_err().to_string();
        assert!(
            e.contains("invalid.conf") && e.contains("heartbeat_ms"),
            "{e}"
        );
        let e = ClientConfig::load(Some(&d.join("absent.conf")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent.conf"), "{e}");
    }

    /// The only test that touches `MMC_LOCAL_CONFIG_PATH` (environment variables are process-wide).
    #[test]
    fn load_via_env_var() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "mmc-local.conf", FULL_OCK);
        std::env::remove_var(LOCAL_CONFIG_ENV);
        assert_eq!(LocalConfig::load(None).unwrap(), LocalConfig::default());
        assert_eq!(ClientConfig::load(None).unwrap(), ClientConfig::default());
        assert_eq!(
            load_client_and_local(None).unwrap(),
            (ClientConfig::default(), LocalConfig::default())
        );
        std::env::set_var(LOCAL_CONFIG_ENV, &p);
        assert_eq!(LocalConfig::load(None).unwrap(), full_local());
        assert_eq!(ClientConfig::load(None).unwrap(), full_client());
        assert_eq!(
            load_client_and_local(None).unwrap(),
            (full_client(), full_local())
        );
        // An explicit path wins over the variable.
        let q = write(dir.path(), "l.toml", "device_id = 5\n");
        assert_eq!(LocalConfig::load(Some(&q)).unwrap().device_id, 5);
        std::env::set_var(LOCAL_CONFIG_ENV, dir.path().join("gone.conf"));
        let e = LocalConfig::load(None).unwrap_err().to_string();
        assert!(e.contains("gone.conf"), "{e}");
        std::env::remove_var(LOCAL_CONFIG_ENV);
    }
}
