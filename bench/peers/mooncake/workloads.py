#!/usr/bin/env python3
"""mmc-bench's workloads run against Mooncake Store, for its peer rows.

Needs a master and a metadata server (up.sh) and a venv with the store (install.sh). Two modes:

  own : this process's store client contributes the only segment: the data stays in-process
        (Mooncake's transfer engine still moves it, over its local path);
  tcp : a second process (this script with --serve) contributes the only segment and this
        client contributes none, so every byte crosses loopback TCP.

Workloads (the names are mmc-bench's, so its rows line up with MemCache's):

  4k put / get / exist      one key per call, 4 KiB values (bytes API: put, get, is_exist)
  exist batch_exist         batch_is_exist of 1000 present keys
  first-write put cold      batch_put_from 16 x 8 MiB of new keys into never-used segment space
  first-write put warm      the same again after removing them (space used before)
  batch-1m put / get        batch_put_from / batch_get_into 64 x 1 MiB (registered buffers)
  batch-8m put / get        batch_put_from / batch_get_into 16 x 8 MiB (registered buffers)

Every value read back is compared with what was written (a mismatch counts as an error), every
loop is bounded by a count and by --cap-s seconds, and keys are removed after each workload.
Times are the sum of the calls' own durations (checks excluded), as in mmc-bench.

  python workloads.py --mode own --json own.json
Output: a line per workload on stdout, and with --json FILE {"mode", "results": [...]}, each
result with workload, op, shape, calls, objects, bytes, seconds, p50_us, p99_us, errors.
"""
import argparse
import ctypes
import json
import mmap
import os
import subprocess
import sys
import time

os.environ.setdefault("MC_TCP_BIND_ADDRESS", "127.0.0.1")  # a lo-only namespace has no LAN address

from mooncake.store import MooncakeDistributedStore  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20


def connect(args, segment_bytes):
    """A store client contributing `segment_bytes` of its memory (0: none)."""
    store = MooncakeDistributedStore()
    rc = store.setup("127.0.0.1", args.metadata, segment_bytes, args.buffer_mib * MIB, "tcp", "",
                     args.master)
    if rc != 0:
        raise SystemExit(f"mooncake setup failed: {rc}")
    return store


def serve(args):
    """--serve: contribute a segment until standard input closes (the parent ended)."""
    store = connect(args, args.segment_mib * MIB)
    print("serving", flush=True)
    sys.stdin.read()
    store.close()


class Region:
    """Page-aligned memory with its address, pages touched (no first-touch faults timed)."""

    def __init__(self, size):
        self.mm = mmap.mmap(-1, size)
        self.view = memoryview(self.mm)
        self._anchor = ctypes.c_char.from_buffer(self.mm)
        self.addr = ctypes.addressof(self._anchor)
        self.mm.write(os.urandom(size))

    def close(self):
        del self._anchor
        self.view.release()
        self.mm.close()


class Results:
    def __init__(self, cap_s):
        self.cap_s = cap_s
        self.rows = []

    def measure(self, workload, op, shape, n, call, objects=1, nbytes=0):
        """Run call(i) for i < n or until the cap; call returns True when its answer was right.
        Records one result; returns how many calls ran."""
        lats, errors = [], 0
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            ok = call(i)
            lats.append(time.perf_counter() - t)
            errors += 0 if ok else 1
            if time.perf_counter() - start > self.cap_s:
                break
        self.record(workload, op, shape, lats, objects, nbytes, errors)
        return len(lats)

    def record(self, workload, op, shape, lats, objects, nbytes, errors):
        s = sorted(lats)

        def pct(p):
            return round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1e6, 1) if s else None

        r = {
            "workload": workload, "op": op, "shape": shape, "calls": len(s),
            "objects": objects * len(s), "bytes": nbytes * len(s), "seconds": sum(s),
            "p50_us": pct(50), "p99_us": pct(99), "errors": errors,
        }
        self.rows.append(r)
        gbps = r["bytes"] / r["seconds"] / 1e9 if r["seconds"] > 0 else 0.0
        print(f"{workload:12s} {op:13s} {shape:12s} calls {r['calls']:5d}  {gbps:6.2f} GB/s  "
              f"p50 {r['p50_us']} us  errors {errors}", flush=True)


