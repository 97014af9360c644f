"""snapshot-origin: the origin device, whose writes copy chunks out first (dm-snap.c).

`<origin dev>`. Reads pass straight through. A write first makes every snapshot of the
same underlying device (however its table named it) copy out the chunks it touches, then
goes to the device. Like the kernel's origin_map, I/O keeps its device sector: the target
is a straight map of its device, meant to start at sector 0.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from devmapper.targets.base import SECTOR_SHIFT, StatusType, Target, TargetError
from devmapper.targets.snap.registry import device_key, do_origin, registry_for

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import TargetContext, Underlying


class SnapshotOriginTarget(Target):
    name = "snapshot-origin"
    version = (1, 9, 0)

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        super().__init__(ctx, begin, length, argv)
        if len(argv) != 1:
            raise TargetError("origin: incorrect number of arguments")
        try:
            self.dev = ctx.get_device(argv[0])
        except OSError as e:
            raise TargetError("Cannot get target device", e.errno or errno.ENODEV)
        self.key = device_key(self.dev)
        self.registry = registry_for(ctx)
        self._origins = self.registry.origins
        self.split_boundary = 0
        self._base = begin << SECTOR_SHIFT
        self._read = self.dev.read
        self._write = self.dev.write

    def read(self, offset: int, buf: memoryview) -> None:
        self._read(self._base + offset, buf)

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        pos = self._base + offset
        entry = self._origins.get(self.key)
        if entry is None:
            self._write(pos, data, fua)
            return
        gate = entry.gate
        inflight = gate.inflight
        inflight.append(None)
        if gate.blocked:
            gate.wait()
        try:
            n = len(data)
            snaps = entry.writable
            if len(snaps) == 1:
                # do_origin, inline for one snapshot and a write within one of its chunks
                snap = snaps[0]
                shift = snap.chunk_byte_shift
                first = pos >> shift
                if (pos + n - 1) >> shift == first and pos + n <= snap.table_end:
                    if first not in snap.complete:
                        snap.origin_chunk(first)
                else:
                    do_origin(entry, pos, n)
            elif snaps:
                do_origin(entry, pos, n)
            self._write(pos, data, fua)
        finally:
            inflight.pop()
            if gate.blocked:
                gate.notify()

    def status(self, kind: StatusType, noflush: bool = False) -> str:
        if kind is StatusType.TABLE:
            return self.dev.name
        return ""

    def table(self) -> str:
        return self.dev.name

    def iterate_devices(self) -> list[tuple[Underlying, int, int]]:
        return [(self.dev, 0, self.length)]

    def resume(self) -> None:
        # origin_resume: split writes at the smallest chunk size of the snapshots now.
        self.split_boundary = self.registry.minimum_chunk_size(self.key)
        self.registry.add_dm_origin(self)

    def postsuspend(self) -> None:
        self.registry.remove_dm_origin(self)

    def destroy(self) -> None:
        self.registry.remove_dm_origin(self)
