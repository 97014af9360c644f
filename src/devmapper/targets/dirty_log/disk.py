"""The disk dirty log (dm-log.c's "disk" type), in the kernel's on-disk format.

Layout from sector 0 of the log device, little-endian:
  0   le32 magic 0x4D695272 ("MiRr" read as a number), le32 version 2, le64 nr_regions
  1024  the clean bitset, one bit per region (bit set = clean), sized in 64-bit words
The log is read and written as one buffer of 1024 + bitset bytes rounded up to the device's
logical block size; bytes the format does not define are carried over from what was read.
"""

from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING

from devmapper.targets.dirty_log.core import (
    BITS_PER_LONG,
    CoreLog,
    LogError,
    Sync,
    popcount,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager

    from devmapper.targets.base import TargetContext, Underlying

MIRROR_MAGIC = 0x4D695272
MIRROR_DISK_VERSION = 2
LOG_OFFSET = 1024  # bytes: LOG_OFFSET (2) sectors
HEADER = struct.Struct("<IIQ")


def log_buffer_size(region_count: int, logical_block_size: int = 512) -> int:
    bitset = -(-region_count // BITS_PER_LONG) * BITS_PER_LONG // 8
    return -(-(LOG_OFFSET + bitset) // logical_block_size) * logical_block_size


def encode_log(clean: Sequence[bool], logical_block_size: int = 512) -> bytes:
    """A disk log image as the kernel writes it for these clean flags (tests, tools)."""
    buf = bytearray(log_buffer_size(len(clean), logical_block_size))
    HEADER.pack_into(buf, 0, MIRROR_MAGIC, MIRROR_DISK_VERSION, len(clean))
    for r, ok in enumerate(clean):
        if ok:
            buf[LOG_OFFSET + (r >> 3)] |= 1 << (r & 7)
    return bytes(buf)


def decode_log(data: bytes) -> tuple[int, int, int, list[bool]]:
    """(magic, version, nr_regions, clean flags) from a log image."""
    magic, version, nr = HEADER.unpack_from(data, 0)
    bits = data[LOG_OFFSET:]
    n = min(nr, len(bits) * 8)
    return magic, version, nr, [bool(bits[r >> 3] & (1 << (r & 7))) for r in range(n)]


class DiskLog(CoreLog):
    type_name = "disk"
    persistent = True

    def __init__(self, ctx: TargetContext, ti_len: int, argv: Sequence[str]) -> None:
        if len(argv) < 2 or len(argv) > 3:
            raise LogError("wrong number of arguments to disk dirty region log")
        try:
            self.dev: Underlying = ctx.get_device(argv[0])
        except OSError:
            raise LogError("")  # dm_get_device failures print nothing here
        self._parse(ti_len, argv[1:])
        self.buf_size = -(-(LOG_OFFSET + self.bitset_size) // self.dev.logical_block_size) \
            * self.dev.logical_block_size
        if self.buf_size > self.dev.size:
            raise LogError(f"log device {self.dev.name} too small: need {self.buf_size} bytes")
        # One buffer holds header and bitset; clean_bits is a window onto it, as in dm-log.c.
        self.buf = bytearray(self.buf_size)
        self._init_bits()
        self.clean_bits = memoryview(self.buf)[LOG_OFFSET:LOG_OFFSET + self.bitset_size]
        self.clean_bits[:] = b"\xff" * self.bitset_size
        self.log_dev_failed = False
        self.log_dev_flush_failed = False
        self.magic, self.version, self.nr_regions = MIRROR_MAGIC, MIRROR_DISK_VERSION, 0
        self.flushed_gen = 0
        self._io_lock = threading.Lock()
        self.lock: AbstractContextManager[object] = threading.Lock()
        self.flush_legs: Callable[[], bool] = lambda: True
        self.event: Callable[[], None] = lambda: None

    def bind(self, lock: AbstractContextManager[object], flush_legs: Callable[[], bool],
             event: Callable[[], None]) -> None:
        """The mirror's state lock, its leg flush (log->flush_callback_fn) and its event."""
        self.lock = lock
        self.flush_legs = flush_legs
        self.event = event

    def _fail_device(self) -> None:
        if not self.log_dev_failed:
            self.log_dev_failed = True
            self.event()

    def _read_header(self) -> bool:
        try:
            self.dev.read(0, memoryview(self.buf))
        except OSError:
            return False
        magic, version, nr = HEADER.unpack_from(self.buf, 0)
        self.magic, self.version, self.nr_regions = magic, version, nr
        if self.sync is not Sync.DEFAULT or magic != MIRROR_MAGIC:
            self.magic, self.version, self.nr_regions = MIRROR_MAGIC, MIRROR_DISK_VERSION, 0
        if self.version == 1:  # version 1 is version 2 on little-endian machines
            self.version = 2
        return self.version == MIRROR_DISK_VERSION

    def resume(self) -> int:
        """disk_resume: adopt the on-disk clean bits as the sync state, rewrite the header."""
        with self._io_lock, self.lock:
            if not self._read_header():
                self._fail_device()
                self.nr_regions = 0
            bit = 0xFF if self.sync is Sync.NOSYNC else 0
            bits = self.clean_bits
            # Regions the log does not cover yet (new log, or the device grew).
            for r in range(self.nr_regions, self.region_count):
                if bit:
                    bits[r >> 3] |= 1 << (r & 7)
                else:
                    bits[r >> 3] &= ~(1 << (r & 7)) & 0xFF
            if self.nr_regions < self.region_count:
                if bit:
                    self.touched_cleaned = True
                else:
                    self.touched_dirtied = True
            if self.region_count % BITS_PER_LONG:
                self.touched_dirtied = True
            # Bits past the end, up to the word boundary, are cleared (the device shrank).
            for r in range(self.region_count, self.bitset_size * 8):
                bits[r >> 3] &= ~(1 << (r & 7)) & 0xFF
            self.sync_bits[:] = bits
            self.sync_count = popcount(bits)
            self.sync_search = 0
            self.nr_regions = self.region_count
            HEADER.pack_into(self.buf, 0, self.magic, self.version, self.nr_regions)
            image = bytes(self.buf)
        return self._write_log(image, flush=True)

    def _write_log(self, image: bytes, flush: bool) -> int:
        """rw_header + the log device's flush: 0, or -EIO with the device failed."""
        try:
            self.dev.write(0, memoryview(image))
        except OSError:
            self._fail_device()
            return -5
        if flush:
            try:
                self.dev.flush()
            except OSError:
                self.log_dev_flush_failed = True
                self._fail_device()
                return -5
        return 0

    def postsuspend(self) -> int:
        return self.flush()

    def flush(self, need_gen: int | None = None) -> int:
        """disk_flush: write header + bitset if changed; legs are flushed first when regions
        were marked clean, and the log device after when regions were marked dirty.

        ``need_gen``: return at once if a flush that began after that mark already finished
        (concurrent writers share one log write, like a group commit)."""
        with self._io_lock:
            if need_gen is not None and self.flushed_gen >= need_gen:
                return 0
            with self.lock:
                gen = self.gen
                cleaned, dirtied = self.touched_cleaned, self.touched_dirtied
                if not cleaned and not dirtied:
                    self.flushed_gen = gen
                    return 0
                image = bytes(self.buf)
                self.touched_cleaned = False
            # Regions marked clean in this image had their writes complete before it was
            # taken: flushing the legs now makes them durable before the log says so.
            if cleaned and not self.flush_legs():
                with self.lock:
                    # Which regions are really clean is unknown now: all become dirty.
                    self.flush_failed = True
                    self.clean_bits[:] = bytes(self.bitset_size)
                    self.touched_dirtied = dirtied = True
                    image = bytes(self.buf)
            if self._write_log(image, flush=dirtied) < 0:
                return -5
            if dirtied:
                with self.lock:
                    if self.gen == gen:
                        self.touched_dirtied = False
            self.flushed_gen = gen
            return 0

    def status_info(self) -> str:
        state = "F" if self.log_dev_flush_failed else "D" if self.log_dev_failed else "A"
        return f"3 disk {self.dev.name} {state}"

    def status_table(self) -> str:
        nargs = 2 if self.sync is Sync.DEFAULT else 3
        return f"disk {nargs} {self.dev.name} {self.region_size} {self._sync_word()}"
