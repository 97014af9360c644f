"""Table syntax, validation errors (ti->error and errno), table and status lines."""

from __future__ import annotations

import errno
import logging
import struct

import pytest
from snaphelpers import Env, dev_of, lvm_layout, status_of, table_of

from devmapper.library import DMError

SECTORS = 2048


def _load_error(env: Env, table: str, caplog: pytest.LogCaptureFixture) -> tuple[int, str]:
    """Create a device with ``table``; return (errno, ti->error text as the kernel logs)."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="devmapper.kernel"), \
            pytest.raises(DMError) as info:
        env.dm.create("bad", table)
    msgs = [r.getMessage() for r in caplog.records if r.name == "devmapper.kernel"]
    line = [m for m in msgs if ": snapshot" in m][-1]
    return info.value.errno or 0, line.split(": ", 1)[1]


@pytest.mark.parametrize("args, text, err", [
    ("{o} {c} P", "snapshot: requires 4 or more arguments (-EINVAL)", errno.EINVAL),
    ("{o} {c} P 8 1", "snapshot: Invalid number of feature arguments (-EINVAL)", errno.EINVAL),
    ("{o} {c} P 8 3 a b c", "snapshot: Invalid number of feature arguments (-EINVAL)",
     errno.EINVAL),
    ("{o} {c} P 8 x", "snapshot: Invalid number of feature arguments (-EINVAL)", errno.EINVAL),
    ("{o} {c} P 8 1 frobnicate", "snapshot: Unrecognised feature requested (-EINVAL)",
     errno.EINVAL),
    ("{o} {c} P 8 1 discard_passdown_origin",
     "snapshot: discard_passdown_origin feature depends on discard_zeroes_cow (-EINVAL)",
     errno.EINVAL),
    ("/nonexistent {c} P 8", "snapshot: Cannot get origin device (-ENODEV)", errno.ENODEV),
    ("{o} /nonexistent P 8", "snapshot: Cannot get COW device (-ENODEV)", errno.ENODEV),
    ("{o} {o} P 8", "snapshot: COW device cannot be the same as origin device (-EINVAL)",
     errno.EINVAL),
    ("{o} {c} X 8", "snapshot: Couldn't create exception store (-EINVAL)", errno.EINVAL),
    ("{o} {c} P 3", "snapshot: Couldn't create exception store (-EINVAL)", errno.EINVAL),
    ("{o} {c} P abc", "snapshot: Couldn't create exception store (-EINVAL)", errno.EINVAL),
    ("{o} {c} P -8", "snapshot: Couldn't create exception store (-EINVAL)", errno.EINVAL),
    ("{o} {c} P 4194304", "snapshot: Couldn't create exception store (-EINVAL)", errno.EINVAL),
    ("{o} {c} PX 8", "snapshot: Couldn't create exception store (-EINVAL)", errno.EINVAL),
    ("{o} {c} N 0", "snapshot: Chunk size not set (-EINVAL)", errno.EINVAL),
])
def test_constructor_errors(env: Env, caplog: pytest.LogCaptureFixture, args: str, text: str,
                            err: int) -> None:
    table = f"0 {SECTORS} snapshot " + args.format(o=env.origin, c=env.cow)
    assert _load_error(env, table, caplog) == (err, text)
    assert not env.dm.list()


def test_origin_constructor_errors(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    for table, text, err in [
        (f"0 {SECTORS} snapshot-origin", "origin: incorrect number of arguments", errno.EINVAL),
        (f"0 {SECTORS} snapshot-origin {env.origin} x", "origin: incorrect number of arguments",
         errno.EINVAL),
        (f"0 {SECTORS} snapshot-origin /nonexistent", "Cannot get target device", errno.ENODEV),
    ]:
        got_err, got = _load_error(env, table, caplog)
        assert (got_err, got) == (err, f"snapshot-origin: {text} (-{errno.errorcode[err]})")


def test_bad_header(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    table = f"0 {SECTORS} snapshot {env.origin} {env.cow} P 8"
    with open(env.cow, "r+b") as f:
        f.write(b"junk")
    assert _load_error(env, table, caplog) == (
        errno.ENXIO, "snapshot: Failed to read snapshot metadata (-ENXIO)")
    with open(env.cow, "r+b") as f:
        f.write(struct.pack("<IIII", 0x70416E53, 1, 2, 8))
    assert _load_error(env, table, caplog) == (
        errno.EINVAL, "snapshot: Failed to read snapshot metadata (-EINVAL)")


def test_invalid_header_loads_as_invalid(env: Env) -> None:
    with open(env.cow, "r+b") as f:
        f.write(struct.pack("<IIII", 0x70416E53, 0, 1, 8))
    env.dm.create("s", f"0 {SECTORS} snapshot {env.origin} {env.cow} P 0")
    assert status_of(env.dm, "s") == "Invalid"
    with env.dm.open("s") as blk, pytest.raises(OSError) as info:
        blk.read(0, 512)
    assert info.value.errno == errno.EIO


@pytest.mark.parametrize("store, chunk, table, status", [
    ("P", "8", "P 8", "16/2048 16"),
    ("p", "16", "P 16", "32/2048 32"),
    ("PO", "8", "PO 8", "16/2048 16"),
    ("po", "8", "PO 8", "16/2048 16"),
    ("P", "0", "P 32", "64/2048 64"),  # 0: the default, 32 sectors, on a new COW
    ("N", "8", "N 8", "0/2048 0"),
    ("Nx", "8", "N 8", "0/2048 0"),  # transient_ctr ignores the rest
    ("P", "+8", "P 8", "16/2048 16"),  # kstrtouint takes a leading '+'
])
def test_table_and_status_lines(env: Env, store: str, chunk: str, table: str,
                                status: str) -> None:
    env.dm.create("s", f"0 {SECTORS} snapshot {env.origin} {env.cow} {store} {chunk}")
    assert table_of(env.dm, "s") == f"{env.origin} {env.cow} {table}"
    assert status_of(env.dm, "s") == status


def test_features_in_table_line(env: Env) -> None:
    env.dm.create("s", f"0 {SECTORS} snapshot {env.origin} {env.cow} P 8 "
                       "2 DISCARD_ZEROES_COW discard_passdown_origin")
    assert table_of(env.dm, "s") == \
        f"{env.origin} {env.cow} P 8 2 discard_zeroes_cow discard_passdown_origin"
    env.dm.create("t", f"0 {SECTORS} snapshot {env.origin} {env.file('c2', 1 << 20)} N 8 "
                       "1 discard_zeroes_cow")
    assert table_of(env.dm, "t").endswith("N 8 1 discard_zeroes_cow")


def test_chunk_size_from_header_overrides_table(env: Env) -> None:
    env.dm.create("s", f"0 {SECTORS} snapshot {env.origin} {env.cow} P 16")
    env.dm.remove("s")
    env.dm.create("s", f"0 {SECTORS} snapshot {env.origin} {env.cow} P 8")
    assert table_of(env.dm, "s") == f"{env.origin} {env.cow} P 16"
    env.dm.remove("s")
    env.dm.create("s", f"0 {SECTORS} snapshot {env.origin} {env.cow} P 0")
    assert table_of(env.dm, "s") == f"{env.origin} {env.cow} P 16"


def test_status_counts_exceptions(env: Env) -> None:
    lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    assert status_of(env.dm, "snap") == "16/2048 16"
    with env.dm.open("base") as base:
        base.write(0, memoryview(b"x" * 512))  # one chunk copied out
        base.write(8192, memoryview(b"y" * 8192))  # two more
    assert status_of(env.dm, "snap") == "40/2048 16"
    assert status_of(env.dm, "base") == ""
    assert table_of(env.dm, "base") == dev_of(env.dm, "base-real")


def test_ima_lines(env: Env) -> None:
    from devmapper.targets.base import StatusType

    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS, chunk=8)
    engine = env.dm.transport.engine  # type: ignore[attr-defined]
    snap = engine.by_name["snap"].live.targets[0]
    assert snap.status(StatusType.IMA) == (
        f"target_name=snapshot,target_version=1.16.0,snap_origin_name={real},"
        f"snap_cow_name={env.cow},snap_valid=y,snap_merge_failed=n,snapshot_overflowed=n;")
    assert engine.by_name["base"].live.targets[0].status(StatusType.IMA) == ""


def test_versions(env: Env) -> None:
    targets = env.dm.targets()
    versions = {t.name: t.version for t in targets}  # type: ignore[attr-defined]
    assert versions["snapshot"] == (1, 16, 0)
    assert versions["snapshot-origin"] == (1, 9, 0)
    assert versions["snapshot-merge"] == (1, 5, 0)


def test_deps_and_messages(env: Env) -> None:
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    major, minor = map(int, real.split(":"))
    assert env.dm.deps("base") == [(major, minor)]
    with pytest.raises(DMError) as info:
        env.dm.message("snap", 0, "anything")
    assert info.value.errno == errno.EINVAL


def test_handover_pairing_errors(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    # A second table on the same COW waits for a handover; a third cannot pair.
    env.dm.create("s2")
    env.dm.load("s2", f"0 {SECTORS} snapshot {real} {env.cow} P 8")
    assert _load_error(env, f"0 {SECTORS} snapshot {real} {env.cow} P 8", caplog) == (
        errno.EINVAL, "snapshot: Snapshot cow pairing for exception table handover failed "
                      "(-EINVAL)")
    env.dm.clear("s2")
    # Transient stores cannot be merged.
    cow2 = env.file("cow2", 1 << 20)
    env.dm.suspend("base")
    env.dm.create("t", f"0 {SECTORS} snapshot {real} {cow2} N 8")
    env.dm.resume("base")
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="devmapper.kernel"), \
            pytest.raises(DMError):
        env.dm.create("m", f"0 {SECTORS} snapshot-merge {real} {cow2} N 8")
    assert any("Snapshot exception store does not support snapshot-merge." in r.getMessage()
               for r in caplog.records)
