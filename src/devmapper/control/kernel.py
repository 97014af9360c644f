"""The kernel's control node: fcntl.ioctl on /dev/mapper/control, nothing in between."""

from __future__ import annotations

import fcntl
import os

from devmapper.uapi import ioctl_request


def control_path() -> str:
    return os.path.join(os.environ.get("DM_DEV_DIR", "/dev"), "mapper", "control")


class KernelTransport:
    kind = "kernel"

    def __init__(self, path: str | None = None) -> None:
        self.path = path or control_path()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, cmd: int, buf: bytearray) -> None:
        # mutate_flag=True: the kernel's copy-out lands in buf, as libdevmapper sees it.
        fcntl.ioctl(self._fd, ioctl_request(cmd), buf, True)

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
