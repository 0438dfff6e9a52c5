//! MemCache's Python API: the extension module `mmc._mmc`, re-exported by the `mmc` package.
//!
//! `DistributedObjectStore` wraps one [`Client`] (with, when the config file gives the local
//! service a pool size, a local service embedded in the Python process). Return conventions are
//! the API document's and CONTRACT.md's: `0` or a negative code; batch calls a list of per-key
//! codes; `get` returns `b""` on failure; `is_exist` 1/0/negative. Every call releases the GIL
//! while it waits on I/O.

mod buffers;
mod codes;
mod direct;

pub use direct::MmcCopyDirect;
use direct::{direction, Op};
mod items;
mod setup;

use std::sync::{Arc, Mutex, RwLock, Weak};

use mmc_config::LogLevel;
use mmc_dataplane::Client;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes};
use tracing::{error, info, warn};

use buffers::key_arg;
use codes::{Code, INVALID, NOT_INIT, OK};
use items::{all, batch_keys, get_items, layers_item, one_item, per_key, put_items, Item};
use setup::{init_logging, load_config};

// ---------------------------------------------------------------------------------------------
// The store
// ---------------------------------------------------------------------------------------------

struct Inner {
    client: RwLock<Option<Arc<Client>>>,
    /// Serializes `init` and `close` (never held with the GIL).
    lifecycle: Mutex<()>,
}

impl Inner {
    fn client(&self) -> Option<Arc<Client>> {
        self.client
            .read()
            .expect("lock poisoned: a panic left this state half-updated")
            .clone()
    }

    fn init(&self, device_id: u32) -> i32 {
        let _l = self
            .lifecycle
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        if self.client().is_some() {
            info!("DistributedObjectStore.init: already initialized");
            return OK;
        }
        let (client_cfg, local_cfg) = match load_config(device_id) {
            Ok(c) => c,
            Err(e) => {
                init_logging(LogLevel::Info);
                error!("DistributedObjectStore.init: {e}");
                return INVALID;
            }
        };
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
    fn close(&self) {
        let _l = self
            .lifecycle
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        let client = self
            .client
            .write()
            .expect("lock poisoned: a panic left this state half-updated")
            .take();
        if client.is_some() {
            drop(client);
            info!("DistributedObjectStore closed");
        }
    }
}

/// Every store of this process, closed at interpreter exit (`mmc/__init__.py` registers
/// `_close_all` with `atexit`) so that embedded local services unregister cleanly.
static STORES: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// A distributed KV-cache store client (MemCache).
///
/// Create it, call ``init(device_id)`` (which reads ``$MMC_LOCAL_CONFIG_PATH`` and connects to
/// a separately started meta service), then put and get objects by key. Pointers are ints
/// (``array.ctypes.data``, ``tensor.data_ptr()``) that the caller keeps valid for the call;
/// any object with the buffer protocol (bytes, bytearray, memoryview, numpy array) is accepted
/// wherever a pointer is, with ``size`` then optional (default: the whole buffer).
///
/// Return conventions: ``0`` on success or a negative error code (-3000 invalid parameter,
/// -3006 object exists, -3007 object does not exist, -3013 no space, -3019 not initialized,
/// ...); batch calls return one code per key; ``get`` returns ``b""`` on failure; ``is_exist``
/// returns 1 / 0 / a negative code. Puts are create-only. Every call releases the GIL while it
/// waits, so threads can share one store.
#[pyclass(frozen, weakref, module = "mmc", name = "DistributedObjectStore")]
pub struct DistributedObjectStore {
    inner: Arc<Inner>,
}

impl DistributedObjectStore {
    fn client(&self) -> Option<Arc<Client>> {
        self.inner.client()
    }
}

impl Drop for DistributedObjectStore {
    /// A store garbage-collected while open closes (its embedded local service unregisters),
    /// with the GIL released while that waits on the meta service when the interpreter allows.
    fn drop(&mut self) {
        let inner = self.inner.clone();
        let done = Python::try_attach(|py| py.detach(|| inner.close()));
        if done.is_none() {
            self.inner.close();
        }
    }
}

#[pymethods]
impl DistributedObjectStore {
    /// Create an uninitialized store; call ``init`` before anything else.
    #[new]
    fn new() -> Self {
        let inner = Arc::new(Inner {
            client: RwLock::new(None),
            lifecycle: Mutex::new(()),
        });
        let mut stores = STORES
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        stores.retain(|w| w.strong_count() > 0);
        stores.push(Arc::downgrade(&inner));
        DistributedObjectStore { inner }
    }

