"""The kernel's control node: fcntl.ioctl on /dev/mapper/control, nothing in between."""

from __future__ import annotations

import ctypes
import os

from devmapper.uapi import ioctl_request

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int


#: Where the kernel's control node is, whatever DM_DEV_DIR says.
DEFAULT_CONTROL = "/dev/mapper/control"


def control_path() -> str:
    """libdm's control node: DM_DEV_DIR/mapper/control."""
    return os.path.join(os.environ.get("DM_DEV_DIR", "/dev"), "mapper", "control")


class KernelTransport:
    kind = "kernel"

    def __init__(self, path: str | None = None) -> None:
        self.path = path or control_path()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        self._owned = True

    @classmethod
    def from_fd(cls, fd: int, path: str = "", *, owned: bool = True) -> KernelTransport:
        """A transport over a control node already open as ``fd``; close() closes it only
        when ``owned``."""
        t = cls.__new__(cls)
        t.path, t._fd, t._owned = path, fd, owned
        return t

    def ioctl(self, cmd: int, buf: bytearray) -> None:
        # Through ctypes, not fcntl.ioctl: for buffers over 1 KiB fcntl.ioctl keeps the GIL
        # while the kernel works, so a DEV_WAIT in one thread would stop every thread.
        # from_buffer is zero-copy: the kernel's copy-out lands in buf itself.
        arg = (ctypes.c_char * len(buf)).from_buffer(buf)
        if _libc.ioctl(self._fd, ioctl_request(cmd), arg) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            if self._owned:
                os.close(self._fd)
            self._fd = -1
