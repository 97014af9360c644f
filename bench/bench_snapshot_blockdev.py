"""P8 through block devices, as users see it: our engine (devmapperd, FUSE + loop) and the
real kernel (in QEMU) run the same shell script.

LVM's layout on loop devices over tmpfs images: base-real (linear), base (snapshot-origin)
and snap (snapshot of base-real, persistent store, 4 KiB chunks). fio writes each 4 KiB block
of 32 MiB once, at random, direct, queue depth 1, to /dev/mapper/base with the snapshot
(every write a first write) and without it; the ratio of the two rates is P8. The engine's
side includes what every I/O through /dev/mapper costs (loop, FUSE, the daemon's worker),
as the kernel's includes the block layer; bench_snapshot.py measures the engine alone,
in-process, where the snapshot's own cost weighs most. Below the tables both reach the
same tmpfs images: the kernel through its loop driver, the engine by reading and writing a
loop's backing file itself (engine/underlying.py); each first write's copy and commit are
then a few syscalls on tmpfs, no longer five trips through the loop devices' queues and
their flushes (ratio 0.27 - 0.30 before, same script). The kernel runs under QEMU without
KVM (TCG), which slows both of its sides alike but not every kernel path alike: read its
ratio as a reference.

Run (root): python bench/bench_snapshot_blockdev.py [--rounds 3] [--kernel | --both]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "kernel"))

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "daemon"))

from daemonlib import DaemonProc, daemon_env  # noqa: E402
from guest import Guest  # noqa: E402

# $DMSETUP and $DM_DEV_DIR say whose device-mapper runs it.
SCRIPT = r"""
set -e
d=$(mktemp -d); mount -t tmpfs tmpfs "$d"
dd if=/dev/urandom of="$d/origin.img" bs=1M count=64 status=none
dd if=/dev/zero of="$d/cow.img" bs=1M count=80 status=none
O=$(losetup -f --show "$d/origin.img"); C=$(losetup -f --show "$d/cow.img")
S=$((64 * 2048))
writes() {
    fio --name=w --filename="$DM_DEV_DIR/mapper/p8-base" --rw=randwrite --bs=4k --iodepth=1 \
        --ioengine=psync --direct=1 --size=32M --randrepeat=0 --output-format=terse \
        | awk -F';' '{print $49}'
}
$DMSETUP create p8-base-real --table "0 $S linear $O 0"
R=$($DMSETUP info -c --noheadings -o major,minor --separator : p8-base-real)
$DMSETUP create p8-base --table "0 $S snapshot-origin $R"
plain=$(writes)
dd if=/dev/zero of="$C" bs=1M count=1 conv=notrunc status=none
$DMSETUP suspend p8-base
$DMSETUP create p8-snap --table "0 $S snapshot $R $C P 8"
$DMSETUP resume p8-base
snap=$(writes)
echo "$plain $snap $($DMSETUP status p8-snap)"
$DMSETUP remove --retry p8-snap p8-base p8-base-real
losetup -d "$O" "$C"; umount "$d"; rmdir "$d"
"""


def rounds(run: Callable[[str], tuple[int, str, str]], n: int) -> float:
    """Run the script ``n`` times through ``run`` (-> rc, stdout, stderr); print each round;
    the median ratio."""
    ratios = []
    print(f"{'round':>5} {'no snapshot':>12} {'snapshot P':>11} {'ratio':>6}  snap status")
    for r in range(n):
        rc, out, err = run(SCRIPT)
        if rc:
            raise SystemExit(f"the script failed ({rc}):\n{err}")
        plain, snap, *status = out.split()
        ratios.append(float(snap) / float(plain))
        print(f"{r + 1:>5} {plain:>10}/s {snap:>9}/s {ratios[-1]:6.3f}  {' '.join(status)}")
    return statistics.median(ratios)


def engine(n: int) -> float:
    run_dir = Path(tempfile.mkdtemp(prefix="p8-", dir="/tmp"))
    dev_dir = run_dir / "dev"
    (dev_dir / "mapper").mkdir(parents=True)
    env = daemon_env(DEVMAPPER_EXPOSE="1", DM_DEV_DIR=str(dev_dir))
    daemon = DaemonProc(run_dir, env).start()
    env.update(DEVMAPPER_SOCKET=str(daemon.socket),
               DMSETUP=f"{sys.executable} -m devmapper.cli.dmsetup")
    print(f"engine (devmapperd, FUSE + loop), python {sys.version.split()[0]}; "
          "8192 first writes of 4 KiB per layout")

    def run(script: str) -> tuple[int, str, str]:
        p = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr

    try:
        return rounds(run, n)
    finally:
        daemon.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def kernel(n: int) -> float:
    with Guest() as g:
        print(f"kernel {g.run('uname -r').out.decode().strip()} in QEMU (booted in "
              f"{g.boot_seconds:.0f} s); 8192 first writes of 4 KiB per layout")
        g.run("modprobe dm-snapshot")

        def run(script: str) -> tuple[int, str, str]:
            res = g.run(f"bash -c {shlex.quote(script)}", timeout=600,
                        env={"DMSETUP": "dmsetup", "DM_DEV_DIR": "/dev"})
            return res.rc, res.out.decode(), res.err.decode()

        return rounds(run, n)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kernel", action="store_true", help="only the kernel, in QEMU")
    ap.add_argument("--both", action="store_true", help="the engine, then the kernel")
    args = ap.parse_args(argv)
    results = {}
    if not args.kernel:
        results["engine"] = engine(args.rounds)
    if args.kernel or args.both:
        results["kernel"] = kernel(args.rounds)
    for who, ratio in results.items():
        print(f"P8 through block devices, {who}, median over rounds: {ratio:.3f}")
    return 0



if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
