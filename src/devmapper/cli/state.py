"""What one dmsetup run shares between its commands (dmsetup.c's globals)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devmapper.cli.context import Ctx
    from devmapper.cli.devnames import DevNames
    from devmapper.cli.lib import Lib
    from devmapper.cli.options import Opts
    from devmapper.cli.report import Report
    from devmapper.cli.task import Task
    from devmapper.cli.tree import DepTree, TreeOptions

#: A device as _process_all hands it on: (name, major, minor).
Listed = tuple[str, int, int]


class State:
    def __init__(self, ctx: Ctx, lib: Lib, opts: Opts) -> None:
        self.ctx = ctx
        self.lib = lib
        self.o = opts
        self.report: Report | None = None
        self.report_type = 0
        self.dtree: DepTree | None = None
        self.tree_opts: TreeOptions | None = None
        self.dev_name_type = "devno"  # devno | blk | map
        self.concise_output_produced = False
        self.selection_cmd: str | None = None
        self.udev_only = False
        self.num_devices = 0
        self.exec_argv: list[list[str] | None] = [None]  # --exec split once, then reused
        self._names: DevNames | None = None

    @property
    def names(self) -> DevNames:
        if self._names is None:
            from devmapper.cli.devnames import DevNames

            self._names = DevNames(self.lib)
        return self._names

    def sw(self, name: str) -> int:
        return self.o.sw.get(name, 0)

    def set_task_device(self, t: Task, name: str | None, optional: bool = False) -> bool:
        """_set_task_device: a name, else -u, else -j/-m."""
        if name is not None:
            return t.set_name(name)
        if self.sw("uuid"):
            return t.set_uuid(self.o.uuid or "")
        if self.sw("major") and self.sw("minor"):
            t.set_major(self.o.ints.get("major", 0))
            t.minor = self.o.ints.get("minor", 0)
            return True
        if not optional:
            self.ctx.log_error("No device specified.")
            return False
        return True

    def device_task(self, ttype: str, name: str | None) -> Task | None:
        """A task on one device (or -u/-j/-m) with the common switches."""
        t = self.lib.task(ttype)
        if t is None or not self.set_task_device(t, name):
            return None
        self.common_flags(t)
        return t

    def common_flags(self, t: Task) -> None:
        """The switches nearly every dmsetup task copies."""
        if self.sw("noopencount"):
            t.no_open_count = True
        if self.sw("inactive"):
            t.query_inactive = True
        if self.sw("checks"):
            t.enable_checks = True

    def run(self, t: Task) -> bool:
        """_task_run: the task, then a timestamp with -vvv."""
        r = t.run()
        self.ctx.timestamp()
        if not r:
            self.ctx.log_debug("<backtrace>")  # libdm's stack trace marker (goto_out)
        return r
