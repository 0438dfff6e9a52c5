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
//! The keys are declared once, in [`LOCAL_KEYS`] and [`CLIENT_KEYS`] (see [`crate::table`]); the
//! shared helpers (sizes, URLs, log levels, TLS, format detection) are at the crate root.

mod client;
mod local;
#[cfg(test)]
mod tests;
mod types;

use std::path::Path;

use crate::table::{self, as_table, Key, TomlApplier};
use crate::{load_config, ConfigError, Format, OckFile, TlsConfig, TLS_KEYS};

pub use client::{ClientConfig, CLIENT_KEYS};
pub use local::{LocalConfig, LOCAL_KEYS};
pub use types::{
    DataOpType, DataPoller, OptProtocol, Poller, Protocol, Rdma, RdmaCallerMemory, RdmaProvider,
};

/// Environment variable naming the local service's (and the client's) config file.
pub const LOCAL_CONFIG_ENV: &str = "MMC_LOCAL_CONFIG_PATH";

/// Default client timeout (the C API's `timeOut` 0 = 60 s).
pub const DEFAULT_CLIENT_TIMEOUT_MS: u64 = 60_000;

/// Every `ock.mmc.*` key a local service or client reads (the two share the file, so each knows
/// the other's keys).
pub fn local_and_client_ock_keys() -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = table::ock_names(LOCAL_KEYS)
        .chain(table::ock_names(CLIENT_KEYS))
        .chain(table::ock_names(TLS_KEYS))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Whether a local service or client reads `key` from a key = value file.
pub fn is_local_or_client_ock_key(key: &str) -> bool {
    local_and_client_ock_keys().contains(&key)
}

/// Applies a `[local]` or `[client]` section: its keys, and its `[<section>.tls]`.
fn apply_section<C: 'static>(
    keys: &'static [Key<C>],
    section: &str,
    value: &toml::Value,
    c: &mut C,
    tls: fn(&mut C) -> &mut TlsConfig,
) -> Result<(), ConfigError> {
    let mut a = TomlApplier::new(keys, section);
    for (name, v) in as_table(section, value)? {
        if name == "tls" {
            tls(c).apply_toml(&format!("{section}.tls"), v)?;
        } else if !a.apply(name, v, c)? {
            let known = table::toml_names(keys).chain(["tls"]);
            return Err(table::unknown_toml_key(name, section, known));
        }
    }
    Ok(())
}

/// Parses a TOML file holding both configs: the top level first (each key applies to whichever
/// of the two knows it, `[tls]` to both), then the `[local]` and `[client]` sections, whose keys
/// override the top level's.
pub(crate) fn client_and_local_from_toml(
    text: &str,
) -> Result<(ClientConfig, LocalConfig), ConfigError> {
    let t = table::parse_toml(text)?;
    let mut client = ClientConfig::default();
    let mut local = LocalConfig::default();
    let mut client_keys = TomlApplier::new(CLIENT_KEYS, "");
    let mut local_keys = TomlApplier::new(LOCAL_KEYS, "");
    for (name, v) in &t {
        match name.as_str() {
            "local" | "client" => {}
            "tls" => {
                client.tls.apply_toml("tls", v)?;
                local.tls.apply_toml("tls", v)?;
            }
            _ => {
                let in_local = local_keys.apply(name, v, &mut local)?;
                let in_client = client_keys.apply(name, v, &mut client)?;
                if !in_local && !in_client {
                    let known = table::toml_names(LOCAL_KEYS)
                        .chain(table::toml_names(CLIENT_KEYS))
                        .chain(["tls", "local", "client"]);
                    return Err(table::unknown_toml_key(name, "", known));
                }
            }
        }
    }
    if let Some(v) = t.get("local") {
        apply_section(LOCAL_KEYS, "local", v, &mut local, |c| &mut c.tls)?;
    }
    if let Some(v) = t.get("client") {
        apply_section(CLIENT_KEYS, "client", v, &mut client, |c| &mut c.tls)?;
    }
    Ok((client, local))
}

/// Parses both configs from one text (TOML with top-level keys and/or `[client]` and `[local]`
/// sections, or a key = value file, whose unknown keys are warned about once).
pub fn client_and_local_from_text(
    text: &str,
    format: Format,
) -> Result<(ClientConfig, LocalConfig), ConfigError> {
    match format {
        Format::Toml => client_and_local_from_toml(text),
        Format::Ock => {
            let ock = OckFile::parse(text)?;
            let pair = (
                ClientConfig::from_ock_quiet(&ock)?,
                LocalConfig::from_ock_quiet(&ock)?,
            );
            ock.warn_unknown("local service and client", &local_and_client_ock_keys());
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
