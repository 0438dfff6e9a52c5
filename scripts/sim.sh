#!/usr/bin/env bash
# The whole-cluster deterministic simulation: meta core, local services and clients (the real
# sans-IO cores) on a simulated network and clock, from a seed, with faults; invariants after
# every step.
#
# Usage: scripts/sim.sh [--seed N] [--seeds K] [--steps N] [--canary] [--rdma]
#   --seed N    the first seed (default: $MMC_SIM_SEED, else from the clock; printed either way)
#   --seeds K   run K consecutive seeds (default 1)
#   --steps N   events per seed (default 100000)
#   --canary    switch the epoch fence off on purpose: the run must FAIL (exit non-zero)
#   --rdma      half the copies to other hosts go one-sided, lowered to work requests as the
#               RDMA transport does (dataplane/core/src/sim/rdma.rs)
# Exit 0 when every invariant held; on a failure it prints the seed and step to replay.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --release -q -p mmc-core --bin mmc-sim
exec "${CARGO_TARGET_DIR:-target}/release/mmc-sim" "$@"
