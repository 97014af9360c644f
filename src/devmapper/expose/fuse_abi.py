"""The kernel FUSE protocol (include/uapi/linux/fuse.h), the parts a block-file server needs."""

from __future__ import annotations

import struct

KERNEL_VERSION = 7
#: The highest minor we speak; every struct below has its full (>= 7.23) size at this level.
KERNEL_MINOR = 38
ROOT_ID = 1

# Opcodes.
LOOKUP = 1
FORGET = 2
GETATTR = 3
SETATTR = 4
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
GETXATTR = 22
LISTXATTR = 23
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
ACCESS = 34
INTERRUPT = 36
DESTROY = 38
BATCH_FORGET = 42
FALLOCATE = 43

# INIT flags.
ASYNC_READ = 1 << 0
BIG_WRITES = 1 << 5
ASYNC_DIO = 1 << 15
PARALLEL_DIROPS = 1 << 18
ABORT_ERROR = 1 << 21
MAX_PAGES = 1 << 22
HANDLE_KILLPRIV_V2 = 1 << 28
INIT_EXT = 1 << 30

# OPEN reply flags.
FOPEN_DIRECT_IO = 1 << 0
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6

# SETATTR valid bits.
FATTR_SIZE = 1 << 3

FSYNC_FDATASYNC = 1

NOTIFY_INVAL_INODE = 2
NOTIFY_INVAL_ENTRY = 3

DEV_IOC_CLONE = 0x8004E500  # _IOR(229, 0, uint32_t)

IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags (flags2 follows if EXT)
# major, minor, max_readahead, flags, max_background, congestion_threshold, max_write,
# time_gran, max_pages, map_alignment, flags2, max_stack_depth, unused[6]
INIT_OUT = struct.Struct("<IIIIHHIIHHII24x")
READ_IN = struct.Struct("<QQIIQII")  # fh, offset, size, read_flags, lock_owner, flags, pad
WRITE_IN = READ_IN  # fh, offset, size, write_flags, lock_owner, flags, pad
WRITE_OUT = struct.Struct("<II")
OPEN_IN = struct.Struct("<II")
OPEN_OUT = struct.Struct("<QII")  # fh, open_flags, backing_id
FSYNC_IN = struct.Struct("<QII")
FALLOCATE_IN = struct.Struct("<QQQII")  # fh, offset, length, mode, pad
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")
FORGET_ONE = struct.Struct("<QQ")
BATCH_FORGET_IN = struct.Struct("<II")
READ_IN_SIZE = READ_IN.size
# ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec, ctimensec, mode, nlink, uid,
# gid, rdev, blksize, flags
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")
ATTR_OUT = struct.Struct("<QII" + ATTR.format[1:])  # attr_valid, attr_valid_nsec, dummy, attr
# nodeid, generation, entry_valid, attr_valid, entry_valid_nsec, attr_valid_nsec, attr
ENTRY_OUT = struct.Struct("<QQQQII" + ATTR.format[1:])
# blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6]
STATFS_OUT = struct.Struct("<QQQQQIIII24x")
DIRENT = struct.Struct("<QQII")  # ino, off, namelen, type
NOTIFY_INVAL_INODE_OUT = struct.Struct("<Qqq")
NOTIFY_INVAL_ENTRY_OUT = struct.Struct("<QII")

assert INIT_OUT.size == 64 and ATTR.size == 88 and ENTRY_OUT.size == 128 and ATTR_OUT.size == 104
assert STATFS_OUT.size == 80 and SETATTR_IN.size == 88 and IN_HEADER.size == 40
