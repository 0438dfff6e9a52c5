"""Device memory through the Python API on the simulated device backend (`sim`, set for the
test process by conftest.py): `mmc.device_*` helpers, device directions (L2G / G2L) and AUTO on
device pointers, HBM pools in device memory, on every placement (the store's embedded local
service, a same-host service's mapped pools, TCP), every call form, byte-exact."""

import subprocess
import sys

import numpy as np
import pytest

import mmc
from conftest import MIB, Cluster, open_store

OK, INVALID = 0, -3000
L2G, G2L = mmc.SMEMB_COPY_L2G, mmc.SMEMB_COPY_G2L


def rand(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def upload(a):
    p = mmc.device_alloc(max(a.nbytes, 1))
    assert p > 0, p
    if a.nbytes:
        assert mmc.device_memcpy(p, a.ctypes.data, a.nbytes, "h2d") == OK
    return p


def download(p, n):
    out = np.zeros(n, dtype=np.uint8)
    assert mmc.device_memcpy(out.ctypes.data, p, n, "d2h") == OK
    return out


@pytest.fixture(scope="module")
def dcluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("device"), local_drams=())
    c.add_local("256MB", extra=("--hbm", "160MB", "--device-backend", "sim"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def dstores(dcluster):
    stores = {
        "embedded": open_store(
            dcluster.toml_config(
                dram="128MB", extra='hbm_size = "160MB"\ndevice_backend = "sim"\n'
            )
        ),
        "same-host": open_store(dcluster.toml_config()),
        "tcp": open_store(dcluster.toml_config(extra='transport = "tcp"\n')),
    }
    yield stores
    for s in stores.values():
        assert s.close() == OK


def test_device_helpers():
    assert mmc.device_backend() == "sim"
    a = rand(10_000, 1)
    p = upload(a)
    assert np.array_equal(download(p, 10_000), a)
    q = mmc.device_alloc(10_000)
    assert mmc.device_memcpy(q + 5, p + 5, 100, "d2d") == OK
    assert np.array_equal(download(q + 5, 100), a[5:105])
    assert mmc.device_memcpy(q, p, 100, "h2h") == INVALID
    assert mmc.device_memcpy(q, p, 20_000, "d2d") == INVALID  # past the allocation
    assert mmc.device_memcpy(q, a.ctypes.data, 16, "d2h") == INVALID  # kinds swapped
    assert mmc.device_free(p) == OK and mmc.device_free(q) == OK
    assert mmc.device_free(p) == INVALID
    assert mmc.device_alloc(1 << 50) == INVALID  # past the device's memory
    assert mmc.device_alloc(16, 99) == INVALID  # no such device


@pytest.mark.parametrize("where", ["embedded", "same-host", "tcp"])
def test_device_directions(dstores, key, where):
    s = dstores[where]
    for size in (1, 4095, MIB + 3, 64 * MIB):
        k = f"{key}-{where}-{size}"
        a = rand(size, size)
        src = upload(a)
        dst = mmc.device_alloc(size)
        # Single key, device -> pool -> device and host.
        assert s.put_from(k, src, size, L2G) == OK
        assert s.put_from(k, src, size, 0) == OK  # raw int direction; a duplicate put is 0
        assert s.get_into(k, dst, size, G2L) == OK
        assert np.array_equal(download(dst, size), a), k
        h = np.zeros(size, dtype=np.uint8)
        assert s.get_into(k, h.ctypes.data, size) == OK
        assert np.array_equal(h, a)
        # AUTO: the pointer decides, device or host.
        assert s.get_into(k, dst, size, mmc.AUTO) == OK
        assert s.get_into(k, h.ctypes.data, size, mmc.AUTO) == OK
        # A host direction given device memory is refused, not faulted on.
        assert s.get_into(k, dst, size, mmc.G2H) == INVALID
        assert s.put_from(k + "-h", src, size, mmc.H2G) == INVALID
        # Layers of uneven sizes, device in and out.
        if size >= 3:
            cuts = [0, size // 7, size // 2, size]
            ptrs = [src + cuts[i] for i in range(3)]
            lens = [cuts[i + 1] - cuts[i] for i in range(3)]
            assert s.put_from_layers(k + "-l", ptrs, lens, L2G) == OK
            out = mmc.device_alloc(size)
            optrs = [out + cuts[i] for i in range(3)]
            assert s.get_into_layers(k + "-l", optrs, lens, G2L) == OK
            assert np.array_equal(download(out, size), a)
            assert s.batch_get_into_layers([k + "-l"], [optrs], [lens], 1) == [OK]
            assert mmc.device_free(out) == OK
            assert s.remove(k + "-l") == OK
        assert s.remove(k) == OK
        assert mmc.device_free(src) == OK and mmc.device_free(dst) == OK
    # Batches, one device buffer per key; AUTO on a batch mixing host and device keys.
    keys = [f"{key}-{where}-b{i}" for i in range(4)]
    datas = [rand(n, n) for n in (1, 700, 300_001, 2 * MIB)]
    srcs = [upload(d) for d in datas]
    assert s.batch_put_from(keys, srcs, [d.nbytes for d in datas], L2G) == [OK] * 4
    outs = [mmc.device_alloc(d.nbytes) for d in datas]
    assert s.batch_get_into(keys, outs, [d.nbytes for d in datas], G2L) == [OK] * 4
    for o, d in zip(outs, datas):
        assert np.array_equal(download(o, d.nbytes), d)
    host = [np.zeros(d.nbytes, dtype=np.uint8) for d in datas]
    mixed = [outs[0], host[1].ctypes.data, outs[2], host[3].ctypes.data]
    assert s.batch_get_into(keys, mixed, [d.nbytes for d in datas], mmc.AUTO) == [OK] * 4
    assert np.array_equal(host[1], datas[1]) and np.array_equal(host[3], datas[3])
    assert s.remove_batch(keys) == [OK] * 4
    for p in srcs + outs:
        assert mmc.device_free(p) == OK


def test_device_pointer_faults_on_the_host():
    """A device pointer read as host memory faults (so a path that forgets the device copy
    cannot pass by accident)."""
    code = (
        "import ctypes, mmc\n"
        "p = mmc.device_alloc(4096)\n"
        "assert p > 0\n"
        "ctypes.string_at(p, 16)\n"
        "print('read device memory on the host')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**__import__("os").environ, "MMC_DEVICE_BACKEND": "sim",
                            "PYTHONFAULTHANDLER": ""})
    assert r.returncode == -11, (r.returncode, r.stdout, r.stderr)
    assert "read device memory" not in r.stdout
