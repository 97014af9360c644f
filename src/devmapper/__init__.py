"""devmapper: Linux device-mapper in pure Python.

- :class:`DeviceMapper` (devmapper.library): the library, over any control transport;
- devmapper.engine: the kernel half re-implemented in userspace;
- devmapper.targets: one module per target type;
- devmapper.cli: dmsetup and friends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from devmapper.library import DeviceInfo, DeviceMapper, DMError
    from devmapper.uapi import TargetSpec

__all__ = ["DMError", "DeviceInfo", "DeviceMapper", "TargetSpec", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported lazily: `dmsetup version` must start fast.
    if name in ("DeviceMapper", "DeviceInfo", "DMError"):
        from devmapper import library

        return getattr(library, name)
    if name == "TargetSpec":
        from devmapper.uapi import TargetSpec

        return TargetSpec
    raise AttributeError(name)
