"""Many clients at once; DEV_WAIT blocks only its caller; bad clients hold up nobody."""

from __future__ import annotations

import errno
import socket
import threading
import time
from pathlib import Path

import pytest
from daemonlib import DaemonProc, wait_until

from devmapper import uapi
from devmapper.control.socket import REQ
from devmapper.library import DeviceInfo, DeviceMapper, DMError
from devmapper.uapi import Cmd, DmIoctl

IDLE_THREADS = 2  # the accept loop and the hang-up monitor


def _hammer(dm: DeviceMapper, tag: str, rounds: int, files: list[Path],
            errors: list[BaseException]) -> None:
    try:
        for i in range(rounds):
            name = f"{tag}-{i}"
            dm.create(name, f"0 1024 linear {files[i % len(files)]} {i * 8}", uuid=f"U-{name}")
            assert dm.info(name).live_table
            assert dm.status(name)[0].target_type == "linear"
            assert dm.table(uuid=f"U-{name}")[0].params.endswith(f" {i * 8}")
            dm.suspend(name)
            dm.load(name, "0 2048 zero")
            dm.resume(name)
            assert dm.info(name).event_nr >= 0
            if i % 2:
                dm.rename(name, f"{name}-r")
                name = f"{name}-r"
            dm.remove(name)
    except BaseException as e:  # reported by the test
        errors.append(e)


def test_parallel_clients(daemon: DaemonProc, backing: list[Path]) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()
    clients = [daemon.dm() for _ in range(8)]
    threads = [threading.Thread(target=_hammer, args=(dm, f"c{n}", 25, backing, errors))
               for n, dm in enumerate(clients)]

    def lister() -> None:
        with daemon.dm() as dm:
            while not stop.is_set():
                try:
                    for d in dm.list():
                        try:
                            dm.status(d.name)
                        except DMError as e:  # removed meanwhile
                            assert e.errno == errno.ENXIO
                    dm.targets()
                except BaseException as e:
                    errors.append(e)
                    return

    listers = [threading.Thread(target=lister) for _ in range(2)]
    for t in threads + listers:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    for t in listers:
        t.join(10)
    assert not errors, errors[:3]
    with daemon.dm() as dm:
        assert dm.list() == []
    for dm in clients:
        dm.close()


