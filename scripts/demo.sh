#!/usr/bin/env bash
# A real session on the default backend: the kernel's device-mapper when it has one, else
# our engine daemon (started on first use). Creates an LVM-style layout (a striped
# "base-real", its snapshot-origin "base"), puts ext4 on it, takes a consistent snapshot
# of the mounted filesystem (suspend freezes it), shows both, checks them, cleans up.
set -euo pipefail
# Devices, loops and mounts need root: as another user, run again under sudo.
[ "$(id -u)" = 0 ] || exec sudo bash "$0" "$@"
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
DMSETUP=(python3 -m devmapper.cli.dmsetup)
dm() { echo "+ dmsetup $*" >&2; "${DMSETUP[@]}" "$@"; }

work=$(mktemp -d /var/tmp/devmapper-demo.XXXXXX)
cleanup() {
    set +e
    umount "$work/snap" "$work/base" 2>/dev/null
    for d in demo-snap demo-base demo-base-real; do "${DMSETUP[@]}" remove "$d" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/base" "$work/snap"
truncate -s 128M "$work/pv0.img" "$work/pv1.img"
truncate -s 64M "$work/cow.img"
size=$((2 * 128 * 1024 * 2))  # sectors: two 128 MiB stripes

dm create demo-base-real --table "0 $size striped 2 128 $work/pv0.img 0 $work/pv1.img 0"
dm create demo-base --table "0 $size snapshot-origin /dev/mapper/demo-base-real"
mkfs.ext4 -q -F /dev/mapper/demo-base
mount /dev/mapper/demo-base "$work/base"
echo "written before the snapshot" > "$work/base/story"

# LVM's way: suspend the origin (lockfs freezes ext4), add the snapshot, resume.
dm suspend demo-base
dm create demo-snap --table "0 $size snapshot /dev/mapper/demo-base-real $work/cow.img P 8"
dm resume demo-base
echo "written after the snapshot" > "$work/base/story"
sync

mount -o ro /dev/mapper/demo-snap "$work/snap"
echo "origin:   $(cat "$work/base/story")"
echo "snapshot: $(cat "$work/snap/story")"
dm ls --tree
dm status
umount "$work/snap" "$work/base"
fsck.ext4 -fn /dev/mapper/demo-snap >/dev/null 2>&1 && echo "snapshot filesystem: clean"
fsck.ext4 -fn /dev/mapper/demo-base >/dev/null 2>&1 && echo "origin filesystem: clean"
