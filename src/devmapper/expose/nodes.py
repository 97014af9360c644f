"""Block nodes in DM_DEV_DIR/mapper, made the way dmsetup makes them: root:disk, 0600."""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

NODE_MODE = 0o600
CONTROL = "control"


def dev_dir(override: str | None = None) -> str:
    return override or os.environ.get("DM_DEV_DIR") or "/dev"


def mapper_dir(override: str | None = None) -> str:
    return os.path.join(dev_dir(override), "mapper")


def disk_gid() -> int:
    try:
        return grp.getgrnam("disk").gr_gid
    except KeyError:
        return 0


def check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..", CONTROL) or "\0" in name:
        raise OSError(errno.EINVAL, f"invalid device name {name!r}")


def node_matches(path: str, dev: tuple[int, int]) -> bool:
    """True if path (a node or a udev-style symlink) reaches block device dev."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(*dev)


def make_node(name: str, dev: tuple[int, int], dir_: str | None = None) -> None:
    """Create or replace mapper/NAME atomically (mknod a temporary name, rename over)."""
    check_name(name)
    mdir = mapper_dir(dir_)
    os.makedirs(mdir, mode=0o755, exist_ok=True)
    path = os.path.join(mdir, name)
    tmp = os.path.join(mdir, f".{name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.mknod(tmp, stat.S_IFBLK | NODE_MODE, os.makedev(*dev))
    try:
        os.chown(tmp, 0, disk_gid())
        os.chmod(tmp, NODE_MODE)  # mknod applies the umask
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def remove_node(name: str, dir_: str | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(mapper_dir(dir_), name))


def rename_node(old: str, new: str, dev: tuple[int, int], dir_: str | None = None) -> None:
    make_node(new, dev, dir_)
    if old != new:
        remove_node(old, dir_)


@dataclass
class NodeChanges:
    created: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def mknodes(names_to_devs: Mapping[str, tuple[int, int]], dir_: str | None = None) -> NodeChanges:
    """dmsetup mknodes: make missing nodes, fix wrong ones, remove stale ones (not control)."""
    changes = NodeChanges()
    mdir = mapper_dir(dir_)
    os.makedirs(mdir, mode=0o755, exist_ok=True)
    for name, dev in names_to_devs.items():
        path = os.path.join(mdir, name)
        if node_matches(path, dev):
            continue
        exists = os.path.lexists(path)
        make_node(name, dev, dir_)
        (changes.fixed if exists else changes.created).append(name)
    for entry in os.listdir(mdir):
        path = os.path.join(mdir, entry)
        if entry == CONTROL or entry in names_to_devs:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        changes.removed.append(entry)
    return changes
