"""The shape every target has (the kernel's struct target_type).

A target is constructed from its table arguments, maps I/O given in bytes relative to its
own start, reports INFO and TABLE status lines, may answer messages, and lists the devices
it uses. It knows nothing of FUSE, sockets or the CLI: everything it needs from the engine
comes through its :class:`TargetContext`.
"""

from __future__ import annotations

import errno
from enum import Enum
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

SECTOR = 512
SECTOR_SHIFT = 9


class TargetError(Exception):
    """A constructor, message or resume failure: ``ti->error`` text plus the errno returned."""

    def __init__(self, message: str, err: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.errno = err


class Requeue(Exception):  # noqa: N818 - the kernel's name for it
    """DM_MAPIO_REQUEUE: raised by a target's I/O during a noflush suspend, it hands the whole
    request back to the mapped device, which re-issues it to the table live after the resume
    (dm.c's pushback). Outside a noflush suspend the request fails with EIO."""


class StatusType(Enum):
    INFO = "info"
    TABLE = "table"
    IMA = "ima"


class Underlying(Protocol):
    """An opened underlying device (the kernel's struct dm_dev)."""

    #: How table lines print it: "major:minor" for block and mapped devices, the path for files.
    name: str
    #: Encoded dev_t for TABLE_DEPS (0 for a regular file).
    dev: int

    @property
    def size(self) -> int:
        """Bytes."""
        ...

    @property
    def logical_block_size(self) -> int: ...

    read_only: bool

    @property
    def takes_discards(self) -> bool:
        """Whether the device accepts discards (its queue's discard_max_bytes > 0)."""
        ...

    def read(self, offset: int, buf: memoryview) -> None: ...
    def write(self, offset: int, data: memoryview, fua: bool = False) -> None: ...
    def flush(self) -> None: ...
    def discard(self, offset: int, length: int) -> None: ...


class TargetContext(Protocol):
    """What a target may ask of the table being built (dm_table + mapped_device)."""

    #: True when the table is loaded read-only: get_device opens devices read-only.
    read_only: bool
    @property
    def device_name(self) -> str:
        """The device's name ("254:0" style) for messages and events."""
        ...

    def get_device(self, path: str) -> Underlying:
        """dm_get_device: open ``path`` or "major:minor"; raises OSError with the errno."""
        ...

    def event(self) -> None:
        """dm_table_event: bump the device's event number and wake waiters."""
        ...


class Target:
    """Base class. Subclasses set ``name`` and ``version`` and override what they support."""

    name: ClassVar[str]
    version: ClassVar[tuple[int, int, int]]
    #: Number of arguments a message handler exists for: None = no message handler (EINVAL).
    has_messages: ClassVar[bool] = False
    #: Targets that cannot share a table with others (dm_target_is_singleton).
    singleton: ClassVar[bool] = False

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        # begin and length are in sectors, as in the table; I/O offsets are bytes.
        self.ctx = ctx
        self.begin = begin
        self.length = length

    # ---- I/O (offsets in bytes, relative to this target's start)
    def read(self, offset: int, buf: memoryview) -> None:
        raise OSError(errno.EIO, "I/O error")

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        raise OSError(errno.EIO, "I/O error")

    def flush(self) -> None:
        for dev in self.devices():
            dev.flush()

    def discard(self, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "discard not supported")

    def takes_discards(self) -> bool:
        """dm_table_supports_discards for this target: it sets num_discard_bios and, not
        setting discards_supported, needs every device it uses to take discards. False
        by default, as for zero and error (kernel 6.1); a table takes discards only when
        all its targets do, else BLKDISCARD answers EOPNOTSUPP for the whole device."""
        return False

    def devices_take_discards(self) -> bool:
        """device_not_discard_capable over iterate_devices: every device takes discards."""
        return all(dev.takes_discards for dev in self.devices())

    # ---- reporting
    def status(self, kind: StatusType, noflush: bool = False) -> str:
        return ""

    def table(self) -> str:
        raise NotImplementedError

    def message(self, argv: Sequence[str]) -> str | None:
        """Handle a TARGET_MSG; return reply text (DATA_OUT) or None. Raise TargetError."""
        raise TargetError("no message handler", errno.EINVAL)

    def iterate_devices(self) -> list[tuple[Underlying, int, int]]:
        """(device, start, length) in sectors of each area used: checked against the device."""
        return []

    def devices(self) -> list[Underlying]:
        return [dev for dev, _start, _len in self.iterate_devices()]

    def direct_io(self) -> tuple[int, int] | None:
        """(fd, byte offset) if every byte of this target is plain preadv/pwritev on one
        descriptor at a fixed offset: the device then does such I/O itself, skipping
        read/write. None (the default) sends all I/O through read/write."""
        return None

    # ---- lifecycle hooks (dm.c calls these around suspend/resume and on destroy)
    def presuspend(self, noflush: bool) -> None:
        pass

    def postsuspend(self) -> None:
        pass

    def preresume(self) -> None:
        """May raise TargetError: resume then fails and the device stays suspended."""

    def resume(self) -> None:
        pass

    def destroy(self) -> None:
        pass

    # ---- limits
    def io_block_size(self) -> int:
        """The logical block size this target needs (max of its devices')."""
        return max((d.logical_block_size for d in self.devices()), default=SECTOR)


def parse_u64(text: str, message: str) -> int:
    """Parse like the kernel's sscanf("%llu%c"): digits only, nothing after them."""
    if not text.isascii() or not text.isdigit():
        raise TargetError(message)
    return int(text) & 0xFFFFFFFFFFFFFFFF


def parse_uint(text: str, message: str, max_value: int = (1 << 32) - 1) -> int:
    """kstrtouint: an optional '+', decimal digits, an optional trailing newline; in range."""
    body = text[1:] if text.startswith("+") else text
    body = body[:-1] if body.endswith("\n") else body
    if not body or not body.isascii() or not body.isdigit() or int(body) > max_value:
        raise TargetError(message)
    return int(body)
