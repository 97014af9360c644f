"""The same filesystem served through libfuse3's multithreaded loop, via the mfusepy binding.

Kept as the measured alternative to fuse_raw (bench/fuse_choice.py). It needs libfuse3 at
run time and, by libfuse's design, takes over SIGHUP/SIGINT/SIGTERM where they are SIG_DFL.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import threading
import time
from typing import Any

from . import _sys
from .volumes import Volume, Volumes

log = logging.getLogger(__name__)

_FALLOC_KEEP_SIZE = 0x01
_FALLOC_PUNCH_HOLE = 0x02
_FALLOC_ZERO_RANGE = 0x10
_ZEROES = bytes(1 << 20)


def _import_mfusepy() -> Any:
    import mfusepy  # type: ignore[import-untyped,import-not-found,unused-ignore]  # optional

    return mfusepy


class _Ops:
    """Path-based operations; the file handle is the volume's inode number."""

    use_ns = True

    def __init__(self, server: MfusepyServer) -> None:
        self.server = server
        self.volumes = server.volumes

    def _vol(self, path: str) -> Volume:
        vol = self.volumes.by_name.get(path[1:])
        if vol is None:
            raise OSError(errno.ENOENT, path)
        return vol

    def init_with_config(self, conn: Any, config: Any) -> None:
        conn.max_write = self.server.max_write
        conn.max_background = self.server.max_background
        conn.congestion_threshold = self.server.max_background * 3 // 4
        config.attr_timeout = 0.0
        config.entry_timeout = 0.0
        config.negative_timeout = 0.0
        config.direct_io = 1
        self.server._initialized.set()

    def getattr(self, path: str, fh: Any = None) -> dict[str, int]:
        if path == "/":
            t = int(self.volumes.created * 1e9)
            return dict(st_mode=stat.S_IFDIR | 0o755, st_nlink=2, st_mtime=t, st_ctime=t)
        vol = self._vol(path)
        size, t = vol.backend.size, int(vol.mtime * 1e9)
        return dict(
            st_mode=stat.S_IFREG | 0o600,
            st_nlink=1,
            st_size=size,
            st_blocks=(size + 511) // 512,
            st_mtime=t,
            st_ctime=t,
            st_atime=t,
        )

    def readdir(self, path: str, fh: Any) -> list[str]:
        return [".", "..", *self.volumes.names()]

    def open(self, path: str, fi: Any) -> int:
        vol = self._vol(path)
        self.volumes.file_opened(vol.ino)
        fi.fh = vol.ino
        fi.direct_io = 1
        return 0

    # Present so mfusepy wires libfuse's read/write callbacks; _ZeroCopyFUSE serves them.
    def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
        raise OSError(errno.EIO, "served by _ZeroCopyFUSE.read")

    def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
        raise OSError(errno.EIO, "served by _ZeroCopyFUSE.write")

    def release(self, path: str, fi: Any) -> int:
        self.volumes.file_released(fi.fh)
        return 0

    def flush(self, path: str, fi: Any) -> int:
        return 0

    def fsync(self, path: str, datasync: int, fi: Any) -> int:
        self.server.volumes.live(fi.fh).backend.flush()
        return 0

    def truncate(self, path: str, length: int, fh: Any = None) -> int:
        if length != self._vol(path).backend.size:
            raise OSError(errno.EPERM, "a device's size follows its table")
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fi: Any) -> int:
        vol = self.server.volumes.live(fi.fh)
        if not vol.writable:
            raise OSError(errno.EROFS, "read-only device")
        if mode == _FALLOC_PUNCH_HOLE | _FALLOC_KEEP_SIZE:
            vol.backend.discard(offset, size)
        elif mode & ~_FALLOC_KEEP_SIZE == _FALLOC_ZERO_RANGE:
            end = offset + size
            while offset < end:
                chunk = min(end - offset, len(_ZEROES))
                vol.backend.write(offset, memoryview(_ZEROES)[:chunk])
                offset += chunk
        else:
            raise OSError(errno.EOPNOTSUPP, "unsupported fallocate mode")
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return dict(f_bsize=4096, f_frsize=4096, f_namemax=255, f_files=len(self.volumes.by_ino))


def _fuse_class() -> Any:
    mfusepy = _import_mfusepy()

    class _ZeroCopyFUSE(mfusepy.FUSE):  # type: ignore[misc, name-defined]
        """mfusepy copies every buffer into bytes; hand the backend libfuse's own memory."""

        def read(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
            vol = self.operations.server.volumes.live(fip.contents.fh)
            size = max(0, min(size, vol.backend.size - offset))
            view = memoryview((ctypes.c_char * size).from_address(ctypes.addressof(buf.contents)))
            vol.backend.read(offset, view.cast("B"))
            return size

        def write(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
            vol = self.operations.server.volumes.live(fip.contents.fh)
            if not vol.writable:
                raise OSError(errno.EROFS, "read-only device")
            view = memoryview((ctypes.c_char * size).from_address(ctypes.addressof(buf.contents)))
            flags = fip.contents.flags
            vol.backend.write(offset, view.cast("B"), bool(flags & (os.O_SYNC | os.O_DSYNC)))
            return size

    return _ZeroCopyFUSE


class MfusepyServer:
    name = "mfusepy"

    def __init__(
        self,
        mount_dir: str,
        volumes: Volumes,
        *,
        max_write: int = 1 << 20,
        max_threads: int = 1024,
        max_idle: int = 8,
        max_background: int = 4096,
    ) -> None:
        self.mount_dir = mount_dir
        self.volumes = volumes
        self.max_write = max_write
        self.max_threads = max_threads
        self.max_idle = max_idle
        self.max_background = max_background
        self._initialized = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        fuse_cls = _fuse_class()
        self._thread = threading.Thread(target=self._run, args=(fuse_cls,), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._initialized.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(errno.EIO, f"libfuse did not start: {self._error}")

    def _run(self, fuse_cls: Any) -> None:
        _sys.set_io_flusher()  # libfuse's worker threads inherit it from this one
        try:
            fuse_cls(
                _Ops(self),
                self.mount_dir,
                raw_fi=True,
                foreground=True,
                allow_other=True,
                default_permissions=True,
                fsname="devmapper",
                subtype="devmapper",
                max_threads=self.max_threads,
                max_idle_threads=self.max_idle,
            )
        except BaseException as e:  # reported by start()
            self._error = e
            log.exception("libfuse loop ended")

    def stop(self, timeout: float = 5.0) -> bool:
        clean = _sys.unmount_or_detach(self.mount_dir)
        if clean and self._thread is not None:
            self._thread.join(timeout)
        return clean

    def invalidate(self, vol: Volume) -> None:
        """Nothing to do: attributes are never cached (attr_timeout=0)."""

    def invalidate_entry(self, name: str) -> None:
        """Nothing to do: entries are never cached (entry_timeout=0)."""
