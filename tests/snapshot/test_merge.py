"""snapshot-merge: background merging while the origin stays readable and writable."""

from __future__ import annotations

import random
import re
import threading
import time

from snaphelpers import Env, add_snapshot, lvm_layout, status_of, table_of

SECTORS = 2048
CHUNK = 4096


def _start_merge(env: Env, real: str, name: str = "snap", chunk: int = 8) -> None:
    """lvconvert --merge: snapshot-merge replaces the origin's table, taking the COW over."""
    env.dm.suspend(name)
    env.dm.suspend("base")
    env.dm.load("base", f"0 {SECTORS} snapshot-merge {real} {env.cow} P {chunk}")
    env.dm.resume("base")
    env.dm.remove(name)


def _wait(env: Env, seen: list[str] | None = None, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = status_of(env.dm, "base")
        if seen is not None:
            seen.append(status)
        m = re.fullmatch(r"(\d+)/(\d+) (\d+)", status)
        if not m or m.group(1) == m.group(3):
            return status
        time.sleep(0.0005)
    raise AssertionError("merge did not finish")


def test_merge_restores_snapshot_and_reports_progress(env: Env) -> None:
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    rng = random.Random(3)
    with env.dm.open("base") as base, env.dm.open("snap") as snap:
        # Scattered single chunks: many separate merge runs, each committed on its own.
        for c in rng.sample(range(256), 120):
            base.write(c * CHUNK, memoryview(rng.randbytes(CHUNK)))
        snap.write(5 * CHUNK + 512, memoryview(b"s" * 512))
        view = snap.read(0, SECTORS * 512)
    before = status_of(env.dm, "snap")
    _start_merge(env, real)
    seen: list[str] = []
    final = _wait(env, seen)
    assert final == "16/2048 16"
    allocated = [int(s.split("/")[0]) for s in seen]
    assert allocated == sorted(allocated, reverse=True)
    assert int(before.split("/")[0]) >= allocated[0]
    assert table_of(env.dm, "base") == f"{real} {env.cow} P 8"
    with env.dm.open("base") as base:
        assert base.read(0, SECTORS * 512) == view
    with open(env.origin, "rb") as f:
        assert f.read(SECTORS * 512) == view


def test_origin_readable_and_writable_during_merge(env: Env) -> None:
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    cow2 = env.file("cow2.img", 2 << 20)
    rng = random.Random(4)
    with env.dm.open("base") as base:
        for c in range(0, 256, 2):
            base.write(c * CHUNK, memoryview(rng.randbytes(CHUNK)))
    with env.dm.open("snap") as snap:
        expect = bytearray(snap.read(0, SECTORS * 512))
    # Another snapshot taken now must keep seeing the pre-merge origin throughout.
    add_snapshot(env.dm, real, cow2, SECTORS, chunk=16, name="other")
    with env.dm.open("base") as base:
        other_view = base.read(0, SECTORS * 512)
    _start_merge(env, real)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        r = random.Random(seed)
        try:
            with env.dm.open("base") as base:
                for _ in range(150):
                    off = r.randrange(SECTORS) * 512
                    data = r.randbytes(512)
                    with lock:
                        base.write(off, memoryview(data))
                        expect[off:off + 512] = data
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def reader(seed: int) -> None:
        r = random.Random(seed)
        try:
            with env.dm.open("base") as base:
                for _ in range(150):
                    off = r.randrange(SECTORS // 8) * CHUNK
                    with lock:
                        assert base.read(off, CHUNK) == expect[off:off + CHUNK]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=reader, args=(10 + i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert _wait(env) == "16/2048 16"
    with env.dm.open("base") as base:
        assert base.read(0, SECTORS * 512) == expect
    with env.dm.open("other") as other:
        assert other.read(0, SECTORS * 512) == other_view


def test_merge_survives_suspend_and_reload(env: Env) -> None:
    """Suspending stops the merge (presuspend); a new merge table resumes from the COW."""
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    rng = random.Random(5)
    with env.dm.open("base") as base:
        for c in rng.sample(range(256), 200):
            base.write(c * CHUNK, memoryview(rng.randbytes(CHUNK)))
    with env.dm.open("snap") as snap:
        view = snap.read(0, SECTORS * 512)
    _start_merge(env, real)
    env.dm.suspend("base")
    mid = status_of(env.dm, "base")
    # Deactivate and activate again: the new table reads the remaining exceptions.
    env.dm.remove("base")
    env.dm.create("base", f"0 {SECTORS} snapshot-merge {real} {env.cow} P 0")
    assert _wait(env) == "16/2048 16"
    assert int(mid.split("/")[0]) >= 16
    with env.dm.open("base") as base:
        assert base.read(0, SECTORS * 512) == view


def test_merge_failed_on_cow_read_error(env: Env) -> None:
    """A COW that cannot be read mid-merge: status "Merge failed", I/O goes on."""
    cow_sectors = 2048
    env.dm.create("cowdev", f"0 {cow_sectors} linear {env.cow} 0")
    info = env.dm.info("cowdev")
    cowdev = f"{info.major}:{info.minor}"
    env.dm.create("base-real", f"0 {SECTORS} linear {env.origin} 0")
    info = env.dm.info("base-real")
    real = f"{info.major}:{info.minor}"
    env.dm.create("base", f"0 {SECTORS} snapshot-origin {real}")
    env.dm.suspend("base")
    env.dm.create("snap", f"0 {SECTORS} snapshot {real} {cowdev} P 8")
    env.dm.resume("base")
    with env.dm.open("base") as base:
        for c in range(0, 64, 2):
            base.write(c * CHUNK, memoryview(b"n" * CHUNK))
    # The data chunks past the first few now fail to read.
    env.dm.suspend("cowdev")
    env.dm.load("cowdev", f"0 64 linear {env.cow} 0\n64 {cow_sectors - 64} error")
    env.dm.resume("cowdev")
    env.dm.suspend("snap")
    env.dm.suspend("base")
    env.dm.load("base", f"0 {SECTORS} snapshot-merge {real} {cowdev} P 8")
    env.dm.resume("base")
    env.dm.remove("snap")
    deadline = time.monotonic() + 30
    while status_of(env.dm, "base") != "Merge failed":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with env.dm.open("base") as base:
        base.write(SECTORS * 512 - 512, memoryview(b"w" * 512))
        assert base.read(SECTORS * 512 - 512, 512) == b"w" * 512


def test_writes_to_chunks_being_merged_wait_for_them(env: Env) -> None:
    """A write to the run being merged is queued until the run is merged, then goes to
    the origin (bios_queued_during_merge)."""
    env.dm.create("cowdev", f"0 2048 linear {env.cow} 0")
    info = env.dm.info("cowdev")
    cowdev = f"{info.major}:{info.minor}"
    env.dm.create("base-real", f"0 {SECTORS} linear {env.origin} 0")
    info = env.dm.info("base-real")
    real = f"{info.major}:{info.minor}"
    env.dm.create("base", f"0 {SECTORS} snapshot-origin {real}")
    env.dm.suspend("base")
    env.dm.create("snap", f"0 {SECTORS} snapshot {real} {cowdev} P 8")
    env.dm.resume("base")
    with env.dm.open("base") as base:
        base.write(5 * CHUNK, memoryview(b"a" * CHUNK))
        base.write(9 * CHUNK, memoryview(b"b" * CHUNK))  # the newest: merged first
    # Stall the merge on its first COW read: the run (chunk 9) is then marked merging.
    env.dm.suspend("cowdev")
    env.dm.suspend("snap")
    env.dm.suspend("base")
    env.dm.load("base", f"0 {SECTORS} snapshot-merge {real} {cowdev} P 8")
    env.dm.resume("base")
    done = threading.Event()

    def writer() -> None:
        with env.dm.open("base") as base:
            base.write(9 * CHUNK + 512, memoryview(b"w" * 512))
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert not done.wait(0.3)  # queued behind the merge of chunk 9
    with env.dm.open("base") as base:  # other chunks are served meanwhile
        assert base.read(0, CHUNK) == env.origin_data[:CHUNK]
    env.dm.resume("cowdev")
    t.join()
    assert _wait(env) == "16/2048 16"
    old9 = env.origin_data[9 * CHUNK:10 * CHUNK]
    with env.dm.open("base") as base:
        assert base.read(9 * CHUNK, CHUNK) == old9[:512] + b"w" * 512 + old9[1024:]
        assert base.read(5 * CHUNK, CHUNK) == env.origin_data[5 * CHUNK:6 * CHUNK]
