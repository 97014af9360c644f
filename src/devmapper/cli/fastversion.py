"""`dmsetup version` without the library: one DM_VERSION request built by hand.

The command must start about as fast as Python itself (benchmark P6), so it avoids the
library, the engine and the report code; the output and the failure messages are those of
the full path (task.Lib).
"""

from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devmapper.cli.context import Ctx
    from devmapper.control import Transport

_HDR = struct.Struct("=3IIIIiIIIQ128s129s7s")  # struct dm_ioctl, 312 bytes
DM_VERSION_IOCTL = 0xC138FD00


def _request() -> bytearray:
    return bytearray(_HDR.pack(4, 0, 0, _HDR.size, _HDR.size, 0, 0, 0, 0, 0, 0, b"", b"", b""))


def _kernel_version(ctx: Ctx, dev_dir: str) -> tuple[tuple[int, int, int] | None, str | None]:
    import fcntl

    from devmapper.cli.control import ControlError, open_control

    try:
        _, fd = open_control(dev_dir, ctx.log_error, ctx.log_verbose)
    except ControlError:
        return None, None
    try:
        buf = _request()
        fcntl.ioctl(fd, DM_VERSION_IOCTL, buf, True)
        return struct.unpack_from("=3I", buf), None
    except OSError as e:
        return None, f"device-mapper: version ioctl on   failed: {os.strerror(e.errno or 5)}"
    finally:
        os.close(fd)


def _transport_version(t: Transport) -> tuple[tuple[int, int, int] | None, str | None]:
    buf = _request()
    try:
        t.ioctl(0, buf)
    except OSError as e:
        return None, f"device-mapper: version ioctl on   failed: {os.strerror(e.errno or 5)}"
    return struct.unpack_from("=3I", buf), None


def driver_version(ctx: Ctx, dev_dir: str, choice: str | None, transport: Transport | None
                   ) -> tuple[tuple[int, int, int] | None, str | None]:
    if transport is not None:
        return _transport_version(transport)
    from devmapper.cli.control import resolve

    choice = resolve(choice)
    if choice == "kernel":
        return _kernel_version(ctx, dev_dir)
    try:
        if choice == "inprocess":
            from devmapper.control.engine import EngineTransport

            t: Transport = EngineTransport()
        elif choice in ("engine", "auto"):
            from devmapper.daemon_client import connect_engine

            t = connect_engine()
        else:
            return None, "DEVMAPPER_BACKEND must be kernel, engine, inprocess or auto"
    except OSError as e:
        from devmapper.control.socket import default_socket_path

        reason = os.strerror(e.errno) if e.errno else str(e)
        return None, f"{default_socket_path()}: connect failed: {reason}"
    try:
        return _transport_version(t)
    finally:
        t.close()


def version(ctx: Ctx, dev_dir: str, choice: str | None, transport: Transport | None,
            lib_version: str) -> bool:
    ctx.out(f"Library version:   {lib_version}\n")
    v, err = driver_version(ctx, dev_dir, choice, transport)
    if v is None:
        if err is not None:  # else control.open_control has said it all
            ctx.log_error(err)
            ctx.log_error("Failure to communicate with kernel device-mapper driver.")
            if os.geteuid() == 0:
                ctx.log_error("Check that device-mapper is available in the kernel.")
        ctx.log_error(f"Incompatible libdevmapper {lib_version} and kernel driver "
                      "(unknown version).")
        return False
    ctx.out(f"Driver version:    {v[0]}.{v[1]}.{v[2]}\n")
    return True
