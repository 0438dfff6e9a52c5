"""The Python part of scripts/gpu-check.sh: real device buffers through the `mmc` wheel.

Against a cluster it starts itself (one `mmc-meta`, one `mmc-local` with DRAM and, unless
MMC_GPU_HBM=0, an HBM pool; binaries from $MMC_BIN_DIR), with two stores: `embedded` (a local
service with DRAM and HBM inside this process) and `remote` (a pure client of the `mmc-local`
process). For each store, byte-exact on the device:

- put_from / get_into with SMEMB_COPY_L2G / SMEMB_COPY_G2L, 1 byte to 64 MiB, at offsets;
- SMEMB_COPY_AUTO with device pointers;
- batch_put_from / batch_get_into, put_from_layers / get_into_layers (61 x K 128 KiB + V 16 KiB,
  plus uneven sizes), batch_put_from_layers / batch_get_into_layers;
- host and device directions mixed (put from host, get into the device, and back).

Then a bandwidth table: 16 x 8 MiB device buffers through batch_put_from / batch_get_into and
16 single put_from / get_into, against the framework's own copies of the same bytes in the same
run (`tensor.copy_` to and from pinned and pageable host memory: cudaMemcpyAsync).

Arrays: `--arrays torch` (default when torch sees CUDA), `cupy`, `mmc` (the wheel's own
`mmc.device_alloc` / `device_memcpy` helpers: any backend, e.g. sim), or `host` (numpy arrays with
the host directions: a dry run of this script on a machine without a device).
"""

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import mmc

MIB = 1 << 20
OK = 0


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Arrays: a device buffer with an address, filled with random bytes, compared on the device.


