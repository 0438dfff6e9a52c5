#!/usr/bin/env bash
# Soak test (minutes; not part of CI): a meta service and two local services with small pools
# (64 MiB each, so eviction runs all the time), then `mmc-soak`: 16 threads over 4 clients (half
# forced to TCP, half on same-host shared memory) doing puts of 1 KiB .. 4 MiB, gets, exists,
# removes, batch puts and batch gets, every byte read back checked. It prints operations and
# outcomes by code, and the services' VmRSS after a 15 s warm-up and at the end.
#
#   bash scripts/soak.sh            # 120 s
#   bash scripts/soak.sh 600        # any duration in seconds (warm-up included)
#
# Fails (exit 1) when a byte read back was wrong, a service died, or a service's VmRSS grew by
# more than RSS_GROWTH_MAX_MB (default 32 MiB) between the end of the warm-up and the end.
# PROFILE=release builds and runs release binaries (default: the dev profile, which is optimized
# in this workspace). Honours $CARGO_TARGET_DIR.
set -euo pipefail

DURATION="${1:-120}"
RSS_GROWTH_MAX_MB="${RSS_GROWTH_MAX_MB:-32}"
PROFILE="${PROFILE:-dev}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ $PROFILE == dev ]]; then BIN="$TARGET/debug"; else BIN="$TARGET/$PROFILE"; fi

cd "$ROOT"
echo "== build ($PROFILE)"
cargo build --profile "$PROFILE" --locked -p mmc-meta-service -p mmc-dataplane --bins
cargo build --profile "$PROFILE" --locked -p mmc-bench --bin mmc-soak

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_file() {
    # wait_file FILE PID: until FILE holds a line, the process is gone, or 30 s passed.
    local i
    for i in $(seq 300); do
        [[ -s $1 ]] && return 0
        kill -0 "$2" 2>/dev/null || { echo "process $2 exited early" >&2; return 1; }
        sleep 0.1
    done
    echo "$1 not written within 30 s" >&2
    return 1
}

echo "== cluster: mmc-meta and 2 x mmc-local (64 MiB each); logs in $WORK"
"$BIN/mmc-meta" --listen tcp://127.0.0.1:0 --addr-file "$WORK/meta.addr" --log-level warn \
    >"$WORK/meta.log" 2>&1 &
META_PID=$!
PIDS+=("$META_PID")
wait_file "$WORK/meta.addr" "$META_PID"
META="tcp://$(cat "$WORK/meta.addr")"
LOCAL_PIDS=()
for i in 0 1; do
    "$BIN/mmc-local" --meta "$META" --listen tcp://127.0.0.1:0 --dram 64MB --log-level warn \
        --create-id "$i" --addr-file "$WORK/local$i.addr" >"$WORK/local$i.log" 2>&1 &
    LOCAL_PIDS+=($!)
    PIDS+=($!)
    wait_file "$WORK/local$i.addr" "$!"
done
echo "meta $META (pid $META_PID), local services pids ${LOCAL_PIDS[*]}"

echo "== load: $DURATION s"
status=0
"$BIN/mmc-soak" --meta "$META" --threads 16 --clients 4 --duration-s "$DURATION" \
    --rss-growth-max-mb "$RSS_GROWTH_MAX_MB" \
    --watch "meta:$META_PID" --watch "l0:${LOCAL_PIDS[0]}" --watch "l1:${LOCAL_PIDS[1]}" ||
    status=$?
for f in meta local0 local1; do
    n=$(grep -c . "$WORK/$f.log" || true)
    echo "$f log (warn and above): $n lines"
    if [[ $n -gt 0 ]]; then tail -n 3 "$WORK/$f.log" | cut -c1-300; fi
done
exit "$status"
