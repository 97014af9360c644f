"""Which snapshots an origin write triggers: keyed by the origin's underlying device."""

from __future__ import annotations

import errno

import pytest
from snaphelpers import Env, add_snapshot, dev_of, lvm_layout, status_of

from devmapper.library import DMError

SECTORS = 2048
CHUNK = 4096


def test_any_origin_target_of_the_device_triggers_all_its_snapshots(env: Env) -> None:
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    cow2 = env.file("cow2.img", 1 << 20)
    add_snapshot(env.dm, real, cow2, SECTORS, chunk=32, name="snap2")
    # A second origin device over the same underlying device, named another way.
    env.dm.create("base2", f"0 {SECTORS} snapshot-origin {real}")
    with env.dm.open("base2") as b2:
        b2.write(0, memoryview(b"x" * 512))
    assert status_of(env.dm, "snap") == "24/2048 16"
    assert status_of(env.dm, "snap2") == "96/2048 64"
    for name in ("snap", "snap2"):
        with env.dm.open(name) as s:
            assert s.read(0, 512) == env.origin_data[:512]


def test_writes_bypassing_the_origin_target_are_not_seen(env: Env) -> None:
    """Writing the underlying device directly is the user's business: no copy-out."""
    lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    with env.dm.open("base-real") as real:
        real.write(0, memoryview(b"x" * 512))
    assert status_of(env.dm, "snap") == "16/2048 16"
    with env.dm.open("snap") as s:
        assert s.read(0, 512) == b"x" * 512


def test_mis_stacked_snapshot_of_the_origin_device(env: Env) -> None:
    """A snapshot whose origin is the snapshot-origin device itself is keyed by that device,
    while writes to it look up base-real: like the kernel, it never gets an exception."""
    lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    base = dev_of(env.dm, "base")
    wrong = env.file("wrong.img", 1 << 20)
    env.dm.suspend("base")
    env.dm.create("wrong", f"0 {SECTORS} snapshot {base} {wrong} P 8")
    env.dm.resume("base")
    with env.dm.open("base") as b:
        b.write(0, memoryview(b"x" * 512))
    assert status_of(env.dm, "snap") == "24/2048 16"
    assert status_of(env.dm, "wrong") == "16/2048 16"
    with env.dm.open("wrong") as w:
        assert w.read(0, 512) == b"x" * 512  # the "snapshot" changed under it


def test_file_origins_are_keyed_by_inode(env: Env) -> None:
    """Regular files (our extension) are keyed by device and inode, whatever the path."""
    link = env.dir / "link.img"
    link.symlink_to(env.origin)
    env.dm.create("base", f"0 {SECTORS} snapshot-origin {link}")
    env.dm.suspend("base")
    env.dm.create("snap", f"0 {SECTORS} snapshot {env.origin} {env.cow} P 8")
    env.dm.resume("base")
    with env.dm.open("base") as b:
        b.write(0, memoryview(b"x" * 512))
    assert status_of(env.dm, "snap") == "24/2048 16"
    with pytest.raises(DMError) as info:
        env.dm.create("bad", f"0 {SECTORS} snapshot {env.origin} {link} P 8")
    assert info.value.errno == errno.EINVAL


def test_inactive_snapshot_is_not_triggered(env: Env) -> None:
    """Exceptions start at resume: a loaded but never resumed snapshot is skipped."""
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    cow2 = env.file("cow2.img", 1 << 20)
    env.dm.create("later")
    env.dm.load("later", f"0 {SECTORS} snapshot {real} {cow2} P 8")
    with env.dm.open("base") as b:
        b.write(0, memoryview(b"x" * 512))
    env.dm.resume("later")
    assert status_of(env.dm, "later") == "16/2048 16"


def test_writes_past_a_shorter_snapshot_are_not_copied(env: Env) -> None:
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    cow2 = env.file("cow2.img", 1 << 20)
    add_snapshot(env.dm, real, cow2, 1024, name="short")
    with env.dm.open("base") as b:
        b.write(1024 * 512, memoryview(b"x" * 512))
    assert status_of(env.dm, "short") == "16/2048 16"
    assert status_of(env.dm, "snap") == "24/2048 16"


def test_handover_on_reload(env: Env) -> None:
    """Reloading a snapshot's table hands its exceptions to the new table."""
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    with env.dm.open("base") as b:
        b.write(0, memoryview(b"x" * CHUNK))
    with env.dm.open("snap") as s:
        s.write(CHUNK, memoryview(b"y" * 512))
        view = s.read(0, SECTORS * 512)
    env.dm.load("snap", f"0 {SECTORS} snapshot {real} {env.cow} P 8")
    assert status_of(env.dm, "snap") == "32/2048 16"
    env.dm.resume("snap")
    assert status_of(env.dm, "snap") == "32/2048 16"
    with env.dm.open("snap") as s:
        assert s.read(0, SECTORS * 512) == view
    with env.dm.open("base") as b:
        b.write(8 * CHUNK, memoryview(b"z" * 512))
    assert status_of(env.dm, "snap") == "40/2048 16"


def test_merge_handover_needs_the_source_suspended(env: Env) -> None:
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    env.dm.suspend("base")
    env.dm.load("base", f"0 {SECTORS} snapshot-merge {real} {env.cow} P 8")
    with pytest.raises(DMError) as info:
        env.dm.resume("base")
    assert info.value.errno == errno.EINVAL
    # The merge table is live but the device stays suspended; resume again once the
    # source is suspended too.
    assert env.dm.info("base").suspended
    env.dm.suspend("snap")
    env.dm.resume("base")
    assert status_of(env.dm, "snap") == "Invalid"


def test_handover_source_cannot_resume_and_cancels_on_removal(env: Env) -> None:
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    env.dm.create("s2")
    env.dm.load("s2", f"0 {SECTORS} snapshot {real} {env.cow} P 8")
    assert status_of(env.dm, "s2", inactive=True) == "0/2048 0"  # nothing handed over yet
    env.dm.suspend("snap")
    with pytest.raises(DMError) as info:
        env.dm.resume("snap")  # "Unable to resume snapshot source until handover completes."
    assert info.value.errno == errno.EINVAL
    env.dm.remove("snap")  # "Cancelling snapshot handover."
    env.dm.resume("s2")
    assert status_of(env.dm, "s2") == "Invalid"


def test_failed_resume_destroys_the_old_table(env: Env) -> None:
    """A merge table whose resume fails (source not suspended) is live; the snapshot-origin
    table it replaced must be gone, so base-real is held by nothing but the new table."""
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    env.dm.suspend("base")
    env.dm.load("base", f"0 {SECTORS} snapshot-merge {real} {env.cow} P 8")
    with pytest.raises(DMError):
        env.dm.resume("base")
    env.dm.remove("snap")
    env.dm.remove("base")
    env.dm.remove("base-real")  # EBUSY while the replaced table still holds it
