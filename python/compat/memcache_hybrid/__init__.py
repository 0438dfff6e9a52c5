"""Ascend MemCache's module name for MemCache's ``mmc``: every public name of ``mmc``.

Provided by the ``mmc-memcache-compat`` distribution so that code written for Ascend MemCache
(``from memcache_hybrid import DistributedObjectStore``) runs on MemCache unchanged. The objects
are ``mmc``'s own: ``memcache_hybrid.DistributedObjectStore is mmc.DistributedObjectStore``.
"""

import mmc as _mmc
from mmc import *  # noqa: F401,F403  (the whole public surface, by design)

__all__ = list(_mmc.__all__)
__version__ = _mmc.__version__
# Which implementation this is (Ascend MemCache's module has no such attribute).
__implementation__ = "mmc"
