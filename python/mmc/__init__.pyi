from ._mmc import (
    SMEMB_COPY_G2H as SMEMB_COPY_G2H,
    SMEMB_COPY_G2L as SMEMB_COPY_G2L,
    SMEMB_COPY_H2G as SMEMB_COPY_H2G,
    SMEMB_COPY_L2G as SMEMB_COPY_L2G,
    SMEMB_COPY_AUTO as SMEMB_COPY_AUTO,
    L2G as L2G,
    G2L as G2L,
    G2H as G2H,
    H2G as H2G,
    AUTO as AUTO,
    KeyInfo as KeyInfo,
    MetaService as MetaService,
    ReplicateConfig as ReplicateConfig,
    DistributedObjectStore as DistributedObjectStore,
    MmcCopyDirect as MmcCopyDirect,
    __version__ as __version__,
    device_alloc as device_alloc,
    device_backend as device_backend,
    device_free as device_free,
    device_memcpy as device_memcpy,
)

from ._config import LocalConfig as LocalConfig, MetaConfig as MetaConfig

__all__: list[str]