def test_threads_sharing_one_transport(daemon: DaemonProc, backing: list[Path]) -> None:
    """One DeviceMapper, many threads: as with one /dev/mapper/control fd."""
    errors: list[BaseException] = []
    with daemon.dm() as dm:
        threads = [threading.Thread(target=_hammer, args=(dm, f"s{n}", 15, backing, errors))
                   for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors[:3]
        assert dm.list() == []


def test_wait_blocks_only_its_caller(daemon: DaemonProc) -> None:
    with daemon.dm() as dm:
        dm.create("ev", "0 8 zero")
        nr = dm.info("ev").event_nr
    result: list[tuple[DeviceInfo, list[uapi.TargetSpec]]] = []

    def waiter() -> None:
        with daemon.dm() as w:
            result.append(w.wait("ev", nr))

    t = threading.Thread(target=waiter)
    t.start()
    assert wait_until(lambda: daemon.threads() >= 4, 5)  # main, monitor, ours, waiter's
    # everyone else is served meanwhile, promptly
    with daemon.dm() as dm:
        for i in range(30):
            start = time.monotonic()
            dm.create(f"other{i}")
            dm.info(f"other{i}")
            dm.remove(f"other{i}")
            assert time.monotonic() - start < 3.0  # generous: CI machines are busy
        assert t.is_alive() and not result
        dm.rename("ev", "ev2")  # a device with a live table: an event
    t.join(5)
    assert not t.is_alive()
    info, status = result[0]
    assert info.event_nr == nr + 1 and status[0].target_type == "zero"
    with daemon.dm() as dm:
        dm.remove("ev2")


def test_wait_woken_by_remove(daemon: DaemonProc) -> None:
    with daemon.dm() as dm:
        dm.create("gone", "0 8 zero")
        nr = dm.info("gone").event_nr
        result: list[object] = []
        t = threading.Thread(target=lambda: result.append(dm.wait("gone", nr)))
        t.start()
        time.sleep(0.2)
        dm.remove("gone")
        t.join(5)
        assert not t.is_alive() and result


def _wait_frame(name: str, event_nr: int) -> bytes:
    buf = uapi.build_request(DmIoctl(name=name, event_nr=event_nr), b"", 4096)
    return REQ.pack(Cmd.DEV_WAIT, len(buf)) + bytes(buf)


def test_disconnect_mid_wait_frees_its_thread(daemon: DaemonProc) -> None:
    with daemon.dm() as dm:
        dm.create("idle")  # no table: nothing will ever wake a waiter
        dm.create("live", "0 8 zero")
    assert wait_until(lambda: daemon.threads() == IDLE_THREADS, 5)  # our client is gone
    base_threads, base_fds = daemon.threads(), daemon.fds()
    socks = []
    for name in ("idle", "live") * 5:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(daemon.socket))
        s.sendall(_wait_frame(name, 0))
        socks.append(s)
    assert wait_until(lambda: daemon.threads() == base_threads + 10, 5), daemon.threads()
    for s in socks:
        s.close()
    # each wait notices its hang-up, its thread exits and its session's eventfd is closed
    assert wait_until(lambda: daemon.threads() == base_threads, 5), daemon.threads()
    assert wait_until(lambda: daemon.fds() == base_fds, 5), (daemon.fds(), base_fds)
    with daemon.dm() as dm:  # and the devices are untouched
        assert {d.name for d in dm.list()} == {"idle", "live"}
        assert dm.info("live").event_nr == 0
        dm.remove_all()


def test_half_closed_waiter_still_gets_its_answer(daemon: DaemonProc) -> None:
    """Only a full hang-up cancels a wait: shutdown(SHUT_WR) after the request is fine."""
    with daemon.dm() as dm:
        dm.create("hc", "0 8 zero")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(daemon.socket))
        s.sendall(_wait_frame("hc", 0))
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
        dm.rename("hc", "hc2")
        s.settimeout(5)
        head = s.recv(8)
        assert len(head) == 8 and int.from_bytes(head[:4], "little", signed=True) == 0
        s.close()
        dm.remove("hc2")


def test_slow_and_stuck_clients_block_nobody(daemon: DaemonProc) -> None:
    path = str(daemon.socket)
    stuck = []
    for junk in (b"", b"\x01\x00", REQ.pack(Cmd.DEV_STATUS, 4096),
                 REQ.pack(Cmd.TABLE_LOAD, 64 << 20) + bytes(1 << 16)):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        s.sendall(junk)
        stuck.append(s)
    # a client that sends many requests and never reads its replies
    greedy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    greedy.connect(path)
    greedy.setblocking(False)
    frame = REQ.pack(Cmd.LIST_VERSIONS, 1 << 16) + bytes(
        uapi.build_request(DmIoctl(), b"", 1 << 16))
    sent = 0
    try:
        while sent < 64 << 20:
            sent += greedy.send(frame)
    except BlockingIOError:
        pass
    with daemon.dm() as dm:
        start = time.monotonic()
        for i in range(50):
            dm.create(f"n{i}", "0 8 zero")
            dm.remove(f"n{i}")
        assert time.monotonic() - start < 10
    for s in [*stuck, greedy]:
        s.close()


@pytest.mark.parametrize("clients", [64])
def test_many_idle_connections(daemon: DaemonProc, clients: int) -> None:
    conns = [daemon.transport() for _ in range(clients)]
    with daemon.dm() as dm:
        assert dm.version() == uapi.ENGINE_VERSION
    for c in conns:
        c.close()
    assert wait_until(lambda: daemon.threads() == IDLE_THREADS, 5)
