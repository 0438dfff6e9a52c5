"""Replays of the call sequences of the engines that use Ascend MemCache, written from their
documented behaviour and moving real bytes through our store (host memory):

- SGLang HiCache (the `HiCacheStorage` v1 interface of its MemCache / Mooncake-style backends):
  the host KV pool registered once with `register_buffer`; `batch_exists` = the length of the
  leading run of hits (`batch_is_exist`); `batch_set_v1` puts only missing pages
  (`batch_put_from`, host -> pool); `batch_get_v1` reads pages into host pool slots.
- vllm-ascend's `memcache` KV-pool backend, classic path: `batch_is_exist`, then
  `batch_put_from_layers` / `batch_get_into_layers` with raw int directions: 0 / 1 (L2G / G2L)
  over KV caches in device memory (the sim device backend), as the engine does on NPUs, and
  3 / 2 (H2G / G2H) over host memory.
- vllm-ascend's layer-wise (GVA) path: save = `batch_get_key_info(keys, 0)` to skip existing
  keys, `batch_alloc`, one `batch_copy` per layer at `gva + layer offset`, `batch_write_finish`;
  load = `batch_get_key_info(keys, 1)`, `batch_add_lease`, one `batch_copy` per layer,
  `batch_remove_lease`. Same directions: 0 / 1 over device memory, 3 / 2 over host memory.
"""

import numpy as np
import pytest

import mmc

H2G, G2H = 3, 2  # host memory
L2G, G2L = 0, 1  # device memory: what the engines pass for their NPU KV caches


class Cache:
    """A KV cache array in host memory, or mirrored in device memory (sim backend): `ptr(*idx)`
    is the address of an element, `pull()` the array's bytes as they are on the device."""

    def __init__(self, arr, device):
        self.arr, self.device = arr, device
        self.dev = 0
        if device:
            self.dev = mmc.device_alloc(arr.nbytes)
            assert self.dev > 0
            assert mmc.device_memcpy(self.dev, arr.ctypes.data, arr.nbytes, "h2d") == 0

    def ptr(self, *idx):
        off = sum(i * s for i, s in zip(idx, self.arr.strides))
        return (self.dev if self.device else self.arr.ctypes.data) + off

    def pull(self):
        if self.device:
            out = np.empty_like(self.arr)
            assert mmc.device_memcpy(out.ctypes.data, self.dev, out.nbytes, "d2h") == 0
            return out
        return self.arr

    def free(self):
        if self.device:
            assert mmc.device_free(self.dev) == 0


DIRECTIONS = [pytest.param(False, id="host"), pytest.param(True, id="device")]


