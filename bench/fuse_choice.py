"""Which FUSE server should expose devices? Measure both against plain loop on the same file.

Runs fio (libaio, O_DIRECT) on /dev/mapper/NAME served by each FUSE implementation, and on
a loop device attached straight to the backing file, all in one run:

  seq-read / seq-write   1 MiB blocks, sequential, queue depth 1 (and -qd16: depth 16)
  rand-read / rand-write 4 KiB blocks, random, queue depth 16

All contenders are attached to the same backing file at once and the runs interleave
(workload by workload, --reps rounds of every contender in turn); medians are reported, so
load from elsewhere on the machine hits all of them alike.

Two modes:
  cached  the backend does buffered preadv/pwritev; the baseline is loop with dio off. Both
          read the backing file's page cache: the pure cost of the FUSE hop.
  direct  the backend opens the file O_DIRECT; the baseline is loop with dio on. Both reach
          the disk: what a device over real storage sees.

Run as root:  python3 bench/fuse_choice.py [--mode both] [--reps 3] [--runtime 5] [--json F]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from devmapper.expose import Exposer  # noqa: E402
from devmapper.expose import loop as loopdev  # noqa: E402
from devmapper.expose.filebackend import FileBackend  # noqa: E402

WORKLOADS = {  # name: (fio rw, block size, queue depth)
    "seq-read": ("read", "1M", 1),
    "seq-write": ("write", "1M", 1),
    "seq-read-qd16": ("read", "1M", 16),
    "seq-write-qd16": ("write", "1M", 16),
    "rand-read": ("randread", "4k", 16),
    "rand-write": ("randwrite", "4k", 16),
}


def fio(device: str, workload: str, runtime: float, size_mb: int) -> dict:
    rw, bs, qd = WORKLOADS[workload]
    cmd = [
        "fio", "--name=job", f"--filename={device}", f"--rw={rw}", f"--bs={bs}",
        f"--iodepth={qd}", "--ioengine=libaio", "--direct=1", "--time_based",
        f"--runtime={runtime}", "--ramp_time=1", f"--size={size_mb}M",
        "--randrepeat=0", "--norandommap", "--output-format=json",
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index("{") :])["jobs"][0]
    side = job["write" if "write" in rw else "read"]
    return {"MBps": side["bw_bytes"] / 1e6, "iops": side["iops"]}


@contextlib.contextmanager
def targets(path: str, mode: str, impls: list[str], tmp: str) -> Iterator[dict[str, str]]:
    """Every contender attached to the same file at once, so runs can interleave."""
    direct = mode == "direct"
    with contextlib.ExitStack() as stack:
        index = loopdev.attach(path, use_dio=direct)
        stack.callback(loopdev.detach, index)
        devices = {"loop": f"/dev/loop{index}"}
        for impl in impls:
            backend = FileBackend(path, direct=direct)
            stack.callback(backend.close)
            ex = Exposer(
                os.path.join(tmp, f"fuse-{impl}"), os.path.join(tmp, f"dev-{impl}"), fuse=impl
            )
            ex.start()
            stack.callback(ex.close)
            ex.attach("bench", backend)
            devices[impl] = ex.node("bench")
        yield devices


def measure(path: str, mode: str, args: argparse.Namespace, tmp: str) -> dict:
    """Medians over --reps rounds; each round runs every contender once, in turn."""
    samples: dict = {}
    with targets(path, mode, args.impl, tmp) as devices:
        for workload in args.workloads:
            for _ in range(args.reps):
                for name, device in devices.items():
                    r = fio(device, workload, args.runtime, args.size)
                    samples.setdefault(name, {}).setdefault(workload, []).append(r)
    out: dict = {}
    for name, per_workload in samples.items():
        for workload, runs in per_workload.items():
            out.setdefault(name, {})[workload] = {
                "MBps": statistics.median(r["MBps"] for r in runs),
                "iops": statistics.median(r["iops"] for r in runs),
                "runs": runs,
            }
    return out


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
    ap.add_argument("--reps", type=int, default=3, help="rounds; medians are reported")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--dir", default="/var/tmp", help="where the backing file goes (a disk)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    modes = ["cached", "direct"] if args.mode == "both" else [args.mode]
    results: dict = {"args": vars(args), "kernel": os.uname().release, "modes": {}}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="fuse-choice-") as tmp:
        path = os.path.join(tmp, "backing.img")
        make_backing(path, args.size)
        for mode in modes:
            res = measure(path, mode, args, tmp)
            results["modes"][mode] = res
            report(mode, res, args.impl, args.workloads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def report(mode: str, res: dict, impls: list[str], workloads: list[str]) -> None:
    base_name = "loop dio=on" if mode == "direct" else "loop dio=off"
    print(f"\n## mode {mode} (baseline: {base_name})", flush=True)
    head = f"| {'workload':10} | {'baseline':>16} |"
    head += "".join(f" {impl:>16} | {'ratio':>5} |" for impl in impls)
    print(head)
    print("|" + "---|" * (2 + 2 * len(impls)))
    for w in workloads:
        unit, key = ("MB/s", "MBps") if w.startswith("seq") else ("IOPS", "iops")
        base = res["loop"][w][key]
        line = f"| {w:10} | {base:>11.0f} {unit} |"
        for impl in impls:
            v = res[impl][w][key]
            line += f" {v:>11.0f} {unit} | {v / base:>5.2f} |"
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
