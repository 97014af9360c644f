"""Core benchmarks (issue 2), in-process, as ratios against a baseline measured in the same run.

P1: 1 MiB sequential reads through a linear device / os.preadv on the same file.
P2: 4 KiB random reads through a linear device / os.pread on the same file.
P7: 4 KiB random reads on a 100,000-target table / on a 1-target table (same file).
P2 and P7 run their loops in turn for several rounds and report medians of per-round ratios,
in CPU time and wall time (the machine is shared: CPU time is the steadier).
P10: devices created+loaded+resumed per second (10,000), and LIST_DEVICES time for them.

Run: python bench/bench_core.py
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from typing import TYPE_CHECKING

from devmapper.control.engine import EngineTransport
from devmapper.engine.core import Engine
from devmapper.library import DeviceMapper
from devmapper.uapi import TargetSpec

if TYPE_CHECKING:
    from collections.abc import Callable

FILE_SIZE = 256 << 20
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))


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

    raw()  # warm the page cache and the code paths alike
    mapped()
    t_raw, t_dev = best_of(raw), best_of(mapped)
    dev.close()
    os.close(fd)
    return FILE_SIZE / t_raw, FILE_SIZE / t_dev


def interleaved(fns: dict[str, Callable[[], None]], rounds: int
                ) -> dict[str, list[tuple[float, float]]]:
    """(CPU, wall) seconds of each function per round, the functions taking turns, so that
    load from other processes hits them alike. CPU time excludes time spent descheduled."""
    for fn in fns.values():
        fn()  # warm the page cache and the code paths alike
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            out[name].append((time.process_time() - c0, time.perf_counter() - w0))
    return out


def ratio_line(times: dict[str, list[tuple[float, float]]], num: str, den: str) -> str:
    """Median and range of per-round time ratios num/den (> 1: den is faster), CPU and wall."""
    parts = []
    for k, label in ((0, "CPU"), (1, "wall")):
        r = [a[k] / b[k] for a, b in zip(times[num], times[den], strict=True)]
        parts.append(f"{label} {statistics.median(r):.3f} ({min(r):.2f}-{max(r):.2f})")
    return ", ".join(parts)


def random_read_loops(path: str, dm: DeviceMapper, names: list[str], count: int = 100_000
                      ) -> tuple[dict[str, Callable[[], None]], Callable[[], None]]:
    """4 KiB random reads: one loop per device in ``names`` and one of os.pread on ``path``,
    all over the same offsets. Returns the loops and a function closing what they use."""
    fd = os.open(path, os.O_RDONLY)
    rnd = random.Random(1)
    size = sum(s.length for s in dm.table(names[0])) << 9
    offsets = [rnd.randrange(size >> 12) << 12 for _ in range(count)]
    buf = memoryview(bytearray(4096))

    def raw() -> None:
        pread = os.pread
        for off in offsets:
            pread(fd, 4096, off)

    def loop(read: Callable[[int, memoryview], None]) -> Callable[[], None]:
        def mapped() -> None:
            for off in offsets:
                read(off, buf)
        return mapped

    devs = [dm.open(name) for name in names]
    loops = {"pread": raw} | {name: loop(dev.read_into) for name, dev in zip(names, devs,
                                                                               strict=True)}

    def close() -> None:
        for dev in devs:
            dev.close()
        os.close(fd)

    return loops, close


def many_targets(path: str, dm: DeviceMapper, name: str, n: int, total_sectors: int,
                 shuffle: bool) -> None:
    # 4 KiB-aligned targets, so that a 4 KiB read never straddles two of them. Shuffled, no
    # two targets are contiguous on the file (a fragmented volume): nothing merges.
    per = total_sectors // n
    order = list(range(n))
    if shuffle:
        random.Random(7).shuffle(order)
    specs = [TargetSpec(i * per, per, "linear", f"{path} {order[i] * per}") for i in range(n)]
    dm.create(name, specs)


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
        # The same bytes striped: 2 stripes of 64 KiB chunks, the file's two halves.
        dm.create("str", f"0 {FILE_SIZE >> 9} striped 2 128 {path} 0 {path} {FILE_SIZE >> 10}")
        loops, close = random_read_loops(path, dm, ["lin", "str"])
        times = interleaved(loops, ROUNDS)
        close()
        print(f"P2 rand 4KiB reads, device / pread, median of {ROUNDS} rounds: "
              f"{ratio_line(times, 'pread', 'lin')} (goal >= 0.6)")
        print(f"   striped (2 x 64 KiB chunks) / linear: {ratio_line(times, 'lin', 'str')}")
        # 100,000 x 4 KiB of data (not a sparse file, whose holes read from one cache-hot
        # zero page): every read copies a page of its own, as on a real volume.
        os.unlink(path)
        many = os.path.join(d, "many.img")
        with open(many, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(-(-100_000 * 4096 >> 20)):
                f.write(chunk)
            f.truncate(100_000 * 4096)
        many_targets(many, dm, "t1", 1, 100_000 * 8, False)
        many_targets(many, dm, "tshuf", 100_000, 100_000 * 8, True)
        many_targets(many, dm, "tseq", 100_000, 100_000 * 8, False)
        loops, close = random_read_loops(many, dm, ["t1", "tshuf", "tseq"])
        times = interleaved(loops, ROUNDS)
        close()
        print(f"P7 rand 4KiB reads, 100,000 shuffled targets / 1 target, median of {ROUNDS} "
              f"rounds: {ratio_line(times, 't1', 'tshuf')} (goal >= 0.9)")
        print(f"   (100,000 targets contiguous on the file, merged by the I/O map: "
              f"{ratio_line(times, 't1', 'tseq')})")
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
