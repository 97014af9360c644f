"""dmsetup run in-process against one engine shared by every call of a test."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from devmapper.cli import task as cli_task
from devmapper.cli.dmsetup import main
from devmapper.control.engine import EngineTransport
from devmapper.engine.core import Engine


class Result:
    def __init__(self, rc: int, out: str, err: str) -> None:
        self.rc, self.out, self.err = rc, out, err

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, out={self.out!r}, err={self.err!r})"

    def ok(self) -> Result:
        assert self.rc == 0 and not self.err, self
        return self


class Dmsetup:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, *argv: str, stdin: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        rc = main(list(argv), EngineTransport(self.engine), io.StringIO(stdin), out, err)
        return Result(rc, out.getvalue(), err.getvalue())


@pytest.fixture
def dmsetup(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dmsetup]:
    logging.getLogger("devmapper").addHandler(logging.NullHandler())
    monkeypatch.setattr(cli_task, "RETRY_DELAY", 0)
    for var in ("DM_DEV_DIR", "DM_DEFAULT_NAME_MANGLING_MODE", "DM_UDEV_COOKIE",
                "DEVMAPPER_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    engine = Engine()
    yield Dmsetup(engine)
    engine.remove_all(False, False)
