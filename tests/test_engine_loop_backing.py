"""Tables over loop devices: the engine reads and writes a loop's backing file itself when
the file's bytes are the loop's (offset 0, no size limit, the very inode), and goes through
the loop device otherwise. Either way the bytes land where the kernel's dm -> loop puts
them, and the table, deps and sizes name the loop device."""

from __future__ import annotations

import mmap
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devmapper.engine.core import Engine
from devmapper.library import DeviceMapper

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/loop-control"),
                                reason="needs root and loop devices")

MiB = 1 << 20


@pytest.fixture
def losetup() -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def attach(path: Path, *args: str) -> str:
        node = subprocess.run(["losetup", "-f", "--show", *args, str(path)], check=True,
                              capture_output=True, text=True).stdout.strip()
        made.append(node)
        return node

    yield attach
    for node in made:
        subprocess.run(["losetup", "-d", node], check=False)


def _image(tmp_path: Path, name: str = "img", size: int = 4 * MiB) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _devno(node: str) -> tuple[int, int]:
    rdev = os.stat(node).st_rdev
    return os.major(rdev), os.minor(rdev)


def _underlying_fd(engine: Engine, name: str) -> int:
    """The descriptor the engine's table on ``name`` does its I/O with."""
    table = engine.by_name[name].live
    assert table is not None
    dev = table.targets[0].dev
    return dev.fd


def _read_direct(node: str, offset: int, length: int) -> bytes:
    """The loop device's bytes as the kernel sees them below any page cache."""
    fd = os.open(node, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, length)
        os.preadv(fd, [buf], offset)
        return bytes(buf)
    finally:
        os.close(fd)


def test_a_loop_is_served_through_its_backing_file(
        engine: Engine, dm: DeviceMapper, losetup: Callable[..., str], tmp_path: Path) -> None:
    img = _image(tmp_path)
    node = losetup(img)
    major, minor = _devno(node)
    dm.create("a", f"0 {4 * MiB // 512} linear {major}:{minor} 0")
    assert dm.deps("a") == [(major, minor)]
    assert dm.table("a")[0].params == f"{major}:{minor} 0"
    assert os.fstat(_underlying_fd(engine, "a")).st_ino == img.stat().st_ino

    data = os.urandom(8192)
    with dm.open("a") as blk:
        blk.write(MiB + 4096, data)
        blk.flush()
        assert blk.read(MiB + 4096, 8192) == data
    with open(img, "rb") as f:
        f.seek(MiB + 4096)
        assert f.read(8192) == data
    assert _read_direct(node, MiB + 4096, 8192) == data
    # Writes through the loop (O_DIRECT, as the kernel's bios) read back through the table.
    other = os.urandom(4096)
    fd = os.open(node, os.O_WRONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 4096)
        buf[:] = other
        os.pwritev(fd, [buf], 2 * MiB)
    finally:
        os.close(fd)
    with dm.open("a") as blk:
        assert blk.read(2 * MiB, 4096) == other
    dm.remove("a")


def test_a_loop_with_an_offset_is_served_through_the_loop(
        engine: Engine, dm: DeviceMapper, losetup: Callable[..., str], tmp_path: Path) -> None:
    img = _image(tmp_path)
    node = losetup(img, "-o", "65536")
    major, minor = _devno(node)
    dm.create("a", f"0 {(4 * MiB - 65536) // 512} linear {major}:{minor} 0")
    assert os.fstat(_underlying_fd(engine, "a")).st_rdev == os.stat(node).st_rdev
    data = os.urandom(4096)
    with dm.open("a") as blk:
        blk.write(8192, data)
        blk.flush()
    with open(img, "rb") as f:
        f.seek(65536 + 8192)
        assert f.read(4096) == data
    dm.remove("a")


def test_a_loop_whose_file_was_renamed_or_replaced_keeps_its_own_inode(
        engine: Engine, dm: DeviceMapper, losetup: Callable[..., str], tmp_path: Path) -> None:
    # sysfs prints the loop's file by its path now (d_path): renamed, it follows; unlinked,
    # it says "PATH (deleted)", a name another file may have. The engine must never write a
    # file that merely has the name: the loop's own inode gets the bytes, or the loop does.
    for unlink in (False, True):
        img = _image(tmp_path)
        node = losetup(img)
        before = img.read_bytes()
        old = tmp_path / "old"
        if unlink:
            img.unlink()
            impostor = tmp_path / "img (deleted)"
        else:
            os.rename(img, old)
            impostor = img
        _image(tmp_path, impostor.name)
        newcomer = impostor.read_bytes()
        major, minor = _devno(node)
        dm.create("a", f"0 {4 * MiB // 512} linear {major}:{minor} 0")
        served = os.fstat(_underlying_fd(engine, "a"))
        assert served.st_ino != impostor.stat().st_ino
        data = os.urandom(4096)
        with dm.open("a") as blk:
            assert blk.read(0, 4096) == before[:4096]
            blk.write(0, data)
            blk.flush()
        assert impostor.read_bytes() == newcomer
        assert _read_direct(node, 0, 4096) == data
        if not unlink:
            assert served.st_ino == old.stat().st_ino
            assert old.read_bytes()[:4096] == data
        dm.remove("a")
        impostor.unlink()


def test_a_read_only_loop_is_read_through_its_file(
        engine: Engine, dm: DeviceMapper, losetup: Callable[..., str], tmp_path: Path) -> None:
    img = _image(tmp_path)
    node = losetup(img, "-r")
    major, minor = _devno(node)
    dm.create("a", f"0 {4 * MiB // 512} linear {major}:{minor} 0", read_only=True)
    assert os.fstat(_underlying_fd(engine, "a")).st_ino == img.stat().st_ino
    with dm.open("a") as blk:
        assert blk.read(4096, 4096) == img.read_bytes()[4096:8192]
    dm.remove("a")


def test_a_read_write_table_on_a_read_only_loop_writes_nothing(
        engine: Engine, dm: DeviceMapper, losetup: Callable[..., str], tmp_path: Path) -> None:
    # Kernel 6.1 loads such a table ("Trying to write to read-only block-device" on writes)
    # and fails each write: the loop's file is open read-only. The engine must not reach
    # the file around the loop.
    img = _image(tmp_path)
    node = losetup(img, "-r")
    before = img.read_bytes()
    major, minor = _devno(node)
    dm.create("a", f"0 {4 * MiB // 512} linear {major}:{minor} 0")
    assert os.fstat(_underlying_fd(engine, "a")).st_rdev == os.stat(node).st_rdev
    with dm.open("a") as blk:
        with pytest.raises(OSError):
            blk.write(0, os.urandom(4096))
        blk.flush()
        assert blk.read(0, 4096) == before[:4096]
    assert img.read_bytes() == before
    dm.remove("a")
