"""init/close, configuration files, threads and the GIL, the module's surface, the README."""

import ast
import gc
import inspect
import os
import pathlib
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import mmc
from conftest import REPO, open_store

MIB = 1 << 20
OK = 0
INVALID = -3000
NOT_INIT = -3019
NOT_CONNECTED_META = -3017

METHODS = [
    "init", "close", "put", "put_from", "batch_put_from", "put_from_layers",
    "batch_put_from_layers", "get", "get_into", "batch_get_into", "get_into_layers",
    "batch_get_into_layers", "remove", "remove_batch", "remove_all", "is_exist", "batch_is_exist",
    "setup", "put_batch", "get_batch", "get_key_info", "batch_get_key_info", "register_buffer",
    "unregister_buffer", "get_local_service_id", "batch_alloc", "batch_copy", "batch_copy_layers",
    "batch_write_finish", "batch_add_lease", "batch_remove_lease",
]


def every_call(store, key):
    """Call every data method once; return (int results, list results, get result)."""
    a = np.zeros(16, dtype=np.uint8)
    p = a.ctypes.data
    ints = [
        store.put(key, b"abc"),
        store.put_from(key, p, 16),
        store.put_from_layers(key, [p], [16]),
        store.get_into(key, p, 16),
        store.get_into_layers(key, [p], [16]),
        store.remove(key),
        store.is_exist(key),
    ]
    lists = [
        store.batch_put_from([key, key + "2"], [p, p], [16, 16]),
        store.batch_put_from_layers([key, key + "2"], [[p], [p]], [[16], [16]]),
        store.batch_get_into([key, key + "2"], [p, p], [16, 16]),
        store.batch_get_into_layers([key, key + "2"], [[p], [p]], [[16], [16]]),
        store.remove_batch([key, key + "2"]),
        store.batch_is_exist([key, key + "2"]),
    ]
    return ints, lists, store.get(key)


def test_not_initialized_and_closed(cluster, key):
    store = mmc.DistributedObjectStore()
    assert "not initialized" in repr(store)
    ints, lists, got = every_call(store, key)
    assert ints == [NOT_INIT] * len(ints)
    assert lists == [[NOT_INIT, NOT_INIT]] * len(lists)
    assert got == b""

    store = open_store(cluster.toml_config())
    assert store.put(key, b"value") == OK
    assert store.init(0) == OK  # already initialized: a no-op
    store.close()
    ints, lists, got = every_call(store, key)
    assert ints == [NOT_INIT] * len(ints)
    assert lists == [[NOT_INIT, NOT_INIT]] * len(lists)
    assert got == b""
    store.close()  # twice is fine

    # init again after close works, and the data is still there (it lives in the cluster).
    store = open_store(cluster.toml_config())
    assert store.get(key) == b"value"
    assert store.remove(key) == OK
    store.close()


def test_close_embedded_releases_its_memory(cluster, key):
    store = open_store(cluster.toml_config(dram="64MB"))
    rank = int(re.search(r"local service (\d+)", repr(store)).group(1))
    assert store.put(key, b"x" * 1000) == OK
    info = cluster.cli("info", key)
    assert info.returncode == 0 and f"rank {rank} " in info.stdout  # written to its own pool
    status = cluster.cli("status")
    assert re.search(rf"^\s*{rank}\s", status.stdout, re.M), status.stdout
    store.close()
    status = cluster.cli("status")
    assert not re.search(rf"^\s*{rank}\s", status.stdout, re.M), status.stdout

    # A store dropped without close() releases its local service too.
    store = open_store(cluster.toml_config(dram="16MB"))
    rank = int(re.search(r"local service (\d+)", repr(store)).group(1))
    assert re.search(rf"^\s*{rank}\s", cluster.cli("status").stdout, re.M)
    del store
    gc.collect()
    status = cluster.cli("status")
    assert not re.search(rf"^\s*{rank}\s", status.stdout, re.M), status.stdout


