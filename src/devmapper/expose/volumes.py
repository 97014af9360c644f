"""The files the FUSE filesystem shows: one per exposed device, looked up by inode or name."""

from __future__ import annotations

import errno
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .backend import BlockBackend

ROOT_INO = 1


@dataclass
class Volume:
    ino: int
    name: str
    backend: BlockBackend
    read_only: bool = False  # the exposer's switch; backend.read_only is honoured as well
    mtime: float = field(default_factory=time.time)
    loop: int = -1  # the loop device's index once attached
    backing: str = ""  # the FUSE file's path as the loop device was given it
    dev: tuple[int, int] = (0, 0)  # its major:minor
    open_files: int = 0  # FUSE opens of the file (the loop device holds one)
    deferred: bool = False  # remove once the last FUSE open is released
    # backend.send (see BlockBackend), looked up once for the READ path
    send: Callable[[int, bytes, int, int], bool] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.send = getattr(self.backend, "send", None)

    @property
    def writable(self) -> bool:
        return not (self.read_only or self.backend.read_only)


class Volumes:
    """Thread-safe name/inode table. Inodes are never reused while the filesystem is mounted
    (the kernel may still hold a forgotten one), so a stale handle can never reach a new device.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next = itertools.count(ROOT_INO + 1)
        self.by_ino: dict[int, Volume] = {}
        self.by_name: dict[str, Volume] = {}
        self.created = time.time()
        #: Called (from a FUSE worker) when a deferred-removal volume's file is last closed.
        self.on_last_release: Callable[[Volume], None] | None = None

    def add(self, name: str, backend: BlockBackend) -> Volume:
        with self._lock:
            if name in self.by_name:
                raise OSError(errno.EEXIST, f"{name} is already exposed")
            vol = Volume(next(self._next), name, backend, read_only=backend.read_only)
            self.by_ino[vol.ino] = vol
            self.by_name[name] = vol
            return vol

    def remove(self, name: str) -> Volume:
        with self._lock:
            vol = self.by_name.pop(name)
            del self.by_ino[vol.ino]
            return vol

    def rename(self, old: str, new: str) -> Volume:
        with self._lock:
            if new in self.by_name:
                raise OSError(errno.EEXIST, f"{new} is already exposed")
            vol = self.by_name.pop(old)
            vol.name = new
            self.by_name[new] = vol
            return vol

    def get(self, name: str) -> Volume:
        try:
            return self.by_name[name]
        except KeyError:
            raise OSError(errno.ENXIO, f"{name} is not exposed") from None

    def live(self, ino: int) -> Volume:
        """The volume behind an open file; EIO once its device is detached."""
        vol = self.by_ino.get(ino)
        if vol is None:
            raise OSError(errno.EIO, "device detached")
        return vol

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self.by_name)

    def file_opened(self, ino: int) -> None:
        with self._lock:
            vol = self.by_ino.get(ino)
            if vol is None:
                raise OSError(errno.ENOENT, "device detached")
            vol.open_files += 1

    def file_released(self, ino: int) -> None:
        with self._lock:
            vol = self.by_ino.get(ino)
            if vol is None:
                return
            vol.open_files -= 1
            last = vol.deferred and vol.open_files <= 0
        if last and self.on_last_release is not None:
            self.on_last_release(vol)
