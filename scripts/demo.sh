#!/usr/bin/env bash
# MemCache demo: build, then run the quick benchmark. `mmc-bench` starts its own cluster on
# 127.0.0.1 (a meta service, and local services as separate processes), runs every workload with
# the data in its own process, in another process on this host, and behind TCP only, measures
# memcpy, a raw TCP stream, Redis and memcached in the same run, prints the table and the targets,
# and stops everything. Under a minute after the build.
#
#   bash scripts/demo.sh                          # quick benchmark
#   bash scripts/demo.sh --check --json /tmp/bench.json --chart /tmp/bench.png
#
# Extra arguments go to mmc-bench. Honours $CARGO_TARGET_DIR (default: target/ in the repository).
# Redis and memcached are installed with apt when missing and this runs as root; otherwise the
# benchmark skips them and says why. The full run is scripts/bench.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1; then
    die "cargo is not installed (or not on PATH): install Rust from https://rustup.rs, then run this again"
fi

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v memcached >/dev/null 2>&1; then
        say "apt-get install redis-server memcached (the benchmark's peers)"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server memcached >/dev/null \
            || echo "demo: could not install redis-server/memcached: the benchmark skips them" >&2
    fi
fi

say "building (release) into $TARGET"
(cd "$ROOT" && cargo build --release --bins)
for b in mmc-meta mmc-local mmc-bench mmc; do
    [[ -x "$BIN/$b" ]] || die "built, but $BIN/$b is missing"
done

say "running mmc-bench --quick $*"
"$BIN/mmc-bench" --quick "$@"

say "demo finished"
