#!/usr/bin/env bash
# Real-device RDMA checks: where /dev/infiniband exists, build with the libibverbs binding
# (cargo feature mmc-hal/rdma), run the device tests and the RDMA integration tests over the real
# device (two mmc-local processes on one HCA, loopback queue pairs), then a bandwidth run of
# mmc-bench with --rdma-provider verbs. Elsewhere it prints why it skips and exits 0.
# Usage: scripts/rdma-check.sh            (MMC_RDMA_DEVICE / MMC_RDMA_GID_INDEX pick a device / GID)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> RDMA devices"
if command -v ibv_devices >/dev/null 2>&1; then
    ibv_devices || true
else
    echo "ibv_devices not installed (apt-get install ibverbs-utils)"
fi
if [ ! -d /dev/infiniband ]; then
    echo "skipped: /dev/infiniband does not exist (no RDMA device, or a kernel without InfiniBand/RoCE support);"
    echo "the RDMA transport is tested over the simulated NIC by 'cargo test -p mmc-dataplane --test rdma'"
    exit 0
fi

if ! { pkg-config --exists libibverbs librdmacm && [ -n "$(ls /usr/lib/llvm-*/lib/libclang*.so* 2>/dev/null)" ]; } 2>/dev/null; then
    echo "==> installing the verbs build dependencies"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        libibverbs-dev librdmacm-dev libclang-dev pkg-config ibverbs-utils >/dev/null
fi

echo "==> build with the libibverbs binding"
cargo build --release --locked -p mmc-dataplane -p mmc-meta-service -p mmc-bench --bins --features mmc-hal/rdma

echo "==> the verbs binding's device test"
cargo test --release --locked -p mmc-hal --features rdma --lib rdma -- --nocapture

echo "==> RDMA integration tests over the device (two local services, loopback queue pairs)"
MMC_RDMA_TEST_PROVIDER=verbs \
    cargo test --release --locked -p mmc-dataplane --features mmc-hal/rdma --test rdma -- --nocapture --test-threads 1

echo "==> bandwidth: mmc-bench rdma rows over the device, next to TCP"
target/release/mmc-bench --no-kv-peers --placements tcp --workloads 4k,batch-1m,batch-8m,deepseek-r1 \
    --rdma-provider verbs
