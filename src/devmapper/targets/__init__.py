"""Target types, one module each, registered by name (the kernel's dm_register_target).

Modules are imported on first lookup, so a dmsetup run pays only for what it touches.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devmapper.targets.base import Target

#: target name -> module:class. Order is the order LIST_VERSIONS reports: the kernel lists
#: the most recently registered type first, so dm-mod's built-ins come last.
_REGISTRY: dict[str, str] = {
    "mirror": "devmapper.targets.mirror:MirrorTarget",
    "snapshot-merge": "devmapper.targets.snapshot_merge:SnapshotMergeTarget",
    "snapshot-origin": "devmapper.targets.snapshot_origin:SnapshotOriginTarget",
    "snapshot": "devmapper.targets.snapshot:SnapshotTarget",
    "zero": "devmapper.targets.zero:ZeroTarget",
    "striped": "devmapper.targets.striped:StripedTarget",
    "linear": "devmapper.targets.linear:LinearTarget",
    "error": "devmapper.targets.error:ErrorTarget",
}
_loaded: dict[str, type[Target]] = {}


def register(name: str, where: str) -> None:
    """Add a target type: ``where`` is "package.module:ClassName"."""
    _REGISTRY[name] = where
    _loaded.pop(name, None)


def lookup_target_type(name: str) -> type[Target] | None:
    cls = _loaded.get(name)
    if cls is None:
        where = _REGISTRY.get(name)
        if where is None:
            return None
        module, _, attr = where.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        _loaded[name] = cls
    return cls


def all_target_types() -> list[type[Target]]:
    out = []
    for name in _REGISTRY:
        cls = lookup_target_type(name)
        assert cls is not None
        out.append(cls)
    return out