    /// Initialize the client.
    ///
    /// Reads the client settings (and optionally an embedded local service's) from the file
    /// named by ``$MMC_LOCAL_CONFIG_PATH`` (TOML, or Ascend MemCache's ``ock.mmc.*`` key=value
    /// format; without the variable: defaults, meta service at tcp://127.0.0.1:5000) and connects
    /// to the meta service, which must already run. When the file gives the local service a DRAM
    /// (or HBM) size (``dram_size`` / ``ock.mmc.local_service.dram.size``), a local service runs
    /// inside this process and contributes that memory to the pool.
    ///
    /// Args:
    ///     device_id: the NPU/GPU id used with HBM (mapped through
    ///         ``$ASCEND_RT_VISIBLE_DEVICES``); an int >= 0.
    ///
    /// Returns:
    ///     0 on success (also when already initialized), else a negative code (-3000 bad
    ///     argument or config file, -3017 meta service unreachable, ...).
    #[pyo3(signature = (device_id = None))]
    #[pyo3(text_signature = "($self, device_id=0)")]
    fn init(&self, py: Python<'_>, device_id: Option<&Bound<'_, PyAny>>) -> i32 {
        let device = match device_id.filter(|d| !d.is_none()) {
            None => Ok(0),
            Some(d) if d.is_instance_of::<PyBool>() => Err(()),
            Some(d) => d.extract::<u32>().map_err(|_| ()),
        };
        let Ok(device) = device else {
            init_logging(LogLevel::Info);
            warn!("DistributedObjectStore.init: device_id must be an int >= 0");
            return INVALID;
        };
        let inner = self.inner.clone();
        py.detach(move || inner.init(device))
    }

    /// Close the client and release its resources (an embedded local service unregisters and
    /// its memory leaves the pool). Calls made afterwards return -3019 (``get``: ``b""``) until
    /// ``init`` is called again. Safe to call more than once.
    fn close(&self, py: Python<'_>) {
        let inner = self.inner.clone();
        py.detach(move || inner.close());
    }

    /// Store ``data`` under ``key`` (create-only).
    ///
    /// Args:
    ///     key: str of 1..255 bytes (UTF-8).
    ///     data: bytes, or any object with the buffer protocol (C-contiguous), at least 1 byte.
    ///
    /// Returns:
    ///     0 on success; -3006 if the key exists (the stored value is unchanged); -3000 for a
    ///     bad key or value; -3013 if no space; -3019 if not initialized; other negative codes.
    #[pyo3(signature = (key, data))]
    fn put(&self, py: Python<'_>, key: &Bound<'_, PyAny>, data: &Bound<'_, PyAny>) -> i32 {
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        let mut guards = Vec::new();
        let item = one_item(key, data, None, false, &mut guards);
        let code = put_items(py, &client, vec![item])[0];
        drop(guards);
        code
    }

    /// Store ``size`` bytes at ``buffer_ptr`` under ``key`` (create-only).
    ///
    /// Args:
    ///     key: str of 1..255 bytes.
    ///     buffer_ptr: address as an int (``arr.ctypes.data``, ``tensor.data_ptr()``), valid
    ///         for ``size`` bytes during the call; or a buffer-protocol object.
    ///     size: bytes to store (> 0); optional with a buffer object (default: all of it).
    ///     direct: ``SMEMB_COPY_H2G`` (default) or ``SMEMB_COPY_L2G`` (device memory: -3000 in
    ///         this build, which has no device backend).
    ///
    /// Returns:
    ///     0 on success, else a negative code (-3006 exists, -3000 bad argument, -3019 not
    ///     initialized, ...).
    #[pyo3(signature = (key, buffer_ptr, size = None, direct = None))]
    fn put_from(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        buffer_ptr: &Bound<'_, PyAny>,
        size: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        if let Err(c) = direction(direct, Op::Put) {
            return c;
        }
        let mut guards = Vec::new();
        let item = one_item(key, buffer_ptr, size, false, &mut guards);
        let code = put_items(py, &client, vec![item])[0];
        drop(guards);
        code
    }

