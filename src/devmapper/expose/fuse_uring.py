"""FUSE over io_uring (Linux 6.14+ with fuse.enable_uring=Y): the raw server's requests, once
FUSE_INIT has negotiated it, come and go through io_uring instead of read()/write() on
/dev/fuse.

Why: at 4 KiB QD16 the raw server pays two syscalls per request (read the next, write the
reply) and each reply wakes ksoftirqd to complete the loop device's request, a context switch
per request. Here one io_uring_enter commits a whole batch of replies and fetches the next
requests, so the completions are batched too: 4 KiB QD16 reads +30 %, writes more.

How the kernel side works (fs/fuse/dev_uring.c): the server registers ring entries, each a
header buffer (fuse_in_header/out_header, the opcode's fixed in-struct, fuse_uring_ent_in_out)
and a payload buffer of max_write, on a queue per possible CPU; a request goes to an entry of
its submitter's CPU queue and completes the entry's command (a CQE); the reply is written into
the same buffers and COMMIT_AND_FETCH hands the entry back for the next request. The entry is
not tied to the ring that registered it: the ring that commits it receives its next request.

Threads:
  - the ring thread owns the ring with every entry (SINGLE_ISSUER, DEFER_TASKRUN: the
    kernel's work for our completions runs inside our io_uring_enter) and answers what cannot
    wait inline: READ/WRITE through the backend's read_nowait/write_nowait, and the cheap
    metadata requests. It must never block: a request it waits for would hold every request
    already given to its entries, so a suspended device would stall all of them.
  - copier threads, each with its own ring, take large READs and WRITEs (_LARGE) from the
    ring thread when one is idle (IORING_OP_MSG_RING): a 1 MiB read comes as three READs,
    copied side by side. A copier commits on its own ring, so it also receives the next
    request of those entries; it passes small ones back to the ring thread, and a large one
    to an idle peer when more are waiting behind it.
  - waiter threads, started as needed and ended after 5 s idle, answer what may block: a
    READ/WRITE the backend would not do without waiting (a suspended device, a requeued
    request), FSYNC, FALLOCATE, RELEASE, synchronous writes. They give the entry back to the
    ring thread (a deque and its eventfd) for the commit. While waiters hold half of a
    queue's entries, the ring thread registers more, so a suspended device cannot take all of
    them.
FORGET and INTERRUPT still come through /dev/fuse (the kernel keeps them there), and so do the
requests before the rings are ready: the raw server's worker reads them.
"""

from __future__ import annotations

import collections
import errno
import logging
import mmap
import os
import queue
import struct
import threading

from . import _sys, _uring
from . import fuse_abi as abi
from .fuse_raw import _HANDLERS, _NO_REPLY, _SYNC_FLAGS, RawFuseServer

log = logging.getLogger(__name__)

OVER_IO_URING2 = 1 << (41 - 32)  # FUSE_OVER_IO_URING, a flags2 bit of FUSE_INIT
CMD_REGISTER, CMD_COMMIT_AND_FETCH = 1, 2
# An entry's header slot: struct fuse_uring_req_header is 288 bytes. The kernel copies the
# opcode's first in-argument into op_in whole, which for a LOOKUP is the name (up to 255
# bytes), so the slot leaves room behind it.
_HDR, _HDR_LEN = 512, 288
_OP_IN, _PAYLOAD_SZ = 128, 256 + 16  # op_in; fuse_uring_ent_in_out.payload_sz
# A URING_CMD SQE128 whole: the head, 8 zero bytes, then fuse_uring_cmd_req (flags, commit_id,
# qid) and the rest of the command area zero.
_CMD = struct.Struct("<BBHiIIQIIQ8xQQH62x")
# IORING_OP_MSG_RING (fd: the target ring, off: its CQE's user_data) and IORING_OP_READ.
_OP_MSG_RING, _OP_READ = 40, 22
_RW = struct.Struct("<BBHiQQIIQ80x")  # opcode, flags, ioprio, fd, off, addr, len, rw_flags, udata
_IN = struct.Struct("<IIQQ")  # fuse_in_header: len, opcode, unique, nodeid
_RW_IN = struct.Struct("<8xQI12xI")  # fuse_read_in/fuse_write_in: offset, size, flags
_U32 = struct.Struct("<I")
_WAKE = 1 << 40  # user_data of the eventfd read
_PASSED = 1 << 41  # user_data bit of an entry passed from one ring thread to another
_SENT = 1 << 42  # user_data of the MSG_RING that passes it (a CQE only when it failed)
_SKIP_SUCCESS = 1 << 6  # IOSQE_CQE_SKIP_SUCCESS
_PER_QUEUE = 16  # entries registered per CPU queue at start
_MAX_ENTRIES = 1024
# Copier threads. 1 MiB reads through the daemon (bench_blockdev.py --fuse uring, P3): one
# copier 0.44 - 0.52 of loop, two 0.56, three 0.58 (a 1 MiB read comes as three READs).
_COPIERS = 3
_LARGE = 64 << 10  # READs and WRITEs from this size on go to an idle copier
_GONE = (errno.ENOTCONN, errno.ECONNABORTED, errno.ECANCELED, errno.ENODEV)
# Answered inline by a ring thread: none of these waits for a device.
_INLINE = frozenset((abi.LOOKUP, abi.GETATTR, abi.SETATTR, abi.OPEN, abi.FLUSH, abi.OPENDIR,
                     abi.READDIR, abi.RELEASEDIR, abi.FSYNCDIR, abi.ACCESS, abi.STATFS))


