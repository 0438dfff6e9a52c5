"""MemCache: a distributed KV-cache memory store.

``DistributedObjectStore`` is the client: ``init(device_id)`` reads the settings from the file
named by ``$MMC_LOCAL_CONFIG_PATH`` and connects to a separately started meta service
(``mmc-meta``); then ``put``/``get`` objects by key, from and into raw pointers (ints such as
``numpy_array.ctypes.data`` or ``tensor.data_ptr()``) or buffer-protocol objects.
``MmcCopyDirect`` and the module-level ``SMEMB_COPY_*`` constants (and their short names
``H2G``, ``L2G``, ``G2H``, ``G2L``, ``AUTO``) name copy directions.

Ascend MemCache's ``memcache_hybrid`` names are here too: ``LocalConfig`` with
``DistributedObjectStore.setup``, ``MetaConfig`` with ``MetaService.setup`` / ``MetaService.main``
(a meta service inside this process), ``ReplicateConfig`` (the optional last argument of the
puts) and ``KeyInfo`` (what ``get_key_info`` returns).

Device memory: ``mmc.device_backend()`` names the process's device backend (``$MMC_DEVICE_BACKEND``
or the config's ``device_backend``: ``auto`` probes cuda, then ascend; ``sim`` is a simulated device
for tests), and ``device_alloc`` / ``device_free`` / ``device_memcpy`` (``"h2d"``, ``"d2h"``,
``"d2d"``) move bytes on it without a framework. Device pointers go with ``SMEMB_COPY_L2G`` /
``SMEMB_COPY_G2L`` (or ``AUTO``).

Return codes: 0 on success, negative on failure (-3000 invalid parameter, -3007 object does
not exist, -3013 no space, -3019 not initialized, ...). A put of a key that exists returns 0.
"""

import atexit as _atexit

from ._mmc import (
    AUTO,
    G2H,
    G2L,
    H2G,
    L2G,
    SMEMB_COPY_AUTO,
    SMEMB_COPY_G2H,
    SMEMB_COPY_G2L,
    SMEMB_COPY_H2G,
    SMEMB_COPY_L2G,
    DistributedObjectStore,
    KeyInfo,
    MetaService,
    MmcCopyDirect,
    ReplicateConfig,
    __version__,
    device_alloc,
    device_backend,
    device_free,
    device_memcpy,
)
from ._config import LocalConfig, MetaConfig
from . import _mmc

__all__ = [
    "DistributedObjectStore",
    "MmcCopyDirect",
    "SMEMB_COPY_H2G",
    "SMEMB_COPY_L2G",
    "SMEMB_COPY_G2H",
    "SMEMB_COPY_G2L",
    "SMEMB_COPY_AUTO",
    "H2G",
    "L2G",
    "G2H",
    "G2L",
    "AUTO",
    "LocalConfig",
    "MetaConfig",
    "MetaService",
    "ReplicateConfig",
    "KeyInfo",
    "device_backend",
    "device_alloc",
    "device_free",
    "device_memcpy",
]

# Stores still open at interpreter exit are closed, so that a local service embedded in this
# process unregisters from the meta service instead of timing out.
_atexit.register(_mmc._close_all)
