#!/usr/bin/env bash
# C API tests: builds libmmc (.so and .a, release), assembles a C SDK folder with headers and mmc.pc, and
# runs the C test program linked dynamically, statically, as C++, against mmc-meta/mmc-local
# processes, and under valgrind memcheck; then builds and runs the C example.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
sdk=$target/c-sdk
out=$target/c-tests
step() { printf '\n==> %s\n' "$*"; }

need=()
command -v gcc >/dev/null || need+=(gcc)
command -v g++ >/dev/null || need+=(g++)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v valgrind >/dev/null || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The SDK ships the release libmmc (what the README builds and a user links); the tests below run
# against the SDK, so they test what ships. The services the remote test talks to are the debug
# binaries test.sh already built.
# MMC_C_PROFILE=debug (default release) tests a debug libmmc instead, and ships that.
profile=${MMC_C_PROFILE:-release}
case "$profile" in
    release) lib_dir=$target/release ;;
    debug) lib_dir=$target/debug ;;
    *) echo "MMC_C_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
step "build libmmc ($profile) and the services"
cargo build --locked --profile "$([ "$profile" = debug ] && echo dev || echo release)" -p mmc-ffi --lib
# Debug libmmc too, for valgrind: on the release libmmc memcheck reports "conditional jump on
# uninitialised value" inside optimized Rust code (mmc_core's MetaOp::poll) that the debug build
# does not show, taken for optimizer artefacts; memcheck checks the debug build.
cargo build --locked -p mmc-ffi -p mmc-meta-service -p mmc-dataplane --lib --bins
cargo build --locked -p mmc-tls --features testpki --bin mmc-testpki
rm -rf "$sdk" "$out"
mkdir -p "$sdk/lib/pkgconfig" "$sdk/include" "$out"
cp "$lib_dir/libmmc.so" "$lib_dir/libmmc.a" "$sdk/lib/"
cp ffi/include/*.h "$sdk/include/"
cp ffi/mmc.pc "$sdk/lib/pkgconfig/"
export PKG_CONFIG_PATH=$sdk/lib/pkgconfig
cflags="-std=c99 -Wall -Wextra -Werror -g $(pkg-config --cflags mmc)"

step "compile: C99 shared, C99 static, C++"
gcc $cflags ffi/tests/c/test_api.c $(pkg-config --libs mmc) -o "$out/test_api_shared"
gcc $cflags ffi/tests/c/test_api.c "$sdk/lib/libmmc.a" $(pkg-config --libs-only-l --static mmc | sed 's/-lmmc//') \
    -o "$out/test_api_static"
g++ -x c++ -std=c++17 -Wall -Wextra -Werror -g $(pkg-config --cflags mmc) ffi/tests/c/test_api.c \
    $(pkg-config --libs mmc) -o "$out/test_api_cpp"
gcc $cflags examples/c/kv_layers.c $(pkg-config --libs mmc) -o "$out/kv_layers"
gcc $cflags ffi/tests/c/test_tls.c $(pkg-config --libs mmc) -o "$out/test_tls"
gcc $cflags ffi/tests/c/test_device.c $(pkg-config --libs mmc) -o "$out/test_device"
export LD_LIBRARY_PATH=$sdk/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# Free ports for the in-process meta services (one per program, so they may run in any order).
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "in-process cluster: shared library"
"$out/test_api_shared" inproc "$(port)"
step "in-process cluster: static library"
"$out/test_api_static" inproc "$(port)"
step "in-process cluster: C++"
"$out/test_api_cpp" inproc "$(port)"

step "device memory (simulated device backend): in-process cluster with an HBM pool"
MMC_DEVICE_BACKEND=sim "$out/test_device" inproc "$(port)"

step "against mmc-meta and mmc-local processes"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$target/debug/mmc-meta" --listen tcp://127.0.0.1:0 --addr-file "$work/meta" --log-level warn & pids+=($!)
for _ in $(seq 200); do [ -s "$work/meta" ] && break; sleep 0.05; done
meta="tcp://$(cat "$work/meta")"
for i in 0 1; do
    "$target/debug/mmc-local" --meta "$meta" --dram 256MB --addr-file "$work/local$i" --log-level warn & pids+=($!)
done
for i in 0 1; do for _ in $(seq 200); do [ -s "$work/local$i" ] && break; sleep 0.05; done; done
"$out/test_api_shared" remote "$meta"
MMC_DEVICE_BACKEND=sim "$out/test_device" remote "$meta"

step "TLS: in-process services, then mmc-meta / mmc-local processes with --tls flags"
"$target/debug/mmc-testpki" "$work/pki" >/dev/null
"$out/test_tls" "$work/pki" inproc "$(port)"
tlsflags=(--tls --tls-ca "$work/pki/ca.pem" --tls-crl "$work/pki/crl.pem" --tls-cert "$work/pki/node.pem"
    --tls-key "$work/pki/node-enc.key" --tls-key-pass "$work/pki/pass.txt")
"$target/debug/mmc-meta" --listen tcp://127.0.0.1:0 --addr-file "$work/tmeta" --log-level error "${tlsflags[@]}" & pids+=($!)
for _ in $(seq 200); do [ -s "$work/tmeta" ] && break; sleep 0.05; done
tmeta="tcp://$(cat "$work/tmeta")"
"$target/debug/mmc-local" --meta "$tmeta" --dram 64MB --addr-file "$work/tlocal" --log-level error "${tlsflags[@]}" & pids+=($!)
for _ in $(seq 200); do [ -s "$work/tlocal" ] && break; sleep 0.05; done
"$out/test_tls" "$work/pki" remote "$tmeta"

step "valgrind memcheck (in-process cluster, small sizes, debug libmmc)"
# Process-wide tables (the async handle map, the log subscriber) stay reachable until exit; only
# definite and indirect leaks count. Any invalid access fails the run.
LD_LIBRARY_PATH=$target/debug${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} MMC_TEST_SMALL=1 valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --show-possibly-lost=no --error-exitcode=99 "$out/test_api_shared" inproc "$(port)"

step "example: examples/c/kv_layers.c"
"$out/kv_layers" "tcp://127.0.0.1:$(port)"
