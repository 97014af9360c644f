"""linear: map a range onto a contiguous area of another device (dm-linear.c)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from devmapper.targets.base import SECTOR_SHIFT, StatusType, Target, TargetError, parse_u64

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import TargetContext, Underlying


class LinearTarget(Target):
    name = "linear"
    version = (1, 4, 0)

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        super().__init__(ctx, begin, length, argv)
        if len(argv) != 2:
            raise TargetError("Invalid argument count")
        self.start = parse_u64(argv[1], "Invalid device sector")
        try:
            self.dev = ctx.get_device(argv[0])
        except OSError as e:
            raise TargetError("Device lookup failed", e.errno or errno.EINVAL)
        self._base = self.start << SECTOR_SHIFT

    def read(self, offset: int, buf: memoryview) -> None:
        self.dev.read(self._base + offset, buf)

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        self.dev.write(self._base + offset, data, fua)

    def direct_io(self) -> tuple[int, int] | None:
        # A file or block device (not a mapped device): the table maps requests within us
        # straight to preadv/pwritev. Subclasses that change read/write opt out.
        fd = getattr(self.dev, "fd", None)
        cls = type(self)
        if (not isinstance(fd, int) or cls.read is not LinearTarget.read
                or cls.write is not LinearTarget.write):
            return None
        return fd, self._base

    def takes_discards(self) -> bool:
        return self.devices_take_discards()

    def discard(self, offset: int, length: int) -> None:
        self.dev.discard(self._base + offset, length)

    def status(self, kind: StatusType, noflush: bool = False) -> str:
        if kind is StatusType.IMA:
            return f"target_name=linear,target_version=1.4.0,device_name={self.dev.name}," \
                   f"start={self.start};"
        return ""

    def table(self) -> str:
        return f"{self.dev.name} {self.start}"

    def iterate_devices(self) -> list[tuple[Underlying, int, int]]:
        return [(self.dev, self.start, self.length)]
