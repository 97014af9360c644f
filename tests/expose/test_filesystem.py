"""A mapped device is a real block device: mkfs, mount, fsck, dd, blockdev, lsblk, fio."""

from __future__ import annotations

import os
import stat

import pytest

from devmapper.expose import nodes

from .helpers import getsz, mounted, run

pytestmark = pytest.mark.root

MiB = 1 << 20


def test_ext4_roundtrip(exposer, file_backend, dirs):
    backend = file_backend("fs", 64 * MiB)
    major, minor = exposer.attach("fs", backend)
    node = exposer.node("fs")
    st = os.stat(node)
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(major, minor)
    assert stat.S_IMODE(st.st_mode) == nodes.NODE_MODE and st.st_gid == nodes.disk_gid()
    assert getsz(node) == 64 * MiB // 512
    assert run("lsblk", "-bno", "SIZE", node).stdout.split()[0] == str(64 * MiB)

    run("mkfs.ext4", "-q", "-F", node)
    mnt = os.path.join(dirs["base"], "mnt")
    payload = os.urandom(3 * MiB)
    with mounted(node, mnt), open(os.path.join(mnt, "data"), "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    assert run("fsck.ext4", "-f", "-n", node).returncode == 0
    with mounted(node, mnt, "-o", "ro"), open(os.path.join(mnt, "data"), "rb") as f:
        assert f.read() == payload


def test_dd_reaches_backend_and_loop_is_direct(exposer, file_backend):
    backend = file_backend("dd", 16 * MiB)
    exposer.attach("dd", backend)
    node = exposer.node("dd")
    loop_name = exposer.loop_name("dd")
    with open(f"/sys/block/{loop_name}/loop/dio") as f:
        assert f.read().strip() == "1"  # no second page cache under the device
    block = os.urandom(MiB)
    fd = os.open(node, os.O_WRONLY | os.O_DIRECT)
    try:
        import mmap

        buf = mmap.mmap(-1, MiB)
        buf[:] = block
        os.pwritev(fd, [buf], 5 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(backend.path, "rb") as f:
        f.seek(5 * MiB)
        assert f.read(MiB) == block
    out = run("dd", f"if={node}", "of=/dev/null", "bs=1M", "iflag=direct").stderr
    assert "16777216 bytes" in out


def test_fio_verify(exposer, file_backend):
    """Concurrent 4 KiB writes at queue depth 16, then every block read back and checked."""
    exposer.attach("fio", file_backend("fio", 32 * MiB))
    out = run(
        "fio", "--name=verify", f"--filename={exposer.node('fio')}", "--rw=randwrite",
        "--bs=4k", "--size=32M", "--iodepth=16", "--ioengine=libaio", "--direct=1",
        "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0",
        "--output-format=terse", timeout=300,
    )  # fmt: skip
    assert out.returncode == 0


def test_discard_punches_hole(exposer, file_backend):
    backend = file_backend("disc", 16 * MiB)
    exposer.attach("disc", backend)
    node = exposer.node("disc")
    run("dd", "if=/dev/urandom", f"of={node}", "bs=1M", "count=16", "oflag=direct")
    before = os.stat(backend.path).st_blocks
    run("blkdiscard", "-o", str(4 * MiB), "-l", str(8 * MiB), node)
    after = os.stat(backend.path).st_blocks
    assert before - after >= 8 * MiB // 512 - 16
    with open(backend.path, "rb") as f:
        f.seek(4 * MiB)
        assert f.read(8 * MiB) == bytes(8 * MiB)


def test_dm_dev_dir_is_honoured(make_exposer, file_backend, dirs, monkeypatch):
    other = os.path.join(dirs["base"], "devdir-from-env")
    monkeypatch.setenv("DM_DEV_DIR", other)
    from devmapper.expose import Exposer

    ex = Exposer(dirs["mount"])
    ex.start()
    try:
        ex.attach("envdev", file_backend("envdev", MiB))
        assert os.path.exists(os.path.join(other, "mapper", "envdev"))
        assert getsz(os.path.join(other, "mapper", "envdev")) == 2048
    finally:
        ex.close()
    assert not os.path.exists(os.path.join(other, "mapper", "envdev"))


@pytest.mark.parametrize("fuse", ["mfusepy"])
def test_ext4_over_other_fuse_server(make_exposer, file_backend, dirs, fuse):
    pytest.importorskip("mfusepy")
    ex = make_exposer(fuse)
    ex.attach("alt", file_backend("alt", 32 * MiB))
    node = ex.node("alt")
    run("mkfs.ext4", "-q", "-F", node)
    mnt = os.path.join(dirs["base"], "mnt-alt")
    with mounted(node, mnt), open(os.path.join(mnt, "f"), "wb") as f:
        f.write(b"x" * MiB)
    assert run("fsck.ext4", "-f", "-n", node).returncode == 0
