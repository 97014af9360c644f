"""Who is using a block device: the answers userspace can get without kernel help.

The exact test ("is anyone but me holding it open?") is the loop driver's own opener count,
which only LOOP_CLR_FD consults: see loop.detach(). Everything here is a non-destructive
query and therefore an estimate: opens by kernel users that leave no trace in /proc (a
device opened by another kernel driver through a path we cannot see) are missed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from .mountinfo import mounts_of_device


def holders(name: str) -> list[str]:
    """Stacked block devices (dm, md, bcache...) built on /sys/block/NAME."""
    try:
        return sorted(os.listdir(f"/sys/block/{name}/holders"))
    except FileNotFoundError:
        return []


def claimed(path: str) -> bool:
    """True if someone holds the device exclusively: a mounted filesystem, a holder, swap,
    or an O_EXCL opener (mkfs, fsck, cryptsetup do that). Plain opens don't count."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.EBUSY:
            return True
        raise
    os.close(fd)
    return False


def fd_openers(dev: tuple[int, int]) -> list[tuple[int, int]]:
    """(pid, fd) of every open file description of the block device dev in /proc."""
    rdev = os.makedev(*dev)
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    st = os.stat(os.path.join(fd_dir, fd))
                    if stat.S_ISBLK(st.st_mode) and st.st_rdev == rdev:
                        found.append((int(pid), int(fd)))
    return found


def swaps(dev: tuple[int, int]) -> int:
    rdev = os.makedev(*dev)
    count = 0
    with contextlib.suppress(OSError), open("/proc/swaps") as f:
        for line in list(f)[1:]:
            with contextlib.suppress(OSError):
                st = os.stat(line.split()[0])
                count += stat.S_ISBLK(st.st_mode) and st.st_rdev == rdev
    return count


def open_count(dev: tuple[int, int], sysfs_name: str) -> int:
    """dm's "Open count", estimated: fds in other processes, one per mounted superblock,
    one per holder, one per swap area."""
    mounted = 1 if mounts_of_device(dev) else 0
    return len(fd_openers(dev)) + mounted + len(holders(sysfs_name)) + swaps(dev)
