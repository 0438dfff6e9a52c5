#!/usr/bin/env bash
# Runs SGLang's unchanged Ascend MemCache HiCache backend class (NpuMemcacheStore, the
# `npu_memcache` storage backend, which does `from memcache_hybrid import DistributedObjectStore`)
# against our store, over a stand-in for SGLang's page-first host KV pool (the class reads only
# its buffer and page layout): a meta service on 127.0.0.1 and a local service in the process,
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
MMC_LOCAL_CONFIG_PATH="$work/mmc-local.conf" timeout 600 "$PY" - "$work/meta" <<'PYEOF'
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
    cls = next((v for k, v in vars(mod).items() if isinstance(v, type)
                and "memcache" in k.lower() and hasattr(v, "batch_exists")), None)
print("backend class:", cls)

import memcache_hybrid, torch


class HostPool:
    """A stand-in for SGLang's page-first MHA host KV pool (HostKVCache): what the backend
    reads of it (layout, kv_buffer, page_size, get_ksize_per_token, get_page_buffer_meta)."""

    layout = "page_first"

    def __init__(self, pages=16, page_size=4, layers=3, token_bytes=256):
        self.page_size = page_size
        self.page_half = layers * page_size * token_bytes  # one page's K (or V) bytes
        self.kv_buffer = torch.zeros((pages, 2, self.page_half), dtype=torch.uint8)
        self.token_bytes, self.layers = token_bytes, layers

    def get_ksize_per_token(self):
        return 2 * self.layers * self.token_bytes

    def get_page_buffer_meta(self, indices):
        ptrs, sizes = [], []
        for i in range(0, len(indices), self.page_size):
            page = int(indices[i]) // self.page_size
            for kv in range(2):
                ptrs.append(self.kv_buffer[page, kv].data_ptr())
                sizes.append(self.page_half)
        return ptrs, sizes


def check(name, cond, detail=""):
    (ran if cond else failed).append(f"{name}{': ' + detail if detail else ''}")


if cls is not None and hasattr(cls, "batch_set_v1"):
    from sglang.srt.mem_cache.hicache_storage import HiCacheStorageConfig
    meta_url = open(sys.argv[1]).read().strip()
    cfg = HiCacheStorageConfig(
        tp_rank=0, tp_size=1, pp_rank=0, pp_size=1, attn_cp_rank=0, attn_cp_size=1,
        is_mla_model=False, enable_storage_metrics=False, is_page_first_layout=True,
        model_name="engine-check",
        extra_config={"meta_service_url": f"tcp://{meta_url}", "dram_size": "256MB",
                      "hcom_url": "tcp://127.0.0.1:0", "log_level": "warn", "device_id": 0},
    )
    try:
        backend = cls(cfg)
        ran.append("constructor (setup(LocalConfig), init(device_id, init_bm))")
    except Exception as e:
        backend = None
        failed.append(f"constructor: {type(e).__name__}: {e}")
    if backend is not None:
        pool = HostPool()
        try:
            backend.register_mem_pool_host(pool)
            ran.append("register_mem_pool_host (register_buffer of the host pool, once)")
        except Exception as e:
            failed.append(f"register_mem_pool_host: {type(e).__name__}: {e}")
        try:
            backend.warmup()
            ran.append("warmup (put / is_exist / get)")
        except Exception as e:
            failed.append(f"warmup: {type(e).__name__}: {e}")
        ps = pool.page_size
        idx = lambda pages: torch.tensor([p * ps + t for p in pages for t in range(ps)])
        pool.kv_buffer[0:6] = torch.randint(0, 255, pool.kv_buffer[0:6].shape, dtype=torch.uint8)
        keys = [f"engine-check-page{i}" for i in range(6)]
        try:
            check("batch_exists before any set", backend.batch_exists(keys) == 0)
            r = backend.batch_set_v1(keys[:4], idx(range(4)))
            check("batch_set_v1 of 4 pages", r == [True] * 4, str(r))
            r = backend.batch_set_v1(keys[:4], idx(range(4)))
            check("batch_set_v1 again (already stored)", r == [True] * 4, str(r))
            r = backend.batch_set_v1([keys[5]], idx([5]))
            check("batch_set_v1 of page 5", r == [True], str(r))
            n = backend.batch_exists(keys)
            check("batch_exists = the leading run of hits (page 4 missing)", n == 4, str(n))
            r = backend.batch_get_v1(keys[:4], idx(range(8, 12)))
            same = torch.equal(pool.kv_buffer[8:12], pool.kv_buffer[0:4])
            check("batch_get_v1 into other slots, byte-exact", r == [True] * 4 and same, str(r))
            r = backend.batch_get_v1([keys[4]], idx([12]))
            check("batch_get_v1 of a missing page", r == [False], str(r))
            check("exists", backend.exists(f"{keys[0]}_0_k") and not backend.exists("nope"))
            backend.clear()
            check("clear (remove_all)", backend.batch_exists(keys) == 0)
            backend.close()
            ran.append("close")
        except Exception as e:
            failed.append(f"calls: {type(e).__name__}: {e}")
elif cls is not None:
    skipped.append(f"{cls.__name__}: an older backend (batch_set / batch_get with device "
                   "directions 0 / 1 over NPU memory): needs the device backend")
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
