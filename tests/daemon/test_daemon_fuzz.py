"""Malformed requests: every one gets an errno reply, and the daemon keeps serving.

Thousands of random buffers and mutations of valid requests of every command (flipped bytes,
truncation, bogus data_start/data_size/target_count, spec ``next`` offsets pointing anywhere,
unterminated strings) go to a real daemon; after each batch a well-behaved client must still be
served. Reproduce a run with DEVMAPPER_FUZZ_SEED; scale it with DEVMAPPER_FUZZ_BATCHES.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from daemonlib import DaemonProc, RawClient, daemon_env, wait_until

from devmapper import uapi
from devmapper.control.socket import MAX_FRAME, REPLY, REQ, recv_exact
from devmapper.library import DMError
from devmapper.uapi import Cmd, DmIoctl, Flag

SEED = int(os.environ.get("DEVMAPPER_FUZZ_SEED", "4747"))
BATCHES = int(os.environ.get("DEVMAPPER_FUZZ_BATCHES", "100"))
PER_BATCH = 60  # then the devices are reset: REMOVE_ALL and renames would leave nothing
KERNEL_VERSION = struct.pack("=3I", *uapi.ENGINE_VERSION)
Buf = bytearray
Mutator = Callable[[random.Random, int, Buf], tuple[int, Buf]]


# ---------------------------------------------------------------- valid requests


def _req(cmd: Cmd, size: int = 4096, payload: bytes = b"", **hdr: object) -> tuple[int, Buf]:
    version = uapi.CMD_MIN_VERSION.get(cmd, (4, 0, 0))
    h = DmIoctl(version=version, **hdr)  # type: ignore[arg-type]
    return int(cmd), uapi.build_request(h, payload, size)


def templates(files: list[Path]) -> list[tuple[int, Buf]]:
    f0, f1 = str(files[0]), str(files[1])
    specs = uapi.encode_load_specs
    t = uapi.TargetSpec
    return [
        _req(Cmd.VERSION, 312),
        _req(Cmd.REMOVE_ALL, 312),
        _req(Cmd.LIST_DEVICES, flags=Flag.UUID),
        _req(Cmd.LIST_DEVICES, 320),
        _req(Cmd.DEV_CREATE, 312, name="fz-new", uuid="FZ-NEW"),
        _req(Cmd.DEV_CREATE, 312, name="fz-minor", flags=Flag.PERSISTENT_DEV,
             dev=uapi.encode_dev(254, 99)),
        _req(Cmd.DEV_REMOVE, 312, name="fz-empty"),
        _req(Cmd.DEV_REMOVE, 312, name="fz-live", flags=Flag.DEFERRED_REMOVE),
        _req(Cmd.DEV_RENAME, 1024, b"fz-renamed\0", name="fz-live"),
        _req(Cmd.DEV_RENAME, 1024, b"FZ-UUID\0", name="fz-empty", flags=Flag.UUID),
        _req(Cmd.DEV_SUSPEND, 312, name="fz-live", flags=Flag.SUSPEND),
        _req(Cmd.DEV_SUSPEND, 312, name="fz-susp"),
        _req(Cmd.DEV_SUSPEND, 312, name="fz-inact"),
        _req(Cmd.DEV_STATUS, 312, name="fz-live"),
        _req(Cmd.DEV_STATUS, 312, uuid="FZ-LIVE"),
        _req(Cmd.DEV_STATUS, 312, dev=uapi.encode_dev(254, 0)),
        _req(Cmd.TABLE_LOAD, 4096, specs([t(0, 2048, "linear", f"{f0} 0")]),
             name="fz-empty", target_count=1),
        _req(Cmd.TABLE_LOAD, 4096,
             specs([t(0, 64, "zero", ""), t(64, 64, "error", ""),
                    t(128, 4096, "striped", f"2 8 {f0} 0 {f1} 0"),
                    t(4224, 8, "linear", "254:0 0")]),
             name="fz-empty", target_count=4),
        _req(Cmd.TABLE_LOAD, 4096, specs([t(0, 8, "zero", "")]), name="fz-live",
             target_count=1, flags=Flag.READONLY),
        _req(Cmd.TABLE_CLEAR, 312, name="fz-inact"),
        _req(Cmd.TABLE_DEPS, 4096, name="fz-stack"),
        _req(Cmd.TABLE_DEPS, 4096, name="fz-inact", flags=Flag.QUERY_INACTIVE_TABLE),
        _req(Cmd.TABLE_STATUS, 4096, name="fz-live"),
        _req(Cmd.TABLE_STATUS, 360, name="fz-stack", flags=Flag.STATUS_TABLE),
        _req(Cmd.TABLE_STATUS, 4096, name="fz-inact",
             flags=Flag.STATUS_TABLE | Flag.QUERY_INACTIVE_TABLE),
        _req(Cmd.LIST_VERSIONS),
        _req(Cmd.LIST_VERSIONS, 330),
        _req(Cmd.TARGET_MSG, 1024, uapi.encode_target_msg(0, "@cancel_deferred_remove"),
             name="fz-live"),
        _req(Cmd.TARGET_MSG, 1024, uapi.encode_target_msg(8, "some message"),
             name="fz-live"),
        _req(Cmd.DEV_SET_GEOMETRY, 1024, b"100 16 63 0\0", name="fz-live"),
        _req(Cmd.DEV_ARM_POLL, 312),
        _req(Cmd.GET_TARGET_VERSION, name="striped"),
        _req(Cmd.DEV_WAIT, 4096, name="fz-live", event_nr=0),
        _req(Cmd.DEV_WAIT, 4096, name="fz-live", event_nr=0xFFFF),
    ]


def reset_devices(daemon: DaemonProc, files: list[Path]) -> None:
    """The devices the templates name, in a known state, whatever the last batch did."""
    with daemon.dm() as dm:
        dm.remove_all()
        for d in dm.list():
            dm.remove(d.name)  # remove_all keeps open devices; none should be left
        live = dm.create("fz-live", f"0 2048 linear {files[0]} 0", uuid="FZ-LIVE")
        dm.create("fz-empty")
        dm.create("fz-stack", f"0 1024 linear {live.major}:{live.minor} 0")
        dm.create("fz-susp", "0 64 zero")
        dm.suspend("fz-susp")
        dm.create("fz-inact", "0 64 zero")
        dm.load("fz-inact", "0 128 error")


# ---------------------------------------------------------------- mutations

_BOUNDARY = [0, 1, 7, 8, 12, 39, 40, 41, 300, 304, 305, 311, 312, 313, 320, 4095, 4096,
             4097, 1 << 20, (1 << 30) - 1, 1 << 30, (1 << 30) + 1, 0x7FFFFFFF, 0x80000000,
             0xFFFFFFF8, 0xFFFFFFFF]


def _u32(rng: random.Random, buf: Buf) -> int:
    v = rng.choice(_BOUNDARY + [len(buf) - 1, len(buf), len(buf) + 1, len(buf) - 312])
    return (v if rng.random() < 0.8 else rng.getrandbits(32)) & 0xFFFFFFFF


def _put32(buf: Buf, at: int, value: int) -> None:
    if len(buf) >= at + 4:
        struct.pack_into("=I", buf, at, value)


def m_flip(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    for _ in range(rng.randint(1, 8)):
        if buf:
            i = rng.randrange(len(buf))
            buf[i] ^= rng.randint(1, 255)
    return cmd, buf


def m_flip_header(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(min(len(buf), 312) or 1)
        if i < len(buf):
            buf[i] ^= 1 << rng.randrange(8)
    return cmd, buf


def m_truncate(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    cut = rng.choice([0, 4, 11, 12, 16, 200, 304, 305, 311, 312, 313, rng.randrange(len(buf) + 1)])
    return cmd, buf[:cut]


def m_extend(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    return cmd, buf + rng.randbytes(rng.randint(1, 600))


def m_field(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    # version[0..2], data_size, data_start, target_count, open_count, flags, event_nr
    _put32(buf, rng.choice([0, 4, 8, 12, 16, 20, 24, 28, 32, 12, 16, 20]), _u32(rng, buf))
    return cmd, buf


def m_sizes(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    _put32(buf, 12, _u32(rng, buf))  # data_size
    _put32(buf, 16, _u32(rng, buf))  # data_start
    if rng.random() < 0.5:
        _put32(buf, 20, _u32(rng, buf))  # target_count
    return cmd, buf


def m_flags(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    _put32(buf, 28, rng.getrandbits(32) if rng.random() < 0.3 else 1 << rng.randrange(20))
    if len(buf) >= 48 and rng.random() < 0.3:
        struct.pack_into("=Q", buf, 40, rng.getrandbits(64))  # dev
    return cmd, buf


def m_unterminated(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    which = rng.randrange(3)
    if which == 0 and len(buf) >= 176:
        buf[48:176] = bytes([rng.randint(1, 255)]) * 128  # name
    elif which == 1 and len(buf) >= 305:
        buf[176:305] = b"U" * 129  # uuid
    else:
        buf[312:] = bytes(b or 0x41 for b in buf[312:])  # every payload string
    return cmd, buf


def m_spec(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    """Rewrite a target spec (or whatever sits where one would)."""
    start = struct.unpack_from("=I", buf, 16)[0] if len(buf) >= 20 else 312
    at = start if rng.random() < 0.7 and start + 40 <= len(buf) else 312
    if at + 40 > len(buf):
        return cmd, buf
    field = rng.randrange(5)
    if field == 0:
        struct.pack_into("=I", buf, at + 20, _u32(rng, buf))  # next
    elif field == 1:
        struct.pack_into("=Q", buf, at, rng.getrandbits(64))  # sector_start
    elif field == 2:
        struct.pack_into("=Q", buf, at + 8, rng.choice([0, 1, rng.getrandbits(64)]))
    elif field == 3:
        buf[at + 24:at + 40] = rng.choice([b"linear", b"zero", b"striped", b"error",
                                           b"x" * 16, rng.randbytes(16)]).ljust(16, b"\0")
    else:
        struct.pack_into("=i", buf, at + 16, rng.getrandbits(31) - (1 << 30))  # status
    return cmd, buf


def m_params(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    """Table params / strings that parse badly: huge numbers, junk, separators."""
    junk = rng.choice([b"18446744073709551616", b"-1", b"0 0 0 0 0 0", b"\xff\xfe",
                       b"254:0 0", b"/dev/null 0", b"2 0 /x 0 /y 0", b"1 2 3 4 5",
                       b"9999999999 1 1 1", b"@cancel_deferred_remove x", b"",
                       rng.randbytes(rng.randint(1, 40))])
    at = 312 + 40 if cmd == Cmd.TABLE_LOAD else 312 + (8 if cmd == Cmd.TARGET_MSG else 0)
    if at < len(buf):
        end = min(len(buf), at + len(junk))
        buf[at:end] = junk[:end - at]
        if end < len(buf) and rng.random() < 0.8:
            buf[end] = 0
    return cmd, buf


def m_cmd(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    return rng.choice([rng.randrange(20), 0xFF, 0x1FF, rng.getrandbits(32)]), buf


def m_random(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, Buf]:
    out = bytearray(rng.randbytes(rng.choice([0, 3, 12, 100, 305, 312, 400, 2048])))
    if len(out) >= 12 and rng.random() < 0.7:
        out[:12] = struct.pack("=3I", 4, rng.randrange(48), 0)  # past the version check
    if len(out) >= 16 and rng.random() < 0.5:
        struct.pack_into("=I", out, 12, len(out))
    return rng.randrange(20) if rng.random() < 0.9 else cmd, out


MUTATORS: list[Mutator] = [m_flip, m_flip_header, m_truncate, m_extend, m_field, m_sizes,
                           m_flags, m_unterminated, m_spec, m_spec, m_params, m_cmd, m_random]


def mutate(rng: random.Random, cmd: int, buf: Buf) -> tuple[int, bytes]:
    buf = bytearray(buf)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        cmd, buf = rng.choice(MUTATORS)(rng, cmd, buf)
    return cmd, bytes(buf)


# ---------------------------------------------------------------- checks


def check_reply(cmd: int, buf: bytes, err: int, reply: bytes) -> None:
    what = f"cmd {cmd:#x}, request {buf.hex()}"
    assert 0 <= err < 4096, f"bad errno {err}: {what}"
    # The kernel copies back into the caller's buffer, never past it.
    assert len(reply) <= max(len(buf), 0), f"reply of {len(reply)} bytes > request: {what}"
    if err:
        assert reply in (b"", KERNEL_VERSION), f"errno {err} with a payload: {what}"
    elif reply:
        assert len(reply) >= 12 and reply[:12] == KERNEL_VERSION, f"bad reply: {what}"


def healthy(daemon: DaemonProc) -> None:
    assert daemon.alive(), daemon.log_text()[-4000:]
    with daemon.dm() as dm:
        assert dm.version() == uapi.ENGINE_VERSION
        dm.create("fz-health", "0 8 zero")
        assert dm.info("fz-health").live_table
        dm.remove("fz-health")
        with pytest.raises(DMError) as e:
            dm.info("fz-health")
        assert e.value.errno == errno.ENXIO


def _drain_waits(daemon: DaemonProc, waits: list[tuple[RawClient, int, bytes]],
                 outcomes: Counter[str]) -> int:
    """Collect the answered DEV_WAITs; hang up on the ones still (legitimately) waiting."""
    blocked = 0
    for client, cmd, buf in waits:
        if client.readable(0.05 if blocked else 0.3):
            err, reply = client.reply()
            check_reply(cmd, buf, err, reply)
            outcomes[f"{_name(cmd)}:{errno.errorcode.get(err, err) if err else 'ok'}"] += 1
        else:
            blocked += 1
        client.close()
    return blocked


@pytest.mark.engine_errors_expected
def test_fuzz_mutated_and_random_requests(daemon: DaemonProc, backing: list[Path]) -> None:
    rng = random.Random(SEED)
    valid = templates(backing)
    base_threads = daemon.threads()
    sent = blocked = 0
    outcomes: Counter[str] = Counter()
    for _batch in range(BATCHES):
        reset_devices(daemon, backing)
        raw = daemon.raw()
        waits: list[tuple[RawClient, int, bytes]] = []
        for _ in range(PER_BATCH):
            cmd, template = rng.choice(valid)
            if cmd == Cmd.REMOVE_ALL and rng.random() < 0.8:
                cmd, template = rng.choice(valid)  # rarer: it ends the batch's fun
            cmd, buf = mutate(rng, cmd, template) if rng.random() < 0.95 else (
                cmd, bytes(template))
            sent += 1
            if cmd == Cmd.DEV_WAIT:  # may block until an event: its own connection
                w = daemon.raw()
                w.send(cmd, buf)
                waits.append((w, cmd, buf))
                continue
            try:
                raw.send(cmd, buf)
                err, reply = raw.reply()
            except (OSError, ConnectionError) as e:
                pytest.fail(f"no reply ({e}) to cmd {cmd:#x}, request {buf.hex()}\n"
                            f"{daemon.log_text()[-4000:]}")
            check_reply(cmd, buf, err, reply)
            outcomes[f"{_name(cmd)}:{errno.errorcode.get(err, err) if err else 'ok'}"] += 1
        raw.close()
        blocked += _drain_waits(daemon, waits, outcomes)
        healthy(daemon)
    # Hung-up waits and closed connections leave no thread behind.
    assert wait_until(lambda: daemon.threads() <= base_threads, 10), daemon.threads()
    assert sent >= BATCHES * PER_BATCH
    internal = [ln for ln in daemon.log_text().splitlines() if "internal error" in ln]
    print(f"\n{sent} requests, {blocked} DEV_WAITs hung up on while waiting; outcomes:")
    print("  " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    report_engine_errors(internal)


def _name(cmd: int) -> str:
    try:
        return Cmd(cmd).name
    except ValueError:
        return "unknown"


def report_engine_errors(lines: list[str]) -> None:
    """Engine exceptions the daemon guarded (answered EINVAL): each is an engine bug."""
    if lines:
        print(f"\n{len(lines)} guarded engine exception(s); first ones:")
        for ln in lines[:20]:
            print("  ", ln[:600])


# ---------------------------------------------------------------- exact answers


def _hdr(cmd: Cmd, size: int = 312, payload: bytes = b"", **kw: object) -> Buf:
    return _req(cmd, size, payload, **kw)[1]


def _with(buf: Buf, at: int, value: int) -> Buf:
    out = bytearray(buf)
    struct.pack_into("=I", out, at, value)
    return out


def exact_cases(files: list[Path]) -> list[tuple[str, int, bytes, int]]:
    """(what, cmd, request, errno) as dm-ioctl.c answers each malformed request."""
    spec = uapi.encode_load_specs([uapi.TargetSpec(0, 8, "zero", "")])
    load = _hdr(Cmd.TABLE_LOAD, 1024, spec, name="fz-empty", target_count=1)
    rename = _hdr(Cmd.DEV_RENAME, 512, b"new\0", name="fz-live")
    msg = _hdr(Cmd.TARGET_MSG, 512, uapi.encode_target_msg(0, "@cancel_deferred_remove"),
               name="fz-live")
    geo = _hdr(Cmd.DEV_SET_GEOMETRY, 512, b"1 1 1 0\0", name="fz-live")
    status = _hdr(Cmd.DEV_STATUS, name="fz-live")
    unterminated_load = bytearray(load)
    unterminated_load[312 + 40:] = b"x" * (len(load) - 352)
    return [
        ("empty buffer", Cmd.VERSION, b"", errno.EFAULT),
        ("11 bytes", Cmd.VERSION, bytes(11), errno.EFAULT),
        ("major 3", Cmd.VERSION, bytes(_with(status, 0, 3)), errno.EINVAL),
        ("minor from the future", Cmd.DEV_STATUS, bytes(_with(status, 4, 99)), errno.EINVAL),
        ("unknown command", 18, bytes(status), errno.ENOTTY),
        ("unknown command 0xff", 0xFF, bytes(status), errno.ENOTTY),
        ("header cut at 304", Cmd.DEV_STATUS, bytes(status[:304]), errno.EFAULT),
        ("data_size 304", Cmd.DEV_STATUS, bytes(_with(status, 12, 304)), errno.EINVAL),
        ("data_size 0", Cmd.LIST_DEVICES, bytes(_with(status, 12, 0)), errno.EINVAL),
        ("data_size > 1 GiB", Cmd.TABLE_STATUS, bytes(_with(status, 12, (1 << 30) + 1)),
         errno.EINVAL),
        ("data_size beyond the buffer", Cmd.TABLE_STATUS, bytes(_with(status, 12, 4096)),
         errno.EFAULT),
        ("create without a name", Cmd.DEV_CREATE, bytes(_hdr(Cmd.DEV_CREATE)), errno.EINVAL),
        ("name and uuid", Cmd.DEV_STATUS, bytes(_hdr(Cmd.DEV_STATUS, name="a", uuid="b")),
         errno.EINVAL),
        ("no such device", Cmd.DEV_STATUS, bytes(_hdr(Cmd.DEV_STATUS, name="nope")),
         errno.ENXIO),
        ("load: no targets", Cmd.TABLE_LOAD, bytes(_with(load, 20, 0)), errno.EINVAL),
        ("load: spec over the header", Cmd.TABLE_LOAD, bytes(_with(load, 16, 200)),
         errno.EINVAL),
        ("load: spec beyond the end", Cmd.TABLE_LOAD, bytes(_with(load, 16, 1020)),
         errno.EINVAL),
        ("load: data_start 0xffffffff", Cmd.TABLE_LOAD, bytes(_with(load, 16, 0xFFFFFFFF)),
         errno.EINVAL),
        ("load: misaligned spec", Cmd.TABLE_LOAD, bytes(_with(load, 16, 316)), errno.EINVAL),
        ("load: second spec overlaps the first", Cmd.TABLE_LOAD,
         bytes(_with(_with(load, 20, 2), 312 + 20, 8)), errno.EINVAL),
        ("load: second spec beyond the end", Cmd.TABLE_LOAD,
         bytes(_with(_with(load, 20, 2), 312 + 20, 0xFFFFFFF8)), errno.EINVAL),
        ("load: params unterminated", Cmd.TABLE_LOAD, bytes(unterminated_load), errno.EINVAL),
        ("load: too many targets", Cmd.TABLE_LOAD,
         bytes(_with(load, 20, uapi.DM_MAX_TARGETS + 1)), errno.EOVERFLOW),
        ("load: unknown target type", Cmd.TABLE_LOAD,
         bytes(_hdr(Cmd.TABLE_LOAD, 1024,
                    uapi.encode_load_specs([uapi.TargetSpec(0, 8, "nosuch", "")]),
                    name="fz-empty", target_count=1)), errno.EINVAL),
        ("rename: data_start in the header", Cmd.DEV_RENAME, bytes(_with(rename, 16, 100)),
         errno.EINVAL),
        ("rename: data_start past the end", Cmd.DEV_RENAME, bytes(_with(rename, 16, 512)),
         errno.EINVAL),
        ("rename: unterminated", Cmd.DEV_RENAME,
         bytes(rename[:312]) + b"n" * 200, errno.EINVAL),
        ("rename: empty", Cmd.DEV_RENAME, bytes(_hdr(Cmd.DEV_RENAME, 512, b"\0",
                                                     name="fz-live")), errno.EINVAL),
        ("rename: '/'", Cmd.DEV_RENAME, bytes(_hdr(Cmd.DEV_RENAME, 512, b"a/b\0",
                                                   name="fz-live")), errno.EINVAL),
        ("message: data_start past the end", Cmd.TARGET_MSG, bytes(_with(msg, 16, 600)),
         errno.EINVAL),
        ("message: unterminated", Cmd.TARGET_MSG, bytes(msg[:320]) + b"@" * 192,
         errno.EINVAL),
        ("geometry: data_start in the header", Cmd.DEV_SET_GEOMETRY,
         bytes(_with(geo, 16, 8)), errno.EINVAL),
        ("geometry: unterminated", Cmd.DEV_SET_GEOMETRY, bytes(geo[:312]) + b"1" * 200,
         errno.EINVAL),
        ("geometry: trailing junk", Cmd.DEV_SET_GEOMETRY,
         bytes(_hdr(Cmd.DEV_SET_GEOMETRY, 512, b"1 1 1 0x\0", name="fz-live")), errno.EINVAL),
    ]


def test_malformed_requests_get_the_kernels_errno(daemon: DaemonProc,
                                                  backing: list[Path]) -> None:
    reset_devices(daemon, backing)
    raw = daemon.raw()
    wrong = []
    for what, cmd, buf, want in exact_cases(backing):
        err, reply = raw.call(cmd, buf)
        check_reply(cmd, buf, err, reply)
        if err != want:
            wrong.append(f"{what}: errno {err} ({errno.errorcode.get(err)}), kernel "
                         f"{want} ({errno.errorcode[want]}); cmd {cmd}, {buf.hex()}")
    raw.close()
    healthy(daemon)
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- frames


def test_malformed_frames(daemon: DaemonProc) -> None:
    """Oversized, half-sent and abandoned frames: others are served throughout."""
    path = str(daemon.socket)
    base_threads = daemon.threads()

    # oversized: EINVAL, then the daemon hangs up (it cannot skip 4 GiB)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(REQ.pack(Cmd.VERSION, MAX_FRAME + 1))
    assert REPLY.unpack(recv_exact(s, REPLY.size)) == (errno.EINVAL, 0)
    assert s.recv(1) == b""
    s.close()

    # zero-length and tiny frames
    raw = daemon.raw()
    for n in range(0, 12):
        assert raw.call(Cmd.VERSION, bytes(n)) == (errno.EFAULT, b"")
    raw.close()

    # half a header, half a body, a body announced but never sent: then hang up
    stalled = []
    for junk in (b"\x07", REQ.pack(Cmd.DEV_STATUS, 4096) + bytes(100),
                 REQ.pack(Cmd.TABLE_LOAD, 1 << 30)):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        c.sendall(junk)
        stalled.append(c)
    healthy(daemon)
    for c in stalled:
        c.close()

    # a stream of random bytes
    rng = random.Random(SEED)
    for _ in range(50):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(path)
        with contextlib.suppress(OSError):  # the daemon may hang up first
            c.sendall(rng.randbytes(rng.randint(1, 64)))
        c.close()
    healthy(daemon)
    assert wait_until(lambda: daemon.threads() <= base_threads, 10), daemon.threads()


def test_replies_fit_the_request(daemon: DaemonProc) -> None:
    """Tiny buffers get BUFFER_FULL, never more bytes than they sent."""
    with daemon.dm() as dm:
        for i in range(20):
            dm.create(f"d{i:02}", "0 8 zero")
    raw = daemon.raw()
    for size in (305, 312, 313, 320, 330, 400):
        for cmd in (Cmd.LIST_DEVICES, Cmd.LIST_VERSIONS, Cmd.TABLE_STATUS, Cmd.TABLE_DEPS):
            buf = _hdr(cmd, 312, name="d00" if cmd >= Cmd.TABLE_DEPS else "")
            buf = buf[:size] + bytes(max(0, size - len(buf)))
            struct.pack_into("=I", buf, 12, size)
            err, reply = raw.call(cmd, buf)
            check_reply(cmd, bytes(buf), err, reply)
    raw.close()


def _hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))


def test_only_data_size_bytes_are_kept(daemon: DaemonProc) -> None:
    """A 256 MiB frame whose data_size is 4 KiB: read and dropped, never held in memory."""
    buf = uapi.build_request(DmIoctl(), b"", 4096)
    frame_len = 256 << 20
    before = _hwm_kib(daemon.pid)
    raw = daemon.raw()
    raw.send(Cmd.LIST_VERSIONS, b"", length=frame_len)
    raw.sock.sendall(buf)
    chunk = bytes(1 << 20)
    left = frame_len - len(buf)
    while left:
        left -= raw.sock.send(chunk[:min(left, len(chunk))])
    err, reply = raw.reply()
    assert err == 0 and len(reply) <= 4096
    assert "linear" in {t.name for t in uapi.decode_versions(reply, 312)}
    raw.close()
    assert _hwm_kib(daemon.pid) - before < 64 << 10


_BUGGY_TARGET = '''
from devmapper.targets.base import Target

class Buggy(Target):
    name = "buggy"
    version = (1, 0, 0)

    def __init__(self, *args, **kwargs):
        raise RuntimeError("a target bug")
'''

_RUN_WITH_BUGGY = '''
import sys
import devmapper.targets
devmapper.targets.register("buggy", "buggytarget:Buggy")
from devmapper.daemon import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.engine_errors_expected
def test_engine_exception_is_answered_not_fatal(rundir: Path) -> None:
    """A bug below the ioctl layer (here a target constructor raising) costs one EINVAL."""
    (rundir / "buggytarget.py").write_text(_BUGGY_TARGET)
    env = daemon_env()
    env["PYTHONPATH"] = f"{rundir}{os.pathsep}{env['PYTHONPATH']}"
    log = open(rundir / "devmapperd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-c", _RUN_WITH_BUGGY, "--foreground",
                             "--socket", str(rundir / "control.sock")], env=env, stderr=log)
    d = DaemonProc(rundir)
    d.proc = proc
    try:
        assert wait_until(lambda: (rundir / "control.sock").exists(), 20)
        with d.dm() as dm:
            dm.create("victim")
            for _ in range(3):
                with pytest.raises(DMError) as e:
                    dm.load("victim", "0 8 buggy")
                assert e.value.errno == errno.EINVAL
            healthy(d)
            assert not dm.info("victim").inactive_table
    finally:
        assert d.stop() == 0
        log.close()
    text = d.log_text()
    assert text.count("internal error answering command 9") == 3, text
    assert "RuntimeError: a target bug" in text