def test_ock_config_file(cluster, key):
    text = (
        "# mmc-local.conf, Ascend MemCache style\n"
        f"ock.mmc.meta_service_url = {cluster.meta_url}\n"
        "ock.mmc.local_service.protocol = host_tcp\n"
        "ock.mmc.local_service.hcom_url = tcp://127.0.0.1:0\n"
        "ock.mmc.local_service.dram.size = 32MB\n"
        "ock.mmc.client.timeout.seconds = 30\n"
        "ock.mmc.log_level = warn\n"
    )
    store = open_store(cluster.write_config(text, suffix=".conf"))
    assert "local service" in repr(store)
    data = np.arange(1 << 16, dtype=np.uint32)
    assert store.put_from(key, data) == OK
    out = np.zeros_like(data)
    assert store.get_into(key, out) == OK
    assert np.array_equal(out, data)
    assert store.remove(key) == OK
    store.close()

    # No pool size in the file: a pure client.
    pure = "\n".join(text.splitlines()[:2] + ["ock.mmc.log_level = warn"]) + "\n"
    store = open_store(cluster.write_config(pure, suffix=".conf"))
    assert "local service" not in repr(store)
    store.close()


def test_toml_sections_config(cluster, key):
    text = (
        f'meta_url = "{cluster.meta_url}"\n'
        'log_level = "warn"\n'
        "[local]\n"
        'dram_size = "16MB"\n'
        'data_url = "tcp://127.0.0.1:0"\n'
        "[client]\n"
        "timeout_seconds = 20\n"
    )
    store = open_store(cluster.write_config(text))
    assert "local service" in repr(store)
    assert store.put(key, b"sections") == OK and store.get(key) == b"sections"
    assert store.remove(key) == OK
    store.close()


def _init_with(path):
    old = os.environ.get("MMC_LOCAL_CONFIG_PATH")
    os.environ["MMC_LOCAL_CONFIG_PATH"] = str(path)
    try:
        store = mmc.DistributedObjectStore()
        return store, store.init(0)
    finally:
        if old is None:
            del os.environ["MMC_LOCAL_CONFIG_PATH"]
        else:
            os.environ["MMC_LOCAL_CONFIG_PATH"] = old


def test_init_failures(cluster, tmp_path):
    # Unknown key, bad value, missing file: -3000, and the store stays uninitialized.
    for text in ['meta_url = "tcp://127.0.0.1:1"\nno_such_key = 1\n', 'dram_size = "lots"\n']:
        store, rc = _init_with(cluster.write_config(text))
        assert rc == INVALID
        assert store.put("k", b"v") == NOT_INIT
    store, rc = _init_with(tmp_path / "does-not-exist.toml")
    assert rc == INVALID
    # Nobody listening: not connected to the meta service.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    store, rc = _init_with(cluster.write_config(f'meta_url = "tcp://127.0.0.1:{port}"\n'))
    assert rc == NOT_CONNECTED_META
    assert store.is_exist("k") == NOT_INIT
    # Bad device ids.
    store = mmc.DistributedObjectStore()
    for bad in (-1, "0", 1.5, [0], True):
        assert store.init(bad) == INVALID


