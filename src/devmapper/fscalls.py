"""File-system calls the os module lacks (fallocate, fstatfs), through libc."""

from __future__ import annotations

import ctypes
import os

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FUSE_SUPER_MAGIC = 0x65735546

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return _libc


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range of a regular file, keeping its size (what a loop device's
    discard does to its backing file)."""
    if _lib().fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def fs_type(fd: int) -> int | None:
    """fstatfs(fd).f_type, None if it fails."""
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first word
    if _lib().fstatfs(fd, buf) != 0:
        return None
    return int(ctypes.c_long.from_buffer(buf).value)
