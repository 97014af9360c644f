"""P3/P4: /dev/mapper/X served by devmapperd (FUSE + loop) vs a loop device attached
directly to the same file, measured with fio in the same run.

P3: 1 MiB sequential direct reads (and writes), ratio goal >= 0.6.
P4: 4 KiB random direct reads (and writes) at queue depth 16, ratio goal >= 0.35.

Both sides cache the backing file alike: the baseline loop is attached plainly (losetup's
default, buffered backing I/O), as the engine reads and writes the file with preadv/pwritev.

Each job runs `--rounds` times, loop and ours interleaved; the ratio printed is the median
of the per-round ratios (the machine's load moves both sides of a round alike). Every fio
run starts after a sync, so no job times the writeback of an earlier one's dirty pages.

Run (root): python bench/bench_blockdev.py [--size-mb 512] [--runtime 5] [--rounds 3]
            [--fuse uring]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "daemon"))

from daemonlib import DaemonProc, daemon_env  # noqa: E402

JOBS = {
    "P3 seq read 1M QD1": ("read", "1M", 1),
    "P3 seq write 1M QD1": ("write", "1M", 1),
    "P4 rand read 4K QD16": ("randread", "4k", 16),
    "P4 rand write 4K QD16": ("randwrite", "4k", 16),
}


def fio(path: str, rw: str, bs: str, depth: int, runtime: int, size_mb: int) -> float:
    out = subprocess.run(
        ["fio", "--name=b", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
         f"--iodepth={depth}", "--ioengine=libaio", "--direct=1", f"--size={size_mb}M",
         f"--runtime={runtime}", "--time_based", "--output-format=json"],
        check=True, capture_output=True, text=True).stdout
    job = json.loads(out)["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return float(side["bw_bytes"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=512)
    ap.add_argument("--runtime", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fuse", choices=["raw", "uring"], default="raw",
                    help="the daemon's FUSE transport (uring: fuse.enable_uring=Y)")
    args = ap.parse_args()
    run = Path(tempfile.mkdtemp(prefix="dmb-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="dmb-", dir="/var/tmp"))
    dev_dir = run / "dev"
    (dev_dir / "mapper").mkdir(parents=True)
    backing = work / "backing.img"
    with open(backing, "wb") as f:
        for _ in range(args.size_mb):
            f.write(os.urandom(1 << 20))
    env = daemon_env(DEVMAPPER_EXPOSE="1", DM_DEV_DIR=str(dev_dir), DEVMAPPER_FUSE=args.fuse)
    daemon = DaemonProc(run, env).start()
    loop = subprocess.run(["losetup", "-f", "--show", str(backing)],
                          check=True, capture_output=True, text=True).stdout.strip()
    try:
        with daemon.dm() as dm:
            dm.create("bench", f"0 {args.size_mb * 2048} linear {backing} 0")
        node = str(dev_dir / "mapper" / "bench")
        print(f"{'job':24s} {'loop MiB/s':>11s} {'dm MiB/s':>9s} {'ratio':>6s}  rounds")
        for name, (rw, bs, depth) in JOBS.items():
            rounds = []
            for _ in range(args.rounds):
                os.sync()  # the write jobs' dirty pages are not written back in our time
                base = fio(loop, rw, bs, depth, args.runtime, args.size_mb)
                os.sync()
                ours = fio(node, rw, bs, depth, args.runtime, args.size_mb)
                rounds.append((ours / base, base, ours))
            ratio, base, ours = sorted(rounds)[len(rounds) // 2]
            each = " ".join(f"{r:.2f}" for r, _, _ in rounds)
            print(f"{name:24s} {base / 2**20:11.1f} {ours / 2**20:9.1f} {ratio:6.2f}  {each}")
    finally:
        with daemon.dm() as dm:
            dm.remove_all()
        daemon.stop()
        subprocess.run(["losetup", "-d", loop], check=False)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
