"""`devmapper move` as a command against the engine daemon (devmapperd on a private socket):
a mover killed with SIGKILL mid-copy, then continued or aborted by another process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import devmapper
from devmapper.control.socket import SocketTransport
from devmapper.daemon_client import wait_ready
from devmapper.library import DeviceMapper

from .mirror_helpers import MiB, make_file, read_at

SRC = str(Path(devmapper.__file__).resolve().parents[1])


class Daemon:
    def __init__(self, rundir: Path) -> None:
        self.dir = rundir
        self.socket = str(rundir / "control.sock")
        self.env = dict(os.environ, PYTHONPATH=SRC, DEVMAPPER_EXPOSE="0",
                        DEVMAPPER_BACKEND="engine", DEVMAPPER_SOCKET=self.socket,
                        DEVMAPPER_MOVE_DIR=str(rundir / "moves"))
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devmapper.daemon", "--foreground", "--socket", self.socket,
             "--pidfile", str(rundir / "pid")], env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=open(rundir / "log", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + 20
        while True:
            try:
                wait_ready(self.socket, 0).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.dm = DeviceMapper(SocketTransport(self.socket))

    def mover(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "devmapper.cli.tool", "move", *args],
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    def stop(self) -> None:
        self.dm.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Path(tempfile.mkdtemp(prefix="dmm-", dir="/tmp"))  # sun_path is short
    try:
        dd = Daemon(d)
    except (OSError, RuntimeError) as e:
        pytest.skip(f"engine daemon does not start here: {e}")
    try:
        yield dd
    finally:
        dd.stop()
        subprocess.run(["rm", "-rf", str(d)])


def lines(dm: DeviceMapper, name: str) -> list[str]:
    return [f"{s.start} {s.length} {s.target_type} {s.params}" for s in dm.table(name)]


def test_killed_mover_then_continue_and_abort(daemon: Daemon) -> None:
    dm = daemon.dm
    a = make_file(daemon.dir / "a.img", 16 * MiB, seed=31)
    b = make_file(daemon.dir / "b.img", 16 * MiB)
    dm.create("vol", f"0 {16 * MiB // 512} linear {a} 0")
    # The destination sits behind a device we can suspend: the copy stalls there, so the
    # mover is surely mid-move when it is killed.
    dm.create("dst", f"0 {16 * MiB // 512} linear {b} 0")
    info = dm.info("dst")
    dst = f"{info.major}:{info.minor}"

    for finish in ("--continue", "--abort"):
        dm.suspend("dst")
        mv = daemon.mover("vol", "--from", a, "--to", dst, "--region-size", "1024")
        deadline = time.monotonic() + 60
        while dm.table("vol")[0].target_type != "mirror":
            assert mv.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        mv.send_signal(signal.SIGKILL)
        mv.wait()
        assert dm.table("vol")[0].target_type == "mirror"
        dm.resume("dst")
        done = daemon.mover(finish, "vol")
        out, err = done.communicate(timeout=120)
        assert done.returncode == 0, err
        expected = dst if finish == "--continue" else a
        assert lines(dm, "vol") == [f"0 {16 * MiB // 512} linear {expected} 0"]
        if finish == "--continue":
            assert read_at(b, 0, 16 * MiB) == read_at(a, 0, 16 * MiB)
            # Move back onto the file for the --abort round.
            back = daemon.mover("vol", "--from", dst, "--to", a, "-q")
            assert back.communicate(timeout=120)[0] == "" and back.returncode == 0
            assert lines(dm, "vol") == [f"0 {16 * MiB // 512} linear {a} 0"]
    assert [f for f in os.listdir(daemon.dir / "moves") if f.endswith(".json")] == []


def test_errors_are_reported(daemon: Daemon) -> None:
    a = make_file(daemon.dir / "a.img", 4 * MiB)
    b = make_file(daemon.dir / "b.img", 4 * MiB)
    daemon.dm.create("vol", f"0 {4 * MiB // 512} linear {a} 0")
    p = daemon.mover("vol", "--from", b, "--to", a)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "no segment of vol is on" in err
    p = daemon.mover("--continue", "vol")
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "no move of vol in progress" in err
