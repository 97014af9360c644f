"""Device nodes and sysfs, as libdm-common.c reaches them: read-ahead, kernel names, and the
/dev/mapper nodes libdevmapper creates itself when udev does not.

Engine devices have no sysfs entry of their own: the daemon exposes each as a loop device
behind /dev/mapper/NAME, so lookups go through that node when it exists and otherwise fall
back to what the kernel would report for a fresh dm device (read-ahead 256, name dm-N).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

SYSFS = "/sys/"
BLKRAGET = 0x1263
#: What the kernel reports for a new dm device: 128 KiB, in sectors.
DEFAULT_READ_AHEAD = 256


def dm_dir(dev_dir: str) -> str:
    return os.path.join(dev_dir, "mapper")


def sysfs_read_ahead(major: int, minor: int) -> int | None:
    try:
        with open(f"{SYSFS}dev/block/{major}:{minor}/bdi/read_ahead_kb") as f:
            text = f.read(23)
    except OSError:
        return None
    try:
        return int(text.split()[0]) * 2
    except (ValueError, IndexError):
        return 0


def node_read_ahead(path: str) -> tuple[int | None, str | None]:
    """BLKRAGET on a node: (value, None) or (None, "PATH: open failed: ERR")."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return None, f"{path}: open failed: {os.strerror(e.errno or errno.EIO)}"
    try:
        raw = fcntl.ioctl(fd, BLKRAGET, bytes(8))
        return struct.unpack("l", raw)[0], None
    except OSError as e:
        return None, f"{path}: BLKRAGET failed: {os.strerror(e.errno or errno.EIO)}"
    finally:
        os.close(fd)


def sysfs_kernel_name(major: int, minor: int) -> str | None:
    """readlink /sys/dev/block/M:m -> .../NAME (libdm's _sysfs_get_kernel_name)."""
    try:
        target = os.readlink(f"{SYSFS}dev/block/{major}:{minor}")
    except OSError:
        return None
    return target.rsplit("/", 1)[-1] if "/" in target else None


def sysfs_dm_name(major: int, minor: int) -> str | None:
    try:
        with open(f"{SYSFS}dev/block/{major}:{minor}/dm/name") as f:
            return f.readline().rstrip("\n")
    except OSError:
        return None


def proc_major(name: str) -> int | None:
    """The block major registered under ``name`` in /proc/devices."""
    try:
        with open("/proc/devices") as f:
            block = False
            for line in f:
                if line.startswith("Block devices"):
                    block = True
                    continue
                parts = line.split()
                if block and len(parts) == 2 and parts[1] == name and parts[0].isdigit():
                    return int(parts[0])
    except OSError:
        return None
    return None


def block_rdev(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


# ---------------------------------------------------------------- nodes libdm creates itself


def add_node(dev_dir: str, name: str, major: int, minor: int, mode: int = 0o660,
             uid: int = 0, gid: int = 6) -> str | None:
    """_add_dev_node; returns an error message or None."""
    path = os.path.join(dm_dir(dev_dir), name)
    dev = os.makedev(major, minor)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None:
        if not stat.S_ISBLK(st.st_mode):
            return f"A non-block device file at '{path}' is already present"
        if st.st_rdev == dev:
            return None
        try:
            os.unlink(path)
        except OSError:
            return f"Unable to unlink device node for '{name}'"
    old = os.umask(0)
    try:
        os.makedirs(dm_dir(dev_dir), mode=0o755, exist_ok=True)
        os.mknod(path, stat.S_IFBLK | mode, dev)
    except FileExistsError:
        pass
    except OSError as e:
        return f"{path}: mknod for {name} failed: {os.strerror(e.errno or errno.EIO)}"
    finally:
        os.umask(old)
    try:
        os.chown(path, uid, gid)
    except OSError as e:
        return f"{path}: chown failed: {os.strerror(e.errno or errno.EIO)}"
    return None


def rm_node(dev_dir: str, name: str) -> str | None:
    path = os.path.join(dm_dir(dev_dir), name)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return f"Unable to unlink device node for '{name}'"
    return None


def rename_node(dev_dir: str, old: str, new: str) -> str | None:
    oldpath = os.path.join(dm_dir(dev_dir), old)
    newpath = os.path.join(dm_dir(dev_dir), new)
    if os.path.lexists(newpath):
        if block_rdev(newpath) is None:
            return f"A non-block device file at '{newpath}' is already present"
        try:
            os.unlink(newpath)
        except OSError:
            return f"Unable to unlink device node for '{new}'"
    try:
        os.rename(oldpath, newpath)
    except FileNotFoundError:
        pass
    except OSError:
        return f"Unable to rename device node from '{old}' to '{new}'"
    return None
