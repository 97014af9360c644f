"""error: every I/O fails with EIO (dm-target.c's io_err); arguments are accepted and ignored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devmapper.targets.base import Target

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import TargetContext


class ErrorTarget(Target):
    name = "error"
    version = (1, 5, 0)

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        # Kernels accept "<dev> <start>" (what a failed linear becomes) and ignore it.
        super().__init__(ctx, begin, length, argv)

    def flush(self) -> None:
        pass

    def table(self) -> str:
        return ""