def _errno(ex: OSError) -> int:
    return ex.errno if isinstance(ex.errno, int) and ex.errno > 0 else errno.EIO


def possible_cpus() -> int:
    """The kernel makes one queue per possible CPU: num_possible_cpus(), a count."""
    with open("/sys/devices/system/cpu/possible") as f:
        n = 0
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
    return n


class _Entries:
    """Every registered entry's buffers, by entry number: a header slot and a payload slot."""

    def __init__(self, payload_size: int) -> None:
        self.payload_size = payload_size
        self.heads: list[mmap.mmap] = []  # per entry: its chunk's header mmap
        self.head_at: list[int] = []  # ... and the slot's offset in it
        self.payload: list[memoryview] = []
        self.qid: list[int] = []
        self.iovecs: list[int] = []  # address of the entry's two iovecs, for REGISTER
        self._maps: list[mmap.mmap] = []

    def add(self, qid: int, count: int) -> range:
        psize = self.payload_size
        heads = mmap.mmap(-1, count * _HDR)
        pay = mmap.mmap(-1, count * psize)
        iov = mmap.mmap(-1, count * 32)
        self._maps += (heads, pay, iov)
        h_at, p_at, i_at = _uring.address(heads), _uring.address(pay), _uring.address(iov)
        first = len(self.qid)
        pv = memoryview(pay)
        for i in range(count):
            struct.pack_into("<QQQQ", iov, 32 * i, h_at + i * _HDR, _HDR_LEN,
                             p_at + i * psize, psize)
            self.heads.append(heads)
            self.head_at.append(i * _HDR)
            self.payload.append(pv[i * psize : (i + 1) * psize])
            self.qid.append(qid)
            self.iovecs.append(i_at + 32 * i)
        return range(first, first + count)


class _RingThread:
    """A thread with its own ring that answers the requests its entries receive."""

    def __init__(self, server: UringFuseServer, name: str) -> None:
        self.server = server
        self.name = name
        self.ring: _uring.Ring | None = None
        self.ready = threading.Event()
        # Large READs passed to this thread, and those it has answered: each counter has one
        # writer, so their difference needs no lock.
        self.passed = self.finished = 0
        self.working = False  # between two io_uring_enter calls (read by the other threads)
        # Blocking: io_uring would answer a read of a non-blocking eventfd with EAGAIN.
        self.efd = os.eventfd(0, os.EFD_CLOEXEC)
        self.done: collections.deque[int] = collections.deque()  # entries waiters answered
        self._ebuf = mmap.mmap(-1, 8)
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def idle(self) -> bool:
        return not self.working and self.passed == self.finished

    def wake(self) -> None:
        os.eventfd_write(self.efd, 1)

    def _main(self) -> None:
        _sys.set_io_flusher()
        try:
            self.ring = _uring.Ring(2 * _MAX_ENTRIES)
        except OSError as e:  # io_uring_disabled, a seccomp profile: no ring, no entries
            log.warning("io_uring unavailable (%s): FUSE requests stay on /dev/fuse", e)
            self.ready.set()
            return
        self.ready.set()
        try:
            self.server._serve_ring(self)
        except Exception:  # a bug here must not pass silently
            log.exception("FUSE io_uring thread %s died", self.name)
        finally:
            self.ring.close()
            os.close(self.efd)

    # -- SQEs (the owning thread only) -------------------------------------------------------

    def commit(self, e: int, unique: int) -> None:
        ring = self.ring
        assert ring is not None
        _CMD.pack_into(ring.sqes, ring.next_sqe(), _uring.OP_URING_CMD, 0, 0, self.server._fd,
                       CMD_COMMIT_AND_FETCH, 0, 0, 0, 0, e, 0, unique,
                       self.server._entries.qid[e])
        ring.pending += 1

    def register(self, e: int) -> None:
        ring = self.ring
        assert ring is not None
        ents = self.server._entries
        _CMD.pack_into(ring.sqes, ring.next_sqe(), _uring.OP_URING_CMD, 0, 0, self.server._fd,
                       CMD_REGISTER, 0, ents.iovecs[e], 2, 0, e, 0, 0, ents.qid[e])
        ring.pending += 1

    def pass_to(self, other: _RingThread, e: int) -> None:
        ring, target = self.ring, other.ring
        assert ring is not None and target is not None
        # CQE_SKIP_SUCCESS: the sender's own CQE only if the message failed.
        _RW.pack_into(ring.sqes, ring.next_sqe(), _OP_MSG_RING, _SKIP_SUCCESS, 0, target.fd,
                      _PASSED | e, 0, 0, 0, _SENT)
        ring.pending += 1

    def arm_wake(self) -> None:
        ring = self.ring
        assert ring is not None
        _RW.pack_into(ring.sqes, ring.next_sqe(), _OP_READ, 0, 0, self.efd, (1 << 64) - 1,
                      _uring.address(self._ebuf), 8, 0, _WAKE)
        ring.pending += 1


