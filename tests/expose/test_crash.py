"""After a kill -9 of the serving process, the next Exposer cleans up what it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from devmapper.expose import Exposer, _sys, loop
from devmapper.expose.mountinfo import mounts_at

from .helpers import run

pytestmark = pytest.mark.root

MiB = 1 << 20

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from devmapper.expose import Exposer
    from devmapper.expose.filebackend import FileBackend
    mount_dir, dev_dir, image, mount_point = sys.argv[1:5]
    ex = Exposer(mount_dir, dev_dir)
    ex.start()
    ex.attach("victim", FileBackend(image))
    if mount_point:
        node = ex.node("victim")
        assert os.system(f"mkfs.ext4 -q -F {node} && mount -o ro {node} {mount_point}") == 0
    print(ex.volumes.get("victim").loop, flush=True)
    time.sleep(600)
    """
)


def _serve_and_kill(dirs: dict[str, str], mount_point: str = "") -> int:
    image = os.path.join(dirs["base"], "victim.img")
    with open(image, "wb") as f:
        f.truncate(32 * MiB)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, dirs["mount"], dirs["dev"], image, mount_point],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        index = int(child.stdout.readline())  # type: ignore[union-attr]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return index


def test_restart_cleans_up_after_kill(dirs, make_exposer):
    index = _serve_and_kill(dirs)
    node = os.path.join(dirs["dev"], "mapper", "victim")
    # What the dead server left behind: a dead FUSE mount, a bound loop device, a node.
    assert mounts_at(dirs["mount"])
    assert (loop.backing_file(index) or "").startswith(dirs["mount"] + "/")
    assert os.path.exists(node)

    ex = make_exposer()
    report = ex.cleanup_report
    assert report is not None
    assert index in report.detached and "victim" in report.removed_nodes
    assert report.unmounted == 1
    assert loop.backing_file(index) is None
    assert not os.path.exists(node)
    assert len(mounts_at(dirs["mount"])) == 1  # only the new server's own mount
    assert ex.devices() == {}


def test_restart_while_a_filesystem_is_still_mounted(dirs, make_exposer):
    stuck = os.path.join(dirs["base"], "stuck")
    os.makedirs(stuck)
    try:
        index = _serve_and_kill(dirs, stuck)
        ex = make_exposer()
        report = ex.cleanup_report
        assert report is not None
        # Busy: the loop device is left to unbind on last close, the dead mount detached.
        assert index in report.deferred and report.lazy_unmounted == 1
        assert len(mounts_at(dirs["mount"])) == 1
        ex.attach("fresh", _backend(dirs))
        run("dd", f"if={ex.node('fresh')}", "of=/dev/null", "bs=4k", "iflag=direct")
    finally:
        try:
            _sys.umount(stuck)
        except OSError:
            _sys.umount(stuck, _sys.MNT_DETACH)
    deadline = time.monotonic() + 10
    while loop.backing_file(index) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loop.backing_file(index) is None  # unbound once the filesystem went


def test_restart_finds_loops_of_a_lazily_unmounted_mount(dirs, make_exposer):
    """Someone ran umount -l on the dead mount: the loop's backing path now reads "/victim"
    and only the state file beside the lock ties it to us."""
    index = _serve_and_kill(dirs)
    _sys.umount(dirs["mount"], _sys.MNT_DETACH)
    assert loop.backing_file(index) == "/victim"
    ex = make_exposer()
    assert ex.cleanup_report is not None and index in ex.cleanup_report.detached
    assert loop.backing_file(index) is None


def _backend(dirs: dict[str, str]):
    from devmapper.expose.filebackend import FileBackend

    path = os.path.join(dirs["base"], "fresh.img")
    with open(path, "wb") as f:
        f.truncate(MiB)
    return FileBackend(path)


def test_second_live_server_is_refused(dirs, make_exposer):
    make_exposer()
    with pytest.raises(OSError):
        Exposer(dirs["mount"], dirs["dev"]).start()
