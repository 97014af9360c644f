"""Snapshot benchmarks (issue 6), in-process, as ratios against a baseline in the same run.

LVM's layout in an in-process engine: base-real (linear over an image file), base
(snapshot-origin of base-real) and, when there is one, snap (snapshot of base-real,
persistent store, 4 KiB chunks: lvcreate's default).

P8: 4 KiB first writes to the origin (every write to a chunk never written since the
    snapshot: each one copies the chunk and commits the exception, flush + FUA, before
    the write) / the same writes to the same layout without a snapshot. Goal >= 0.3.
R:  4 KiB random reads of unchanged chunks through the snapshot / the same reads of the
    origin device. Goal >= 0.9.

Also shown, for context: P8 with the transient store, and with 4 writer threads (where the
persistent store commits exceptions in groups).

Images live on tmpfs (/dev/shm) by default, so the numbers measure the engine rather than
the disk's flush latency; --dir puts them elsewhere. The COW is the image file itself;
--cow-lv puts it on a linear device over the image, as LVM does. Writes are timed in short
batches, the best batch of each layout, all configurations once per round; reads in
interleaved rounds. Each ratio is the median over rounds of that round's ratio, so a busy
machine skews both sides alike; CPU time (user + system of this process) is shown beside.

Run: python bench/bench_snapshot.py [--dir DIR] [--cow-lv] [--rounds N] [--read-rounds N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from devmapper.library import DeviceMapper

BLOCK = 4096


def _image(path: str, size: int) -> None:
    """A fully allocated image, as an LV is (a sparse file would time page allocation)."""
    zeros = bytes(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(zeros)
        f.truncate(size)


class Layout:
    """base-real + base (+ snap) in a fresh engine over fresh images."""

    def __init__(self, d: str, origin_bytes: int, store: str | None,
                 cow_lv: bool = False) -> None:
        self.dm = DeviceMapper.in_process()
        self.origin = os.path.join(d, "origin.img")
        self.cow = os.path.join(d, "cow.img")
        if not os.path.exists(self.origin):
            with open(self.origin, "wb") as f:
                chunk = random.Random(1).randbytes(1 << 20)
                for _ in range(origin_bytes >> 20):
                    f.write(chunk)
        _image(self.cow, origin_bytes + origin_bytes // 64 + (1 << 20))
        sectors = origin_bytes >> 9
        self.dm.create("base-real", f"0 {sectors} linear {self.origin} 0")
        info = self.dm.info("base-real")
        real = f"{info.major}:{info.minor}"
        self.dm.create("base", f"0 {sectors} snapshot-origin {real}")
        if store is not None:
            cow = self.cow
            if cow_lv:  # LVM's snap-cow: a linear device over the COW image
                cow_sectors = os.path.getsize(self.cow) >> 9
                self.dm.create("snap-cow", f"0 {cow_sectors} linear {self.cow} 0")
                info = self.dm.info("snap-cow")
                cow = f"{info.major}:{info.minor}"
            self.dm.suspend("base")
            self.dm.create("snap", f"0 {sectors} snapshot {real} {cow} {store} 8")
            self.dm.resume("base")

    def close(self) -> None:
        for name in ("snap", "snap-cow", "base", "base-real"):
            try:
                self.dm.remove(name)
            except OSError:
                pass
        self.dm.close()


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _timed(fn: Callable[[], None]) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def first_writes(d: str, origin_bytes: int, store: str | None, batches: list[list[int]],
                 threads: int = 1, cow_lv: bool = False) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per batch of 4 KiB writes, each to a chunk not written before,
    on one fresh layout."""
    data = memoryview(random.Random(2).randbytes(BLOCK))
    lay = Layout(d, origin_bytes, store, cow_lv)
    out = []
    try:
        dev = lay.dm.open("base")

        def run(part: list[int], write: Callable[..., None] = dev.write) -> None:
            for off in part:
                write(off, data)

        for batch in batches:
            if threads == 1:
                out.append(_timed(lambda batch=batch: run(batch)))  # type: ignore[misc]
                continue
            ts = [threading.Thread(target=run, args=(batch[i::threads],))
                  for i in range(threads)]

            def go(ts: list[threading.Thread] = ts) -> None:
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()

            out.append(_timed(go))
        dev.close()
        return out
    finally:
        lay.close()


