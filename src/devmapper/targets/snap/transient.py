"""The transient exception store (dm-snap-transient.c): nothing on disk.

Chunks are handed out from COW sector 0 upwards; the exception table lives only in memory,
so a transient snapshot does not survive its table. It cannot be merged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devmapper.targets.snap.store import ExceptionStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from devmapper.targets.base import Underlying


class TransientStore(ExceptionStore):
    def __init__(self, cow: Underlying, origin: Underlying, chunk_size: int,
                 options: str | None) -> None:
        # transient_ctr ignores any letters after the N.
        super().__init__(cow, origin, chunk_size)
        self.next_free = 0  # in sectors, as the kernel counts it

    def read_metadata(self, add: Callable[[int, int], None]) -> int:
        return 0

    def prepare_exception(self) -> int | None:
        if self.cow_sectors() < self.next_free + self.chunk_size:
            return None
        new = self.next_free >> self.chunk_shift
        self.next_free += self.chunk_size
        return new

    def commit_exception(self, old: int, new: int, valid: bool) -> bool | None:
        return valid

    def usage(self) -> tuple[int, int, int]:
        return self.cow_sectors(), self.next_free, 0

    def table_args(self) -> str:
        return f"N {self.chunk_size}"
