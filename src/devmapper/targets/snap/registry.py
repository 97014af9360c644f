"""Origins and their snapshots (dm-snap.c's _origins and _dm_origins hashes).

The kernel keys both tables by the origin's struct block_device, of which there is one per
device: whatever table, path or mode opened it, snapshots of the same underlying device
share an entry, and a write through any snapshot-origin of that device copies chunks into
all of them. Here a key is the stable identity of an opened device: ("blk", major, minor)
for block and mapped devices, ("file", st_dev, st_ino) for regular files. A layout stacked
the wrong way round (a snapshot whose origin is the snapshot-origin device itself, say)
therefore behaves exactly as the kernel's does.

Each engine is its own "kernel": registries are kept per engine.
"""

from __future__ import annotations

import os
import stat
import threading
import weakref
from typing import TYPE_CHECKING

from devmapper.io_gate import Gate
from devmapper.targets.base import TargetError

if TYPE_CHECKING:
    from devmapper.targets.base import TargetContext, Underlying
    from devmapper.targets.snap.core import Snapshot
    from devmapper.targets.snapshot_origin import SnapshotOriginTarget


def device_key(dev: Underlying) -> object:
    """Identity of an opened device, the stand-in for bdev pointer equality."""
    md = getattr(dev, "md", None)
    if md is not None:
        return ("blk", md.major, md.minor)
    key = getattr(dev, "key", None)
    # FdDevice caches per (identity, read_only): the identity is what the kernel compares.
    if isinstance(key, tuple) and key and isinstance(key[0], tuple):
        return key[0]
    return ("obj", id(dev))


def path_key(path: str) -> object | None:
    """dm_get_dev_t: the device a table argument names, without opening it."""
    major, sep, minor = path.partition(":")
    if sep and major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit():
        return ("blk", int(major), int(minor))
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISBLK(st.st_mode):
        return ("blk", os.major(st.st_rdev), os.minor(st.st_rdev))
    if stat.S_ISREG(st.st_mode):
        return ("file", st.st_dev, st.st_ino)
    return None


class OriginEntry:
    """struct origin: the snapshots of one underlying device, largest chunk size first."""

    __slots__ = ("key", "snapshots", "writable", "gate")

    def __init__(self, key: object) -> None:
        self.key = key
        # Replaced, never mutated: origin writes iterate them without taking the lock.
        self.snapshots: tuple[Snapshot, ...] = ()
        #: The snapshots an origin write copies chunks into: all but a merging one.
        self.writable: tuple[Snapshot, ...] = ()
        self.gate = Gate()

    def set(self, snapshots: list[Snapshot]) -> None:
        self.snapshots = tuple(snapshots)
        self.writable = tuple(s for s in snapshots if not s.is_merge)

    def minimum_chunk_size(self) -> int:
        """__minimum_chunk_size: the smallest non-zero chunk size, 0 with no snapshots."""
        sizes = [s.store.chunk_size for s in self.snapshots if s.store.chunk_size]
        return min(sizes, default=0)


