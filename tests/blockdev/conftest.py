"""A real devmapperd serving real block devices (FUSE + loop), with a private DM_DEV_DIR."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.expose.helpers import fuse_uring_param

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "daemon"))

from blockdevlib import Served, run  # noqa: E402
from daemonlib import DaemonProc, daemon_env, short_tempdir  # noqa: E402


@pytest.fixture(params=["raw", "uring"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The daemon on each FUSE transport (uring: fuse.enable_uring=Y meanwhile)."""
    if request.param == "raw":
        yield from _served("raw")
    else:
        with fuse_uring_param("Y"):
            yield from _served("uring")


def _served(fuse: str) -> Iterator[Served]:
    rundir = short_tempdir()
    dev_dir = rundir / "dev"
    (dev_dir / "mapper").mkdir(parents=True)
    work = Path(os.environ.get("BLOCKDEV_WORK", "/var/tmp")) / rundir.name
    work.mkdir()
    env = daemon_env(DEVMAPPER_EXPOSE="1", DM_DEV_DIR=str(dev_dir), DEVMAPPER_FUSE=fuse)
    daemon = DaemonProc(rundir, env).start()
    s = Served(daemon, dev_dir, work)
    try:
        yield s
    finally:
        for line in run("findmnt", "-rn", "-o", "TARGET", check=False).stdout.splitlines():
            if line.startswith(str(work)):
                run("umount", "-l", line, check=False)
        try:
            with daemon.dm() as dm:
                dm.remove_all()
        except OSError:
            pass
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(rundir, ignore_errors=True)


@pytest.fixture
def mountpoint(served: Served) -> Callable[[str], str]:
    def make(name: str) -> str:
        path = served.work / name
        path.mkdir()
        return str(path)

    return make
