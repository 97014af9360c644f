"""Exposure: turns an in-engine mapped device into a real block device (FUSE file + loop)."""

from .backend import BlockBackend
from .cleanup import CleanupReport
from .engine_hooks import EngineExposure
from .exposer import DEFAULT_MOUNT_DIR, Exposer, FuseServer, make_server
from .nodes import NodeChanges, mknodes

__all__ = [
    "DEFAULT_MOUNT_DIR",
    "BlockBackend",
    "CleanupReport",
    "EngineExposure",
    "Exposer",
    "FuseServer",
    "NodeChanges",
    "make_server",
    "mknodes",
]
