"""Reaching the engine daemon, and starting it on first use.

When nothing listens on the socket, :func:`connect_engine` runs ``python -m devmapper.daemon``
with this interpreter (it detaches and returns once the socket listens), waits until the
socket answers DM_VERSION, and says so once on stderr. Concurrent first uses are safe: the
daemon's pidfile lock lets one daemon win, the others find it running and say nothing.
DEVMAPPER_AUTOSTART=0 turns starting off (e.g. where systemd owns the daemon).
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time

from devmapper.control.socket import SocketTransport, default_socket_path

AUTOSTART_ENV = "DEVMAPPER_AUTOSTART"
STARTUP_TIMEOUT = 30.0
_EXIT_RUNNING = 3  # devmapper.daemon.EXIT_RUNNING, not imported: it pulls in the engine
_start_lock = threading.Lock()


def connect_engine(path: str | None = None, *, autostart: bool | None = None) -> SocketTransport:
    """A transport to the engine daemon at ``path`` (default: $DEVMAPPER_SOCKET)."""
    path = path or default_socket_path()
    if autostart is None:
        autostart = os.environ.get(AUTOSTART_ENV, "1") not in ("0", "no", "false")
    try:
        return SocketTransport(path)
    except (FileNotFoundError, ConnectionRefusedError):
        if not autostart:
            raise
    with _start_lock:  # threads of one process start it once
        try:
            return SocketTransport(path)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        pid = start_daemon(path)
        transport = wait_ready(path, STARTUP_TIMEOUT)
    if pid is not None:
        print(f"devmapper: started engine daemon (pid {pid})", file=sys.stderr, flush=True)
    return transport


def start_daemon(path: str) -> int | None:
    """Run the daemon detached; its pid, or None if another one got there first."""
    import subprocess

    import devmapper

    env = dict(os.environ, DEVMAPPER_SOCKET=path)
    # The daemon must run this very code, wherever it was imported from.
    root = os.path.dirname(os.path.dirname(os.path.abspath(devmapper.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run([sys.executable, "-m", "devmapper.daemon", "--socket", path],
                              stdin=subprocess.DEVNULL, capture_output=True, env=env,
                              timeout=STARTUP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise OSError(errno.ETIMEDOUT, "the engine daemon did not start in time") from None
    if proc.returncode == 0:
        out = proc.stdout.decode(errors="replace").strip()
        return int(out) if out.isdigit() else None
    if proc.returncode == _EXIT_RUNNING:
        return None
    why = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
    raise OSError(errno.ECONNREFUSED, f"cannot start the engine daemon: {why}")


def wait_ready(path: str, timeout: float) -> SocketTransport:
    """Connect once the socket answers DM_VERSION."""
    from devmapper.uapi import DM_IOCTL_SIZE, Cmd, DmIoctl, build_request

    deadline = time.monotonic() + timeout
    while True:
        try:
            transport = SocketTransport(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
            continue
        try:
            transport.ioctl(Cmd.VERSION, build_request(DmIoctl(), b"", DM_IOCTL_SIZE))
        except BaseException:
            transport.close()
            raise
        return transport
