"""Lockfs: freeze the filesystem mounted from a device before a snapshot, thaw it after.

dm does this inside the kernel (bdev_freeze) when suspending without --nolockfs; from
userspace the same effect is FIFREEZE on any mount point of that filesystem.
"""

from __future__ import annotations

import errno
import fcntl
import os

from .mountinfo import Mount, mounts_of_device

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)


def _one_mount_per_fs(dev: tuple[int, int]) -> Mount | None:
    # A block device carries one superblock; every bind of it shares the freeze state.
    found = mounts_of_device(dev)
    return found[0] if found else None


def _ioctl_dir(path: str, request: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, 0)
    finally:
        os.close(fd)


def freeze(dev: tuple[int, int]) -> str | None:
    """Freeze the filesystem on dev; returns its mount point, None if nothing is mounted.

    A filesystem that cannot freeze (EOPNOTSUPP) is left alone, as dm does.
    """
    return _fs_ioctl(dev, FIFREEZE)


def thaw(dev: tuple[int, int]) -> str | None:
    """Thaw the filesystem on dev; not frozen (EINVAL) counts as done."""
    return _fs_ioctl(dev, FITHAW)


def _fs_ioctl(dev: tuple[int, int], request: int) -> str | None:
    mount = _one_mount_per_fs(dev)
    if mount is None:
        return None
    try:
        _ioctl_dir(mount.mount_point, request)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL):
            return None
        raise
    return mount.mount_point
