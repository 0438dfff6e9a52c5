#!/usr/bin/env bash
# The Python API's tests: a fresh virtualenv, the `mmc` wheel (maturin, abi3), the
# `mmc-memcache-compat` wheel (python/compat: the module name `memcache_hybrid`), the mmc-meta /
# mmc-local / mmc binaries, then pytest (python/tests/) against real processes on 127.0.0.1.
#
# Environment:
#   PYTHON               interpreter for the venv (default python3; needs >= 3.9)
#   MMC_PY_VENV          where the venv goes (default target/py-venv; recreated every run)
#   MMC_PY_PROFILE       cargo profile of the wheel: release (default; builds faster than dev here) or dev
#   MMC_PY_TARGET_DIR    cargo target dir of the wheel (default target/python)
#   MMC_PY_CLIPPY=1      also run `cargo clippy --all-targets -D warnings` on python/
#   PYTEST_ARGS          extra pytest arguments (e.g. "-k layers -x")
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${MMC_PY_VENV:-$ROOT/target/py-venv}"
PROFILE="${MMC_PY_PROFILE:-release}"
WHEEL_TARGET="${MMC_PY_TARGET_DIR:-$ROOT/target/python}"
WHEELS="$ROOT/target/py-wheels"
BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
start=$(date +%s)

step() { printf '\n==> %s (%ss)\n' "$*" "$(($(date +%s) - start))"; }

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

step "fresh virtualenv at $VENV"
rm -rf "$VENV"
if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian and Ubuntu ship `venv` (and ensurepip) in a separate package.
    command -v apt-get >/dev/null || { echo "'$PYTHON -m venv' failed" >&2; exit 1; }
    pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    echo "'$PYTHON -m venv' failed: installing python${pyver}-venv"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${pyver}-venv" \
        || sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --disable-pip-version-check --upgrade pip
"$PY" -m pip install -q --disable-pip-version-check maturin pytest numpy setuptools wheel

step "format check (python/)"
(cd python && cargo fmt --check)
if [ "${MMC_PY_CLIPPY:-0}" = 1 ]; then
    step "clippy (python/)"
    (cd python && CARGO_TARGET_DIR="$WHEEL_TARGET" cargo clippy --all-targets -- -D warnings)
fi

step "build mmc-meta, mmc-local, mmc, mmc-testpki"
cargo build -p mmc-meta-service -p mmc-dataplane --bins
cargo build -p mmc-tls --features testpki --bin mmc-testpki
for b in mmc-meta mmc-local mmc mmc-testpki; do
    [ -x "$BIN_DIR/$b" ] || { echo "missing $BIN_DIR/$b" >&2; exit 1; }
done

step "build the wheel (maturin, profile $PROFILE)"
rm -rf "$WHEELS"
# --locked: python/Cargo.lock (the python crate's own: it is outside the workspace) must be
# current; the build never rewrites it.
(cd python && CARGO_TARGET_DIR="$WHEEL_TARGET" "$VENV/bin/maturin" build --locked --profile "$PROFILE" \
    --interpreter "$PY" -o "$WHEELS")
wheel=$(ls "$WHEELS"/mmc-*.whl)
case "$wheel" in
    *-cp39-abi3-*) ;;
    *) echo "expected an abi3 wheel for Python >= 3.9, got $wheel" >&2; exit 1 ;;
esac
"$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"

step "build mmc-memcache-compat (the module name memcache_hybrid)"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$WHEELS" \
    "$ROOT/python/compat"
"$PY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
    "$WHEELS"/mmc_memcache_compat-*.whl

step "pytest python/tests"
# Run from an empty directory, so that `import mmc` finds the installed wheel, not python/mmc.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rc=0
(cd "$work" && MMC_BIN_DIR="$BIN_DIR" timeout 1200 "$PY" -m pytest "$ROOT/python/tests" \
    -p no:cacheprovider -ra ${PYTEST_ARGS:-}) || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
step "done (pytest exit code $rc)"
exit "$rc"