def reads(d: str, origin_bytes: int, count: int, rounds: int, cow_lv: bool = False
          ) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """Best (wall, CPU) seconds for ``count`` 4 KiB random reads of unchanged chunks
    through snap and through base, the two interleaved over ``rounds``; and the median
    over rounds of each round's (wall, CPU) ratio base / snap."""
    lay = Layout(d, origin_bytes, "P", cow_lv)
    try:
        rng = random.Random(3)
        nblocks = origin_bytes // BLOCK
        with lay.dm.open("base") as base:
            # Some chunks changed, so the snapshot has exceptions; we read the others.
            changed = set(rng.sample(range(nblocks), nblocks // 8))
            for b in changed:
                base.write(b * BLOCK, memoryview(b"x" * BLOCK))
        unchanged = [b for b in range(nblocks) if b not in changed]
        offsets = [rng.choice(unchanged) * BLOCK for _ in range(count)]
        buf = memoryview(bytearray(BLOCK))
        devs = {name: lay.dm.open(name) for name in ("snap", "base")}
        best = {name: (float("inf"), float("inf")) for name in devs}
        ratios: list[tuple[float, float]] = []
        for r in range(rounds):
            this = {}
            for name in (("snap", "base") if r % 2 else ("base", "snap")):
                read = devs[name].read_into

                def run(read: Callable[[int, memoryview], None] = read) -> None:
                    for off in offsets:
                        read(off, buf)

                w, c = this[name] = _timed(run)
                best[name] = (min(best[name][0], w), min(best[name][1], c))
            ratios.append((this["base"][0] / this["snap"][0],
                           this["base"][1] / max(this["snap"][1], 1e-9)))
        for dev in devs.values():
            dev.close()
        return best, (_median([w for w, _c in ratios]), _median([c for _w, c in ratios]))
    finally:
        lay.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--writes", type=int, default=4096, help="first writes per layout")
    ap.add_argument("--batch", type=int, default=256, help="writes timed together")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reads", type=int, default=2000, help="reads timed together")
    ap.add_argument("--read-rounds", type=int, default=200)
    ap.add_argument("--cow-lv", action="store_true",
                    help="the COW on a linear device over its image, as LVM has it")
    args = ap.parse_args(argv)
    d = tempfile.mkdtemp(prefix="bench-snap-", dir=args.dir)
    try:
        n, batch = args.writes, args.batch
        origin_bytes = max(16 << 20, -(-n * BLOCK // (1 << 20)) << 20)
        chunks = random.Random(4).sample(range(origin_bytes // BLOCK), n)
        batches = [[c * BLOCK for c in chunks[i:i + batch]] for i in range(0, n, batch)]
        print(f"images in {d} ({'tmpfs' if d.startswith('/dev/shm') else 'disk'}), "
              f"COW {'on a linear device' if args.cow_lv else 'the image file itself'}; "
              f"{args.rounds} rounds of {n} first writes in batches of {batch}, "
              f"{args.read_rounds} rounds of {args.reads} reads; "
              f"python {sys.version.split()[0]}")
        configs = [("P8  P store, 1 thread", "P", 1, 0.3),
                   ("    N store, 1 thread", "N", 1, None),
                   ("    P store, 4 threads", "P", 4, None)]
        # Short batches, the best batch of each layout; configurations interleaved within
        # a round, so a ratio compares moments close together, and the median over rounds
        # is reported (a busy machine skews single rounds). Wall clock is the measure;
        # CPU time (this process's, user + system) is shown beside it.
        best: dict[tuple[str | None, int], tuple[float, float]] = {}
        per_round: list[dict[tuple[str | None, int], tuple[float, float]]] = []
        for _ in range(args.rounds):
            this: dict[tuple[str | None, int], tuple[float, float]] = {}
            for store, threads in ((None, 1), ("P", 1), ("N", 1), (None, 4), ("P", 4)):
                lv = args.cow_lv and store is not None
                times = first_writes(d, origin_bytes, store, batches, threads, lv)
                w, c = this[store, threads] = (min(t[0] for t in times),
                                               min(t[1] for t in times))
                old = best.get((store, threads), (w, c))
                best[store, threads] = (min(old[0], w), min(old[1], c))
            per_round.append(this)
        rows = []
        for label, store, threads, goal in configs:
            (w, _c), (rw, _rc) = best[store, threads], best[None, threads]
            wall = [r[None, threads][0] / r[store, threads][0] for r in per_round]
            cpu = [r[None, threads][1] / r[store, threads][1] for r in per_round]
            rows.append((label, batch / w, batch / rw, _median(wall), min(wall), max(wall),
                         _median(cpu), goal))
        r, (wall_r, cpu_r) = reads(d, origin_bytes, args.reads, args.read_rounds, args.cow_lv)
        (sw, _sc), (bw, _bc) = r["snap"], r["base"]
        rows.append(("R   reads of unchanged chunks", args.reads / sw, args.reads / bw,
                     wall_r, float("nan"), float("nan"), cpu_r, 0.9))
        print(f"{'':30} {'best: snap':>12} {'baseline':>11} {'ratio: median':>14} "
              f"{'(rounds)':>13} {'CPU ratio':>10}  goal")
        for label, a, b, ratio, lo, hi, cpu_ratio, goal in rows:
            g = f">= {goal}" if goal else ""
            ok = "" if goal is None else ("  ok" if ratio >= goal else "  MISSED")
            spread = f"{lo:.3f}-{hi:.3f}" if lo == lo else ""
            print(f"{label:30} {a:10,.0f}/s {b:9,.0f}/s {ratio:14.3f} {spread:>13} "
                  f"{cpu_ratio:10.3f}  {g}{ok}")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
