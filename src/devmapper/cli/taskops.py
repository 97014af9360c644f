"""What libdm does inside dm_task_run beyond one ioctl: create+load+resume with its revert,
mknodes over every device, and the node/sysfs helpers of name and read-ahead lookups."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from devmapper.cli import nodes, udev

if TYPE_CHECKING:
    from devmapper.cli.lib import Lib
    from devmapper.cli.task import Info, Task


def create_and_load(self: Task) -> bool:
    """_create_and_load_v4: create, load by major:minor, resume; remove again on failure."""
    lib = self.lib
    create = _task(lib, "create")
    if self.dev_name and not create.set_name(self.dev_name):
        return _fail_udev(self)
    if self.uuid and not create.set_uuid(self.uuid):
        return _fail_udev(self)
    create.major, create.minor = self.major, self.minor
    create.allow_major_fallback = self.allow_major_fallback
    create.event_nr = self.event_nr & 0xFFFF0000
    create.cookie_set = self.cookie_set
    create.add_node = self.add_node
    create.no_open_count = self.no_open_count
    if not create.run():
        return _fail_udev(self)
    info = create.info()
    reload = _task(lib, "reload")
    reload.dev_name = self.dev_name
    reload.show_dev_only = True
    reload.major, reload.minor = info.major, info.minor
    reload.allow_major_fallback = False
    reload.read_only = self.read_only
    reload.targets = self.targets
    reload.secure_data = self.secure_data
    reload.no_open_count = self.no_open_count
    if reload.run():
        self.type = "resume"
        self.uuid = self.mangled_uuid = None
        self.targets = []
        if self.run():
            return True
    else:
        self._udev_complete()
    # revert
    self.type = "remove"
    self.uuid = self.mangled_uuid = None
    self.targets = []
    if self.cookie_set:
        cookie = (self.event_nr & 0xFFFF) | udev.DM_COOKIE_MAGIC << udev.FLAGS_SHIFT
        self.set_cookie(cookie, (self.event_nr & 0xFFFF0000) >> udev.FLAGS_SHIFT)
    if not self.run():
        self.ctx.log_error("Failed to revert device creation.")
    return False

def _fail_udev(self: Task) -> bool:
    self._udev_complete()
    return False

def mknodes_all(self: Task) -> bool:
    """dm_mknodes(NULL): every node in /dev/mapper checked, every device given one."""
    lib = self.lib
    if lib.kind != "kernel":
        return True
    ok = True
    ddir = nodes.dm_dir(lib.dev_dir)
    try:
        entries = sorted(os.listdir(ddir))
    except OSError as e:
        self.ctx.log_error(f"{ddir}: opendir failed: {os.strerror(e.errno or errno.EIO)}")
        entries = []
        ok = False
    for entry in entries:
        if entry == "control":
            continue
        t = _task(lib, "mknodes")
        t.no_open_count = True
        if not t._set_name(entry, lib.mangling) or not t.run():
            ok = False
    lst = _task(lib, "names")
    if not lst.run():
        return False
    for name, _maj, _min in lst.names():
        t = _task(lib, "mknodes")
        t.no_open_count = True
        if not t.set_name(name) or not t.run():
            ok = False
    return ok


def _task(lib: Lib, ttype: str) -> Task:
    from devmapper.cli.task import Task

    return Task(lib, ttype)


def find_dm_name_of_device(ddir: str, rdev: int) -> str | None:
    try:
        entries = os.listdir(ddir)
    except OSError:
        return None
    for entry in entries:
        try:
            if os.stat(os.path.join(ddir, entry)).st_rdev == rdev:
                return entry
        except OSError:
            continue
    return None


def engine_read_ahead(lib: Lib, name: str, info: Info) -> int | None:
    """Engine devices: the exposed node's read-ahead, else the kernel's default for dm."""
    path = os.path.join(nodes.dm_dir(lib.dev_dir), lib.mangle_for_node(name))
    rdev = nodes.block_rdev(path)
    if rdev is not None:
        ra = nodes.sysfs_read_ahead(*rdev)
        if ra is not None:
            return ra
    if info.live_table or info.inactive_table:
        return nodes.DEFAULT_READ_AHEAD
    # A device that never had a table has no disk yet: libdm falls back to the node.
    lib.ctx.log_error(f"{path}: open failed: {os.strerror(errno.ENOENT)}")
    return None


def set_read_ahead(task: Task, major: int, minor: int) -> None:
    """Resume with --readahead: sysfs of the dm disk, or of the node an engine exposes."""
    if task.read_ahead is None:
        return
    if task.lib.kind != "kernel":
        # The engine keeps no read-ahead; its exposed block device (if any) does.
        name = task.dev_name or ""
        rdev = nodes.block_rdev(os.path.join(nodes.dm_dir(task.lib.dev_dir),
                                             task.lib.mangle_for_node(name)))
        if not name or rdev is None:
            return
        major, minor = rdev
    value = task.read_ahead
    if task.read_ahead_minimum:
        current = nodes.sysfs_read_ahead(major, minor)
        if current is not None and current >= value:
            return
    try:
        with open(f"{nodes.SYSFS}dev/block/{major}:{minor}/bdi/read_ahead_kb", "w") as f:
            f.write(str((value + 1) // 2))
    except OSError as e:
        task.ctx.log_error(f"{nodes.SYSFS}dev/block/{major}:{minor}/bdi/read_ahead_kb: "
                           f"write failed: {os.strerror(e.errno or errno.EIO)}")
