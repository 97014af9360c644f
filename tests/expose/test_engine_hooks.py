"""The engine's Exposure hooks over an Exposer, with a stand-in for a MappedDevice."""

from __future__ import annotations

import errno
import os

import pytest

from devmapper.expose import loop
from devmapper.expose.engine_hooks import EngineExposure
from devmapper.expose.filebackend import FileBackend

from .helpers import getro, getsz

pytestmark = pytest.mark.root

MiB = 1 << 20


class FakeDevice(FileBackend):
    """What the hooks read of a MappedDevice: name, size, read_only and the I/O calls."""

    name = "md"


def test_hooks_follow_a_device_through_its_life(exposer, file_backend):
    hooks = EngineExposure(exposer)
    md = file_backend("md", 0, FakeDevice)
    dev = hooks.allocate(md)  # create: no table yet
    node = exposer.node("md")
    assert getsz(node) == 0

    os.truncate(md.path, 8 * MiB)  # table load + resume
    md.refresh_size()
    md.read_only = True
    hooks.changed(md)
    assert getsz(node) == 8 * MiB // 512 and getro(node) == 1
    assert exposer.devno("md") == dev

    md.name = "renamed"
    hooks.renamed(md, "md")
    node = exposer.node("renamed")
    assert os.stat(node).st_rdev == os.makedev(*dev)
    assert hooks.open_count(md) == 0
    fd = os.open(node, os.O_RDONLY)
    try:
        assert hooks.open_count(md) == 1
        with pytest.raises(OSError) as e:
            hooks.release(md, deferred=False)  # open: the removal is refused
        assert e.value.errno == errno.EBUSY
    finally:
        os.close(fd)

    index = exposer.volumes.get("renamed").loop
    assert hooks.release(md, deferred=False) is True
    assert loop.backing_file(index) is None and not os.path.exists(node)
    assert hooks.release(md, deferred=False) is True  # already gone: nothing to do
