"""Shared helpers for the mirror tests: backing files, status parsing, waiting for sync."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from devmapper.library import DeviceMapper
from devmapper.targets.mirror import MirrorTarget

MiB = 1 << 20


def make_file(path: Path, size: int, fill: bytes | None = None, seed: int = 0) -> str:
    """A backing file of ``size`` bytes: zeros, a repeated byte, or seeded pseudo-random."""
    with open(path, "wb") as f:
        if fill is not None:
            f.write(fill * size)
        elif seed:
            f.write(random_bytes(size, seed))
        else:
            f.truncate(size)
    return str(path)


def random_bytes(n: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


@dataclass
class MirrorStatus:
    legs: list[str]
    in_sync: int
    regions: int
    health: str
    log: list[str]

    @property
    def synced(self) -> bool:
        return self.in_sync == self.regions


def parse_status(params: str) -> MirrorStatus:
    words = params.split()
    n = int(words[0])
    legs = words[1:1 + n]
    done, total = words[1 + n].split("/")
    health = words[3 + n]
    return MirrorStatus(legs, int(done), int(total), health, words[4 + n:])


def status(dm: DeviceMapper, name: str, index: int = 0) -> MirrorStatus:
    return parse_status(dm.status(name)[index].params)


def wait_sync(dm: DeviceMapper, name: str, timeout: float = 30.0, index: int = 0) -> MirrorStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = status(dm, name, index)
        if st.synced:
            return st
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not in sync after {timeout} s: {st}")
        time.sleep(0.01)


def target(dm: DeviceMapper, name: str, index: int = 0) -> MirrorTarget:
    """The live mirror target object of an in-process engine's device."""
    engine = dm.transport.engine  # type: ignore[attr-defined]
    md = engine.by_name[name]
    assert md.live is not None
    t = md.live.targets[index]
    assert isinstance(t, MirrorTarget)
    return t


def wait_log_idle(dm: DeviceMapper, name: str, timeout: float = 10.0) -> None:
    """Until the disk log has nothing left to write and no write in progress (kmirrord's
    log write flushes the legs first: suspending a leg under it would stall it)."""
    from devmapper.targets.dirty_log.disk import DiskLog

    log = target(dm, name).log
    assert isinstance(log, DiskLog)
    deadline = time.monotonic() + timeout
    while True:
        with log._io_lock:
            if not (log.touched_cleaned or log.touched_dirtied):
                return
        assert time.monotonic() < deadline, "disk log never went idle"
        time.sleep(0.01)


def read_at(path: str, offset: int, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, offset)
    finally:
        os.close(fd)


def write_at(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
