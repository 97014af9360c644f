"""LVM's snapshot layout end to end on real block devices (issue 6).

base-real (linear), base (snapshot-origin of base-real), snap (snapshot of base-real): a
snapshot of a mounted ext4 taken with lockfs mounts read-only and passes fsck; merging the
snapshot back (snapshot-merge) restores the old content.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from blockdevlib import Served, run

MiB = 1 << 20
SIZE = 64 * MiB // 512


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def test_snapshot_of_mounted_ext4_then_merge(served: Served,
                                            mountpoint: Callable[[str], str]) -> None:
    pv, cow = served.file("pv.img", 64 * MiB), served.file("cow.img", 32 * MiB)
    base, snap = mountpoint("base"), mountpoint("snap")
    with served.dm() as dm:
        dm.create("vg-base-real", f"0 {SIZE} linear {pv} 0")
        real = served.node("vg-base-real")
        dm.create("vg-base", f"0 {SIZE} snapshot-origin {real}")
        run("mkfs.ext4", "-q", "-F", served.node("vg-base"))
        run("mount", served.node("vg-base"), base)
        with open(os.path.join(base, "story"), "w") as f:
            f.write("before\n")
        # lvcreate -s: suspend the origin (lockfs freezes ext4), add the snapshot, resume.
        dm.suspend("vg-base")
        dm.create("vg-snap", f"0 {SIZE} snapshot {real} {cow} P 8")
        dm.resume("vg-base")
        with open(os.path.join(base, "story"), "w") as f:
            f.write("after\n")
        os.sync()
        run("mount", "-o", "ro", served.node("vg-snap"), snap)
        assert read(os.path.join(snap, "story")) == "before\n"
        assert read(os.path.join(base, "story")) == "after\n"
        run("umount", snap)
        run("fsck.ext4", "-fn", served.node("vg-snap"))
        status = dm.status("vg-snap")[0].params
        alloc, total = status.split()[0].split("/")
        assert 0 < int(alloc) < int(total)

        # lvconvert --merge after unmount: the origin becomes snapshot-merge of the COW.
        run("umount", base)
        dm.remove("vg-snap")
        dm.suspend("vg-base")
        dm.load("vg-base", f"0 {SIZE} snapshot-merge {real} {cow} P 8")
        dm.resume("vg-base")
        deadline = time.monotonic() + 60
        while True:
            alloc_meta = dm.status("vg-base")[0].params.split()
            used, meta = alloc_meta[0].split("/")[0], alloc_meta[1]
            if used == meta or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert used == meta, alloc_meta
        dm.suspend("vg-base")
        dm.load("vg-base", f"0 {SIZE} linear {real} 0")
        dm.resume("vg-base")
        run("fsck.ext4", "-fn", served.node("vg-base"))
        run("mount", "-o", "ro", served.node("vg-base"), base)
        assert read(os.path.join(base, "story")) == "before\n"
        run("umount", base)
