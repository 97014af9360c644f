"""A full COW: the snapshot goes Invalid (with an event), the origin is never harmed."""

from __future__ import annotations

import errno

import pytest
from snaphelpers import Env, add_snapshot, lvm_layout, status_of

SECTORS = 2048
CHUNK = 4096


def test_full_cow_invalidates_only_the_snapshot(env: Env) -> None:
    small = env.file("small.img", 6 * CHUNK)  # header, area, four data chunks
    real = lvm_layout(env.dm, env.origin, small, SECTORS, chunk=8)
    big = env.file("big.img", 1 << 20)
    add_snapshot(env.dm, real, big, SECTORS, chunk=8, name="other")
    before = env.dm.info("snap").event_nr
    with env.dm.open("base") as base:
        for c in range(4):
            base.write(c * CHUNK, memoryview(b"a" * CHUNK))
        assert status_of(env.dm, "snap") == "48/48 16"
        assert env.dm.info("snap").event_nr == before
        base.write(4 * CHUNK, memoryview(b"b" * CHUNK))  # no room: invalidates, still lands
        assert base.read(0, 5 * CHUNK) == b"a" * (4 * CHUNK) + b"b" * CHUNK
    assert status_of(env.dm, "snap") == "Invalid"
    assert env.dm.info("snap").event_nr == before + 1  # dm_table_event
    with env.dm.open("snap") as snap:
        for op in (lambda: snap.read(0, 512), lambda: snap.read(0, 3 * CHUNK),
                   lambda: snap.read(9 * CHUNK, CHUNK),
                   lambda: snap.write(0, memoryview(bytes(512)))):
            with pytest.raises(OSError) as info:
                op()
            assert info.value.errno == errno.EIO
    # The other snapshot of the same origin is untouched by all this.
    assert status_of(env.dm, "other") == f"{(2 + 5) * 8}/2048 16"
    with env.dm.open("other") as other:
        assert other.read(0, SECTORS * 512) == env.origin_data[:SECTORS * 512]
    with env.dm.open("base") as base:
        base.write(6 * CHUNK, memoryview(b"c" * 512))  # an invalid snapshot is skipped


def test_overflow_with_po(env: Env) -> None:
    small = env.file("small.img", 6 * CHUNK)
    lvm_layout(env.dm, env.origin, small, SECTORS, chunk=8, store="PO")
    with env.dm.open("snap") as snap:
        for c in range(4):
            snap.write(c * CHUNK, memoryview(b"s" * CHUNK))
        with pytest.raises(OSError) as info:
            snap.write(4 * CHUNK, memoryview(b"s" * 512))
        assert info.value.errno == errno.EIO
        assert status_of(env.dm, "snap") == "Overflow"
        # Overflowed: reads still work, every write fails, even to a remapped chunk.
        assert snap.read(0, CHUNK) == b"s" * CHUNK
        assert snap.read(5 * CHUNK, CHUNK) == env.origin_data[5 * CHUNK:6 * CHUNK]
        with pytest.raises(OSError):
            snap.write(0, memoryview(b"t" * 512))
    # An origin write needing an exception then invalidates it, as in the kernel.
    with env.dm.open("base") as base:
        base.write(5 * CHUNK, memoryview(b"o" * 512))
    assert status_of(env.dm, "snap") == "Invalid"


def test_transient_full(env: Env) -> None:
    small = env.file("small.img", 2 * CHUNK)  # two chunks, no metadata
    lvm_layout(env.dm, env.origin, small, SECTORS, chunk=8, store="N")
    with env.dm.open("base") as base:
        base.write(0, memoryview(b"a" * 512))
        base.write(CHUNK, memoryview(b"a" * 512))
        assert status_of(env.dm, "snap") == "16/16 0"
        base.write(2 * CHUNK, memoryview(b"a" * 512))
    assert status_of(env.dm, "snap") == "Invalid"
