"""Which driver answers: the kernel when /dev/mapper/control answers DM_VERSION, else the
engine daemon. DEVMAPPER_BACKEND=kernel|engine|inprocess chooses explicitly.

The choice does not depend on DM_DEV_DIR: it only says where libdm's nodes are, so the
kernel, once chosen, is reached through DM_DEV_DIR/mapper/control as libdm does."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devmapper.control import Transport
    from devmapper.control.kernel import KernelTransport

BACKEND_ENV = "DEVMAPPER_BACKEND"


def _probe() -> KernelTransport | None:
    """The kernel's own control node, open, if it answers DM_VERSION."""
    from devmapper.control.kernel import DEFAULT_CONTROL, KernelTransport
    from devmapper.uapi import DM_IOCTL_SIZE, Cmd, DmIoctl, build_request

    try:
        t = KernelTransport(DEFAULT_CONTROL)
    except OSError:
        return None
    try:
        t.ioctl(Cmd.VERSION, build_request(DmIoctl(), b"", DM_IOCTL_SIZE))
        return t
    except OSError:
        t.close()
        return None


def kernel_available() -> bool:
    t = _probe()
    if t is None:
        return False
    t.close()
    return True


def default_transport(choice: str | None = None) -> Transport:
    choice = choice or os.environ.get(BACKEND_ENV, "") or "auto"
    if choice == "auto":
        probed = _probe()
        if probed is not None:
            from devmapper.control.kernel import control_path

            if os.path.realpath(control_path()) == os.path.realpath(probed.path):
                return probed
            probed.close()
            choice = "kernel"
    if choice == "kernel":
        from devmapper.control.kernel import KernelTransport

        return KernelTransport()
    if choice == "inprocess":
        from devmapper.control.engine import EngineTransport

        return EngineTransport()
    if choice not in ("engine", "auto"):
        raise ValueError(f"{BACKEND_ENV} must be kernel, engine, inprocess or auto")
    from devmapper.daemon_client import connect_engine

    return connect_engine()
