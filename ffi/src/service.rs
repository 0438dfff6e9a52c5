//! `mmcs_*`: the meta service and a local service inside the calling process.
//!
//! Each may run once per process at a time (a second start returns NULL and logs
//! `MMC_REPEAT_CALL`). Handles are checked against the running instance, so a wrong or stale
//! handle is logged and ignored instead of being undefined behaviour.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use mmc_config::DataOpType;
use mmc_config::{LogLevel, MetaConfig};
use mmc_dataplane::{LocalConfig, LocalService};
use mmc_meta_service::MetaServer;
use tracing::{info, warn};

use crate::types::*;
use crate::{convert, guard, log};

/// The running meta service and the address its handle points to.
static META: Mutex<Option<(usize, Box<MetaServer>)>> = Mutex::new(None);
/// The running local service (shared with the client of this process).
static LOCAL: Mutex<Option<(usize, Arc<LocalService>)>> = Mutex::new(None);

/// The in-process local service registered with the meta service at `meta_url`, if any.
pub(crate) fn local_for(meta_url: &str) -> Option<Arc<LocalService>> {
    let slot = LOCAL
        .lock()
        .expect("lock poisoned: a panic left this state half-updated");
    slot.as_ref()
        .filter(|(_, l)| l.uses_meta(meta_url))
        .map(|(_, l)| l.clone())
}

fn apply_log_settings(level: i32, func: mmc_log_func) {
    log::install();
    if func.is_some() {
        log::set_logger(func);
    }
    if (0..=3).contains(&level) {
        log::set_level(level);
    }
}

/// Start the meta service in this process. Returns NULL (with a logged reason) on bad config, if
/// the address cannot be bound, or if one is already running.
///
/// # Safety
/// `config` is NULL or points to a valid `mmc_meta_service_config_t`.
#[no_mangle]
pub unsafe extern "C" fn mmcs_meta_service_start(
    config: *mut mmc_meta_service_config_t,
) -> mmc_meta_service_t {
    guard("mmcs_meta_service_start", std::ptr::null_mut(), || {
        // SAFETY: checked for NULL; valid per the caller's contract.
        let Some(c) = (unsafe { config.as_ref() }) else {
            warn!("mmcs_meta_service_start: config is NULL");
            return std::ptr::null_mut();
        };
        apply_log_settings(c.logLevel, None);
        let mut slot = META
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        if slot.is_some() {
            warn!(
                code = MMC_REPEAT_CALL,
                "mmcs_meta_service_start: a meta service already runs in this process"
            );
            return std::ptr::null_mut();
        }
        let Ok(url) = convert::field("discoveryURL", &c.discoveryURL) else {
            return std::ptr::null_mut();
        };
        let Ok(metrics) = convert::field("metricsURL", &c.metricsURL) else {
            return std::ptr::null_mut();
        };
        let Ok(tls) = convert::tls(&c.tlsConfig) else {
            return std::ptr::null_mut();
        };
        let config = MetaConfig {
            listen_url: url,
            log_level: LogLevel::from_i32(c.logLevel).unwrap_or(LogLevel::Info),
            evict_threshold_high: if c.evictThresholdHigh == 0 {
                90
            } else {
                c.evictThresholdHigh
            },
            evict_threshold_low: if c.evictThresholdLow == 0 {
                80
            } else {
                c.evictThresholdLow
            },
            metrics_url: metrics,
            tls,
            ..MetaConfig::default()
        };
        match MetaServer::start(&config) {
            Ok(server) => {
                let server = Box::new(server);
                let handle = &*server as *const MetaServer as *mut c_void;
                *slot = Some((handle as usize, server));
                handle
            }
            Err(e) => {
                warn!(error = %e, code = e.code().as_i32(), "mmcs_meta_service_start failed");
                std::ptr::null_mut()
            }
        }
    })
}

