"""Crash consistency: kill -9 an engine in the middle of heavy writes, many times.

A child process (crash_child.py) runs LVM's snapshot layout in its own engine and hammers
the origin and the snapshot from several threads, flushing now and then, journalling every
write before and after. We kill it at a random moment, load the COW in a fresh engine and
check every 4 KiB block of both views:

- it is a well-formed block (never garbage, never half of one chunk and half of another);
- the origin view holds the initial data or an origin write to that block, the snapshot
  view the initial data or a snapshot write to it (origin writes never leak into it);
- every write acknowledged before a completed flush is there (or a later write to the same
  block); in fact every acknowledged write is, since nothing is cached in the process.

The next round continues on the same images, so recovery from a crashed COW (holes left by
uncommitted exceptions, a partly filled metadata area) is exercised too.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from crash_child import BLOCK, BLOCKS, CHUNK, block_bytes, parse_block
from snaphelpers import scratch, status_of

from devmapper.library import DeviceMapper

HERE = Path(__file__).resolve().parent
ROUNDS = int(os.environ.get("SNAPSHOT_CRASH_ROUNDS", "25"))


class Journal:
    def __init__(self, text: str) -> None:
        self.started: dict[int, tuple[str, int]] = {}
        durable: set[int] = set()
        acked: list[int] = []
        flush_start: dict[str, int] = {}
        for line in text.splitlines():
            parts = line.split()
            if parts[0] == "B":
                self.started[int(parts[1])] = (parts[2], int(parts[3]))
            elif parts[0] == "A":
                acked.append(int(parts[1]))
            elif parts[0] == "FS":
                flush_start[parts[1]] = len(acked)
            elif parts[0] == "FE":
                durable.update(acked[:flush_start[parts[1]]])
        self.acked = set(acked)
        self.durable = durable
        self.max_seq = max(self.started, default=0)
        # The newest flushed / acknowledged write per (target, block): what must be there.
        self.flushed_floor: dict[tuple[str, int], int] = {}
        self.acked_floor: dict[tuple[str, int], int] = {}
        for floor, seqs in ((self.flushed_floor, durable), (self.acked_floor, self.acked)):
            for seq in seqs:
                key = self.started[seq]
                if seq > floor.get(key, 0):
                    floor[key] = seq


def _check(d: Path, journal: Journal) -> tuple[int, int]:
    dm = DeviceMapper.in_process()
    try:
        sectors = BLOCKS * BLOCK // 512
        dm.create("base-real", f"0 {sectors} linear {d / 'origin.img'} 0")
        info = dm.info("base-real")
        dm.create("snap", f"0 {sectors} snapshot {info.major}:{info.minor} {d / 'cow.img'} P 0")
        assert dm.table("snap")[0].params.endswith(f"P {CHUNK}")
        assert status_of(dm, "snap") not in ("Invalid", "Overflow")
        views = {}
        for name, target in (("base-real", "O"), ("snap", "S")):
            with dm.open(name) as blk:
                views[target] = blk.read(0, BLOCKS * BLOCK)
    finally:
        for name in ("snap", "base-real"):
            try:
                dm.remove(name)
            except OSError:
                pass
        dm.close()
    written = 0
    for target, data in views.items():
        for b in range(BLOCKS):
            got = parse_block(data[b * BLOCK:(b + 1) * BLOCK])
            assert got is not None, f"{target} block {b}: garbage"
            who, block, seq = got
            assert block == b, f"{target} block {b} holds block {block}"
            if seq == 0:
                assert who == "I"
            else:
                assert self_consistent(journal, who, target, block, seq)
                written += 1
            assert seq >= journal.flushed_floor.get((target, b), 0), \
                f"{target} block {b}: a write flushed before the crash is missing"
            assert seq >= journal.acked_floor.get((target, b), 0), \
                f"{target} block {b}: an acknowledged write is missing"
    return written, len(journal.acked)


def self_consistent(journal: Journal, who: str, target: str, block: int, seq: int) -> bool:
    assert who == target, f"{target} block {block} holds a write meant for {who}"
    assert journal.started.get(seq) == (target, block), f"{target} block {block}: seq {seq}"
    return True


def _ready(journal: Path, start: int) -> bool:
    """Has the child written READY past ``start`` (it has set up its devices)?"""
    if not journal.exists():
        return False
    with open(journal, "rb") as f:
        f.seek(start)
        return b"READY" in f.read()


def test_kill_9_during_writes() -> None:
    rng = random.Random(int(os.environ.get("SNAPSHOT_CRASH_SEED", "1")))
    with scratch() as d:
        with open(d / "origin.img", "wb") as f:
            for b in range(BLOCKS):
                f.write(block_bytes("I", b, 0))
        with open(d / "cow.img", "wb") as f:
            f.truncate(2 << 20)
        env = dict(os.environ, PYTHONPATH=str(HERE.parent.parent / "src"))
        max_seq = 0
        for rnd in range(ROUNDS):
            jpath = d / "journal"
            start = jpath.stat().st_size if jpath.exists() else 0
            child = subprocess.Popen(
                [sys.executable, str(HERE / "crash_child.py"), str(d), str(max_seq + 1),
                 str(rnd + 1)], env=env, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while not _ready(jpath, start):
                assert child.poll() is None, child.stderr.read().decode() if child.stderr \
                    else "child died"
                assert time.monotonic() < deadline, "child never got ready"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
            child.kill()
            child.wait()
            if child.stderr is not None:
                child.stderr.close()
            journal = Journal(jpath.read_text())
            max_seq = journal.max_seq
            _check(d, journal)
        assert len(journal.acked) > 1000, "too few writes to prove anything"
        assert journal.durable, "no flush completed"
