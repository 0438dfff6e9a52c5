"""Ascend MemCache's `memcache_hybrid` surface: its names, argument orders and conventions, against
real services (LocalConfig/setup, MetaService, ReplicateConfig, KeyInfo, put_batch/get_batch,
register_buffer, SMEMB_COPY_AUTO, duplicate puts, batch limits, close() and its local service)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

import mmc
from conftest import Cluster, open_store

OK = 0
INVALID = -3000
NOT_EXIST = -3007
NOT_INIT = -3019
NO_RANK = 2**32 - 1
BATCH_MAX = 16384


def rand(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def rank_of(store):
    r = store.get_local_service_id()
    assert r != NO_RANK
    return r


def status_ranks(cluster):
    out = cluster.cli("status")
    assert out.returncode == 0, out.stderr
    return {int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+\d+\s", out.stdout, re.M)}


def local_config(cluster, dram=None):
    cfg = mmc.LocalConfig()
    cfg.meta_service_url = cluster.meta_url
    cfg.log_level = "warn"
    cfg.client_timeout_seconds = 30
    if dram is not None:
        cfg.dram_size = dram
        cfg.hcom_url = "tcp://127.0.0.1:0"
    return cfg


def test_names_and_constants():
    for name in [
        "LocalConfig", "MetaConfig", "MetaService", "ReplicateConfig", "KeyInfo",
        "DistributedObjectStore", "MmcCopyDirect",
    ]:
        assert hasattr(mmc, name), name
    for name in [
        "setup", "init", "close", "put", "put_from", "batch_put_from", "put_from_layers",
        "batch_put_from_layers", "put_batch", "get", "get_batch", "get_into", "batch_get_into",
        "get_into_layers", "batch_get_into_layers", "remove", "remove_batch", "is_exist",
        "batch_is_exist", "get_key_info", "batch_get_key_info", "register_buffer",
        "unregister_buffer", "get_local_service_id",
    ]:
        assert callable(getattr(mmc.DistributedObjectStore, name)), name
    expect = {"L2G": 0, "G2L": 1, "G2H": 2, "H2G": 3, "AUTO": 9}
    for short, value in expect.items():
        d = getattr(mmc, short)
        assert d == value and int(d) == value and type(d) is mmc.MmcCopyDirect
        assert getattr(mmc, f"SMEMB_COPY_{short}") == d
        assert getattr(mmc.MmcCopyDirect, f"SMEMB_COPY_{short}") == d
    r = mmc.ReplicateConfig()
    assert r.replicaNum == 0 and r.preferredLocalServiceIDs == []
    with pytest.raises(AttributeError):
        mmc.LocalConfig().no_such_setting = 1


def test_setup_init_bm_and_service_id(cluster, key):
    store = mmc.DistributedObjectStore()
    assert store.get_local_service_id() == NO_RANK
    assert store.setup(local_config(cluster, dram="64MB")) == OK
    assert store.init(0) == OK
    rank = rank_of(store)
    assert rank in status_ranks(cluster)
    data = rand(100_000, 1)
    assert store.put(key, data) == OK
    info = store.get_key_info(key)
    assert info.size() == data.nbytes and info.loc_list() == [rank]  # its own pool first
    assert store.get(key) == data.tobytes()
    assert store.close() == OK
    assert rank not in status_ranks(cluster)

    # init_bm=False: a pure client, although the settings give a pool size.
    assert store.init(0, init_bm=False) == OK
    assert store.get_local_service_id() == NO_RANK
    assert store.is_exist(key) == 0  # its only replica left with the closed local service
    assert store.put(key, data) == OK and store.get(key) == data.tobytes()
    assert store.get_key_info(key).loc_list()[0] != rank
    assert store.remove(key) == OK
    assert store.close() == OK

    bad = local_config(cluster, dram="lots")
    assert mmc.DistributedObjectStore().setup(bad) == INVALID
    assert mmc.DistributedObjectStore().setup("not a config") == INVALID
    cfg = mmc.LocalConfig()
    cfg.meta_service_url = cluster.meta_url
    cfg.memory_pool_mode = "expanded"  # the original's; accepted and ignored
    assert cfg.ignored() == ["memory_pool_mode"]
    s = mmc.DistributedObjectStore()
    assert s.setup(cfg) == OK and s.init(0) == OK and s.get_local_service_id() == NO_RANK
    assert s.close() == OK


def test_init_reads_ock_file_without_setup(cluster, key):
    path = cluster.write_config(
        f"ock.mmc.meta_service_url = {cluster.meta_url}\n"
        "ock.mmc.local_service.hcom_url = tcp://127.0.0.1:0\n"
        "ock.mmc.local_service.dram.size = 32MB\n"
        "ock.mmc.log_level = warn\n",
        suffix=".conf",
    )
    store = open_store(path)
    rank = rank_of(store)
    assert store.put(key, b"ock") == OK and store.get_key_info(key).loc_list() == [rank]
    assert store.remove(key) == OK
    assert store.close() == OK


def test_duplicate_puts_return_0_and_keep_the_value(store, key):
    first = rand(4096, 2)
    other = rand(4096, 3)
    p = other.ctypes.data
    assert store.put(key, first) == OK
    assert store.put(key, other) == OK
    assert store.put_from(key, p, other.nbytes) == OK
    assert store.put_from_layers(key, [p, p + 2048], [2048, 2048]) == OK
    assert store.batch_put_from([key, key + "b"], [p, p], [4096, 4096]) == [OK, OK]
    assert store.batch_put_from_layers([key], [[p]], [[4096]]) == [OK]
    assert store.put_batch([key, key + "b"], [other, other]) == [OK, OK]
    assert store.get(key) == first.tobytes()
    assert store.get(key + "b") == other.tobytes()
    assert store.remove_batch([key, key + "b"]) == [OK, OK]


def test_put_batch_get_batch(store, key):
    keys = [f"{key}/{i}" for i in range(20)]
    values = [rand(1 + i * 997, 10 + i) for i in range(20)]
    values[3] = bytearray(b"bytearray value")
    values[4] = b"bytes value"
    values[5] = memoryview(b"memoryview value")
    assert store.put_batch(keys, values) == [OK] * 20
    got = store.get_batch(keys + [key + "/missing"])
    assert got == [bytes(v) for v in values] + [b""]
    assert all(type(g) is bytes for g in got)
    assert store.put_batch([], []) == [] and store.get_batch([]) == []
    assert store.put_batch(keys[:2], values[:1]) == [INVALID, INVALID]
    assert store.put_batch([key + "/x"], [12345]) == [INVALID]  # a value is a buffer
    assert store.remove_batch(keys) == [OK] * 20


def test_batch_limits(store, key):
    a = np.zeros(8, dtype=np.uint8)
    p = a.ctypes.data
    n = BATCH_MAX + 1
    keys = [f"{key}/{i}" for i in range(n)]
    assert store.batch_put_from(keys, [p] * n, [8] * n) == [INVALID]
    assert store.batch_get_into(keys, [p] * n, [8] * n) == [INVALID]
    assert store.batch_put_from_layers(keys, [[p]] * n, [[8]] * n) == [INVALID]
    assert store.batch_get_into_layers(keys, [[p]] * n, [[8]] * n) == [INVALID]
    assert store.put_batch(keys, [b"x"] * n) == [INVALID]
    assert store.batch_is_exist(keys) == [INVALID]
    assert store.remove_batch(keys) == [INVALID]
    assert store.get_batch(keys) == [] and store.batch_get_key_info(keys) == []
    for call in [store.batch_is_exist, store.remove_batch, store.batch_get_key_info]:
        assert call([]) == []
    assert store.batch_put_from([], [], []) == [] and store.batch_get_into([], [], []) == []
    # Exactly the limit is one batch of per-key results.
    m = BATCH_MAX
    assert store.batch_is_exist(keys[:m]) == [0] * m


def test_key_info_and_gva(cluster, store, key):
    data = rand(3000, 4)
    assert store.put(key, data) == OK
    info = store.get_key_info(key)
    assert info.size() == 3000
    (rank,) = info.loc_list()
    assert info.type_list() == [1]  # DRAM
    (gva,) = info.gva_list()
    assert isinstance(gva, int) and gva >= 0
    assert gva >> 48 == rank
    segment, offset = (gva >> 40) & 0xFF, gva & ((1 << 40) - 1)
    shown = cluster.cli("info", key).stdout
    assert f"rank {rank} " in shown, shown
    assert str(offset) in shown or hex(offset) in shown, (offset, shown)
    assert segment >= 0
    assert "KeyInfo(size=3000" in repr(info)

    missing = store.get_key_info(key + "/missing")
    assert missing.size() == 0 and missing.gva_list() == [] and missing.loc_list() == []
    infos = store.batch_get_key_info([key, key + "/missing", 42])
    assert [i.size() for i in infos] == [3000, 0, 0]
    assert infos[0].gva_list() == [gva]
    assert store.remove(key) == OK
    assert store.get_key_info(key).size() == 0


def test_register_buffer(cluster, key):
    assert mmc.DistributedObjectStore().register_buffer(4096, 4096) == NOT_INIT
    store = open_store(cluster.toml_config())
    a = rand(1 << 20, 5)
    p = a.ctypes.data
    assert store.register_buffer(p, a.nbytes) == OK
    assert store.register_buffer(0, 10) == INVALID
    assert store.register_buffer(p, 0) == INVALID
    assert store.register_buffer(2**64 - 16, 32) == INVALID
    assert store.put_from(key, p + 4096, 8192) == OK
    out = np.zeros(8192, dtype=np.uint8)
    assert store.get_into(key, out.ctypes.data, out.nbytes) == OK
    assert (out == a[4096:4096 + 8192]).all()
    assert store.unregister_buffer(p, a.nbytes - 1) == INVALID
    assert store.unregister_buffer(p, a.nbytes) == OK
    assert store.unregister_buffer(p, a.nbytes) == INVALID
    assert store.remove(key) == OK
    assert store.close() == OK


def test_auto_direction_host_memory(store, key):
    src = rand(1 << 16, 6)
    p = src.ctypes.data
    assert store.put_from(key, p, src.nbytes, mmc.AUTO) == OK
    dst = np.zeros_like(src)
    assert store.get_into(key, dst.ctypes.data, dst.nbytes, 9) == OK  # a raw int works too
    assert (dst == src).all()
    assert store.batch_put_from([key + "b"], [p], [src.nbytes], mmc.AUTO) == [OK]
    halves = np.zeros_like(src)
    h = halves.ctypes.data
    assert store.get_into_layers(key + "b", [h, h + 32768], [32768, 32768], mmc.AUTO) == OK
    assert (halves == src).all()

    # A pointer that is neither registered nor mapped in this process cannot be classified:
    # refused, never dereferenced. Device directions still need the device backend.
    unmapped = 1 << 46
    assert store.put_from(key + "c", unmapped, 4096, mmc.AUTO) == INVALID
    assert store.batch_get_into([key, key + "b"], [unmapped, h], [65536, 65536], mmc.AUTO) == [
        INVALID, OK,
    ]
    assert store.put_from(key + "c", p, 16, mmc.L2G) == INVALID
    assert store.get_into(key, dst.ctypes.data, dst.nbytes, mmc.G2L) == INVALID
    assert store.is_exist(key + "c") == 0
    assert store.remove_batch([key, key + "b"]) == [OK, OK]


@pytest.fixture(scope="module")
def two_services(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("two"), local_drams=("128MB", "128MB"))
    yield c
    c.stop()


def test_replicate_config_two_replicas(two_services, key):
    c = two_services
    store = open_store(c.toml_config())
    ranks = sorted(r for _, _, r in c.locals)
    data = rand(200_000, 7)
    rc = mmc.ReplicateConfig()
    rc.replicaNum = 2
    assert store.put(key, data, rc) == OK
    info = store.get_key_info(key)
    assert sorted(info.loc_list()) == ranks and len(set(info.gva_list())) == 2
    assert store.get(key) == data.tobytes()

    # Preferred placement, on every put flavour.
    for target in ranks:
        pref = mmc.ReplicateConfig(1, [target])
        k = f"{key}/{target}"
        p = data.ctypes.data
        assert store.put_from(k + "a", p, data.nbytes, mmc.H2G, pref) == OK
        assert store.put_from_layers(k + "b", [p], [data.nbytes], replicateConfig=pref) == OK
        assert store.batch_put_from([k + "c"], [p], [data.nbytes], mmc.H2G, pref) == [OK]
        assert store.batch_put_from_layers([k + "d"], [[p]], [[data.nbytes]], 3, pref) == [OK]
        assert store.put_batch([k + "e"], [data], pref) == [OK]
        infos = store.batch_get_key_info([k + s for s in "abcde"])
        assert [i.loc_list() for i in infos] == [[target]] * 5
        assert store.get_batch([k + s for s in "abcde"]) == [data.tobytes()] * 5

    # Both replicas hold the bytes: with the first holder gone, reads come from the other.
    proc = c.locals[0][0]
    proc.kill()
    proc.wait(timeout=10)
    assert store.get(key) == data.tobytes()

    for bad in [
        mmc.ReplicateConfig(9),
        mmc.ReplicateConfig(2, [ranks[0], ranks[0]]),
        mmc.ReplicateConfig(1, [-1]),
        mmc.ReplicateConfig(1, [ranks[0], ranks[1]]),
    ]:
        assert store.put(key + "/bad", b"x", bad) == INVALID
        assert store.batch_put_from([key + "/bad"], [b"x"], None, None, bad) == [INVALID]
    assert store.put(key + "/bad", b"x", "not a config") == INVALID
    assert store.is_exist(key + "/bad") == 0
    assert store.close() == OK


def test_close_never_leaves_its_local_service_behind(tmp_path):
    """init/put/close many times in a row: the meta service ends up listing only the
    standalone mmc-local, now and after several heartbeat periods."""
    c = Cluster(tmp_path, local_drams=("64MB",))
    try:
        base = status_ranks(c)
        cfg = c.toml_config(dram="16MB", extra="heartbeat_ms = 20\n")
        rounds = int(os.environ.get("MMC_PY_CLOSE_ROUNDS", "25"))
        for i in range(rounds):
            store = open_store(cfg)
            assert rank_of(store) not in base
            assert store.put(f"round{i}-{uuid.uuid4().hex[:6]}", rand(4096, i)) == OK
            assert store.close() == OK
            assert status_ranks(c) == base, f"round {i}"
        time.sleep(0.5)  # 25 heartbeat periods: a late re-registration would show now
        assert status_ranks(c) == base
    finally:
        c.stop()


def test_close_during_a_rejoin_leaves_nothing_behind(tmp_path):
    """close() while the embedded local service registers again (the meta service restarted
    and forgot it): the registration in flight ends first and is undone, so no member is left
    listed until its lease runs out. Before the fix about 1 round in 10 left one."""
    c = Cluster(tmp_path, local_drams=())
    try:
        cfg = c.toml_config(dram="16MB", extra="heartbeat_ms = 10\n")
        rounds = int(os.environ.get("MMC_PY_REJOIN_ROUNDS", "20"))
        rng = np.random.default_rng(9)
        for i in range(rounds):
            store = open_store(cfg)
            c.restart_meta()
            time.sleep(float(rng.uniform(0, 0.05)))  # close somewhere in the rejoin
            assert store.close() == OK
            time.sleep(0.1)  # 10 heartbeat periods
            assert status_ranks(c) == set(), f"round {i}"
    finally:
        c.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


META_SCRIPT = """
import sys, mmc
if len(sys.argv) > 1:
    cfg = mmc.MetaConfig()
    cfg.meta_service_url = sys.argv[1]
    cfg.log_level = "warn"
    assert mmc.MetaService.setup(cfg) == 0
