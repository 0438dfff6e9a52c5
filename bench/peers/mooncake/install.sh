#!/usr/bin/env bash
# Install Mooncake Store (the PyPI wheel `mooncake-transfer-engine-non-cuda`, pinned) into a Python
# venv, for mmc-bench's Mooncake peer rows. Idempotent: a venv that already has the pinned
# version is left as it is.
#
#   bash bench/peers/mooncake/install.sh VENV_DIR
#
# The wheel's binaries load libibverbs, librdmacm and libnuma even for TCP: on Debian,
# scripts/bench.sh installs libibverbs1 librdmacm1 libnuma1 (and python3-venv) first.
set -euo pipefail

VENV="${1:?usage: install.sh VENV_DIR}"
PACKAGE="mooncake-transfer-engine-non-cuda"
VERSION="0.3.13.post1"

if [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -m pip show "$PACKAGE" 2>/dev/null | grep -qx "Version: $VERSION"; then
    echo "mooncake: $PACKAGE $VERSION already in $VENV" >&2
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$PACKAGE==$VERSION"
for bin in mooncake_master mooncake_http_metadata_server; do
    [[ -x "$VENV/bin/$bin" ]] || { echo "mooncake: $VENV/bin/$bin missing after install" >&2; exit 1; }
done
"$VENV/bin/python" -c 'from mooncake.store import MooncakeDistributedStore' ||
    { echo "mooncake: the store module does not load (missing libibverbs / librdmacm / libnuma?)" >&2; exit 1; }
echo "mooncake: $PACKAGE $VERSION installed in $VENV" >&2
