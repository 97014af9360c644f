"""Dirty region logs for the mirror target (dm-log.c): "core" (memory) and "disk"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from devmapper.targets.dirty_log.core import CoreLog, LogError, Sync
from devmapper.targets.dirty_log.disk import DiskLog

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import TargetContext

LOG_TYPES: dict[str, type[CoreLog]] = {"core": CoreLog, "disk": DiskLog}


def create_dirty_log(type_name: str, ctx: TargetContext, ti_len: int,
                     argv: Sequence[str]) -> CoreLog:
    """dm_dirty_log_create: raises LogError for an unknown type or bad arguments."""
    cls = LOG_TYPES.get(type_name)
    if cls is None:
        raise LogError(f'Module for logging type "{type_name}" not found.')
    return cls(ctx, ti_len, argv)


__all__ = ["CoreLog", "DiskLog", "LogError", "Sync", "create_dirty_log"]
