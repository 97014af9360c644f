"""Crash during resync: the engine (a child process) is killed with SIGKILL while it resyncs
a disk-log mirror under writes. The log left on disk must be truthful (every region it
calls clean has identical legs), and a reload must resync only the regions it calls dirty,
after which the legs agree and every acknowledged write reads back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devmapper.library import DeviceMapper
from devmapper.targets.dirty_log.disk import decode_log

from .mirror_helpers import MiB, read_at, target, wait_sync, write_at

SIZE = 16 * MiB
REGION = 32  # sectors: many small regions make the resync take a while


def run_child_until_killed(a: str, b: str, log: str) -> dict[int, int]:
    """Run the child until the resync is a third done, kill -9. Returns the last
    acknowledged write sequence number of each 4 KiB block."""
    child = Path(__file__).with_name("crash_child.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(child), a, b, log, str(SIZE // 512),
                             str(REGION)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    acked: dict[int, int] = {}
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            kind, x, y = line.split()
            if kind == "ACK":
                acked[int(x)] = int(y)
            elif int(y) and int(x) >= int(y) // 3:
                assert int(x) < int(y), "the resync finished before the kill"
                break
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGKILL)
        # Writes acknowledged before the kill are still in the pipe.
        for line in proc.stdout:
            kind, x, y = line.split()
            if kind == "ACK":
                acked[int(x)] = int(y)
    finally:
        proc.kill()
        proc.wait()
    return acked


def test_crash_during_resync(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    a = mkfile("a.img", SIZE, seed=21)
    b = mkfile("b.img", SIZE, seed=22)  # different: everything must resync
    log = mkfile("log.img", MiB)
    acked = run_child_until_killed(a, b, log)
    assert acked

    region_bytes = REGION * 512
    magic, version, nr, clean = decode_log(read_at(log, 0, 1024 + nr_bytes(SIZE // region_bytes)))
    assert (magic, version, nr) == (0x4D695272, 2, SIZE // region_bytes)
    dirty = [r for r, ok in enumerate(clean) if not ok]
    assert 0 < len(dirty) < nr
    # The log tells the truth: a region it calls clean is the same on both legs.
    legs_a, legs_b = read_at(a, 0, SIZE), read_at(b, 0, SIZE)
    for r, ok in enumerate(clean):
        if ok:
            s = slice(r * region_bytes, (r + 1) * region_bytes)
            assert legs_a[s] == legs_b[s], f"region {r} marked clean but legs differ"
    # Make one clean region differ on B: a resync that touched it would repair it.
    victim = next(r for r, ok in enumerate(clean) if ok)
    write_at(b, victim * region_bytes, b"\xa5" * region_bytes)

    dm.create("m", f"0 {SIZE // 512} mirror disk 2 {log} {REGION} 2 {a} 0 {b} 0")
    wait_sync(dm, "m", timeout=120)
    assert target(dm, "m").recovered == len(dirty)  # only the dirty regions resynced
    dm.remove("m")
    fixed_a, fixed_b = read_at(a, 0, SIZE), read_at(b, 0, SIZE)
    vs = slice(victim * region_bytes, (victim + 1) * region_bytes)
    assert fixed_b[vs] == b"\xa5" * region_bytes  # untouched: it was clean
    assert fixed_a[:vs.start] == fixed_b[:vs.start]
    assert fixed_a[vs.stop:] == fixed_b[vs.stop:]
    # Every acknowledged write is there, unless the writing thread's one write in flight at
    # the kill (the next sequence number; threads own blocks n % 4) replaced it.
    last = {t: max(seq for n, seq in acked.items() if n % 4 == t) for t in range(4)
            if any(n % 4 == t for n in acked)}
    for n, seq in acked.items():
        got = fixed_a[n * 4096:(n + 1) * 4096]
        assert got == bytes([got[0]]) * 4096
        assert got[0] in (seq % 251 + 1, (last[n % 4] + 1) % 251 + 1), (n, seq, got[0])


def nr_bytes(regions: int) -> int:
    return -(-regions // 64) * 8
