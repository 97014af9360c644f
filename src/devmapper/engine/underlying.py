"""Underlying devices: what dm_get_device opens.

A table names a device as "major:minor" or as a path. The engine resolves it to one of:
- another mapped device of this engine (stacking stays inside the engine, never through the
  kernel's loop device back into our own FUSE file, which could deadlock);
- a real block device, opened by its node;
- a regular file (an extension of ours: it prints as its absolute path, and has no dev_t).

Opened devices are shared engine-wide with a reference count, as the kernel shares
table_devices: a 100,000-target table over one file holds one descriptor.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import stat
import struct
import threading
from typing import TYPE_CHECKING

from devmapper.fscalls import FUSE_SUPER_MAGIC, fs_type, punch_hole
from devmapper.uapi import encode_dev

if TYPE_CHECKING:
    from collections.abc import Callable

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKDISCARD = 0x1277
BLKROGET = 0x125E
LOOP_MAJOR = 7
LOOP_CTL_ADD = 0x4C80
LOOP_GET_STATUS64 = 0x4C05
# struct loop_info64 starts lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit (u64);
# it is 232 bytes long.
_LOOP_INFO64_HEAD = struct.Struct("=5Q")
_LOOP_INFO64_SIZE = 232


class FdDevice:
    """A block device or regular file read and written with preadv/pwritev.

    A loop device over a regular file is read and written through that file (``fd`` is
    the file's, ``node_fd`` the loop's). The kernel's dm hands its bios to the loop driver,
    which reads and writes the backing file, below the loop's own page cache: going to the
    file ourselves reaches the same bytes with the same durability (a flush is the loop's
    vfs_fsync), without a round trip through the loop's queue and worker for every request
    and its flush. The loop node stays open: it holds the loop device as dm does, and
    answers for its size, block size and discards.
    """

    __slots__ = ("name", "dev", "path", "fd", "node_fd", "file_fd", "size",
                 "logical_block_size", "read_only", "is_block", "refs", "key",
                 "takes_discards")

    def __init__(self, key: object, name: str, dev: int, path: str, read_only: bool) -> None:
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC
        self.fd = self.node_fd = os.open(path, flags)
        st = os.fstat(self.fd)
        self.is_block = stat.S_ISBLK(st.st_mode)
        self.file_fd: int | None = None if self.is_block else self.fd
        self.key = key
        self.name = name
        self.dev = dev
        self.path = path
        self.read_only = read_only
        self.refs = 0
        if self.is_block:
            self.size = struct.unpack("Q", fcntl.ioctl(self.fd, BLKGETSIZE64, bytes(8)))[0]
            self.logical_block_size = struct.unpack(
                "i", fcntl.ioctl(self.fd, BLKSSZGET, bytes(4)))[0]
            self.takes_discards = _queue_takes_discards(st.st_rdev)
            # A read-only loop refuses writes (its file is open read-only): through the
            # file, only a read-only table may go.
            if os.major(st.st_rdev) == LOOP_MAJOR and (read_only or not _bdev_read_only(self.fd)):
                backing = open_loop_backing(self.node_fd, os.minor(st.st_rdev), flags)
                if backing is not None:
                    self.fd = self.file_fd = backing
        else:
            self.size = st.st_size
            self.logical_block_size = 512
            self.takes_discards = True  # a hole punched, as a loop device over it would

    def refresh_size(self) -> int:
        if self.is_block:
            self.size = struct.unpack("Q", fcntl.ioctl(self.node_fd, BLKGETSIZE64, bytes(8)))[0]
        else:
            self.size = os.fstat(self.fd).st_size
        return self.size

    def read(self, offset: int, buf: memoryview) -> None:
        n = os.preadv(self.fd, (buf,), offset)
        if n != len(buf):
            self._short(offset, buf, n)

    def reader(self, base: int) -> Callable[[int, memoryview], None]:
        """read() for a target mapping at byte ``base``: one call from device to syscall."""
        fd, preadv, short = self.fd, os.preadv, self._short

        def read(offset: int, buf: memoryview) -> None:
            n = preadv(fd, (buf,), base + offset)
            if n != len(buf):
                short(base + offset, buf, n)

        return read

    def writer(self, base: int) -> Callable[[int, memoryview, bool], None]:
        fd, pwritev, write = self.fd, os.pwritev, self.write

        def write_at(offset: int, data: memoryview, fua: bool = False) -> None:
            if fua or pwritev(fd, (data,), base + offset) != len(data):
                write(base + offset, data, fua)  # short write or FUA: the careful path

        return write_at

    def _short(self, offset: int, buf: memoryview, n: int) -> None:
        # A short read is either EOF (the file shrank under us) or an interrupted transfer.
        while n < len(buf):
            got = os.preadv(self.fd, (buf[n:],), offset + n)
            if got <= 0:
                raise OSError(errno.EIO, "I/O error: read past the end of the underlying device")
            n += got

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        n = os.pwritev(self.fd, (data,), offset, os.RWF_DSYNC if fua else 0)
        while n < len(data):
            got = os.pwritev(self.fd, (data[n:],), offset + n, os.RWF_DSYNC if fua else 0)
            if got <= 0:
                raise OSError(errno.EIO, "I/O error: short write")
            n += got

    def flush(self) -> None:
        os.fsync(self.fd)

    def discard(self, offset: int, length: int) -> None:
        if self.is_block:
            fcntl.ioctl(self.node_fd, BLKDISCARD, struct.pack("QQ", offset, length))
        else:
            punch_hole(self.fd, offset, length)

    def close(self) -> None:
        if self.fd != self.node_fd:
            os.close(self.fd)
        os.close(self.node_fd)


def map_read_only(fd: int) -> memoryview:
    """All of regular file or block device `fd`, mapped shared and read-only, for replies
    written straight from the page cache (MappedDevice.send); empty where it cannot be mapped.
    Only the kernel reads it (a writev's copy), so bytes past a shrunk file's end are an
    EFAULT there, never a SIGBUS here."""
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            size = st.st_size
        elif stat.S_ISBLK(st.st_mode):
            size = struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, bytes(8)))[0]
        else:
            size = 0
        if size:
            return memoryview(mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ))
    except (OSError, ValueError, OverflowError):  # O_WRONLY, no mmap on this filesystem
        pass
    return memoryview(b"")


def unmap(view: memoryview) -> None:
    """Undo map_read_only once no request uses the mapping any more."""
    mapping = view.obj
    view.release()
    if isinstance(mapping, mmap.mmap):
        try:
            mapping.close()
        except BufferError:  # a slice still referenced (from a traceback): the GC unmaps it
            pass


def open_loop_backing(node_fd: int, minor: int, flags: int) -> int | None:
    """The backing file of loop device 7:``minor``, opened with ``flags``, when its bytes
    are the loop's bytes: a regular file, at offset 0, without a size limit, the very file
    the loop has (same st_dev and inode: sysfs prints the file's path as seen from here,
    which for an unlinked file is "PATH (deleted)", a name another file may have, and for
    a loop set up in another mount namespace may name another file). None otherwise, and
    for files on FUSE (our own devices' files are there; their I/O must stay on the
    engine's own paths)."""
    try:
        with open(f"/sys/dev/block/{LOOP_MAJOR}:{minor}/loop/backing_file") as f:
            path = f.read().rstrip("\n")
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode) or fs_type(pfd) == FUSE_SUPER_MAGIC:
            return None
        info = bytearray(_LOOP_INFO64_SIZE)
        fcntl.ioctl(node_fd, LOOP_GET_STATUS64, info)
        lo_device, lo_inode, _, lo_offset, lo_sizelimit = _LOOP_INFO64_HEAD.unpack_from(info)
        if (lo_offset, lo_sizelimit, lo_inode) != (0, 0, st.st_ino) \
                or _huge_decode_dev(lo_device) != (os.major(st.st_dev), os.minor(st.st_dev)):
            return None
        return os.open(f"/proc/self/fd/{pfd}", flags)
    except OSError:
        return None
    finally:
        os.close(pfd)


def _bdev_read_only(fd: int) -> bool:
    return struct.unpack("i", fcntl.ioctl(fd, BLKROGET, bytes(4)))[0] != 0


def _huge_decode_dev(dev: int) -> tuple[int, int]:
    """The kernel's huge_decode_dev (new_decode_dev): major, minor."""
    return (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


def _queue_takes_discards(rdev: int) -> bool:
    """A block device's queue/discard_max_bytes > 0 (bdev_max_discard_sectors); a
    partition's queue is its disk's, one directory up."""
    for queue in ("queue", "../queue"):
        try:
            with open(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}/{queue}/"
                      "discard_max_bytes") as f:
                return int(f.read()) > 0
        except (OSError, ValueError):
            continue
    return False


def parse_major_minor(path: str) -> tuple[int, int] | None:
    """sscanf("%u:%u%c"): "major:minor" with nothing after."""
    major, sep, minor = path.partition(":")
    if sep and major.isdigit() and minor.isdigit() and major.isascii() and minor.isascii():
        return int(major), int(minor)
    return None


def block_node_for(major: int, minor: int) -> str | None:
    """The /dev node of a block device, from sysfs (no udev needed)."""
    try:
        with open(f"/sys/dev/block/{major}:{minor}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    node = "/dev/" + line.strip().split("=", 1)[1]
                    if os.path.exists(node):
                        return node
    except OSError:
        return None
    return None


def autoload_loop(minor: int) -> str | None:
    """The loop driver's probe on opening 7:N when loopN does not exist: it creates loopN
    (block device autoloading, which 4.47 / 6.x still do), so a table on 7:N loads over an
    unbound loop device of size 0. We ask /dev/loop-control for it (LOOP_CTL_ADD). None if
    that cannot be done: the kernel then answers ENXIO, as for any dev_t with no device."""
    try:
        with open("/sys/module/loop/parameters/max_part") as f:
            if int(f.read()):  # minor N is then a partition of a loop device, not loopN
                return None
    except (OSError, ValueError):
        pass
    try:
        fd = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.ioctl(fd, LOOP_CTL_ADD, minor)
    except OSError as e:
        if e.errno != errno.EEXIST:
            return None
    finally:
        os.close(fd)
    return block_node_for(LOOP_MAJOR, minor)  # devtmpfs made the node before the ioctl returned


class DeviceCache:
    """Engine-wide table of opened underlying devices, shared with a reference count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[object, FdDevice] = {}

    def get(self, key: object, opener: Callable[[], FdDevice]) -> FdDevice:
        with self._lock:
            dev = self._open.get(key)
            if dev is None:
                dev = opener()
                self._open[key] = dev
            dev.refs += 1
            return dev

    def put(self, dev: FdDevice) -> None:
        with self._lock:
            dev.refs -= 1
            if dev.refs == 0:
                del self._open[dev.key]
                dev.close()


def open_path(cache: DeviceCache, path: str, read_only: bool,
              mapped_lookup: Callable[[int, int], object | None]) -> object:
    """Resolve a table's device argument the way dm_get_device does.

    Returns a mapped device (via ``mapped_lookup``), or a shared FdDevice.
    Raises OSError: ENXIO for a major:minor nothing answers to, ENODEV for a missing path.
    """
    mm = parse_major_minor(path)
    if mm is not None:
        major, minor = mm
        if major >= 1 << 12 or minor >= 1 << 20:
            raise OSError(errno.EOVERFLOW, "major:minor out of range")
        mapped = mapped_lookup(major, minor)
        if mapped is not None:
            return mapped
        node = block_node_for(major, minor)
        if node is None and major == LOOP_MAJOR:
            node = autoload_loop(minor)
        if node is None:
            raise OSError(errno.ENXIO, f"no block device {path}")
        key: object = ("blk", major, minor)
        return cache.get((key, read_only),
                         lambda: FdDevice((key, read_only), path, encode_dev(major, minor),
                                          node, read_only))
    try:
        st = os.stat(path)
    except OSError:
        raise OSError(errno.ENODEV, f"{path}: no such device")
    if stat.S_ISBLK(st.st_mode):
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        mapped = mapped_lookup(major, minor)
        if mapped is not None:
            return mapped
        key = ("blk", major, minor)
        return cache.get((key, read_only),
                         lambda: FdDevice((key, read_only), f"{major}:{minor}",
                                          encode_dev(major, minor), path, read_only))
    if stat.S_ISREG(st.st_mode):
        real = os.path.realpath(path)
        key = ("file", st.st_dev, st.st_ino)
        return cache.get((key, read_only),
                         lambda: FdDevice((key, read_only), real, 0, real, read_only))
    raise OSError(errno.ENODEV, f"{path}: not a block device")  # lookup_bdev fails
