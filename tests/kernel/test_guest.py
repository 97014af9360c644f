"""Sanity checks of the guest harness against the real kernel."""

from __future__ import annotations

import os

import pytest
from guest import Guest, GuestTimeout


def test_driver_version(guest: Guest) -> None:
    r = guest.run("dmsetup version").check()
    assert r.out.decode().splitlines() == [
        "Library version:   1.02.185 (2022-05-18)",
        "Driver version:    4.47.0",
    ]


def test_result_streams_and_exit_code(guest: Guest) -> None:
    r = guest.run("cat; echo err >&2; exit 7", stdin=b"in\x00put")
    assert (r.rc, r.out, r.err) == (7, b"in\x00put", b"err\n")


def test_timeout_kills_command(guest: Guest) -> None:
    with pytest.raises(GuestTimeout) as info:
        guest.run("echo started; sleep 600", timeout=2)
    assert info.value.result is not None
    assert info.value.result.out == b"started\n"


def test_linear_write_reaches_backing_file(clean_guest: Guest) -> None:
    g = clean_guest
    backing = g.workdir / "linear-backing.img"
    with open(backing, "wb") as f:
        f.truncate(4 << 20)
    try:
        loop = g.run(f"losetup -f --show {backing}").check().stdout.strip()
        # Map sectors 2048.. of the loop device (1 MiB in), 4096 sectors long.
        g.run(f"dmsetup create sanity --table '0 4096 linear {loop} 2048'").check()
        r = g.run("dmsetup table sanity").check()
        major_minor = g.run(f"lsblk -dno MAJ:MIN {loop}").check().stdout.strip()
        assert r.stdout == f"0 4096 linear {major_minor} 2048\n"
        pattern = bytes(range(256)) * 16  # 4 KiB
        g.run(
            "dd of=/dev/mapper/sanity bs=4096 seek=3 count=1 oflag=direct status=none",
            stdin=pattern,
        ).check()
        g.run("dmsetup remove sanity").check()
        g.run(f"losetup -d {loop}").check()
        with open(backing, "rb") as f:
            f.seek((2048 * 512) + 3 * 4096)
            assert f.read(4096) == pattern
            # Nothing was written before the mapped area.
            f.seek(0)
            assert f.read(2048 * 512) == bytes(2048 * 512)
    finally:
        os.unlink(backing)
