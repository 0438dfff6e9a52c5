#!/usr/bin/env bash
# Runs SGLang's unchanged Ascend MemCache HiCache backend class (AscendMemCacheStore, the
# `memcache` / `npu_memcache` storage backend, which does `from memcache_hybrid import
# DistributedObjectStore`) against our store: a meta service and a local service on 127.0.0.1,
# the `mmc` wheel and `mmc-memcache-compat` (module `memcache_hybrid`) in a venv of its own, with
# SGLang and CPU torch. Host memory only. Not part of CI (downloads gigabytes).
#
# It prints what ran, what could not run and why, and exits 0 when every step it could attempt
# went as the class expects; 1 when a call gave a wrong answer; 2 when it could not set up.
#
# Environment:
#   PYTHON              interpreter for the venv (default python3)
#   MMC_ENGINE_VENV     the venv (default target/engine-venv; kept between runs)
#   SGLANG_SPEC         what to pip install for SGLang (default: sglang)
#   TORCH_INDEX         where CPU torch comes from (default https://download.pytorch.org/whl/cpu;
#                       if unreachable, PyPI's torch)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${MMC_ENGINE_VENV:-$ROOT/target/engine-venv}"
SGLANG_SPEC="${SGLANG_SPEC:-sglang}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
start=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(($(date +%s) - start))"; }
pipq() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

step "venv at $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" || { echo "no venv" >&2; exit 2; }
PY="$VENV/bin/python"
pipq --upgrade pip setuptools wheel maturin numpy || exit 2

step "torch (CPU)"
if ! "$PY" -c "import torch" 2>/dev/null; then
    pipq torch --index-url "$TORCH_INDEX" || pipq torch || { echo "torch: not installable" >&2; exit 2; }
fi

step "SGLang ($SGLANG_SPEC, without its dependency tree; imports fill in what the backend needs)"
"$PY" -c "import sglang" 2>/dev/null || pipq --no-deps "$SGLANG_SPEC" || { echo "sglang: not installable" >&2; exit 2; }

