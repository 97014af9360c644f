"""A FUSE server speaking the kernel protocol on /dev/fuse directly, in pure Python.

Threads: each worker owns a cloned /dev/fuse fd (FUSE_DEV_IOC_CLONE) and a page-aligned
buffer, reads one request and answers it itself (no hand-off between threads). A monitor
thread sizes the pool every tick by what the workers did (fuse_pool.PoolSizer): one more when
all are stuck on a request (a suspended device holds only its own requests' threads), spares
end, and sizes in between are tried and kept only when they serve more. The kernel side is
sized to match (max_background), so its queue of asynchronous direct I/O never fills up with
one device's requests either.

Zero copy: the request is read into two iovecs, the first exactly header + fuse_write_in,
so a WRITE's payload lands page-aligned in the second and the backend writes from it; a
READ's backend fills that same buffer and writev() sends header + data. That READ copies
twice (backing file -> buffer -> requester) in two syscalls, so a smaller READ goes to the
backend's send() where it has one (MappedDevice.send: one writev of header + the bytes
straight from a read-only mapping of the backing; 4 KiB QD16 reads 0.33 -> 0.38 of the
loop device), and a READ of _SPLICE_MIN or more whose bytes are one direct extent of a
backing descriptor (MappedDevice.direct) is spliced instead:
header into the worker's pipe, the file's pages spliced in behind it (references, no copy),
the lot spliced into /dev/fuse (the one copy), all inside the device's I/O gate, so a suspend
still waits for the reply. The pipe is 1 MiB (fs/pipe-max-size) and a reply must fit it
whole, header slot and an unaligned start's extra page included: a READ of max_write (512
KiB) fits. read() answers what the splice cannot finish (EOF, an error, a full pipe: the
pipe is drained first), a READ too large for a pipe left at its default size, and a backend
without direct.

Why max_write (max_read, max_pages) is 512 KiB and not 1 MiB: the loop device splits a
request at 128 segments, so a 1 MiB direct read arrived as two 512 KiB READs or, when the
reader's buffer pages happened to be contiguous enough, as one 1 MiB READ. A whole 1 MiB
READ is one worker's copy (and too large for the pipe); halves are two workers' copies side
by side: 3,400 - 4,100 MiB/s against 5,900 - 6,300, changing from one fio run to the next.
At 512 KiB FUSE itself splits every larger request (1 MiB sequential reads, median of 7
rounds: 0.53 -> 0.74 of the loop device on the file; at 256 KiB, 5 - 10 % below 512).

Measured against variants (bench/fuse_choice.py, 2-vCPU VM): answering through a libc call
that keeps the GIL, and taking requests non-blocking with an EPOLLEXCLUSIVE wait, both
halved 4 KiB QD16 throughput over O_DIRECT storage, so every syscall here releases the GIL.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import fcntl
import logging
import mmap
import os
import stat
import struct
import threading
import time

from . import _sys
from . import fuse_abi as abi
from .backend import BlockBackend
from .fuse_pool import PoolSizer
from .volumes import ROOT_INO, Volume, Volumes

log = logging.getLogger(__name__)

# One unpack for the dispatch and the hot path: opcode, unique, nodeid from fuse_in_header,
# then offset, size and the open flags from fuse_read_in/fuse_write_in (garbage for others).
_REQ = struct.Struct("<4xIQQ24xQI4x8xI")
_READ, _WRITE = abi.READ, abi.WRITE
_FIRST = abi.IN_HEADER.size + abi.READ_IN.size  # 80: header + fuse_read_in/fuse_write_in
_PAGE = mmap.PAGESIZE
_WANT = (
    abi.ASYNC_READ
    | abi.BIG_WRITES
    | abi.ASYNC_DIO
    | abi.PARALLEL_DIROPS
    | abi.ABORT_ERROR
    | abi.MAX_PAGES
    | abi.HANDLE_KILLPRIV_V2
)
_NO_REPLY = frozenset((abi.FORGET, abi.BATCH_FORGET, abi.INTERRUPT))
_SYNC_FLAGS = os.O_SYNC | os.O_DSYNC
_FALLOC_KEEP_SIZE = 0x01
_FALLOC_PUNCH_HOLE = 0x02
_FALLOC_ZERO_RANGE = 0x10
_ZEROES = bytes(1 << 20)
_GONE = (errno.ENODEV, errno.ECONNABORTED, errno.EBADF)
# A writev answering a READ failed, but the request is answered or nobody waits for it:
# interrupted meanwhile, unmounted, or (EFAULT) its bytes faulted and the kernel answered EIO.
_SENT = (errno.ENOENT, errno.EFAULT, *_GONE)
# READs from this size on are spliced when the bytes are one direct extent (see _Splicer).
# Below it the extra syscall outweighs the copy saved (at 32 KiB QD1 the two paths tie).
_SPLICE_MIN = 64 << 10
_PIPE_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size: the most F_SETPIPE_SZ gives without privilege


class RawFuseServer:
    """Serves `volumes` as regular files in a FUSE filesystem mounted on `mount_dir`."""

    name = "raw"

    def __init__(
        self,
        mount_dir: str,
        volumes: Volumes,
        *,
        max_write: int = 512 << 10,
        min_threads: int = 1,
        max_threads: int = 1024,
        max_background: int = 4096,
    ) -> None:
        self.mount_dir = mount_dir
        self.volumes = volumes
        self.max_write = max_write
        self.min_threads = max(1, min_threads)
        self.max_threads = max(self.min_threads, max_threads)
        self.max_background = max_background
        self._fd = -1
        self._lock = threading.Lock()
        self._threads = 0
        # Per worker: [1 while it handles a request (0 in read()), requests taken].
        self._workers: dict[int, list[int]] = {}
        self._surplus = 0  # workers asked to end
        self.sizer: PoolSizer | None = None  # the monitor's, once it runs
        self._all_gone = threading.Event()
        self._initialized = threading.Event()
        self._stopping = False
        self.proto_minor = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        self._fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        opts = (
            f"fd={self._fd},rootmode=40000,user_id=0,group_id=0,allow_other,"
            f"default_permissions,max_read={self.max_write}"
        )
        try:
            _sys.mount(
                "devmapper", self.mount_dir, "fuse.devmapper", _sys.MS_NOSUID | _sys.MS_NODEV, opts
            )
        except OSError:
            os.close(self._fd)
            self._fd = -1
            raise
        for _ in range(self.min_threads):
            with self._lock:
                self._threads += 1
            self._spawn()
        threading.Thread(target=self._monitor, name="fuse-monitor", daemon=True).start()
        if not self._initialized.wait(timeout):
            self.stop()
            raise OSError(errno.ETIMEDOUT, "FUSE INIT was not answered")

    def stop(self, timeout: float = 5.0) -> bool:
        """Unmount and let the workers drain. False if the mount had to be detached lazily
        because a loop device still holds a file (its workers go on serving until then)."""
        self._stopping = True
        clean = _sys.unmount_or_detach(self.mount_dir)
        if clean:
            self._all_gone.wait(timeout)  # workers blocked in a backend call may stay
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        return clean

    @property
    def threads(self) -> int:
        return self._threads

    # -- kernel notifications ----------------------------------------------------------------

    def invalidate(self, vol: Volume) -> None:
        """Drop the kernel's cached attributes (size) of vol's file."""
        self._notify(abi.NOTIFY_INVAL_INODE, abi.NOTIFY_INVAL_INODE_OUT.pack(vol.ino, -1, 0))

    def invalidate_entry(self, name: str) -> None:
        raw = name.encode()
        self._notify(
            abi.NOTIFY_INVAL_ENTRY,
            abi.NOTIFY_INVAL_ENTRY_OUT.pack(ROOT_INO, len(raw), 0) + raw + b"\0",
        )

    def _notify(self, code: int, body: bytes) -> None:
        try:
            os.write(self._fd, abi.OUT_HEADER.pack(16 + len(body), code, 0) + body)
        except OSError as e:
            if e.errno not in (errno.ENOENT, *_GONE):
                raise

    # -- workers -----------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start a worker already counted in self._threads. The low-level start does not wait
        for the new thread to run, so the spawning worker goes on with its request at once."""
        _thread.start_new_thread(self._worker, ())

    def _clone_fd(self) -> int:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, abi.DEV_IOC_CLONE, struct.pack("<I", self._fd))
        except OSError:
            os.close(fd)
            raise
        return fd

    def _worker(self) -> None:
        _sys.set_io_flusher()
        try:
            fd = self._clone_fd()
        except OSError:
            fd = -1
        try:
            self._serve(fd if fd >= 0 else self._fd)
        except Exception:  # a bug here must not kill the device silently
            log.exception("FUSE worker died")
        finally:
            if fd >= 0:
                os.close(fd)
            with self._lock:
                self._threads -= 1
                if self._threads == 0:
                    self._all_gone.set()

    def _serve(self, fd: int) -> None:
        head = bytearray(_FIRST)
        data = mmap.mmap(-1, self.max_write + _PAGE)
        dmv = memoryview(data)
        bufs: list[bytearray | mmap.mmap] = [head, data]
        readv = os.readv
        writev = os.writev
        unpack = _REQ.unpack_from
        pack_out = abi.OUT_HEADER.pack
        by_ino = self.volumes.by_ino
        ident = threading.get_ident()
        me = [0, 0]  # busy, requests taken
        seq = 0
        splicer = _Splicer(self)  # its pipe is made at the first large READ
        spliced = splicer.read
        splice_min = _SPLICE_MIN
        self._workers[ident] = me
        try:
            while True:
                me[0] = 0
                try:
                    n = readv(fd, bufs)
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                        continue  # the request was interrupted before we read it
                    if e.errno in _GONE:
                        return
                    raise
                seq += 1
                me[0] = 1
                me[1] = seq
                # A READ of an attached device inline: the one request type worth the lines.
                req = unpack(head)
                opcode, unique, nodeid, offset, size, _ = req
                vol = by_ino.get(nodeid) if opcode == _READ else None
                if vol is not None:
                    backend = vol.backend
                    end = backend.size
                    if offset + size <= end:
                        send = vol.send
                        if size >= splice_min:
                            answered = spliced(fd, head, dmv, n, req, backend)
                        elif send is not None:
                            try:
                                answered = send(fd, pack_out(16 + size, 0, unique), offset, size)
                            except OSError as e:  # EFAULT: the kernel answered EIO
                                if e.errno not in _SENT:
                                    raise
                                answered = True
                        else:
                            answered = False
                        if not answered:
                            out = dmv[:size]
                            try:
                                backend.read(offset, out)
                            except Exception:  # the general path answers with the errno/EIO
                                self._handle(fd, head, dmv, n, req)
                            else:
                                try:
                                    writev(fd, (pack_out(16 + size, 0, unique), out))
                                except OSError as e:  # interrupted meanwhile: nobody waits
                                    if e.errno not in (errno.ENOENT, *_GONE):
                                        raise
                    else:
                        self._handle(fd, head, dmv, n, req)
                else:
                    self._handle(fd, head, dmv, n, req)
                if self._surplus and self._leave():
                    return
        finally:
            del self._workers[ident]
            splicer.close()
            dmv.release()
            try:
                data.close()
            except BufferError:  # a view still referenced from a traceback: GC frees it
                pass

    def _leave(self) -> bool:
        with self._lock:
            if self._surplus <= 0 or self._threads <= self.min_threads:
                return False
            self._surplus -= 1
            return True

    def _monitor(self) -> None:
        """Applies fuse_pool.PoolSizer's answer to what the workers did in each tick."""
        sizer = PoolSizer(self.min_threads)
        self.sizer = sizer
        last = time.monotonic()
        while not self._stopping and not self._all_gone.is_set():
            time.sleep(sizer.tick)
            now = time.monotonic()
            change = sizer.observe(now, now - last, list(self._workers.items()))
            last = now
            if change > 0:
                self._grow()
            elif change < 0:
                with self._lock:
                    self._surplus = -change

    def _grow(self) -> None:
        with self._lock:
            if self._threads >= self.max_threads or self._stopping:
                return
            self._threads += 1
            self._surplus = 0
        self._spawn()

    def _reply(self, fd: int, unique: int, body: bytes = b"", err: int = 0) -> None:
        try:
            os.write(fd, abi.OUT_HEADER.pack(16 + len(body), -err, unique) + body)
        except OSError as e:
            # ENOENT: the request was interrupted or aborted meanwhile; nobody waits for it.
            if e.errno not in (errno.ENOENT, *_GONE):
                raise

    def _handle(
        self, fd: int, head: bytearray, dmv: memoryview, n: int, req: tuple[int, ...]
    ) -> None:
        """Any request, `req` being its _REQ unpacking."""
        opcode, unique, nodeid, offset, size, flags = req
        try:
            if opcode == _READ:
                self._read(fd, unique, nodeid, offset, size, dmv)
                return
            if opcode == _WRITE:
                self._write(fd, unique, nodeid, offset, size, flags, dmv)
                return
            if opcode in _NO_REPLY:
                return
            # Everything else is rare: join the two iovecs into one payload.
            payload = bytes(head[abi.IN_HEADER.size : min(n, _FIRST)])
            if n > _FIRST:
                payload += bytes(dmv[: n - _FIRST])
            handler = _HANDLERS.get(opcode)
            if handler is None:
                self._reply(fd, unique, err=errno.ENOSYS)
                return
            body = getattr(self, handler.__name__)(nodeid, payload)  # subclasses may override
            self._reply(fd, unique, body)
        except OSError as e:
            self._reply(
                fd, unique, err=e.errno if isinstance(e.errno, int) and e.errno > 0 else errno.EIO
            )
        except Exception:
            log.exception("FUSE opcode %d failed", opcode)
            self._reply(fd, unique, err=errno.EIO)

    # -- the hot path ------------------------------------------------------------------------

    def _read(
        self, fd: int, unique: int, nodeid: int, offset: int, size: int, dmv: memoryview
    ) -> None:
        vol = self.volumes.by_ino.get(nodeid)
        backend = (vol or self.volumes.live(nodeid)).backend  # live(): EIO once detached
        end = backend.size
        if offset + size > end:
            size = max(0, end - offset)  # short read = EOF
        out = dmv[:size]
        backend.read(offset, out)
        try:
            os.writev(fd, (abi.OUT_HEADER.pack(16 + size, 0, unique), out))
        except OSError as e:
            if e.errno not in (errno.ENOENT, *_GONE):
                raise

    def _write(
        self, fd: int, unique: int, nodeid: int, offset: int, size: int, flags: int,
        dmv: memoryview,
    ) -> None:
        vol = self.volumes.by_ino.get(nodeid) or self.volumes.live(nodeid)
        if not vol.writable:
            raise OSError(errno.EROFS, "read-only device")
        vol.backend.write(offset, dmv[:size], bool(flags & _SYNC_FLAGS))
        self._reply(fd, unique, abi.WRITE_OUT.pack(size, 0))

    # -- metadata ----------------------------------------------------------------------------

    def _attr(self, nodeid: int) -> tuple[int, ...]:
        if nodeid == ROOT_INO:
            t = int(self.volumes.created)
            return (ROOT_INO, 0, 0, t, t, t, 0, 0, 0, stat.S_IFDIR | 0o755, 2, 0, 0, 0, _PAGE, 0)
        vol = self.volumes.by_ino.get(nodeid)
        if vol is None:
            raise OSError(errno.ENOENT, "no such device")
        size, t = vol.backend.size, int(vol.mtime)
        mode = stat.S_IFREG | 0o600
        return (vol.ino, size, (size + 511) // 512, t, t, t, 0, 0, 0, mode, 1, 0, 0, 0, _PAGE, 0)

    def _op_init(self, nodeid: int, payload: bytes) -> bytes:
        major, minor, readahead, flags = abi.INIT_IN.unpack_from(payload)
        if major != abi.KERNEL_VERSION:
            raise OSError(errno.EPROTO, f"FUSE protocol {major}.{minor} unsupported")
        self.proto_minor = min(minor, abi.KERNEL_MINOR)
        body = abi.INIT_OUT.pack(
            abi.KERNEL_VERSION,
            self.proto_minor,
            readahead,
            flags & _WANT,
            min(self.max_background, 0xFFFF),
            min(self.max_background * 3 // 4, 0xFFFF),
            self.max_write,
            1,
            self.max_write // _PAGE,
            0,
            0,
            0,
        )
        self._initialized.set()
        return body

    def _op_lookup(self, nodeid: int, payload: bytes) -> bytes:
        name = payload.split(b"\0", 1)[0].decode(errors="surrogateescape")
        vol = self.volumes.by_name.get(name) if nodeid == ROOT_INO else None
        if vol is None:
            raise OSError(errno.ENOENT, name)
        return abi.ENTRY_OUT.pack(vol.ino, 0, 0, 0, 0, 0, *self._attr(vol.ino))

    def _op_getattr(self, nodeid: int, payload: bytes) -> bytes:
        return abi.ATTR_OUT.pack(0, 0, 0, *self._attr(nodeid))

    def _op_setattr(self, nodeid: int, payload: bytes) -> bytes:
        valid, _, _, size = struct.unpack_from("<IIQQ", payload)
        attr = self._attr(nodeid)
        if valid & abi.FATTR_SIZE and size != attr[1]:
            raise OSError(errno.EPERM, "a device's size follows its table")
        return abi.ATTR_OUT.pack(0, 0, 0, *attr)

    def _op_open(self, nodeid: int, payload: bytes) -> bytes:
        self.volumes.file_opened(nodeid)  # ENOENT for a detached device
        # DIRECT_IO: every opener bypasses the page cache, loop and anyone else alike, so
        # nothing is cached twice and nothing goes stale. PARALLEL: writes need no inode lock.
        return abi.OPEN_OUT.pack(nodeid, abi.FOPEN_DIRECT_IO | abi.FOPEN_PARALLEL_DIRECT_WRITES, 0)

    def _op_ok(self, nodeid: int, payload: bytes) -> bytes:
        return b""

    def _op_release(self, nodeid: int, payload: bytes) -> bytes:
        self.volumes.file_released(nodeid)
        return b""

    def _op_fsync(self, nodeid: int, payload: bytes) -> bytes:
        self.volumes.live(nodeid).backend.flush()
        return b""

    def _op_fallocate(self, nodeid: int, payload: bytes) -> bytes:
        _, offset, length, mode, _ = abi.FALLOCATE_IN.unpack_from(payload)
        vol = self.volumes.live(nodeid)
        if not vol.writable:
            raise OSError(errno.EROFS, "read-only device")
        if mode == _FALLOC_PUNCH_HOLE | _FALLOC_KEEP_SIZE:  # loop's REQ_OP_DISCARD
            vol.backend.discard(offset, length)
        elif mode & ~_FALLOC_KEEP_SIZE == _FALLOC_ZERO_RANGE:  # REQ_OP_WRITE_ZEROES
            end = offset + length
            while offset < end:
                chunk = min(end - offset, len(_ZEROES))
                vol.backend.write(offset, memoryview(_ZEROES)[:chunk])
                offset += chunk
        else:
            # Never ENOSYS: the kernel would turn fallocate off for the whole mount.
            raise OSError(errno.EOPNOTSUPP, "unsupported fallocate mode")
        return b""

    def _op_opendir(self, nodeid: int, payload: bytes) -> bytes:
        if nodeid != ROOT_INO:
            raise OSError(errno.ENOTDIR, "not a directory")
        return abi.OPEN_OUT.pack(0, 0, 0)

    def _op_readdir(self, nodeid: int, payload: bytes) -> bytes:
        _, offset, size, _, _, _, _ = abi.READ_IN.unpack_from(payload)
        entries = [(ROOT_INO, b".", 4), (ROOT_INO, b"..", 4)]  # DT_DIR
        for name in self.volumes.names():
            vol = self.volumes.by_name.get(name)
            if vol is not None:
                entries.append((vol.ino, name.encode(errors="surrogateescape"), 8))  # DT_REG
        out = bytearray()
        for index in range(offset, len(entries)):
            ino, raw, dtype = entries[index]
            rec = abi.DIRENT.pack(ino, index + 1, len(raw), dtype) + raw
            rec += bytes(-len(rec) % 8)
            if len(out) + len(rec) > size:
                break
            out += rec
        return bytes(out)

    def _op_statfs(self, nodeid: int, payload: bytes) -> bytes:
        return abi.STATFS_OUT.pack(0, 0, 0, len(self.volumes.by_ino), 0, _PAGE, 255, _PAGE, 0)

    def _op_destroy(self, nodeid: int, payload: bytes) -> bytes:
        self._stopping = True
        return b""


_HANDLERS = {
    abi.INIT: RawFuseServer._op_init,
    abi.LOOKUP: RawFuseServer._op_lookup,
    abi.GETATTR: RawFuseServer._op_getattr,
    abi.SETATTR: RawFuseServer._op_setattr,
    abi.OPEN: RawFuseServer._op_open,
    abi.RELEASE: RawFuseServer._op_release,
    abi.FLUSH: RawFuseServer._op_ok,
    abi.FSYNC: RawFuseServer._op_fsync,
    abi.FALLOCATE: RawFuseServer._op_fallocate,
    abi.OPENDIR: RawFuseServer._op_opendir,
    abi.READDIR: RawFuseServer._op_readdir,
    abi.RELEASEDIR: RawFuseServer._op_ok,
    abi.FSYNCDIR: RawFuseServer._op_ok,
    abi.ACCESS: RawFuseServer._op_ok,
    abi.STATFS: RawFuseServer._op_statfs,
    abi.DESTROY: RawFuseServer._op_destroy,
}


class _Splicer:
    """One worker's answer to a large READ without the copy through its buffer. Inside
    MappedDevice.direct (the device's I/O gate, so a suspend still waits for the whole reply)
    the reply header goes into a pipe, the data is spliced in behind it from the backing
    descriptor (page cache references, no copy), and the lot is spliced into /dev/fuse, which
    copies it into the requester's pages: one copy where preadv + writev make two."""

    __slots__ = ("_server", "_r", "_w", "_room")

    def __init__(self, server: RawFuseServer) -> None:
        self._server = server
        self._r = self._w = -1
        self._room = -1  # the largest READ the pipe takes; -1: no pipe yet

    def _open(self) -> None:
        # Made at the first large READ: pipe pages count against a per-user budget
        # (fs/pipe-user-pages-soft), and a blocked device can start many workers.
        # Non-blocking: a full pipe gives EAGAIN (then the normal path), never a worker
        # blocked inside the gate; and draining reads until EAGAIN.
        self._r, self._w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        with contextlib.suppress(OSError):  # past the budget: the default size, too small
            fcntl.fcntl(self._w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        # A splice fills one slot per page: the header takes one, an unaligned start one more.
        self._room = fcntl.fcntl(self._w, fcntl.F_GETPIPE_SZ) - 2 * _PAGE

    def close(self) -> None:
        if self._r >= 0:
            os.close(self._r)
            os.close(self._w)
            self._r = self._w = -1

    def read(
        self, fd: int, head: bytearray, dmv: memoryview, n: int, req: tuple[int, ...],
        backend: BlockBackend,
    ) -> bool:
        """True when READ `req`, inside the device, is answered; False: answer it by read()
        (no `direct` in this backend, the bytes not one direct extent, a failed splice)."""
        direct = getattr(backend, "direct", None)
        if not callable(direct):  # FileBackend's `direct` is its O_DIRECT flag
            return False
        if self._room < 0:
            try:
                self._open()
            except OSError:  # out of descriptors: this worker does without
                self.close()
                self._room = 0
        _, unique, _, offset, size, _ = req
        if size > self._room:
            return False
        try:
            done = direct(offset, size, lambda src, pos: self._reply(fd, unique, size, src, pos))
            return done is True
        except Exception:  # the general path answers with the errno or EIO
            self._server._handle(fd, head, dmv, n, req)
            return True

    def _reply(self, fuse_fd: int, unique: int, size: int, src: int, pos: int) -> bool:
        """direct()'s callback, inside the gate: True once the reply is delivered (or nobody
        waits for it any more), False with nothing delivered and the pipe empty again."""
        w = self._w
        os.write(w, abi.OUT_HEADER.pack(16 + size, 0, unique))  # an empty pipe: never short
        done = 0
        try:
            while done < size:
                got = os.splice(src, w, size - done, pos + done)
                if not got:
                    break  # EOF: the backing file shrank; read() deals with it
                done += got
        except OSError:  # EIO, EAGAIN (the pipe full), a descriptor without splice
            pass
        if done == size:
            try:
                # fuse_dev_splice_write takes the whole reply from the pipe, or nothing. No
                # SPLICE_F_MOVE: FUSE steals pages only for page-cache READs (all ours are
                # direct I/O into the requester's pages), and a stolen page would leave the
                # backing file's cache.
                if os.splice(self._r, fuse_fd, 16 + size) == 16 + size:
                    return True
            except OSError as e:
                if e.errno in (errno.ENOENT, *_GONE):  # interrupted, unmounted: nobody waits
                    self._drain()
                    return True
        self._drain()  # so that the next request starts on an empty pipe
        return False

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, _PIPE_SIZE):
                pass
