from ._mmc import (
    SMEMB_COPY_G2H as SMEMB_COPY_G2H,
    SMEMB_COPY_G2L as SMEMB_COPY_G2L,
    SMEMB_COPY_H2G as SMEMB_COPY_H2G,
    SMEMB_COPY_L2G as SMEMB_COPY_L2G,
    DistributedObjectStore as DistributedObjectStore,
    MmcCopyDirect as MmcCopyDirect,
    __version__ as __version__,
)

__all__: list[str]
