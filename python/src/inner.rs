//! The state behind one `DistributedObjectStore`: its client (with any embedded local service),
//! the settings `setup` gave, the buffers `register_buffer` named; `init` and `close`.

use std::sync::{Arc, Mutex, RwLock};

use mmc_config::LogLevel;
use mmc_dataplane::Client;
use tracing::{error, info};

use crate::codes::{self, INVALID, OK};
use crate::memory::Registry;
use crate::session::Session;
use crate::setup::{config_from_text, init_logging, load_config};

#[derive(Default)]
pub(crate) struct Inner {
    client: RwLock<Option<Arc<Client>>>,
    /// Serializes `init` and `close` (never held with the GIL).
    lifecycle: Mutex<()>,
    /// `ock.mmc.*` text given by `setup(LocalConfig)`; `init` reads it instead of the file named
    /// by `$MMC_LOCAL_CONFIG_PATH`.
    pub(crate) setup: Mutex<Option<String>>,
    /// Buffers named by `register_buffer`.
    pub(crate) registry: Registry,
    /// The layer-wise path's staged puts and held read leases.
    session: Mutex<Session>,
}

impl Inner {
    pub(crate) fn client(&self) -> Option<Arc<Client>> {
        self.client
            .read()
            .expect("lock poisoned: a panic left this state half-updated")
            .clone()
    }

    pub(crate) fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
    }

    /// Connect (and start the embedded local service, when the settings give it a pool size and
    /// `init_bm`): 0, or a negative code.
    pub(crate) fn init(&self, device_id: u32, init_bm: bool) -> i32 {
        let _l = self
            .lifecycle
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        if self.client().is_some() {
            info!("DistributedObjectStore.init: already initialized");
            return OK;
        }
        let setup = self
            .setup
            .lock()
            .expect("lock poisoned: a panic left this state half-updated")
            .clone();
        let loaded = match setup {
            Some(text) => config_from_text(&text, device_id),
            None => load_config(device_id),
        };
        let (client_cfg, local_cfg) = match loaded {
            Ok(c) => c,
            Err(e) => {
                init_logging(LogLevel::Info);
                error!("DistributedObjectStore.init: {e}");
                return INVALID;
            }
        };
        // `init_bm = False`: a pure client, whatever pool sizes the settings give.
        let local_cfg = local_cfg.filter(|_| init_bm);
        let made = match &local_cfg {
            None => Client::connect(&client_cfg),
            Some(local) => Client::with_local_service(&client_cfg, local),
        };
        match made {
            Ok(c) => {
                info!(
                    meta = %client_cfg.meta_url,
                    local_service = ?c.local_rank(),
                    dram = local_cfg.as_ref().map(|l| l.dram_bytes),
                    "DistributedObjectStore initialized"
                );
                *self
                    .client
                    .write()
                    .expect("lock poisoned: a panic left this state half-updated") =
                    Some(Arc::new(c));
                OK
            }
            Err(e) => {
                error!(meta = %client_cfg.meta_url, error = %e, "DistributedObjectStore.init failed");
                codes::of(&e)
            }
        }
    }

    /// Drop the client (the embedded local service unregisters and stops). Calls in flight keep
    /// their own reference and finish first.
    pub(crate) fn close(&self) {
        let _l = self
            .lifecycle
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        let client = self
            .client
            .write()
            .expect("lock poisoned: a panic left this state half-updated")
            .take();
        self.registry.clear();
        // Staged puts are freed by the meta service when the client's session connection closes
        // (below, with the client); held read leases are given back now.
        let leases = self.session().clear();
        if let Some(c) = &client {
            c.release_leases(leases);
        }
        if client.is_some() {
            drop(client);
            info!("DistributedObjectStore closed");
        }
    }
}
