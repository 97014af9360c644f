"""Many threads at once: one copy per chunk, no half-copied reads, no lost writes."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from functools import partial

from snaphelpers import Env, add_snapshot, lvm_layout, status_of

SECTORS = 1024  # 512 KiB of the 1 MiB origin: 128 chunks of 4 KiB
CHUNK = 4096


def _run(threads: Sequence[Callable[[], None]]) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        return run

    ts = [threading.Thread(target=wrap(fn)) for fn in threads]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def test_one_copy_per_chunk(env: Env) -> None:
    """Writers racing on the same chunks: each chunk is copied out exactly once."""
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    cow2 = env.file("cow2.img", 1 << 20)
    add_snapshot(env.dm, real, cow2, SECTORS, chunk=16, store="N", name="snap2")
    touched = set(range(0, 128, 3))

    def writer(seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(seed)
            with env.dm.open("base") as base:
                for _ in range(200):
                    c = rng.choice(sorted(touched))
                    off = c * CHUNK + rng.randrange(8) * 512
                    base.write(off, memoryview(rng.randbytes(512)))
        return run

    _run([writer(i) for i in range(8)])
    # Two chunks of header and area, then one COW chunk per origin chunk written.
    assert status_of(env.dm, "snap") == f"{(2 + len(touched)) * 8}/2048 16"
    pairs = {c // 2 for c in touched}
    assert status_of(env.dm, "snap2") == f"{len(pairs) * 16}/2048 0"
    original = env.origin_data[:SECTORS * 512]
    for name in ("snap", "snap2"):
        with env.dm.open(name) as s:
            assert s.read(0, SECTORS * 512) == original


def test_readers_never_see_half_copied_chunks(env: Env) -> None:
    """Snapshot readers during origin overwrites read the old data, whole, every time."""
    lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    original = env.origin_data
    stop = threading.Event()
    new = b"\xab" * CHUNK

    def writer() -> None:
        with env.dm.open("base") as base:
            for c in random.Random(1).sample(range(128), 128):
                base.write(c * CHUNK, memoryview(new))
        stop.set()

    def reader(seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(seed)
            with env.dm.open("snap") as s:
                while not stop.is_set():
                    c = rng.randrange(127)
                    n = rng.choice([512, CHUNK, 2 * CHUNK])
                    off = c * CHUNK
                    assert s.read(off, n) == original[off:off + n]
        return run

    _run([writer] + [reader(i) for i in range(4)])
    with env.dm.open("base") as base:
        assert base.read(0, SECTORS * 512) == new * 128


def test_partial_snapshot_writes_to_one_chunk_all_land(env: Env) -> None:
    """Threads writing different sectors of the same chunks: one copy, every write kept."""
    lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=16)  # 8 KiB chunks
    expect = bytearray(env.origin_data[:SECTORS * 512])

    def writer(sector: int) -> Callable[[], None]:
        data = bytes([sector + 1]) * 512

        def run() -> None:
            with env.dm.open("snap") as s:
                for c in range(64):
                    s.write(c * 8192 + sector * 512, memoryview(data))
        return run

    for c in range(64):
        for sector in range(16):
            expect[c * 8192 + sector * 512:c * 8192 + (sector + 1) * 512] = \
                bytes([sector + 1]) * 512
    _run([writer(i) for i in range(16)])
    with env.dm.open("snap") as s:
        assert s.read(0, SECTORS * 512) == expect
    assert status_of(env.dm, "snap") == f"{(2 + 64) * 16}/2048 32"
    with env.dm.open("base") as base:
        assert base.read(0, SECTORS * 512) == env.origin_data[:SECTORS * 512]


def test_origin_and_snapshot_writers_together(env: Env) -> None:
    """Origin and snapshot writers on the same chunks: each side keeps its own data."""
    lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    origin_data = {c: bytes([1 + c % 200]) * CHUNK for c in range(128)}
    snap_data = {c: bytes([255 - c % 200]) * 512 for c in range(128)}

    def origin_writer(part: int) -> None:
        with env.dm.open("base") as base:
            for c in range(part, 128, 2):
                base.write(c * CHUNK, memoryview(origin_data[c]))

    def snap_writer(part: int) -> None:
        with env.dm.open("snap") as s:
            for c in range(part, 128, 2):
                s.write(c * CHUNK + 1024, memoryview(snap_data[c]))

    _run([partial(origin_writer, p) for p in (0, 1)] +
         [partial(snap_writer, p) for p in (0, 1)])
    with env.dm.open("base") as base, env.dm.open("snap") as s:
        for c in range(128):
            assert base.read(c * CHUNK, CHUNK) == origin_data[c]
            old = env.origin_data[c * CHUNK:(c + 1) * CHUNK]
            assert s.read(c * CHUNK, CHUNK) == old[:1024] + snap_data[c] + old[1536:]
