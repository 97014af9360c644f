"""What the exposure layer needs from a mapped device: the engine implements this.

Every call may block for a long time (a suspended device holds I/O until resume); the FUSE
server calls them from its own worker threads, so blocking one device never stalls another.
Buffers handed to read() and write() are page-aligned when they come from the raw FUSE server
(so a backend may use O_DIRECT on them) and are only valid during the call.
"""

from __future__ import annotations

from typing import Protocol


class BlockBackend(Protocol):
    size: int  # bytes, may change on resume (then the exposer is told via resize())
    read_only: bool

    # fill buf fully or raise OSError(errno)
    def read(self, offset: int, buf: memoryview) -> None: ...

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None: ...  # raise OSError

    # Optional, for the io_uring server's thread, which must never wait: read_nowait and
    # write_nowait do what read and write do and answer True, or do nothing and answer False
    # where read or write would wait (a suspended device). Without them every READ and WRITE
    # goes to a thread that may wait.
    #   def read_nowait(self, offset: int, buf: memoryview) -> bool: ...
    #   def write_nowait(self, offset: int, data: memoryview, fua: bool = False) -> bool: ...
    # Optional, for the /dev/fuse server's small READs: one writev(out, header + the bytes)
    # from the backend's own memory (MappedDevice maps its backing read-only), True when
    # done; False, with nothing written, sends the READ through read().
    #   def send(self, out: int, header: bytes, offset: int, n: int) -> bool: ...

    def flush(self) -> None: ...

    def discard(self, offset: int, length: int) -> None: ...  # may raise OSError(EOPNOTSUPP)

    def opened(self) -> None: ...  # a user opened the block device (open count +1)

    def closed(self) -> None: ...  # last close of that user (open count -1)
