"""The device lifecycle: attach, resize, read-only, rename, detach (busy or not), mknodes."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading

import pytest

from devmapper.expose import NodeChanges, loop, mknodes, nodes

from .helpers import getro, getsz, mounted, run

pytestmark = pytest.mark.root

MiB = 1 << 20


def _grow(backend, size: int) -> None:
    os.truncate(backend.path, size)
    backend.refresh_size()


def test_resize_follows_backend(exposer, file_backend):
    backend = file_backend("rs", 8 * MiB)
    exposer.attach("rs", backend)
    node = exposer.node("rs")
    assert getsz(node) == 8 * MiB // 512
    _grow(backend, 24 * MiB)
    assert exposer.resize("rs") == 24 * MiB
    assert getsz(node) == 24 * MiB // 512
    run("dd", "if=/dev/zero", f"of={node}", "bs=1M", "seek=23", "count=1", "oflag=direct")
    _grow(backend, 4 * MiB)
    assert exposer.resize("rs") == 4 * MiB
    assert getsz(node) == 4 * MiB // 512


def test_zero_size_device_keeps_its_number(exposer, file_backend):
    """A device created without a table (size 0) is attached at once, so its major:minor is
    fixed from create on; loading a table is a resize."""
    backend = file_backend("empty", 0)
    dev = exposer.attach("empty", backend)
    node = exposer.node("empty")
    assert getsz(node) == 0
    assert run("dd", f"if={node}", "of=/dev/null", "bs=4k", "count=1").returncode == 0
    _grow(backend, 4 * MiB)
    exposer.resize("empty")
    assert exposer.devno("empty") == dev
    assert os.stat(node).st_rdev == os.makedev(*dev)
    assert getsz(node) == 4 * MiB // 512
    run("dd", "if=/dev/urandom", f"of={node}", "bs=1M", "count=4", "oflag=direct")


def test_read_only_backend(exposer, file_backend):
    backend = file_backend("ro", 4 * MiB, read_only=True)
    exposer.attach("ro", backend)
    node = exposer.node("ro")
    assert getro(node) == 1
    assert run("dd", f"if={node}", "of=/dev/null", "bs=1M", "iflag=direct").returncode == 0
    write = run("dd", "if=/dev/zero", f"of={node}", "bs=4k", "count=1", "oflag=direct", check=False)
    assert write.returncode != 0


def test_set_read_only_both_ways(exposer, file_backend):
    exposer.attach("sro", file_backend("sro", 4 * MiB))
    node = exposer.node("sro")
    assert getro(node) == 0
    exposer.set_read_only("sro", True)
    assert getro(node) == 1
    dd = ("dd", "if=/dev/zero", f"of={node}", "bs=4k", "count=1", "oflag=direct")
    assert run(*dd, check=False).returncode != 0
    exposer.set_read_only("sro", False)
    assert getro(node) == 0
    assert run(*dd).returncode == 0


def test_rename_moves_node(exposer, file_backend):
    dev = exposer.attach("old", file_backend("ren", 4 * MiB))
    exposer.rename("old", "new")
    assert not os.path.exists(exposer.node("old"))
    assert os.stat(exposer.node("new")).st_rdev == os.makedev(*dev)
    assert os.path.exists(exposer.path("new")) and not os.path.exists(exposer.path("old"))
    run("dd", "if=/dev/urandom", f"of={exposer.node('new')}", "bs=1M", "count=4", "oflag=direct")
    with pytest.raises(OSError) as e:
        exposer.attach("new", file_backend("dup", MiB))
    assert e.value.errno == errno.EEXIST


def test_detach_refuses_open_device(exposer, file_backend):
    exposer.attach("busy", file_backend("busy", 4 * MiB))
    node = exposer.node("busy")
    index = exposer.volumes.get("busy").loop
    fd = os.open(node, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            exposer.detach("busy")
        assert e.value.errno == errno.EBUSY
        assert os.path.exists(node) and loop.backing_file(index) is not None
        assert os.pread(fd, 4096, 0) == bytes(4096)  # still fully working
    finally:
        os.close(fd)
    assert exposer.detach("busy") is True
    assert not os.path.exists(node)
    assert loop.backing_file(index) is None
    assert "busy" not in exposer.devices()


def test_detach_refuses_mounted_device(exposer, file_backend, dirs):
    exposer.attach("mnt", file_backend("mnt", 32 * MiB))
    node = exposer.node("mnt")
    run("mkfs.ext4", "-q", "-F", node)
    with mounted(node, os.path.join(dirs["base"], "m")):
        with pytest.raises(OSError) as e:
            exposer.detach("mnt")
        assert e.value.errno == errno.EBUSY
        assert exposer.open_count("mnt") >= 1
    assert exposer.open_count("mnt") == 0
    assert exposer.detach("mnt") is True


def test_deferred_detach_happens_on_last_close(make_exposer, file_backend):
    removed = threading.Event()
    ex = make_exposer(on_removed=lambda name: removed.set())
    ex.attach("later", file_backend("later", 4 * MiB))
    index = ex.volumes.get("later").loop
    with open(ex.node("later"), "rb") as dev:
        holder = subprocess.Popen(["sleep", "600"], stdin=dev)  # holds the device open
    try:
        assert ex.detach("later", deferred=True) is False
        assert loop.backing_file(index) is not None
        with pytest.raises(OSError) as e:
            ex.detach("later")
        assert e.value.errno == errno.EBUSY
    finally:
        holder.kill()
        holder.wait()
    assert removed.wait(10)
    assert loop.backing_file(index) is None
    assert not os.path.exists(ex.node("later"))


def test_mknodes_repairs(exposer, file_backend):
    dev_a = exposer.attach("a", file_backend("a", MiB))
    dev_b = exposer.attach("b", file_backend("b", MiB))
    mdir = nodes.mapper_dir(exposer.dev_dir)
    os.unlink(os.path.join(mdir, "a"))  # deleted
    os.unlink(os.path.join(mdir, "b"))
    os.mknod(os.path.join(mdir, "b"), stat.S_IFBLK | 0o600, os.makedev(dev_b[0], dev_b[1] + 999))
    os.mknod(os.path.join(mdir, "stale"), stat.S_IFBLK | 0o600, os.makedev(7, 250))
    with open(os.path.join(mdir, "junk"), "w"):
        pass
    os.mknod(os.path.join(mdir, "control"), stat.S_IFCHR | 0o600, os.makedev(10, 236))

    changes = mknodes(exposer.devices(), exposer.dev_dir)

    assert changes.created == ["a"] and changes.fixed == ["b"]
    assert sorted(changes.removed) == ["junk", "stale"]
    assert sorted(os.listdir(mdir)) == ["a", "b", "control"]
    for name, dev in (("a", dev_a), ("b", dev_b)):
        st = os.stat(os.path.join(mdir, name))
        assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(*dev)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert exposer.mknodes() == NodeChanges()  # nothing left to do
