#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the frame decoder, every message type, the meta core
# and the config parsers, on the stable toolchain: the targets in fuzz/ are built by plain cargo
# with LLVM's sanitizer-coverage instrumentation (stable -C flags, no nightly, no cargo-fuzz).
#
# Usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags...]   one target, for SECONDS
#        scripts/fuzz.sh all SECONDS                           every target, SECONDS each
#        scripts/fuzz.sh list                                  the targets
#
# Each run starts from the committed seeds (fuzz/corpus/TARGET) and the inputs earlier runs
# found (fuzz/target/corpus/TARGET, not committed). A crash, a panic, an allocation past the
# harness's cap, or an input that runs longer than 10 s fails the run: the input is saved under
# fuzz/artifacts/TARGET/ and the script prints how to replay it.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../fuzz"

TARGETS=(frame msg meta_requests config_toml config_ock config_values)

usage() {
    sed -n '6,8p' "$self" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 1 ] || usage
if [ "$1" = list ]; then
    printf '%s\n' "${TARGETS[@]}"
    exit 0
fi
[ $# -ge 2 ] || usage
target=$1
seconds=$2
shift 2
[[ "$seconds" =~ ^[0-9]+$ ]] || usage
if [ "$target" = all ]; then
    [ $# -eq 0 ] || usage
    run=("${TARGETS[@]}")
else
    [[ " ${TARGETS[*]} " == *" $target "* ]] || {
        echo "unknown target '$target'; targets: ${TARGETS[*]}" >&2
        exit 2
    }
    run=("$target")
fi

# libFuzzer itself is C++, built by libfuzzer-sys's build script.
if ! command -v "${CXX:-c++}" >/dev/null 2>&1; then
    echo "installing g++ (libFuzzer is C++)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
fi

# What `cargo fuzz build --sanitizer none` passes (cargo-fuzz 0.13): libFuzzer's coverage
# counters, its table of PCs, comparison tracing, stack depth, no branch folding, one codegen unit
# (inlining survives the coverage pass). No sanitizer: -Zsanitizer needs nightly; the harness's
# allocation cap and the targets' checks stand in for what matters here. Build scripts and proc
# macros are left alone because --target is given. Debug assertions and overflow checks are on in
# fuzz/Cargo.toml's release profile.
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth \
-Ccodegen-units=1"
export CARGO_INCREMENTAL=0
start=$(date +%s)
cargo build --release --locked --target "$triple" --bins
echo "fuzz targets built in $(($(date +%s) - start)) s"

failed=()
for t in "${run[@]}"; do
    mkdir -p "target/corpus/$t" "artifacts/$t"
    echo "==> fuzz $t for ${seconds} s"
    if ! "target/$triple/release/$t" "target/corpus/$t" "corpus/$t" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 "$@" 2>"target/$t.log"; then
        tail -n 40 "target/$t.log" >&2
        echo "fuzz target $t FAILED; replay: fuzz/target/$triple/release/$t fuzz/artifacts/$t/<file>" >&2
        failed+=("$t")
        continue
    fi
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "target/$t.log" || true
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzzing failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing passed: ${run[*]} (${seconds} s each)"
