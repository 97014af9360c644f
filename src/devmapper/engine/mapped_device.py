"""A mapped device (dm.c's struct mapped_device): its tables, I/O gate, suspend and events.

The I/O gate is the heart of suspend: I/O enters the gate (counted in flight), suspend closes
the gate and waits for the count to reach zero, and resume swaps tables before reopening it.
So a table swap never happens under a request, and nothing in flight is lost.
"""

from __future__ import annotations

import errno
import os
import threading
from array import array
from typing import TYPE_CHECKING, TypeVar

from devmapper.engine.underlying import map_read_only
from devmapper.io_gate import Gate
from devmapper.targets.base import SECTOR_SHIFT, Requeue
from devmapper.uapi import encode_dev

if TYPE_CHECKING:
    from collections.abc import Callable

    from devmapper.engine.core import Engine
    from devmapper.engine.table import Table


_T = TypeVar("_T")
_preadv = os.preadv
_writev = os.writev
_pwritev = os.pwritev


class _WouldWait(Exception):
    """read()/write() with nowait: the request would have to wait (see read())."""


def _eio(what: str) -> OSError:
    return OSError(errno.EIO, what)


class MappedDevice:
    """One device: name, uuid, dev_t, live and inactive tables, and its block I/O path."""

    def __init__(self, engine: Engine, name: str, uuid: str, major: int, minor: int) -> None:
        self.engine = engine
        self.name = name
        self.uuid = uuid
        self.set_dev(major, minor)
        self.live: Table | None = None
        self.inactive: Table | None = None
        self.read_only = False
        self.suspended = False
        self.frozen = False  # filesystem frozen by lockfs on suspend
        self.noflush_suspending = False  # DMF_NOFLUSH_SUSPENDING: targets may requeue
        self.deferred_remove = False
        self.deleting = False
        self.type_set = False  # first table loaded: later loads check limits at resume
        self.geometry = (0, 0, 0, 0)
        self.event_nr = 0
        self._opens = 0
        self._event_cond = threading.Condition()
        self.suspend_lock = threading.Lock()
        self._gate = Gate()
        self._inflight = self._gate.inflight  # one entry per request inside the gate
        self._nbytes = 0  # live table size, cached for the bounds check
        # the live table's I/O map (Table._build_io_map)
        self._map = array("q", (-1, 0))
        self._shift = 63
        self._fds: list[int] = []
        self._views: list[memoryview | None] = []
        self._read: Callable[[int, memoryview], None] = self._no_table
        self._write: Callable[[int, memoryview, bool], None] = self._no_table

    # ---- identity, as an underlying device of another table
    def set_dev(self, major: int, minor: int) -> None:
        self.major, self.minor = major, minor
        self.dev = encode_dev(major, minor)
        self.dev_name = f"{major}:{minor}"

    @property
    def size(self) -> int:
        return self._nbytes

    @property
    def takes_discards(self) -> bool:
        """As an underlying device: whether its live table takes discards."""
        return self.live.takes_discards if self.live else False

    @property
    def logical_block_size(self) -> int:
        return self.live.logical_block_size() if self.live else 512

    # ---- open counting (openers of the block device and tables holding it)
    @property
    def open_count(self) -> int:
        return self._opens

    def open(self) -> None:
        with self._event_cond:
            if self.deleting:
                raise OSError(errno.ENXIO, "device is being removed")
            self._opens += 1

    def close(self) -> None:
        with self._event_cond:
            self._opens -= 1
            last = self._opens == 0 and self.deferred_remove
        if last:
            self.engine.run_deferred_removes()

    # ---- events
    def table_event(self) -> None:
        """dm_table_event: a new event number, waiters woken, global event raised."""
        with self._event_cond:
            self.event_nr = (self.event_nr + 1) & 0xFFFFFFFF
            self._event_cond.notify_all()
        self.engine.global_event()

    def wait_event(self, event_nr: int, cancelled: threading.Event | None = None) -> bool:
        """Block until the event number differs from ``event_nr``. False if cancelled."""
        with self._event_cond:
            while self.event_nr == event_nr:
                if cancelled is not None and cancelled.is_set():
                    return False
                self._event_cond.wait(0.2 if cancelled is not None else None)
            return True

    def wake_waiters(self) -> None:
        with self._event_cond:
            self._event_cond.notify_all()

    # ---- suspend / resume (callers hold suspend_lock)
    def suspend(self, noflush: bool, lockfs: bool) -> None:
        if self.suspended:
            return
        table = self.live
        self.noflush_suspending = noflush
        if table is not None:
            table.presuspend(noflush)
        # lockfs is honoured only for a flushing suspend (noflush takes precedence).
        if lockfs and not noflush:
            self.frozen = self.engine.freeze(self)
        self._gate.close()
        self.suspended = True  # I/O is stopped: a failing postsuspend cannot close it twice
        if table is not None:
            table.postsuspend()

    def swap_table(self, table: Table) -> Table | None:
        """dm_swap_table: only while suspended. Raises TableError if the table is invalid."""
        table.validate_areas()
        old = self.live
        self.live = table
        self.read_only = table.read_only
        self._nbytes = table.nbytes
        self._map, self._shift, self._fds = table.io_map, table.io_shift, table.io_fds
        self._views = table.io_views
        self._read, self._write = table.io_entry_points()
        return old

    def resume(self) -> None:
        """dm_resume: EINVAL unless suspended with a live table of non-zero size."""
        table = self.live
        if not self.suspended or table is None or not table.size:
            raise OSError(errno.EINVAL, "cannot resume")
        table.preresume()
        table.resume()
        self.suspended = False
        self.noflush_suspending = False
        self._gate.open()
        # __dm_resume: I/O flows again before the filesystem is thawed (thawing writes).
        if self.frozen:
            self.frozen = False
            self.engine.thaw(self)

    def destroy_suspend(self) -> None:
        """__dm_destroy: targets see presuspend/postsuspend before their table goes."""
        if not self.suspended and self.live is not None:
            self.live.presuspend(False)
            self._gate.close()
            self.suspended = True
            self.live.postsuspend()

    # ---- the I/O path: byte offsets from the device start (io_gate.Gate's handshake inline)
    def _await_requeue(self) -> None:
        """A request a target requeued, now outside the gate: wait for the resume that ends
        the noflush suspend; the caller then re-issues it whole. EIO when requeued outside
        one (dm.c fails it) or when the device goes away meanwhile."""
        cond = self._gate.cond
        with cond:
            while self.noflush_suspending and not self.deleting:
                cond.wait(0.1)
        if self.deleting or self.live is None:
            raise _eio("requeued I/O on a device being removed")

    def _requeue_outside_suspend(self) -> OSError:
        return _eio("target requeued I/O outside a noflush suspend")

    # The table's io_map is read only inside the gate, so it is the map of the table the
    # request runs under. A request within one direct_io extent is one syscall here (code:
    # byte delta | fd index, 511 being table._FD_MASK); anything else, and a short transfer
    # (redone in full: the target handles EOF and retries), goes through the table.
    # nowait (for the FUSE io_uring thread, which must never wait: one blocked request there
    # would hold every device's): _WouldWait, with nothing done, where the request would wait
    # (the gate closed, or a target requeueing it in a noflush suspend); read_nowait and
    # write_nowait turn it into False, and the caller hands the request to a thread that may
    # wait. The flag costs the hot path nothing: it is read only on those two paths.
    def read(self, offset: int, buf: memoryview, nowait: bool = False) -> None:
        inflight = self._inflight
        inflight.append(None)
        try:
            if self._gate.blocked:
                if nowait:
                    raise _WouldWait
                self._gate.wait()
            n = len(buf)
            if offset >= 0:
                io_map = self._map
                i = offset >> self._shift << 1
                try:
                    end = io_map[i]
                except IndexError:  # beyond the device: the checked path raises EIO
                    end = -1
                if offset + n <= end:  # ends are <= the device size: in bounds
                    code = io_map[i + 1]
                    if _preadv(self._fds[code & 511], (buf,), offset + (code & -512)) == n:
                        return
            if offset < 0 or offset + n > self._nbytes:
                raise _eio("read beyond the end of the device")
            if n:  # an empty request reaches no target, as no bio is made for it
                self._read(offset, buf)
            return
        except Requeue:
            if nowait:
                raise _WouldWait from None
            if not self.noflush_suspending:
                raise self._requeue_outside_suspend() from None
        finally:
            inflight.pop()
            if self._gate.blocked:
                self._gate.notify()
        self._await_requeue()
        self.read(offset, buf)

    def write(
        self, offset: int, data: memoryview, fua: bool = False, nowait: bool = False
    ) -> None:
        inflight = self._inflight
        inflight.append(None)
        try:
            if self._gate.blocked:
                if nowait:
                    raise _WouldWait
                self._gate.wait()
            if self.read_only:
                raise OSError(errno.EPERM, "device is read-only")
            n = len(data)
            if offset < 0 or offset + n > self._nbytes:
                raise _eio("write beyond the end of the device")
            io_map = self._map
            i = offset >> self._shift << 1
            if offset + n <= io_map[i] and not fua:  # FUA takes the target's path
                code = io_map[i + 1]
                if _pwritev(self._fds[code & 511], (data,), offset + (code & -512)) == n:
                    return
            if n:
                self._write(offset, data, fua)
            return
        except Requeue:
            if nowait:
                raise _WouldWait from None
            if not self.noflush_suspending:
                raise self._requeue_outside_suspend() from None
        finally:
            inflight.pop()
            if self._gate.blocked:
                self._gate.notify()
        self._await_requeue()
        self.write(offset, data, fua)

    def read_nowait(self, offset: int, buf: memoryview) -> bool:
        try:
            self.read(offset, buf, True)
        except _WouldWait:
            return False
        return True

    def write_nowait(self, offset: int, data: memoryview, fua: bool = False) -> bool:
        try:
            self.write(offset, data, fua, True)
        except _WouldWait:
            return False
        return True

    def send(self, out: int, header: bytes, offset: int, n: int) -> bool:
        """One writev(out, header + bytes [offset, offset + n)) straight from a read-only
        mapping of the backing (map_read_only), inside the gate: one copy and one syscall
        where read() and a writev of its buffer take two of each. False, with nothing written,
        where it cannot be (the gate closed, not one direct extent, past the mapping): then
        read(). writev's OSError goes to the caller; EFAULT means the backing shrank under
        the mapping (the kernel's copy faulted)."""
        inflight = self._inflight
        inflight.append(None)
        try:
            if self._gate.blocked or offset < 0:
                return False
            io_map = self._map
            i = offset >> self._shift << 1
            try:
                end = io_map[i]
            except IndexError:
                return False
            if offset + n > end:  # spans extents, or not direct (end -1)
                return False
            code = io_map[i + 1]
            idx = code & 511
            view = self._views[idx]
            if view is None:  # two requests may map it at once: one mapping stays
                view = self._views[idx] = map_read_only(self._fds[idx])
            pos = offset + (code & -512)
            if pos + n > len(view):
                return False
            _writev(out, (header, view[pos:pos + n]))
            return True
        finally:
            inflight.pop()
            if self._gate.blocked:
                self._gate.notify()

    def direct(self, offset: int, size: int, fn: Callable[[int, int], _T]) -> _T | None:
        """``fn(fd, position)`` inside the gate when bytes [offset, offset + size) are one
        direct extent (bytes position.. of descriptor fd), so a caller may move them with
        copy_file_range or splice; None when they are not (another target, two extents,
        out of bounds): the caller then uses read()."""
        inflight = self._inflight
        inflight.append(None)
        if self._gate.blocked:
            self._gate.wait()
        try:
            if offset < 0 or size <= 0:
                return None
            io_map = self._map
            i = offset >> self._shift << 1
            try:
                end = io_map[i]
            except IndexError:
                return None
            if offset + size > end:
                return None
            code = io_map[i + 1]
            return fn(self._fds[code & 511], offset + (code & -512))
        finally:
            inflight.pop()
            if self._gate.blocked:
                self._gate.notify()

    def flush(self) -> None:
        table = self._enter()
        try:
            table.flush()
            return
        except Requeue:
            if not self.noflush_suspending:
                raise self._requeue_outside_suspend() from None
        finally:
            self._leave()
        self._await_requeue()
        self.flush()

    def discard(self, offset: int, length: int) -> None:
        """BLKDISCARD's checks, in blk_ioctl_discard's and __blkdev_issue_discard's order,
        then the table's targets."""
        table = self._enter()
        try:
            if not table.takes_discards:
                raise OSError(errno.EOPNOTSUPP, "the device does not take discards")
            if offset < 0 or length < 0 or (offset | length) & 511 \
                    or offset + length > self._nbytes:
                raise OSError(errno.EINVAL, "discard not aligned or beyond the device")
            if self.read_only:
                raise OSError(errno.EPERM, "device is read-only")
            if (offset | length) & (table.logical_block_size() - 1) or not length:
                raise OSError(errno.EINVAL, "discard not in logical blocks, or empty")
            table.discard(offset, length)
            return
        except Requeue:
            if not self.noflush_suspending:
                raise self._requeue_outside_suspend() from None
        finally:
            self._leave()
        self._await_requeue()
        self.discard(offset, length)

    def _enter(self) -> Table:
        self._inflight.append(None)
        if self._gate.blocked:
            self._gate.wait()
        table = self.live
        if table is None:
            self._leave()
            raise _eio("device has no table")
        return table

    def _leave(self) -> None:
        self._inflight.pop()
        if self._gate.blocked:
            self._gate.notify()

    @staticmethod
    def _no_table(*_args: object) -> None:
        raise _eio("device has no table")

    @property
    def size_sectors(self) -> int:
        return self._nbytes >> SECTOR_SHIFT
