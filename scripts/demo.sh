#!/usr/bin/env bash
# MemCache demo: build, start a meta service and two local services (1 GiB DRAM each) on loopback,
# run the quick benchmark against them, print the cluster status, and stop everything.
#
#   bash scripts/demo.sh                 # quick benchmark
#   bash scripts/demo.sh --check --json /tmp/bench.json
#
# Extra arguments go to mmc-bench. Honours $CARGO_TARGET_DIR (default: target/ in the repository).
# Set KEEP_DEMO_DIR=1 to keep the temporary directory with the logs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release"
WAIT_SECS="${DEMO_WAIT_SECS:-60}"

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1; then
    die "cargo is not installed (or not on PATH): install Rust from https://rustup.rs, then run this again"
fi

say "building (release) into $TARGET"
(cd "$ROOT" && cargo build --release --bins)
for b in mmc-meta mmc-local mmc-bench mmc; do
    [[ -x "$BIN/$b" ]] || die "built, but $BIN/$b is missing"
done

DIR="$(mktemp -d "${TMPDIR:-/tmp}/mmc-demo.XXXXXX")"
PIDS=()

show_logs() {
    local f
    for f in "$DIR"/*.log; do
        [[ -e "$f" ]] || continue
        printf '\n---- last lines of %s\n' "$f" >&2
        tail -n 30 "$f" >&2 || true
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    # Local services first, then the meta service.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid="${PIDS[i]}"
        # Bounded wait: a service that ignores SIGTERM for 10 s is killed.
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "demo: pid $pid did not stop on SIGTERM: killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 ]]; then
        echo "demo: FAILED (exit $rc)" >&2
        show_logs
        echo "demo: logs kept in $DIR" >&2
    elif [[ "${KEEP_DEMO_DIR:-0}" == 1 ]]; then
        echo "demo: logs kept in $DIR" >&2
    else
        rm -rf "$DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for_file FILE PID NAME: until FILE is non-empty; fail if PID exits or time runs out.
wait_for_file() {
    local file="$1" pid="$2" name="$3" deadline=$((SECONDS + WAIT_SECS))
    until [[ -s "$file" ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$name exited before writing $file"
        fi
        if ((SECONDS >= deadline)); then
            die "$name did not write $file within ${WAIT_SECS}s"
        fi
        sleep 0.1
    done
    # The writer may still be mid-write: give it a moment, then read the whole line.
    sleep 0.05
}

say "starting mmc-meta (logs in $DIR)"
"$BIN/mmc-meta" --listen tcp://127.0.0.1:0 --addr-file "$DIR/meta.addr" >"$DIR/meta.log" 2>&1 &
PIDS+=($!)
wait_for_file "$DIR/meta.addr" "${PIDS[-1]}" mmc-meta
META_ADDR="$(head -n 1 "$DIR/meta.addr" | tr -d '[:space:]')"
[[ -n "$META_ADDR" ]] || die "mmc-meta wrote an empty address file"
META="tcp://$META_ADDR"
echo "meta service at $META" >&2

for n in 1 2; do
    say "starting mmc-local $n (1 GiB DRAM, pre-faulted)"
    "$BIN/mmc-local" --meta "$META" --dram 1GB --listen tcp://127.0.0.1:0 \
        --addr-file "$DIR/local$n.addr" >"$DIR/local$n.log" 2>&1 &
    PIDS+=($!)
done
for n in 1 2; do
    wait_for_file "$DIR/local$n.addr" "${PIDS[n]}" "mmc-local $n"
    read -r addr rank <"$DIR/local$n.addr" || true
    echo "local service $n: data endpoint $addr, rank $rank" >&2
done

say "running mmc-bench --meta $META --quick $*"
"$BIN/mmc-bench" --meta "$META" --quick "$@"

say "mmc status"
"$BIN/mmc" --meta "$META" status

say "demo finished"
