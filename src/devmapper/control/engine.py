"""An engine in this process: the same v4 buffers, answered without a syscall."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devmapper.engine.core import Engine


class EngineTransport:
    kind = "engine"

    def __init__(self, engine: Engine | None = None) -> None:
        if engine is None:
            from devmapper.engine.core import Engine

            engine = Engine()
        self.engine = engine
        self._session = engine.session()

    def ioctl(self, cmd: int, buf: bytearray) -> None:
        err, reply = self.engine.ioctl(cmd, buf, self._session)
        buf[:len(reply)] = reply
        if err:
            raise OSError(err, os.strerror(err))

    def fileno(self) -> int:
        return self._session.fileno()

    def close(self) -> None:
        self._session.close()