class TorchArrays:
    name = "torch"

    def __init__(self):
        import torch

        assert torch.cuda.is_available(), "torch sees no CUDA device"
        self.t = torch
        self.dev = torch.device("cuda", 0)
        log(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")

    # The cuda backend's stream waits for the legacy default stream (torch's), so this sync is
    # not needed for correctness; it keeps the timings from including the generator's kernels.
    def random(self, n):
        a = self.t.randint(0, 256, (n,), dtype=self.t.uint8, device=self.dev)
        self.t.cuda.synchronize()
        return a

    def zeros(self, n):
        a = self.t.zeros(n, dtype=self.t.uint8, device=self.dev)
        self.t.cuda.synchronize()
        return a

    def ptr(self, a):
        return a.data_ptr()

    def view(self, a, off):
        return a[off:]

    def equal(self, a, b):
        self.t.cuda.synchronize()
        return bool(self.t.equal(a, b))

    def to_host(self, a):
        return bytes(a.cpu().numpy().tobytes())

    def from_host(self, data):
        import numpy as np

        a = self.t.from_numpy(np.frombuffer(bytearray(data), dtype=np.uint8)).to(self.dev)
        self.t.cuda.synchronize()
        return a

    def sync(self):
        self.t.cuda.synchronize()

    def baselines(self, bufs):
        """The framework's own copies of `bufs` (device tensors): name -> seconds per call."""
        t = self.t
        n = bufs[0].numel()
        pinned = [t.empty(n, dtype=t.uint8, pin_memory=True) for _ in bufs]
        pageable = [t.empty(n, dtype=t.uint8) for _ in bufs]

        def run(dsts, srcs):
            def f():
                for d, s in zip(dsts, srcs):
                    d.copy_(s, non_blocking=True)
                t.cuda.synchronize()

            return f

        dev2 = [self.zeros(n) for _ in bufs]
        return {
            "torch d2h, pinned host (copy_)": run(pinned, bufs),
            "torch h2d, pinned host (copy_)": run(bufs, pinned),
            "torch d2h, pageable host (copy_)": run(pageable, bufs),
            "torch h2d, pageable host (copy_)": run(bufs, pageable),
            "torch d2d (copy_)": run(dev2, bufs),
        }


class CupyArrays:
    name = "cupy"

    def __init__(self):
        import cupy

        self.cp = cupy
        cupy.cuda.Device(0).use()
        props = cupy.cuda.runtime.getDeviceProperties(0)
        log(f"cupy {cupy.__version__}, {props['name'].decode()}")

    def random(self, n):
        a = self.cp.random.randint(0, 256, n, dtype=self.cp.uint8)
        self.sync()
        return a

    def zeros(self, n):
        a = self.cp.zeros(n, dtype=self.cp.uint8)
        self.sync()
        return a

    def ptr(self, a):
        return a.data.ptr

    def view(self, a, off):
        return a[off:]

    def equal(self, a, b):
        return bool((a == b).all())

    def to_host(self, a):
        return self.cp.asnumpy(a).tobytes()

    def from_host(self, data):
        import numpy as np

        a = self.cp.asarray(np.frombuffer(bytearray(data), dtype=np.uint8))
        self.sync()
        return a

    def sync(self):
        self.cp.cuda.runtime.deviceSynchronize()

    def baselines(self, bufs):
        cp = self.cp
        rt = cp.cuda.runtime
        n = bufs[0].size
        pinned = [cp.cuda.alloc_pinned_memory(n) for _ in bufs]

        def d2h():
            for p, b in zip(pinned, bufs):
                rt.memcpy(p.ptr, b.data.ptr, n, rt.memcpyDeviceToHost)

        def h2d():
            for p, b in zip(pinned, bufs):
                rt.memcpy(b.data.ptr, p.ptr, n, rt.memcpyHostToDevice)

        return {"cudaMemcpy d2h, pinned host": d2h, "cudaMemcpy h2d, pinned host": h2d}


class MmcArrays:
    """Device buffers from the wheel's own helpers (any backend: cuda, ascend, sim)."""

    name = "mmc"

    class Buf:
        def __init__(self, ptr, n, owner=None):
            self.ptr, self.n, self.owner = ptr, n, owner

        def __del__(self):
            if self.owner is None and self.ptr:
                mmc.device_free(self.ptr)

    def __init__(self):
        import numpy as np

        self.np = np
        log(f"mmc device helpers on backend {mmc.device_backend()}")

    def _host(self, data):
        return self.np.frombuffer(bytearray(data), dtype=self.np.uint8)

    def random(self, n):
        return self.from_host(os.urandom(n))

    def zeros(self, n):
        b = self.Buf(mmc.device_alloc(max(n, 1), 0), n)
        assert b.ptr > 0, f"device_alloc({n}) -> {b.ptr}"
        z = self.np.zeros(max(n, 1), dtype=self.np.uint8)
        assert mmc.device_memcpy(b.ptr, z.ctypes.data, n, "h2d") == 0
        return b

    def ptr(self, a):
        return a.ptr

    def view(self, a, off):
        return self.Buf(a.ptr + off, a.n - off, owner=a)

    def to_host(self, a):
        out = self.np.zeros(max(a.n, 1), dtype=self.np.uint8)
        assert mmc.device_memcpy(out.ctypes.data, a.ptr, a.n, "d2h") == 0
        return out[: a.n].tobytes()

    def from_host(self, data):
        b = self.zeros(len(data))
        h = self._host(data)
        assert mmc.device_memcpy(b.ptr, h.ctypes.data, len(data), "h2d") == 0
        return b

    def equal(self, a, b):
        return a.n == b.n and self.to_host(a) == self.to_host(b)

    def sync(self):
        pass

    def baselines(self, bufs):
        n = bufs[0].n
        host = [self.np.zeros(n, dtype=self.np.uint8) for _ in bufs]

        def d2h():
            for h, b in zip(host, bufs):
                assert mmc.device_memcpy(h.ctypes.data, b.ptr, n, "d2h") == 0

        def h2d():
            for h, b in zip(host, bufs):
                assert mmc.device_memcpy(b.ptr, h.ctypes.data, n, "h2d") == 0

        return {"mmc.device_memcpy d2h": d2h, "mmc.device_memcpy h2d": h2d}


class HostArrays:
    """numpy arrays and the host directions: a dry run of this script without a device."""

    name = "host"

    def __init__(self):
        import numpy as np

        self.np = np
        self.rng = np.random.default_rng(1)

    def random(self, n):
        return self.rng.integers(0, 256, n, dtype=self.np.uint8)

    def zeros(self, n):
        return self.np.zeros(n, dtype=self.np.uint8)

    def ptr(self, a):
        return a.ctypes.data

    def view(self, a, off):
        return a[off:]

    def equal(self, a, b):
        return bool(self.np.array_equal(a, b))

    def to_host(self, a):
        return a.tobytes()

    def from_host(self, data):
        return self.np.frombuffer(bytearray(data), dtype=self.np.uint8).copy()

    def sync(self):
        pass

    def baselines(self, bufs):
        dst = [self.np.empty_like(b) for b in bufs]

        def cp():
            for d, b in zip(dst, bufs):
                self.np.copyto(d, b)

        return {"numpy copyto (host)": cp}


def pick_arrays(choice):
    if choice == "auto":
        try:
            import torch

            if torch.cuda.is_available():
                return TorchArrays()
        except ImportError:
            pass
        try:
            import cupy  # noqa: F401

            return CupyArrays()
        except ImportError:
            sys.exit("neither torch (with CUDA) nor cupy is importable: install one, or --arrays")
    return {"torch": TorchArrays, "cupy": CupyArrays, "mmc": MmcArrays, "host": HostArrays}[
        choice
    ]()


# ---------------------------------------------------------------------------------------------
# A cluster of real processes.


class Cluster:
    def __init__(self, bin_dir, workdir, hbm):
        self.bin = pathlib.Path(bin_dir)
        self.dir = pathlib.Path(workdir)
        self.procs = []
        self.meta = self._start(
            "mmc-meta", ["--listen", "tcp://127.0.0.1:0", "--log-level", "warn"], "meta.addr"
        )
        args = ["--meta", self.meta_url, "--listen", "tcp://127.0.0.1:0", "--dram", "4GB"]
        if hbm:
            args += ["--hbm", hbm]
        args += ["--log-level", "warn", "--create-id", "100"]
        self.local = self._start("mmc-local", args, "local.addr").split()[0]

    @property
    def meta_url(self):
        return f"tcp://{self.meta}"

    def _start(self, name, args, addr_name):
        addr = self.dir / addr_name
        exe = self.bin / name
        if not exe.exists():
            sys.exit(f"{exe} is missing (MMC_BIN_DIR={self.bin})")
        p = subprocess.Popen([str(exe), *args, "--addr-file", str(addr)], stdout=subprocess.DEVNULL)
        self.procs.append(p)
        deadline = time.monotonic() + 30
        while True:
            text = addr.read_text() if addr.exists() else ""
            if text.endswith("\n") or (text and " " not in text):
                log(f"{name} at {text.strip()}")
                return text.strip()
            if p.poll() is not None:
                sys.exit(f"{name} exited early with {p.returncode}")
            if time.monotonic() > deadline:
                sys.exit(f"{name} did not start within 30 s")
            time.sleep(0.05)

    def store(self, dram=None, hbm=None):
        lines = [f'meta_url = "{self.meta_url}"', "timeout_seconds = 60", 'log_level = "warn"']
        if dram:
            lines += [f'dram_size = "{dram}"', 'data_url = "tcp://127.0.0.1:0"']
            if hbm:
                lines += [f'hbm_size = "{hbm}"', "device_id = 0"]
        cfg = self.dir / f"cfg-{uuid.uuid4().hex[:8]}.toml"
        cfg.write_text("\n".join(lines) + "\n")
        os.environ["MMC_LOCAL_CONFIG_PATH"] = str(cfg)
        s = mmc.DistributedObjectStore()
        rc = s.init(0)
        del os.environ["MMC_LOCAL_CONFIG_PATH"]
        if rc != 0:
            sys.exit(f"store init failed with {rc} (config:\n{cfg.read_text()})")
        return s

    def stop(self):
        for p in reversed(self.procs):
            p.kill()
        for p in self.procs:
            p.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# Checks.

failures = []


def expect(cond, what):
    if cond:
        return
    failures.append(what)
    log(f"  FAIL: {what}")


def key(tag):
    return f"gpu-check/{tag}/{uuid.uuid4().hex[:10]}"


def check_store(label, s, A, put_dir, get_dir):
    log(f"\n== {label}: single, batch, layers, batch layers ({A.name} arrays)")
    # Single calls, 1 byte to 64 MiB, into an offset of a larger buffer.
    for n in [1, 7, 4097, MIB + 3, 8 * MIB, 64 * MIB]:
        src = A.random(n)
        k = key(f"single-{n}")
        rc = s.put_from(k, A.ptr(src), n, put_dir)
        expect(rc == OK, f"{label}: put_from {n} B -> {rc}")
        dst = A.zeros(n + 64)
        rc = s.get_into(k, A.ptr(dst) + 64, n, get_dir)
        expect(rc == OK, f"{label}: get_into {n} B at offset 64 -> {rc}")
        expect(A.equal(A.view(dst, 64), src), f"{label}: {n} B round trip differs")
        expect(s.remove(k) == OK, f"{label}: remove")
    # AUTO classifies device pointers (the direction the engine passes most).
    n = 3 * MIB + 5
    src, dst, k = A.random(n), A.zeros(n), key("auto")
    expect(s.put_from(k, A.ptr(src), n, mmc.SMEMB_COPY_AUTO) == OK, f"{label}: put_from AUTO")
    expect(s.get_into(k, A.ptr(dst), n, mmc.SMEMB_COPY_AUTO) == OK, f"{label}: get_into AUTO")
    expect(A.equal(dst, src), f"{label}: AUTO round trip differs")
    # Host and device mixed: put from host memory, get into device memory, and back.
    if A.name != "host":
        data = os.urandom(2 * MIB + 1)
        k = key("mixed")
        expect(s.put(k, data) == OK, f"{label}: put from host")
        dst = A.zeros(len(data))
        expect(s.get_into(k, A.ptr(dst), len(data), get_dir) == OK, f"{label}: get_into device")
        expect(A.to_host(dst) == data, f"{label}: host put -> device get differs")
        k2 = key("mixed2")
        expect(s.put_from(k2, A.ptr(dst), len(data), put_dir) == OK, f"{label}: put from device")
        expect(s.get(k2) == data, f"{label}: device put -> host get differs")
    # Batch: 16 keys of uneven sizes.
    sizes = [1 + 37_003 * i for i in range(16)]
    srcs = [A.random(n) for n in sizes]
    keys = [key(f"batch{i}") for i in range(16)]
    rcs = s.batch_put_from(keys, [A.ptr(a) for a in srcs], sizes, put_dir)
    expect(rcs == [OK] * 16, f"{label}: batch_put_from -> {rcs}")
    dsts = [A.zeros(n) for n in sizes]
    rcs = s.batch_get_into(keys, [A.ptr(a) for a in dsts], sizes, get_dir)
    expect(rcs == [OK] * 16, f"{label}: batch_get_into -> {rcs}")
    expect(all(A.equal(a, b) for a, b in zip(dsts, srcs)), f"{label}: batch bytes differ")
    # Layers: DeepSeek-R1's 61 x (K 128 KiB + V 16 KiB), and uneven sizes.
    for tag, sizes in [
        ("r1", [128 << 10, 16 << 10] * 61),
        ("uneven", [1 + (i * 7919) % 300_000 for i in range(40)]),
    ]:
        srcs = [A.random(n) for n in sizes]
        k = key(f"layers-{tag}")
        rc = s.put_from_layers(k, [A.ptr(a) for a in srcs], sizes, put_dir)
        expect(rc == OK, f"{label}: put_from_layers {tag} -> {rc}")
        dsts = [A.zeros(n) for n in sizes]
        rc = s.get_into_layers(k, [A.ptr(a) for a in dsts], sizes, get_dir)
        expect(rc == OK, f"{label}: get_into_layers {tag} -> {rc}")
        expect(all(A.equal(a, b) for a, b in zip(dsts, srcs)), f"{label}: layers {tag} differ")
    # Batch layers: 4 blocks of 8 layers.
    sizes = [(64 << 10) + 3 * i for i in range(8)]
    blocks = [[A.random(n) for n in sizes] for _ in range(4)]
    keys = [key(f"blayers{i}") for i in range(4)]
    rcs = s.batch_put_from_layers(keys, [[A.ptr(a) for a in b] for b in blocks], [sizes] * 4, put_dir)
    expect(rcs == [OK] * 4, f"{label}: batch_put_from_layers -> {rcs}")
    outs = [[A.zeros(n) for n in sizes] for _ in range(4)]
    rcs = s.batch_get_into_layers(keys, [[A.ptr(a) for a in b] for b in outs], [sizes] * 4, get_dir)
    expect(rcs == [OK] * 4, f"{label}: batch_get_into_layers -> {rcs}")
    expect(
        all(A.equal(x, y) for b, o in zip(blocks, outs) for x, y in zip(o, b)),
        f"{label}: batch layers differ",
    )


def timed(f, reps):
    f()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bandwidth(stores, A, put_dir, get_dir, reps):
    count, size = 16, 8 * MIB
    total = count * size
    bufs = [A.random(size) for _ in range(count)]
    outs = [A.zeros(size) for _ in range(count)]
    rows = []
    pn, gn = (d.name.replace("SMEMB_COPY_", "") for d in (put_dir, get_dir))
    for name, f in A.baselines(bufs).items():
        rows.append((name, timed(f, reps)))
    for label, s in stores:
        ptrs = [A.ptr(b) for b in bufs]
        optrs = [A.ptr(b) for b in outs]
        sizes = [size] * count
        fresh = []

        def batch_put():
            keys = [key("bw") for _ in range(count)]
            fresh.append(keys)
            rcs = s.batch_put_from(keys, ptrs, sizes, put_dir)
            assert rcs == [OK] * count, rcs

        rows.append((f"mmc {label}: batch_put_from ({pn})", timed(batch_put, reps)))
        keys = fresh[-1]

        def batch_get():
            rcs = s.batch_get_into(keys, optrs, sizes, get_dir)
            assert rcs == [OK] * count, rcs

        rows.append((f"mmc {label}: batch_get_into ({gn})", timed(batch_get, reps)))
        expect(all(A.equal(a, b) for a, b in zip(outs, bufs)), f"{label}: bandwidth bytes differ")

        def single_put():
            ks = [key("bw1") for _ in range(count)]
            fresh.append(ks)
            for k, p in zip(ks, ptrs):
                assert s.put_from(k, p, size, put_dir) == OK

        rows.append((f"mmc {label}: 16 x put_from ({pn})", timed(single_put, reps)))
        ks = fresh[-1]

        def single_get():
            for k, p in zip(ks, optrs):
                assert s.get_into(k, p, size, get_dir) == OK
            A.sync()

        rows.append((f"mmc {label}: 16 x get_into ({gn})", timed(single_get, reps)))
        for keys in fresh:
            s.remove_batch(keys)
    log(f"\n== bandwidth: {count} x {size // MIB} MiB = {total // MIB} MiB per call, median of {reps}")
    log(f"| {'operation':<44} | {'ms':>8} | {'GiB/s':>7} |")
    log(f"|{'-' * 46}|{'-' * 10}|{'-' * 9}|")
    for name, t in rows:
        log(f"| {name:<44} | {t * 1e3:>8.2f} | {total / t / (1 << 30):>7.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arrays", default="auto", choices=["auto", "torch", "cupy", "mmc", "host"])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    A = pick_arrays(args.arrays)
    if hasattr(mmc, "device_backend"):
        log(f"mmc.device_backend() = {mmc.device_backend()!r}")
    if A.name == "host":
        put_dir, get_dir = mmc.SMEMB_COPY_H2G, mmc.SMEMB_COPY_G2H
    else:
        put_dir, get_dir = mmc.SMEMB_COPY_L2G, mmc.SMEMB_COPY_G2L
    hbm = os.environ.get("MMC_GPU_HBM", "1GB")
    hbm = None if hbm in ("", "0") else hbm
    bin_dir = os.environ.get("MMC_BIN_DIR", "target/release")
    with tempfile.TemporaryDirectory(prefix="mmc-gpu-check-") as work:
        cluster = Cluster(bin_dir, work, hbm)
        try:
            embedded = cluster.store(dram="4GB", hbm=hbm)
            remote = cluster.store()
            stores = [("embedded", embedded), ("remote", remote)]
            for label, s in stores:
                check_store(label, s, A, put_dir, get_dir)
            bandwidth(stores, A, put_dir, get_dir, args.reps)
            for _, s in stores:
                s.close()
        finally:
            cluster.stop()
    if failures:
        log(f"\n{len(failures)} check(s) failed:")
        for f in failures:
            log(f"  - {f}")
        sys.exit(1)
    log("\nall Python device checks passed")


if __name__ == "__main__":
    main()
