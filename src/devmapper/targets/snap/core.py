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
import threading
from typing import TYPE_CHECKING, ClassVar

from devmapper.targets.base import SECTOR_SHIFT, StatusType, Target, TargetError
from devmapper.targets.snap.registry import device_key, path_key, registry_for
from devmapper.targets.snap.store import StoreError, create_store

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import TargetContext, Underlying

log = logging.getLogger("devmapper.kernel")


def _eio() -> OSError:
    return OSError(errno.EIO, "I/O error")


class Waiters:
    """Threads waiting for pending exceptions to complete; counted so that a completion
    nobody waits for costs no lock at all (the usual, uncontended case)."""

    __slots__ = ("cond", "count")

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.count = 0


class Pending:
    """dm_snap_pending_exception: a chunk being copied into the COW."""

    __slots__ = ("old", "new", "seq", "copy_error", "ok", "done", "_waiters")

    def __init__(self, old: int, new: int, seq: int, waiters: Waiters) -> None:
        self.old = old
        self.new = new
        self.seq = seq
        self.copy_error = False
        self.ok = False
        self.done = False
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
        self._base = begin << SECTOR_SHIFT
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
        error = False
        bufs = self._buffers
        try:
            buf = bufs.pop()  # list.pop/append are atomic: a lock-free free list
        except IndexError:
            buf = memoryview(bytearray(cb))
        if len(buf) != cb:  # left from before a handover changed the chunk size
            buf = memoryview(bytearray(cb))
        try:
            view = buf[:count] if count != cb else buf
            self.origin.read(src, view)
            self.cow.write(pe.new * cb, view)
        except OSError:
            error = True
        finally:
            if len(buf) == self.chunk_bytes:
                bufs.append(buf)
        self._copy_done(pe, error)

    def _copy_done(self, pe: Pending, error: bool) -> None:
        """Hand exceptions to the store strictly in allocation order."""
        with self.commit_lock:
            pe.copy_error = error
            if pe.seq != self._complete_seq:
                self._out_of_order[pe.seq] = pe
                return
            self._complete_seq += 1
            commit = self.store.commit_exception
            commit(pe.old, pe.new, not error, self._pending_complete, pe)
            ooo = self._out_of_order
            while ooo and self._complete_seq in ooo:
                nxt = ooo.pop(self._complete_seq)
                self._complete_seq += 1
                commit(nxt.old, nxt.new, not nxt.copy_error, self._pending_complete, nxt)

    def _pending_complete(self, pe: Pending, success: bool) -> None:
        error = not success
        if error:
            self.invalidate(errno.EIO)
        with self.lock:
            if not error:
                if self.valid:
                    # From now on reads of this chunk go to the COW, and the origin may
                    # be overwritten (readers re-check this table after an origin read).
                    self.complete[pe.old] = pe.new
                else:
                    error = True
            del self.pending[pe.old]
            if self._waiting and not self.pending:
                self._drained.notify_all()
        pe.finish(not error)

    def origin_chunk(self, chunk: int) -> None:
        """An origin write is about to change ``chunk``: make sure it is copied out first."""
        with self.lock:
            if not self.valid or not self.active or not self.registered \
                    or chunk in self.complete:
                return
            pe = self.pending.get(chunk)
            mine = pe is None
            if mine:
                # _insert_pending, inline: this is every first write's path.
                new = self.store.prepare_exception()
                if new is not None:
                    pe = Pending(chunk, new, self._start_seq, self._pe_waiters)
                    self._start_seq += 1
                    self.pending[chunk] = pe
        if pe is None:
            self.invalidate(errno.ENOMEM)
            return
        if mine:
            self._copy_out(pe)
        if not pe.done:  # usually done: a lone writer commits its own exception
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
