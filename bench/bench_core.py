"""Core benchmarks (issue 2), in-process, as ratios against a baseline measured in the same run.

P1: 1 MiB sequential reads through a linear device / os.preadv on the same file.
P2: 4 KiB random reads through a linear device / os.pread on the same file.
P7: 4 KiB random reads on a 100,000-target table / on a 1-target table.
P10: devices created+loaded+resumed per second (10,000), and LIST_DEVICES time for them.

Run: python bench/bench_core.py
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time

from devmapper.control.engine import EngineTransport
from devmapper.engine.core import Engine
from devmapper.library import DeviceMapper
from devmapper.uapi import TargetSpec

FILE_SIZE = 256 << 20


def best_of(fn, repeat: int = 5) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def seq_reads(path: str, dm: DeviceMapper) -> tuple[float, float]:
    fd = os.open(path, os.O_RDONLY)
    buf = memoryview(bytearray(1 << 20))
    n = FILE_SIZE >> 20

    def raw() -> None:
        for i in range(n):
            os.preadv(fd, (buf,), i << 20)

    dev = dm.open("lin")
    read = dev.read_into

    def mapped() -> None:
        for i in range(n):
            read(i << 20, buf)

    raw(), mapped()  # warm the page cache and the code paths alike
    t_raw, t_dev = best_of(raw), best_of(mapped)
    dev.close()
    os.close(fd)
    return FILE_SIZE / t_raw, FILE_SIZE / t_dev


def random_reads(path: str, dm: DeviceMapper, name: str, count: int = 200_000
                 ) -> tuple[float, float]:
    fd = os.open(path, os.O_RDONLY)
    rnd = random.Random(1)
    size = sum(s.length for s in dm.table(name)) << 9
    offsets = [rnd.randrange(size >> 12) << 12 for _ in range(count)]
    buf = memoryview(bytearray(4096))

    def raw() -> None:
        pread = os.pread
        for off in offsets:
            pread(fd, 4096, off)

    dev = dm.open(name)
    read = dev.read_into

    def mapped() -> None:
        for off in offsets:
            read(off, buf)

    t_raw, t_dev = best_of(raw, 3), best_of(mapped, 3)
    dev.close()
    os.close(fd)
    return count / t_raw, count / t_dev


def many_targets(path: str, dm: DeviceMapper, n: int, total_sectors: int) -> None:
    # 4 KiB-aligned targets, so that a 4 KiB read never straddles two of them.
    per = total_sectors // n
    specs = [TargetSpec(i * per, per, "linear", f"{path} {i * per}") for i in range(n)]
    dm.create(f"t{n}", specs)


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as d:
        path = os.path.join(d, "backing.img")
        with open(path, "wb") as f:
            for _ in range(FILE_SIZE >> 20):
                f.write(os.urandom(1 << 20))
        dm = DeviceMapper(EngineTransport(Engine()))
        dm.create("lin", f"0 {FILE_SIZE >> 9} linear {path} 0")
        raw, dev = seq_reads(path, dm)
        print(f"P1 seq 1MiB reads: preadv {raw / 2**20:.0f} MiB/s, device {dev / 2**20:.0f} "
              f"MiB/s, ratio {dev / raw:.3f} (goal >= 0.95)")
        raw, dev = random_reads(path, dm, "lin")
        print(f"P2 rand 4KiB reads: pread {raw:.0f}/s, device {dev:.0f}/s, ratio "
              f"{dev / raw:.3f} (goal >= 0.6)")
        sparse = os.path.join(d, "sparse.img")
        with open(sparse, "wb") as f:
            f.truncate(100_000 * 4096)
        many_targets(sparse, dm, 1, 100_000 * 8)
        many_targets(sparse, dm, 100_000, 100_000 * 8)
        _, one = random_reads(sparse, dm, "t1")
        _, many = random_reads(sparse, dm, "t100000")
        print(f"P7 rand 4KiB reads: 1 target {one:.0f}/s, 100,000 targets {many:.0f}/s, "
              f"ratio {many / one:.3f} (goal >= 0.9)")
        dm.remove_all()
        dm.close()

    dm = DeviceMapper(EngineTransport(Engine()))
    n = 10_000
    t0 = time.perf_counter()
    for i in range(n):
        dm.create(f"dev{i:05d}", "0 8 zero")
    t_create = time.perf_counter() - t0
    t_list = best_of(lambda: dm.list(), 5)
    assert len(dm.list()) == n
    print(f"P10 create+load+resume: {n / t_create:.0f} devices/s (goal >= 5000); "
          f"LIST_DEVICES of {n}: {t_list * 1000:.1f} ms (goal < 50 ms)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