try:
    rc = mmc.MetaService.main()
except KeyboardInterrupt:
    print("stopped", flush=True)
    sys.exit(0)
print("main returned", rc, flush=True)
sys.exit(3)
"""


def run_meta_service(url=None, env=None):
    args = [sys.executable, "-c", META_SCRIPT] + ([url] if url else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)


def wait_listening(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("meta service did not listen")


@pytest.mark.parametrize("how", ["setup", "env"])
def test_meta_service_in_a_python_process(tmp_path, how, key):
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ)
    if how == "setup":
        proc = run_meta_service(url, env)
    else:
        conf = tmp_path / "mmc-meta.conf"
        conf.write_text(f"ock.mmc.meta_service_url = {url}\nock.mmc.log_level = warn\n")
        env["MMC_META_CONFIG_PATH"] = str(conf)
        proc = run_meta_service(None, env)
    try:
        wait_listening(port, proc)
        cfg = mmc.LocalConfig()
        cfg.meta_service_url = url
        cfg.dram_size = "32MB"
        cfg.hcom_url = "tcp://127.0.0.1:0"
        cfg.log_level = "warn"
        store = mmc.DistributedObjectStore()
        assert store.setup(cfg) == OK and store.init(0) == OK
        data = rand(50_000, 8)
        assert store.put(key, data) == OK and store.get(key) == data.tobytes()
        assert store.close() == OK
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0 and "stopped" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_meta_service_bad_settings():
    cfg = mmc.MetaConfig()
    cfg.meta_service_url = "http://nowhere"
    assert mmc.MetaService.setup(cfg) == INVALID
    cfg = mmc.MetaConfig()
    cfg.evict_threshold_high = 50
    cfg.evict_threshold_low = 70
    assert mmc.MetaService.setup(cfg) == INVALID


def test_remove_all_removes_every_object(tmp_path):
    """remove_all() on a cluster of its own: every committed object is gone afterwards, from
    every client, and new puts work again."""
    c = Cluster(tmp_path, local_drams=("64MB",))
    try:
        store = open_store(c.toml_config())
        keys = [f"all-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
        for i, k in enumerate(keys):
            assert store.put(k, rand(1024, i)) == OK
        assert store.batch_is_exist(keys) == [1] * len(keys)
        assert store.remove_all() == OK
        assert store.batch_is_exist(keys) == [0] * len(keys)
        assert store.remove_all() == OK, "nothing left to remove is not an error"
        assert store.put(keys[0], rand(1024, 99)) == OK
        assert store.is_exist(keys[0]) == 1
        assert store.close() == OK
        assert mmc.DistributedObjectStore().remove_all() == NOT_INIT
    finally:
        c.stop()