step "mmc wheel, mmc-memcache-compat, services"
cargo build -q -p mmc-meta-service -p mmc-dataplane --bins || exit 2
rm -rf target/engine-wheels
(cd python && CARGO_TARGET_DIR="$ROOT/target/python" "$VENV/bin/maturin" build -q --release \
    --interpreter "$PY" -o "$ROOT/target/engine-wheels") || exit 2
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w target/engine-wheels python/compat || exit 2
pipq --force-reinstall --no-deps target/engine-wheels/*.whl || exit 2

work=$(mktemp -d)
cleanup() { [ -n "${META_PID:-}" ] && kill "$META_PID" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
target/debug/mmc-meta --listen tcp://127.0.0.1:0 --log-level warn --addr-file "$work/meta" &
META_PID=$!
for _ in $(seq 100); do [ -s "$work/meta" ] && break; sleep 0.1; done
meta="tcp://$(cat "$work/meta")"
printf 'ock.mmc.meta_service_url = %s\nock.mmc.local_service.dram.size = 256MB\nock.mmc.local_service.protocol = host_tcp\nock.mmc.log_level = warn\n' \
    "$meta" > "$work/mmc-local.conf"

step "the backend class against our store"
MMC_LOCAL_CONFIG_PATH="$work/mmc-local.conf" timeout 600 "$PY" - <<'PYEOF'
import importlib, importlib.metadata, importlib.util, pathlib, re, subprocess, sys

ran, failed, skipped = [], [], []

# Find the backend module by its file name (no import), then import it, installing the modules
# the import chain asks for one by one (bounded).
spec = importlib.util.find_spec("sglang")
root = pathlib.Path(list(spec.submodule_search_locations)[0])
files = sorted(p for p in root.rglob("*memcache*.py") if "storage" in p.parts)
names = [".".join(("sglang",) + p.relative_to(root).with_suffix("").parts) for p in files]
print("backend modules found:", names or "none")
mod = None
for attempt in range(40):
    if not names:
        break
    try:
        mod = importlib.import_module(names[0])
        break
    except ModuleNotFoundError as e:
        top = (e.name or "?").split(".")[0]
        if top == "sglang" or top in {m.split(".")[0] for m in sys.builtin_module_names}:
            skipped.append(f"import of {names[0]}: {e}")
            break
        pkg = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow", "zmq": "pyzmq",
               "cv2": "opencv-python-headless", "google": "protobuf",
               "tvm_ffi": "apache-tvm-ffi"}.get(top, top)
        # Take SGLang's own pin when it names that distribution.
        pins = [r.split(";")[0].replace(" ", "") for r in importlib.metadata.requires("sglang") or []]
        pkg = next((r for r in pins if re.split(r"[<>=!~\[]", r)[0].lower().replace("_", "-")
                    == pkg.lower().replace("_", "-")), pkg)
        print(f"import needs {e.name}: pip install {pkg}", flush=True)
        if subprocess.call([sys.executable, "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", pkg]) != 0:
            skipped.append(f"import of {names[0]}: {e.name} not installable")
            break
        importlib.invalidate_caches()
        for m in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
            del sys.modules[m]
    except Exception as e:
        skipped.append(f"import of {names[0]}: {type(e).__name__}: {e}")
        break
else:
    skipped.append(f"import of {names[0]}: still missing modules after 40 installs")
cls = None
if mod is not None:
    cls = next((v for k, v in vars(mod).items() if isinstance(v, type) and "MemCache" in k
                and hasattr(v, "batch_exists")), None)
print("backend class:", cls)

if cls is not None:
    import memcache_hybrid, torch
    # 1. The unchanged constructor: it needs torch.distributed and an NPU (`device="npu"`).
    try:
        from types import SimpleNamespace
        cfg = SimpleNamespace(tp_rank=0, tp_size=1, is_mla_model=False,
                              extra_config={"device_id": 0})
        cls(cfg)
        ran.append("constructor")
    except Exception as e:
        skipped.append(f"constructor: {type(e).__name__}: {e}".splitlines()[0][:200])
    # 2. Its methods on an instance made without the NPU-only constructor steps, with our store.
    obj = cls.__new__(cls)
    obj.local_rank, obj.tp_size, obj.is_mla_model = 0, 1, False
    obj.store = memcache_hybrid.DistributedObjectStore()
    assert obj.store.init(0) == 0
    obj.is_device_rdma = False
    for name, call in [
        ("warmup", lambda: obj.warmup()),
        ("exists", lambda: obj.exists("nothing-here_0") == 0 or "exists != 0"),
    ]:
        try:
            r = call()
            (ran if r in (None, True) else failed).append(f"{name}: {r}")
        except Exception as e:
            failed.append(f"{name}: {type(e).__name__}: {e}")
    layers, nbytes = 4, 4096
    src = [torch.randint(0, 255, (layers, nbytes), dtype=torch.uint8) for _ in range(3)]
    dst = [torch.zeros((layers, nbytes), dtype=torch.uint8) for _ in range(3)]
    keys = [f"engine-check-{i}" for i in range(3)]
    locs = lambda ts: [[t[l].data_ptr() for l in range(layers)] for t in ts]
    sizes = [[nbytes] * layers for _ in range(3)]
    try:
        n = obj.batch_set(keys, None, locs(src), sizes)
        if n == len(keys):
            ran.append("batch_set")
        else:
            skipped.append(f"batch_set stored {n} of {len(keys)}: it passes direction 0 "
                           "(device -> pool); host memory needs 3, and this build has no "
                           "device backend")
            obj.store.batch_put_from_layers([f"{k}_0" for k in keys], locs(src), sizes, 3)
    except Exception as e:
        failed.append(f"batch_set: {type(e).__name__}: {e}")
    try:
        n = obj.batch_exists(keys)
        (ran if n == len(keys) else failed).append(f"batch_exists: {n} leading hits")
    except Exception as e:
        failed.append(f"batch_exists: {type(e).__name__}: {e}")
    try:
        n = obj.batch_get(keys, None, locs(dst), sizes)
        if n == len(keys) and all(torch.equal(a, b) for a, b in zip(src, dst)):
            ran.append("batch_get: byte-exact")
        else:
            skipped.append(f"batch_get read {n} of {len(keys)}: direction 1 (pool -> device)")
    except Exception as e:
        failed.append(f"batch_get: {type(e).__name__}: {e}")
    for name, call in [("clear", obj.clear), ("close", obj.close)]:
        try:
            call()
            ran.append(name)
        except Exception as e:
            failed.append(f"{name}: {type(e).__name__}: {e}")
else:
    skipped.append("no MemCache HiCache backend class found in this SGLang")

print("\nRAN:", *ran or ["nothing"], sep="\n  ")
print("COULD NOT RUN:", *skipped or ["nothing"], sep="\n  ")
print("WRONG:", *failed or ["nothing"], sep="\n  ")
sys.exit(1 if failed else 0)
PYEOF
rc=$?
step "done (exit $rc)"
exit $rc