    /// Store many objects, each from one buffer, in one batch (create-only).
    ///
    /// Args:
    ///     keys: list of str.
    ///     buffer_ptrs: list of int addresses (or buffer objects), one per key.
    ///     sizes: list of sizes in bytes, one per key (may be None when every buffer is a
    ///         buffer object taken whole).
    ///     direct: ``SMEMB_COPY_H2G`` (default) or ``SMEMB_COPY_L2G`` (-3000 in this build).
    ///
    /// Returns:
    ///     list of int, one per key: 0 or a negative code (-3006 for a key that exists, ...).
    ///     Lists of different lengths make every entry -3000.
    #[pyo3(signature = (keys, buffer_ptrs, sizes = None, direct = None))]
    fn batch_put_from(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs: Option<&Bound<'_, PyAny>>,
        sizes: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> Vec<i32> {
        self.batch_flat(py, keys, buffer_ptrs, sizes, direct, Op::Put)
    }

    /// Store one object whose bytes are the given pieces (layers) concatenated, in order.
    ///
    /// Args:
    ///     key: str of 1..255 bytes.
    ///     buffer_ptrs: list of int addresses (or buffer objects), one per layer.
    ///     sizes: list of sizes, one per layer (> 0 each); None when every piece is a buffer
    ///         object taken whole.
    ///     direct: ``SMEMB_COPY_H2G`` (default) or ``SMEMB_COPY_L2G`` (-3000 in this build).
    ///
    /// Returns:
    ///     0 on success, else a negative code.
    #[pyo3(signature = (key, buffer_ptrs, sizes = None, direct = None))]
    fn put_from_layers(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        buffer_ptrs: &Bound<'_, PyAny>,
        sizes: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        if let Err(c) = direction(direct, Op::Put) {
            return c;
        }
        let mut guards = Vec::new();
        let item = layers_item(key, buffer_ptrs, sizes, false, &mut guards);
        let code = put_items(py, &client, vec![item])[0];
        drop(guards);
        code
    }

    /// Store many layered objects in one batch: object ``i`` is the pieces
    /// ``buffer_ptrs_list[i]`` (sizes ``sizes_list[i]``) concatenated.
    ///
    /// Args:
    ///     keys: list of str.
    ///     buffer_ptrs_list: list (one per key) of lists of int addresses or buffer objects.
    ///     sizes_list: list (one per key) of lists of sizes; None when every piece is a buffer
    ///         object taken whole.
    ///     direct: ``SMEMB_COPY_H2G`` (default) or ``SMEMB_COPY_L2G`` (-3000 in this build).
    ///
    /// Returns:
    ///     list of int, one per key: 0 or a negative code.
    #[pyo3(signature = (keys, buffer_ptrs_list, sizes_list = None, direct = None))]
    fn batch_put_from_layers(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs_list: Option<&Bound<'_, PyAny>>,
        sizes_list: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> Vec<i32> {
        self.batch_layers(py, keys, buffer_ptrs_list, sizes_list, direct, Op::Put)
    }

    /// Read the whole object stored under ``key``.
    ///
    /// Returns:
    ///     the object's bytes; ``b""`` on any failure (missing key, bad key, not initialized).
    #[pyo3(signature = (key))]
    fn get<'py>(&self, py: Python<'py>, key: &Bound<'py, PyAny>) -> Bound<'py, PyBytes> {
        let empty = || PyBytes::new(py, b"");
        let Some(client) = self.client() else {
            return empty();
        };
        let Ok(key) = key_arg(key) else {
            warn!("get: key must be a str");
            return empty();
        };
        match py.detach(|| client.get(&key)) {
            Ok(v) => PyBytes::new(py, &v),
            Err(_) => empty(),
        }
    }

    /// Read the object stored under ``key`` into a buffer.
    ///
    /// Args:
    ///     key: str.
    ///     buffer_ptr: int address of writable memory valid for ``size`` bytes during the
    ///         call; or a writable buffer-protocol object (bytearray, numpy array, ...).
    ///     size: the buffer's capacity in bytes; must be at least the object's size (else
    ///         -3000 and nothing is copied). Bytes past the object are left untouched.
    ///     direct: ``SMEMB_COPY_G2H`` (default) or ``SMEMB_COPY_G2L`` (-3000 in this build).
    ///
    /// Returns:
    ///     0 on success (not a byte count); -3007 if the key does not exist; -3000 for a bad
    ///     argument or a too small buffer; -3019 if not initialized; other negative codes.
    #[pyo3(signature = (key, buffer_ptr, size = None, direct = None))]
    fn get_into(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        buffer_ptr: &Bound<'_, PyAny>,
        size: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        if let Err(c) = direction(direct, Op::Get) {
            return c;
        }
        let mut guards = Vec::new();
        let item = one_item(key, buffer_ptr, size, true, &mut guards);
        let code = get_items(py, &client, vec![item])[0];
        drop(guards);
        code
    }

    /// Read many objects, each into one buffer, in one batch.
    ///
    /// Args:
    ///     keys: list of str.
    ///     buffer_ptrs: list of int addresses (or writable buffer objects), one per key.
    ///     sizes: list of capacities, one per key (None when every buffer is a buffer object).
    ///     direct: ``SMEMB_COPY_G2H`` (default) or ``SMEMB_COPY_G2L`` (-3000 in this build).
    ///
    /// Returns:
    ///     list of int, one per key: 0, -3007 for a missing key, -3000 for a too small
    ///     buffer, ... Overlapping destination buffers make every entry -3000.
    #[pyo3(signature = (keys, buffer_ptrs, sizes = None, direct = None))]
    fn batch_get_into(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs: Option<&Bound<'_, PyAny>>,
        sizes: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> Vec<i32> {
        self.batch_flat(py, keys, buffer_ptrs, sizes, direct, Op::Get)
    }

    /// Read one object into several pieces (layers), filled in order: piece 0 gets the first
    /// ``sizes[0]`` bytes, and so on. Their total must be at least the object's size.
    ///
    /// Args:
    ///     key: str.
    ///     buffer_ptrs: list of int addresses (or writable buffer objects), one per layer.
    ///     sizes: list of sizes, one per layer; None when every piece is a buffer object.
    ///     direct: ``SMEMB_COPY_G2H`` (default) or ``SMEMB_COPY_G2L`` (-3000 in this build).
    ///
    /// Returns:
    ///     0 on success, else a negative code.
    #[pyo3(signature = (key, buffer_ptrs, sizes = None, direct = None))]
    fn get_into_layers(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        buffer_ptrs: &Bound<'_, PyAny>,
        sizes: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        if let Err(c) = direction(direct, Op::Get) {
            return c;
        }
        let mut guards = Vec::new();
        let item = layers_item(key, buffer_ptrs, sizes, true, &mut guards);
        let code = get_items(py, &client, vec![item])[0];
        drop(guards);
        code
    }

    /// Read many layered objects in one batch: object ``i`` fills the pieces
    /// ``buffer_ptrs_list[i]`` (sizes ``sizes_list[i]``) in order.
    ///
    /// Args:
    ///     keys: list of str.
    ///     buffer_ptrs_list: list (one per key) of lists of int addresses or buffer objects.
    ///     sizes_list: list (one per key) of lists of sizes; None when every piece is a buffer
    ///         object.
    ///     direct: ``SMEMB_COPY_G2H`` (default) or ``SMEMB_COPY_G2L`` (-3000 in this build).
    ///
    /// Returns:
    ///     list of int, one per key: 0 or a negative code.
    #[pyo3(signature = (keys, buffer_ptrs_list, sizes_list = None, direct = None))]
    fn batch_get_into_layers(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs_list: Option<&Bound<'_, PyAny>>,
        sizes_list: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> Vec<i32> {
        self.batch_layers(py, keys, buffer_ptrs_list, sizes_list, direct, Op::Get)
    }

    /// Remove ``key``: it is invisible at once; its space is reused after reads in flight end.
    ///
    /// Returns:
    ///     0 on success; -3007 if the key does not exist; other negative codes.
    #[pyo3(signature = (key))]
    fn remove(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> i32 {
        self.keyed_one(py, key, |c, k| codes::of_result(&c.remove(k)))
    }

    /// Remove many keys in one batch.
    ///
    /// Returns:
    ///     list of int, one per key: 0, -3007 for a missing key, or another negative code.
    #[pyo3(signature = (keys))]
    fn remove_batch(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> Vec<i32> {
        self.keyed_batch(py, keys, |c, k| c.batch_remove(k), codes::of_result)
    }

    /// Whether ``key`` exists (committed; an object being written does not exist yet).
    ///
    /// Returns:
    ///     1 if it exists, 0 if not, a negative code on error (-3000 bad key, -3019 not
    ///     initialized, ...).
    #[pyo3(signature = (key))]
    fn is_exist(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> i32 {
        self.keyed_one(py, key, |c, k| exist_code(&c.exist(k)))
    }

    /// Whether each key exists, in one batch.
    ///
    /// Returns:
    ///     list of int, one per key: 1 exists, 0 does not, negative on error.
    #[pyo3(signature = (keys))]
    fn batch_is_exist(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> Vec<i32> {
        self.keyed_batch(py, keys, |c, k| c.batch_exist(k), exist_code)
    }

    fn __repr__(&self) -> String {
        match self.client() {
            Some(c) => match c.local_rank() {
                Some(r) => format!("<mmc.DistributedObjectStore initialized, local service {r}>"),
                None => "<mmc.DistributedObjectStore initialized>".to_string(),
            },
            None => "<mmc.DistributedObjectStore not initialized>".to_string(),
        }
    }
}

/// `is_exist`'s convention: 1 present, 0 absent, else the code.
fn exist_code(r: &Result<(), codes::Error>) -> i32 {
    match r {
        Ok(()) => 1,
        Err(e) if e.code() == Code::ObjectNotExists => 0,
        Err(e) => codes::of(e),
    }
}

impl DistributedObjectStore {
    /// A batch of one buffer per key (`batch_put_from`, `batch_get_into`).
    fn batch_flat(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        ptrs: Option<&Bound<'_, PyAny>>,
        sizes: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
        op: Op,
    ) -> Vec<i32> {
        let Some(client) = self.client() else {
            return all(keys, NOT_INIT);
        };
        let Ok(keys_v) = batch_keys(keys) else {
            return vec![INVALID];
        };
        let n = keys_v.len();
        if let Err(c) = direction(direct, op) {
            return vec![c; n];
        }
        let (ptrs, sizes) = match (per_key(ptrs, n, "buffer_ptrs"), per_key(sizes, n, "sizes")) {
            (Ok(p), Ok(s)) => (p, s),
            _ => return vec![INVALID; n],
        };
        let writable = op == Op::Get;
        let mut guards = Vec::new();
        let items: Vec<Result<Item, i32>> = keys_v
            .iter()
            .zip(ptrs.iter().zip(&sizes))
            .map(|(k, (p, s))| match p {
                Some(p) => one_item(k, p, s.as_ref(), writable, &mut guards),
                None => Err(INVALID),
            })
            .collect();
        let out = match op {
            Op::Put => put_items(py, &client, items),
            Op::Get => get_items(py, &client, items),
        };
        drop(guards);
        out
    }

    /// A batch of several pieces per key (`batch_put_from_layers`, `batch_get_into_layers`).
    fn batch_layers(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        ptrs_list: Option<&Bound<'_, PyAny>>,
        sizes_list: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
        op: Op,
    ) -> Vec<i32> {
        let Some(client) = self.client() else {
            return all(keys, NOT_INIT);
        };
        let Ok(keys_v) = batch_keys(keys) else {
            return vec![INVALID];
        };
        let n = keys_v.len();
        if let Err(c) = direction(direct, op) {
            return vec![c; n];
        }
        let (ptrs, sizes) = match (
            per_key(ptrs_list, n, "buffer_ptrs_list"),
            per_key(sizes_list, n, "sizes"),
        ) {
            (Ok(p), Ok(s)) => (p, s),
            _ => return vec![INVALID; n],
        };
        let writable = op == Op::Get;
        let mut guards = Vec::new();
        let items: Vec<Result<Item, i32>> = keys_v
            .iter()
            .zip(ptrs.iter().zip(&sizes))
            .map(|(k, (p, s))| match p {
                Some(p) => layers_item(k, p, s.as_ref(), writable, &mut guards),
                None => Err(INVALID),
            })
            .collect();
        let out = match op {
            Op::Put => put_items(py, &client, items),
            Op::Get => get_items(py, &client, items),
        };
        drop(guards);
        out
    }

    /// A single-key metadata call (`remove`, `is_exist`).
    fn keyed_one(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        call: impl FnOnce(&Client, &str) -> i32 + Send,
    ) -> i32 {
        let Some(client) = self.client() else {
            return NOT_INIT;
        };
        let Ok(key) = key_arg(key) else {
            warn!("key must be a str");
            return INVALID;
        };
        py.detach(|| call(&client, &key))
    }

    /// A batch metadata call (`remove_batch`, `batch_is_exist`): invalid keys get -3000, the
    /// rest go in one request.
    fn keyed_batch(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        call: impl FnOnce(&Client, &[&str]) -> Result<Vec<Result<(), codes::Error>>, codes::Error>
            + Send,
        code: fn(&Result<(), codes::Error>) -> i32,
    ) -> Vec<i32> {
        let Some(client) = self.client() else {
            return all(keys, NOT_INIT);
        };
        let Ok(keys_v) = batch_keys(keys) else {
            return vec![INVALID];
        };
        let parsed: Vec<Result<String, i32>> = keys_v.iter().map(key_arg).collect();
        let mut out: Vec<i32> = parsed
            .iter()
            .map(|k| k.as_ref().err().copied().unwrap_or(OK))
            .collect();
        let todo: Vec<(usize, String)> = parsed
            .into_iter()
            .enumerate()
            .filter_map(|(i, k)| k.ok().map(|k| (i, k)))
            .collect();
        if todo.is_empty() {
            return out;
        }
        let results = py.detach(|| {
            let keys: Vec<&str> = todo.iter().map(|(_, k)| k.as_str()).collect();
            call(&client, &keys)
        });
        match results {
            Ok(rs) => {
                for ((i, _), r) in todo.iter().zip(rs) {
                    out[*i] = code(&r);
                }
            }
            Err(e) => {
                let c = codes::of(&e);
                for (i, _) in &todo {
                    out[*i] = c;
                }
            }
        }
        out
    }
}

/// Close every store of this process (registered with `atexit` by the `mmc` package).
#[pyfunction]
fn _close_all(py: Python<'_>) {
    let stores: Vec<Arc<Inner>> = STORES
        .lock()
        .expect("lock poisoned: a panic left this state half-updated")
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    py.detach(move || {
        for s in stores {
            s.close();
        }
    });
}

/// MemCache's Python API (compiled part); import it as ``mmc``.
#[pymodule]
fn _mmc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DistributedObjectStore>()?;
    m.add_class::<MmcCopyDirect>()?;
    for d in [
        MmcCopyDirect::L2G,
        MmcCopyDirect::G2L,
        MmcCopyDirect::G2H,
        MmcCopyDirect::H2G,
    ] {
        m.add(d.py_name(), d)?;
    }
    m.add_function(wrap_pyfunction!(_close_all, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