class UringFuseServer(RawFuseServer):
    """RawFuseServer whose requests come through io_uring once the kernel agrees to it."""

    name = "uring"

    def __init__(self, *args: object, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.uring = False  # True once the rings answer requests
        self.answered = 0  # requests answered through the rings (tests, diagnostics)
        self._entries = _Entries(self.max_write)
        self._main_ring: _RingThread | None = None
        self._copiers: list[_RingThread] = []
        self._waiting = queue.SimpleQueue[int]()  # entries for the waiters
        self._held: dict[int, int] = {}  # qid -> entries held by waiters (under _wlock)
        self._init_answered = threading.Event()
        self._waiters = 0
        self._idle_waiters = 0
        self._wlock = threading.Lock()

    def _op_init(self, nodeid: int, payload: bytes) -> bytes:
        body = bytearray(super()._op_init(nodeid, payload))
        flags = abi.INIT_IN.unpack_from(payload)[3]
        flags2 = _U32.unpack_from(payload, 16)[0] if flags & abi.INIT_EXT else 0
        if flags2 & OVER_IO_URING2 and _uring.supported():
            _U32.pack_into(body, 12, _U32.unpack_from(body, 12)[0] | abi.INIT_EXT)
            _U32.pack_into(body, 40, OVER_IO_URING2)
            # The main ring thread registers the entries once the kernel has taken this
            # reply (_init_answered): before, it answers EAGAIN.
            self._main_ring = _RingThread(self, "fuse-uring")
            self._copiers = [_RingThread(self, f"fuse-uring-copy{i}") for i in range(_COPIERS)]
            self._main_ring.start()
            for t in self._copiers:
                t.start()
        return bytes(body)

    @property
    def threads(self) -> int:
        """The /dev/fuse workers and the waiters (the ring threads live as long)."""
        return self._threads + self._waiters

    def _reply(self, fd: int, unique: int, body: bytes = b"", err: int = 0) -> None:
        super()._reply(fd, unique, body, err)
        # The first reply once INIT was handled is INIT's (the kernel sends nothing else
        # before it): now the kernel takes registrations.
        if self._initialized.is_set():
            self._init_answered.set()

    def stop(self, timeout: float = 5.0) -> bool:
        clean = super().stop(timeout)
        if clean:  # else the loop device still holds a file: the rings go on serving it
            for t in (self._main_ring, *self._copiers):
                if t is not None and t.thread.is_alive():
                    t.wake()
        return clean

    # -- the ring threads --------------------------------------------------------------------

    def _serve_ring(self, me: _RingThread) -> None:
        main = me is self._main_ring
        first = self._main_ring
        assert first is not None and me.ring is not None
        peers = [t for t in (first, *self._copiers) if t is not me]
        for t in peers:
            t.ready.wait()
            if t.ring is None:
                return
        copiers = [t for t in self._copiers if t is not me]
        ring = me.ring
        ents = self._entries
        if main:
            self._init_answered.wait()
            for qid in range(possible_cpus()):
                for e in ents.add(qid, _PER_QUEUE):
                    me.register(e)
        me.arm_wake()
        rings = ring.rings
        cq_mask, cqes_at = ring.cq_mask, ring.cqes_at
        cq_head_at, cq_tail_at = ring.cq_head_at, ring.cq_tail_at
        u32_unpack, u32_pack = _U32.unpack_from, _U32.pack_into
        cqe_unpack = _uring.CQE.unpack_from
        in_unpack, rw_unpack = _IN.unpack_from, _RW_IN.unpack_from
        out_pack = abi.OUT_HEADER.pack_into
        heads, head_at, payload = ents.heads, ents.head_at, ents.payload
        by_ino = self.volumes.by_ino
        done = me.done
        commit = me.commit
        while True:
            submit = ring.pending
            ring.publish()
            me.working = False
            try:
                ring.enter(submit, 1)
            except OSError as ex:
                if ex.errno != errno.EINTR:
                    raise
            me.working = True
            head = u32_unpack(rings, cq_head_at)[0]
            tail = u32_unpack(rings, cq_tail_at)[0]
            while head != tail:
                e, res, _ = cqe_unpack(rings, cqes_at + (head & cq_mask) * 16)
                head = head + 1 & 0xFFFFFFFF
                if e >= _WAKE:
                    if e == _WAKE:
                        if self._stopping:
                            u32_pack(rings, cq_head_at, head)
                            return
                        me.arm_wake()
                        while done:
                            e = done.popleft()
                            with self._wlock:
                                self._held[ents.qid[e]] -= 1
                            commit(e, u32_unpack(heads[e], head_at[e] + 8)[0])
                        continue
                    if e & _PASSED:
                        e &= ~_PASSED
                        me.finished += 1  # answered below, before the next CQE
                        passed_in = True
                    else:  # a failed MSG_RING: cannot happen while both rings live
                        log.warning("FUSE io_uring message failed: %s", os.strerror(-res))
                        continue
                else:
                    passed_in = False
                    if res < 0:
                        # Unmounted (the commands end, and the wake ends the thread) or a
                        # registration the kernel refused (the requests stay on /dev/fuse).
                        if -res not in _GONE:
                            log.warning("FUSE io_uring entry %d: %s", e, os.strerror(-res))
                        continue
                self.answered += 1
                self.uring = True
                hbuf, h = heads[e], head_at[e]
                length, opcode, unique, nodeid = in_unpack(hbuf, h)
                if opcode == abi.READ or opcode == abi.WRITE:
                    offset, size, flags = rw_unpack(hbuf, h + _OP_IN)
                    if not passed_in:
                        to = None
                        if size < _LARGE:
                            to = None if main else first
                        elif main or head != tail:
                            # Large: from the main thread to an idle copier; from a copier
                            # with more waiting, to an idle copier or the main thread.
                            for t in copiers if main else (*copiers, first):
                                if t.idle():
                                    to = t
                                    break
                        if to is not None:
                            to.passed += 1
                            me.pass_to(to, e)
                            continue
                if opcode == abi.READ:
                    vol = by_ino.get(nodeid)
                    if vol is None:
                        self._wait_for(me, e)
                        continue
                    backend = vol.backend
                    end = backend.size
                    if offset + size > end:
                        size = max(0, end - offset)  # short read = EOF
                    nowait = getattr(backend, "read_nowait", None)
                    err = 0
                    try:
                        if nowait is None or not nowait(offset, payload[e][:size]):
                            self._wait_for(me, e)
                            continue
                    except OSError as ex:
                        err, size = _errno(ex), 0
                    except Exception:  # the general path answers with EIO, and logs it
                        self._wait_for(me, e)
                        continue
                    out_pack(hbuf, h, 16 + size, -err, unique)
                    u32_pack(hbuf, h + _PAYLOAD_SZ, size)
                    commit(e, unique)
                    continue
                if opcode == abi.WRITE:
                    vol = by_ino.get(nodeid)
                    nowait = getattr(vol.backend, "write_nowait", None) if vol else None
                    if nowait is None or flags & _SYNC_FLAGS or not (vol and vol.writable):
                        self._wait_for(me, e)
                        continue
                    err = 0
                    try:
                        if not nowait(offset, payload[e][:size]):
                            self._wait_for(me, e)
                            continue
                    except OSError as ex:
                        err = _errno(ex)
                    except Exception:
                        self._wait_for(me, e)
                        continue
                    if err:
                        out_pack(hbuf, h, 16, -err, unique)
                        u32_pack(hbuf, h + _PAYLOAD_SZ, 0)
                    else:
                        abi.WRITE_OUT.pack_into(payload[e], 0, size, 0)
                        out_pack(hbuf, h, 16 + abi.WRITE_OUT.size, 0, unique)
                        u32_pack(hbuf, h + _PAYLOAD_SZ, abi.WRITE_OUT.size)
                    commit(e, unique)
                elif not main:
                    first.passed += 1
                    me.pass_to(first, e)
                elif opcode in _INLINE:
                    self._answer_slow(e)
                    commit(e, unique)
                else:
                    self._wait_for(me, e)
            u32_pack(rings, cq_head_at, head)

    def _answer_slow(self, e: int) -> None:
        """Answer entry e's request the general way (it may wait): the reply in its buffers."""
        ents = self._entries
        hbuf, h, pay = ents.heads[e], ents.head_at[e], ents.payload[e]
        length, opcode, unique, nodeid = _IN.unpack_from(hbuf, h)
        psz = _U32.unpack_from(hbuf, h + _PAYLOAD_SZ)[0]
        size = err = 0
        try:
            if opcode == abi.READ:
                offset, size, _ = _RW_IN.unpack_from(hbuf, h + _OP_IN)
                backend = (self.volumes.by_ino.get(nodeid) or self.volumes.live(nodeid)).backend
                size = max(0, min(size, backend.size - offset))
                backend.read(offset, pay[:size])
            elif opcode == abi.WRITE:
                offset, wsize, flags = _RW_IN.unpack_from(hbuf, h + _OP_IN)
                vol = self.volumes.by_ino.get(nodeid) or self.volumes.live(nodeid)
                if not vol.writable:
                    raise OSError(errno.EROFS, "read-only device")
                vol.backend.write(offset, pay[:wsize], bool(flags & _SYNC_FLAGS))
                abi.WRITE_OUT.pack_into(pay, 0, wsize, 0)
                size = abi.WRITE_OUT.size
            elif opcode not in _NO_REPLY:
                handler = _HANDLERS.get(opcode)
                if handler is None:
                    raise OSError(errno.ENOSYS, "unsupported")
                # The /dev/fuse layout: the first in-argument (in op_in), then the rest.
                first = length - abi.IN_HEADER.size - psz
                body = getattr(self, handler.__name__)(
                    nodeid, bytes(hbuf[h + _OP_IN : h + _OP_IN + first]) + bytes(pay[:psz])
                )
                size = len(body)
                pay[:size] = body
        except OSError as ex:
            err, size = _errno(ex), 0
        except Exception:
            log.exception("FUSE opcode %d failed", opcode)
            err, size = errno.EIO, 0
        abi.OUT_HEADER.pack_into(hbuf, h, 16 + size, -err, unique)
        _U32.pack_into(hbuf, h + _PAYLOAD_SZ, size)

    # -- waiters -----------------------------------------------------------------------------

    def _wait_for(self, me: _RingThread, e: int) -> None:
        """Give entry e to a waiter thread (_answer_slow); the main ring thread commits it."""
        qid = self._entries.qid[e]
        with self._wlock:
            held = self._held[qid] = self._held.get(qid, 0) + 1
        if me is self._main_ring and held * 2 >= self._per_queue(qid):
            self._grow_queue(me, qid)
        with self._wlock:
            spawn = self._idle_waiters == 0
            if spawn:
                self._waiters += 1
            else:
                self._idle_waiters -= 1
        self._waiting.put(e)
        if spawn:
            threading.Thread(target=self._waiter, name="fuse-uring-wait", daemon=True).start()

    def _per_queue(self, qid: int) -> int:
        return self._entries.qid.count(qid)

    def _grow_queue(self, me: _RingThread, qid: int) -> None:
        if len(self._entries.qid) + _PER_QUEUE > _MAX_ENTRIES:
            return
        for e in self._entries.add(qid, _PER_QUEUE):
            me.register(e)

    def _waiter(self) -> None:
        _sys.set_io_flusher()
        main = self._main_ring
        assert main is not None
        while True:
            try:
                e = self._waiting.get(timeout=5.0)
            except queue.Empty:
                with self._wlock:
                    if self._idle_waiters > 0:
                        self._idle_waiters -= 1
                        self._waiters -= 1
                        return
                continue
            self._answer_slow(e)
            main.done.append(e)
            main.wake()
            with self._wlock:
                self._idle_waiters += 1
