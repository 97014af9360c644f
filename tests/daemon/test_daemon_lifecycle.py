"""Start, detach, single instance, SIGTERM, systemd readiness, autostart from the library."""

from __future__ import annotations

import configparser
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemonlib import SRC, DaemonProc, daemon_env, proc_gone, wait_until

from devmapper import uapi
from devmapper.control.socket import REQ
from devmapper.daemon_client import connect_engine
from devmapper.library import DeviceMapper
from devmapper.uapi import Cmd, DmIoctl

UNIT = SRC.parent / "packaging" / "devmapperd.service"
PF_MEMALLOC_NOIO = 0x00080000
PF_LOCAL_THROTTLE = 0x00100000
CAP_SYS_RESOURCE = 24


def _daemon_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "devmapper.daemon", *args]


def _kill_from_pidfile(pidfile: Path) -> None:
    try:
        pid = int(pidfile.read_text())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    assert wait_until(lambda: proc_gone(pid), 20), f"daemon {pid} ignored SIGTERM"


def test_sigterm_removes_devices_and_leaves_nothing(rundir: Path, backing: list[Path]) -> None:
    d = DaemonProc(rundir).start()
    try:
        with d.dm() as dm:
            base = dm.create("base", f"0 2048 linear {backing[0]} 0")
            dm.create("top", f"0 1024 linear {base.major}:{base.minor} 0")
            dm.create("top2", "0 512 linear 254:1 0")  # a stack three deep
            dm.create("susp", "0 8 zero")
            dm.suspend("susp")
            dm.create("inact", "0 8 zero")
            dm.load("inact", "0 16 error")
            dm.create("empty")
            dm.remove("base", deferred=True)  # open: marked only
        # clients in every state: idle, waiting forever, half a frame sent
        idle = d.transport()
        waiter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        waiter.connect(str(d.socket))
        buf = uapi.build_request(DmIoctl(name="empty"), b"", 4096)
        waiter.sendall(REQ.pack(Cmd.DEV_WAIT, len(buf)) + bytes(buf))
        half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        half.connect(str(d.socket))
        half.sendall(REQ.pack(Cmd.DEV_STATUS, 4096) + bytes(10))
        time.sleep(0.3)
        start = time.monotonic()
        assert d.stop(signal.SIGTERM) == 0
        assert time.monotonic() - start < 10
        log = d.log_text()
        assert "removed 6 device(s) at shutdown" in log, log
        assert "still open" not in log and "Traceback" not in log, log
        assert not d.socket.exists() and not d.pidfile.exists()
        # the waiter was cancelled: EINTR, or the hang-up that follows it
        waiter.settimeout(5)
        head = waiter.recv(8)
        assert head in (b"", int.to_bytes(errno.EINTR, 4, sys.byteorder) + bytes(4))
        for s in (waiter, half):
            s.close()
        idle.close()
    finally:
        if d.alive():
            d.stop(signal.SIGKILL)


def test_sigint_is_a_clean_stop_too(rundir: Path) -> None:
    d = DaemonProc(rundir).start()
    assert d.stop(signal.SIGINT) == 0
    assert not d.socket.exists() and not d.pidfile.exists()


