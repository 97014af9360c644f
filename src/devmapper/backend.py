"""Which driver answers: the kernel when /dev/mapper/control answers DM_VERSION, else the
engine daemon. DEVMAPPER_BACKEND=kernel|engine|inprocess chooses explicitly."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devmapper.control import Transport

BACKEND_ENV = "DEVMAPPER_BACKEND"


def kernel_available() -> bool:
    from devmapper.control.kernel import KernelTransport
    from devmapper.uapi import DM_IOCTL_SIZE, Cmd, DmIoctl, build_request

    try:
        t = KernelTransport()
    except OSError:
        return False
    try:
        t.ioctl(Cmd.VERSION, build_request(DmIoctl(), b"", DM_IOCTL_SIZE))
        return True
    except OSError:
        return False
    finally:
        t.close()


def default_transport(choice: str | None = None) -> Transport:
    choice = choice or os.environ.get(BACKEND_ENV, "") or "auto"
    if choice == "kernel" or (choice == "auto" and kernel_available()):
        from devmapper.control.kernel import KernelTransport

        return KernelTransport()
    if choice == "inprocess":
        from devmapper.control.engine import EngineTransport

        return EngineTransport()
    if choice not in ("engine", "auto"):
        raise ValueError(f"{BACKEND_ENV} must be kernel, engine, inprocess or auto")
    from devmapper.daemon_client import connect_engine

    return connect_engine()
