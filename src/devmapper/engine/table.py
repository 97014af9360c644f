"""A table: targets in sector order, built and validated as dm-table.c does.

Lookup of the target for an offset is a bisect over the targets' start offsets, so a
100,000-target table costs O(log n) per request. The table is immutable once complete;
swapping tables happens only while the device is suspended with no I/O in flight.
"""

from __future__ import annotations

import errno
import logging
from array import array
from bisect import bisect_right
from typing import TYPE_CHECKING

from devmapper.engine.underlying import unmap
from devmapper.targets import lookup_target_type
from devmapper.targets.base import SECTOR, SECTOR_SHIFT, Target, TargetError
from devmapper.uapi import split_params

if TYPE_CHECKING:
    from collections.abc import Callable

    from devmapper.engine.mapped_device import MappedDevice
    from devmapper.targets.base import Underlying

log = logging.getLogger("devmapper.kernel")
_FANOUT = 64

#: Most distinct descriptors one table's I/O map can name (the low bits of a code).
_FD_BITS = 9
_FD_MASK = (1 << _FD_BITS) - 1
_MAX_OFF = (1 << 63) - 1


class TableError(Exception):
    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


class Table:
    """dm_table: the targets of one table slot, and the devices they hold open."""

    def __init__(self, md: MappedDevice, read_only: bool) -> None:
        self.md = md
        self.read_only = read_only
        self.targets: list[Target] = []
        self.starts: list[int] = []  # byte offset of each target
        self.ends: list[int] = []
        self.nbytes = 0
        self._devices: dict[int, Underlying] = {}  # id(dev) -> dev, in first-use order
        self._singleton = False
        self._single: Target | None = None
        # The I/O map (see _build_io_map); until complete, everything takes read/write.
        self.io_map = array("q", (-1, 0))
        self.io_shift = 63
        self.io_fds: list[int] = []
        # Read-only mappings of io_fds, made at a descriptor's first MappedDevice.send.
        self.io_views: list[memoryview | None] = []
        self.takes_discards = False  # set by complete()

    # ---- TargetContext
    @property
    def device_name(self) -> str:
        return self.md.dev_name

    def get_device(self, path: str) -> Underlying:
        """dm_get_device: a device the table already holds is shared, not opened again."""
        engine = self.md.engine
        dev = engine.open_underlying(path, self.read_only, self.md)
        key = id(getattr(dev, "md", dev))
        held = self._devices.get(key)
        if held is not None:
            engine.close_underlying(dev)
            return held
        self._devices[key] = dev
        return dev

    def event(self) -> None:
        self.md.table_event()

    # ---- building
    @property
    def size(self) -> int:
        """Size in sectors: the end of the last target."""
        return self.nbytes >> SECTOR_SHIFT

    def add_target(self, type_name: str, start: int, length: int, params: str) -> None:
        if self._singleton:
            raise self._fail(type_name, "target type must appear alone in table", errno.EINVAL)
        if not length:
            log.error("%s: zero-length target", self.device_name)
            raise TableError(errno.EINVAL, "zero-length target")
        if start + length > ((1 << 63) - 1) >> SECTOR_SHIFT:
            log.error("%s: too large device", self.device_name)
            raise TableError(errno.EINVAL, "too large device")
        ttype = lookup_target_type(type_name)
        if ttype is None:
            log.error("%s: %s: unknown target type", self.device_name, type_name)
            raise TableError(errno.EINVAL, f"{type_name}: unknown target type")
        if ttype.singleton:
            if self.targets:
                raise self._fail(type_name, "singleton target type must appear alone in table",
                                 errno.EINVAL)
            self._singleton = True
        if start != self.size:
            raise self._fail(type_name, "Gap in table", errno.EINVAL)
        try:
            target = ttype(self, start, length, split_params(params))
        except TargetError as e:
            raise self._fail(type_name, str(e), e.errno)
        except OSError as e:
            raise self._fail(type_name, str(e), e.errno or errno.EINVAL)
        self.targets.append(target)
        self.starts.append(start << SECTOR_SHIFT)
        self.nbytes = (start + length) << SECTOR_SHIFT
        self.ends.append(self.nbytes)

    def _fail(self, type_name: str, message: str, err: int) -> TableError:
        log.error("%s: %s: %s (-%s)", self.device_name, type_name, message,
                  errno.errorcode.get(err, err))
        return TableError(err, message)

    def complete(self) -> None:
        self._single = self.targets[0] if len(self.targets) == 1 else None
        # dm_table_supports_discards: the device takes discards when every target does.
        self.takes_discards = bool(self.targets) and all(
            t.takes_discards() for t in self.targets)
        # A two-level index, like the kernel's btree over its array of ends: a small list
        # (every 64th start, cache-hot) narrows the search to 64 entries of the big one.
        self._coarse = self.starts[::_FANOUT]
        self._build_io_map()

    def _build_io_map(self) -> None:
        """The device's fast path: a direct-mapped index over buckets of 2**io_shift bytes.

        Bucket b is io_map[2b], io_map[2b+1] = (end, code) of the extent holding its first
        byte: bytes [offset, offset + n) of the bucket with offset + n <= end are bytes
        offset + (code & ~_FD_MASK) of io_fds[code & _FD_MASK]. An extent is a run of
        adjacent direct_io targets contiguous on one descriptor, or one other target
        (end -1: never taken). Pairs in one flat array('q') cost one cold cache line per
        request, against a bisect over 100,000 cold targets; at most two buckets per extent.
        Spanning requests, other targets and short transfers take Table.read/write. A
        trailing (-1, 0) serves offset == nbytes.
        """
        ext_ends: list[int] = []
        codes: list[int] = []  # -1: not direct
        fd_index: dict[int, int] = {}
        for target, start, end in zip(self.targets, self.starts, self.ends, strict=True):
            direct = target.direct_io()
            code = -1
            if direct is not None:
                fd, base = direct
                idx = fd_index.setdefault(fd, len(fd_index))
                if idx <= _FD_MASK and 0 <= base <= _MAX_OFF - (end - start):
                    code = (base - start) | idx  # both offsets are sector multiples
            if code != -1 and codes and codes[-1] == code:
                ext_ends[-1] = end  # contiguous with the previous extent: merge
                continue
            ext_ends.append(end)
            codes.append(code)
        self.io_fds = sorted(fd_index, key=fd_index.__getitem__)
        self.io_views = [None] * len(self.io_fds)
        shift = max(0, (self.nbytes // len(ext_ends)).bit_length() - 1)  # <= 2 per extent
        size = 1 << shift
        pairs: list[int] = []
        first = 0
        for end, code in zip(ext_ends, codes, strict=True):
            last = -(-end // size)  # buckets first..last-1 start inside this extent
            if last > first:
                pairs += (end if code != -1 else -1, code) * (last - first)
                first = last
        pairs += (-1, 0)
        self.io_map, self.io_shift = array("q", pairs), shift

    def _index(self, offset: int) -> int:
        lo = (bisect_right(self._coarse, offset) - 1) * _FANOUT
        return bisect_right(self.starts, offset, lo, min(lo + _FANOUT, len(self.starts))) - 1

    def io_entry_points(self) -> tuple[Callable[[int, memoryview], None],
                                       Callable[[int, memoryview, bool], None]]:
        """read/write callables for the device: a lone target's own methods, when alone."""
        if self._single is not None:
            return self._single.read, self._single.write
        return self.read, self.write

    def logical_block_size(self) -> int:
        return max((t.io_block_size() for t in self.targets), default=SECTOR)

    def validate_areas(self) -> None:
        """dm_calculate_queue_limits: every area inside its device and block-aligned."""
        table_lbs = SECTOR
        for t in self.targets:
            lbs = SECTOR
            areas = t.iterate_devices()
            for dev, _start, _len in areas:
                lbs = max(lbs, dev.logical_block_size)
            lbs_sectors = lbs >> SECTOR_SHIFT
            for dev, start, length in areas:
                dev_size = dev.size >> SECTOR_SHIFT
                if not dev_size:
                    continue
                if start >= dev_size or start + length > dev_size:
                    log.error("%s: %s too small for target: start=%d, len=%d, dev_size=%d",
                              self.device_name, dev.name, start, length, dev_size)
                    raise TableError(errno.EINVAL, f"{dev.name} too small for target")
                if lbs_sectors > 1 and (start % lbs_sectors or length % lbs_sectors):
                    log.error("%s: start=%d not aligned to h/w logical block size %d of %s",
                              self.device_name, start, lbs, dev.name)
                    raise TableError(errno.EINVAL, "area not aligned to logical block size")
            table_lbs = max(table_lbs, lbs)
        lbs_sectors = table_lbs >> SECTOR_SHIFT
        if lbs_sectors > 1:
            for t in self.targets:
                if t.begin % lbs_sectors or t.length % lbs_sectors:
                    log.error("%s: table line %d (start sect %d len %d) not aligned to h/w "
                              "logical block size %d", self.device_name, self.targets.index(t),
                              t.begin, t.length, table_lbs)
                    raise TableError(errno.EINVAL, "misaligned target")

    def devices(self) -> list[Underlying]:
        """Devices in the order TABLE_DEPS lists them: the kernel adds each at the list head."""
        return list(reversed(self._devices.values()))

    def find_target(self, sector: int) -> Target | None:
        if sector >= self.size:
            return None
        return self.targets[self._index(sector << SECTOR_SHIFT)]

    def destroy(self) -> None:
        for view in self.io_views:  # no request runs: the table is not live, or suspended
            if view is not None:
                unmap(view)
        self.io_views = [None] * len(self.io_fds)
        for t in self.targets:
            t.destroy()
        for dev in self._devices.values():
            self.md.engine.close_underlying(dev)
        self._devices.clear()
        self.targets.clear()

    # ---- lifecycle hooks over all targets
    def presuspend(self, noflush: bool) -> None:
        for t in self.targets:
            t.presuspend(noflush)

    def postsuspend(self) -> None:
        for t in self.targets:
            t.postsuspend()

    def preresume(self) -> None:
        for t in self.targets:
            t.preresume()

    def resume(self) -> None:
        for t in self.targets:
            t.resume()

    # ---- I/O: offsets in bytes from the device start; split at target boundaries
    def read(self, offset: int, buf: memoryview) -> None:
        single = self._single
        if single is not None:
            single.read(offset, buf)
            return
        i = self._index(offset)
        end = offset + len(buf)
        if end <= self.ends[i]:
            self.targets[i].read(offset - self.starts[i], buf)
            return
        pos = 0
        while offset + pos < end:
            stop = min(end, self.ends[i])
            self.targets[i].read(offset + pos - self.starts[i], buf[pos:stop - offset])
            pos = stop - offset
            i += 1

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        single = self._single
        if single is not None:
            single.write(offset, data, fua)
            return
        i = self._index(offset)
        end = offset + len(data)
        if end <= self.ends[i]:
            self.targets[i].write(offset - self.starts[i], data, fua)
            return
        pos = 0
        while offset + pos < end:
            stop = min(end, self.ends[i])
            self.targets[i].write(offset + pos - self.starts[i], data[pos:stop - offset], fua)
            pos = stop - offset
            i += 1

    def discard(self, offset: int, length: int) -> None:
        i = self._index(offset)
        end = offset + length
        while offset < end:
            stop = min(end, self.ends[i])
            self.targets[i].discard(offset - self.starts[i], stop - offset)
            offset = stop
            i += 1

    def flush(self) -> None:
        # One flush per distinct underlying device, as the kernel sends num_flush_bios.
        seen: set[int] = set()
        for t in self.targets:
            if type(t).flush is not Target.flush:
                t.flush()
                continue
            for dev in t.devices():
                if id(dev) not in seen:
                    seen.add(id(dev))
                    dev.flush()
