"""Mirror benchmark (issue 7), in-process, as a ratio against a baseline measured in the same
run on the same files.

P9: resync throughput of a 2-leg mirror (core log, default sync: every region copied from
    leg 0 to leg 1, from resume to the in-sync event) / os.copy_file_range of the same
    size between the same two files. Goal >= 0.8.

Also reported, for information: the same resync with a disk log (which writes the log and
flushes both legs after every region, as dm-log does), and with the destination leg
stacked behind a linear device (the bounded-buffer copy path, no copy_file_range).

Run: python bench/bench_mirror.py [--size MiB] [--region SECTORS] [--repeat N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time

from devmapper.library import DeviceMapper


def fill(path: str, size: int) -> None:
    chunk = os.urandom(8 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[:size % len(chunk)])
        f.flush()
        os.fsync(f.fileno())


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread: the resync runs in one
    return r.ru_utime + r.ru_stime


def settle(path: str) -> None:
    """Untimed: write the destination's dirty pages out, so no run pays for the last one's
    writeback."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def baseline(src: str, dst: str, size: int) -> tuple[float, float]:
    """copy_file_range of the whole size, as one copier would do it: (wall, CPU) seconds."""
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_WRONLY)
    try:
        t0, c0 = time.perf_counter(), cpu_seconds()
        done = 0
        while done < size:
            done += os.copy_file_range(fi, fo, size - done, done, done)
        return time.perf_counter() - t0, cpu_seconds() - c0
    finally:
        os.close(fi)
        os.close(fo)


def resync(src: str, dst: str, size: int, region: int, log: str | None = None,
           stacked: bool = False) -> tuple[float, float]:
    """From table load to the mirror's in-sync event: (wall, CPU) seconds."""
    with DeviceMapper.in_process() as dm:
        leg1 = dst
        if stacked:
            dm.create("x", f"0 {size // 512} linear {dst} 0")
            info = dm.info("x")
            leg1 = f"{info.major}:{info.minor}"
        kind = f"disk 2 {log} {region}" if log else f"core 1 {region}"
        t0, c0 = time.perf_counter(), cpu_seconds()
        dm.create("m", f"0 {size // 512} mirror {kind} 2 {src} 0 {leg1} 0")
        dm.wait("m", 0)  # the kernel's one event: in sync
        elapsed = time.perf_counter() - t0, cpu_seconds() - c0
        words = dm.status("m")[0].params.split()
        done, total = words[3].split("/")
        assert done == total, words
        dm.remove("m")
        if stacked:
            dm.remove("x")
        return elapsed


def fresh_log(path: str) -> str:
    with open(path, "wb") as f:
        f.truncate(1 << 20)  # no magic: a new log, every region resyncs
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024, help="MiB per leg (default 1024)")
    ap.add_argument("--region", type=int, default=32768,
                    help="region size in sectors (default 32768 = 16 MiB)")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--dir", default=None, help="where the leg files go (default: a temp dir)")
    args = ap.parse_args()
    size = args.size << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        a, b, log = (os.path.join(d, n) for n in ("a.img", "b.img", "log.img"))
        fill(a, size)
        with open(b, "wb") as f:
            f.truncate(size)
        with open(log, "wb") as f:
            f.truncate(1 << 20)
        baseline(a, b, size)  # warm the page cache for both sides alike
        base: list[tuple[float, float]] = []
        mirror: list[tuple[float, float]] = []
        for _ in range(args.repeat):  # interleaved: both see the same machine state
            settle(b)
            base.append(baseline(a, b, size))
            settle(b)
            mirror.append(resync(a, b, size, args.region))
        mib = size / (1 << 20)
        # Wall clock, best of N as bench_core.py does: other load only ever adds time. CPU
        # time (median), which a machine shared with other work does not inflate.
        bw, mw = min(w for w, _ in base), min(w for w, _ in mirror)
        bc = statistics.median(c for _, c in base)
        mc = statistics.median(c for _, c in mirror)
        print(f"leg size {mib:.0f} MiB, region {args.region} sectors, {args.repeat} runs each")
        print(f"  copy_file_range       {mib / bw:9.1f} MiB/s wall (best), "
              f"{mib / bc:9.1f} MiB/s CPU (median)")
        print(f"  mirror resync (core)  {mib / mw:9.1f} MiB/s wall (best), "
              f"{mib / mc:9.1f} MiB/s CPU (median)")
        print(f"P9 resync / copy_file_range = {bw / mw:.2f} wall, {bc / mc:.2f} CPU "
              "(goal >= 0.8)")
        extra = max(1, args.repeat // 2)
        t_disk = t_stacked = float("inf")
        for _ in range(extra):
            settle(b)
            t_disk = min(t_disk, resync(a, b, size, args.region, log=fresh_log(log))[0])
            settle(b)
            t_stacked = min(t_stacked, resync(a, b, size, args.region, stacked=True)[0])
        print(f"  info: disk log        {mib / t_disk:9.1f} MiB/s wall (best; ratio "
              f"{bw / t_disk:.2f}): a log write and two leg flushes per region")
        print(f"  info: stacked leg     {mib / t_stacked:9.1f} MiB/s wall (best; ratio "
              f"{bw / t_stacked:.2f}): the bounded-buffer copy, no copy_file_range")


if __name__ == "__main__":
    main()
