"""Data semantics against a simple model (hypothesis, stateful).

The model is a bytearray per device: the origin, and for each snapshot the origin's bytes
when it was taken, changed only by writes to that snapshot. Rules write the origin and the
snapshots at sector granularity, take snapshots of several chunk sizes and store types,
drop them, reload persistent ones from their COW, and merge one back into the origin the
way LVM does; after every step every device must read exactly as its model.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from snaphelpers import fast_dir, make_file, random_bytes, status_of

from devmapper.library import DeviceMapper

SIZE = 64 * 1024
SECTORS = SIZE // 512


@dataclass
class Snap:
    model: bytearray
    cow: Path
    store: str
    chunk: int


class SnapshotMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = fast_dir()
        self.dm = DeviceMapper.in_process()
        data = random_bytes(SIZE, 42)
        self.origin = bytearray(data)
        make_file(self.dir / "origin.img", SIZE, data)
        self.dm.create("base-real", f"0 {SECTORS} linear {self.dir / 'origin.img'} 0")
        info = self.dm.info("base-real")
        self.real = f"{info.major}:{info.minor}"
        self.dm.create("base", f"0 {SECTORS} snapshot-origin {self.real}")
        self.snaps: dict[str, Snap] = {}
        self.counter = 0

    def teardown(self) -> None:
        for name in list(self.snaps):
            self.dm.remove(name)
        self.dm.remove("base")
        self.dm.remove("base-real")
        self.dm.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _table(self, s: Snap, chunk: int | None = None, kind: str = "snapshot") -> str:
        c = s.chunk if chunk is None else chunk
        return f"0 {SECTORS} {kind} {self.real} {s.cow} {s.store} {c}"

    @precondition(lambda self: len(self.snaps) < 3)
    @rule(chunk=st.sampled_from([8, 16, 32]), store=st.sampled_from(["P", "PO", "N"]))
    def take_snapshot(self, chunk: int, store: str) -> None:
        self.counter += 1
        name = f"s{self.counter}"
        s = Snap(bytearray(self.origin), make_file(self.dir / f"{name}.cow", 1 << 20),
                 store, chunk)
        self.dm.suspend("base")
        self.dm.create(name, self._table(s))
        self.dm.resume("base")
        self.snaps[name] = s

    @rule(off=st.integers(0, SECTORS - 1), n=st.integers(1, 40), seed=st.integers(0, 1 << 30))
    def write_origin(self, off: int, n: int, seed: int) -> None:
        n = min(n, SECTORS - off)
        data = random.Random(seed).randbytes(n * 512)
        with self.dm.open("base") as blk:
            blk.write(off * 512, memoryview(data))
        self.origin[off * 512:(off + n) * 512] = data

    @precondition(lambda self: self.snaps)
    @rule(which=st.integers(0, 2), off=st.integers(0, SECTORS - 1), n=st.integers(1, 40),
          seed=st.integers(0, 1 << 30))
    def write_snapshot(self, which: int, off: int, n: int, seed: int) -> None:
        name = sorted(self.snaps)[which % len(self.snaps)]
        n = min(n, SECTORS - off)
        data = random.Random(seed).randbytes(n * 512)
        with self.dm.open(name) as blk:
            blk.write(off * 512, memoryview(data))
        self.snaps[name].model[off * 512:(off + n) * 512] = data

    @precondition(lambda self: self.snaps)
    @rule(which=st.integers(0, 2))
    def drop_snapshot(self, which: int) -> None:
        name = sorted(self.snaps)[which % len(self.snaps)]
        self.dm.remove(name)
        del self.snaps[name]

    @precondition(lambda self: any(s.store != "N" for s in self.snaps.values()))
    @rule(which=st.integers(0, 2))
    def reload_from_cow(self, which: int) -> None:
        """Destroy the table and build it again from the COW alone (chunk size 0)."""
        names = sorted(n for n, s in self.snaps.items() if s.store != "N")
        name = names[which % len(names)]
        s = self.snaps[name]
        self.dm.remove(name)
        self.dm.suspend("base")
        self.dm.create(name, self._table(s, chunk=0))
        self.dm.resume("base")

    @precondition(lambda self: any(s.store != "N" for s in self.snaps.values()))
    @rule(which=st.integers(0, 2))
    def merge(self, which: int) -> None:
        """lvconvert --merge: the origin takes the snapshot's data back."""
        names = sorted(n for n, s in self.snaps.items() if s.store != "N")
        name = names[which % len(names)]
        s = self.snaps.pop(name)
        self.dm.suspend(name)
        self.dm.suspend("base")
        self.dm.load("base", self._table(s, kind="snapshot-merge"))
        self.dm.resume("base")
        self.dm.remove(name)
        self._wait_merged()
        self.dm.suspend("base")
        self.dm.load("base", f"0 {SECTORS} snapshot-origin {self.real}")
        self.dm.resume("base")
        self.origin = s.model

    def _wait_merged(self) -> None:
        import time

        for _ in range(10000):
            alloc, _, meta = status_of(self.dm, "base").replace("/", " ").split()
            if alloc == meta:
                return
            time.sleep(0.001)
        raise AssertionError("merge did not finish")

    @invariant()
    def devices_match_model(self) -> None:
        with self.dm.open("base") as blk:
            assert blk.read(0, SIZE) == self.origin
        for name, s in self.snaps.items():
            with self.dm.open(name) as blk:
                assert blk.read(0, SIZE) == s.model, name


SnapshotMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_snapshot_model = SnapshotMachine.TestCase
