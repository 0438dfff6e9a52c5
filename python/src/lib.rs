//! MemCache's Python API: the extension module `mmc._mmc`, re-exported by the `mmc` package.
//!
//! `DistributedObjectStore` wraps one [`Client`] (with, when the config file gives the local
//! service a pool size, a local service embedded in the Python process). Return conventions are
//! the API document's and CONTRACT.md's: `0` or a negative code; batch calls a list of per-key
//! codes; `get` returns `b""` on failure; `is_exist` 1/0/negative. Every call releases the GIL
//! while it waits on I/O.

mod batch;
mod buffers;
mod codes;
mod compat;
mod device;
mod direct;
mod inner;
mod items;
mod layerwise;
mod memory;
mod meta;
mod session;
mod setup;

pub use compat::{KeyInfo, ReplicateConfig};
pub use direct::MmcCopyDirect;
pub use meta::MetaService;

use std::sync::{Arc, Mutex, Weak};

use mmc_config::LogLevel;
use mmc_dataplane::Client;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes};
use tracing::{error, warn};

use batch::exist_code;
use buffers::{key_arg, seq, size_arg};
use codes::{INVALID, NOT_INIT, OK};
use direct::Op;
use inner::Inner;
use items::{layers_item, one_item};
use setup::{init_logging, ock_text};

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
/// -3007 object does not exist, -3013 no space, -3019 not initialized, ...); batch calls return
/// one code per key (``[]`` for no keys, one ``[-3000]`` for more than 16,384 keys or a keys
/// argument that is not a list); ``get`` returns ``b""`` on failure; ``is_exist`` returns 1 / 0 /
/// a negative code. Puts are create-only: a put of a key that exists returns 0 and leaves the
/// stored value unchanged (the C API says -3006). Every call releases the GIL while it waits, so
/// threads can share one store.
#[pyclass(frozen, weakref, module = "mmc", name = "DistributedObjectStore")]
pub struct DistributedObjectStore {
    pub(crate) inner: Arc<Inner>,
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
        let inner = Arc::new(Inner::default());
        let mut stores = STORES
            .lock()
            .expect("lock poisoned: a panic left this state half-updated");
        stores.retain(|w| w.strong_count() > 0);
        stores.push(Arc::downgrade(&inner));
        DistributedObjectStore { inner }
    }

    /// Give the settings of the next ``init`` (instead of the file named by
    /// ``$MMC_LOCAL_CONFIG_PATH``).
    ///
    /// Args:
    ///     config: an ``mmc.LocalConfig``.
    ///
    /// Returns:
    ///     0, or -3000 when a setting is invalid (the log says which).
    #[pyo3(signature = (config))]
    fn setup(&self, config: &Bound<'_, PyAny>) -> i32 {
        let text = match ock_text(config) {
            Ok(t) => t,
            Err(e) => {
                init_logging(LogLevel::Info);
                warn!("DistributedObjectStore.setup: {e}");
                return INVALID;
            }
        };
        if let Err(e) = setup::config_from_text(&text, 0) {
            init_logging(LogLevel::Info);
            error!("DistributedObjectStore.setup: {e}");
            return INVALID;
        }
        *self
            .inner
            .setup
            .lock()
            .expect("lock poisoned: a panic left this state half-updated") = Some(text);
        OK
    }

    /// Initialize the client.
    ///
    /// Takes the settings given by ``setup(LocalConfig)``, else those of the file named by
    /// ``$MMC_LOCAL_CONFIG_PATH`` (TOML, or Ascend MemCache's ``ock.mmc.*`` key=value format;
    /// without the variable: defaults, meta service at tcp://127.0.0.1:5000) and connects to the
    /// meta service, which must already run. When the settings give the local service a DRAM
    /// (or HBM) size (``dram_size`` / ``ock.mmc.local_service.dram.size``) and ``init_bm`` is
    /// true, a local service runs inside this process and contributes that memory to the pool.
    ///
    /// Args:
    ///     device_id: the NPU/GPU used for HBM, a logical id (the device runtime applies
    ///         ``$CUDA_VISIBLE_DEVICES`` / ``$ASCEND_RT_VISIBLE_DEVICES``); an int >= 0.
    ///     init_bm: whether to start the embedded local service (default True); False makes
    ///         this process a pure client whatever the settings say.
    ///
    /// Returns:
    ///     0 on success (also when already initialized), else a negative code (-3000 bad
    ///     argument or config file, -3017 meta service unreachable, ...).
    #[pyo3(signature = (device_id = None, init_bm = None))]
    #[pyo3(text_signature = "($self, device_id=0, init_bm=True)")]
    fn init(
        &self,
        py: Python<'_>,
        device_id: Option<&Bound<'_, PyAny>>,
        init_bm: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
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
        let init_bm = match init_bm.filter(|b| !b.is_none()) {
            None => true,
            Some(b) => match b.is_truthy() {
                Ok(v) => v,
                Err(_) => return INVALID,
            },
        };
        let inner = self.inner.clone();
        py.detach(move || inner.init(device, init_bm))
    }

    /// Close the client and release its resources (an embedded local service unregisters and
    /// its memory leaves the pool; registered buffers are forgotten). Calls made afterwards
    /// return -3019 (``get``: ``b""``) until ``init`` is called again. Safe to call more than
    /// once.
    ///
    /// Returns:
    ///     0.
    fn close(&self, py: Python<'_>) -> i32 {
        let inner = self.inner.clone();
        py.detach(move || inner.close());
        OK
    }

    /// The id (rank) of the local service embedded in this process: what
    /// ``ReplicateConfig.preferredLocalServiceIDs`` and ``KeyInfo.loc_list()`` name.
    ///
    /// Returns:
    ///     the id; 4294967295 (2**32 - 1) for a pure client or before ``init``.
    fn get_local_service_id(&self) -> u32 {
        self.client()
            .and_then(|c| c.local_rank())
            .unwrap_or(u32::MAX)
    }

    /// Name a host buffer that later calls will use (the original registers it for RDMA; here
    /// it is checked and remembered, and ``SMEMB_COPY_AUTO`` classifies pointers inside it as
    /// host memory). Registering is optional: every call accepts unregistered host memory.
    ///
    /// Returns:
    ///     0; -3000 for a null pointer, a zero size or a range that wraps; -3019 if not
    ///     initialized.
    #[pyo3(signature = (buffer_ptr, size))]
    fn register_buffer(&self, buffer_ptr: &Bound<'_, PyAny>, size: &Bound<'_, PyAny>) -> i32 {
        if self.client().is_none() {
            return NOT_INIT;
        }
        match (buffers::ptr_int(buffer_ptr), size_arg(Some(size))) {
            (Ok(Some(p)), Ok(Some(n))) => self.inner.registry.register(p, n),
            _ => INVALID,
        }
    }

    /// Forget a buffer given to ``register_buffer`` (the same pointer and size).
    ///
    /// Returns:
    ///     0; -3000 when no such buffer is registered; -3019 if not initialized.
    #[pyo3(signature = (buffer_ptr, size))]
    fn unregister_buffer(&self, buffer_ptr: &Bound<'_, PyAny>, size: &Bound<'_, PyAny>) -> i32 {
        if self.client().is_none() {
            return NOT_INIT;
        }
        match (buffers::ptr_int(buffer_ptr), size_arg(Some(size))) {
            (Ok(Some(p)), Ok(Some(n))) => self.inner.registry.unregister(p, n),
            _ => INVALID,
        }
    }

    /// Store ``data`` under ``key`` (create-only).
    ///
    /// Args:
    ///     key: str of 1..255 bytes (UTF-8).
    ///     data: bytes, or any object with the buffer protocol (C-contiguous), at least 1 byte.
    ///     replicateConfig: an optional ``mmc.ReplicateConfig`` (replicas, placement).
    ///
    /// Returns:
    ///     0 on success, also when the key exists (the stored value is then unchanged); -3000
    ///     for a bad key, value or config; -3013 if no space; -3019 if not initialized; other
    ///     negative codes.
    #[pyo3(signature = (key, data, replicateConfig = None))]
    #[allow(non_snake_case)]
    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        replicateConfig: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        self.single(py, Op::Put, None, replicateConfig, |g| {
            one_item(key, data, None, false, g)
        })
    }

    /// Store several objects, each from one buffer object (bytes, bytearray, memoryview, numpy
    /// array), in one batch (create-only).
    ///
    /// Returns:
    ///     list of int, one per key: 0 (also for a key that exists) or a negative code. Lists
    ///     of different lengths make every entry -3000.
    #[pyo3(signature = (keys, values, replicateConfig = None))]
    #[allow(non_snake_case)]
    fn put_batch(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        values: Option<&Bound<'_, PyAny>>,
        replicateConfig: Option<&Bound<'_, PyAny>>,
    ) -> Vec<i32> {
        self.batch_flat(py, keys, values, None, (None, replicateConfig), Op::Put)
    }

    /// Store ``size`` bytes at ``buffer_ptr`` under ``key`` (create-only).
    ///
    /// Args:
    ///     key: str of 1..255 bytes.
    ///     buffer_ptr: address as an int (``arr.ctypes.data``, ``tensor.data_ptr()``), valid
    ///         for ``size`` bytes during the call; or a buffer-protocol object.
    ///     size: bytes to store (> 0); optional with a buffer object (default: all of it).
    ///     direct: ``SMEMB_COPY_H2G`` (default), ``SMEMB_COPY_AUTO`` (host memory only in this
    ///         build) or ``SMEMB_COPY_L2G`` (device memory: -3000 in this build, which has no
    ///         device backend).
    ///     replicateConfig: an optional ``mmc.ReplicateConfig``.
    ///
    /// Returns:
    ///     0 on success (also when the key exists), else a negative code (-3000 bad argument,
    ///     -3019 not initialized, ...).
    #[pyo3(signature = (key, buffer_ptr, size = None, direct = None, replicateConfig = None))]
    #[allow(non_snake_case)]
    fn put_from(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        buffer_ptr: &Bound<'_, PyAny>,
        size: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
        replicateConfig: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        self.single(py, Op::Put, direct, replicateConfig, |g| {
            one_item(key, buffer_ptr, size, false, g)
        })
    }

    /// Store many objects, each from one buffer, in one batch (create-only).
    ///
    /// Args:
    ///     keys: list of str (at most 16,384).
    ///     buffer_ptrs: list of int addresses (or buffer objects), one per key.
    ///     sizes: list of sizes in bytes, one per key (may be None when every buffer is a
    ///         buffer object taken whole).
    ///     direct: ``SMEMB_COPY_H2G`` (default), ``SMEMB_COPY_AUTO`` or ``SMEMB_COPY_L2G``
    ///         (-3000 in this build).
    ///     replicateConfig: an optional ``mmc.ReplicateConfig``, for every key.
    ///
    /// Returns:
    ///     list of int, one per key: 0 (also for a key that exists) or a negative code. Lists
    ///     of different lengths make every entry -3000.
    #[pyo3(signature = (keys, buffer_ptrs, sizes = None, direct = None, replicateConfig = None))]
    #[allow(non_snake_case)]
    fn batch_put_from(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs: Option<&Bound<'_, PyAny>>,
        sizes: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
        replicateConfig: Option<&Bound<'_, PyAny>>,
    ) -> Vec<i32> {
        self.batch_flat(
            py,
            keys,
            buffer_ptrs,
            sizes,
            (direct, replicateConfig),
            Op::Put,
        )
    }

    /// Store one object whose bytes are the given pieces (layers) concatenated, in order.
    ///
    /// Args:
    ///     key: str of 1..255 bytes.
    ///     buffer_ptrs: list of int addresses (or buffer objects), one per layer.
    ///     sizes: list of sizes, one per layer (> 0 each); None when every piece is a buffer
    ///         object taken whole.
    ///     direct: ``SMEMB_COPY_H2G`` (default), ``SMEMB_COPY_AUTO`` or ``SMEMB_COPY_L2G``
    ///         (-3000 in this build).
    ///     replicateConfig: an optional ``mmc.ReplicateConfig``.
    ///
    /// Returns:
    ///     0 on success (also when the key exists), else a negative code.
    #[pyo3(signature = (key, buffer_ptrs, sizes = None, direct = None, replicateConfig = None))]
    #[allow(non_snake_case)]
    fn put_from_layers(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        buffer_ptrs: &Bound<'_, PyAny>,
        sizes: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
        replicateConfig: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        self.single(py, Op::Put, direct, replicateConfig, |g| {
            layers_item(key, buffer_ptrs, sizes, false, g)
        })
    }

    /// Store many layered objects in one batch: object ``i`` is the pieces
    /// ``buffer_ptrs_list[i]`` (sizes ``sizes_list[i]``) concatenated.
    ///
    /// Args:
    ///     keys: list of str (at most 16,384).
    ///     buffer_ptrs_list: list (one per key) of lists of int addresses or buffer objects.
    ///     sizes_list: list (one per key) of lists of sizes; None when every piece is a buffer
    ///         object taken whole.
    ///     direct: ``SMEMB_COPY_H2G`` (default), ``SMEMB_COPY_AUTO`` or ``SMEMB_COPY_L2G``
    ///         (-3000 in this build).
    ///     replicateConfig: an optional ``mmc.ReplicateConfig``, for every key.
    ///
    /// Returns:
    ///     list of int, one per key: 0 (also for a key that exists) or a negative code.
    #[pyo3(signature = (keys, buffer_ptrs_list, sizes_list = None, direct = None, replicateConfig = None))]
    #[allow(non_snake_case)]
    fn batch_put_from_layers(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        buffer_ptrs_list: Option<&Bound<'_, PyAny>>,
        sizes_list: Option<&Bound<'_, PyAny>>,
        direct: Option<&Bound<'_, PyAny>>,
        replicateConfig: Option<&Bound<'_, PyAny>>,
    ) -> Vec<i32> {
        self.batch_layers(
            py,
            keys,
            buffer_ptrs_list,
            sizes_list,
            (direct, replicateConfig),
            Op::Put,
        )
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

    /// Read many whole objects.
    ///
    /// Returns:
    ///     list of bytes, one per key: the object's bytes, ``b""`` for a key that failed
    ///     (missing, bad key, not initialized); ``[]`` when ``keys`` is empty, not a list, or
    ///     longer than 16,384.
    #[pyo3(signature = (keys))]
    fn get_batch<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> Vec<Bound<'py, PyBytes>> {
        self.values(py, keys)
    }

    /// Size and replica locations of the object under ``key``.
    ///
    /// Returns:
    ///     an ``mmc.KeyInfo``; for a missing key (or any failure) one whose ``size()`` is 0 and
    ///     whose lists are empty.
    #[pyo3(signature = (key))]
    fn get_key_info(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> KeyInfo {
        let (Some(client), Ok(key)) = (self.client(), key_arg(key)) else {
            return KeyInfo::default();
        };
        match py.detach(|| client.query(&key)) {
            Ok(info) => KeyInfo::of(info),
            Err(_) => KeyInfo::default(),
        }
    }

    /// ``get_key_info`` of many keys in one request.
    ///
    /// Args:
    ///     flag: 0 (default) also reports keys this store allocated with ``batch_alloc`` and has
    ///         not finished yet; 1 reports committed (readable) objects only.
    ///
    /// Returns:
    ///     list of ``mmc.KeyInfo``, one per key (size 0 for a missing or bad key); ``[]`` when
    ///     ``keys`` is empty, not a list, or longer than 16,384.
    #[pyo3(signature = (keys, flag = 0))]
    fn batch_get_key_info(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        flag: i64,
    ) -> Vec<KeyInfo> {
        self.key_infos(py, keys, flag)
    }

    /// Read the object stored under ``key`` into a buffer.
    ///
    /// Args:
    ///     key: str.
    ///     buffer_ptr: int address of writable memory valid for ``size`` bytes during the
    ///         call; or a writable buffer-protocol object (bytearray, numpy array, ...).
    ///     size: the buffer's capacity in bytes; must be at least the object's size (else
    ///         -3000 and nothing is copied). Bytes past the object are left untouched.
    ///     direct: ``SMEMB_COPY_G2H`` (default), ``SMEMB_COPY_AUTO`` (host memory only in this
    ///         build) or ``SMEMB_COPY_G2L`` (-3000 in this build).
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
        self.single(py, Op::Get, direct, None, |g| {
            one_item(key, buffer_ptr, size, true, g)
        })
    }

    /// Read many objects, each into one buffer, in one batch.
    ///
    /// Args:
    ///     keys: list of str (at most 16,384).
    ///     buffer_ptrs: list of int addresses (or writable buffer objects), one per key.
    ///     sizes: list of capacities, one per key (None when every buffer is a buffer object).
    ///     direct: ``SMEMB_COPY_G2H`` (default), ``SMEMB_COPY_AUTO`` or ``SMEMB_COPY_G2L``
    ///         (-3000 in this build).
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
        self.batch_flat(py, keys, buffer_ptrs, sizes, (direct, None), Op::Get)
    }

    /// Read one object into several pieces (layers), filled in order: piece 0 gets the first
    /// ``sizes[0]`` bytes, and so on. Their total must be at least the object's size.
    ///
    /// Args:
    ///     key: str.
    ///     buffer_ptrs: list of int addresses (or writable buffer objects), one per layer.
    ///     sizes: list of sizes, one per layer; None when every piece is a buffer object.
    ///     direct: ``SMEMB_COPY_G2H`` (default), ``SMEMB_COPY_AUTO`` or ``SMEMB_COPY_G2L``
    ///         (-3000 in this build).
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
        self.single(py, Op::Get, direct, None, |g| {
            layers_item(key, buffer_ptrs, sizes, true, g)
        })
    }

    /// Read many layered objects in one batch: object ``i`` fills the pieces
    /// ``buffer_ptrs_list[i]`` (sizes ``sizes_list[i]``) in order.
    ///
    /// Args:
    ///     keys: list of str (at most 16,384).
    ///     buffer_ptrs_list: list (one per key) of lists of int addresses or buffer objects.
    ///     sizes_list: list (one per key) of lists of sizes; None when every piece is a buffer
    ///         object.
    ///     direct: ``SMEMB_COPY_G2H`` (default), ``SMEMB_COPY_AUTO`` or ``SMEMB_COPY_G2L``
    ///         (-3000 in this build).
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
        self.batch_layers(
            py,
            keys,
            buffer_ptrs_list,
            sizes_list,
            (direct, None),
            Op::Get,
        )
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

    /// Remove every object in the cluster (objects being read go once their readers finish;
    /// puts still being written are not touched).
    ///
    /// Returns:
    ///     0 on success; a negative code on error (-3019 not initialized, -3004 if a restarted
    ///     meta service was still rebuilding its directory at the timeout, ...).
    fn remove_all(&self, py: Python<'_>) -> i32 {
        let Some(client) = self.client() else {
            return codes::NOT_INIT;
        };
        py.detach(|| codes::of_result(&client.remove_all().map(|_| ())))
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

    // ---- vllm-ascend's layer-wise path (see `layerwise.rs`, `session.rs`) ------------------

    /// Allocate space for each key without writing it (create-only); the object stays invisible
    /// until ``batch_write_finish``.
    ///
    /// Args:
    ///     keys: list of str; sizes: list of sizes (> 0), one per key.
    ///     media: None (any tier, the default), 0 (HBM) or 1 (DRAM).
    ///     replicateConfig: an optional ``mmc.ReplicateConfig``.
    ///
    /// Returns:
    ///     list of int, one global address per key (``rank << 48 | segment << 40 | offset`` of
    ///     its first replica; ``batch_copy`` takes it and any address inside the object); 0 for
    ///     a key that got no space, already exists or is already allocated here; ``[]`` when
    ///     ``keys`` is not a list or longer than 16,384.
    #[pyo3(signature = (keys, sizes, media = None, replicateConfig = None))]
    #[allow(non_snake_case)]
    fn batch_alloc(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
        media: Option<&Bound<'_, PyAny>>,
        replicateConfig: Option<&Bound<'_, PyAny>>,
    ) -> Vec<u64> {
        self.lw_alloc(py, keys, sizes, media, replicateConfig)
    }

    /// Copy between caller memory and the pool: piece ``i`` is ``sizes[i]`` bytes at
    /// ``buffer_ptrs[i]`` and at global address ``addrs[i]``, which must lie inside an object
    /// this store allocated (``batch_alloc``; writes go to every replica) or holds a read lease
    /// on (``batch_add_lease``), at any byte offset.
    ///
    /// Args:
    ///     direct: ``SMEMB_COPY_H2G`` (into the pool) or ``SMEMB_COPY_G2H`` (out of it); the
    ///         device directions L2G / G2L are -3000 in this build.
    ///
    /// Returns:
    ///     0, or the first failure's code (-3000 bad argument or an address outside those
    ///     objects, -3004 an allocation past its write window or a lease that ended, ...).
    #[pyo3(signature = (addrs, buffer_ptrs, sizes, direct = None))]
    fn batch_copy(
        &self,
        py: Python<'_>,
        addrs: &Bound<'_, PyAny>,
        buffer_ptrs: &Bound<'_, PyAny>,
        sizes: &Bound<'_, PyAny>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        match (seq(addrs), seq(buffer_ptrs), seq(sizes)) {
            (Ok(a), Ok(p), Ok(s)) if a.len() == p.len() && a.len() == s.len() => {
                let items = a.into_iter().zip(p).zip(s).map(|((a, p), s)| (a, p, s));
                self.lw_copy(py, items.collect(), direct)
            }
            _ => INVALID,
        }
    }

    /// ``batch_copy`` with several pieces per address: the pieces of ``buffer_ptrs_list[i]``
    /// (sizes ``sizes_list[i]``) lie back to back from ``addrs[i]``.
    ///
    /// Returns:
    ///     0, or the first failure's code.
    #[pyo3(signature = (addrs, buffer_ptrs_list, sizes_list, direct = None))]
    fn batch_copy_layers(
        &self,
        py: Python<'_>,
        addrs: &Bound<'_, PyAny>,
        buffer_ptrs_list: &Bound<'_, PyAny>,
        sizes_list: &Bound<'_, PyAny>,
        direct: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        match layerwise::pieces(py, addrs, buffer_ptrs_list, sizes_list) {
            Ok(items) => self.lw_copy(py, items, direct),
            Err(c) => c,
        }
    }

    /// Commit keys allocated by ``batch_alloc``: ``results[i] == 0`` makes key ``i`` visible
    /// with the bytes written; any other value frees it.
    ///
    /// Returns:
    ///     list of int, one per key: 0, -3007 for a key with no allocation from this store, or
    ///     the commit's code.
    #[pyo3(signature = (keys, results))]
    fn batch_write_finish(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        results: &Bound<'_, PyAny>,
    ) -> Vec<i32> {
        self.lw_finish(py, keys, results)
    }

    /// Take a read lease on each key: until ``batch_remove_lease`` (or the meta service's
    /// ``lease_ms``, whatever ``lease_ttl_ms`` says) the object is not freed and its space not
    /// reused, and ``batch_copy`` may read it.
    ///
    /// Returns:
    ///     list of int, one per key: 0; -3101 for a key allocated here and not yet finished;
    ///     -3007 for a missing key; other negative codes.
    #[pyo3(signature = (keys, lease_ttl_ms = None))]
    fn batch_add_lease(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        lease_ttl_ms: Option<&Bound<'_, PyAny>>,
    ) -> Vec<i32> {
        self.lw_add_lease(py, keys, lease_ttl_ms)
    }

    /// Give back the read leases ``batch_add_lease`` took on these keys.
    ///
    /// Returns:
    ///     0; -3007 when some key held no lease from this store (the others are given back).
    #[pyo3(signature = (keys))]
    fn batch_remove_lease(&self, keys: &Bound<'_, PyAny>) -> i32 {
        self.lw_remove_lease(keys)
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
    m.add_class::<ReplicateConfig>()?;
    m.add_class::<KeyInfo>()?;
    m.add_class::<MetaService>()?;
    for (short, d) in [
        ("L2G", MmcCopyDirect::L2G),
        ("G2L", MmcCopyDirect::G2L),
        ("G2H", MmcCopyDirect::G2H),
        ("H2G", MmcCopyDirect::H2G),
        ("AUTO", MmcCopyDirect::Auto),
    ] {
        m.add(d.py_name(), d)?;
        m.add(short, d)?;
    }
    m.add_function(wrap_pyfunction!(_close_all, m)?)?;
    m.add_function(wrap_pyfunction!(device::device_backend, m)?)?;
    m.add_function(wrap_pyfunction!(device::device_alloc, m)?)?;
    m.add_function(wrap_pyfunction!(device::device_free, m)?)?;
    m.add_function(wrap_pyfunction!(device::device_memcpy, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
