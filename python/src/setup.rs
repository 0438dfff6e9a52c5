//! Logging and configuration of the Python module: the config file `init` reads, the pool sizes
//! it names, device ids.

use std::path::Path;
use std::sync::Once;

use mmc_config::{client_and_local_from_text, load_client_and_local, ClientConfig, LocalConfig};
use mmc_config::{config_path, load_text, Format, Key, LogLevel, OckFile};
use mmc_config::{LOCAL_CONFIG_ENV, LOCAL_KEYS};
use pyo3::prelude::*;
use tracing::info;

static LOGGING: Once = Once::new();

/// Install the stderr subscriber once per process (`RUST_LOG` overrides `level`). Never panics if
/// another subscriber is already installed.
pub(crate) fn init_logging(level: LogLevel) {
    LOGGING.call_once(|| mmc_config::logging::init(level));
}

/// Whether the config file sets the local service's DRAM and HBM sizes itself. The config
/// structs carry a default DRAM size, so "not set" is read from the file: only a size the file
/// gives makes the Python process host a local service.
pub(crate) fn pool_sizes_set(path: &Path) -> (bool, bool) {
    let Ok((text, format)) = load_text(path) else {
        return (false, false);
    };
    pool_sizes_in(&text, format)
}

/// [`pool_sizes_set`] of a config text.
fn pool_sizes_in(text: &str, format: Format) -> (bool, bool) {
    let key = |name: &str| {
        let k = LOCAL_KEYS.iter().find(|k| k.name == name);
        k.expect("the local service has this key")
    };
    let (dram, hbm) = (key("dram_size"), key("hbm_size"));
    match format {
        Format::Ock => match OckFile::parse(text) {
            Ok(f) => {
                let has = |k: &Key<LocalConfig>| k.ock.is_some_and(|o| f.get(o).is_some());
                (has(dram), has(hbm))
            }
            Err(_) => (false, false),
        },
        Format::Toml => match text.parse::<toml::Table>() {
            Ok(t) => {
                let local = t.get("local").and_then(|l| l.as_table());
                let in_table = |t: &toml::Table, k: &Key<LocalConfig>| {
                    t.keys().any(|name| k.is_toml_name(name))
                };
                let has = |k| in_table(&t, k) || local.is_some_and(|l| in_table(l, k));
                (has(dram), has(hbm))
            }
            Err(_) => (false, false),
        },
    }
}

/// The `ock.mmc.*` text of an `mmc.LocalConfig` / `mmc.MetaConfig` (its `_ock_text()`).
pub(crate) fn ock_text(config: &Bound<'_, PyAny>) -> Result<String, String> {
    config
        .call_method0("_ock_text")
        .and_then(|t| t.extract::<String>())
        .map_err(|e| format!("expected an mmc.LocalConfig / mmc.MetaConfig: {e}"))
}

/// Settings given by `setup(local_config)`: `ock.mmc.*` text.
pub(crate) fn config_from_text(
    text: &str,
    device_id: u32,
) -> Result<(ClientConfig, Option<LocalConfig>), String> {
    let (client, mut local) =
        client_and_local_from_text(text, Format::Ock).map_err(|e| e.to_string())?;
    client.validate().map_err(|e| e.to_string())?;
    local.validate().map_err(|e| e.to_string())?;
    init_logging(client.log_level);
    let (dram_set, hbm_set) = pool_sizes_in(text, Format::Ock);
    Ok(finish(client, &mut local, dram_set, hbm_set, device_id))
}

fn finish(
    client: ClientConfig,
    local: &mut LocalConfig,
    dram_set: bool,
    hbm_set: bool,
    device_id: u32,
) -> (ClientConfig, Option<LocalConfig>) {
    if !dram_set {
        local.dram_bytes = 0;
    }
    if !hbm_set {
        local.hbm_bytes = 0;
    }
    // A logical id: the device runtime applies CUDA_VISIBLE_DEVICES / ASCEND_RT_VISIBLE_DEVICES.
    local.device_id = device_id;
    if !local.log_path.is_empty() || local.log_format != mmc_config::logging::LogFormat::Text {
        tracing::warn!(
            log_path = %local.log_path,
            "log_path / log_format / log rotation are settings of mmc-meta and mmc-local: \
             the Python module logs text lines to standard error (RUST_LOG sets the level)"
        );
    }
    if local.is_pure_client() {
        (client, None)
    } else {
        (client, Some(local.clone()))
    }
}

/// The client and (if any) embedded local service settings from `$MMC_LOCAL_CONFIG_PATH`.
pub(crate) fn load_config(device_id: u32) -> Result<(ClientConfig, Option<LocalConfig>), String> {
    let path = config_path(None, LOCAL_CONFIG_ENV);
    let (client, mut local) = load_client_and_local(path.as_deref()).map_err(|e| e.to_string())?;
    init_logging(client.log_level);
    let Some(path) = path else {
        info!(
            meta = %client.meta_url,
            "{LOCAL_CONFIG_ENV} is not set: a pure client with the default settings"
        );
        return Ok((client, None));
    };
    let (dram_set, hbm_set) = pool_sizes_set(&path);
    Ok(finish(client, &mut local, dram_set, hbm_set, device_id))
}
