"""Block I/O on a mapped device from Python, for either backend.

An opened handle counts as an opener (open_count), as an open block device does in the
kernel. Offsets are bytes; reads fill the caller's buffer in place (zero-copy).
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devmapper.engine.mapped_device import MappedDevice

BLKDISCARD = 0x1277
BLKGETSIZE64 = 0x80081272


class EngineBlock:
    """A mapped device of an in-process engine, opened for I/O."""

    def __init__(self, md: MappedDevice) -> None:
        md.open()
        self._md = md
        self.read_into = md.read
        self.write = md.write
        self.flush = md.flush
        self.discard = md.discard

    @property
    def size(self) -> int:
        return self._md.size

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self._md.read(offset, memoryview(buf))
        return bytes(buf)

    def close(self) -> None:
        if self._md is not None:
            self._md.close()
            self._md = None  # type: ignore[assignment]

    def __enter__(self) -> EngineBlock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NodeBlock:
    """A block device node (/dev/mapper/NAME) opened for I/O: the kernel backend."""

    def __init__(self, path: str, read_only: bool = False) -> None:
        self._fd = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)

    @property
    def size(self) -> int:
        return struct.unpack("Q", fcntl.ioctl(self._fd, BLKGETSIZE64, bytes(8)))[0]

    def read_into(self, offset: int, buf: memoryview) -> None:
        n = os.preadv(self._fd, (buf,), offset)
        if n != len(buf):
            raise OSError(5, "short read")

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def write(self, offset: int, data: memoryview | bytes, fua: bool = False) -> None:
        n = os.pwritev(self._fd, (data,), offset, os.RWF_DSYNC if fua else 0)
        if n != len(data):
            raise OSError(5, "short write")

    def flush(self) -> None:
        os.fsync(self._fd)

    def discard(self, offset: int, length: int) -> None:
        fcntl.ioctl(self._fd, BLKDISCARD, struct.pack("QQ", offset, length))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> NodeBlock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
