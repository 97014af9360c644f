#!/usr/bin/env bash
# Install what the tests need, then run the whole suite (the QEMU kernel tier included).
set -euo pipefail
# Devices, loops and mounts need root: as another user, run again under sudo.
[ "$(id -u)" = 0 ] || exec sudo bash "$0" "$@"
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
ruff check src tests bench scripts
mypy src/devmapper
exec python3 -m pytest -q -p no:cacheprovider "$@"
