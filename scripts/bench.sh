#!/usr/bin/env bash
# The full MemCache benchmark (about a minute after the build): installs what it needs (Redis and memcached from apt; Mooncake Store
# from PyPI into a venv, with the libraries its wheel loads), builds release binaries, and runs
# `mmc-bench` with Mooncake as a peer, writing docs/bench.json and the chart docs/bench.png and
# docs/bench.svg.
#
#   bash scripts/bench.sh                    # full run
#   bash scripts/bench.sh --quick            # extra arguments go to mmc-bench
#   NO_MOONCAKE=1 bash scripts/bench.sh      # skip Mooncake (no venv, no network namespace)
#
# Honours $CARGO_TARGET_DIR (default: target/ in the repository) and $MOONCAKE_VENV (default:
# $CARGO_TARGET_DIR/mooncake-venv). Mooncake needs root (it runs in a lo-only network namespace).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
say() { printf '\n== %s\n' "$*" >&2; }

SUDO=""
if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

apt_install() {
    # apt_install PKG...: install the packages that are missing.
    local missing=()
    local p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        say "apt-get install ${missing[*]}"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

if command -v apt-get >/dev/null 2>&1; then
    apt_install redis-server memcached
else
    echo "bench: no apt-get: Redis and memcached run only if already installed" >&2
fi

PEERS=()
if [[ "${NO_MOONCAKE:-0}" != 1 ]]; then
    VENV="${MOONCAKE_VENV:-$TARGET/mooncake-venv}"
    # The project's own peer harness (bench/peers/mooncake): install.sh puts the pinned wheel
    # into the venv (a no-op when it is there); mmc-bench starts the servers (up.sh) and runs
    # the workloads (workloads.py) in a lo-only network namespace.
    command -v apt-get >/dev/null 2>&1 && apt_install python3-venv libibverbs1 librdmacm1 libnuma1 iproute2
    say "Mooncake Store in $VENV (bench/peers/mooncake/install.sh)"
    bash "$ROOT/bench/peers/mooncake/install.sh" "$VENV"
    export MOONCAKE_VENV="$VENV"
    PEERS=(--peers mooncake)
fi

say "building (release) into $TARGET"
(cd "$ROOT" && cargo build --release --bins -p mmc-meta-service -p mmc-dataplane -p mmc-bench)

mkdir -p "$ROOT/docs"
say "mmc-bench --check ${PEERS[*]} --json docs/bench.json --chart docs/bench.png $*"
cd "$ROOT"
"$BIN/mmc-bench" --check "${PEERS[@]}" --json docs/bench.json --chart docs/bench.png "$@"
