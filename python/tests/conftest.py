"""A real MemCache cluster for the Python tests.

One `mmc-meta` process and one `mmc-local` process on 127.0.0.1 with ephemeral ports (their
addresses come back through `--addr-file`), plus stores made by `init` from a config file written
per store and named by `MMC_LOCAL_CONFIG_PATH`: the `embedded` store hosts a local service inside
this Python process, the `remote` store is a pure client.

The binaries come from `$MMC_BIN_DIR` (scripts/test-python.sh sets it), else `target/debug` of the
workspace.
"""

import faulthandler
import os
import pathlib
import subprocess
import sys
import time
import uuid

import pytest

# Every test process runs the simulated device backend (chosen once per process, at the first
# device-aware call): device directions and HBM pools work, and host paths check that they are
# not given device memory.
os.environ.setdefault("MMC_DEVICE_BACKEND", "sim")

import mmc  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("MMC_BIN_DIR", REPO / "target" / "debug"))
# Hard bound of every test (the whole process is aborted with a traceback past it).
TEST_TIMEOUT_S = int(os.environ.get("MMC_PY_TEST_TIMEOUT", "180"))

MIB = 1 << 20


def binary(name):
    path = BIN_DIR / name
    if not path.exists():
        pytest.exit(
            f"{path} is missing: run `cargo build --bins` at the workspace root "
            "or set MMC_BIN_DIR",
            returncode=3,
        )
    return str(path)


def _wait_addr(path, proc, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = path.read_text()
            if text.endswith("\n") or (text and " " not in text):
                return text.strip()
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout} s")
        time.sleep(0.02)


class Cluster:
    """`mmc-meta` and `mmc-local` processes, stopped by `stop()`."""

    def __init__(self, workdir, local_drams=("768MB",)):
        self.dir = pathlib.Path(workdir)
        self.procs = []
        addr_file = self.dir / "meta.addr"
        meta = subprocess.Popen(
            [
                binary("mmc-meta"),
                "--listen",
                "tcp://127.0.0.1:0",
                "--log-level",
                "warn",
                "--addr-file",
                str(addr_file),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.procs.append(meta)
        self.meta_addr = _wait_addr(addr_file, meta, "mmc-meta")
        self.locals = []
        for dram in local_drams:
            self.add_local(dram)

    @property
    def meta_url(self):
        return f"tcp://{self.meta_addr}"

    def add_local(self, dram, extra=()):
        n = len(self.locals)
        addr_file = self.dir / f"local{n}.addr"
        proc = subprocess.Popen(
            [
                binary("mmc-local"),
                "--meta",
                self.meta_url,
                "--listen",
                "tcp://127.0.0.1:0",
                "--dram",
                dram,
                "--log-level",
                "warn",
                "--create-id",
                str(100 + n),
                "--addr-file",
                str(addr_file),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        endpoint, rank = _wait_addr(addr_file, proc, "mmc-local").split()
        self.locals.append((proc, endpoint, int(rank)))
        return int(rank)

    def restart_meta(self):
        """Kill the meta service and start a new one at the same address (it forgets every
        member; the local services rejoin)."""
        old = self.procs[0]
        old.kill()
        old.wait(timeout=10)
        addr_file = self.dir / f"meta-{uuid.uuid4().hex[:6]}.addr"
        meta = subprocess.Popen(
            [
                binary("mmc-meta"),
                "--listen",
                self.meta_url,
                "--log-level",
                "error",
                "--rebuild-window-ms",
                "0",
                "--addr-file",
                str(addr_file),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.procs[0] = meta
        _wait_addr(addr_file, meta, "mmc-meta")

    def cli(self, *args):
        """Run the `mmc` command-line client against this cluster."""
        return subprocess.run(
            [binary("mmc"), "--meta", self.meta_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def write_config(self, text, suffix=".toml"):
        path = self.dir / f"cfg-{uuid.uuid4().hex[:8]}{suffix}"
        path.write_text(text)
        return path

    def toml_config(self, dram=None, extra=""):
        lines = [f'meta_url = "{self.meta_url}"', "timeout_seconds = 30", 'log_level = "warn"']
        if dram is not None:
            lines += [f'dram_size = "{dram}"', 'data_url = "tcp://127.0.0.1:0"']
        return self.write_config("\n".join(lines) + "\n" + extra)

    def stop(self):
        for p in reversed(self.procs):
            p.kill()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


def open_store(config_path, device_id=0):
    """A store initialized from `config_path` (set as MMC_LOCAL_CONFIG_PATH just for init)."""
    old = os.environ.get("MMC_LOCAL_CONFIG_PATH")
    os.environ["MMC_LOCAL_CONFIG_PATH"] = str(config_path)
    try:
        store = mmc.DistributedObjectStore()
        rc = store.init(device_id)
        assert rc == 0, f"init failed with {rc}"
        return store
    finally:
        if old is None:
            del os.environ["MMC_LOCAL_CONFIG_PATH"]
        else:
            os.environ["MMC_LOCAL_CONFIG_PATH"] = old


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture(scope="session")
def embedded(cluster):
    """A store whose config gives the local service 512 MB: it runs inside this process."""
    store = open_store(cluster.toml_config(dram="512MB"))
    yield store
    store.close()


@pytest.fixture(scope="session")
def remote(cluster):
    """A pure client (its config gives no pool size): every byte crosses TCP."""
    store = open_store(cluster.toml_config())
    yield store
    store.close()


@pytest.fixture(params=["embedded", "remote"])
def store(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def key():
    """A fresh key prefix per test, so tests sharing the cluster never collide."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _bounded():
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()
