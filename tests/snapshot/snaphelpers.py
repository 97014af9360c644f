"""Helpers for the snapshot tests: files, LVM's layout in an in-process engine, a model."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from devmapper.library import DeviceMapper

SECTOR = 512


@dataclass
class Env:
    dm: DeviceMapper
    dir: Path
    origin: Path
    cow: Path
    origin_data: bytes

    def file(self, name: str, size: int, data: bytes | None = None) -> Path:
        return make_file(self.dir / name, size, data)


ORIGIN_SIZE = 1 << 20  # 2048 sectors: the env fixture's origin
COW_SIZE = 1 << 20


def fast_dir() -> Path:
    """A scratch directory, on tmpfs when there is one (fsync there costs nothing)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="dm-snap-", dir=base))


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    d = fast_dir()
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_file(path: Path, size: int, data: bytes | None = None) -> Path:
    with open(path, "wb") as f:
        if data is not None:
            f.write(data)
        f.truncate(size)
    return path


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def dev_of(dm: DeviceMapper, name: str) -> str:
    info = dm.info(name)
    return f"{info.major}:{info.minor}"


def status_of(dm: DeviceMapper, name: str, inactive: bool = False) -> str:
    return dm.status(name, inactive=inactive)[0].params


def table_of(dm: DeviceMapper, name: str) -> str:
    return dm.table(name)[0].params


def lvm_layout(dm: DeviceMapper, origin: Path, cow: Path, sectors: int, chunk: int = 8,
               store: str = "P", name: str = "snap", features: str = "") -> str:
    """base-real (linear over the origin), base (snapshot-origin), snap; returns base-real."""
    dm.create("base-real", f"0 {sectors} linear {origin} 0")
    real = dev_of(dm, "base-real")
    dm.create("base", f"0 {sectors} snapshot-origin {real}")
    add_snapshot(dm, real, cow, sectors, chunk, store, name, features)
    return real


def add_snapshot(dm: DeviceMapper, real: str, cow: Path, sectors: int, chunk: int = 8,
                 store: str = "P", name: str = "snap", features: str = "",
                 origin_name: str = "base") -> None:
    """lvcreate -s: suspend the origin, create the snapshot, resume the origin."""
    dm.suspend(origin_name)
    try:
        table = f"0 {sectors} snapshot {real} {cow} {store} {chunk} {features}".rstrip()
        dm.create(name, table)
    finally:
        dm.resume(origin_name)


def cow_size_for(nr_chunks: int, chunk: int) -> int:
    """device-mapper-test-suite's formula for a persistent COW, in sectors."""
    epa = chunk * SECTOR // 16
    return chunk + (-(-(nr_chunks + 1) // epa) + nr_chunks) * chunk
