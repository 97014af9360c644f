"""Helpers for the block-device tests: a served daemon and a command runner."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
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

    @contextlib.contextmanager
    def suspend_resume_cycles(self, name: str, pause: float = 0.05) -> Iterator[list[int]]:
        """Suspend and resume `name` over and over (every other suspend noflush) while the
        body runs; yields the count of completed cycles, a one-element list."""
        stop = threading.Event()
        cycles = [0]

        def flapper() -> None:
            with self.dm() as ctl:
                while not stop.is_set():
                    ctl.suspend(name, noflush=cycles[0] % 2 == 1)
                    stop.wait(0.05)
                    ctl.resume(name)
                    cycles[0] += 1
                    stop.wait(pause)

        t = threading.Thread(target=flapper)
        t.start()
        try:
            yield cycles
        finally:
            stop.set()
            t.join(30)

    def file(self, name: str, size: int) -> str:
        path = self.work / name
        with open(path, "wb") as f:
            f.truncate(size)
        return str(path)


def run(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]
