"""A suspended device holds its I/O without stopping anyone else; lockfs freezes writers."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from devmapper.expose import _sys

from .helpers import (
    PythonHeavyBackend,
    SlowStorageBackend,
    SuspendableBackend,
    mounted,
    run,
)

pytestmark = pytest.mark.root

MiB = 1 << 20


def _dd_read(node: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["dd", f"if={node}", "of=/dev/null", "bs=64k", "count=16", "iflag=direct"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_suspended_device_blocks_only_itself(exposer, file_backend):
    held = file_backend("held", 4 * MiB, SuspendableBackend)
    free = file_backend("free", 4 * MiB)
    exposer.attach("held", held)
    exposer.attach("free", free)
    held.suspend()
    readers = [_dd_read(exposer.node("held")) for _ in range(3)]
    try:
        deadline = time.monotonic() + 10
        while held.blocked < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert held.blocked >= 3  # the held device's requests did reach the backend
        time.sleep(0.5)
        assert all(p.poll() is None for p in readers)

        # Another device keeps serving, and so do the control operations.
        node = exposer.node("free")
        run("dd", "if=/dev/urandom", f"of={node}", "bs=1M", "count=4", "oflag=direct", timeout=30)
        run("dd", f"if={node}", "of=/dev/null", "bs=4k", "iflag=direct", timeout=30)
        exposer.attach("late", file_backend("late", MiB))
        assert exposer.resize("free") == 4 * MiB
        assert os.stat(exposer.path("held")).st_size == 4 * MiB  # GETATTR is served too
        assert all(p.poll() is None for p in readers)
    finally:
        held.resume()
        codes = [p.wait(30) for p in readers]
    assert codes == [0, 0, 0]

    # The workers started for the held requests are spares now: they end as traffic goes on.
    assert exposer.server.threads >= 2
    deadline = time.monotonic() + 30
    while exposer.server.threads > 1 and time.monotonic() < deadline:
        run("dd", f"if={node}", "of=/dev/null", "bs=4k", "count=8", "iflag=direct", timeout=30)
        time.sleep(0.05)
    assert exposer.server.threads == 1


def test_freeze_blocks_writers_until_thaw(exposer, file_backend, dirs):
    exposer.attach("fz", file_backend("fz", 32 * MiB))
    node = exposer.node("fz")
    assert exposer.freeze("fz") is None  # nothing mounted: nothing to freeze
    run("mkfs.ext4", "-q", "-F", node)
    with mounted(node, os.path.join(dirs["base"], "fzmnt")) as mnt:
        assert exposer.freeze("fz") == mnt
        writer = subprocess.Popen(
            ["dd", "if=/dev/zero", f"of={mnt}/file", "bs=64k", "count=4", "conv=fsync"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            assert writer.poll() is None  # held by the frozen filesystem
        finally:
            assert exposer.thaw("fz") == mnt
        assert writer.wait(30) == 0
        assert os.path.getsize(f"{mnt}/file") == 4 * 65536
        assert exposer.thaw("fz") is None or True  # thawing twice is harmless


def test_server_threads_are_io_flushers(exposer, file_backend):
    exposer.attach("fl", file_backend("fl", MiB))
    run("dd", f"if={exposer.node('fl')}", "of=/dev/null", "bs=4k", "iflag=direct")
    if not _sys.has_capability(_sys.CAP_SYS_RESOURCE):
        assert exposer.io_flusher is False  # refused, and the server said so
        pytest.skip("PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE, which this process lacks")
    assert exposer.io_flusher and _sys.task_is_io_flusher()
    flagged = sum(_sys.task_is_io_flusher(int(t)) for t in os.listdir("/proc/self/task"))
    assert flagged >= 2  # the caller and at least one FUSE worker


def _fio_randread(node: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["fio", "--name=pool", f"--filename={node}", "--rw=randread", "--bs=4k", "--iodepth=16",
         "--ioengine=libaio", "--direct=1", "--time_based", "--runtime=40"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _pool_sizes(server: object, seconds: float) -> list[int]:
    sizes = []
    for _ in range(int(seconds / 0.05)):
        sizes.append(server.threads)  # type: ignore[attr-defined]
        time.sleep(0.05)
    return sizes


def test_workers_that_only_share_the_gil_end(make_exposer, file_backend):
    # Requests whose every microsecond holds the GIL (here 100 us of Python each, as with a
    # target heavy in Python) are served no faster by two workers than by one, on any machine,
    # busy or idle. A pool grown past one (as for a moment of starvation) shrinks back while
    # the load goes on. The old estimate of the GIL's room (10 us per request) took these few
    # requests for a GIL with room, and kept every worker.
    exposer = make_exposer("raw")  # the /dev/fuse workers' pool (io_uring has none at work)
    exposer.attach("gil", file_backend("gil", 64 * MiB, PythonHeavyBackend))
    server = exposer.server
    fio = _fio_randread(exposer.node("gil"))
    try:
        time.sleep(0.5)
        for _ in range(2):
            server._grow()
        assert server.threads >= 3
        deadline = time.monotonic() + 20
        while server.threads > 1 and time.monotonic() < deadline and fio.poll() is None:
            time.sleep(0.05)
        assert server.threads == 1
        # It stays at one but while a trial of a second worker measures (0.2 s of busy time,
        # then every 1, 2, 4 ... 16 s): one worker nearly all the time.
        sizes = _pool_sizes(server, 4)
        assert sizes.count(1) >= 0.75 * len(sizes), sizes
        assert fio.poll() is None
    finally:
        fio.terminate()
        fio.wait(30)


def test_a_second_worker_that_serves_more_stays(make_exposer, file_backend):
    # Requests that wait for slow storage without the GIL (300 us each) are served twice as
    # fast by two workers: the pool grows to two and keeps them, checking now and then that
    # one would not do.
    exposer = make_exposer("raw")
    exposer.attach("slow", file_backend("slow", 64 * MiB, SlowStorageBackend))
    server = exposer.server
    fio = _fio_randread(exposer.node("slow"))
    try:
        deadline = time.monotonic() + 20
        while server.threads < 2 and time.monotonic() < deadline and fio.poll() is None:
            time.sleep(0.05)
        assert server.threads == 2
        sizes = _pool_sizes(server, 4)
        assert max(sizes) == 2  # _ACTIVE_MAX: no more by the trials, none of them stuck
        assert sizes.count(2) >= 0.75 * len(sizes), sizes
        assert server.sizer.trials >= 1
        assert fio.poll() is None
    finally:
        fio.terminate()
        fio.wait(30)