def rand(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


class HiCacheReplay:
    """SGLang's HiCache storage calls against one store: a host KV pool of `pages` slots, each
    `layers` x (K, V) chunks of `chunk` bytes, stored page-first (a page's bytes contiguous)."""

    def __init__(self, store, pages=32, layers=4, chunk=2048, tp_rank=0):
        self.store = store
        self.layers, self.chunk, self.tp_rank = layers, chunk, tp_rank
        self.pool = np.zeros((pages, 2, layers, chunk), dtype=np.uint8)
        self.page_bytes = 2 * layers * chunk
        # Registered once, at start-up (register_mem_pool_host).
        assert store.register_buffer(self.pool.ctypes.data, self.pool.nbytes) == 0

    def close(self):
        assert self.store.unregister_buffer(self.pool.ctypes.data, self.pool.nbytes) == 0

    def _keys(self, hashes):
        # One object per page and K/V half, suffixed with the TP rank.
        return [f"{h}_{self.tp_rank}_{kv}" for h in hashes for kv in "kv"]

    def _ptrs(self, slots):
        return [self.pool[s, kv].ctypes.data for s in slots for kv in range(2)]

    def batch_exists(self, hashes):
        """Pages from the start that are stored (the prefix the engine can reuse)."""
        res = self.store.batch_is_exist(self._keys(hashes))
        n = 0
        while n < len(hashes) and res[2 * n] == 1 and res[2 * n + 1] == 1:
            n += 1
        return n

    def batch_set_v1(self, hashes, slots):
        keys, ptrs = self._keys(hashes), self._ptrs(slots)
        exist = self.store.batch_is_exist(keys)
        todo = [i for i, e in enumerate(exist) if e != 1]
        half = self.page_bytes // 2
        res = self.store.batch_put_from([keys[i] for i in todo], [ptrs[i] for i in todo],
                                        [half] * len(todo), H2G)
        ok = [e == 1 for e in exist]
        for i, r in zip(todo, res):
            ok[i] = r == 0
        return [ok[2 * p] and ok[2 * p + 1] for p in range(len(hashes))]

    def batch_get_v1(self, hashes, slots):
        keys = self._keys(hashes)
        half = self.page_bytes // 2
        res = self.store.batch_get_into(keys, self._ptrs(slots), [half] * len(keys), G2H)
        return [res[2 * p] == 0 and res[2 * p + 1] == 0 for p in range(len(hashes))]


def test_sglang_hicache_replay(store, key):
    eng = HiCacheReplay(store)
    try:
        # Request A: 8 pages computed on the device, backed up to host slots 0..7, then stored.
        a = [f"{key}-a{i}" for i in range(8)]
        eng.pool[0:8] = rand(eng.pool[0:8].shape, 1)
        written = eng.pool[0:8].copy()
        assert eng.batch_exists(a) == 0
        assert eng.batch_set_v1(a, list(range(8))) == [True] * 8
        assert eng.batch_set_v1(a, list(range(8))) == [True] * 8, "already stored: no-op"
        # Request B shares A's first 5 pages, then diverges; a later page of B exists (stored by
        # another request) but after a miss: the reusable prefix is 5 pages.
        b = a[:5] + [f"{key}-b{i}" for i in range(3)]
        eng.pool[20] = rand(eng.pool[20].shape, 2)
        assert eng.batch_set_v1([b[7]], [20]) == [True]
        assert eng.batch_exists(b) == 5
        # Prefetch the hits into other host slots: byte-exact copies of what A stored.
        assert eng.batch_get_v1(b[:5], list(range(10, 15))) == [True] * 5
        assert np.array_equal(eng.pool[10:15], written[:5])
        # A miss reads nothing.
        assert eng.batch_get_v1([b[5]], [15]) == [False]
        # Store B's new pages: now B is a full hit.
        eng.pool[15:18] = rand(eng.pool[15:18].shape, 3)
        assert eng.batch_set_v1(b[5:], [15, 16, 17]) == [True] * 3
        assert eng.batch_exists(b) == 8
        assert eng.batch_get_v1(b, list(range(24, 32))) == [True] * 8
        assert np.array_equal(eng.pool[24:29], written[:5])
        assert np.array_equal(eng.pool[29:31], eng.pool[15:17])
        assert np.array_equal(eng.pool[31], eng.pool[20])
    finally:
        eng.close()
    assert all(r == 0 for r in store.remove_batch(eng._keys(a + b[5:])))


@pytest.mark.parametrize("device", DIRECTIONS)
def test_vllm_ascend_classic_replay(store, key, device):
    """`MemcacheBackend.put` / `.get`: one key per (block, TP rank), its pieces the block's
    K and V in every layer (per-layer KV cache tensors), by pointer."""
    layers, blocks, kb, vb = 5, 6, 3072, 512
    put_dir, get_dir = (L2G, G2L) if device else (H2G, G2H)
    k_cache = Cache(rand((layers, blocks, kb), 4), device)
    v_cache = Cache(rand((layers, blocks, vb), 5), device)
    keys = [f"{key}@model@{h:032x}@0" for h in range(blocks)]

    def addrs(kc, vc, b):
        return [p for layer in range(layers)
                for p in (kc.ptr(layer, b), vc.ptr(layer, b))]

    sizes = [kb, vb] * layers
    assert store.batch_is_exist(keys) == [0] * blocks
    res = store.batch_put_from_layers(keys, [addrs(k_cache, v_cache, b) for b in range(blocks)],
                                      [sizes] * blocks, put_dir)
    assert res == [0] * blocks
    # A second save of the same blocks (another request with the same prefix) is 0 too.
    assert store.batch_put_from_layers(keys[:2], [addrs(k_cache, v_cache, b) for b in range(2)],
                                       [sizes] * 2, put_dir) == [0, 0]
    assert store.batch_is_exist(keys) == [1] * blocks
    # Load into another worker's cache, blocks in another order.
    k2 = Cache(np.zeros_like(k_cache.arr), device)
    v2 = Cache(np.zeros_like(v_cache.arr), device)
    order = list(reversed(range(blocks)))
    res = store.batch_get_into_layers([keys[b] for b in order],
                                      [addrs(k2, v2, b) for b in order], [sizes] * blocks,
                                      get_dir)
    assert res == [0] * blocks
    assert np.array_equal(k2.pull(), k_cache.arr) and np.array_equal(v2.pull(), v_cache.arr)
    assert store.remove_batch(keys) == [0] * blocks
    for c in (k_cache, v_cache, k2, v2):
        c.free()


@pytest.mark.parametrize("device", DIRECTIONS)
@pytest.mark.parametrize("placement", ["embedded", "remote"])
def test_vllm_ascend_layerwise_replay(request, placement, key, device):
    """The GVA path: save layer by layer as the forward pass produces them, publish after the
    last layer; load under a lease, layer by layer."""
    store = request.getfixturevalue(placement)
    layers, blocks, per_layer = 8, 4, 4096
    size = layers * per_layer
    put_dir, get_dir = (L2G, G2L) if device else (H2G, G2H)
    kv = Cache(rand((layers, blocks, per_layer), 6), device)  # per-layer KV caches
    keys = [f"{key}@model@{h:032x}@0" for h in range(blocks)]

    # Save. Existing keys are skipped (none here); new ones get addresses.
    infos = store.batch_get_key_info(keys, 0)
    new = [k for k, i in zip(keys, infos) if i.size() == 0]
    assert new == keys
    gvas = store.batch_alloc(new, [size] * len(new))
    assert all(g > 0 for g in gvas)
    for layer in range(layers):
        rc = store.batch_copy([g + layer * per_layer for g in gvas],
                              [kv.ptr(layer, b) for b in range(blocks)],
                              [per_layer] * blocks, put_dir)
        assert rc == 0
    assert store.batch_write_finish(new, [0] * len(new)) == [0] * len(new)

    # Load on another "worker": readable keys, a lease, then layer by layer.
    infos = store.batch_get_key_info(keys, 1)
    assert [i.size() for i in infos] == [size] * blocks
    bases = [i.gva_list()[0] for i in infos]
    assert store.batch_add_lease(keys, 5000) == [0] * blocks
    out = Cache(np.zeros_like(kv.arr), device)
    for layer in range(layers):
        rc = store.batch_copy([g + layer * per_layer for g in bases],
                              [out.ptr(layer, b) for b in range(blocks)],
                              [per_layer] * blocks, get_dir)
        assert rc == 0
    assert store.batch_remove_lease(keys) == 0
    assert np.array_equal(out.pull(), kv.arr)
    kv.free()
    out.free()
    assert store.remove_batch(keys) == [0] * blocks
