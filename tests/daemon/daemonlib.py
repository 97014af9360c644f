"""Helpers for the daemon tests: a real devmapperd process, raw frames, nobody's fork."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import devmapper
from devmapper.control.socket import REPLY, REQ, SocketTransport, recv_exact
from devmapper.daemon_client import wait_ready
from devmapper.library import DeviceMapper

SRC = Path(devmapper.__file__).resolve().parents[1]
NOBODY = 65534


def daemon_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env.pop("NOTIFY_SOCKET", None)
    # These tests are about the control socket; block devices have their own (tests/expose,
    # tests/test_blockdev.py), and would put nodes in the real /dev/mapper.
    env.setdefault("DEVMAPPER_EXPOSE", "0")
    env.update(extra)
    return env


def short_tempdir() -> Path:
    """A world-traversable directory with a short path (sun_path holds 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="dmd-", dir="/tmp"))
    d.chmod(0o755)
    return d


class DaemonProc:
    """devmapperd --foreground on a private socket, logging to a file at debug level."""

    def __init__(self, rundir: Path, env: dict[str, str] | None = None) -> None:
        self.dir = rundir
        self.socket = rundir / "control.sock"
        self.pidfile = rundir / "devmapperd.pid"
        self.log = rundir / "devmapperd.log"
        self.env = env or daemon_env()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> DaemonProc:
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devmapper.daemon", "--foreground", "-v",
                 "--socket", str(self.socket), "--pidfile", str(self.pidfile)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=self.env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                wait_ready(str(self.socket), 0).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def transport(self) -> SocketTransport:
        return SocketTransport(str(self.socket))

    def dm(self) -> DeviceMapper:
        return DeviceMapper(self.transport())

    def raw(self) -> RawClient:
        return RawClient(str(self.socket))


class RawClient:
    """Frames by hand: what a buggy or hostile client can send."""

    def __init__(self, path: str, timeout: float | None = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def send(self, cmd: int, buf: bytes | bytearray, length: int | None = None) -> None:
        self.sock.sendall(REQ.pack(cmd, len(buf) if length is None else length) + bytes(buf))

    def reply(self) -> tuple[int, bytes]:
        err, length = REPLY.unpack(recv_exact(self.sock, REPLY.size))
        return err, recv_exact(self.sock, length) if length else b""

    def call(self, cmd: int, buf: bytes | bytearray) -> tuple[int, bytes]:
        self.send(cmd, buf)
        return self.reply()

    def readable(self, timeout: float) -> bool:
        return bool(select.select([self.sock], [], [], timeout)[0])

    def close(self) -> None:
        self.sock.close()


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


def as_nobody(fn: Callable[[], object]) -> object:
    """Run fn in a forked child that dropped to uid/gid 65534; its JSON-able result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = {"result": fn()}
            code = 0
        except BaseException as e:
            out = {"exception": f"{type(e).__name__}: {e}",
                   "errno": getattr(e, "errno", None)}
        with contextlib.suppress(BaseException):
            os.write(w, json.dumps(out, default=repr).encode())
        os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks) or b"{}")
    if "exception" in out:
        raise RuntimeError(out["exception"], out.get("errno"))
    return out.get("result")


def proc_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
