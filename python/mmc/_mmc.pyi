"""Type stubs for MemCache's compiled module (re-exported by ``mmc``)."""

from typing_extensions import Buffer as _Buffer
from enum import Enum
from typing import Final, Iterable, List, Optional, Sequence, Union

__version__: str

# An address as an int (``numpy_array.ctypes.data``, ``tensor.data_ptr()``), or any object with
# the buffer protocol (bytes, bytearray, memoryview, numpy array), C-contiguous.
Pointer = Union[int, _Buffer]
Size = Optional[int]
Direct = Union["MmcCopyDirect", int, None]

class MmcCopyDirect(Enum):
    """Direction of a copy (the original's values).

    SMEMB_COPY_L2G (0): device -> pool; SMEMB_COPY_G2L (1): pool -> device;
    SMEMB_COPY_G2H (2): pool -> host (default for gets); SMEMB_COPY_H2G (3): host -> pool
    (default for puts); SMEMB_COPY_AUTO (9): the pointer decides (host memory: registered or
    mapped in this process; anything else -3000). Device directions return -3000 in this build
    (no device backend).
    """

    SMEMB_COPY_L2G = 0
    SMEMB_COPY_G2L = 1
    SMEMB_COPY_G2H = 2
    SMEMB_COPY_H2G = 3
    SMEMB_COPY_AUTO = 9
    @property
    def value(self) -> int: ...
    @property
    def name(self) -> str: ...
    def __int__(self) -> int: ...

SMEMB_COPY_L2G: Final[MmcCopyDirect]
SMEMB_COPY_G2L: Final[MmcCopyDirect]
SMEMB_COPY_G2H: Final[MmcCopyDirect]
SMEMB_COPY_H2G: Final[MmcCopyDirect]
SMEMB_COPY_AUTO: Final[MmcCopyDirect]
L2G: Final[MmcCopyDirect]
G2L: Final[MmcCopyDirect]
G2H: Final[MmcCopyDirect]
H2G: Final[MmcCopyDirect]
AUTO: Final[MmcCopyDirect]

class ReplicateConfig:
    """Replicas of a put (0 or 1 = one, at most 8) and the local services to place them on."""

    replicaNum: int
    preferredLocalServiceIDs: List[int]
    def __init__(
        self, replicaNum: int = 0, preferredLocalServiceIDs: Optional[List[int]] = None
    ) -> None: ...

class KeyInfo:
    """Size and replica locations of an object (size 0, empty lists: no such key)."""

    def size(self) -> int: ...
    def gva_list(self) -> List[int]:
        """One ``rank << 48 | segment << 40 | offset`` per replica (-1: does not fit)."""
    def loc_list(self) -> List[int]:
        """The local service id of each replica."""
    def type_list(self) -> List[int]:
        """The medium of each replica: 0 HBM, 1 DRAM."""

class MetaService:
    """A meta service inside this process."""

    @staticmethod
    def setup(config: object) -> int:
        """Settings (an ``mmc.MetaConfig``) for the next ``main``; 0 or -3000."""
    @staticmethod
    def main() -> int:
        """Run until SIGINT (then raise KeyboardInterrupt); a negative code if it cannot start."""

RC = Optional[ReplicateConfig]

