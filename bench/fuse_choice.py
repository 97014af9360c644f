"""Which FUSE server should expose devices? Measure both against plain loop on the same file.

Runs fio (libaio, O_DIRECT) on /dev/mapper/NAME served by each FUSE implementation, and on
a loop device attached straight to the backing file, all in one run:

  seq-read / seq-write   1 MiB blocks, sequential, queue depth --seq-qd (default 1)
  rand-read / rand-write 4 KiB blocks, random, queue depth 16

Two modes:
  cached  the backend does buffered preadv/pwritev; the baseline is loop with dio off. Both
          read the backing file's page cache: the pure cost of the FUSE hop.
  direct  the backend opens the file O_DIRECT; the baseline is loop with dio on. Both reach
          the disk: what a device over real storage sees.

Run as root:  python3 bench/fuse_choice.py [--mode both] [--runtime 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from devmapper.expose import Exposer  # noqa: E402
from devmapper.expose import loop as loopdev  # noqa: E402
from devmapper.expose.filebackend import FileBackend  # noqa: E402

WORKLOADS = {
    "seq-read": ("read", "1M"),
    "seq-write": ("write", "1M"),
    "rand-read": ("randread", "4k"),
    "rand-write": ("randwrite", "4k"),
}


def fio(device: str, workload: str, runtime: float, seq_qd: int, size_mb: int) -> dict:
    rw, bs = WORKLOADS[workload]
    qd = 16 if rw.startswith("rand") else seq_qd
    cmd = [
        "fio", "--name=job", f"--filename={device}", f"--rw={rw}", f"--bs={bs}",
        f"--iodepth={qd}", "--ioengine=libaio", "--direct=1", "--time_based",
        f"--runtime={runtime}", "--ramp_time=1", f"--size={size_mb}M",
        "--randrepeat=0", "--norandommap", "--output-format=json",
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{") :])["jobs"][0]
    side = job["write" if "write" in rw else "read"]
    return {
        "MBps": side["bw_bytes"] / 1e6,
        "iops": side["iops"],
        "lat_us": side["clat_ns"]["mean"] / 1e3,
    }


def run_all(device: str, args: argparse.Namespace) -> dict:
    return {w: fio(device, w, args.runtime, args.seq_qd, args.size) for w in WORKLOADS}


def baseline(path: str, dio: bool, args: argparse.Namespace) -> dict:
    index = loopdev.attach(path, use_dio=dio)
    try:
        return run_all(f"/dev/loop{index}", args)
    finally:
        loopdev.detach(index)


def exposed(path: str, impl: str, direct: bool, args: argparse.Namespace, tmp: str) -> dict:
    backend = FileBackend(path, direct=direct)
    ex = Exposer(os.path.join(tmp, f"fuse-{impl}"), os.path.join(tmp, "dev"), fuse=impl)
    ex.start()
    try:
        ex.attach("bench", backend)
        return run_all(ex.node("bench"), args)
    finally:
        ex.close()
        backend.close()


def make_backing(path: str, size_mb: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb") as f:  # warm the page cache for the cached mode
        while f.read(8 << 20):
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=["cached", "direct", "both"], default="both")
    ap.add_argument("--impl", nargs="+", default=["raw", "mfusepy"])
    ap.add_argument("--runtime", type=float, default=5)
    ap.add_argument("--size", type=int, default=512, help="backing file MiB")
    ap.add_argument("--seq-qd", type=int, default=1)
    ap.add_argument("--dir", default="/var/tmp", help="where the backing file goes (a disk)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    modes = ["cached", "direct"] if args.mode == "both" else [args.mode]
    results: dict = {"args": vars(args), "kernel": os.uname().release, "modes": {}}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="fuse-choice-") as tmp:
        path = os.path.join(tmp, "backing.img")
        make_backing(path, args.size)
        for mode in modes:
            direct = mode == "direct"
            res = {"loop": baseline(path, direct, args)}
            for impl in args.impl:
                res[impl] = exposed(path, impl, direct, args, tmp)
            results["modes"][mode] = res
            report(mode, res, args.impl)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def report(mode: str, res: dict, impls: list[str]) -> None:
    base_name = "loop dio=on" if mode == "direct" else "loop dio=off"
    print(f"\n## mode {mode} (baseline: {base_name})", flush=True)
    head = f"| {'workload':10} | {'baseline':>16} |"
    head += "".join(f" {impl:>16} | {'ratio':>5} |" for impl in impls)
    print(head)
    print("|" + "---|" * (2 + 2 * len(impls)))
    for w in WORKLOADS:
        unit, key = ("MB/s", "MBps") if w.startswith("seq") else ("IOPS", "iops")
        base = res["loop"][w][key]
        line = f"| {w:10} | {base:>11.0f} {unit} |"
        for impl in impls:
            v = res[impl][w][key]
            line += f" {v:>11.0f} {unit} | {v / base:>5.2f} |"
        print(line, flush=True)
    time.sleep(0)


if __name__ == "__main__":
    sys.exit(main())
