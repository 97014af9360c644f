"""A BlockBackend over a regular file or block device: the exposure layer's reference backend
(tests, benchmarks, and a daemon self-check)."""

from __future__ import annotations

import errno
import mmap
import os
import threading

from . import _sys

_ALIGN = 4096


class FileBackend:
    """preadv/pwritev on one fd. direct=True opens with O_DIRECT (no page cache below the
    device either); unaligned buffers then go through a per-thread bounce buffer."""

    def __init__(self, path: str, *, read_only: bool = False, direct: bool = False) -> None:
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        if direct:
            flags |= os.O_DIRECT
        self.path = path
        self.direct = direct
        self.read_only = read_only
        self.fd = os.open(path, flags)
        self.size = self._current_size()
        self.open_count = 0
        self._local = threading.local()

    def _current_size(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_END)

    def refresh_size(self) -> int:
        """Pick up a grown or shrunk file (call the exposer's resize() afterwards)."""
        self.size = self._current_size()
        return self.size

    def close(self) -> None:
        os.close(self.fd)

    def _bounce(self, length: int) -> memoryview:
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < length:
            buf = mmap.mmap(-1, max(length, 1 << 20))
            self._local.buf = buf
        return memoryview(buf)[:length]

    def _aligned(self, view: memoryview, offset: int) -> bool:
        if not self.direct or not len(view):
            return True
        if offset % _ALIGN or len(view) % 512:
            return False
        import ctypes  # only the O_DIRECT path needs the address

        address = ctypes.addressof(ctypes.c_char.from_buffer(view)) if not view.readonly else -1
        return address >= 0 and address % _ALIGN == 0

    def read(self, offset: int, buf: memoryview) -> None:
        if not self._aligned(buf, offset):
            bounce = self._bounce(len(buf))
            self._read(offset, bounce)
            buf[:] = bounce
            return
        self._read(offset, buf)

    def _read(self, offset: int, buf: memoryview) -> None:
        done = 0
        while done < len(buf):
            n = os.preadv(self.fd, [buf[done:]], offset + done)
            if n == 0:  # past the end of a shrunk file: zeroes, as a hole would read
                buf[done:] = bytes(len(buf) - done)
                return
            done += n

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "read-only backend")
        if not self._aligned(data, offset):
            bounce = self._bounce(len(data))
            bounce[:] = data
            data = bounce
        done = 0
        while done < len(data):
            done += os.pwritev(self.fd, [data[done:]], offset + done)
        if fua:
            os.fdatasync(self.fd)

    # Nothing here holds I/O back (no suspend): the io_uring server may call these inline.
    def read_nowait(self, offset: int, buf: memoryview) -> bool:
        self.read(offset, buf)
        return True

    def write_nowait(self, offset: int, data: memoryview, fua: bool = False) -> bool:
        self.write(offset, data, fua)
        return True

    def flush(self) -> None:
        os.fdatasync(self.fd)

    def discard(self, offset: int, length: int) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "read-only backend")
        mode = _sys.FALLOC_FL_PUNCH_HOLE | _sys.FALLOC_FL_KEEP_SIZE
        try:
            _sys.fallocate(self.fd, mode, offset, length)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise OSError(errno.EOPNOTSUPP, "discard not supported") from None
            raise

    def opened(self) -> None:
        self.open_count += 1

    def closed(self) -> None:
        self.open_count -= 1
