"""Helpers for the block-device tests: a served daemon and a command runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "daemon"))

from daemonlib import DaemonProc  # noqa: E402

from devmapper.library import DeviceMapper  # noqa: E402


class Served:
    def __init__(self, daemon: DaemonProc, dev_dir: Path, work: Path) -> None:
        self.daemon = daemon
        self.dev_dir = dev_dir
        self.work = work

    def node(self, name: str) -> str:
        return str(self.dev_dir / "mapper" / name)

    def dm(self) -> DeviceMapper:
        return self.daemon.dm()

    def file(self, name: str, size: int) -> str:
        path = self.work / name
        with open(path, "wb") as f:
            f.truncate(size)
        return str(path)


def run(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]
