"""Fixtures for the mirror tests: an in-process engine and backing files in tmp_path."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from devmapper.library import DeviceMapper  # noqa: E402

from .mirror_helpers import make_file  # noqa: E402


@pytest.fixture
def dm() -> Iterator[DeviceMapper]:
    d = DeviceMapper.in_process()
    try:
        yield d
    finally:
        # Stacked devices go top-down: repeat until nothing more can go.
        for _ in range(4):
            for dev in d.list():
                try:
                    d.remove(dev.name)
                except OSError:
                    pass
        d.close()


@pytest.fixture
def mkfile(tmp_path: Path) -> Callable[..., str]:
    def make(name: str, size: int, fill: bytes | None = None, seed: int = 0) -> str:
        return make_file(tmp_path / name, size, fill, seed)

    return make
