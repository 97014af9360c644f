"""The persistent exception store: the kernel's COW format (dm-snap-persistent.c), exactly.

Layout, little-endian, in chunks of ``chunk_size`` sectors:

- chunk 0: header {le32 magic "SnAp" (0x70416e53), le32 valid, le32 version 1,
  le32 chunk_size}, the rest of the chunk zero;
- metadata area i at chunk 1 + (epa + 1) * i, where epa = chunk bytes / 16, each followed by
  the epa data chunks it describes; entries are {le64 old_chunk, le64 new_chunk}, and the
  first entry with new_chunk == 0 ends the table.

Commit order is the kernel's: the copied data is already on the COW when an entry is added
to the in-memory area; the area is written with a preceding flush and FUA once nothing else
is in flight (or the area is full, after zeroing the next one on disk); only then are the
exceptions completed and the writes that waited for them released.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from typing import TYPE_CHECKING

from devmapper.targets.base import SECTOR_SHIFT, TargetError
from devmapper.targets.snap.store import ExceptionStore, StoreError, check_chunk_size

if TYPE_CHECKING:
    from collections.abc import Callable

    from devmapper.targets.base import Underlying

log = logging.getLogger("devmapper.kernel")

SNAP_MAGIC = 0x70416E53
SNAPSHOT_DISK_VERSION = 1
NUM_SNAPSHOT_HDR_CHUNKS = 1
DM_CHUNK_SIZE_DEFAULT_SECTORS = 32  # 16 KiB
HEADER = struct.Struct("<IIII")
ENTRY = struct.Struct("<QQ")


class PersistentStore(ExceptionStore):
    supports_merge = True

    def __init__(self, cow: Underlying, origin: Underlying, chunk_size: int,
                 options: str | None) -> None:
        super().__init__(cow, origin, chunk_size)
        if options is not None:
            # persistent_ctr: only an 'O' (overflow) option exists.
            if options[:1].upper() != "O":
                log.error("persistent snapshot: Unsupported persistent store option: %s",
                          options)
                raise TargetError("Exception store type constructor failed")
            self.userspace_supports_overflow = True
        self.valid = 1
        self.version = SNAPSHOT_DISK_VERSION
        self.next_free = NUM_SNAPSHOT_HDR_CHUNKS + 1  # header and the first area
        self.current_area = 0
        self.current_committed = 0
        self.exceptions_per_area = 0
        self.area = bytearray()

    # ---- chunk I/O on the COW device
    def _chunk_io_read(self, chunk: int) -> bytearray:
        buf = bytearray(self.chunk_bytes)
        self.cow.read(chunk * self.chunk_bytes, memoryview(buf))
        return buf

    def _chunk_io_write(self, chunk: int, data: bytes | bytearray, flush_fua: bool) -> None:
        if flush_fua:
            # REQ_PREFLUSH | REQ_FUA: everything written before (the copied data) is
            # durable before this area is, and this area is durable when we return.
            self.cow.flush()
        self.cow.write(chunk * self.chunk_bytes, memoryview(data), flush_fua)

    def area_location(self, area: int) -> int:
        return NUM_SNAPSHOT_HDR_CHUNKS + (self.exceptions_per_area + 1) * area

    def _skip_metadata(self) -> None:
        if self.next_free % (self.exceptions_per_area + 1) == NUM_SNAPSHOT_HDR_CHUNKS:
            self.next_free += 1

    def _zero_disk_area(self, area: int) -> None:
        self._chunk_io_write(self.area_location(area), bytes(self.chunk_bytes), False)

    # ---- header
    def _read_header(self) -> bool:
        """read_header: True for a new (all-zero magic) snapshot."""
        supplied = bool(self.chunk_size)
        if not supplied:
            self.set_chunk_size(max(DM_CHUNK_SIZE_DEFAULT_SECTORS,
                                    self.cow.logical_block_size >> SECTOR_SHIFT))
        header = self._chunk_io_read(0)
        magic, valid, version, chunk_size = HEADER.unpack_from(header)
        if magic == 0:
            return True
        if magic != SNAP_MAGIC:
            log.warning("persistent snapshot: Invalid or corrupt snapshot")
            raise StoreError(errno.ENXIO, "Invalid or corrupt snapshot")
        self.valid = valid
        self.version = version
        if chunk_size == self.chunk_size:
            return False
        if supplied:
            log.warning("persistent snapshot: chunk size %d in device metadata overrides "
                        "table chunk size of %d.", chunk_size, self.chunk_size)
        problem = check_chunk_size(chunk_size, self.cow, self.origin)
        if problem:
            log.error("persistent snapshot: invalid on-disk chunk size %d: %s.",
                      chunk_size, problem)
            raise StoreError(errno.EINVAL, problem)
        self.set_chunk_size(chunk_size)
        return False

    def _write_header(self) -> None:
        header = bytearray(self.chunk_bytes)
        HEADER.pack_into(header, 0, SNAP_MAGIC, self.valid, self.version, self.chunk_size)
        self._chunk_io_write(0, header, False)

    # ---- loading
    def read_metadata(self, add: Callable[[int, int], None]) -> int:
        try:
            new_snapshot = self._read_header()
            self.exceptions_per_area = self.chunk_bytes // ENTRY.size
            if new_snapshot:
                self._write_header()
                self.current_area = 0
                self.area = bytearray(self.chunk_bytes)
                self._zero_disk_area(0)
                return 0
            if self.version != SNAPSHOT_DISK_VERSION:
                log.warning("persistent snapshot: unable to handle snapshot disk version %d",
                            self.version)
                raise StoreError(errno.EINVAL, "unsupported snapshot disk version")
            if not self.valid:
                return 1
            self._read_exceptions(add)
            return 0
        except OSError as e:
            raise StoreError(e.errno or errno.EIO, str(e))

    def _read_exceptions(self, add: Callable[[int, int], None]) -> None:
        """Walk full areas; the first entry with new_chunk == 0 ends the table."""
        epa = self.exceptions_per_area
        area = 0
        next_free = self.next_free
        while True:
            buf = self._chunk_io_read(self.area_location(area))
            full = True
            for i, (old, new) in enumerate(ENTRY.iter_unpack(buf)):
                if new == 0:
                    self.current_committed = i
                    full = False
                    break
                if next_free <= new:
                    next_free = new + 1
                add(old, new)
            if not full:
                self.area = buf
                break
            area += 1
        assert self.current_committed < epa
        self.current_area = area
        self.next_free = next_free
        self._skip_metadata()

    # ---- new exceptions
    def prepare_exception(self) -> int | None:
        new = self.next_free
        if self._cow.size >> SECTOR_SHIFT < (new + 1) * self.chunk_size:
            return None
        # The next free chunk, stepping over the metadata area that follows a full one.
        nxt = new + 1
        if nxt % (self.exceptions_per_area + 1) == NUM_SNAPSHOT_HDR_CHUNKS:
            nxt += 1
        self.next_free = nxt
        self.prepared += 1
        return new

    def commit_exception(self, old: int, new: int, valid: bool) -> bool | None:
        if not valid:
            self.valid = 0
        i = self.current_committed
        ENTRY.pack_into(self.area, i * ENTRY.size, old, new)
        self.current_committed = i = i + 1
        # Group commit: while other exceptions are in flight and the area has room,
        # the last of them writes the area for everyone.
        self.committed += 1
        full = i == self.exceptions_per_area
        if self.committed < self.prepared and not full:
            return None
        if full:
            try:
                self._zero_disk_area(self.current_area + 1)
            except OSError:
                self.valid = 0
        if self.valid:
            where = (NUM_SNAPSHOT_HDR_CHUNKS + (self.exceptions_per_area + 1)
                     * self.current_area) * self.chunk_bytes
            view = memoryview(self.area)
            fd = self._cow_fd
            try:
                # REQ_PREFLUSH | REQ_FUA: the copied data is durable before the area is.
                if fd is not None:
                    os.fsync(fd)
                    n = os.pwritev(fd, (view,), where, os.RWF_DSYNC)
                    if n != len(view):
                        self._cow.write(where + n, view[n:], True)
                else:
                    self._cow.flush()
                    self._cow.write(where, view, True)
            except OSError:
                self.valid = 0
        if full:
            self.current_committed = 0
            self.current_area += 1
            self.area = bytearray(self.chunk_bytes)
        return bool(self.valid)

    # ---- merging: newest exceptions first
    def prepare_merge(self) -> tuple[int, int, int]:
        if not self.current_committed:
            if not self.current_area:
                return 0, 0, 0
            self.current_area -= 1
            self.area = self._chunk_io_read(self.area_location(self.current_area))
            self.current_committed = self.exceptions_per_area
        last_old, last_new = ENTRY.unpack_from(self.area,
                                               (self.current_committed - 1) * ENTRY.size)
        n = 1
        while n < self.current_committed:
            old, new = ENTRY.unpack_from(self.area,
                                         (self.current_committed - 1 - n) * ENTRY.size)
            if old != last_old - n or new != last_new - n:
                break
            n += 1
        return n, last_old, last_new

    def commit_merge(self, nr_merged: int) -> None:
        assert nr_merged <= self.current_committed
        for i in range(nr_merged):
            ENTRY.pack_into(self.area, (self.current_committed - 1 - i) * ENTRY.size, 0, 0)
        self._chunk_io_write(self.area_location(self.current_area), self.area, True)
        self.current_committed -= nr_merged
        # What next_free would be had every exception been committed in order: only
        # usage() reads it once merging, and alloc == meta marks the end of the merge.
        self.next_free = self.area_location(self.current_area) + self.current_committed + 1

    def drop_snapshot(self) -> None:
        self.valid = 0
        try:
            self._write_header()
        except OSError:
            log.warning("persistent snapshot: write header failed")

    def usage(self) -> tuple[int, int, int]:
        cs = self.chunk_size
        meta = (self.current_area + 1 + NUM_SNAPSHOT_HDR_CHUNKS) * cs
        return self.cow_sectors(), self.next_free * cs, meta

    def table_args(self) -> str:
        return f"{'PO' if self.userspace_supports_overflow else 'P'} {self.chunk_size}"
