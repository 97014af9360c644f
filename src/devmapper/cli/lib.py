"""libdm's per-process state: the driver connection and its version check, name mangling,
udev synchronisation, and the /dev/mapper nodes libdm manages itself."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from devmapper.cli import mangle, nodes, udev
from devmapper.cli.control import ControlError
from devmapper.library import DeviceMapper

if TYPE_CHECKING:
    from devmapper.cli.context import Ctx
    from devmapper.cli.task import Task
    from devmapper.control import Transport

DEFAULT_ENGINE_MAJOR = 254


class Lib:
    """Per-process libdm state: the driver connection, version check, mangling, udev."""

    def __init__(self, ctx: Ctx, transport: Transport | None,
                 factory: Callable[[], Transport] | None, lib_version: str) -> None:
        self.ctx = ctx
        self._transport = transport
        self._factory = factory
        self.lib_version = lib_version
        self.dm: DeviceMapper | None = None
        self.version_checked = False
        self.version_ok = True
        self.driver_version: tuple[int, int, int] | None = None
        self.mangling = mangle.default_mode()
        self.dev_dir = "/dev"
        self.udev_sync = True  # dm_udev_set_sync_support
        self.udev_checking = True
        self.udev_disabled = "DM_DISABLE_UDEV" in os.environ
        self._sync_support: bool | None = None
        self._dm_major: int | None = None

    # ---- the driver
    @property
    def kind(self) -> str:
        return self.dm.transport.kind if self.dm else "kernel"

    def open(self) -> bool:
        if self.dm is not None:
            return True
        try:
            if self._transport is None:
                assert self._factory is not None
                self._transport = self._factory()
            self.dm = DeviceMapper(self._transport)
            if getattr(self._transport, "engine", None) is not None:
                _quiet_engine_log()
            return True
        except ControlError:  # libdm's messages are out already
            return False
        except OSError as e:
            reason = os.strerror(e.errno) if e.errno else str(e)
            if e.filename:
                self.ctx.log_error(f"{e.filename}: open failed: {reason}")
            else:
                from devmapper.control.socket import default_socket_path

                self.ctx.log_error(f"{default_socket_path()}: connect failed: {reason}")
        except ValueError as e:  # a bad backend choice
            self.ctx.log_error(str(e))
        self.ctx.log_error("Failure to communicate with kernel device-mapper driver.")
        if os.geteuid() == 0:
            self.ctx.log_error("Check that device-mapper is available in the kernel.")
        return False

    def check_version(self) -> bool:
        """dm_check_version: run once, by the first task."""
        if self.version_checked:
            return self.version_ok
        self.version_checked = True
        from devmapper.cli.task import Task

        t = Task(self, "version")
        if t.run() and t.hdr is not None:
            self.driver_version = t.hdr.version
            return True
        self.ctx.log_error(f"Incompatible libdevmapper {self.lib_version} and kernel driver "
                           "(unknown version).")
        self.version_ok = False
        return False

    def task(self, ttype: str) -> Task | None:
        """dm_task_create: None (after libdm's messages) when the driver is unusable."""
        if not self.check_version():
            return None
        from devmapper.cli.task import Task

        return Task(self, ttype)

    def cookie_supported(self) -> bool:
        v = self.driver_version
        return bool(v and v[0] >= 4 and v[1] >= 15)

    def udev_sync_support(self) -> bool:
        """dm_udev_get_sync_support: only the kernel emits uevents for udev to handle."""
        if self._sync_support is None:
            self._sync_support = (not self.udev_disabled and udev.semaphores_supported()
                                  and udev.udev_running())
        return (self._sync_support and self.udev_sync and self.kind == "kernel"
                and self.cookie_supported())

    def dm_major(self) -> int:
        """The block major of mapped devices (for -m without -j and persistent minors)."""
        if self._dm_major is None:
            found = nodes.proc_major("device-mapper") if self.kind == "kernel" else None
            self._dm_major = found if found is not None else DEFAULT_ENGINE_MAJOR
        return self._dm_major

    # ---- udev waits and node operations
    def udev_wait(self, cookie: int) -> bool:
        ok = True
        if cookie and self.udev_sync_support():
            ok = udev.wait(cookie, self.ctx.log_error, self.ctx.log_debug)
        return ok

    def node_op(self, op: str, name: str, major: int = 0, minor: int = 0,
                old: str = "", rely_on_udev: bool = False) -> None:
        """Create/remove/rename /dev/mapper nodes when udev will not (kernel driver only)."""
        if self.kind != "kernel" or not name:
            return
        mangled = self.mangle_for_node(name)
        if op == "add":
            self.ctx.log_debug(f"{mangled}: Stacking NODE_ADD ({major},{minor}) 0:6 0660"
                               f"{' [trust_udev]' if rely_on_udev else ''}")
            if rely_on_udev:
                return
            msg = nodes.add_node(self.dev_dir, mangled, major, minor)
        elif op == "del":
            if rely_on_udev:
                return
            msg = nodes.rm_node(self.dev_dir, mangled)
        else:
            if rely_on_udev:
                return
            msg = nodes.rename_node(self.dev_dir, self.mangle_for_node(old), mangled)
        if msg:
            self.ctx.log_error(msg)

    def mangle_for_node(self, name: str) -> str:
        if self.mangling == mangle.NONE:
            return name
        return mangle.mangle(name, "name", self.mangling, lambda _m: None) or name


def _quiet_engine_log() -> None:
    """An engine in this process logs as the kernel would (dmesg), not on our stderr."""
    import logging

    log = logging.getLogger("devmapper")
    if not log.hasHandlers():
        log.addHandler(logging.NullHandler())
