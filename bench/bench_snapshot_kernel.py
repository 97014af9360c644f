"""P8 on the real kernel: the ground truth for bench_snapshot.py's first-write ratio.

Boots the real kernel under QEMU (tests/kernel/guest.py) and measures, inside it, LVM's
layout on loop devices over tmpfs images: base-real (linear), base (snapshot-origin) and
snap (snapshot of base-real, persistent store, 4 KiB chunks). fio writes each 4 KiB block of
32 MiB once, at random, direct, queue depth 1, to base with the snapshot (every write a
first write) and without it; the ratio of the two rates is P8 as the kernel's dm-snapshot
achieves it. Without KVM the guest runs under TCG, which slows both sides alike but not
every kernel path alike: read the ratio as a reference, not as a goal of its own.

Run (root): python bench/bench_snapshot_kernel.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "kernel"))

from guest import Guest  # noqa: E402

SCRIPT = r"""
set -e
modprobe dm-snapshot
d=$(mktemp -d); mount -t tmpfs tmpfs "$d"
dd if=/dev/urandom of="$d/origin.img" bs=1M count=64 status=none
dd if=/dev/zero of="$d/cow.img" bs=1M count=80 status=none
O=$(losetup -f --show "$d/origin.img"); C=$(losetup -f --show "$d/cow.img")
S=$((64 * 2048))
writes() {
    fio --name=w --filename=/dev/mapper/p8-base --rw=randwrite --bs=4k --iodepth=1 \
        --ioengine=psync --direct=1 --size=32M --randrepeat=0 --output-format=terse \
        | awk -F';' '{print $49}'
}
dmsetup create p8-base-real --table "0 $S linear $O 0"
dmsetup create p8-base --table "0 $S snapshot-origin /dev/mapper/p8-base-real"
plain=$(writes)
dd if=/dev/zero of="$C" bs=1M count=1 conv=notrunc status=none
dmsetup suspend p8-base
dmsetup create p8-snap --table "0 $S snapshot /dev/mapper/p8-base-real $C P 8"
dmsetup resume p8-base
snap=$(writes)
echo "$plain $snap $(dmsetup status p8-snap)"
dmsetup remove --retry p8-snap p8-base p8-base-real
losetup -d "$O" "$C"; umount "$d"; rmdir "$d"
"""


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    ratios = []
    with Guest() as g:
        print(f"kernel {g.run('uname -r').out.decode().strip()} in QEMU (booted in "
              f"{g.boot_seconds:.0f} s); 8192 first writes of 4 KiB per layout")
        print(f"{'round':>5} {'no snapshot':>12} {'snapshot P':>11} {'ratio':>6}  snap status")
        for r in range(args.rounds):
            res = g.run(f"bash -c {_quote(SCRIPT)}", timeout=600)
            if res.rc:
                sys.stderr.write(res.err.decode())
                return 1
            plain, snap, *status = res.out.decode().split()
            ratio = float(snap) / float(plain)
            ratios.append(ratio)
            print(f"{r + 1:>5} {plain:>10}/s {snap:>9}/s {ratio:6.3f}  {' '.join(status)}")
    print(f"P8 on the kernel, median over rounds: {statistics.median(ratios):.3f}")
    return 0


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
