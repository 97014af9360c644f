"""Requests the engine once answered differently from dm-ioctl.c (found fuzzing the daemon).

Each case is the exact buffer, sent through the daemon, with the errno the kernel returns.
The root causes were: Python's notion of whitespace is not the kernel's isspace() (lib/ctype.c:
"\\t\\n\\v\\f\\r", space and Latin-1 0xa0, but not 0x1c-0x1f), a trailing backslash is literal
in dm_split_args, and the kernel's sscanf("%lu") wraps on overflow instead of failing.
"""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest
from daemonlib import DaemonProc

from devmapper import uapi
from devmapper.uapi import Cmd, DmIoctl


def _buf(cmd: Cmd, payload: bytes, **hdr: object) -> bytes:
    h = DmIoctl(version=uapi.CMD_MIN_VERSION.get(cmd, (4, 0, 0)), **hdr)  # type: ignore[arg-type]
    return bytes(uapi.build_request(h, payload, 512))


def _geometry(text: bytes) -> tuple[Cmd, bytes]:
    return Cmd.DEV_SET_GEOMETRY, _buf(Cmd.DEV_SET_GEOMETRY, text + b"\0", name="dev")


def _message(text: bytes) -> tuple[Cmd, bytes]:
    return Cmd.TARGET_MSG, _buf(Cmd.TARGET_MSG, struct.pack("=Q", 0) + text + b"\0",
                                name="dev")


CASES = {
    # sscanf("%lu %lu %lu %lu%c"): 0x1c is no separator, the second %lu fails: x == 1
    "geometry, 0x1c as a separator": (*_geometry(b"1\x1c1 1 0"), errno.EINVAL),
    # ...but 0xa0 is one: four numbers, success
    "geometry, 0xa0 as a separator": (*_geometry(b"1\xa01 1 0"), 0),
    # simple_strntoull wraps: 2**64 + 1 cylinders is 1 cylinder
    "geometry, cylinders wrap at 2**64": (*_geometry(b"18446744073709551617 1 1 0"), 0),
    # dm_split_args keeps 0x1c inside the word: "Unsupported message sent to DM core"
    "message, 0x1c after the word": (*_message(b"@cancel_deferred_remove\x1c"), errno.EINVAL),
    # a trailing backslash is literal: the word is "@cancel_deferred_remove\\"
    "message, trailing backslash": (*_message(b"@cancel_deferred_remove\\"), errno.EINVAL),
}


@pytest.fixture
def with_device(daemon: DaemonProc) -> DaemonProc:
    with daemon.dm() as dm:
        dm.create("dev", "0 8 zero")
    return daemon


@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_answers_as_the_kernel(with_device: DaemonProc, case: str) -> None:
    cmd, buf, want = CASES[case]
    raw = with_device.raw()
    err, _ = raw.call(cmd, buf)
    raw.close()
    assert err == want, f"{case}: errno {err}, the kernel's {want}; request {buf.hex()}"


def test_linear_sector_with_a_trailing_backslash(daemon: DaemonProc,
                                                 backing: list[Path]) -> None:
    """linear's sscanf("%llu%c") sees "0\\\\": "Invalid device sector", EINVAL."""
    with daemon.dm() as dm:
        dm.create("dev")
    spec = uapi.encode_load_specs([uapi.TargetSpec(0, 8, "linear", f"{backing[0]} 0\\")])
    buf = _buf(Cmd.TABLE_LOAD, spec, name="dev", target_count=1)
    raw = daemon.raw()
    err, _ = raw.call(Cmd.TABLE_LOAD, buf)
    raw.close()
    assert err == errno.EINVAL, f"errno {err}; request {buf.hex()}"
