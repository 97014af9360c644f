"""The engine daemon's Unix socket: v4 buffers framed with a small header.

Request: u32 cmd, u32 length, then the buffer. Reply: i32 errno, u32 length, then the bytes
to copy over the request buffer (as the kernel's copy-out). Native byte order: the socket
never leaves the machine.

- A frame longer than MAX_FRAME gets an EINVAL reply and the connection is closed (the daemon
  cannot resynchronise without reading it all).
- ``cmd`` is the ioctl's _IOC_NR, 8 bits in the kernel; numbers from 0x100 up are transport
  commands the kernel cannot have. CMD_EVENT_FD (length 0) answers with a reply header that
  carries, as SCM_RIGHTS, the eventfd of this connection's control session: poll() reports it
  readable once a device event follows the last DEV_ARM_POLL sent on this connection, the
  kernel's poll on /dev/mapper/control. The daemon resets it at each DEV_ARM_POLL; clients only
  poll it, never read it.
- A caller that is not root gets EACCES for every command, its frames read and discarded.

SocketTransport keeps fcntl.ioctl's contract, including concurrent callers: a DEV_WAIT in one
thread never holds up another thread's command. Its first connection carries the control
session (DEV_ARM_POLL and the event fd); other commands use it when it is free, and DEV_WAIT
always goes on a connection of its own from a small pool.
"""

from __future__ import annotations

import os
import socket
import struct
import threading

REQ = struct.Struct("=II")
REPLY = struct.Struct("=iI")
#: The largest request: DM_MAX_DATA_SIZE (1 GiB) plus slack for a header.
MAX_FRAME = (1 << 30) + 4096
#: Transport command: reply carries the session's eventfd (SCM_RIGHTS).
CMD_EVENT_FD = 0x100

_DM_IOCTL_MIN_SIZE = 305  # offsetof(struct dm_ioctl, data)
_DM_MAX_DATA_SIZE = 1 << 30
_DATA_SIZE = struct.Struct("=I")  # dm_ioctl.data_size, after the three version words
_DEV_WAIT = 8
_DEV_ARM_POLL = 16
_SMALL = 1 << 20


