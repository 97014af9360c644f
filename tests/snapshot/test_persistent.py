"""The persistent store's on-disk format and commit order, checked byte by byte.

(The same format is proven against the real kernel in test_kernel_interop.py; these tests
pin it down without a guest.)
"""

from __future__ import annotations

import errno
import os
import struct

import pytest
from snaphelpers import Env, lvm_layout, status_of

from devmapper.fscalls import fs_type
from devmapper.targets.snap.core import _COPYING_FS

SECTORS = 2048
CHUNK = 4096
MAGIC = 0x70416E53


def _cow(env: Env) -> bytes:
    return env.cow.read_bytes()


def _entries(area: bytes) -> list[tuple[int, int]]:
    out = []
    for old, new in struct.iter_unpack("<QQ", area):
        if new == 0:
            break
        out.append((old, new))
    return out


def test_new_store_layout(env: Env) -> None:
    with open(env.cow, "r+b") as f:
        f.write(b"\0" * 16 + b"\xff" * (3 * CHUNK))  # a zero magic: a new store
    lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    cow = _cow(env)
    assert struct.unpack_from("<IIII", cow) == (MAGIC, 1, 1, 8)
    assert cow[:4] == b"SnAp"
    assert cow[16:CHUNK] == bytes(CHUNK - 16)  # rest of the header chunk
    assert cow[CHUNK:2 * CHUNK] == bytes(CHUNK)  # area 0 zeroed
    assert cow[2 * CHUNK:3 * CHUNK] == b"\xff" * CHUNK  # data chunks untouched


def test_exceptions_on_disk(env: Env) -> None:
    lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    with env.dm.open("base") as base:
        base.write(7 * CHUNK, memoryview(b"a" * CHUNK))
        base.write(3 * CHUNK + 512, memoryview(b"b" * 512))
        base.write(7 * CHUNK, memoryview(b"c" * CHUNK))  # already copied
    with env.dm.open("snap") as snap:
        snap.write(9 * CHUNK, memoryview(b"d" * CHUNK))  # whole chunk: no copy
    cow = _cow(env)
    assert _entries(cow[CHUNK:2 * CHUNK]) == [(7, 2), (3, 3), (9, 4)]
    assert cow[2 * CHUNK:3 * CHUNK] == env.origin_data[7 * CHUNK:8 * CHUNK]
    assert cow[3 * CHUNK:4 * CHUNK] == env.origin_data[3 * CHUNK:4 * CHUNK]
    assert cow[4 * CHUNK:5 * CHUNK] == b"d" * CHUNK
    assert status_of(env.dm, "snap") == "40/2048 16"


def test_area_rollover_and_reload(env: Env) -> None:
    """More exceptions than one area holds (256 per 4 KiB chunk): area 1 sits at chunk
    258 and allocation skips it; a reload reads both areas."""
    big = env.file("big-cow.img", 4 << 20)
    origin = env.file("big-origin.img", 2 << 20, bytes(range(256)) * 8192)
    lvm_layout(env.dm, origin, big, 4096, chunk=8)
    with env.dm.open("base") as base:
        for c in range(300):
            base.write(c * CHUNK, memoryview(bytes([c % 251]) * CHUNK))
    cow = big.read_bytes()
    area0 = _entries(cow[CHUNK:2 * CHUNK])
    area1 = _entries(cow[258 * CHUNK:259 * CHUNK])
    assert len(area0) == 256 and len(area1) == 44
    assert area0[-1] == (255, 257)
    assert area1[0] == (256, 259)  # chunk 258 is the second area
    # 1 header + 2 areas + 300 data chunks, next_free past them.
    assert status_of(env.dm, "snap") == f"{(3 + 300) * 8}/8192 24"
    env.dm.remove("snap")
    env.dm.suspend("base")
    env.dm.create("snap", f"0 4096 snapshot {env.dm.table('base')[0].params} {big} P 0")
    env.dm.resume("base")
    assert status_of(env.dm, "snap") == f"{(3 + 300) * 8}/8192 24"
    with env.dm.open("snap") as snap:
        assert snap.read(0, 2 << 20) == bytes(range(256)) * 8192


