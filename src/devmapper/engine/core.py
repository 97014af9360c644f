"""The engine: the kernel half of device-mapper in userspace.

It owns the device registry (dm-ioctl.c's hash cells), the shared underlying devices, the
global event counter behind DEV_ARM_POLL, and the hooks through which an exposure layer
(FUSE + loop) serves each device as a real block device. Commands arrive as v4 buffers
through :meth:`Engine.ioctl` (see ioctl.py), exactly as the kernel receives them.
"""

from __future__ import annotations

import errno
import heapq
import os
import threading
from typing import TYPE_CHECKING, Protocol

from devmapper.engine.mapped_device import MappedDevice
from devmapper.engine.underlying import DeviceCache, FdDevice, open_path
from devmapper.uapi import ENGINE_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable

    from devmapper.targets.base import Underlying

#: The block major mapped devices get when nothing exposes them (the guest kernel's dm major).
DEFAULT_MAJOR = 254
MINORBITS = 20


class Exposure(Protocol):
    """How mapped devices become block devices (implemented by the daemon's FUSE+loop layer)."""

    def allocate(self, md: MappedDevice) -> tuple[int, int] | None:
        """A dev_t for a new device, or None to let the engine number it."""
        ...

    def changed(self, md: MappedDevice) -> None:
        """After resume: size or read-only may have changed."""
        ...

    def renamed(self, md: MappedDevice, old_name: str) -> None: ...

    def release(self, md: MappedDevice, deferred: bool) -> bool:
        """Take the block device away at removal. True: gone now. False (only if
        ``deferred``): it goes at its last close, and the exposure then calls
        Engine.exposure_released(name). Raises OSError(EBUSY) if open and not deferred."""
        ...

    def open_count(self, md: MappedDevice) -> int:
        """Openers of the block device (mounts, open descriptors, holders)."""
        ...

    def freeze(self, md: MappedDevice) -> bool: ...
    def thaw(self, md: MappedDevice) -> None: ...


class _Write(Protocol):
    def __call__(self, offset: int, data: memoryview, fua: bool = False) -> None: ...


def _loop_io(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.EIO, "table maps its own device")


class MappedUnderlying:
    """A mapped device used by another table: prints as major:minor, I/O goes straight in."""

    __slots__ = ("md", "name", "dev", "read", "write", "flush", "discard", "read_only")

    def __init__(self, md: MappedDevice, read_only: bool, self_reference: bool = False) -> None:
        self.md = md
        self.name = md.dev_name
        self.dev = md.dev
        self.read_only = read_only
        # Bound methods as attributes: stacking costs no extra call.
        self.read: Callable[[int, memoryview], None] = _loop_io if self_reference else md.read
        self.write: _Write = md.write
        if self_reference:
            self.write = _loop_io
        self.flush: Callable[[], None] = _loop_io if self_reference else md.flush
        self.discard: Callable[[int, int], None] = _loop_io if self_reference else md.discard

    @property
    def size(self) -> int:
        return self.md.size

    @property
    def logical_block_size(self) -> int:
        return self.md.logical_block_size

    @property
    def takes_discards(self) -> bool:
        return self.md.takes_discards


