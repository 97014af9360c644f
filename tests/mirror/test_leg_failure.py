"""A failing leg: an `error` target under a stacked leg, or a device that starts failing.

The traces are what the real kernel did for the same steps (mirror_scenarios.KERNEL_TRACES);
test_kernel_interop.py replays them live in the QEMU guest.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Callable

import pytest

from devmapper.library import DeviceMapper

from .mirror_helpers import MiB, read_at, status, wait_sync
from .mirror_scenarios import (
    ENGINE_SCENARIOS,
    KERNEL_REQUEUE_TRACES,
    KERNEL_TRACES,
    REQUEUE_SCENARIOS,
)


@pytest.mark.parametrize("name", sorted(ENGINE_SCENARIOS))
def test_matches_the_kernel_trace(dm: DeviceMapper, mkfile: Callable[..., str],
                                  name: str) -> None:
    a, b = mkfile("a.img", 2 * MiB), mkfile("b.img", 2 * MiB)
    assert ENGINE_SCENARIOS[name](dm, a, b) == KERNEL_TRACES[name]


@pytest.mark.parametrize("name", sorted(REQUEUE_SCENARIOS))
def test_noflush_suspend_requeues_held_writes(dm: DeviceMapper, mkfile: Callable[..., str],
                                              name: str) -> None:
    """A held write is requeued at a noflush suspend and re-issued to the table live after
    the resume, as the kernel does (KERNEL_REQUEUE_TRACES, checked in the QEMU tier)."""
    a, b = mkfile("a.img", 2 * MiB), mkfile("b.img", 2 * MiB)
    assert REQUEUE_SCENARIOS[name](dm, a, b) == KERNEL_REQUEUE_TRACES[name]


def test_handle_errors_loses_nothing_acknowledged(
        dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    """Writers keep going while a leg dies; dmeventd's repair (noflush suspend, reload on
    the surviving leg) releases held writes; every acknowledged write is on the survivor."""
    size = 8 * MiB
    a, b = mkfile("a.img", size), mkfile("b.img", size)
    dm.create("x", f"0 {size // 512} linear {b} 0")
    ix = dm.info("x")
    dm.create("m", f"0 {size // 512} mirror core 2 256 nosync 2 {a} 0 "
                   f"{ix.major}:{ix.minor} 0 1 handle_errors")
    acked: dict[int, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[int] = []

    def writer(slot0: int) -> None:
        r = random.Random(slot0)
        with dm.open("m") as blk:
            while not stop.is_set():
                slot = r.randrange(0, size // 4096 // 4) * 4 + slot0
                data = r.randbytes(4096)
                try:
                    blk.write(slot * 4096, memoryview(data))
                except OSError as e:
                    failures.append(e.errno or 0)
                    continue
                with lock:
                    acked[slot] = data

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    ev = dm.info("m").event_nr
    dm.load("x", f"0 {size // 512} error")
    dm.resume("x")
    info, _ = dm.wait("m", ev)  # the failure raises an event
    assert status(dm, "m").health == "AD"
    # dmeventd's part: drop the dead leg without failing anything in flight.
    dm.suspend("m", noflush=True)
    dm.load("m", f"0 {size // 512} linear {a} 0")
    dm.resume("m")
    stop.set()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert not failures
    for slot, data in acked.items():
        assert read_at(a, slot * 4096, 4096) == data


def test_without_handle_errors_writes_go_on(dm: DeviceMapper,
                                            mkfile: Callable[..., str]) -> None:
    size = 4 * MiB
    a, b = mkfile("a.img", size), mkfile("b.img", size)
    dm.create("x", f"0 {size // 512} linear {b} 0")
    ix = dm.info("x")
    dm.create("m", f"0 {size // 512} mirror core 1 256 2 {a} 0 {ix.major}:{ix.minor} 0")
    wait_sync(dm, "m")
    dm.load("x", f"0 {size // 512} error")
    dm.resume("x")
    data = os.urandom(size)
    with dm.open("m") as blk:
        for off in range(0, size, 64 * 1024):
            blk.write(off, memoryview(data[off:off + 64 * 1024]))
        assert blk.read(0, size) == data
    st = status(dm, "m")
    assert st.health == "AD" and st.in_sync == 0
    assert dm.info("m").event_nr == 1  # no event without handle_errors
    assert read_at(a, 0, size) == data


def test_all_legs_failed_fails_the_write(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = MiB
    dm.create("x", f"0 {size // 512} error")
    dm.create("y", f"0 {size // 512} error")
    ix, iy = dm.info("x"), dm.info("y")
    dm.create("m", f"0 {size // 512} mirror core 2 256 nosync 2 {ix.major}:{ix.minor} 0 "
                   f"{iy.major}:{iy.minor} 0")
    with dm.open("m") as blk, pytest.raises(OSError) as info:
        blk.write(0, memoryview(bytes(4096)))
    assert info.value.errno == errno.EIO
    assert status(dm, "m").health == "DD"
    with dm.open("m") as blk, pytest.raises(OSError):
        blk.read(0, 4096)


def test_recovery_onto_a_failing_leg(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    """A leg that fails during resync: S for the leg, an event, the region left out of sync
    with handle_errors."""
    size = 2 * MiB
    a = mkfile("a.img", size, seed=9)
    dm.create("x", f"0 {size // 512} error")
    ix = dm.info("x")
    dm.create("m", f"0 {size // 512} mirror core 1 512 2 {a} 0 {ix.major}:{ix.minor} 0 "
                   "1 handle_errors")
    info, _ = dm.wait("m", 0)
    import time

    deadline = time.monotonic() + 5
    while status(dm, "m").health != "AS" and time.monotonic() < deadline:
        time.sleep(0.01)
    st = status(dm, "m")
    assert st.health == "AS" and st.in_sync == 0
    with dm.open("m") as blk:  # reads still come from the source
        assert blk.read(0, size) == read_at(a, 0, size)