def test_invalidation_is_written_to_the_header(env: Env) -> None:
    small = env.file("small.img", 6 * CHUNK)  # header, area, 4 data chunks
    lvm_layout(env.dm, env.origin, small, SECTORS, chunk=8)
    with env.dm.open("base") as base:
        for c in range(5):
            base.write(c * CHUNK, memoryview(b"z" * CHUNK))
    assert status_of(env.dm, "snap") == "Invalid"
    assert struct.unpack_from("<IIII", small.read_bytes()) == (MAGIC, 0, 1, 8)
    with env.dm.open("base") as base:
        assert base.read(0, 5 * CHUNK) == b"z" * (5 * CHUNK)  # the origin is unharmed


@pytest.mark.parametrize("copy", ["copy_file_range", "buffered"])
def test_commit_order(env: Env, monkeypatch: pytest.MonkeyPatch, copy: str) -> None:
    """Data copied -> flush -> area written FUA -> only then the origin write, as the
    syscalls show them (both copy paths: copy_file_range between files, read + write)."""
    if copy == "copy_file_range":
        fd = os.open(env.cow, os.O_RDONLY)
        try:
            if fs_type(fd) not in _COPYING_FS:
                pytest.skip("copy_file_range is used only where it copies")
        finally:
            os.close(fd)
    ops: list[tuple[str, ...]] = []
    names = {str(env.cow): "cow", str(env.origin): "origin"}

    def who(fd: int) -> str:
        return names.get(os.readlink(f"/proc/self/fd/{fd}"), "?")

    real_pwritev, real_preadv, real_fsync = os.pwritev, os.preadv, os.fsync
    real_cfr = os.copy_file_range

    def pwritev(fd: int, bufs: list[memoryview], offset: int, flags: int = 0) -> int:
        ops.append((who(fd), "write", str(offset), "FUA" if flags & os.RWF_DSYNC else ""))
        return real_pwritev(fd, bufs, offset, flags)

    def preadv(fd: int, bufs: list[memoryview], offset: int, flags: int = 0) -> int:
        ops.append((who(fd), "read", str(offset)))
        return real_preadv(fd, bufs, offset, flags)

    def fsync(fd: int) -> None:
        ops.append((who(fd), "flush"))
        real_fsync(fd)

    def copy_file_range(src: int, dst: int, count: int, offset_src: int,
                        offset_dst: int) -> int:
        if copy == "buffered":
            raise OSError(errno.EXDEV, "cross-device")  # as between file systems
        ops.append((who(src), "copy", str(offset_src), who(dst), str(offset_dst)))
        return real_cfr(src, dst, count, offset_src, offset_dst)

    for name, fn in (("pwritev", pwritev), ("preadv", preadv), ("fsync", fsync),
                     ("copy_file_range", copy_file_range)):
        monkeypatch.setattr(os, name, fn)
    # Tables bind some calls when built: build them with the recording ones, straight on
    # the image files (through a linear device the engine may bind its own).
    env.dm.create("base", f"0 {SECTORS} snapshot-origin {env.origin}")
    env.dm.suspend("base")
    env.dm.create("snap", f"0 {SECTORS} snapshot {env.origin} {env.cow} P 8")
    env.dm.resume("base")
    ops.clear()
    with env.dm.open("base") as base:
        base.write(11 * CHUNK, memoryview(b"q" * 512))
    if copy == "buffered":
        copied = [("origin", "read", str(11 * CHUNK)), ("cow", "write", str(2 * CHUNK), "")]
    else:
        copied = [("origin", "copy", str(11 * CHUNK), "cow", str(2 * CHUNK))]
    assert ops == [
        *copied,                                       # the old chunk copied out
        ("cow", "flush"),                              # REQ_PREFLUSH
        ("cow", "write", str(1 * CHUNK), "FUA"),       # the area, FUA
        ("origin", "write", str(11 * CHUNK), ""),
    ]
    with env.dm.open("snap") as snap:
        assert snap.read(11 * CHUNK, CHUNK) == env.origin_data[11 * CHUNK:12 * CHUNK]
