//! The data plane's value types (transport, shard poller) and their key kinds.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::table::Kind;
use crate::ConfigError;

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

/// A [`DataOpType`].
pub struct Protocol;

impl Kind for Protocol {
    type Value = DataOpType;
    const NAME: &'static str = "`tcp`, `shm` or `rdma`";
    fn from_text(s: &str) -> Result<DataOpType, ConfigError> {
        DataOpType::parse(s)
    }
}

/// A [`DataOpType`], or empty / `auto` (unset).
pub struct OptProtocol;

impl Kind for OptProtocol {
    type Value = Option<DataOpType>;
    const NAME: &'static str = "`tcp`, `shm`, `rdma` or `auto`";
    fn from_text(s: &str) -> Result<Option<DataOpType>, ConfigError> {
        if s.trim().is_empty() || s.trim().eq_ignore_ascii_case("auto") {
            Ok(None)
        } else {
            DataOpType::parse(s).map(Some)
        }
    }
}

/// A [`DataPoller`].
pub struct Poller;

impl Kind for Poller {
    type Value = DataPoller;
    const NAME: &'static str = "`mio` or `io_uring`";
    fn from_text(s: &str) -> Result<DataPoller, ConfigError> {
        DataPoller::parse(s)
    }
}

/// A device backend name: `auto`, `none`, `sim`, `cuda` or `ascend` (kept as text; the data
/// plane turns it into its backend choice).
pub struct DeviceBackendName;

impl Kind for DeviceBackendName {
    type Value = String;
    const NAME: &'static str = "`auto`, `none`, `sim`, `cuda` or `ascend`";
    fn from_text(s: &str) -> Result<String, ConfigError> {
        let v = s.trim().to_ascii_lowercase();
        match v.as_str() {
            "auto" | "none" | "sim" | "cuda" | "ascend" => Ok(v),
            _ => Err(ConfigError::Value {
                value: s.to_string(),
                reason: "expected auto, none, sim, cuda or ascend".to_string(),
            }),
        }
    }
}

/// Which RDMA verbs provider a process uses (`MMC_RDMA_PROVIDER` overrides it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RdmaProvider {
    /// The system's libibverbs when this build has it (cargo feature `rdma`) and it lists a
    /// device; else none.
    #[default]
    Auto,
    /// The simulated NIC (same host only; for tests and measurements without hardware).
    Sim,
    /// The system's libibverbs, required.
    Verbs,
    /// No RDMA.
    None,
}

impl RdmaProvider {
    /// `auto` (or empty), `sim`, `verbs`, `none`.
    pub fn parse(s: &str) -> Result<RdmaProvider, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(RdmaProvider::Auto),
            "sim" => Ok(RdmaProvider::Sim),
            "verbs" | "ibverbs" => Ok(RdmaProvider::Verbs),
            "none" | "off" => Ok(RdmaProvider::None),
            other => Err(ConfigError::Value {
                value: other.to_string(),
                reason: "expected auto, sim, verbs or none".to_string(),
            }),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            RdmaProvider::Auto => "auto",
            RdmaProvider::Sim => "sim",
            RdmaProvider::Verbs => "verbs",
            RdmaProvider::None => "none",
        }
    }
}

impl<'de> Deserialize<'de> for RdmaProvider {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RdmaProvider::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How the RDMA transport makes caller memory (`put_from` / `get_into` pointers) usable by the
/// NIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RdmaCallerMemory {
    /// Register it: buffers the application registered are kept registered (an MR cache),
    /// other memory is registered for the call. Zero copies.
    #[default]
    MrCache,
    /// Copy it through registered staging buffers (one per queue pair); nothing of the caller's
    /// is ever registered.
    Bounce,
}

impl RdmaCallerMemory {
    /// `mr_cache` (or empty) or `bounce`.
    pub fn parse(s: &str) -> Result<RdmaCallerMemory, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "mr_cache" | "mr-cache" => Ok(RdmaCallerMemory::MrCache),
            "bounce" => Ok(RdmaCallerMemory::Bounce),
            other => Err(ConfigError::Value {
                value: other.to_string(),
                reason: "expected mr_cache or bounce".to_string(),
            }),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            RdmaCallerMemory::MrCache => "mr_cache",
            RdmaCallerMemory::Bounce => "bounce",
        }
    }
}

impl<'de> Deserialize<'de> for RdmaCallerMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RdmaCallerMemory::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A [`RdmaCallerMemory`].
pub struct CallerMem;

impl Kind for CallerMem {
    type Value = RdmaCallerMemory;
    const NAME: &'static str = "`mr_cache` or `bounce`";
    fn from_text(s: &str) -> Result<RdmaCallerMemory, ConfigError> {
        RdmaCallerMemory::parse(s)
    }
}

/// A [`RdmaProvider`].
pub struct Rdma;

impl Kind for Rdma {
    type Value = RdmaProvider;
    const NAME: &'static str = "`auto`, `sim`, `verbs` or `none`";
    fn from_text(s: &str) -> Result<RdmaProvider, ConfigError> {
        RdmaProvider::parse(s)
    }
}
