"""Just enough io_uring, in pure Python, for FUSE over io_uring: a ring of 128-byte SQEs
whose submissions and completions go through the shared rings mapped with mmap, and one
syscall (io_uring_enter, through ctypes, without the GIL) to submit and wait.

x86-64 only: the rings are shared with the kernel without explicit barriers, which is sound
under x86's store order (an SQE is written before the tail that publishes it, a CQE is read
after the tail that published it) but not on weaker memory models.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import platform
import struct

_SYS_SETUP, _SYS_ENTER = 425, 426
SETUP_SQE128 = 1 << 10
SETUP_COOP_TASKRUN = 1 << 8
SETUP_SINGLE_ISSUER = 1 << 12
SETUP_DEFER_TASKRUN = 1 << 13
ENTER_GETEVENTS = 1
FEAT_SINGLE_MMAP = 1
OP_URING_CMD = 46
_OFF_SQ_RING, _OFF_SQES = 0, 0x10000000

# struct io_uring_params: 10 u32 (sq_entries .. resv[3]), io_sqring_offsets (8 u32 + u64),
# io_cqring_offsets (8 u32 + u64).
_PARAMS = struct.Struct("<10I8IQ8IQ")
_U32 = struct.Struct("<I")
CQE = struct.Struct("<QiI")  # user_data, res, flags
SQE_SIZE = 128
# The head of an IORING_OP_URING_CMD SQE: opcode, flags, ioprio, fd, cmd_op, pad, addr, len,
# uring_cmd_flags, user_data. Its 80-byte command area starts at CMD_AREA.
URING_CMD = struct.Struct("<BBHiIIQIIQ")
CMD_AREA = 48

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def supported() -> bool:
    return platform.machine() in ("x86_64", "AMD64")


def address(buf: mmap.mmap, offset: int = 0) -> int:
    """The address of buf[offset] (the buffer must stay mapped while the kernel uses it)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf, offset))


class Ring:
    """One io_uring, used by the thread that made it (SINGLE_ISSUER, DEFER_TASKRUN: the
    kernel's work for our completions runs in that thread's io_uring_enter)."""

    def __init__(self, entries: int) -> None:
        params = bytearray(_PARAMS.size)
        _U32.pack_into(params, 8, SETUP_SQE128 | SETUP_SINGLE_ISSUER | SETUP_DEFER_TASKRUN)
        raw = (ctypes.c_char * len(params)).from_buffer(params)
        fd = _syscall(_SYS_SETUP, ctypes.c_uint(entries), raw)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_uring_setup: {os.strerror(err)}")
        self.fd = fd
        p = _PARAMS.unpack(params)
        sq_entries, cq_entries, _, _, _, features = p[:6]
        sq_head, sq_tail, sq_mask, _, _, _, sq_array, _, _ = p[10:19]
        cq_head, cq_tail, cq_mask, _, _, cqes, _, _, _ = p[19:28]
        if not features & FEAT_SINGLE_MMAP:
            os.close(fd)
            raise OSError(95, "io_uring without IORING_FEAT_SINGLE_MMAP")
        size = max(sq_array + 4 * sq_entries, cqes + CQE.size * cq_entries)
        self.rings = mmap.mmap(fd, size, mmap.MAP_SHARED, offset=_OFF_SQ_RING)
        self.sqes = mmap.mmap(fd, SQE_SIZE * sq_entries, mmap.MAP_SHARED, offset=_OFF_SQES)
        ring = self.rings
        self.sq_entries = sq_entries
        self.sq_mask = _U32.unpack_from(ring, sq_mask)[0]
        self.cq_mask = _U32.unpack_from(ring, cq_mask)[0]
        self.sq_tail_at, self.sq_head_at = sq_tail, sq_head
        self.cq_head_at, self.cq_tail_at, self.cqes_at = cq_head, cq_tail, cqes
        for i in range(sq_entries):  # slot i of the SQ array names SQE i, for good
            _U32.pack_into(ring, sq_array + 4 * i, i)
        self.sq_tail = _U32.unpack_from(ring, sq_tail)[0]
        self.pending = 0  # SQEs written since the last enter

    def close(self) -> None:
        self.rings.close()
        self.sqes.close()
        os.close(self.fd)

    def next_sqe(self) -> int:
        """The offset in self.sqes of the next free SQE (zero it or fill all 128 bytes)."""
        return (self.sq_tail + self.pending & self.sq_mask) * SQE_SIZE

    def publish(self) -> None:
        """Make the SQEs written since the last call visible to the kernel."""
        self.sq_tail = self.sq_tail + self.pending & 0xFFFFFFFF
        self.pending = 0
        _U32.pack_into(self.rings, self.sq_tail_at, self.sq_tail)

    def enter(self, to_submit: int, wait: int) -> int:
        ret = _syscall(
            _SYS_ENTER, self.fd, to_submit, wait, ENTER_GETEVENTS if wait else 0, None, 0
        )
        if ret < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"io_uring_enter: {os.strerror(err)}")
        return ret