class ControlSession:
    """Per-opener state of the control node: DEV_ARM_POLL's armed event number."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # One lock orders arm, notify and close: an event between arming and clearing the
        # eventfd is not lost, and nobody writes to a descriptor after it is closed.
        self._lock = threading.Lock()
        self.armed_nr = engine.global_event_nr
        self.event_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        engine._sessions.add(self)

    def arm(self) -> None:
        with self._lock:
            try:
                os.eventfd_read(self.event_fd)
            except BlockingIOError:
                pass
            self.armed_nr = self.engine.global_event_nr

    def notify(self, nr: int) -> None:
        with self._lock:
            if self.event_fd >= 0 and nr != self.armed_nr:
                os.eventfd_write(self.event_fd, 1)

    def fileno(self) -> int:
        """poll() this: readable once an event happened after the last DEV_ARM_POLL."""
        return self.event_fd

    def close(self) -> None:
        self.engine._sessions.discard(self)
        with self._lock:
            if self.event_fd >= 0:
                os.close(self.event_fd)
                self.event_fd = -1


class Engine:
    """Device registry, underlying devices, events; commands are in ioctl.py."""

    version = ENGINE_VERSION

    def __init__(self, major: int = DEFAULT_MAJOR, exposure: Exposure | None = None) -> None:
        self.major = major
        self.exposure = exposure
        self.lock = threading.RLock()  # _hash_lock
        self.by_name: dict[str, MappedDevice] = {}
        self.by_uuid: dict[str, MappedDevice] = {}
        self.by_dev: dict[tuple[int, int], MappedDevice] = {}
        self._minors: set[int] = set()
        self._freed: list[int] = []  # heap of released minors below _next_minor
        self._next_minor = 0
        self.cache = DeviceCache()
        self.global_event_nr = 0
        self._sessions: set[ControlSession] = set()
        self._event_lock = threading.Lock()

    # ---- the control interface
    def ioctl(self, cmd: int, buf: bytes | bytearray | memoryview,
              session: ControlSession | None = None) -> tuple[int, bytes]:
        """Run one v4 command. Returns (errno, reply bytes to copy over the caller's buffer)."""
        from devmapper.engine.ioctl import dispatch

        return dispatch(self, cmd, buf, session)

    def session(self) -> ControlSession:
        return ControlSession(self)

    # ---- events
    def global_event(self) -> None:
        with self._event_lock:
            self.global_event_nr = (self.global_event_nr + 1) & 0xFFFFFFFF
            nr = self.global_event_nr
        for s in list(self._sessions):
            s.notify(nr)

    # ---- registry
    def allocate_minor(self, minor: int | None) -> int:
        """The lowest free minor, as idr_alloc gives it, or the one asked for."""
        if minor is None:
            while self._freed and self._freed[0] in self._minors:
                heapq.heappop(self._freed)  # taken meanwhile by a persistent minor
            if self._freed:
                minor = heapq.heappop(self._freed)
            else:
                while self._next_minor in self._minors:
                    self._next_minor += 1
                minor = self._next_minor
                self._next_minor += 1
        elif minor >= 1 << MINORBITS:
            raise OSError(errno.EINVAL, "minor out of range")
        elif minor in self._minors:
            raise OSError(errno.EBUSY, "minor in use")
        self._minors.add(minor)
        return minor

    def release_minor(self, minor: int) -> None:
        if minor in self._minors:
            self._minors.discard(minor)
            if minor < self._next_minor:
                heapq.heappush(self._freed, minor)

    def find(self, name: str, uuid: str, dev: int) -> MappedDevice | None:
        """__find_device_hash_cell: uuid, then name, then dev; mixing them finds nothing."""
        from devmapper.uapi import decode_dev

        if uuid:
            if name or dev:
                return None
            return self.by_uuid.get(uuid)
        if name:
            if dev:
                return None
            return self.by_name.get(name)
        if dev:
            return self.by_dev.get(decode_dev(dev))
        return None

    def lookup_dev(self, major: int, minor: int) -> MappedDevice | None:
        return self.by_dev.get((major, minor))

    def mapped_devices(self) -> list[MappedDevice]:
        with self.lock:
            return list(self.by_name.values())

    # ---- underlying devices (dm_get_device / dm_put_device)
    def open_underlying(self, path: str, read_only: bool, owner: MappedDevice) -> Underlying:
        def mapped(major: int, minor: int) -> MappedDevice | None:
            return self.by_dev.get((major, minor))

        got = open_path(self.cache, path, read_only, mapped)
        if isinstance(got, MappedDevice):
            if not got.type_set:
                # 4.47 adds a mapped device's disk at its first table load: until then
                # nothing can open it.
                raise OSError(errno.ENXIO, "mapped device has no disk yet")
            # 4.47 lets a table name its own device (it then holds itself open), as the
            # real driver shows; I/O through such a table fails rather than recursing.
            got.open()
            return MappedUnderlying(got, read_only, self_reference=got is owner)
        assert isinstance(got, FdDevice)
        return got

    def close_underlying(self, dev: Underlying) -> None:
        if isinstance(dev, MappedUnderlying):
            dev.md.close()
        elif isinstance(dev, FdDevice):
            self.cache.put(dev)

    # ---- exposure hooks
    def freeze(self, md: MappedDevice) -> bool:
        return self.exposure.freeze(md) if self.exposure else False

    def thaw(self, md: MappedDevice) -> None:
        if self.exposure:
            self.exposure.thaw(md)

    # ---- removal
    def open_count(self, md: MappedDevice) -> int:
        """dm_open_count: tables and handles holding it, plus openers of its block device."""
        count = md.open_count
        if self.exposure is not None and not md.deleting:
            count += self.exposure.open_count(md)
        return count

    def try_remove(self, md: MappedDevice, deferred: bool) -> bool:
        """dm_lock_for_deletion + removal: True if removed; False if marked for deferred
        removal; OSError(EBUSY) if open and not deferred. Caller holds the lock."""
        if md.open_count:
            if deferred:
                md.deferred_remove = True
                return False
            raise OSError(errno.EBUSY, "device is open")
        if self.exposure is not None and not self.exposure.release(md, deferred):
            md.deferred_remove = True
            return False
        self.remove_device(md)
        return True

    def exposure_released(self, name: str) -> None:
        """The block device of a deferred removal saw its last close."""
        with self.lock:
            md = self.by_name.get(name)
            if md is not None and not md.deleting and md.deferred_remove and not md.open_count:
                self.remove_device(md)
        self.global_event()

    def remove_device(self, md: MappedDevice) -> None:
        """__hash_remove + dm_destroy; the caller holds the lock and released the device."""
        md.deleting = True
        del self.by_name[md.name]
        if md.uuid:
            del self.by_uuid[md.uuid]
        del self.by_dev[(md.major, md.minor)]
        self.release_minor(md.minor)
        if md.live is not None:
            md.table_event()
        with md.suspend_lock:
            md.destroy_suspend()
            for table in (md.inactive, md.live):
                if table is not None:
                    table.destroy()
            md.inactive = md.live = None
        md.wake_waiters()

    def remove_all(self, mark_deferred: bool, only_deferred: bool) -> None:
        """dm_hash_remove_all(keep_open_devices=True): repeat until nothing more goes."""
        with self.lock:
            while True:
                removed = False
                for md in list(self.by_name.values()):
                    if md.deleting:  # went in a nested deferred removal
                        continue
                    if only_deferred and not md.deferred_remove:
                        continue
                    try:
                        removed |= self.try_remove(md, mark_deferred or only_deferred)
                    except OSError:
                        continue
                if not removed:
                    break
        self.global_event()

    def run_deferred_removes(self) -> None:
        self.remove_all(False, True)
