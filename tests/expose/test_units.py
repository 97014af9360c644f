"""Pieces that need no root: parsers, names, the FUSE structs."""

from __future__ import annotations

import errno

import pytest

from devmapper.expose import fuse_abi, mountinfo, nodes


def test_mountinfo_unescapes(tmp_path):
    line = (
        "36 35 7:3 / /mnt/with\\040space rw,relatime shared:1 - ext4 /dev/loop3 rw\n"
        "37 35 0:40 / /run/devmapper/fuse rw,nosuid,nodev - fuse.devmapper devmapper rw\n"
    )
    path = tmp_path / "mountinfo"
    path.write_text(line)
    first, second = mountinfo.mounts(str(path))
    assert first.dev == (7, 3) and first.mount_point == "/mnt/with space"
    assert first.fstype == "ext4" and first.source == "/dev/loop3"
    assert second.fstype == "fuse.devmapper" and second.mount_point == "/run/devmapper/fuse"


@pytest.mark.parametrize("name", ["", ".", "..", "control", "a/b", "x\0y"])
def test_bad_names(name):
    with pytest.raises(OSError) as e:
        nodes.check_name(name)
    assert e.value.errno == errno.EINVAL


def test_fuse_struct_sizes():
    assert fuse_abi.IN_HEADER.size == 40 and fuse_abi.OUT_HEADER.size == 16
    assert fuse_abi.READ_IN.size == 40 and fuse_abi.INIT_OUT.size == 64
    assert fuse_abi.ENTRY_OUT.size == 128 and fuse_abi.ATTR_OUT.size == 104


def test_dev_dir_default(monkeypatch):
    monkeypatch.delenv("DM_DEV_DIR", raising=False)
    assert nodes.mapper_dir() == "/dev/mapper"
    monkeypatch.setenv("DM_DEV_DIR", "/tmp/x")
    assert nodes.mapper_dir() == "/tmp/x/mapper"
