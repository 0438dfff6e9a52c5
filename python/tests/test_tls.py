"""Mutual TLS from Python: the config file's `[tls]` table (certificates made by `mmc-testpki`)
against `mmc-meta` / `mmc-local` started with `--tls` flags; a plaintext client is refused."""

import subprocess

import numpy as np
import pytest

from conftest import Cluster, _wait_addr, binary, open_store

NOT_CONNECTED_META = -3017


class TlsCluster(Cluster):
    """A meta service and one local service, both with TLS on (flags)."""

    def __init__(self, workdir):
        self.dir = workdir
        self.procs = []
        self.locals = []
        pki = workdir / "pki"
        subprocess.run([binary("mmc-testpki"), str(pki)], check=True, capture_output=True)
        self.pki = pki
        flags = ["--tls", "--tls-ca", str(pki / "ca.pem"), "--tls-crl", str(pki / "crl.pem"),
                 "--tls-cert", str(pki / "node.pem"), "--tls-key", str(pki / "node-enc.key"),
                 "--tls-key-pass", str(pki / "pass.txt")]
        addr = workdir / "meta.addr"
        meta = subprocess.Popen([binary("mmc-meta"), "--listen", "tcp://127.0.0.1:0",
                                 "--log-level", "warn", "--addr-file", str(addr), *flags],
                                stdout=subprocess.DEVNULL)
        self.procs.append(meta)
        self.meta_addr = _wait_addr(addr, meta, "mmc-meta")
        addr = workdir / "local.addr"
        local = subprocess.Popen([binary("mmc-local"), "--meta", self.meta_url, "--listen",
                                  "tcp://127.0.0.1:0", "--dram", "64MB", "--log-level", "warn",
                                  "--addr-file", str(addr), *flags], stdout=subprocess.DEVNULL)
        self.procs.append(local)
        _wait_addr(addr, local, "mmc-local")

    def tls_table(self):
        p = self.pki
        return (f'[tls]\nenable = true\nca_path = "{p / "ca.pem"}"\ncrl_path = "{p / "crl.pem"}"\n'
                f'cert_path = "{p / "node.pem"}"\nkey_path = "{p / "node-enc.key"}"\n'
                f'key_pass_path = "{p / "pass.txt"}"\n')


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    c = TlsCluster(tmp_path_factory.mktemp("tls"))
    yield c
    c.stop()


@pytest.mark.parametrize("kind", ["tcp", "embedded"])
def test_a_tls_client_round_trips(tls_cluster, kind, key):
    if kind == "tcp":
        extra = '[client]\ntransport = "tcp"\n' + tls_cluster.tls_table()
        store = open_store(tls_cluster.toml_config(extra=extra))
    else:
        store = open_store(tls_cluster.toml_config(dram="32MB", extra=tls_cluster.tls_table()))
    try:
        for i, n in enumerate([4096, 8 << 20]):
            data = np.random.default_rng(i).integers(0, 256, n, dtype=np.uint8).tobytes()
            assert store.put(f"{key}-{i}", data) == 0
            assert store.get(f"{key}-{i}") == data
            assert store.remove(f"{key}-{i}") == 0
    finally:
        store.close()


def test_a_plaintext_client_is_refused(tls_cluster, key):
    import mmc
    import os

    path = tls_cluster.toml_config()
    old = os.environ.get("MMC_LOCAL_CONFIG_PATH")
    os.environ["MMC_LOCAL_CONFIG_PATH"] = str(path)
    try:
        store = mmc.DistributedObjectStore()
        rc = store.init(0)
    finally:
        if old is None:
            del os.environ["MMC_LOCAL_CONFIG_PATH"]
        else:
            os.environ["MMC_LOCAL_CONFIG_PATH"] = old
    if rc == 0:
        # Connected at the TCP level; the meta service refuses its first request.
        assert store.put(key, b"x") == NOT_CONNECTED_META
        store.close()
    else:
        assert rc == NOT_CONNECTED_META
