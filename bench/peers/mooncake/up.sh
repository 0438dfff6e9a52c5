#!/usr/bin/env bash
# Start Mooncake Store's master and its HTTP metadata server, both on 127.0.0.1 only, for
# mmc-bench's Mooncake peer rows (TCP transport).
#
#   VENV=DIR RUN_DIR=DIR [NETNS=NAME] bash bench/peers/mooncake/up.sh
#
# With NETNS the two servers run inside that network namespace (mmc-bench makes one whose only
# interface is lo: Mooncake's client sockets bind every address, so a lo-only namespace keeps
# the whole peer off the host's network). Prints `master=127.0.0.1:PORT metadata=URL` once both
# answer; their process ids are in RUN_DIR/master.pid and RUN_DIR/metadata.pid, their logs
# beside them. Stop them by those ids (mmc-bench stops every process of its namespace).
#
# Settings (environment): MASTER_PORT (50051), METADATA_PORT (8080), MASTER_METRICS_PORT
# (9003). The master runs with this version's defaults except its metrics port, bound to
# 127.0.0.1 too. The master's embedded metadata server is not used: this version binds it to
# every address whatever its host flag says, while the standalone server takes --host.
set -euo pipefail

VENV="${VENV:?set VENV to a venv made by install.sh}"
RUN_DIR="${RUN_DIR:?set RUN_DIR to a folder for pids and logs}"
MASTER_PORT="${MASTER_PORT:-50051}"
METADATA_PORT="${METADATA_PORT:-8080}"
MASTER_METRICS_PORT="${MASTER_METRICS_PORT:-9003}"
in_ns=()
[[ -n "${NETNS:-}" ]] && in_ns=(ip netns exec "$NETNS")
mkdir -p "$RUN_DIR"

"${in_ns[@]}" "$VENV/bin/mooncake_http_metadata_server" --host 127.0.0.1 --port "$METADATA_PORT" \
    >"$RUN_DIR/metadata.log" 2>&1 &
echo $! >"$RUN_DIR/metadata.pid"
"${in_ns[@]}" "$VENV/bin/mooncake_master" --rpc_address=127.0.0.1 --rpc_port="$MASTER_PORT" \
    --metrics_host=127.0.0.1 --metrics_port="$MASTER_METRICS_PORT" \
    >"$RUN_DIR/master.log" 2>&1 &
echo $! >"$RUN_DIR/master.pid"

# Both must accept a connection within 15 s.
answers() { "${in_ns[@]}" bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
for _ in $(seq 150); do
    if answers "$MASTER_PORT" && answers "$METADATA_PORT"; then
        echo "master=127.0.0.1:$MASTER_PORT metadata=http://127.0.0.1:$METADATA_PORT/metadata"
        exit 0
    fi
    for what in master metadata; do
        if ! kill -0 "$(cat "$RUN_DIR/$what.pid")" 2>/dev/null; then
            echo "mooncake: the $what server exited; its log:" >&2
            tail -n 20 "$RUN_DIR/$what.log" >&2
            exit 1
        fi
    done
    sleep 0.1
done
echo "mooncake: master or metadata server not answering after 15 s" >&2
exit 1
