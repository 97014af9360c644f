#!/usr/bin/env bash
# Everything the demo and the tests need on a fresh Debian machine (run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(qemu-system-x86 linux-image-amd64 busybox-static fio fuse3 e2fsprogs xfsprogs util-linux kmod dmsetup psmisc)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v -i "warning" || true
modprobe loop 2>/dev/null || true
modprobe fuse 2>/dev/null || true
