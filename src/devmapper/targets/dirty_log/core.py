"""The core dirty log (dm-log.c's "core" type): region state kept in memory only.

Bitsets use the kernel's little-endian bit order (region r is bit r % 8 of byte r // 8), so
the disk log can write the clean bitset out byte for byte. The caller (the mirror) holds its
own lock around every method here except :meth:`flush`, which does its own locking.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import TargetContext

UINT_MAX = 0xFFFFFFFF
BITS_PER_LONG = 64
_NOT_FULL = re.compile(rb"[^\xff]")


class LogError(Exception):
    """A log constructor failure: the kernel prints a warning and the mirror reports
    "Error creating mirror dirty log" (EINVAL)."""


class Sync(Enum):
    DEFAULT = 0  # synchronize if necessary
    NOSYNC = 1  # devices known to be in sync
    FORCESYNC = 2  # force a full resync


def sscanf_uint(text: str, bits: int = 32) -> int | None:
    """sscanf("%u%c") == 1: ASCII digits only (no sign); the value wraps like the kernel's."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) & ((1 << 64) - 1) & ((1 << bits) - 1)


class CoreLog:
    type_name = "core"
    persistent = False

    def __init__(self, ctx: TargetContext, ti_len: int, argv: Sequence[str]) -> None:
        self._parse(ti_len, argv)
        self._init_bits()

    def _parse(self, ti_len: int, argv: Sequence[str]) -> None:
        if len(argv) < 1 or len(argv) > 2:
            raise LogError("wrong number of arguments to dirty region log")
        sync = Sync.DEFAULT
        if len(argv) > 1:
            if argv[1] == "sync":
                sync = Sync.FORCESYNC
            elif argv[1] == "nosync":
                sync = Sync.NOSYNC
            else:
                raise LogError(f"unrecognised sync argument to dirty region log: {argv[1]}")
        size = sscanf_uint(argv[0])
        # _check_region_size: a power of two, at least 2 sectors, no bigger than the target.
        if size is None or size < 2 or size > ti_len or size & (size - 1):
            raise LogError(f"invalid region size {argv[0]}")
        count = -(-ti_len // size)
        if count > UINT_MAX:
            raise LogError(f"region count exceeds limit of {UINT_MAX}")
        self.sync = sync
        self.region_size = size
        self.region_count = count
        # The kernel sizes bitsets in unsigned longs.
        self.bitset_size = -(-count // BITS_PER_LONG) * BITS_PER_LONG // 8

    def _init_bits(self) -> None:
        self.clean_bits: bytearray | memoryview = bytearray(b"\xff" * self.bitset_size)
        nosync = self.sync is Sync.NOSYNC
        self.sync_bits = bytearray((b"\xff" if nosync else b"\0") * self.bitset_size)
        self.sync_count = self.region_count if nosync else 0
        self.recovering: set[int] = set()
        self.sync_search = 0
        self.touched_dirtied = False
        self.touched_cleaned = False
        self.flush_failed = False
        #: Bumped on every region marked dirty: writers wait for a flush that covers theirs.
        self.gen = 0

    # ---- the dm_dirty_log_type operations
    def resume(self) -> int:
        self.sync_search = 0
        return 0

    def postsuspend(self) -> int:
        return 0

    def in_sync(self, region: int) -> bool:
        return bool(self.sync_bits[region >> 3] & (1 << (region & 7)))

    def is_clean(self, region: int) -> bool:
        return bool(self.clean_bits[region >> 3] & (1 << (region & 7)))

    def mark_region(self, region: int) -> None:
        self.clean_bits[region >> 3] &= ~(1 << (region & 7)) & 0xFF
        self.touched_dirtied = True
        self.gen += 1

    def clear_region(self, region: int) -> None:
        if not self.flush_failed:
            self.clean_bits[region >> 3] |= 1 << (region & 7)
            self.touched_cleaned = True

    def _next_zero(self, start: int) -> int:
        """find_next_zero_bit_le over sync_bits: region_count when there is none."""
        bits = self.sync_bits
        byte = start >> 3
        if byte >= len(bits):
            return self.region_count
        if (bits[byte] >> (start & 7)) != 0xFF >> (start & 7):
            r = start
            while bits[r >> 3] & (1 << (r & 7)):
                r += 1
            return min(r, self.region_count)
        m = _NOT_FULL.search(bits, byte + 1)
        if m is None:
            return self.region_count
        v = bits[m.start()]
        return min((m.start() << 3) + (~v & (v + 1)).bit_length() - 1, self.region_count)

    def get_resync_work(self) -> int | None:
        """The next region not in sync and not being recovered; the scan only goes forward
        (resume restarts it), as core_get_resync_work does."""
        while self.sync_search < self.region_count:
            region = self._next_zero(self.sync_search)
            self.sync_search = region + 1
            if region >= self.region_count:
                return None
            if region not in self.recovering:
                self.recovering.add(region)
                return region
        return None

    def set_region_sync(self, region: int, in_sync: bool) -> None:
        self.recovering.discard(region)
        mask = 1 << (region & 7)
        if in_sync:
            # The kernel counts unconditionally here (set_bit, then sync_count++).
            self.sync_bits[region >> 3] |= mask
            self.sync_count += 1
        elif self.sync_bits[region >> 3] & mask:
            self.sync_count -= 1
            self.sync_bits[region >> 3] &= ~mask & 0xFF

    def flush(self, need_gen: int | None = None) -> int:
        return 0

    # ---- reporting
    def _sync_word(self) -> str:
        if self.sync is Sync.DEFAULT:
            return ""
        return "nosync " if self.sync is Sync.NOSYNC else "sync "

    def status_info(self) -> str:
        return "1 core"

    def status_table(self) -> str:
        nargs = 1 if self.sync is Sync.DEFAULT else 2
        return f"core {nargs} {self.region_size} {self._sync_word()}"

    def close(self) -> None:
        pass


def popcount(data: bytes | bytearray | memoryview) -> int:
    return int.from_bytes(data, "little").bit_count()

