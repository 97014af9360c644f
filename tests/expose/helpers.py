"""Backends and small tools the exposure tests share."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from devmapper.control.engine import EngineTransport
from devmapper.engine.core import Engine
from devmapper.expose import Exposer, _sys
from devmapper.expose.engine_hooks import EngineExposure
from devmapper.expose.filebackend import FileBackend
from devmapper.library import DeviceMapper

URING_PARAM = "/sys/module/fuse/parameters/enable_uring"


@contextlib.contextmanager
def fuse_uring_param(value: str) -> Iterator[None]:
    """fuse.enable_uring set to value (it counts at mount), as it was afterwards."""
    if not os.path.exists(URING_PARAM):
        pytest.skip("this kernel has no FUSE over io_uring (6.14+, CONFIG_FUSE_IO_URING)")
    with open(URING_PARAM) as f:
        before = f.read().strip()
    with open(URING_PARAM, "w") as f:
        f.write(value)
    try:
        yield
    finally:
        with open(URING_PARAM, "w") as f:
            f.write(before)


@contextlib.contextmanager
def engine_library(ex: Exposer) -> Iterator[DeviceMapper]:
    """The library over an in-process engine whose devices ex exposes."""
    lib = DeviceMapper(EngineTransport(Engine(exposure=EngineExposure(ex))))
    try:
        yield lib
    finally:
        lib.remove_all()
        lib.close()


class PythonHeavyBackend(FileBackend):
    """Each read first runs `python_us` of Python, as a target heavy in Python does: its
    requests hold the GIL, and more workers cannot serve them faster."""

    python_us = 100

    def read(self, offset: int, buf: memoryview) -> None:
        end = time.perf_counter() + self.python_us * 1e-6
        while time.perf_counter() < end:
            pass
        super().read(offset, buf)


class SlowStorageBackend(FileBackend):
    """Each read first waits `wait_us` without the GIL, as a read from a slow disk does:
    a second worker serves another request meanwhile."""

    wait_us = 300

    def read(self, offset: int, buf: memoryview) -> None:
        time.sleep(self.wait_us * 1e-6)
        super().read(offset, buf)


class SuspendableBackend(FileBackend):
    """A file backend whose I/O can be held, as a suspended dm device holds it."""

    def __init__(self, path: str, **kw: bool) -> None:
        super().__init__(path, **kw)
        self._running = threading.Event()
        self._running.set()
        self.blocked = 0  # calls currently held

    def suspend(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def _gate(self) -> None:
        if not self._running.is_set():
            self.blocked += 1
            try:
                self._running.wait()
            finally:
                self.blocked -= 1

    def read(self, offset: int, buf: memoryview) -> None:
        self._gate()
        super().read(offset, buf)

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        self._gate()
        super().write(offset, data, fua)

    def flush(self) -> None:
        self._gate()
        super().flush()

    # As MappedDevice's: nothing done while held (the io_uring server's thread must not wait).
    def read_nowait(self, offset: int, buf: memoryview) -> bool:
        return self._running.is_set() and super().read_nowait(offset, buf)

    def write_nowait(self, offset: int, data: memoryview, fua: bool = False) -> bool:
        return self._running.is_set() and super().write_nowait(offset, data, fua)


def make_file(path: str, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def run(*cmd: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


def getsz(node: str) -> int:
    return int(run("blockdev", "--getsz", node).stdout)


def getro(node: str) -> int:
    return int(run("blockdev", "--getro", node).stdout)


@contextlib.contextmanager
def mounted(node: str, mount_point: str, *opts: str) -> Iterator[str]:
    """mount(8) a filesystem, always unmounted afterwards (lazily if it is stuck)."""
    os.makedirs(mount_point, exist_ok=True)
    run("mount", *opts, node, mount_point)
    try:
        yield mount_point
    finally:
        try:
            _sys.umount(mount_point)
        except OSError as e:
            if e.errno != errno.EINVAL:
                _sys.umount(mount_point, _sys.MNT_DETACH)