class DistributedObjectStore:
    """A MemCache client. ``init(device_id)`` first; return codes are 0 or negative."""

    def __init__(self) -> None: ...
    def setup(self, config: object) -> int:
        """Settings (an ``mmc.LocalConfig``) for the next ``init``; 0 or -3000."""
    def init(self, device_id: int = 0, init_bm: bool = True) -> int:
        """Read ``setup``'s settings or ``$MMC_LOCAL_CONFIG_PATH``; connect; 0 on success.

        When the file gives the local service a DRAM/HBM size, a local service runs inside this
        process and contributes that memory.
        """
    def close(self) -> int:
        """Close the client (0); later calls return -3019 (``get``: ``b""``) until ``init``."""
    def get_local_service_id(self) -> int:
        """The embedded local service's id; 2**32 - 1 without one."""
    def register_buffer(self, buffer_ptr: int, size: int) -> int:
        """Name a host buffer (checked and remembered); 0 or -3000."""
    def unregister_buffer(self, buffer_ptr: int, size: int) -> int:
        """Forget a registered buffer; 0 or -3000."""
    def put(self, key: str, data: _Buffer, replicateConfig: RC = None) -> int:
        """Store ``data`` under ``key`` (create-only: 0 also if it exists); 0 on success."""
    def put_batch(
        self, keys: Sequence[str], values: Sequence[_Buffer], replicateConfig: RC = None
    ) -> List[int]:
        """Store one buffer object per key; one code per key."""
    def get_batch(self, keys: Sequence[str]) -> List[bytes]:
        """The objects' bytes, ``b""`` per failed key."""
    def get_key_info(self, key: str) -> KeyInfo:
        """Size and replica locations."""
    def batch_get_key_info(self, keys: Sequence[str], flag: int = 0) -> List[KeyInfo]:
        """``get_key_info`` per key (flag 0: also this store's unfinished ``batch_alloc`` keys)."""
    def batch_alloc(
        self,
        keys: Sequence[str],
        sizes: Sequence[int],
        media: Optional[int] = None,
        replicateConfig: Optional[ReplicateConfig] = None,
    ) -> List[int]:
        """Allocate without writing; one global address per key (0 on failure)."""
    def batch_copy(
        self,
        addrs: Sequence[int],
        buffer_ptrs: Sequence[Pointer],
        sizes: Sequence[int],
        direct: Union[MmcCopyDirect, int, None] = None,
    ) -> int:
        """Copy between caller memory and addresses inside staged or leased objects."""
    def batch_copy_layers(
        self,
        addrs: Sequence[int],
        buffer_ptrs_list: Sequence[Sequence[Pointer]],
        sizes_list: Sequence[Sequence[int]],
        direct: Union[MmcCopyDirect, int, None] = None,
    ) -> int:
        """``batch_copy`` with pieces laid back to back from each address."""
    def batch_write_finish(self, keys: Sequence[str], results: Sequence[int]) -> List[int]:
        """Commit (result 0) or free (any other result) keys from ``batch_alloc``."""
    def batch_add_lease(self, keys: Sequence[str], lease_ttl_ms: Optional[int] = None) -> List[int]:
        """Take a read lease per key; 0, -3101 not yet written, -3007 missing."""
    def batch_remove_lease(self, keys: Sequence[str]) -> int:
        """Give back leases taken by ``batch_add_lease``; 0 or -3007."""
    def put_from(
        self,
        key: str,
        buffer_ptr: Pointer,
        size: Size = None,
        direct: Direct = None,
        replicateConfig: RC = None,
    ) -> int:
        """Store ``size`` bytes at ``buffer_ptr`` (default direction SMEMB_COPY_H2G)."""
    def batch_put_from(
        self,
        keys: Sequence[str],
        buffer_ptrs: Sequence[Pointer],
        sizes: Optional[Sequence[int]] = None,
        direct: Direct = None,
        replicateConfig: RC = None,
    ) -> List[int]:
        """Store one buffer per key in one batch; one code per key."""
    def put_from_layers(
        self,
        key: str,
        buffer_ptrs: Sequence[Pointer],
        sizes: Optional[Sequence[int]] = None,
        direct: Direct = None,
        replicateConfig: RC = None,
    ) -> int:
        """Store one object made of the pieces concatenated in order; 0 on success."""
    def batch_put_from_layers(
        self,
        keys: Sequence[str],
        buffer_ptrs_list: Sequence[Sequence[Pointer]],
        sizes_list: Optional[Sequence[Sequence[int]]] = None,
        direct: Direct = None,
        replicateConfig: RC = None,
    ) -> List[int]:
        """Store one layered object per key in one batch; one code per key."""
    def get(self, key: str) -> bytes:
        """The object's bytes, or ``b""`` on any failure."""
    def get_into(
        self, key: str, buffer_ptr: Pointer, size: Size = None, direct: Direct = None
    ) -> int:
        """Read the object into the buffer (capacity ``size``); 0 on success (not a count).

        -3007 if the key does not exist; -3000 if the buffer is smaller than the object.
        """
    def batch_get_into(
        self,
        keys: Sequence[str],
        buffer_ptrs: Sequence[Pointer],
        sizes: Optional[Sequence[int]] = None,
        direct: Direct = None,
    ) -> List[int]:
        """Read one object per key into its buffer in one batch; one code per key."""
    def get_into_layers(
        self,
        key: str,
        buffer_ptrs: Sequence[Pointer],
        sizes: Optional[Sequence[int]] = None,
        direct: Direct = None,
    ) -> int:
        """Read the object into the pieces, filled in order; 0 on success."""
    def batch_get_into_layers(
        self,
        keys: Sequence[str],
        buffer_ptrs_list: Sequence[Sequence[Pointer]],
        sizes_list: Optional[Sequence[Sequence[int]]] = None,
        direct: Direct = None,
    ) -> List[int]:
        """Read one layered object per key in one batch; one code per key."""
    def remove(self, key: str) -> int:
        """Remove the key; 0, or -3007 if it does not exist."""
    def remove_batch(self, keys: Iterable[str]) -> List[int]:
        """Remove many keys; one code per key."""
    def remove_all(self) -> int:
        """Remove every object in the cluster; 0 or a negative code."""
    def is_exist(self, key: str) -> int:
        """1 if the key exists, 0 if not, negative on error."""
    def batch_is_exist(self, keys: Iterable[str]) -> List[int]:
        """1 / 0 / negative per key."""

def _close_all() -> None: ...
def device_backend() -> str: ...
def device_alloc(nbytes: int, device_id: int = 0) -> int: ...
def device_free(ptr: int) -> int: ...
def device_memcpy(dst: int, src: int, nbytes: int, kind: str) -> int: ...
