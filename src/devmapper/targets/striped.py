"""striped: RAID-0 over N devices in chunks of a fixed size (dm-stripe.c).

Chunk c of the target lives on stripe c % N, at chunk c // N of that stripe's area, exactly
as stripe_map_sector lays it out, so the bytes on the underlying devices match the kernel's.
"""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING

from devmapper.targets.base import (
    SECTOR_SHIFT,
    StatusType,
    Target,
    TargetError,
    parse_u64,
    parse_uint,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from devmapper.targets.base import TargetContext, Underlying

DM_IO_ERROR_THRESHOLD = 15  # errors a stripe reports by events; past it, only its status


class StripedTarget(Target):
    name = "striped"
    version = (1, 6, 0)

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        super().__init__(ctx, begin, length, argv)
        if len(argv) < 2:
            raise TargetError("Not enough arguments")
        stripes = _uint_or_zero(argv[0])
        if not stripes:
            raise TargetError("Invalid stripe count")
        chunk = _uint_or_zero(argv[1])
        if not chunk:
            raise TargetError("Invalid chunk_size")
        if length % stripes:
            raise TargetError("Target length not divisible by number of stripes")
        width = length // stripes
        if width % chunk:
            raise TargetError("Target length not divisible by chunk size")
        if len(argv) != 2 + 2 * stripes:
            raise TargetError("Not enough destinations specified")
        self.stripes = stripes
        self.chunk_size = chunk  # sectors
        self.stripe_width = width  # sectors per stripe
        self.devs: list[Underlying] = []
        self.starts: list[int] = []
        for i in range(stripes):
            dev_arg, start_arg = argv[2 + 2 * i], argv[3 + 2 * i]
            try:
                start = parse_u64(start_arg, "Couldn't parse stripe destination")
                self.devs.append(ctx.get_device(dev_arg))
            except OSError as e:
                raise TargetError("Couldn't parse stripe destination", e.errno or errno.EINVAL)
            self.starts.append(start)
        self.errors = [0] * stripes
        self._errors_lock = threading.Lock()
        self._chunk_bytes = chunk << SECTOR_SHIFT
        self._bases = [s << SECTOR_SHIFT for s in self.starts]

    def _locate(self, offset: int) -> tuple[int, int, int]:
        """(stripe, byte offset on that stripe's device, bytes left in this chunk)."""
        chunk_bytes = self._chunk_bytes
        chunk, within = divmod(offset, chunk_bytes)
        row, stripe = divmod(chunk, self.stripes)
        return stripe, self._bases[stripe] + row * chunk_bytes + within, chunk_bytes - within

    def _each_chunk(self, offset: int, view: memoryview,
                    op: Callable[[Underlying, int, memoryview], None]) -> None:
        pos = 0
        total = len(view)
        while pos < total:
            stripe, dev_off, room = self._locate(offset + pos)
            n = min(room, total - pos)
            try:
                op(self.devs[stripe], dev_off, view[pos:pos + n])
            except OSError as e:
                self._io_error(stripe, e)
                raise
            pos += n

    def _io_error(self, stripe: int, e: OSError) -> None:
        """stripe_end_io: the error counts for every stripe on the failing device (the
        kernel matches stripes by device name), and raises a table event while one of
        those counts is below DM_IO_ERROR_THRESHOLD. Unsupported operations count not."""
        if e.errno in (errno.EOPNOTSUPP, errno.EROFS):
            return
        failed = self.devs[stripe].name
        with self._errors_lock:
            event = False
            for i, dev in enumerate(self.devs):
                if dev.name == failed:
                    self.errors[i] += 1
                    event = event or self.errors[i] < DM_IO_ERROR_THRESHOLD
        if event:  # one trigger_event work, however many stripes it counted for
            self.ctx.event()

    def _one_chunk(self, offset: int, n: int) -> tuple[int, int]:
        """(stripe, byte offset on its device) when [offset, offset + n) lies in one chunk,
        as nearly every request does; (-1, 0) when it spans chunks."""
        cb = self._chunk_bytes
        chunk, within = divmod(offset, cb)
        if within + n > cb:
            return -1, 0
        row, stripe = divmod(chunk, self.stripes)
        return stripe, self._bases[stripe] + row * cb + within

    def read(self, offset: int, buf: memoryview) -> None:
        stripe, dev_off = self._one_chunk(offset, len(buf))
        if stripe < 0:
            self._each_chunk(offset, buf, lambda dev, off, part: dev.read(off, part))
            return
        try:
            self.devs[stripe].read(dev_off, buf)
        except OSError as e:
            self._io_error(stripe, e)
            raise

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        stripe, dev_off = self._one_chunk(offset, len(data))
        if stripe < 0:
            self._each_chunk(offset, data, lambda dev, off, part: dev.write(off, part, fua))
            return
        try:
            self.devs[stripe].write(dev_off, data, fua)
        except OSError as e:
            self._io_error(stripe, e)
            raise

    def takes_discards(self) -> bool:
        return self.devices_take_discards()

    def discard(self, offset: int, length: int) -> None:
        end = offset + length
        while offset < end:
            stripe, dev_off, room = self._locate(offset)
            n = min(room, end - offset)
            self.devs[stripe].discard(dev_off, n)
            offset += n

    def status(self, kind: StatusType, noflush: bool = False) -> str:
        if kind is StatusType.INFO:
            health = "".join("D" if e else "A" for e in self.errors)
            return f"{self.stripes} {' '.join(d.name for d in self.devs)} 1 {health}"
        if kind is StatusType.IMA:
            return ""
        return ""

    def table(self) -> str:
        parts = [f"{self.stripes} {self.chunk_size}"]
        parts += [f"{d.name} {s}" for d, s in zip(self.devs, self.starts, strict=True)]
        return " ".join(parts)

    def iterate_devices(self) -> list[tuple[Underlying, int, int]]:
        return [(d, s, self.stripe_width) for d, s in zip(self.devs, self.starts, strict=True)]


def _uint_or_zero(text: str) -> int:
    try:
        return parse_uint(text, "")
    except TargetError:
        return 0
