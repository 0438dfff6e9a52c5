"""vllm-ascend's layer-wise path against real services, on every placement: `batch_alloc`
addresses, `batch_copy` / `batch_copy_layers` at any byte offset, `batch_write_finish`, and
`batch_add_lease` / `batch_remove_lease`; every byte checked.

Placements: `embedded` (the store's own pool, plain copies), `shm` (a pure client and the
standalone mmc-local on this host: its pools mapped into this process), `tcp` (a pure client
configured with `transport = "tcp"`: every byte crosses the service's data endpoint).
"""

import time

import numpy as np
import pytest

import mmc
from conftest import Cluster, open_store

OK = 0
INVALID = -3000
TIMEOUT = -3004
NOT_EXIST = -3007
NOT_INIT = -3019
NOT_WRITTEN = -3101
H2G, G2H = 3, 2


def rand(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


@pytest.fixture(scope="module")
def tcp_store(cluster):
    store = open_store(cluster.toml_config(extra='transport = "tcp"\n'))
    yield store
    store.close()


@pytest.fixture(params=["embedded", "shm", "tcp"])
def lw(request):
    name = {"embedded": "embedded", "shm": "remote", "tcp": "tcp_store"}[request.param]
    return request.getfixturevalue(name)


def test_layerwise_save_then_load(lw, key):
    """The engine's cycle: allocate, write layer by layer (in any order) at address + offset,
    finish; then lease, read layer by layer, release."""
    layers, n = 6, 4
    layer_bytes = [4096, 1000, 3, 65536, 17, 2048]  # odd sizes: offsets are not aligned
    size = sum(layer_bytes)
    offs = np.cumsum([0] + layer_bytes[:-1]).tolist()
    keys = [f"{key}/blk{i}" for i in range(n)]
    data = [rand(size, i) for i in range(n)]

    addrs = lw.batch_alloc(keys, [size] * n)
    assert len(addrs) == n and all(a > 0 for a in addrs), addrs
    assert len(set(addrs)) == n
    # Allocated, not written: invisible to readers, but this store sees its allocation.
    assert lw.batch_is_exist(keys) == [0] * n
    assert [i.size() for i in lw.batch_get_key_info(keys, 1)] == [0] * n
    infos = lw.batch_get_key_info(keys)
    assert [i.size() for i in infos] == [size] * n
    assert [i.gva_list()[0] for i in infos] == addrs
    assert lw.batch_add_lease(keys) == [NOT_WRITTEN] * n

    for layer in reversed(range(layers)):
        rc = lw.batch_copy(
            [a + offs[layer] for a in addrs],
            [d[offs[layer]:].ctypes.data for d in data],
            [layer_bytes[layer]] * n,
            H2G,
        )
        assert rc == OK, layer
    assert lw.batch_is_exist(keys) == [0] * n
    assert lw.batch_write_finish(keys, [0] * n) == [OK] * n
    assert lw.batch_is_exist(keys) == [1] * n
    assert lw.get_batch(keys) == [d.tobytes() for d in data]
    assert [i.gva_list()[0] for i in lw.batch_get_key_info(keys, 1)] == addrs
    # Finished: a second finish has nothing to commit.
    assert lw.batch_write_finish(keys, [0] * n) == [NOT_EXIST] * n

    # Load: lease, read every layer at its offset into other buffers, release.
    assert lw.batch_add_lease(keys, 10000) == [OK] * n
    out = [np.zeros(size, dtype=np.uint8) for _ in range(n)]
    for layer in range(layers):
        rc = lw.batch_copy(
            [a + offs[layer] for a in addrs],
            [o[offs[layer]:].ctypes.data for o in out],
            [layer_bytes[layer]] * n,
            mmc.G2H,
        )
        assert rc == OK, layer
    for o, d in zip(out, data):
        assert np.array_equal(o, d)
    # The layered form: all layers of each key in one call.
    out2 = [np.zeros((layers, max(layer_bytes)), dtype=np.uint8) for _ in range(n)]
    rc = lw.batch_copy_layers(
        addrs,
        [[o[i].ctypes.data for i in range(layers)] for o in out2],
        [layer_bytes] * n,
        G2H,
    )
    assert rc == OK
    for o, d in zip(out2, data):
        got = np.concatenate([o[i, : layer_bytes[i]] for i in range(layers)])
        assert np.array_equal(got, d)
    assert lw.batch_remove_lease(keys) == OK
    assert lw.batch_remove_lease(keys) == NOT_EXIST
    # Without a lease the bytes are not readable through addresses.
    assert lw.batch_copy([addrs[0]], [out[0].ctypes.data], [size], G2H) == INVALID
    assert lw.remove_batch(keys) == [OK] * n


def test_layered_write_and_failed_finish(lw, key):
    """batch_copy_layers writes; a finish with a non-zero result frees the key for a new put."""
    keys = [f"{key}/a", f"{key}/b"]
    parts = [[rand(300, 1), rand(700, 2)], [rand(5, 3), rand(995, 4)]]
    addrs = lw.batch_alloc(keys, [1000, 1000], None)
    assert all(addrs)
    rc = lw.batch_copy_layers(addrs, [[p.ctypes.data for p in ps] for ps in parts],
                              [[p.nbytes for p in ps] for ps in parts], mmc.H2G)
    assert rc == OK
    assert lw.batch_write_finish(keys, [0, -1]) == [OK, OK]
    assert lw.get(keys[0]) == b"".join(p.tobytes() for p in parts[0])
    assert lw.is_exist(keys[1]) == 0
    assert lw.put(keys[1], b"again") == OK
    assert lw.get(keys[1]) == b"again"
    assert lw.remove_batch(keys) == [OK, OK]


def test_bad_calls(lw, key):
    k = f"{key}/x"
    buf = rand(64, 5)
    assert lw.batch_alloc("not a list", [1]) == []
    assert lw.batch_alloc([k], [0]) == [0]
    assert lw.batch_alloc([k], [1, 2]) == [0]
    assert lw.batch_alloc([k], [64], 7) == [0]
    (addr,) = lw.batch_alloc([k], [64], 1)
    assert addr > 0
    assert lw.batch_alloc([k], [64]) == [0], "already allocated here"
    p = buf.ctypes.data
    assert lw.batch_copy([addr], [p], [65], H2G) == INVALID, "past the object's end"
    assert lw.batch_copy([addr + 64], [p], [1], H2G) == INVALID, "outside the object"
    assert lw.batch_copy([addr + 63], [p], [1], H2G) == OK
    assert lw.batch_copy([addr], [p], [64], mmc.AUTO) == INVALID, "AUTO names no way"
    assert lw.batch_copy([addr], [p], [64], mmc.L2G) == INVALID, "no device backend"
    assert lw.batch_copy([addr], [p, p], [64], H2G) == INVALID
    assert lw.batch_copy([addr], [0], [64], H2G) == INVALID
    assert lw.batch_copy([], [], [], H2G) == OK
    assert lw.batch_copy([addr], [buf], [64], H2G) == OK, "a buffer object works too"
    # Reading one's own unfinished bytes is allowed; writing a committed object is not.
    back = np.zeros(64, dtype=np.uint8)
    assert lw.batch_copy([addr], [back], [64], G2H) == OK and np.array_equal(back, buf)
    assert lw.batch_write_finish([k, f"{key}/never"], [0, 0]) == [OK, NOT_EXIST]
    assert lw.batch_write_finish([k], [0, 0]) == [INVALID]
    assert lw.batch_add_lease([k]) == [OK]
    assert lw.batch_copy([addr], [p], [64], H2G) == INVALID
    assert lw.batch_add_lease([f"{key}/never"]) == [NOT_EXIST]
    assert lw.batch_add_lease([k], -1) == [INVALID]
    assert lw.batch_remove_lease([k]) == OK
    # An existing key cannot be allocated (the engine checks existence first).
    assert lw.batch_alloc([k], [64]) == [0]
    assert lw.get(k) == buf.tobytes()
    assert lw.remove(k) == OK


def test_lease_keeps_a_removed_object_readable(lw, key):
    """A lease pins the object: removed meanwhile, its space is not reused under the reader."""
    k = f"{key}/pinned"
    data = rand(1 << 20, 9)
    assert lw.put(k, data) == OK
    assert lw.batch_add_lease([k]) == [OK]
    (addr,) = lw.batch_get_key_info([k], 1)[0].gva_list()[:1]
    assert lw.remove(k) == OK and lw.is_exist(k) == 0
    # Fill space meanwhile: none of it may land on the leased object's bytes.
    others = [f"{key}/o{i}" for i in range(8)]
    assert lw.put_batch(others, [rand(1 << 20, 100 + i) for i in range(8)]) == [OK] * 8
    out = np.zeros(data.nbytes, dtype=np.uint8)
    assert lw.batch_copy([addr], [out.ctypes.data], [out.nbytes], G2H) == OK
    assert np.array_equal(out, data)
    assert lw.batch_remove_lease([k]) == OK
    assert lw.remove_batch(others) == [OK] * 8


def test_unfinished_allocation_is_freed_by_close(cluster, remote, key):
    """A writer that never finishes: its allocation goes when its client closes (a killed
    process's connections close the same way); otherwise after pending_timeout_ms."""
    k = f"{key}/orphan"
    writer = open_store(cluster.toml_config())
    (addr,) = writer.batch_alloc([k], [4096])
    assert addr > 0
    assert remote.batch_add_lease([k]) == [NOT_EXIST]
    assert writer.close() == OK
    assert writer.batch_alloc([k], [4096]) == [0]
    assert writer.batch_copy([addr], [b"x"], [1], H2G) == NOT_INIT
    assert writer.batch_write_finish([k], [0]) == [NOT_INIT]
    assert writer.batch_add_lease([k]) == [NOT_INIT]
    assert writer.batch_remove_lease([k]) == NOT_INIT
    deadline = time.monotonic() + 5
    while True:
        # The key is free again: a new allocation of it succeeds.
        (again,) = remote.batch_alloc([k], [4096])
        if again or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert again > 0
    assert remote.batch_copy([again], [rand(4096, 1)], [4096], H2G) == OK
    assert remote.batch_write_finish([k], [0]) == [OK]
    assert remote.get(k) == rand(4096, 1).tobytes()
    assert remote.remove(k) == OK


def test_staged_writes_reach_every_replica(tmp_path, key):
    """With two replicas, a write through the address of either replica lands in both: with
    the first holder killed, the object still reads back exact."""
    c = Cluster(tmp_path, local_drams=("64MB", "64MB"))
    try:
        store = open_store(c.toml_config())
        data = rand(100_000, 11)
        addrs = store.batch_alloc([key], [data.nbytes], None, mmc.ReplicateConfig(2))
        assert addrs[0] > 0
        gvas = store.batch_get_key_info([key])[0].gva_list()
        assert len(gvas) == 2 and gvas[0] == addrs[0]
        half = data.nbytes // 2
        # The first half through the first replica's address, the rest through the second's.
        assert store.batch_copy([gvas[0], gvas[1] + half], [data, data[half:]],
                                [half, data.nbytes - half], H2G) == OK
        assert store.batch_write_finish([key], [0]) == [OK]
        first = store.get_key_info(key).loc_list()[0]
        proc = next(p for p, _, r in c.locals if r == first)
        proc.kill()
        proc.wait(timeout=10)
        assert store.get(key) == data.tobytes()
        assert store.close() == OK
    finally:
        c.stop()