def small(store, res, pfx, n):
    """4k put / get / exist, one key per call."""
    value = os.urandom(4 * KIB)
    keys = [f"{pfx}4k-{i}" for i in range(n)]
    done = res.measure("4k", "put", "1 x 4 KiB", n, lambda i: store.put(keys[i], value) == 0,
                       nbytes=4 * KIB)
    res.measure("4k", "get", "1 x 4 KiB", done, lambda i: store.get(keys[i]) == value,
                nbytes=4 * KIB)
    res.measure("4k", "exist", "1 key", done, lambda i: store.is_exist(keys[i]) == 1)
    batch = [keys[i % done] for i in range(1000)]
    res.measure("exist", "batch_exist", "1000 keys", 300,
                lambda i: all(x == 1 for x in store.batch_is_exist(batch)), objects=1000)
    store.batch_remove(keys[:done], True)


def bulk(store, res, pfx, src, dst, workload, op_put, op_get, count, size, rounds):
    """`rounds` batch_put_from of `count` new keys of `size` bytes (from src), each batch read
    back with batch_get_into (into dst, compared with src) unless op_get is None; the keys
    are removed at the end."""
    shape = f"{count} x {size // MIB} MiB"
    sizes = [size] * count
    srcs = [src.addr + j * size for j in range(count)]
    dsts = [dst.addr + j * size for j in range(count)]
    keys = [[f"{pfx}{workload}-{op_put}-{r}-{j}" for j in range(count)] for r in range(rounds)]
    put_lats, get_lats, put_errors, get_errors = [], [], 0, 0
    start = time.perf_counter()
    for r in range(rounds):
        t = time.perf_counter()
        put_ok = all(x == 0 for x in store.batch_put_from(keys[r], srcs, sizes))
        put_lats.append(time.perf_counter() - t)
        put_errors += 0 if put_ok else 1
        if op_get is not None and put_ok:
            dst.mm[0:count * size] = b"\xa5" * (count * size)
            t = time.perf_counter()
            got = store.batch_get_into(keys[r], dsts, sizes)
            get_lats.append(time.perf_counter() - t)
            same = all(x == size for x in got) and \
                dst.view[0:count * size] == src.view[0:count * size]
            get_errors += 0 if same else 1
        if time.perf_counter() - start > res.cap_s:
            break
    res.record(workload, op_put, shape, put_lats, count, count * size, put_errors)
    if op_get is not None:
        res.record(workload, op_get, shape, get_lats, count, count * size, get_errors)
    for r in range(len(put_lats)):
        store.batch_remove(keys[r], True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--master", default="127.0.0.1:50051")
    ap.add_argument("--metadata", default="http://127.0.0.1:8080/metadata")
    ap.add_argument("--mode", choices=["own", "tcp"], default="own")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--segment-mib", type=int, default=1024, help="the segment's size")
    ap.add_argument("--buffer-mib", type=int, default=256,
                    help="the client's transfer buffer (the bytes API stages through it)")
    ap.add_argument("--n-4k", type=int, default=2000, help="4 KiB calls of each kind")
    ap.add_argument("--rounds", type=int, default=6, help="calls of each bulk workload")
    ap.add_argument("--cap-s", type=float, default=15.0, help="time cap of each workload")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    if args.serve:
        return serve(args)

    provider = None
    if args.mode == "tcp":
        provider = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--master", args.master, "--metadata",
             args.metadata, "--segment-mib", str(args.segment_mib), "--buffer-mib", "16"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if provider.stdout.readline().strip() != "serving":
            raise SystemExit("the segment process did not start")
    try:
        store = connect(args, args.segment_mib * MIB if args.mode == "own" else 0)
        res = Results(args.cap_s)
        pfx = f"mmc-bench-{os.getpid()}-{args.mode}/"
        small(store, res, pfx, args.n_4k)
        src, dst = Region(128 * MIB), Region(128 * MIB)
        for region in (src, dst):
            if store.register_buffer(region.addr, 128 * MIB) != 0:
                raise SystemExit("register_buffer failed")
        bulk(store, res, pfx, src, dst, "first-write", "put cold", None, 16, 8 * MIB, args.rounds)
        bulk(store, res, pfx, src, dst, "first-write", "put warm", None, 16, 8 * MIB, args.rounds)
        bulk(store, res, pfx, src, dst, "batch-1m", "put", "get", 64, MIB, args.rounds)
        bulk(store, res, pfx, src, dst, "batch-8m", "put", "get", 16, 8 * MIB, args.rounds)
        for region in (src, dst):
            store.unregister_buffer(region.addr)
            region.close()
        store.close()
    finally:
        if provider is not None:
            provider.stdin.close()
            try:
                provider.wait(15)
            except subprocess.TimeoutExpired:
                provider.kill()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": args.mode, "results": res.rows}, f, indent=1)


if __name__ == "__main__":
    main()
