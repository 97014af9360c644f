"""The engine's Exposure hooks (devmapper.engine.core.Exposure) served by an Exposer.

A MappedDevice already is a BlockBackend (size, read_only, read/write/flush/discard), so it
is handed to the Exposer as is. Hook by hook:

  allocate  at DM_DEV_CREATE, before any table: attached with size 0, so the dev_t the
            engine reports is the loop device's from the start
  changed   after resume: the block device follows the new size and read-only flag
  renamed   the node moves (the FUSE file too)
  release   at remove: detached, or EBUSY while a user holds the block device open;
            with deferred removal it goes at that user's last close, and the exposer's
            on_removed tells the engine (Engine.exposure_released) to finish the removal
  open_count  openers of the block device, for DEV_STATUS
  freeze / thaw  lockfs: FIFREEZE/FITHAW of a filesystem mounted from the device

The exposer cannot see opens as they happen (the loop device holds our file open for
good), so removal relies on Exposer.detach's exact, atomic check-and-detach, and the
reported open count on an estimate from /proc.
"""

from __future__ import annotations

from typing import Any

from .exposer import Exposer


class EngineExposure:
    def __init__(self, exposer: Exposer) -> None:
        self.exposer = exposer

    def allocate(self, md: Any) -> tuple[int, int]:
        return self.exposer.attach(md.name, md)

    def changed(self, md: Any) -> None:
        vol = self.exposer.volumes.get(md.name)
        if vol.read_only != md.read_only:
            self.exposer.set_read_only(md.name, md.read_only)
        self.exposer.resize(md.name)

    def renamed(self, md: Any, old_name: str) -> None:
        if old_name != md.name:
            self.exposer.rename(old_name, md.name)

    def release(self, md: Any, deferred: bool) -> bool:
        if md.name not in self.exposer.devices():
            return True  # a deferred detach already completed
        return self.exposer.detach(md.name, deferred=deferred)

    def open_count(self, md: Any) -> int:
        if md.name not in self.exposer.devices():
            return 0
        return self.exposer.open_count(md.name)

    def freeze(self, md: Any) -> bool:
        return self.exposer.freeze(md.name) is not None

    def thaw(self, md: Any) -> None:
        self.exposer.thaw(md.name)

