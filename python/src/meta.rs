//! `MetaService`: a meta service run inside the Python process (`MetaService.setup(cfg)`, then the
//! blocking `MetaService.main()`), as Ascend MemCache's module offers.

use std::sync::Mutex;
use std::time::Duration;

use mmc_config::{Format, LogLevel, MetaConfig};
use mmc_meta_service::MetaServer;
use pyo3::prelude::*;
use tracing::{error, info, warn};

use crate::codes::{INVALID, OK};
use crate::setup::{init_logging, ock_text};

/// The settings `setup` gave (else `main` reads `$MMC_META_CONFIG_PATH`).
static SETUP: Mutex<Option<MetaConfig>> = Mutex::new(None);
/// Whether a `main` runs in this process.
static RUNNING: Mutex<bool> = Mutex::new(false);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock()
        .expect("lock poisoned: a panic left this state half-updated")
}

/// The meta service, run inside this Python process.
///
/// ``MetaService.setup(cfg)`` takes an ``mmc.MetaConfig``; ``MetaService.main()`` starts the
/// meta service (with ``setup``'s settings, else those of the file named by
/// ``$MMC_META_CONFIG_PATH``, TOML or ``ock.mmc.*``, else the defaults: ``tcp://127.0.0.1:5000``)
/// and blocks until the process gets SIGINT (``KeyboardInterrupt``, raised after the service has
/// stopped) or is killed. The same service as the ``mmc-meta`` binary.
#[pyclass(module = "mmc", name = "MetaService")]
pub struct MetaService;

#[pymethods]
impl MetaService {
    /// Set the settings of the next ``main()`` from an ``mmc.MetaConfig``.
    ///
    /// Returns:
    ///     0, or -3000 when a setting is invalid (the log says which).
    #[staticmethod]
    fn setup(config: &Bound<'_, PyAny>) -> i32 {
        let parsed = ock_text(config).and_then(|text| {
            let c = MetaConfig::from_text(&text, Format::Ock).map_err(|e| e.to_string())?;
            c.validate().map_err(|e| e.to_string())?;
            Ok(c)
        });
        match parsed {
            Ok(c) => {
                init_logging(c.log_level);
                *lock(&SETUP) = Some(c);
                OK
            }
            Err(e) => {
                init_logging(LogLevel::Info);
                error!("MetaService.setup: {e}");
                INVALID
            }
        }
    }

    /// Run the meta service until SIGINT; blocking.
    ///
    /// Returns:
    ///     a negative code when it cannot start (-3000: bad settings, or a meta service already
    ///     runs in this process; other codes: the address is taken, ...). On SIGINT the service
    ///     stops and ``KeyboardInterrupt`` is raised.
    #[staticmethod]
    fn main(py: Python<'_>) -> PyResult<i32> {
        let config = match lock(&SETUP).clone() {
            Some(c) => Ok(c),
            None => MetaConfig::load(None).map_err(|e| e.to_string()),
        };
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                init_logging(LogLevel::Info);
                error!("MetaService.main: {e}");
                return Ok(INVALID);
            }
        };
        init_logging(config.log_level);
        {
            let mut running = lock(&RUNNING);
            if *running {
                warn!("MetaService.main: a meta service already runs in this process");
                return Ok(INVALID);
            }
            *running = true;
        }
        let started = py.detach(|| MetaServer::start(&config));
        let server = match started {
            Ok(s) => s,
            Err(e) => {
                *lock(&RUNNING) = false;
                error!(url = %config.listen_url, error = %e, "MetaService.main: cannot start");
                return Ok(crate::codes::of(&e));
            }
        };
        info!(addr = %server.local_addr(), "meta service running in this process");
        let stopped = loop {
            py.detach(|| std::thread::sleep(Duration::from_millis(50)));
            if let Err(e) = py.check_signals() {
                break e;
            }
        };
        info!("MetaService.main: interrupted, stopping");
        py.detach(|| server.stop());
        *lock(&RUNNING) = false;
        Err(stopped)
    }
}