def test_threads_put_get(embedded, remote, key):
    """8 threads share one store each way, putting and reading each other's keys."""
    errors = []
    n_threads, rounds = 8, 12

    def data(t, i):
        size = 1 + (t * 7919 + i * 104729) % (2 * MIB)
        return np.random.default_rng(t * 1000 + i).integers(0, 256, size, dtype=np.uint8)

    def worker(t):
        try:
            store = embedded if t % 2 else remote
            for i in range(rounds):
                a = data(t, i)
                k = f"{key}-{t}-{i}"
                rc = store.put_from(k, a.ctypes.data, a.nbytes)
                assert rc == OK, (k, rc)
                out = np.zeros(a.nbytes, dtype=np.uint8)
                assert store.get_into(k, out.ctypes.data, out.nbytes) == OK
                assert np.array_equal(out, a), k
                # Read a neighbour's earlier key through the other store.
                if i:
                    other = (t + 1) % n_threads
                    b = data(other, i - 1)
                    ko = f"{key}-{other}-{i - 1}"
                    deadline = time.monotonic() + 30
                    while (embedded if t % 2 == 0 else remote).is_exist(ko) != 1:
                        assert time.monotonic() < deadline, ko
                        time.sleep(0.005)
                    got = (embedded if t % 2 == 0 else remote).get(ko)
                    assert got == b.tobytes(), ko
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((t, repr(e)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads)
    assert errors == []
    keys = [f"{key}-{t}-{i}" for t in range(n_threads) for i in range(rounds)]
    assert remote.remove_batch(keys) == [OK] * len(keys)


def test_calls_release_the_gil(remote, key):
    """A pure-Python thread keeps running while a call waits on I/O."""
    a = np.random.default_rng(5).integers(0, 256, 64 * MIB, dtype=np.uint8)
    out = np.zeros_like(a)
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    th = threading.Thread(target=spin)
    th.start()
    try:
        time.sleep(0.05)
        progress = []
        for call in (
            lambda: remote.put_from(key, a.ctypes.data, a.nbytes),
            lambda: remote.get_into(key, out.ctypes.data, out.nbytes),
            lambda: remote.batch_get_into([key], [out.ctypes.data], [out.nbytes]),
        ):
            c0, t0 = counter[0], time.perf_counter()
            rc = call()
            progress.append((counter[0] - c0, time.perf_counter() - t0))
            assert rc in (OK, [OK])
    finally:
        stop.set()
        th.join()
    assert np.array_equal(a, out)
    # With the GIL held for the whole call the spinning thread could not count at all.
    for count, seconds in progress:
        assert count > 100, progress
    assert remote.remove(key) == OK


def test_module_surface_help_and_stubs():
    assert {"DistributedObjectStore", "MmcCopyDirect", "SMEMB_COPY_H2G", "SMEMB_COPY_L2G",
            "SMEMB_COPY_G2H", "SMEMB_COPY_G2L"} <= set(mmc.__all__)
    D = mmc.MmcCopyDirect
    assert [int(D.SMEMB_COPY_L2G), int(D.SMEMB_COPY_G2L), int(D.SMEMB_COPY_G2H),
            int(D.SMEMB_COPY_H2G)] == [0, 1, 2, 3]
    assert mmc.SMEMB_COPY_H2G == D.SMEMB_COPY_H2G and mmc.SMEMB_COPY_H2G == 3
    assert mmc.SMEMB_COPY_G2H.name == "SMEMB_COPY_G2H"

    text = pydoc_text(mmc.DistributedObjectStore)
    for m in METHODS:
        assert m in text
        doc = getattr(mmc.DistributedObjectStore, m).__doc__
        assert doc and len(doc) > 40, m
    sig = inspect.signature(mmc.DistributedObjectStore.get_into)
    assert list(sig.parameters) == ["self", "key", "buffer_ptr", "size", "direct"]
    assert mmc.DistributedObjectStore.__doc__ and mmc.MmcCopyDirect.__doc__

    pkg = pathlib.Path(mmc.__file__).parent
    assert (pkg / "py.typed").exists()
    stub = ast.parse((pkg / "_mmc.pyi").read_text())
    cls = next(n for n in stub.body if isinstance(n, ast.ClassDef)
               and n.name == "DistributedObjectStore")
    stubbed = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    assert set(METHODS) <= stubbed
    real = {m for m in dir(mmc.DistributedObjectStore) if not m.startswith("_")}
    assert real == set(METHODS)


def pydoc_text(obj):
    import pydoc

    return pydoc.render_doc(obj, renderer=pydoc.plaintext)


README_SECTION = "## Using MemCache from Python"


def readme_example():
    readme = pathlib.Path(os.environ.get("MMC_README", REPO / "README.md")).read_text()
    assert README_SECTION in readme, f"README.md has no '{README_SECTION}' section"
    section = readme.split(README_SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the Python section has no ```python example"
    return blocks[0]


def test_readme_example_runs(cluster, tmp_path):
    code = readme_example()
    config = cluster.toml_config(dram="64MB")
    env = dict(os.environ, MMC_LOCAL_CONFIG_PATH=str(config))
    script = tmp_path / "example.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