class Registry:
    """_origins (snapshots by origin) and _dm_origins (resumed snapshot-origin targets)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # _origins_lock
        self.origins: dict[object, OriginEntry] = {}
        self.dm_origins: dict[object, list[SnapshotOriginTarget]] = {}

    def lookup(self, key: object) -> OriginEntry | None:
        return self.origins.get(key)

    # ---- snapshots
    def find_sharing_cow(self, snap: Snapshot) -> tuple[int, Snapshot | None, Snapshot | None,
                                                         Snapshot | None]:
        """__find_snapshots_sharing_cow: (count, handover source, destination, merging)."""
        src = dest = merging = None
        count = 0
        entry = self.origins.get(snap.origin_key)
        if entry is None:
            return 0, None, None, None
        for s in entry.snapshots:
            if s.is_merge:
                merging = s
            if s.cow_key != snap.cow_key:
                continue
            if s.active:
                src = s
            else:
                dest = s
            count += 1
        return count, src, dest, merging

    def register(self, snap: Snapshot) -> bool:
        """register_snapshot: True when ``snap`` is a handover destination. Raises."""
        with self.lock:
            count, src, dest, merging = self.find_sharing_cow(snap)
            if count == 2 or dest is not None:
                raise TargetError("Snapshot cow pairing for exception table handover failed")
            handover = src is not None
            if handover and snap.is_merge:
                if merging is not None:
                    raise TargetError("A snapshot is already merging.")
                assert src is not None
                if not src.store.supports_merge:
                    raise TargetError("Snapshot exception store does not support "
                                      "snapshot-merge.")
            entry = self.origins.get(snap.origin_key)
            if entry is None:
                entry = self.origins[snap.origin_key] = OriginEntry(snap.origin_key)
            self._insert(entry, snap)
            snap.registered = True
            return handover

    @staticmethod
    def _insert(entry: OriginEntry, snap: Snapshot) -> None:
        # After every snapshot with a chunk size >= ours, before the first smaller one.
        snaps = list(entry.snapshots)
        at = len(snaps)
        for i, s in enumerate(snaps):
            if s.store.chunk_size < snap.store.chunk_size:
                at = i
                break
        snaps.insert(at, snap)
        entry.set(snaps)

    def reregister(self, snap: Snapshot) -> None:
        """The chunk size is known now (after a handover): move to the right place."""
        with self.lock:
            entry = self.origins[snap.origin_key]
            entry.set([s for s in entry.snapshots if s is not snap])
            self._insert(entry, snap)

    def unregister(self, snap: Snapshot) -> None:
        with self.lock:
            entry = self.origins.get(snap.origin_key)
            if entry is None:
                return
            entry.set([s for s in entry.snapshots if s is not snap])
            with snap.lock:
                snap.registered = False
            if not entry.snapshots:
                del self.origins[snap.origin_key]

    def minimum_chunk_size(self, key: object) -> int:
        with self.lock:
            entry = self.origins.get(key)
            return entry.minimum_chunk_size() if entry else 0

    # ---- snapshot-origin targets (resumed ones only, as _dm_origins)
    def add_dm_origin(self, origin: SnapshotOriginTarget) -> None:
        with self.lock:
            self.dm_origins.setdefault(origin.key, []).append(origin)

    def remove_dm_origin(self, origin: SnapshotOriginTarget) -> None:
        with self.lock:
            lst = self.dm_origins.get(origin.key, [])
            if origin in lst:
                lst.remove(origin)
            if not lst:
                self.dm_origins.pop(origin.key, None)


def do_origin(entry: OriginEntry, offset: int, length: int) -> None:
    """__origin_write for a write of ``length`` bytes at byte ``offset`` of the origin device.

    Every active, valid, non-merging snapshot of the device gets an exception for each
    chunk the write touches (below the end of the snapshot's table) before this returns, so
    the caller may then overwrite the origin. Snapshots are handled one after another, each
    exception to completion: a thread never holds an uncommitted exception in one store
    while it waits on another, so group commits cannot deadlock.
    """
    end = offset + length
    for snap in entry.writable:
        stop = snap.table_end
        if end < stop:
            stop = end
        if offset >= stop:
            continue
        shift = snap.chunk_byte_shift
        first = offset >> shift
        last = (stop - 1) >> shift
        if first == last:
            if first not in snap.complete:
                snap.origin_chunk(first)
            continue
        for chunk in range(first, last + 1):
            if chunk not in snap.complete:
                snap.origin_chunk(chunk)


_registries: weakref.WeakKeyDictionary[object, Registry] = weakref.WeakKeyDictionary()
_global = Registry()
_reg_lock = threading.Lock()


def registry_for(ctx: TargetContext) -> Registry:
    """The registry of the engine the table belongs to (one per engine, like one kernel)."""
    md = getattr(ctx, "md", None)
    engine = getattr(md, "engine", None)
    if engine is None:
        return _global
    with _reg_lock:
        reg = _registries.get(engine)
        if reg is None:
            reg = _registries[engine] = Registry()
        return reg

