"""Every v4 command through SocketTransport + DeviceMapper, checked against an in-process
engine running the same script: the daemon must be invisible."""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonlib import DaemonProc

from devmapper import uapi
from devmapper.control.engine import EngineTransport
from devmapper.control.socket import CMD_EVENT_FD, request_length
from devmapper.library import DeviceInfo, DeviceMapper, DMError
from devmapper.uapi import Cmd, DmIoctl, Flag


def scenario(dm: DeviceMapper, files: list[Path]) -> list[object]:
    """Touches every command, success and failure; returns what each step answered."""
    out: list[object] = []

    def step(fn: Callable[[], object]) -> None:
        try:
            out.append(fn())
        except DMError as e:
            out.append(("error", e.command, e.errno))

    f0, f1 = (str(f) for f in files[:2])
    step(dm.version)
    step(dm.targets)
    step(lambda: dm.target_version("linear"))
    step(lambda: dm.target_version("no-such-target"))
    step(lambda: dm.create("lin", f"0 2048 linear {f0} 0\n2048 2048 linear {f1} 8",
                           uuid="UUID-LIN"))
    step(lambda: dm.create("lin", "0 8 zero"))  # EBUSY
    step(lambda: dm.create("a/b"))  # EINVAL
    step(lambda: dm.create("empty", minor=77))
    step(lambda: dm.create("str", f"0 4096 striped 2 8 {f0} 4096 {f1} 4096"))
    step(lambda: dm.info("lin"))
    step(lambda: dm.info(uuid="UUID-LIN"))
    step(lambda: dm.info(dev=(254, 77)))
    step(lambda: dm.info("missing"))  # ENXIO
    step(lambda: dm.status("lin"))
    step(lambda: dm.table("str"))
    step(lambda: dm.deps("lin"))
    step(lambda: dm.list())
    step(lambda: dm.list(with_uuid=False))
    # stacking on a mapped device by major:minor
    step(lambda: dm.create("top", "0 1024 linear 254:0 0"))
    step(lambda: dm.deps("top"))
    step(lambda: dm.info("lin"))  # open count 1
    step(lambda: dm.remove("lin"))  # EBUSY
    # inactive table, clear
    step(lambda: dm.load("empty", "0 16 error"))
    step(lambda: dm.info("empty", inactive=True))
    step(lambda: dm.table("empty", inactive=True))
    step(lambda: dm.clear("empty"))
    step(lambda: dm.load("empty", "0 16 zero", read_only=True))
    step(lambda: dm.resume("empty"))
    step(lambda: dm.info("empty"))
    step(lambda: dm.load("empty", "0 8 linear /nonexistent/file 0"))  # ENOENT-ish
    step(lambda: dm.load("empty", ""))  # no targets: EINVAL
    # suspend / resume / reload to another size
    step(lambda: dm.suspend("str", noflush=True))
    step(lambda: dm.info("str"))
    step(lambda: dm.load("str", "0 8192 zero"))
    step(lambda: dm.resume("str"))
    step(lambda: dm.status("str"))
    # rename, set uuid
    step(lambda: dm.rename("str", "str2"))
    step(lambda: dm.rename("str2", new_uuid="UUID-STR"))
    step(lambda: dm.rename("str2", new_uuid="again"))  # EINVAL: has a uuid
    step(lambda: dm.rename("str2", "top"))  # EBUSY
    # events
    step(lambda: dm.wait("str2", 0))  # its event number moved: returns at once
    # messages
    step(lambda: dm.message("top", 0, "@cancel_deferred_remove"))
    step(lambda: dm.message("top", 0, "hello"))  # linear takes no messages
    step(lambda: dm.message("top", 0, "@nonsense"))
    step(lambda: dm.message("top", 1 << 40, "x"))  # sector outside
    # geometry
    step(lambda: dm.set_geometry("top", 100, 4, 32, 0))
    step(lambda: dm.set_geometry("top", 70000, 4, 32, 0))  # EINVAL
    # deferred remove, remove, remove_all
    step(lambda: dm.remove("lin", deferred=True))
    step(lambda: dm.info("lin"))
    step(lambda: dm.remove("top"))
    step(lambda: dm.info("lin"))  # gone with its last opener
    step(dm.arm_poll)
    step(lambda: dm.remove_all())
    step(lambda: dm.list())
    step(lambda: dm.remove("top"))  # ENXIO
    return out


