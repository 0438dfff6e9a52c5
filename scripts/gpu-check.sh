#!/usr/bin/env bash
# MemCache on a machine with an NVIDIA GPU (not part of CI, which has no GPU): one command that
# prints the GPU and driver, builds (release, and dev for the integration tests), runs the device
# tests against the real `cuda` backend, then the Python check with real CUDA tensors
# (scripts/gpu_check.py: put_from / get_into and the batch and layer forms with
# SMEMB_COPY_L2G / SMEMB_COPY_G2L, byte-exact, then a bandwidth table against torch's own
# cudaMemcpy of the same bytes in the same run).
#
# Usage: scripts/gpu-check.sh            (from anywhere)
#
# Environment:
#   PYTHON            interpreter for the venv (default python3). The venv sees its site-packages,
#                     so an installed torch (or cupy) is used as it is.
#   MMC_GPU_VENV      the venv (default target/gpu-venv; kept between runs)
#   MMC_GPU_PY_PKG    what to pip-install when neither torch with CUDA nor cupy imports
#                     (default: torch)
#   MMC_GPU_HBM       HBM pool of the Python check's local services (default 1GB; 0 = none)
#   MMC_GPU_SKIP_PY=1 stop after the Rust tests
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
start=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(($(date +%s) - start))" "$*"; }
# A check that fails is reported and the next one still runs; the script fails at the end.
failed=()
check() {
    local what="$1"
    shift
    if ! "$@"; then
        echo "FAILED: $what" >&2
        failed+=("$what")
    fi
}

step "GPU and driver"
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "nvidia-smi not found: this script needs an NVIDIA GPU and its driver" >&2
    exit 1
fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total,pci.bus_id --format=csv
nvidia-smi | sed -n '1,4p'
ldconfig -p 2>/dev/null | grep -E 'libcuda\.so(\.1)? ' || echo "(libcuda.so.1 is not in the ldconfig cache; the loader's search path decides)"
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-<unset>}"

step "toolchain"
cargo --version
rustc --version
if cargo nextest --version >/dev/null 2>&1; then nextest=1; else nextest=0; fi

step "build (release): the workspace's binaries"
cargo build --release --workspace --bins --locked

step "build (dev): the binaries the integration tests start"
cargo build --workspace --bins --locked

# Every test below runs on the real GPU; a missing driver or device fails instead of skipping.
export MMC_DEVICE_BACKEND=cuda MMC_DEVICE_REQUIRED=1

step "hal: backend checks on the GPU (round trip, offsets, refusals, pinning, IPC via a child)"
if [ "$nextest" = 1 ]; then
    check "hal backend checks on the GPU" \
        cargo nextest run -p mmc-hal --locked --no-capture -E 'test(real_device)'
else
    check "hal backend checks on the GPU" \
        cargo test -p mmc-hal --locked --lib -- real_device --nocapture
fi

step "device tests of the workspace with MMC_DEVICE_BACKEND=cuda"
if [ "$nextest" = 1 ]; then
    check "device tests of the workspace" \
        cargo nextest run --workspace --locked --no-fail-fast -E 'test(/device/) | binary(/device/)'
else
    check "device tests of the workspace" cargo test --workspace --locked --no-fail-fast -- device
    if [ -f dataplane/tests/device.rs ]; then
        check "dataplane device tests" \
            cargo test -p mmc-dataplane --locked --no-fail-fast --test device
    fi
fi

finish() {
    if [ "${#failed[@]}" -gt 0 ]; then
        step "done: ${#failed[@]} check(s) FAILED: ${failed[*]}"
        exit 1
    fi
    step "done: every GPU check passed$1"
    exit 0
}

if [ "${MMC_GPU_SKIP_PY:-0}" = 1 ]; then
    finish " (Python check skipped: MMC_GPU_SKIP_PY=1)"
fi

step "Python: virtualenv (with the system's site-packages)"
PYTHON="${PYTHON:-python3}"
VENV="${MMC_GPU_VENV:-$ROOT/target/gpu-venv}"
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
pip() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
has() { "$PY" -c "import $1" >/dev/null 2>&1; }
has_torch_cuda() { "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
has maturin || pip maturin
has numpy || pip numpy
if ! has_torch_cuda && ! has cupy; then
    echo "neither torch with CUDA nor cupy imports: pip install ${MMC_GPU_PY_PKG:-torch}"
    pip "${MMC_GPU_PY_PKG:-torch}"
fi
if has_torch_cuda; then arrays=torch; elif has cupy; then arrays=cupy; else
    echo "no torch with CUDA and no cupy after installing ${MMC_GPU_PY_PKG:-torch}" >&2
    exit 1
fi
"$PY" --version
echo "arrays: $arrays"

step "Python: the mmc wheel (release)"
WHEELS="$ROOT/target/gpu-wheels"
rm -rf "$WHEELS"
(cd python && CARGO_TARGET_DIR="$ROOT/target/python" "$PY" -m maturin build --release \
    --interpreter "$PY" -o "$WHEELS")
"$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEELS"/mmc-*.whl

step "Python: real CUDA tensors through put_from / get_into and the layer forms; bandwidth"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# From an empty directory, so that `import mmc` finds the installed wheel, not python/mmc.
py_check() {
    (cd "$work" && MMC_BIN_DIR="$ROOT/target/release" timeout 1200 \
        "$PY" "$ROOT/scripts/gpu_check.py" --arrays "$arrays")
}
check "Python check with CUDA tensors" py_check

finish ""
