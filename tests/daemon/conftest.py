"""Daemon tests: a real devmapperd process per test, on a private socket. No mocks."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from daemonlib import DaemonProc, rmtree, short_tempdir  # noqa: E402


@pytest.fixture
def rundir() -> Iterator[Path]:
    d = short_tempdir()
    try:
        yield d
    finally:
        rmtree(d)


@pytest.fixture
def backing(rundir: Path) -> list[Path]:
    """Four 4 MiB files to build linear and striped tables on."""
    files = []
    for i in range(4):
        f = rundir / f"backing{i}"
        with open(f, "wb") as fh:
            fh.truncate(4 << 20)
        files.append(f)
    return files


@pytest.fixture
def daemon(rundir: Path, request: pytest.FixtureRequest) -> Iterator[DaemonProc]:
    """A running daemon; stopped with SIGTERM after the test, which must leave nothing."""
    d = DaemonProc(rundir).start()
    try:
        yield d
    finally:
        alive = d.alive()
        rc = d.stop()
        log = d.log_text()
        assert alive, f"daemon died during the test:\n{log}"
        assert rc == 0, f"daemon exited {rc}:\n{log}"
        assert not d.socket.exists(), "socket left behind"
        assert not d.pidfile.exists(), "pidfile left behind"
        if not request.node.get_closest_marker("engine_errors_expected"):
            assert "Traceback" not in log, log


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engine_errors_expected: the daemon log may hold guarded engine exceptions")