/// Stop the meta service started by `mmcs_meta_service_start`, releasing its port and threads.
#[no_mangle]
pub extern "C" fn mmcs_meta_service_stop(handle: mmc_meta_service_t) {
    guard("mmcs_meta_service_stop", (), || {
        let mut slot = META
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        match slot.take() {
            Some((h, server)) if h == handle as usize => server.stop(),
            other => {
                *slot = other;
                warn!(
                    ?handle,
                    "mmcs_meta_service_stop: not a running meta service handle"
                );
            }
        }
    })
}

/// Start a local service in this process, contributing `localDRAMSize` (and `localHBMSize`)
/// bytes. A client initialized in this process afterwards reads and writes this service's pools
/// with plain memory copies. Returns NULL (with a logged reason) on failure.
///
/// # Safety
/// `config` is NULL or points to a valid `mmc_local_service_config_t`.
#[no_mangle]
pub unsafe extern "C" fn mmcs_local_service_start(
    config: *mut mmc_local_service_config_t,
) -> mmc_local_service_t {
    guard("mmcs_local_service_start", std::ptr::null_mut(), || {
        // SAFETY: checked for NULL; valid per the caller's contract.
        let Some(c) = (unsafe { config.as_ref() }) else {
            warn!("mmcs_local_service_start: config is NULL");
            return std::ptr::null_mut();
        };
        apply_log_settings(c.logLevel, c.logFunc);
        let mut slot = LOCAL
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        if slot.is_some() {
            warn!(
                code = MMC_REPEAT_CALL,
                "mmcs_local_service_start: a local service already runs in this process"
            );
            return std::ptr::null_mut();
        }
        let fields = (|| {
            Ok::<_, i32>((
                convert::field("discoveryURL", &c.discoveryURL)?,
                convert::field("bmIpPort", &c.bmIpPort)?,
                convert::field("bmHcomUrl", &c.bmHcomUrl)?,
                convert::field("dataOpType", &c.dataOpType)?,
            ))
        })();
        let Ok((meta, advertise, listen, protocol)) = fields else {
            return std::ptr::null_mut();
        };
        let protocol = if protocol.is_empty() {
            None
        } else {
            match DataOpType::parse(&protocol) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(error = %e, "mmcs_local_service_start: bad dataOpType");
                    return std::ptr::null_mut();
                }
            }
        };
        let Ok(tls) = convert::tls(&c.tlsConfig) else {
            return std::ptr::null_mut();
        };
        let config = LocalConfig {
            meta_url: meta,
            data_url: if listen.is_empty() {
                "tcp://127.0.0.1:0".into()
            } else {
                listen
            },
            advertise_url: advertise,
            dram_bytes: c.localDRAMSize,
            hbm_bytes: c.localHBMSize,
            rank_id: Some(c.rankId),
            world_size: c.worldSize.max(1),
            create_id: c.createId,
            device_id: c.deviceId,
            protocol,
            log_level: LogLevel::from_i32(c.logLevel).unwrap_or(LogLevel::Info),
            tls,
            ..LocalConfig::default()
        };
        match LocalService::start(&config) {
            Ok(svc) => {
                let svc = Arc::new(svc);
                let handle = Arc::as_ptr(&svc) as *mut c_void;
                info!(rank = svc.rank(), data = %svc.data_addr(), "local service started in-process");
                *slot = Some((handle as usize, svc));
                handle
            }
            Err(e) => {
                warn!(error = %e, code = e.code().as_i32(), "mmcs_local_service_start failed");
                std::ptr::null_mut()
            }
        }
    })
}

/// Stop the local service started by `mmcs_local_service_start`: it unregisters, closes its
/// endpoint and threads; its memory is freed once the client of this process lets go of it too.
#[no_mangle]
pub extern "C" fn mmcs_local_service_stop(handle: mmc_local_service_t) {
    guard("mmcs_local_service_stop", (), || {
        let mut slot = LOCAL
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        match slot.take() {
            Some((h, svc)) if h == handle as usize => svc.shutdown(),
            other => {
                *slot = other;
                warn!(
                    ?handle,
                    "mmcs_local_service_stop: not a running local service handle"
                );
            }
        }
    })
}