def test_every_command_matches_in_process_engine(daemon: DaemonProc,
                                                 backing: list[Path]) -> None:
    with daemon.dm() as dm:
        over_socket = scenario(dm, backing)
    with DeviceMapper(EngineTransport()) as dm:
        in_process = scenario(dm, backing)
    assert len(over_socket) == len(in_process)
    for i, (a, b) in enumerate(zip(over_socket, in_process, strict=True)):
        assert a == b, f"step {i}: {a!r} != {b!r}"
    # and it did exercise both outcomes
    assert any(isinstance(r, tuple) and r and r[0] == "error" for r in over_socket)
    assert ("error", Cmd.DEV_STATUS, errno.ENXIO) in over_socket


def test_raw_replies_are_byte_identical(daemon: DaemonProc, backing: list[Path]) -> None:
    """The bytes copied back, errno included, for each command on the same state."""
    local = EngineTransport()
    remote = daemon.transport()
    table = uapi.encode_load_specs([uapi.TargetSpec(0, 64, "linear", f"{backing[0]} 0")])
    reqs: list[tuple[Cmd, DmIoctl, bytes, int]] = [
        (Cmd.VERSION, DmIoctl(), b"", 312),
        (Cmd.DEV_CREATE, DmIoctl(name="x", uuid="U"), b"", 312),
        (Cmd.TABLE_LOAD, DmIoctl(name="x", target_count=1), table, 4096),
        (Cmd.DEV_SUSPEND, DmIoctl(name="x"), b"", 312),
        (Cmd.TABLE_STATUS, DmIoctl(name="x"), b"", 4096),
        (Cmd.TABLE_STATUS, DmIoctl(name="x", flags=Flag.STATUS_TABLE), b"", 330),
        (Cmd.TABLE_DEPS, DmIoctl(name="x"), b"", 4096),
        (Cmd.LIST_DEVICES, DmIoctl(flags=Flag.UUID), b"", 4096),
        (Cmd.LIST_DEVICES, DmIoctl(), b"", 312),
        (Cmd.LIST_VERSIONS, DmIoctl(), b"", 4096),
        (Cmd.LIST_VERSIONS, DmIoctl(), b"", 320),
        (Cmd.GET_TARGET_VERSION, DmIoctl(version=(4, 41, 0), name="zero"), b"", 4096),
        (Cmd.DEV_RENAME, DmIoctl(name="x"), b"y\0", 1024),
        (Cmd.DEV_SET_GEOMETRY, DmIoctl(version=(4, 6, 0), name="y"), b"1 2 3 0\0", 1024),
        (Cmd.TARGET_MSG, DmIoctl(version=(4, 2, 0), name="y"),
         uapi.encode_target_msg(0, "@cancel_deferred_remove"), 1024),
        (Cmd.DEV_WAIT, DmIoctl(name="y", event_nr=0), b"", 4096),
        (Cmd.DEV_STATUS, DmIoctl(name="y"), b"", 312),
        (Cmd.TABLE_CLEAR, DmIoctl(name="y"), b"", 312),
        (Cmd.DEV_ARM_POLL, DmIoctl(version=(4, 36, 0)), b"", 312),
        (Cmd.DEV_REMOVE, DmIoctl(name="y"), b"", 312),
        (Cmd.DEV_REMOVE, DmIoctl(name="y"), b"", 312),
        (Cmd.REMOVE_ALL, DmIoctl(), b"", 312),
        (Cmd.DEV_STATUS, DmIoctl(version=(3, 0, 0), name="y"), b"", 312),
    ]
    for cmd, hdr, payload, size in reqs:
        answers = []
        for t in (local, remote):
            buf = uapi.build_request(DmIoctl(**{**hdr.__dict__}), payload, size)
            err: int | None = 0
            try:
                t.ioctl(cmd, buf)
            except OSError as e:
                err = e.errno
            answers.append((err, bytes(buf)))
        assert answers[0] == answers[1], f"{cmd.name} differs"
    remote.close()
    local.close()


