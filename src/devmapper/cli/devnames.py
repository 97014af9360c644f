"""Names of block devices by major:minor (dm_device_get_name, dm_is_dm_major).

The kernel answers through sysfs. Engine devices are recognised from the engine's own
device list; a device the daemon exposes has a real loop device behind /dev/mapper/NAME
and sysfs names it, one that is not exposed (an in-process engine) is named dm-<minor> as
the kernel would name it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from devmapper.cli import nodes

if TYPE_CHECKING:
    from devmapper.cli.lib import Lib


class DevNames:
    def __init__(self, lib: Lib) -> None:
        self.lib = lib
        self._engine: dict[tuple[int, int], str] | None = None

    def _engine_devices(self) -> dict[tuple[int, int], str]:
        if self._engine is None:
            self._engine = {}
            t = self.lib.task("names")
            if t is not None and t.run():
                self._engine = {(ma, mi): name for name, ma, mi in t.names()}
        return self._engine

    def is_dm(self, major: int, minor: int) -> bool:
        if self.lib.kind == "kernel":
            return major == self.lib.dm_major()
        return (major, minor) in self._engine_devices()

    def get_name(self, major: int, minor: int, prefer_kernel_name: bool) -> str | None:
        if self.lib.kind != "kernel":
            name = self._engine_devices().get((major, minor))
            if name is not None:
                if not prefer_kernel_name:
                    return name
                return self._exposed_kernel_name(name, major, minor) or f"dm-{minor}"
        elif not prefer_kernel_name and self.is_dm(major, minor):
            name = nodes.sysfs_dm_name(major, minor)
            if name is not None:
                return name
        return nodes.sysfs_kernel_name(major, minor)

    def _exposed_kernel_name(self, name: str, major: int, minor: int) -> str | None:
        path = os.path.join(nodes.dm_dir(self.lib.dev_dir), self.lib.mangle_for_node(name))
        if nodes.block_rdev(path) == (major, minor):
            return nodes.sysfs_kernel_name(major, minor)
        return None
