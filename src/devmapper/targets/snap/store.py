"""The exception-store interface and its factory (dm-exception-store.c).

A store allocates COW chunks for new exceptions, records completed ones (persistently or
not), reports usage, and for merging hands completed exceptions back newest first. Chunk
sizes are in sectors, as in the kernel; chunk numbers count chunk-sized units of the COW.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from devmapper.targets.base import SECTOR_SHIFT, TargetError, parse_uint

if TYPE_CHECKING:
    from collections.abc import Callable

    from devmapper.targets.base import Underlying

log = logging.getLogger("devmapper.kernel")

INT_MAX = (1 << 31) - 1


class StoreError(Exception):
    """A store failure with the errno the kernel returns (-ENXIO bad magic, -EINVAL ...)."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


def check_chunk_size(chunk_size: int, cow: Underlying, origin: Underlying) -> str | None:
    """dm_exception_store_set_chunk_size's checks: the error text, or None when valid."""
    if chunk_size <= 0 or chunk_size & (chunk_size - 1):
        return "Chunk size is not a power of 2"
    if chunk_size % (cow.logical_block_size >> SECTOR_SHIFT) or \
            chunk_size % (origin.logical_block_size >> SECTOR_SHIFT):
        return "Chunk size is not a multiple of device blocksize"
    if chunk_size > INT_MAX >> SECTOR_SHIFT:
        return "Chunk size is too high"
    return None


class ExceptionStore:
    """Base class: struct dm_exception_store plus its type's operations."""

    #: Whether snapshot-merge can use this store (prepare_merge/commit_merge exist).
    supports_merge = False

    def __init__(self, cow: Underlying, origin: Underlying, chunk_size: int) -> None:
        # The snapshot rebinds cow/origin on handover (the kernel's store->snap = dest).
        self.cow = cow
        self.origin = origin
        self.userspace_supports_overflow = False
        self.chunk_size = 0
        self.chunk_shift = 0
        self.chunk_bytes = 0
        if chunk_size:
            self.set_chunk_size(chunk_size)
        # The kernel's pending_count (prepared, not yet committed) as two counters, each
        # written under one lock only: prepared under the snapshot's lock, committed under
        # its commit lock. A stale read of `prepared` can only cause an extra area write.
        self.prepared = 0
        self.committed = 0

    @property
    def cow(self) -> Underlying:
        return self._cow

    @cow.setter
    def cow(self, dev: Underlying) -> None:
        self._cow = dev
        # A file or block device's descriptor: commits then make their syscalls directly.
        fd = getattr(dev, "fd", None)
        self._cow_fd: int | None = fd if isinstance(fd, int) else None

    def set_chunk_size(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.chunk_shift = max(chunk_size.bit_length() - 1, 0)
        self.chunk_bytes = chunk_size << SECTOR_SHIFT

    def cow_sectors(self) -> int:
        return self._cow.size >> SECTOR_SHIFT

    # ---- the type's operations
    def read_metadata(self, add: Callable[[int, int], None]) -> int:
        """Load exceptions through ``add(old, new)``: 0 valid, 1 marked invalid. Raises."""
        raise NotImplementedError

    def prepare_exception(self) -> int | None:
        """A free COW chunk for a new exception, or None when the COW is full.

        Called under the snapshot's lock (the kernel's pe_allocation_lock).
        """
        raise NotImplementedError

    def commit_exception(self, old: int, new: int, valid: bool) -> bool | None:
        """Record a copied exception (``valid`` False: its copy failed).

        Returns None while the record waits to be written together with later ones (a
        group commit), else whether every exception recorded since the last such answer
        is now durable. Calls are serialised by the snapshot's commit lock and come in
        allocation order, as kcopyd's single callback thread delivers them to the kernel's
        store.
        """
        raise NotImplementedError

    def prepare_merge(self) -> tuple[int, int, int]:
        """(count, last old chunk, last new chunk) of the newest run of consecutive
        exceptions; count 0 when nothing is left. Raises OSError on a read error."""
        raise NotImplementedError

    def commit_merge(self, nr_merged: int) -> None:
        raise NotImplementedError

    def drop_snapshot(self) -> None:
        """Mark the store invalid (persistently where it can)."""

    def usage(self) -> tuple[int, int, int]:
        """(total, allocated, metadata) in sectors."""
        raise NotImplementedError

    def table_args(self) -> str:
        raise NotImplementedError


def create_store(type_arg: str, chunk_arg: str, cow: Underlying,
                 origin: Underlying) -> ExceptionStore:
    """dm_exception_store_create from `<P|PO|N> <chunk_size>`.

    Raises TargetError; snapshot_ctr replaces every text with "Couldn't create exception
    store", so the detail only reaches the log here, as the kernel's does not at all.
    """
    from devmapper.targets.snap.persistent import PersistentStore
    from devmapper.targets.snap.transient import TransientStore

    kind = type_arg[:1].upper()
    cls: type[PersistentStore] | type[TransientStore]
    if kind == "P":
        cls = PersistentStore
    elif kind == "N":
        cls = TransientStore
    else:
        raise TargetError("Exception store type is not P or N")
    chunk_size = parse_uint(chunk_arg, "Invalid chunk size")
    if chunk_size:
        problem = check_chunk_size(chunk_size, cow, origin)
        if problem:
            raise TargetError(problem)
    return cls(cow, origin, chunk_size, type_arg[1:] or None)

