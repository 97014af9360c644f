"""Shared fixtures: an in-process engine, the library over it, and backing files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devmapper.control.engine import EngineTransport
from devmapper.engine.core import Engine
from devmapper.library import DeviceMapper


@pytest.fixture
def engine() -> Engine:
    return Engine()


@pytest.fixture
def dm(engine: Engine) -> Iterator[DeviceMapper]:
    lib = DeviceMapper(EngineTransport(engine))
    yield lib
    lib.remove_all()
    lib.close()


@pytest.fixture
def backing(tmp_path: Path) -> Callable[..., str]:
    """make(size_bytes, fill=None) -> path of a new backing file."""
    counter = [0]

    def make(size: int, fill: bytes | None = None) -> str:
        counter[0] += 1
        path = tmp_path / f"backing{counter[0]}.img"
        with open(path, "wb") as f:
            if fill is None:
                f.truncate(size)
            else:
                f.write((fill * (size // len(fill) + 1))[:size])
        return str(path)

    return make


def read_file(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)
