"""Root only: the socket's mode keeps others out, SO_PEERCRED answers EACCES if they get in."""

from __future__ import annotations

import errno
import os
import stat

from daemonlib import NOBODY, DaemonProc, RawClient, as_nobody

from devmapper import uapi
from devmapper.control.socket import CMD_EVENT_FD, SocketTransport
from devmapper.library import DeviceMapper
from devmapper.uapi import Cmd, DmIoctl


def _requests() -> list[tuple[int, bytes]]:
    """One well-formed request per command, plus an unknown and a transport command."""
    out = []
    for cmd in Cmd:
        hdr = DmIoctl(version=uapi.CMD_MIN_VERSION.get(cmd, (4, 0, 0)), name="victim")
        if cmd in (Cmd.REMOVE_ALL, Cmd.LIST_DEVICES, Cmd.LIST_VERSIONS, Cmd.VERSION,
                   Cmd.DEV_ARM_POLL):
            hdr.name = ""
        if cmd == Cmd.GET_TARGET_VERSION:
            hdr.name = "linear"
        payload = b""
        if cmd == Cmd.DEV_RENAME:
            payload = b"stolen\0"
        elif cmd == Cmd.TABLE_LOAD:
            hdr.target_count = 1
            payload = uapi.encode_load_specs([uapi.TargetSpec(0, 8, "zero", "")])
        elif cmd == Cmd.TARGET_MSG:
            payload = uapi.encode_target_msg(0, "@cancel_deferred_remove")
        elif cmd == Cmd.DEV_SET_GEOMETRY:
            payload = b"1 1 1 0\0"
        out.append((int(cmd), bytes(uapi.build_request(hdr, payload, 4096))))
    out.append((99, bytes(uapi.build_request(DmIoctl(), b"", 312))))
    out.append((CMD_EVENT_FD, b""))
    return out


def test_socket_is_root_only(daemon: DaemonProc) -> None:
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (0, 0)
    path = str(daemon.socket)

    def connect() -> str:
        try:
            SocketTransport(path)
        except PermissionError as e:
            return f"errno {e.errno}"
        return "connected"

    assert as_nobody(connect) == f"errno {errno.EACCES}"


def test_non_root_gets_eacces_for_every_command(daemon: DaemonProc) -> None:
    with daemon.dm() as dm:
        dm.create("victim", "0 8 zero")
    os.chmod(daemon.socket, 0o666)  # let nobody reach the peer-credential check
    path = str(daemon.socket)
    requests = _requests()

    def attempt() -> list[object]:
        assert os.getuid() == NOBODY
        raw = RawClient(path)
        answers: list[object] = []
        for cmd, buf in requests:
            err, data = raw.call(cmd, buf)
            answers.append([err, data.hex()])
        # A big frame is read and dropped, not buffered: the connection stays in step.
        raw.send(Cmd.VERSION, bytes(8 << 20))
        err, data = raw.reply()
        answers.append([err, data.hex()])
        err, data = raw.call(Cmd.VERSION, bytes(uapi.build_request(DmIoctl())))
        answers.append([err, data.hex()])
        raw.close()
        # and through the library
        try:
            DeviceMapper(SocketTransport(path)).version()
        except OSError as e:
            answers.append(["library", e.errno])
        return answers

    answers = as_nobody(attempt)
    assert isinstance(answers, list)
    assert answers[:-1] == [[errno.EACCES, ""]] * (len(requests) + 2)
    assert answers[-1] == ["library", errno.EACCES]
    # nothing happened to the device, and root is still served
    with daemon.dm() as dm:
        info = dm.info("victim")
        assert info.name == "victim" and info.live_table and not info.suspended
        assert [d.name for d in dm.list()] == ["victim"]
        dm.remove("victim")
    assert "uid 65534" in daemon.log_text()
