"""Control transports: how v4 command buffers reach a device-mapper.

Each transport has one call, ``ioctl(cmd, buf)``, with fcntl.ioctl's contract: ``buf`` is a
bytearray holding the request; on return it holds the reply; on failure OSError(errno).
- KernelTransport: /dev/mapper/control, the real driver.
- EngineTransport: an Engine in this process.
- SocketTransport: the engine daemon (devmapperd) over its Unix socket.
"""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    #: "kernel" or "engine": which driver answers (for `dmsetup version` and backend checks).
    kind: str

    def ioctl(self, cmd: int, buf: bytearray) -> None: ...

    def fileno(self) -> int:
        """A descriptor poll() reports readable after an event following DEV_ARM_POLL."""
        ...

    def close(self) -> None: ...
