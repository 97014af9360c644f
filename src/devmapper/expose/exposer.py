"""The exposure layer: every mapped device becomes a real block device.

Each device is a file in one FUSE filesystem served by this process; a loop device is bound
to that file in direct-I/O mode (the page cache sits above the loop device only, never twice),
and DM_DEV_DIR/mapper/NAME is a block node for the loop device.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from typing import Protocol

from . import _sys, cleanup, lockfs, loop, nodes, usage
from .backend import BlockBackend
from .cleanup import CleanupReport
from .volumes import Volume, Volumes

log = logging.getLogger(__name__)

DEFAULT_MOUNT_DIR = "/run/devmapper/fuse"


class FuseServer(Protocol):
    name: str

    def start(self, timeout: float = ...) -> None: ...
    def stop(self, timeout: float = ...) -> bool: ...
    def invalidate(self, vol: Volume) -> None: ...
    def invalidate_entry(self, name: str) -> None: ...


def make_server(kind: str, mount_dir: str, volumes: Volumes, **options: int) -> FuseServer:
    if kind == "raw":
        from .fuse_raw import RawFuseServer

        return RawFuseServer(mount_dir, volumes, **options)
    if kind == "mfusepy":
        from .fuse_mfusepy import MfusepyServer

        return MfusepyServer(mount_dir, volumes, **options)
    if kind == "uring":
        from .fuse_uring import UringFuseServer

        return UringFuseServer(mount_dir, volumes, **options)
    raise ValueError(f"unknown FUSE implementation {kind!r} (raw, uring, mfusepy)")


class Exposer:
    """Serves mapped devices as block devices. Not reentrant across processes: one live
    Exposer per mount_dir (an flock beside it); start() cleans up after a dead one."""

    def __init__(
        self,
        mount_dir: str = DEFAULT_MOUNT_DIR,
        dev_dir: str | None = None,
        *,
        fuse: str = "raw",
        on_removed: Callable[[str], None] | None = None,
        **fuse_options: int,
    ) -> None:
        # Canonical, as mountinfo and the loop driver print it; the mount point itself is
        # not resolved (after a crash it answers ENOTCONN).
        parent, base = os.path.split(os.path.abspath(mount_dir).rstrip("/"))
        self.mount_dir = os.path.join(os.path.realpath(parent), base)
        self.dev_dir = nodes.dev_dir(dev_dir)
        self.volumes = Volumes()
        self.volumes.on_last_release = self._released
        self.server = make_server(fuse, self.mount_dir, self.volumes, **fuse_options)
        self.on_removed = on_removed  # told when a deferred detach completes
        self._lock = threading.RLock()
        self._lock_fd = -1
        self.cleanup_report: CleanupReport | None = None
        self.io_flusher = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> CleanupReport:
        self._lock_fd = cleanup.acquire_lock(self.mount_dir)
        try:
            self.cleanup_report = cleanup.clean_stale(self.mount_dir, self.dev_dir)
            os.makedirs(self.mount_dir, mode=0o700, exist_ok=True)
            # Threads started from here on inherit it; the FUSE workers set it themselves too.
            self.io_flusher = _sys.set_io_flusher()
            if not self.io_flusher:
                log.warning(
                    "PR_SET_IO_FLUSHER refused (no CAP_SYS_RESOURCE?): memory reclaim "
                    "may wait on this server's own devices"
                )
            self.server.start()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise
        return self.cleanup_report

    def close(self) -> None:
        """Detach everything (devices still open are left to unbind on last close), remove
        the nodes, unmount. Safe to call twice; the SIGTERM path."""
        with self._lock:
            if self._lock_fd < 0:
                return
            for name in self.volumes.names():
                try:
                    self.detach(name, deferred=True)
                except OSError as e:
                    log.warning("detach %s: %s", name, e)
                nodes.remove_node(name, self.dev_dir)
            if not self.server.stop():
                log.warning("%s still in use: unmounted lazily", self.mount_dir)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Exposer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- devices -----------------------------------------------------------------------------

    def path(self, name: str) -> str:
        """The FUSE file behind the device."""
        return os.path.join(self.mount_dir, name)

    def node(self, name: str) -> str:
        return os.path.join(nodes.mapper_dir(self.dev_dir), name)

    def attach(self, name: str, backend: BlockBackend) -> tuple[int, int]:
        """Expose backend as DM_DEV_DIR/mapper/NAME; returns the block device's major:minor.

        A size of 0 is fine (a device created without a table): the loop device exists with
        capacity 0, and resize() grows it in place, so major:minor is fixed from create on.
        """
        nodes.check_name(name)
        with self._lock:
            vol = self.volumes.add(name, backend)
            try:
                vol.backing = self.path(name)
                vol.loop = loop.attach(vol.backing)
                vol.dev = loop.devno(vol.loop)
                loop.set_read_only(vol.loop, vol.read_only)  # both ways: a reused loop keeps it
                nodes.make_node(name, vol.dev, self.dev_dir)
                self._save_state()
            except BaseException:
                if vol.loop >= 0:
                    with contextlib.suppress(OSError):
                        loop.detach(vol.loop, deferred=True)
                self.volumes.remove(name)
                raise
            return vol.dev

    def detach(self, name: str, *, deferred: bool = False) -> bool:
        """Remove the block device. EBUSY if anyone has it open, unless deferred: then it
        goes on the last close (dm's deferred remove) and False is returned."""
        with self._lock:
            vol = self.volumes.get(name)
            if vol.deferred:
                if deferred:
                    return False
                raise OSError(errno.EBUSY, f"{name} is open (removal deferred)")
            if vol.loop >= 0 and not loop.detach(vol.loop, deferred=deferred):
                vol.deferred = True
                if vol.open_files <= 0:  # the loop let go in between
                    self._released(vol)
                return False
            self._drop(vol)
            return True

    def _released(self, vol: Volume) -> None:
        # Called from a FUSE worker when a deferred device's loop finally closed our file.
        threading.Thread(target=self._finish_deferred, args=(vol,), daemon=True).start()

    def _finish_deferred(self, vol: Volume) -> None:
        with self._lock:
            if self.volumes.by_name.get(vol.name) is not vol:
                return
            self._drop(vol)
        if self.on_removed is not None:
            self.on_removed(vol.name)

    def _drop(self, vol: Volume) -> None:
        self.volumes.remove(vol.name)
        nodes.remove_node(vol.name, self.dev_dir)
        self._save_state()

    def _save_state(self) -> None:
        loops = {v.loop: v.backing for v in list(self.volumes.by_ino.values()) if v.loop >= 0}
        try:
            cleanup.save_state(self.mount_dir, loops)
        except OSError as e:  # only crash cleanup would miss it
            log.warning("cannot record state: %s", e)

    def resize(self, name: str) -> int:
        """Make the block device's size follow backend.size; returns the new size in bytes."""
        with self._lock:
            vol = self.volumes.get(name)
            self.server.invalidate(vol)
            os.stat(self.path(name))  # a GETATTR: the kernel's inode learns the new size
            return loop.set_capacity(vol.loop)

    def set_read_only(self, name: str, read_only: bool) -> None:
        with self._lock:
            vol = self.volumes.get(name)
            vol.read_only = read_only
            loop.set_read_only(vol.loop, read_only)

    def rename(self, old: str, new: str) -> None:
        nodes.check_name(new)
        with self._lock:
            vol = self.volumes.rename(old, new)
            self.server.invalidate_entry(old)
            nodes.rename_node(old, new, vol.dev, self.dev_dir)

    # -- queries -----------------------------------------------------------------------------

    def devices(self) -> dict[str, tuple[int, int]]:
        return {name: vol.dev for name, vol in list(self.volumes.by_name.items())}

    def devno(self, name: str) -> tuple[int, int]:
        return self.volumes.get(name).dev

    def loop_name(self, name: str) -> str:
        return f"loop{self.volumes.get(name).loop}"

    def open_count(self, name: str) -> int:
        """dm's open count, estimated from /proc, mountinfo, holders and swaps."""
        vol = self.volumes.get(name)
        return usage.open_count(vol.dev, f"loop{vol.loop}")

    def mknodes(self) -> nodes.NodeChanges:
        return nodes.mknodes(self.devices(), self.dev_dir)

    # -- lockfs ------------------------------------------------------------------------------

    def freeze(self, name: str) -> str | None:
        """FIFREEZE the filesystem mounted from the device; its mount point, or None."""
        return lockfs.freeze(self.devno(name))

    def thaw(self, name: str) -> str | None:
        return lockfs.thaw(self.devno(name))
