"""The engine daemon's Unix socket: v4 buffers framed with a small header.

Request: u32 cmd, u32 length, then the buffer. Reply: i32 errno, u32 length, then the bytes
to copy over the request buffer (as the kernel's copy-out). Native byte order: the socket
never leaves the machine.
"""

from __future__ import annotations

import os
import socket
import struct

REQ = struct.Struct("=II")
REPLY = struct.Struct("=iI")
MAX_FRAME = (1 << 30) + 4096


def default_socket_path() -> str:
    return os.environ.get("DEVMAPPER_SOCKET", "/run/devmapper/control.sock")


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("engine daemon closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class SocketTransport:
    kind = "engine"

    def __init__(self, path: str | None = None) -> None:
        self.path = path or default_socket_path()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.connect(self.path)
        except OSError:
            self._sock.close()
            raise

    def ioctl(self, cmd: int, buf: bytearray) -> None:
        self._sock.sendall(REQ.pack(cmd, len(buf)) + bytes(buf))
        err, length = REPLY.unpack(recv_exact(self._sock, REPLY.size))
        if length:
            buf[:length] = recv_exact(self._sock, length)
        if err:
            raise OSError(err, os.strerror(err))

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()