def test_arm_poll_makes_the_event_fd_readable(daemon: DaemonProc) -> None:
    with daemon.dm() as dm, daemon.dm() as other:
        dm.arm_poll()
        p = select.poll()
        p.register(dm.fileno(), select.POLLIN)
        assert dm.fileno() == dm.fileno()  # fetched once
        assert p.poll(0) == []
        other.create("ev")  # another client's event is a global event
        assert p.poll(2000)
        assert p.poll(0), "stays readable until re-armed, like the kernel's poll"
        dm.arm_poll()
        assert p.poll(0) == []
        other.info("ev")  # not an event
        assert p.poll(200) == []
        other.remove("ev")
        assert p.poll(2000)
        # other's session was never armed since its start: readable after any event
        q = select.poll()
        q.register(other.fileno(), select.POLLIN)
        other.arm_poll()
        assert q.poll(0) == []


def test_event_fd_for_a_connection_without_arm(daemon: DaemonProc) -> None:
    """CMD_EVENT_FD on a raw connection: a reply header and one descriptor."""
    raw = daemon.raw()
    raw.send(CMD_EVENT_FD, b"")
    data, fds, _, _ = socket.recv_fds(raw.sock, 8, 4)
    assert data == struct.pack("=iI", 0, 0)
    assert len(fds) == 1
    os.close(fds[0])
    raw.close()


def test_big_buffer_small_data_size(daemon: DaemonProc) -> None:
    """Only data_size bytes travel; the reply lands in the caller's buffer as ioctl does."""
    buf = uapi.build_request(DmIoctl(flags=Flag.UUID), b"", 4096)
    buf.extend(b"\xaa" * (4 << 20))  # the caller's buffer is much bigger than data_size
    assert request_length(buf) == 4096
    t = daemon.transport()
    t.ioctl(Cmd.LIST_DEVICES, buf)
    hdr = DmIoctl.unpack(buf)
    assert hdr.data_size == 312 and not hdr.flags & Flag.BUFFER_FULL
    assert buf[-1] == 0xAA and len(buf) == 4096 + (4 << 20)
    t.close()


def test_wait_on_a_shared_transport_does_not_block_other_threads(daemon: DaemonProc) -> None:
    with daemon.dm() as dm:
        dm.create("w", "0 8 zero")
        nr = dm.info("w").event_nr
        got: list[tuple[DeviceInfo, list[uapi.TargetSpec]]] = []
        t = threading.Thread(target=lambda: got.append(dm.wait("w", nr)))
        t.start()
        time.sleep(0.2)
        start = time.monotonic()
        for _ in range(20):
            assert dm.info("w").name == "w"
        dm.arm_poll()  # the session's connection is not the one waiting
        assert time.monotonic() - start < 5
        assert t.is_alive() and not got
        dm.rename("w", "w2")  # a live table: raises an event
        t.join(5)
        assert not t.is_alive()
        info, status = got[0]
        # The name is the one found before the wait, as dev_wait's find_device copies it.
        assert info.name == "w" and info.event_nr == nr + 1
        assert status[0].target_type == "zero"
        dm.remove("w2")


def test_transport_survives_errno_replies(daemon: DaemonProc) -> None:
    """An errno reply leaves the connection usable (nothing half-read)."""
    with daemon.dm() as dm:
        for _ in range(50):
            with pytest.raises(DMError) as e:
                dm.info("nope")
            assert e.value.errno == errno.ENXIO
        assert dm.version() == (4, 47, 0)
