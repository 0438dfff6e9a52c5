"""The `memcache_hybrid` module name, from the `mmc-memcache-compat` package (python/compat/,
installed by scripts/test-python.sh): the same objects as `mmc`, usable as the engines import
them."""

import importlib.metadata

import numpy as np

import mmc


def test_memcache_hybrid_is_mmc(embedded, key):
    import memcache_hybrid

    assert memcache_hybrid.__implementation__ == "mmc"
    for name in mmc.__all__:
        assert getattr(memcache_hybrid, name) is getattr(mmc, name), name
    from memcache_hybrid import DistributedObjectStore, LocalConfig, ReplicateConfig  # noqa: F401

    assert DistributedObjectStore is mmc.DistributedObjectStore
    # Its own distribution: it never satisfies (or clashes with) a memcache_hybrid requirement.
    assert importlib.metadata.version("mmc-memcache-compat")
    names = {d.metadata["Name"] for d in importlib.metadata.distributions()}
    assert "memcache_hybrid" not in names and "memcache-hybrid" not in names
    data = np.arange(1000, dtype=np.uint8)
    assert embedded.put_from(key, data.ctypes.data, data.nbytes, memcache_hybrid.H2G) == 0
    assert embedded.get(key) == data.tobytes()
    assert embedded.remove(key) == 0
