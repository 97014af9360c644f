"""After a kill -9 the kernel keeps what the dead server made: its FUSE mount (now answering
ENOTCONN), loop devices bound to files on that mount, and nodes in DM_DEV_DIR/mapper. The next
server takes the instance lock and removes them before mounting afresh."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
from dataclasses import dataclass, field

from . import _sys, loop, nodes
from .mountinfo import mounts_at

log = logging.getLogger(__name__)


def lock_path(mount_dir: str) -> str:
    return mount_dir.rstrip("/") + ".lock"


def state_path(mount_dir: str) -> str:
    return mount_dir.rstrip("/") + ".state"


def save_state(mount_dir: str, loops: dict[int, str]) -> None:
    """Record loop index -> backing path, so a successor recognises our loop devices even
    when their path no longer shows the mount (after a lazy unmount it reads "/NAME")."""
    path = state_path(mount_dir)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "loops": {str(i): p for i, p in loops.items()}}, f)
    os.rename(tmp, path)


def load_state(mount_dir: str) -> dict[int, str]:
    try:
        with open(state_path(mount_dir)) as f:
            return {int(i): p for i, p in json.load(f).get("loops", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def _ours(index: int, backing: str, prefix: str, recorded: dict[int, str]) -> bool:
    if backing.startswith(prefix):
        return True
    path = recorded.get(index)
    return path is not None and backing in (path, "/" + os.path.basename(path))


def acquire_lock(mount_dir: str) -> int:
    """One live server per mount_dir. The flock dies with its process, which is what tells a
    crashed server's leftovers from a running one's."""
    os.makedirs(os.path.dirname(mount_dir.rstrip("/")) or "/", exist_ok=True)
    fd = os.open(lock_path(mount_dir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise OSError(errno.EBUSY, f"another server is exposing devices on {mount_dir}")
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@dataclass
class CleanupReport:
    detached: list[int] = field(default_factory=list)  # loop indexes unbound
    deferred: list[int] = field(default_factory=list)  # still open: unbind on last close
    removed_nodes: list[str] = field(default_factory=list)
    unmounted: int = 0
    lazy_unmounted: int = 0

    @property
    def empty(self) -> bool:
        return not (self.detached or self.deferred or self.removed_nodes or self.unmounted)


def clean_stale(mount_dir: str, dev_dir: str | None = None) -> CleanupReport:
    """Remove a dead server's leftovers. Call only while holding acquire_lock(mount_dir)."""
    report = CleanupReport()
    prefix = mount_dir.rstrip("/") + "/"
    recorded = load_state(mount_dir)
    gone: set[int] = set()
    for index, backing in loop.bound().items():
        if not _ours(index, backing, prefix, recorded):
            continue
        dev = os.makedev(*loop.devno(index))
        try:
            unbound = loop.detach(index, deferred=True)
        except OSError as e:
            log.warning("stale loop%d: %s", index, e)
            continue
        if unbound:
            report.detached.append(index)
            gone.add(dev)
        else:  # still mounted or open: it goes when its user lets go
            report.deferred.append(index)
    report.removed_nodes = _remove_dead_nodes(dev_dir, gone)
    while mounts_at(mount_dir.rstrip("/")):
        try:
            _sys.umount(mount_dir)
            report.unmounted += 1
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            _sys.umount(mount_dir, _sys.MNT_DETACH)  # a deferred loop still holds a file
            report.lazy_unmounted += 1
    if not report.empty:
        log.info("cleaned up after a dead server: %s", report)
    return report


def _remove_dead_nodes(dev_dir: str | None, gone: set[int]) -> list[str]:
    """Nodes of the loop devices just unbound, and of loop devices no longer bound at all."""
    mdir = nodes.mapper_dir(dev_dir)
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(mdir):
            path = os.path.join(mdir, entry)
            if entry == nodes.CONTROL:
                continue
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(path)
                if not stat.S_ISBLK(st.st_mode):
                    continue
                if st.st_rdev in gone or _unbound_loop(st.st_rdev):
                    os.unlink(path)
                    removed.append(entry)
    return removed


def _unbound_loop(rdev: int) -> bool:
    major, minor = os.major(rdev), os.minor(rdev)
    for index in _loop_indexes():
        try:
            if loop.devno(index) == (major, minor):
                return loop.backing_file(index) is None
        except FileNotFoundError:
            continue
    return False


def _loop_indexes() -> list[int]:
    return [
        int(e[4:]) for e in os.listdir(loop.SYS_BLOCK) if e.startswith("loop") and e[4:].isdigit()
    ]
