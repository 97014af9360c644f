"""The mirror's data path: writes on every leg, reads during resync, resync progress and
events, I/O to a recovering region waiting for it, suspend stopping the resync."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

from devmapper.library import DeviceMapper
from devmapper.targets.dirty_log.disk import decode_log

from .mirror_helpers import MiB, read_at, status, target, wait_log_idle, wait_sync


def test_writes_reach_every_leg(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = 8 * MiB
    legs = [mkfile(f"leg{i}.img", size) for i in range(3)]
    dm.create("m", f"0 {size // 512} mirror core 2 1024 nosync 3 "
                   + " ".join(f"{p} 0" for p in legs))
    expected = bytearray(size)
    rng = random.Random(7)
    lock = threading.Lock()

    def writer(seed: int) -> None:
        r = random.Random(seed)
        with dm.open("m") as blk:
            for _ in range(150):
                # Sector-aligned writes of any size, often spanning regions.
                off = r.randrange(0, size // 512 - 64) * 512
                data = r.randbytes(r.randrange(1, 64) * 512)
                with lock:  # the expected image follows the same order as the device
                    blk.write(off, memoryview(data))
                    expected[off:off + len(data)] = data

    threads = [threading.Thread(target=writer, args=(rng.random(),)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in legs:
        assert read_at(p, 0, size) == bytes(expected)
    with dm.open("m") as blk:
        assert blk.read(0, size) == bytes(expected)


def test_concurrent_unserialized_writes_leave_legs_identical(
        dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = 4 * MiB
    a, b = mkfile("a.img", size), mkfile("b.img", size)
    dm.create("m", f"0 {size // 512} mirror core 2 512 nosync 2 {a} 0 {b} 0")

    def writer(seed: int) -> None:
        r = random.Random(seed)
        with dm.open("m") as blk:
            for _ in range(200):
                # Disjoint 4 KiB slots per thread: any interleaving gives one answer per slot.
                slot = r.randrange(0, size // 4096 // 8) * 8 + seed
                blk.write(slot * 4096, memoryview(r.randbytes(4096)))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_at(a, 0, size) == read_at(b, 0, size)


def test_resync_progress_and_one_event_at_completion(
        dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = 32 * MiB
    a = mkfile("a.img", size, seed=1)
    b = mkfile("b.img", size)
    dm.create("m", f"0 {size // 512} mirror core 1 128 2 {a} 0 {b} 0")
    seen = []
    while True:
        st = status(dm, "m")
        seen.append(st.in_sync)
        if st.synced:
            break
        time.sleep(0.001)
    assert seen == sorted(seen)  # progress only goes up
    assert st.regions == size // (128 * 512)
    info, _ = dm.wait("m", 0)  # returns at once: the event already happened
    assert info.event_nr == 1
    time.sleep(0.1)
    assert dm.info("m").event_nr == 1  # exactly one event, as the kernel raises
    assert read_at(a, 0, size) == read_at(b, 0, size)
    assert target(dm, "m").recovered == st.regions


def test_dmsetup_wait_follows_the_resync(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = 16 * MiB
    a, b = mkfile("a.img", size, seed=2), mkfile("b.img", size)
    c = mkfile("c.img", size)
    dm.create("x", f"0 {size // 512} linear {b} 0")
    dm.suspend("x")  # recovery blocks writing to x until we let it go
    ix = dm.info("x")
    dm.create("m", f"0 {size // 512} mirror core 1 1024 3 {a} 0 {ix.major}:{ix.minor} 0 {c} 0")
    got: list[tuple[int, str]] = []

    def waiter() -> None:
        info, _ = dm.wait("m", 0)
        got.append((info.event_nr, dm.status("m")[0].params))

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and status(dm, "m").in_sync == 0
    dm.resume("x")
    t.join(30)
    assert got and got[0][0] == 1 and " 32/32 1 AAA " in got[0][1]


def test_reads_during_resync_come_from_the_source(
        dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = 16 * MiB
    a = mkfile("a.img", size, seed=3)
    b = mkfile("b.img", size, fill=b"\xee")
    src = read_at(a, 0, size)
    dm.create("m", f"0 {size // 512} mirror core 1 64 2 {a} 0 {b} 0")
    rng = random.Random(1)
    with dm.open("m") as blk:
        while not status(dm, "m").synced:
            off = rng.randrange(0, size // 512 - 16) * 512
            assert blk.read(off, 8192) == src[off:off + 8192]
    assert read_at(b, 0, size) == src


def test_writes_during_resync_end_on_every_leg(
        dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = 16 * MiB
    a = mkfile("a.img", size, seed=4)
    b = mkfile("b.img", size, fill=b"\xee")
    expected = bytearray(read_at(a, 0, size))
    dm.create("m", f"0 {size // 512} mirror core 1 64 2 {a} 0 {b} 0")
    rng = random.Random(2)
    with dm.open("m") as blk:
        n = 0
        while not status(dm, "m").synced or n < 50:
            off = rng.randrange(0, size // 512 - 16) * 512
            data = rng.randbytes(rng.randrange(1, 16) * 512)
            blk.write(off, memoryview(data))
            expected[off:off + len(data)] = data
            n += 1
    wait_sync(dm, "m")
    assert read_at(a, 0, size) == bytes(expected)
    assert read_at(b, 0, size) == bytes(expected)


def test_io_to_a_recovering_region_waits(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    region = 1024  # sectors
    size = 8 * region * 512
    a = mkfile("a.img", size, seed=5)
    b = mkfile("b.img", size)
    dm.create("x", f"0 {size // 512} linear {b} 0")
    dm.suspend("x")  # the copy of region 0 blocks on x: region 0 stays RECOVERING
    ix = dm.info("x")
    dm.create("m", f"0 {size // 512} mirror core 1 {region} 2 {a} 0 {ix.major}:{ix.minor} 0")
    done = threading.Event()

    def write_region0() -> None:
        with dm.open("m") as blk:
            blk.write(4096, memoryview(b"R" * 4096))
        done.set()

    t = threading.Thread(target=write_region0)
    t.start()
    assert not done.wait(0.5)  # waiting for region 0's recovery
    with dm.open("m") as blk:
        # An out-of-sync region goes to the default leg alone: no wait.
        blk.write(5 * region * 512, memoryview(b"N" * 4096))
        # Reads of the recovering region come from the source at once.
        assert blk.read(0, 4096) == read_at(a, 0, 4096)
    assert not done.is_set()
    dm.resume("x")
    assert done.wait(10)
    t.join()
    wait_sync(dm, "m")
    assert read_at(b, 4096, 4096) == b"R" * 4096
    assert read_at(b, 5 * region * 512, 4096) == b"N" * 4096
    assert read_at(a, 0, size) == read_at(b, 0, size)


def test_suspend_stops_the_resync(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = 64 * MiB
    a, b = mkfile("a.img", size, seed=6), mkfile("b.img", size)
    dm.create("m", f"0 {size // 512} mirror core 1 64 2 {a} 0 {b} 0")
    dm.suspend("m")
    frozen = status(dm, "m").in_sync
    time.sleep(0.3)
    assert status(dm, "m").in_sync == frozen
    assert not [t for t in threading.enumerate() if t.name.startswith("kmirrord-")]
    dm.resume("m")
    wait_sync(dm, "m")
    assert read_at(a, 0, size) == read_at(b, 0, size)


def test_disk_log_clean_shutdown_needs_no_resync(
        dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = 8 * MiB
    a, b = mkfile("a.img", size, seed=7), mkfile("b.img", size)
    log = mkfile("log.img", MiB)
    table = f"0 {size // 512} mirror disk 2 {log} 256 2 {a} 0 {b} 0"
    dm.create("m", table)
    wait_sync(dm, "m")
    with dm.open("m") as blk:
        blk.write(100 * 512, memoryview(os.urandom(300 * 1024)))
    dm.remove("m")
    magic, version, nr, clean = decode_log(read_at(log, 0, 2048))
    assert (magic, version, nr) == (0x4D695272, 2, 64) and all(clean)
    dm.create("m", table)
    st = wait_sync(dm, "m")
    assert st.regions == 64 and target(dm, "m").recovered == 0
    assert dm.info("m").event_nr == 1  # in sync at resume: the kernel's one event


def test_disk_log_marks_a_region_dirty_before_writing(
        dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    region = 256
    size = 16 * region * 512
    a, b = mkfile("a.img", size), mkfile("b.img", size)
    log = mkfile("log.img", MiB)
    dm.create("x", f"0 {size // 512} linear {b} 0")
    ix = dm.info("x")
    dm.create("m", f"0 {size // 512} mirror disk 3 {log} {region} nosync 2 {a} 0 "
                   f"{ix.major}:{ix.minor} 0")
    assert all(decode_log(read_at(log, 0, 2048))[3])
    wait_log_idle(dm, "m")
    dm.suspend("x")  # the write to region 3 reaches a, then blocks on x
    t = threading.Thread(target=lambda: dm.open("m").write(3 * region * 512 + 512,
                                                           memoryview(b"D" * 512)))
    t.start()
    time.sleep(0.3)
    clean = decode_log(read_at(log, 0, 2048))[3]
    assert [r for r, ok in enumerate(clean) if not ok] == [3]
    assert read_at(a, 3 * region * 512 + 512, 512) == b"D" * 512
    dm.resume("x")
    t.join(10)
    dm.suspend("m")  # postsuspend writes the clean mark out
    assert all(decode_log(read_at(log, 0, 2048))[3])
    dm.resume("m")
