"""Loop devices through their ioctls (no losetup): attach, resize, read-only, detach."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import tempfile
import time
from collections.abc import Iterator

LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_GET_STATUS64 = 0x4C05
LOOP_SET_CAPACITY = 0x4C07
LOOP_SET_DIRECT_IO = 0x4C08
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
BLKROSET = 0x125D
BLKROGET = 0x125E
BLKGETSIZE64 = 0x80081272

LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16

# struct loop_info64: 5 u64, 4 u32, file name[64], crypt name[64], key[32], 2 u64 init.
_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
_FLAGS_AT = 5 * 8 + 3 * 4  # offset of lo_flags
assert _INFO64.size == 232
_CONFIG_HEAD = struct.Struct("=II")  # struct loop_config: fd, block_size, info, reserved[8]

SYS_BLOCK = "/sys/block"


def _sys(index: int, *attr: str) -> str:
    return os.path.join(SYS_BLOCK, f"loop{index}", *attr)


def devno(index: int) -> tuple[int, int]:
    with open(_sys(index, "dev")) as f:
        major, minor = f.read().strip().split(":")
    return int(major), int(minor)


def backing_file(index: int) -> str | None:
    """The backing file's path as the kernel printed it at attach time, None if unbound."""
    try:
        with open(_sys(index, "loop", "backing_file")) as f:
            return f.read().rstrip("\n")
    except FileNotFoundError:
        return None


def bound() -> dict[int, str]:
    """Every bound loop device: index -> backing file."""
    out = {}
    for entry in os.listdir(SYS_BLOCK):
        if entry.startswith("loop") and entry[4:].isdigit():
            path = backing_file(int(entry[4:]))
            if path is not None:
                out[int(entry[4:])] = path
    return out


def direct_io(index: int) -> bool:
    with open(_sys(index, "loop", "dio")) as f:
        return f.read().strip() == "1"


@contextlib.contextmanager
def open_loop(index: int, flags: int = os.O_RDONLY) -> Iterator[int]:
    """An fd on /dev/loopN; if /dev has no node (a container), one made for the call."""
    flags |= os.O_CLOEXEC
    try:
        fd = os.open(f"/dev/loop{index}", flags)
    except FileNotFoundError:
        with tempfile.TemporaryDirectory(prefix="devmapper-loop") as tmp:
            node = os.path.join(tmp, "loop")
            os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(*devno(index)))
            fd = os.open(node, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def attach(path: str, *, block_size: int = 512, use_dio: bool = True) -> int:
    """Bind a free loop device to path (read-write, direct I/O); returns its index.

    Read-only is applied separately with set_read_only() so it can be switched both ways
    (LO_FLAGS_READ_ONLY cannot be cleared without detaching).
    """
    backing = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        with open("/dev/loop-control", "rb", buffering=0) as ctl:
            for _ in range(64):  # LOOP_CONFIGURE says EBUSY if another tool took it first
                index = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
                try:
                    with open_loop(index, os.O_RDWR) as fd:
                        _configure(fd, backing, block_size, use_dio)
                    return index
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
        raise OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(backing)


def _configure(fd: int, backing: int, block_size: int, use_dio: bool) -> None:
    info = bytearray(_INFO64.size)
    struct.pack_into("=I", info, _FLAGS_AT, LO_FLAGS_DIRECT_IO if use_dio else 0)
    config = _CONFIG_HEAD.pack(backing, block_size) + bytes(info) + bytes(64)
    try:
        fcntl.ioctl(fd, LOOP_CONFIGURE, config)
    except OSError as e:
        if e.errno != errno.EINVAL or not use_dio:
            raise
        # A backing file without O_DIRECT support: fall back to buffered loop I/O.
        _configure(fd, backing, block_size, False)


def set_capacity(index: int) -> int:
    """Re-read the backing file's size; returns the new size in bytes."""
    with open_loop(index) as fd:
        fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
        buf = bytearray(8)
        fcntl.ioctl(fd, BLKGETSIZE64, buf)
    return int.from_bytes(buf, "little")


def set_read_only(index: int, read_only: bool) -> None:
    """BLKROSET on the whole disk: blockdev --getro follows, new write opens fail."""
    with open_loop(index) as fd:
        fcntl.ioctl(fd, BLKROSET, struct.pack("=i", int(read_only)))


def is_read_only(index: int) -> bool:
    with open_loop(index) as fd:
        buf = bytearray(4)
        fcntl.ioctl(fd, BLKROGET, buf)
    return struct.unpack("=i", buf)[0] != 0


def _autoclear(index: int) -> bool:
    with open(_sys(index, "loop", "autoclear")) as f:
        return f.read().strip() == "1"


def _bound(fd: int, index: int) -> bool:
    """Is the device still bound (not unbound, not in rundown)? LOOP_SET_DIRECT_IO with the
    current setting changes nothing and, unlike LOOP_GET_STATUS64, never touches the backing
    file, which may sit on a dead FUSE mount (ENOTCONN) after a crash."""
    try:
        dio = direct_io(index)
    except FileNotFoundError:
        return False
    try:
        fcntl.ioctl(fd, LOOP_SET_DIRECT_IO, int(dio))
    except OSError as e:
        if e.errno == errno.ENXIO:
            return False
        raise
    return True


def _clear_autoclear(fd: int) -> None:
    status = bytearray(_INFO64.size)
    fcntl.ioctl(fd, LOOP_GET_STATUS64, status)
    flags = struct.unpack_from("=I", status, _FLAGS_AT)[0] & ~LO_FLAGS_AUTOCLEAR
    struct.pack_into("=I", status, _FLAGS_AT, flags)
    fcntl.ioctl(fd, LOOP_SET_STATUS64, bytes(status))


def detach(index: int, *, deferred: bool = False, timeout: float = 10.0) -> bool:
    """Unbind the loop device. Returns True once unbound, False if left to autoclear.

    The kernel's LOOP_CLR_FD never refuses: with other openers it only sets AUTOCLEAR (unbind
    on last close); when we are the only opener it moves the device to rundown, after which
    it no longer counts as bound. Holding our fd keeps the opener count >= 1, so no close
    elsewhere can race the check. If busy and not deferred, AUTOCLEAR is taken back (unless
    an earlier deferred detach had set it) and EBUSY raised: dm's answer to removing an open
    device.
    """
    try:
        with open_loop(index) as fd:
            if not _bound(fd, index):
                return True
            was_deferred = _autoclear(index)
            fcntl.ioctl(fd, LOOP_CLR_FD, 0)
            busy = _bound(fd, index)
            if busy and not deferred:
                if not was_deferred:
                    _clear_autoclear(fd)
                raise OSError(errno.EBUSY, f"loop{index} is open")
            if not busy:  # BLKROSET outlives the binding: leave the device as we found it
                fcntl.ioctl(fd, BLKROSET, struct.pack("=i", 0))
    except OSError as e:
        if e.errno == errno.ENXIO:  # unbound meanwhile
            return True
        raise
    if busy:
        return False
    # The unbind itself runs on our close; wait until sysfs shows it.
    deadline = time.monotonic() + timeout
    while backing_file(index) is not None and time.monotonic() < deadline:
        time.sleep(0.005)
    return True