def test_detaches_and_reports_its_pid(rundir: Path) -> None:
    sock, pidfile = rundir / "control.sock", rundir / "devmapperd.pid"
    try:
        r = subprocess.run(_daemon_cmd("--socket", str(sock)), env=daemon_env(),
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        pid = int(r.stdout)
        assert pidfile.read_text() == f"{pid}\n"
        assert sock.exists()
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # not ours: double-forked away
        assert os.getsid(pid) != os.getsid(0)
        with open(f"/proc/{pid}/status") as f:
            ppid = next(int(ln.split()[1]) for ln in f if ln.startswith("PPid:"))
        assert ppid != os.getpid()
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        connect_engine(str(sock), autostart=False).close()
        # a second one finds it running
        r2 = subprocess.run(_daemon_cmd("--socket", str(sock)), env=daemon_env(),
                            capture_output=True, timeout=30)
        assert r2.returncode == 3 and f"already running (pid {pid})" in r2.stderr.decode()
        if not os.path.exists("/dev/log"):
            assert "listening on" in (rundir / "devmapperd.log").read_text()
    finally:
        _kill_from_pidfile(pidfile)
    assert not sock.exists() and not pidfile.exists()


def test_one_daemon_per_socket(rundir: Path) -> None:
    d = DaemonProc(rundir).start()
    try:
        # same pidfile: its lock says no
        r = subprocess.run(_daemon_cmd("--foreground", "--socket", str(d.socket),
                                       "--pidfile", str(d.pidfile)),
                           env=daemon_env(), capture_output=True, timeout=30)
        assert r.returncode == 3, r.stderr
        # another pidfile, same socket: somebody answers there
        r = subprocess.run(_daemon_cmd("--foreground", "--socket", str(d.socket),
                                       "--pidfile", str(rundir / "other.pid")),
                           env=daemon_env(), capture_output=True, timeout=30)
        assert r.returncode == 3, r.stderr
        assert not (rundir / "other.pid").exists()
        with d.dm() as dm:
            assert dm.version() == uapi.ENGINE_VERSION
    finally:
        assert d.stop() == 0


def test_restarts_over_a_crashed_daemons_leftovers(rundir: Path) -> None:
    d = DaemonProc(rundir).start()
    d.stop(signal.SIGKILL)
    assert d.socket.exists() and d.pidfile.exists()  # what a crash leaves
    d2 = DaemonProc(rundir).start()
    try:
        assert d2.pidfile.read_text() == f"{d2.pid}\n"
        with d2.dm() as dm:
            assert dm.list() == []
    finally:
        assert d2.stop() == 0
    assert not d2.socket.exists() and not d2.pidfile.exists()


def test_refuses_to_replace_what_is_not_a_socket(rundir: Path) -> None:
    path = rundir / "control.sock"
    path.write_text("precious")
    r = subprocess.run(_daemon_cmd("--foreground", "--socket", str(path)), env=daemon_env(),
                       capture_output=True, timeout=30)
    assert r.returncode == 1
    assert "not a socket" in r.stderr.decode()
    assert path.read_text() == "precious"
    assert not (rundir / "devmapperd.pid").exists()


def test_systemd_readiness(rundir: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(rundir / "notify"))
    notify.settimeout(30)
    d = DaemonProc(rundir, env=daemon_env(NOTIFY_SOCKET=str(rundir / "notify"))).start()
    try:
        msg = notify.recv(4096).decode()
        assert msg == f"READY=1\nMAINPID={d.pid}"
    finally:
        assert d.stop() == 0
    assert notify.recv(4096) == b"STOPPING=1"
    notify.close()


def test_marks_itself_an_io_flusher(daemon: DaemonProc) -> None:
    with open("/proc/self/status") as f:
        cap_eff = next(int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:"))
    log = daemon.log_text()
    if not cap_eff & (1 << CAP_SYS_RESOURCE):
        # PR_SET_IO_FLUSHER needs CAP_SYS_RESOURCE: without it, said so, and carried on
        assert "PR_SET_IO_FLUSHER failed: Operation not permitted" in log, log
        return
    if "not supported by this kernel" in log:
        pytest.skip("kernel without PR_SET_IO_FLUSHER")
    with daemon.dm() as dm:
        dm.version()  # a connection thread exists now: it must carry the flags too
        for task in os.listdir(f"/proc/{daemon.pid}/task"):
            with open(f"/proc/{daemon.pid}/task/{task}/stat") as f:
                flags = int(f.read().rsplit(")", 1)[1].split()[6])
            assert flags & PF_MEMALLOC_NOIO and flags & PF_LOCAL_THROTTLE, (task, hex(flags))


# ---------------------------------------------------------------- autostart

_CLIENT = """
import sys
from devmapper.daemon_client import connect_engine
from devmapper.library import DeviceMapper
dm = DeviceMapper(connect_engine())
dm.create(sys.argv[1], "0 8 zero")
again = DeviceMapper(connect_engine())
print(again.info(sys.argv[1]).name, len(again.list()))
"""


def _client(rundir: Path, name: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _CLIENT, name],
                            env=daemon_env(DEVMAPPER_SOCKET=str(rundir / "control.sock"), **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_autostart_on_first_use(rundir: Path) -> None:
    pidfile = rundir / "devmapperd.pid"
    try:
        p = _client(rundir, "first")
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.decode() == "first 1\n"
        pid = int(pidfile.read_text())
        assert err.decode() == f"devmapper: started engine daemon (pid {pid})\n"
        # the next program finds it running: says nothing, sees the same engine
        p = _client(rundir, "second", DEVMAPPER_BACKEND="engine")
        out, err = p.communicate(timeout=60)
        assert (p.returncode, out, err) == (0, b"second 2\n", b"")
        assert int(pidfile.read_text()) == pid
    finally:
        _kill_from_pidfile(pidfile)
    assert not (rundir / "control.sock").exists()


def test_autostart_race_starts_one_daemon(rundir: Path) -> None:
    pidfile = rundir / "devmapperd.pid"
    try:
        procs = [_client(rundir, f"r{i}") for i in range(6)]
        results = [p.communicate(timeout=90) for p in procs]
        assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
        pid = int(pidfile.read_text())
        said = b"".join(err for _, err in results).decode()
        assert said == f"devmapper: started engine daemon (pid {pid})\n"
        with DeviceMapper(connect_engine(str(rundir / "control.sock"), autostart=False)) as dm:
            assert sorted(d.name for d in dm.list()) == [f"r{i}" for i in range(6)]
    finally:
        _kill_from_pidfile(pidfile)


def test_autostart_can_be_turned_off(rundir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(rundir / "control.sock")
    with pytest.raises(FileNotFoundError):
        connect_engine(path, autostart=False)
    monkeypatch.setenv("DEVMAPPER_AUTOSTART", "0")
    with pytest.raises(FileNotFoundError):
        connect_engine(path)
    assert not (rundir / "devmapperd.pid").exists()


def test_autostart_failure_is_reported(rundir: Path) -> None:
    (rundir / "control.sock").write_text("")  # connect: ECONNREFUSED; the daemon: no
    with pytest.raises(OSError) as e:
        connect_engine(str(rundir / "control.sock"))
    assert e.value.errno == errno.ECONNREFUSED
    assert "cannot start the engine daemon: devmapperd: " in str(e.value)
    assert "is not a socket" in str(e.value)


# ---------------------------------------------------------------- packaging


def test_unit_file() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecStart"].split()[0].endswith("devmapperd")
    assert "--foreground" in svc["ExecStart"].split()
    assert svc["RuntimeDirectory"] == "devmapper"
    assert "Install" in unit


def test_console_script_and_module_main() -> None:
    r = subprocess.run(_daemon_cmd("--help"), env=daemon_env(), capture_output=True,
                       timeout=30)
    assert r.returncode == 0 and b"--foreground" in r.stdout
