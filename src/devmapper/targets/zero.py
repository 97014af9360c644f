"""zero: reads return zeros, writes are dropped, discards not taken (dm-zero.c 1.1.0)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devmapper.targets.base import Target, TargetError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import TargetContext


class ZeroTarget(Target):
    name = "zero"
    version = (1, 1, 0)

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        super().__init__(ctx, begin, length, argv)
        if argv:
            raise TargetError("No arguments required")

    def read(self, offset: int, buf: memoryview) -> None:
        buf[:] = bytes(len(buf))

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        pass

    def flush(self) -> None:
        pass

    def table(self) -> str:
        return ""