def default_socket_path() -> str:
    return os.environ.get("DEVMAPPER_SOCKET", "/run/devmapper/control.sock")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, _SMALL))
        if not chunk:
            raise ConnectionError("engine daemon closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_into_exact(sock: socket.socket, view: memoryview) -> None:
    while len(view):
        got = sock.recv_into(view)
        if not got:
            raise ConnectionError("engine daemon closed the connection")
        view = view[got:]


def send_parts(sock: socket.socket, *parts: bytes | bytearray | memoryview) -> None:
    """sendall over several buffers with one sendmsg in the common case, no joined copy."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        sent = sock.sendmsg(views)
        while sent:
            if sent >= len(views[0]):
                sent -= len(views.pop(0))
            else:
                views[0] = views[0][sent:]
                sent = 0


def request_length(buf: bytes | bytearray) -> int:
    """How much of ``buf`` the driver can read: data_size bytes, at least the fixed header.

    Sending only that keeps a huge buffer with a small data_size working (as with the kernel),
    and every check the engine makes sees the same bytes it would see in the whole buffer.
    """
    return needed_length(bytes(buf[:16]), len(buf))


def needed_length(prefix: bytes, total: int) -> int:
    """request_length for a buffer of ``total`` bytes that starts with ``prefix`` (16 bytes:
    version and data_size, or all of a shorter buffer). The daemon discards the rest."""
    if total < 16:
        return total
    data_size: int = _DATA_SIZE.unpack_from(prefix, 12)[0]
    if data_size > _DM_MAX_DATA_SIZE:
        return min(total, _DM_IOCTL_MIN_SIZE)  # the engine answers EINVAL from the header
    return min(total, max(_DM_IOCTL_MIN_SIZE, data_size))


class _Conn:
    __slots__ = ("sock", "lock")

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.lock = threading.Lock()

    def exchange(self, cmd: int, buf: bytearray, want_fd: bool = False) -> tuple[int, int]:
        """One request and its reply (copied into buf). Returns (errno, received fd or -1)."""
        n = request_length(buf)
        send_parts(self.sock, REQ.pack(cmd, n), memoryview(buf)[:n])
        fd = -1
        if want_fd:
            head, fds, _flags, _addr = socket.recv_fds(self.sock, REPLY.size, 1,
                                                       socket.MSG_CMSG_CLOEXEC)
            if fds:
                fd = fds[0]
                for extra in fds[1:]:
                    os.close(extra)
            if not head:
                if fd >= 0:
                    os.close(fd)
                raise ConnectionError("engine daemon closed the connection")
            if len(head) < REPLY.size:
                head += recv_exact(self.sock, REPLY.size - len(head))
        else:
            head = recv_exact(self.sock, REPLY.size)
        err, length = REPLY.unpack(head)
        # The kernel never writes past the caller's buffer; neither do we.
        fit = min(length, len(buf))
        recv_into_exact(self.sock, memoryview(buf)[:fit])
        if length > fit:
            recv_exact(self.sock, length - fit)
        return err, fd

    def close(self) -> None:
        self.sock.close()


class SocketTransport:
    kind = "engine"

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_socket_path()
        self._primary: _Conn | None = _Conn(self.path)  # errors surface here, as open() would
        self._pool: list[_Conn] = []
        self._pool_lock = threading.Lock()
        self._event_fd = -1
        self._closed = False

    # ---- connections
    def _take_primary(self) -> _Conn:
        with self._pool_lock:
            conn = self._primary
        if conn is None:
            conn = _Conn(self.path)  # the old one broke: a new session, like reopening
            with self._pool_lock:
                if self._primary is None:
                    self._primary = conn
                else:
                    conn.close()
                    conn = self._primary
        conn.lock.acquire()
        return conn

    def _take(self, cmd: int) -> _Conn:
        if cmd in (_DEV_ARM_POLL, CMD_EVENT_FD):
            return self._take_primary()
        if cmd != _DEV_WAIT:
            with self._pool_lock:
                primary = self._primary
            if primary is not None and primary.lock.acquire(blocking=False):
                return primary
        with self._pool_lock:
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            conn = _Conn(self.path)
        conn.lock.acquire()
        return conn

    def _give_back(self, conn: _Conn, broken: bool) -> None:
        conn.lock.release()
        with self._pool_lock:
            if conn is self._primary:
                if broken:
                    # The next command opens a new session; its event fd replaces ours.
                    self._primary = None
                    conn.close()
                    if self._event_fd >= 0:
                        os.close(self._event_fd)
                        self._event_fd = -1
                return
            if broken or self._closed or len(self._pool) >= 4:
                conn.close()
            else:
                self._pool.append(conn)

    def _exchange(self, cmd: int, buf: bytearray, want_fd: bool = False) -> tuple[int, int]:
        if self._closed:
            raise ValueError("I/O on a closed SocketTransport")
        conn = self._take(cmd)
        broken = True
        try:
            result = conn.exchange(cmd, buf, want_fd)
            broken = False
            return result
        finally:
            self._give_back(conn, broken)

    # ---- the Transport interface
    def ioctl(self, cmd: int, buf: bytearray) -> None:
        err, _ = self._exchange(cmd, buf)
        if err:
            raise OSError(err, os.strerror(err))

    def fileno(self) -> int:
        """The control session's eventfd, fetched from the daemon on first use."""
        if self._event_fd < 0:
            err, fd = self._exchange(CMD_EVENT_FD, bytearray(), want_fd=True)
            if err:
                if fd >= 0:
                    os.close(fd)
                raise OSError(err, os.strerror(err))
            if fd < 0:
                raise OSError(0, "engine daemon sent no event descriptor")
            self._event_fd = fd
        return self._event_fd

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            conns, self._pool = self._pool, []
            if self._primary is not None:
                conns.append(self._primary)
                self._primary = None
        for conn in conns:
            conn.close()
        if self._event_fd >= 0:
            os.close(self._event_fd)
            self._event_fd = -1


__all__ = ["CMD_EVENT_FD", "MAX_FRAME", "REPLY", "REQ", "SocketTransport",
           "default_socket_path", "needed_length", "recv_exact", "recv_into_exact",
           "request_length", "send_parts"]
