//! A client's settings, [`ClientConfig`], and their keys, [`CLIENT_KEYS`].

use std::path::Path;

use crate::discovery::DiscoveryUrl;
use crate::table::{self, Bool, Int, Key, Level, OptInt};
use crate::{config_key, config_struct};
use crate::{
    load_config, ConfigError, Format, LogLevel, OckFile, TlsConfig, OCK_LOG_LEVEL,
    OCK_META_SERVICE_URL,
};

use super::types::{CallerMem, OptProtocol, Rdma, RdmaCallerMemory, RdmaProvider};
use super::{client_and_local_from_toml, local_and_client_ock_keys, DataOpType};
use super::{DEFAULT_CLIENT_TIMEOUT_MS, LOCAL_CONFIG_ENV};

/// A client's keys (TOML names at the top level or in `[client]`; `[tls]` holds
/// [`TLS_KEYS`](crate::TLS_KEYS)).
pub static CLIENT_KEYS: &[Key<ClientConfig>] = &[
    config_key!(ClientConfig {
        name: "meta_url", aliases: ["discovery_url"], ock: OCK_META_SERVICE_URL, kind: DiscoveryUrl,
        field: meta_url, default: "tcp://127.0.0.1:5000", doc: "Where to find the meta service: its address, or the etcd cluster in which the meta leader publishes its own (high availability).",
    }),
    config_key!(ClientConfig {
        name: "rank_id", ock: "ock.mmc.local_service.rank_id", kind: OptInt<u32>, sets: "rank_id",
        set: |c: &mut ClientConfig, v: Option<u32>| {
            if let Some(rank) = v {
                c.rank_id = rank;
            }
            Ok(())
        },
        default: "0", doc: "The local service this client belongs to (in an embedded deployment).",
    }),
    config_key!(ClientConfig {
        name: "timeout_seconds", ock: "ock.mmc.client.timeout.seconds", kind: Int<u64>,
        sets: "timeout_ms",
        set: |c: &mut ClientConfig, secs: u64| {
            c.timeout_ms = client_timeout_secs(secs)?;
            Ok(())
        },
        default: "60", doc: "Timeout of each operation in seconds; 0 = 60.",
    }),
    config_key!(ClientConfig {
        name: "timeout_ms", kind: Int<u64>, field: timeout_ms,
        set: |c: &mut ClientConfig, ms: u64| {
            c.timeout_ms = client_timeout_ms(ms);
            Ok(())
        },
        default: "60000", min: 1,
        doc: "The same in milliseconds (set one of the two); 0 = 60000.",
    }),
    config_key!(ClientConfig {
        name: "read_thread_pool_size", ock: "ock.mmc.client.read_thread_pool.size",
        kind: Int<u32>, field: read_threads, default: "0", doc: "Read threads; 0 = default.",
    }),
    config_key!(ClientConfig {
        name: "write_thread_pool_size", ock: "ock.mmc.client.write_thread_pool.size",
        kind: Int<u32>, field: write_threads, default: "0", doc: "Write threads; 0 = default.",
    }),
    config_key!(ClientConfig {
        name: "transport", ock: "ock.mmc.client.transport", kind: OptProtocol, field: transport,
        default: "",
        doc: "Force one transport (`tcp`; `shm` on the same host; `rdma`: RDMA wherever the service accepts it, same host included, else TCP); unset = own pool, then same-host shm, then RDMA (both sides with a device on one fabric), then TCP.",
    }),
    config_key!(ClientConfig {
        name: "rdma_provider", ock: "ock.mmc.client.rdma_provider", kind: Rdma,
        field: rdma_provider, default: "auto",
        doc: "RDMA verbs provider: `auto`, `sim`, `verbs` or `none` (as the local service's); `MMC_RDMA_PROVIDER` overrides it.",
    }),
    config_key!(ClientConfig {
        name: "rdma_caller_memory", ock: "ock.mmc.client.rdma_caller_memory", kind: CallerMem,
        field: rdma_caller_memory, default: "mr_cache",
        doc: "How RDMA reaches the caller's memory: `mr_cache` (registered buffers kept registered, other memory registered per call; zero copies) or `bounce` (copied through registered staging buffers, 8 MiB per queue pair).",
    }),
    config_key!(ClientConfig {
        name: "busy_poll_us", ock: "ock.mmc.client.busy_poll_us", kind: Int<u64>,
        field: busy_poll_us, default: "0",
        doc: "Spin this long for each reply (and each RDMA completion) before blocking; 0 = block (RDMA: sleep on the completion channel).",
    }),
    config_key!(ClientConfig {
        name: "verify_reads", ock: "ock.mmc.client.verify_reads", kind: Bool,
        field: verify_reads, default: "false",
        doc: "Check every get's bytes against the object's CRC-32C; a corrupt replica falls over to the next, none left = -3103.",
    }),
    config_key!(ClientConfig {
        name: "log_level", ock: OCK_LOG_LEVEL, kind: Level, field: log_level, default: "info",
        doc: "Log level.",
    }),
];

config_struct! {
    keys: CLIENT_KEYS;
    /// A client's settings; the keys are [`CLIENT_KEYS`].
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
        /// `None` = the fastest that reaches each one (the client's own pool, then shared memory
        /// on the same host, then TCP).
        pub transport: Option<DataOpType>,
        /// The RDMA verbs provider this client's transfers use.
        pub rdma_provider: RdmaProvider,
        /// How RDMA reaches caller memory: an MR cache or bounce buffers.
        pub rdma_caller_memory: RdmaCallerMemory,
        /// Busy-poll this long for each reply before blocking; 0 = block at once.
        pub busy_poll_us: u64,
        /// After each get's copy, check the bytes against the object's CRC-32C (set by its
        /// writer): a mismatch tries the next replica, and fails the key (-3103) when none
        /// matches.
        pub verify_reads: bool,
        pub log_level: LogLevel,
        pub tls: TlsConfig,
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

impl ClientConfig {
    /// Parses TOML (see the module docs): the [`CLIENT_KEYS`] and `[tls]` at the top level or in
    /// a `[client]` section (`timeout_seconds` or `timeout_ms`, not both). The local service's
    /// keys are known too; any other key is an error naming it and the closest known key. Does
    /// not [`validate`](ClientConfig::validate).
    pub fn from_toml_str(text: &str) -> Result<ClientConfig, ConfigError> {
        client_and_local_from_toml(text).map(|(client, _)| client)
    }

    /// Reads the `ock.mmc.*` names of [`CLIENT_KEYS`] and the `ock.mmc.tls.*` keys of a key =
    /// value file (the rank comes from `ock.mmc.local_service.rank_id` when set). A bad value is
    /// an error naming the key; a key that neither the local service nor the client knows is a
    /// warning.
    pub fn from_ock(ock: &OckFile) -> Result<ClientConfig, ConfigError> {
        let c = ClientConfig::from_ock_quiet(ock)?;
        ock.warn_unknown("client", &local_and_client_ock_keys());
        Ok(c)
    }

    /// [`ClientConfig::from_ock`] without the warnings.
    pub(crate) fn from_ock_quiet(ock: &OckFile) -> Result<ClientConfig, ConfigError> {
        let mut c = ClientConfig::default();
        table::apply_ock(CLIENT_KEYS, ock, &mut c)?;
        c.tls.apply_ock(ock)?;
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

    /// Checks every key by kind and range (`meta_url` parses and fits the C array, `timeout_ms`
    /// above 0) and the TLS settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        table::validate(CLIENT_KEYS, self, "")?;
        self.tls.validate()
    }
}
