"""The few syscalls Python's os module lacks, through ctypes (no compiler at install time)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.prctl.argtypes = [
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
]

MS_NOSUID = 2
MS_NODEV = 4
MNT_FORCE = 1
MNT_DETACH = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
PR_SET_IO_FLUSHER = 57


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()),
        f"mount {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def unmount_or_detach(target: str) -> bool:
    """Unmount target; if it is busy (a loop device still holds a file) detach it lazily and
    answer False. Not mounted any more (EINVAL) counts as unmounted."""
    try:
        umount(target)
    except OSError as e:
        if e.errno == errno.EBUSY:
            umount(target, MNT_DETACH)
            return False
        if e.errno != errno.EINVAL:
            raise
    return True


def set_io_flusher() -> bool:
    """Mark the calling thread PR_SET_IO_FLUSHER so memory reclaim never waits on our own I/O.

    A per-task flag (threads created afterwards inherit it). Needs CAP_SYS_RESOURCE: False
    where that is missing (some containers drop it), and the server runs without it.
    """
    try:
        _check(_libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0), "prctl(PR_SET_IO_FLUSHER)")
    except OSError:
        return False
    return True


PF_MEMALLOC_NOIO = 0x00080000  # what PR_SET_IO_FLUSHER sets (with PF_LOCAL_THROTTLE)
CAP_SYS_RESOURCE = 24


def task_is_io_flusher(tid: int | None = None) -> bool:
    """Read the flag from /proc (PR_GET_IO_FLUSHER itself needs CAP_SYS_RESOURCE)."""
    path = f"/proc/self/task/{tid}/stat" if tid else "/proc/thread-self/stat"
    with open(path) as f:
        flags = int(f.read().rsplit(")", 1)[1].split()[6])  # field 9 of stat
    return bool(flags & PF_MEMALLOC_NOIO)


def has_capability(cap: int) -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    _check(_libc.fallocate(fd, mode, offset, length), "fallocate")
