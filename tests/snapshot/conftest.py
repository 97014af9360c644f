"""Fixtures for the snapshot tests: an in-process engine and scratch image files."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from snaphelpers import (  # noqa: E402
    COW_SIZE,
    ORIGIN_SIZE,
    Env,
    fast_dir,
    make_file,
    random_bytes,
)

from devmapper.library import DeviceMapper  # noqa: E402


@pytest.fixture
def env() -> Iterator[Env]:
    import shutil

    d = fast_dir()
    data = random_bytes(ORIGIN_SIZE, 1)
    dm = DeviceMapper.in_process()
    e = Env(dm, d, make_file(d / "origin.img", ORIGIN_SIZE, data),
            make_file(d / "cow.img", COW_SIZE), data)
    try:
        yield e
    finally:
        for _ in range(3):
            for dev in dm.list():
                try:
                    dm.remove(dev.name)
                except OSError:
                    pass
        dm.close()
        shutil.rmtree(d, ignore_errors=True)
