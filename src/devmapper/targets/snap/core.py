"""struct dm_snapshot: what the snapshot and snapshot-merge targets share (dm-snap.c).

Constructor and validation, the completed-exception table (a dict: O(1) lookup), pending
exceptions (one per chunk being copied, so two writers never copy a chunk twice), the
in-order commit pipeline, invalidation, exception-table handover between tables sharing a
COW, status and table lines.

I/O is synchronous: the thread whose write needs a new exception copies the chunk, hands
the exception to the store in allocation order and waits for the store's (group) commit;
others needing the same chunk wait for that exception. Offsets follow the kernel, which
maps snapshot and origin bios by their *device* sector (it never subtracts the target's
start), so chunk numbers and origin offsets count from the start of the mapped device.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import TYPE_CHECKING, ClassVar

from devmapper.fscalls import fs_type
from devmapper.targets.base import SECTOR_SHIFT, StatusType, Target, TargetError
from devmapper.targets.snap.registry import device_key, path_key, registry_for
from devmapper.targets.snap.store import StoreError, create_store

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from devmapper.targets.base import TargetContext, Underlying

log = logging.getLogger("devmapper.kernel")


def _eio() -> OSError:
    return OSError(errno.EIO, "I/O error")


#: copy_file_range errors that mean "not between these two", not an I/O error.
_CFR_UNSUPPORTED = frozenset((errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                              errno.EBADF))


# File systems whose copy_file_range copies (does not share extents): a reflinked chunk
# would make the next origin write relocate that block, fragmenting the origin file.
_COPYING_FS = frozenset((0xEF53, 0x01021994))  # ext2/3/4, tmpfs


def _file_fd(dev: object) -> int | None:
    """The descriptor of the regular file a device's I/O goes to (FdDevice.file_fd), else
    None: mapped devices are entered through their read/write (their I/O gate), and
    copy_file_range does not take block devices."""
    fd = getattr(dev, "file_fd", None)
    return fd if isinstance(fd, int) else None


class Waiters:
    """Threads waiting for pending exceptions to complete; counted so that a completion
    nobody waits for costs no lock at all (the usual, uncontended case)."""

    __slots__ = ("cond", "count")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.count = 0


class Pending:
    """dm_snap_pending_exception: a chunk being copied into the COW."""

    # One is made per first write: no __slots__, so the flags start as class attributes
    # and construction sets four fields, not seven (half the cost).
    copy_error = False
    ok = False
    done = False

    def __init__(self, old: int, new: int, seq: int, waiters: Waiters) -> None:
        self.old = old
        self.new = new
        self.seq = seq
        self._waiters = waiters

    def wait(self) -> None:
        if self.done:
            return
        w = self._waiters
        with w.cond:
            # Counted before `done` is checked again, and finish() sets `done` before it
            # reads the count: one of the two always sees the other.
            w.count += 1
            try:
                while not self.done:
                    w.cond.wait()
            finally:
                w.count -= 1

    def finish(self, ok: bool) -> None:
        self.ok = ok
        self.done = True
        w = self._waiters
        if w.count:
            with w.cond:
                w.cond.notify_all()


def parse_features(args: Sequence[str]) -> tuple[bool, bool]:
    """parse_snapshot_features: `[<#feature args> [<arg>]*]` -> (zeroes_cow, passdown)."""
    if not args:
        return False, False
    # dm_read_arg_group: "%u" in 0..2 and at least that many arguments left.
    text = args[0].strip()
    body = text[1:] if text.startswith("+") else text
    if not body.isascii() or not body.isdigit() or int(body) > 2 or len(args) - 1 < int(body):
        raise TargetError("Invalid number of feature arguments")
    zeroes = passdown = False
    for name in args[1:1 + int(body)]:
        if name.lower() == "discard_zeroes_cow":
            zeroes = True
        elif name.lower() == "discard_passdown_origin":
            passdown = True
        else:
            raise TargetError("Unrecognised feature requested")
    if passdown and not zeroes:
        raise TargetError("discard_passdown_origin feature depends on discard_zeroes_cow")
    return zeroes, passdown


class Snapshot(Target):
    """`<origin> <COW> <P|PO|N> <chunk-size> [<#feature args> [<arg>]*]`."""

    is_merge: ClassVar[bool] = False

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        super().__init__(ctx, begin, length, argv)
        if len(argv) < 4:
            raise TargetError("requires 4 or more arguments")
        self.discard_zeroes_cow, self.discard_passdown_origin = parse_features(argv[4:])
        try:
            self.origin: Underlying = ctx.get_device(argv[0])
        except OSError as e:
            raise TargetError("Cannot get origin device", e.errno or errno.ENODEV)
        self.origin_key = device_key(self.origin)
        cow_key = path_key(argv[1])
        if cow_key is not None and cow_key == self.origin_key:
            raise TargetError("COW device cannot be the same as origin device")
        try:
            self.cow: Underlying = ctx.get_device(argv[1])
        except OSError as e:
            raise TargetError("Cannot get COW device", e.errno or errno.ENODEV)
        self.cow_key = device_key(self.cow)
        if self.cow_key == self.origin_key:
            raise TargetError("COW device cannot be the same as origin device")
        try:
            self.store = create_store(argv[2], argv[3], self.cow, self.origin)
        except TargetError:
            raise TargetError("Couldn't create exception store")

        self.lock = threading.Lock()  # s->lock and the exception-table slot locks
        self._drained = threading.Condition(self.lock)  # pending exceptions, tracked I/O
        self.commit_lock = threading.Lock()  # kcopyd's single callback thread
        self.valid = True
        self.snapshot_overflowed = False
        self.merge_failed = False
        self.active = False
        self.registered = False
        self.complete: dict[int, int] = {}
        self.pending: dict[int, Pending] = {}
        self._start_seq = 0
        self._complete_seq = 0
        self._out_of_order: dict[int, Pending] = {}
        self._tracked: dict[int, int] = {}
        self._waiting = 0  # threads waiting on _drained: only then is it worth notifying
        self._buffers: list[memoryview] = []  # chunk-sized copy buffers, reused
        self._pe_waiters = Waiters()
        self._committing: list[Pending] = []  # handed to the store, not yet durable
        self._copy: Callable[[int, int, int], None]
        self._bind_copy()
        self._base = begin << SECTOR_SHIFT
        # The origin's size as last seen: a chunk below it is copied whole without asking
        # the origin its size again. Stale only upwards if the origin shrank under a live
        # snapshot (LVM refuses that): a copy failing then asks again (_recopy).
        self._origin_bytes = 0
        self.table_end = (begin + length) << SECTOR_SHIFT
        self._rd: tuple | None = None  # type: ignore[type-arg]
        self._set_geometry()

        self.registry = registry_for(ctx)
        if self.registry.register(self):
            # Exceptions arrive by handover at resume; the chunk size comes with them.
            self.store.set_chunk_size(0)
            self._set_geometry()
            return
        try:
            r = self.store.read_metadata(self._add_exception)
        except StoreError as e:
            self.registry.unregister(self)
            raise TargetError("Failed to read snapshot metadata", e.errno)
        if r > 0:
            self.valid = False
            self._update_read_path()
            log.warning("snapshots: Snapshot is marked invalid.")
        if not self.store.chunk_size:
            self.registry.unregister(self)
            raise TargetError("Chunk size not set")
        self._set_geometry()

    def _set_geometry(self) -> None:
        cs = self.store.chunk_size
        self.chunk_bytes = cs << SECTOR_SHIFT
        self.chunk_byte_shift = (self.chunk_bytes.bit_length() - 1) if cs else 63
        self._mask = self.chunk_bytes - 1 if cs else 0
        self._update_read_path()

    def _add_exception(self, old: int, new: int) -> None:
        self.complete[old] = new

    def _table_size(self) -> int:
        """Size of this snapshot's whole table (dm_table_get_size), in bytes."""
        size = getattr(self.ctx, "size", None)  # the engine's Table; see the report
        if not isinstance(size, int):
            size = self.begin + self.length
        return size << SECTOR_SHIFT

    def _update_read_path(self) -> None:
        """What the lock-free read path needs, in one tuple; None while invalid."""
        self._rd = (self._base, self.chunk_byte_shift, self.complete,
                    self.origin.read) if self.valid else None

    # ---- exceptions
    def _insert_pending(self, chunk: int) -> Pending | None:
        """__insert_pending_exception; caller holds the lock. None: the COW is full."""
        new = self.store.prepare_exception()
        if new is None:
            return None
        pe = Pending(chunk, new, self._start_seq, self._pe_waiters)
        self._start_seq += 1
        self.pending[chunk] = pe
        return pe

    def _copy_out(self, pe: Pending) -> None:
        """start_copy + copy_callback: origin chunk -> its COW chunk, then commit."""
        cb = self.chunk_bytes
        src = pe.old * cb
        count = min(cb, self.origin.size - src)
        try:
            if count <= 0:
                raise _eio()  # past the origin's end: the kernel's copy fails there too
            self._copy(src, pe.new * cb, count)
            error = False
        except OSError:
            error = True
        self._copy_done(pe, error)

    def _recopy(self, src: int, dst: int) -> bool:
        """After a failed copy: if the origin shrank since we last asked its size, copy
        what is left of the chunk (as the kernel would have). True: still an error."""
        size = self.origin.size
        if size == self._origin_bytes or size <= src:
            return True
        self._origin_bytes = size
        try:
            self._copy(src, dst, min(self.chunk_bytes, size - src))
        except OSError:
            return True
        return False

    def _bind_copy(self) -> None:
        """Choose how chunks are copied: copy_file_range between two plain files on a file
        system where it copies (one syscall, no Python buffer), else a read into a reused
        buffer and a write."""
        origin_fd, cow_fd = _file_fd(self.origin), _file_fd(self.cow)
        origin_read, cow_write = self.origin.read, self.cow.write
        bufs = self._buffers

        def copy_buffered(src: int, dst: int, count: int) -> None:
            cb = self.chunk_bytes
            try:
                buf = bufs.pop()  # list.pop/append are atomic: a lock-free free list
                if len(buf) != cb:  # left from before a handover changed the chunk size
                    buf = memoryview(bytearray(cb))
            except IndexError:
                buf = memoryview(bytearray(cb))
            try:
                view = buf[:count] if count != cb else buf
                origin_read(src, view)
                if cow_fd is None or pwritev(cow_fd, (view,), dst) != count:
                    cow_write(dst, view)  # a mapped device, or a short write
            finally:
                bufs.append(buf)

        def copy_cfr(src: int, dst: int, count: int) -> None:
            assert origin_fd is not None and cow_fd is not None
            try:
                if copy_file_range(origin_fd, cow_fd, count, src, dst) == count:
                    return
            except OSError as e:
                if e.errno not in _CFR_UNSUPPORTED:
                    raise
                self._copy = copy_buffered  # e.g. another file system: buffered from now on
            # A short copy (end of file, or interrupted): the buffered copy redoes it all
            # and tells a read error from a write error.
            copy_buffered(src, dst, count)

        pwritev, copy_file_range = os.pwritev, os.copy_file_range
        both_files = origin_fd is not None and cow_fd is not None \
            and fs_type(origin_fd) in _COPYING_FS and fs_type(cow_fd) in _COPYING_FS
        self._copy = copy_cfr if both_files else copy_buffered

    def _copy_done(self, pe: Pending, error: bool) -> None:
        """Hand exceptions to the store strictly in allocation order; complete each group
        the store has made durable (one exception, or all pending ones together)."""
        with self.commit_lock:
            pe.copy_error = error
            if pe.seq != self._complete_seq:
                self._out_of_order[pe.seq] = pe
                return
            self._complete_seq += 1
            commit = self.store.commit_exception
            group = self._committing
            group.append(pe)
            ok = commit(pe.old, pe.new, not error)
            if ok is not None:
                self._committing = []
                self._complete(group, ok)
            ooo = self._out_of_order
            while ooo and self._complete_seq in ooo:
                nxt = ooo.pop(self._complete_seq)
                self._complete_seq += 1
                group = self._committing
                group.append(nxt)
                ok = commit(nxt.old, nxt.new, not nxt.copy_error)
                if ok is not None:
                    self._committing = []
                    self._complete(group, ok)

    def _complete(self, group: list[Pending], success: bool) -> None:
        """pending_complete for a committed group: reads of these chunks go to the COW from
        now on, and the origin may be overwritten (readers re-check after an origin read)."""
        if not success:
            self.invalidate(errno.EIO)
        with self.lock:
            complete, pending = self.complete, self.pending  # (a handover swaps tables)
            ok = success and self.valid
            for pe in group:
                if ok:
                    complete[pe.old] = pe.new
                del pending[pe.old]
            if self._waiting and not pending:
                self._drained.notify_all()
        for pe in group:
            pe.finish(ok)

    def origin_chunk(self, chunk: int) -> None:
        """An origin write is about to change ``chunk``: make sure it is copied out first.

        Every first write to the origin comes here, so _insert_pending, _copy_out,
        _copy_done and _complete are inline for the usual case: one writer, whose
        exception is the next in order and the only one in flight. Locks are taken with
        acquire/release, which costs less than `with` here (no __exit__ call).
        """
        lock = self.lock
        lock.acquire()
        try:
            if not self.valid or not self.active or not self.registered \
                    or chunk in self.complete:
                return
            pe = self.pending.get(chunk)
            if pe is not None:  # another writer is copying it: wait for its commit
                mine = False
            else:
                mine = True
                alloc = self.store.prepare_exception()
                if alloc is not None:
                    new = alloc
                    seq = self._start_seq
                    pe = self.pending[chunk] = Pending(chunk, new, seq, self._pe_waiters)
                    self._start_seq = seq + 1
        finally:
            lock.release()
        if pe is None:
            self.invalidate(errno.ENOMEM)
            return
        if not mine:
            pe.wait()
            return
        cb = self.chunk_bytes
        src = chunk * cb
        try:
            if src + cb > self._origin_bytes:  # the last chunk, or the origin has grown
                self._origin_bytes = self.origin.size
            count = self._origin_bytes - src
            if count <= 0:
                raise _eio()  # past the origin's end: the kernel's copy fails there too
            self._copy(src, new * cb, cb if count > cb else count)
            error = False
        except OSError:
            error = self._recopy(src, new * cb)
        commit_lock = self.commit_lock
        commit_lock.acquire()
        try:
            fast = not (seq != self._complete_seq or self._committing or self._out_of_order)
            if fast:
                self._complete_seq = seq + 1
                ok = self.store.commit_exception(chunk, new, not error)
                if ok is None:  # a group commit: the last of the group completes us
                    self._committing.append(pe)
                elif ok:
                    lock.acquire()
                    try:
                        if self.valid:
                            self.complete[chunk] = new
                        else:
                            ok = False
                        del self.pending[chunk]
                        if self._waiting and not self.pending:
                            self._drained.notify_all()
                    finally:
                        lock.release()
                    # pe.finish(ok), inline
                    pe.ok = ok
                    pe.done = True
                    if self._pe_waiters.count:
                        pe.finish(ok)
                else:
                    self._complete([pe], False)
        finally:
            commit_lock.release()
        if not fast:
            self._copy_done(pe, error)
        if not pe.done:
            pe.wait()

    def invalidate(self, err: int) -> None:
        """__invalidate_snapshot: the snapshot fails all I/O; the origin is untouched."""
        with self.lock:
            if not self.valid:
                return
            if err == errno.EIO:
                log.error("snapshots: Invalidating snapshot: Error reading/writing.")
            elif err == errno.ENOMEM:
                log.error("snapshots: Invalidating snapshot: Unable to allocate exception.")
            self.store.drop_snapshot()
            self.valid = False
            self._update_read_path()
        self.ctx.event()

    # ---- tracked chunks: writes to the COW a merge must wait for
    def _track(self, chunk: int) -> None:
        self._tracked[chunk] = self._tracked.get(chunk, 0) + 1

    def _untrack(self, chunk: int) -> None:
        with self.lock:
            n = self._tracked[chunk] - 1
            if n:
                self._tracked[chunk] = n
            else:
                del self._tracked[chunk]
                if self._waiting:
                    self._drained.notify_all()

    # ---- reporting
    def status(self, kind: StatusType, noflush: bool = False) -> str:
        if kind is StatusType.INFO:
            with self.lock:
                if not self.valid:
                    return "Invalid"
                if self.merge_failed:
                    return "Merge failed"
                if self.snapshot_overflowed:
                    return "Overflow"
                total, allocated, meta = self.store.usage()
                return f"{allocated}/{total} {meta}"
        if kind is StatusType.IMA:
            v = ".".join(map(str, self.version))
            yn = {True: "y", False: "n"}
            return (f"target_name={self.name},target_version={v},"
                    f"snap_origin_name={self.origin.name},snap_cow_name={self.cow.name},"
                    f"snap_valid={yn[self.valid]},snap_merge_failed={yn[self.merge_failed]},"
                    f"snapshot_overflowed={yn[self.snapshot_overflowed]};")
        return ""

    def table(self) -> str:
        line = f"{self.origin.name} {self.cow.name} {self.store.table_args()}"
        features = [name for name, on in (("discard_zeroes_cow", self.discard_zeroes_cow),
                                          ("discard_passdown_origin",
                                           self.discard_passdown_origin)) if on]
        if features:
            line += f" {len(features)} " + " ".join(features)
        return line

    def takes_discards(self) -> bool:
        # snapshot_ctr (snapshot and snapshot-merge) sets num_discard_bios only with
        # discard_zeroes_cow; the origin and the COW must then take discards.
        return self.discard_zeroes_cow and self.devices_take_discards()

    def iterate_devices(self) -> list[tuple[Underlying, int, int]]:
        return [(self.origin, 0, self.length),
                (self.cow, 0, self.cow.size >> SECTOR_SHIFT)]

    # ---- lifecycle
    def preresume(self) -> None:
        with self.registry.lock:
            _count, src, dest, _merging = self.registry.find_sharing_cow(self)
            if src is not None and dest is not None:
                if self is src:
                    log.error("snapshots: Unable to resume snapshot source until "
                              "handover completes.")
                    raise TargetError("handover pending", errno.EINVAL)
                if not _suspended(src):
                    log.error("snapshots: Unable to perform snapshot handover until "
                              "source is suspended.")
                    raise TargetError("handover source not suspended", errno.EINVAL)

    def resume(self) -> None:
        """snapshot_resume: take over a sharing table's exceptions, then go active."""
        reg = self.registry
        with reg.lock:
            entry = reg.lookup(self.origin_key)
            _count, src, dest, merging = reg.find_sharing_cow(self)
        restart = None
        if entry is not None:
            # The kernel suspends the origin's device here; drain origin writes instead.
            entry.gate.close()
            if merging is not None and merging is not self and merging.merge_running():
                restart = merging
                merging.stop_merge()
        try:
            with reg.lock:
                _count, src, dest, _m = reg.find_sharing_cow(self)
                if src is not None and dest is not None:
                    _handover(src, dest)
        finally:
            if restart is not None:
                restart.start_merge()
            if entry is not None:
                entry.gate.open()
        reg.reregister(self)
        with self.lock:
            self.table_end = self._table_size()
            self._update_read_path()
            self.active = True

    def destroy(self) -> None:
        reg = self.registry
        with reg.lock:
            _count, src, dest, _m = reg.find_sharing_cow(self)
            if src is self and dest is not None:
                with dest.lock:
                    dest.valid = False
                    dest._update_read_path()
                log.error("snapshots: Cancelling snapshot handover.")
        if self.is_merge:
            self.stop_merge()
        reg.unregister(self)
        with self.lock:
            while self.pending:
                self.wait_drained()

    def wait_drained(self) -> None:
        """Wait on _drained (caller holds the lock), counted so wakers know to notify."""
        self._waiting += 1
        try:
            self._drained.wait()
        finally:
            self._waiting -= 1

    # ---- merge hooks (snapshot-merge overrides)
    def merge_running(self) -> bool:
        return False

    def stop_merge(self) -> None:
        pass

    def start_merge(self) -> None:
        pass


def _suspended(snap: Snapshot) -> bool:
    """dm_suspended(snap->ti): is the table's device suspended? (see the report)"""
    md = getattr(snap.ctx, "md", None)
    return bool(getattr(md, "suspended", True))


def _handover(src: Snapshot, dest: Snapshot) -> None:
    """__handover_exceptions: swap exception tables and stores; the source goes invalid."""
    with src.lock, dest.lock:
        src.complete, dest.complete = dest.complete, src.complete
        src.store, dest.store = dest.store, src.store
        # The destination keeps its own table's overflow setting.
        dest.store.userspace_supports_overflow = src.store.userspace_supports_overflow
        for s in (src, dest):
            s.store.cow = s.cow
            s.store.origin = s.origin
        dest.valid = src.valid
        dest.snapshot_overflowed = src.snapshot_overflowed
        src.valid = False
        dest._set_geometry()
        src._set_geometry()
