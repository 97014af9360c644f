"""The commands that show things: info, status, table, measure, deps, ls, targets, version,
splitname, mangle, and the column report behind `info -c`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devmapper.cli import mangle
from devmapper.cli.state import Listed, State

# report object types (report.py holds the field table, imported only for reports)
DR_DEPS, DR_TREE, DR_NAME, DR_STATS, DR_STATS_META = 4, 8, 16, 32, 64

if TYPE_CHECKING:
    from devmapper.cli.task import Info, Task
    from devmapper.cli.tree import TreeNode

CommandFn = Callable[[State, list[str], "Listed | None", bool], bool]
#: A command on one device: (state, name or None for -u/-j/-m, several devices?).
DeviceFn = Callable[[State, "str | None", bool], bool]


def process_all(st: State, args: list[str], silent: bool, fn: CommandFn) -> bool:
    """_process_all: run ``fn`` for every device, in the driver's (name) order."""
    t = st.lib.task("names")
    if t is None:
        return False
    if st.sw("checks"):
        t.enable_checks = True
    if not st.run(t):
        return False
    listed = t.names()
    if not listed:
        if not silent:
            st.ctx.out("No devices found\n")
        return True
    r = True
    for entry in listed:
        if not fn(st, args, entry, True):
            r = False
    return r


def per_device(fn: DeviceFn) -> CommandFn:
    """The named device (or -u/-j/-m), else every device through _process_all."""
    def command(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
        if listed:
            return fn(st, listed[0], multiple)
        if not args and not st.sw("uuid") and not st.sw("major"):
            return process_all(st, args, False, command)
        return fn(st, args[0] if args else None, multiple)
    return command


# ---------------------------------------------------------------- info


def display_info(st: State, t: Task) -> bool:
    info = t.info()
    if not info.exists:
        st.ctx.log_error("Device does not exist.")
        return False
    if not st.sw("columns"):
        _display_info_long(st, t, info)
        return True
    return display_info_cols(st, t, info)


def _display_info_long(st: State, t: Task, info: Info) -> None:
    out = st.ctx.out
    out(f"Name:              {t.name()}\n")
    out(f"State:             {'SUSPENDED' if info.suspended else 'ACTIVE'}"
        f"{' (READ-ONLY)' if info.read_only else ''}"
        f"{' (DEFERRED REMOVE)' if info.deferred_remove else ''}\n")
    ra = t.read_ahead_value()
    if ra is not None:
        out(f"Read Ahead:        {ra}\n")
    if not info.live_table and not info.inactive_table:
        out("Tables present:    None\n")
    else:
        both = " & " if info.live_table and info.inactive_table else ""
        out(f"Tables present:    {'LIVE' if info.live_table else ''}{both}"
            f"{'INACTIVE' if info.inactive_table else ''}\n")
    if info.open_count != -1:
        out(f"Open count:        {info.open_count}\n")
    out(f"Event number:      {info.event_nr}\n")
    out(f"Major, minor:      {info.major}, {info.minor}\n")
    if info.target_count != -1:
        out(f"Number of targets: {info.target_count}\n")
    uuid = t.get_uuid()
    if uuid:
        out(f"UUID: {uuid}\n")
    out("\n")


class FieldError(Exception):
    pass


class ReportObj:
    """dmsetup_report_obj: what the field functions read for one device."""

    def __init__(self, st: State, t: Task | None, info: Info | None,
                 deps: list[tuple[int, int]] | None, node: TreeNode | None,
                 split: tuple[str, str, str, str] | None) -> None:
        self.st = st
        self.t = t
        self.i = info
        self.deps = deps or []
        self.node = node
        self.split = split or ("", "", "", "")

    def _task(self) -> Task:
        assert self.t is not None
        return self.t

    def _info(self) -> Info:
        assert self.i is not None
        return self.i

    # name_ fields: (text, sort value), the same string
    def name(self) -> tuple[str, Any]:
        n = self._task().name()
        return n, n

    def _mangled(self, s: str, what: str) -> tuple[str, Any]:
        m = mangle.mangle(s, what, self.st.lib.mangling, self.st.ctx.log_error)
        v = s if m is None else m
        return v, v

    def _unmangled(self, s: str, what: str) -> tuple[str, Any]:
        u = None
        if self.st.lib.mangling == mangle.NONE:
            u = mangle.unmangle(s, what, mangle.NONE, self.st.ctx.log_error)
        v = s if u is None else u
        return v, v

    def mangled_name(self) -> tuple[str, Any]:
        return self._mangled(self._task().name(), "name")

    def unmangled_name(self) -> tuple[str, Any]:
        return self._unmangled(self._task().name(), "name")

    def uuid(self) -> tuple[str, Any]:
        v = self._task().get_uuid()
        return v, v

    def mangled_uuid(self) -> tuple[str, Any]:
        return self._mangled(self._task().get_uuid(), "UUID")

    def unmangled_uuid(self) -> tuple[str, Any]:
        return self._unmangled(self._task().get_uuid(), "UUID")

    def read_ahead(self) -> tuple[str, Any]:
        v = self._task().read_ahead_value() or 0
        return str(v), v

    # info_ fields
    def blkdevname(self) -> tuple[str, Any]:
        i = self._info()
        v = self.st.names.get_name(i.major, i.minor, True)
        if v is None:
            self.st.ctx.log_error(f"Could not resolve block device name for "
                                  f"{i.major}:{i.minor}.")
            raise FieldError("blkdevname")
        return v, v

    def attr(self) -> tuple[str, Any]:
        i = self._info()
        v = ("L" if i.live_table else "-") + ("I" if i.inactive_table else "-") + (
            "s" if i.suspended else "-") + ("r" if i.read_only else "w")
        return v, v

    def tables_loaded(self) -> tuple[str, Any]:
        i = self._info()
        if i.live_table:
            v = "Both" if i.inactive_table else "Live"
        else:
            v = "Inactive" if i.inactive_table else "None"
        return v, v

    def suspended(self) -> tuple[str, Any]:
        v = "Suspended" if self._info().suspended else "Active"
        return v, v

    def readonly(self) -> tuple[str, Any]:
        v = "Read-only" if self._info().read_only else "Writeable"
        return v, v

    def devno(self) -> tuple[str, Any]:
        i = self._info()
        v = f"{i.major}:{i.minor}"
        return v, v

    def _num(self, n: int) -> tuple[str, Any]:
        return str(n), n & 0xFFFFFFFFFFFFFFFF

    def major(self) -> tuple[str, Any]:
        return self._num(self._info().major)

    def minor(self) -> tuple[str, Any]:
        return self._num(self._info().minor)

    def open(self) -> tuple[str, Any]:
        return self._num(self._info().open_count)

    def segments(self) -> tuple[str, Any]:
        return self._num(self._info().target_count)

    def events(self) -> tuple[str, Any]:
        return self._num(self._info().event_nr & 0xFFFFFFFF)

    # deps_ fields
    def device_count(self) -> tuple[str, Any]:
        return self._num(len(self.deps))

    def devnos_used(self) -> tuple[str, Any]:
        v = ",".join(f"{a}:{b}" for a, b in self.deps)
        return v, v

    def blkdevs_used(self) -> tuple[str, Any]:
        names = []
        for a, b in self.deps:
            n = self.st.names.get_name(a, b, True)
            if n is None:
                self.st.ctx.log_error(f"Could not resolve block device name for {a}:{b}.")
                raise FieldError("blkdevs_used")
            names.append(n)
        v = ",".join(names)
        return v, v

    # tree_ fields
    def _tree(self) -> TreeNode:
        assert self.node is not None
        return self.node

    def devs_used(self) -> tuple[str, Any]:
        v = ",".join(n.name for n in self._tree().uses if n.name)
        return v, v

    def names_using_dev(self) -> tuple[str, Any]:
        v = ",".join(n.name for n in self._tree().used_by if n.name)
        return v, v

    def device_ref_count(self) -> tuple[str, Any]:
        assert self.st.dtree is not None
        return self._num(self.st.dtree.num_children(self._tree(), True))

    def devnos_using_dev(self) -> tuple[str, Any]:
        v = ",".join(f"{n.major}:{n.minor}" for n in self._tree().used_by
                     if n.major or n.minor)
        return v, v

    # splitname_ fields
    def subsystem(self) -> tuple[str, Any]:
        return self.split[0], self.split[0]

    def vg_name(self) -> tuple[str, Any]:
        return self.split[1], self.split[1]

    def lv_name(self) -> tuple[str, Any]:
        return self.split[2], self.split[2]

    def lv_layer(self) -> tuple[str, Any]:
        return self.split[3], self.split[3]


def _unquote(s: str) -> tuple[str, str]:
    """dm_split_lvm_name's _unquote: up to the first single '-', with '--' made '-'."""
    out = []
    i = 0
    while i < len(s):
        if i + 1 < len(s) and s[i] == "-":
            if s[i + 1] == "-":
                i += 1
            else:
                break
        out.append(s[i])
        i += 1
    rest = s[i + 1:] if i < len(s) else ""
    return "".join(out), rest


def split_name(uuid: str | None, name: str, separator: str) -> tuple[str, str, str, str]:
    """_get_split_name: the uuid's prefix names the subsystem; LVM names split in three."""
    if uuid is None:
        subsystem = ""
    elif separator:
        idx = uuid.find(separator)
        subsystem = uuid[:idx] if idx >= 0 else ""
    else:
        subsystem = uuid
    if subsystem != "LVM":
        return subsystem, "", "", ""
    vg, rest = _unquote(name)
    lv, rest = _unquote(rest)
    layer, _ = _unquote(rest)
    return subsystem, vg, lv, layer


def display_info_cols(st: State, t: Task, info: Info) -> bool:
    report = st.report
    assert report is not None
    node = None
    deps = None
    if st.report_type & DR_TREE:
        node = st.dtree.find(info.major, info.minor) if st.dtree else None
        if node is None:
            st.ctx.log_error(f"Cannot find node {info.major}:{info.minor}.")
            return False
    if st.report_type & DR_DEPS:
        deps = _get_deps(st, info.major, info.minor)
        if deps is None:
            st.ctx.log_error(f"Cannot get deps for {info.major}:{info.minor}.")
            return False
    split = None
    if st.report_type & DR_NAME:
        split = split_name(t.get_uuid(), t.name(), "-")
    if st.report_type & (DR_STATS | DR_STATS_META):
        return True  # no statistics regions: nothing to report
    obj = ReportObj(st, t, info, deps, node, split)
    try:
        selected = report.add_object(obj, output=st.selection_cmd is None)
    except FieldError as e:
        st.ctx.log_error(f"_do_report_object: report function failed for field {e}")
        return False
    if st.selection_cmd is not None and selected:
        from devmapper.cli.dmsetup import command_fn

        return command_fn(st.selection_cmd)(st, [t.name()], None, True)
    return True


def _get_deps(st: State, major: int, minor: int) -> list[tuple[int, int]] | None:
    t = st.lib.task("deps")
    if t is None:
        return None
    t.set_major(major)
    t.minor = minor
    st.common_flags(t)
    if not st.run(t) or not t.exists:
        return None
    return t.deps()


@per_device
def info(st: State, name: str | None, multiple: bool) -> bool:
    t = st.device_task("info", name)
    if t is None or not st.run(t):
        return False
    return display_info(st, t)


# ---------------------------------------------------------------- status, table, ls


def _quoted(s: str) -> str:
    return "".join("\\" + c if c in ",;\\" else c for c in s)


def _hide_key(params: str, name: str) -> str:
    at = params.find(name)
    if at < 0:
        return params
    c = at + len(name)
    while c < len(params) and params[c] not in " :":
        c += 1
    if c >= len(params) or params[c] != ":":
        return params
    c += 1
    end = params.find(" ", c)
    end = len(params) if end < 0 else end
    return params[:c] + "0" * (end - c) + params[end:]


def _hide_crypt_key(params: str) -> str:
    sp = params.find(" ")
    if sp < 0:
        return params
    c = sp + 1
    if params[c:c + 1] == ":":
        return params  # a kernel keyring reference: harmless to show
    end = params.find(" ", c)
    end = len(params) if end < 0 else end
    return params[:c] + "0" * (end - c) + params[end:]


def make_status(cmd_name: str) -> CommandFn:
    def fn(st: State, name: str | None, multiple: bool) -> bool:
        return status(st, cmd_name, name, multiple)
    return per_device(fn)


def status(st: State, cmd_name: str, name: str | None, multiple: bool) -> bool:
    ctx = st.ctx
    is_table = cmd_name == "table"
    use_concise = is_table and bool(st.sw("concise"))
    ls_only = cmd_name == "ls"
    t = st.device_task("table" if is_table else "status", name)
    if t is None:
        return False
    if st.sw("noflush"):
        t.no_flush = True
    if cmd_name == "measure":
        t.ima_measurement = True
    if not st.run(t):
        return False
    i = t.info()
    if not i.exists:
        ctx.log_error("Device does not exist.")
        return False
    if not name:
        name = t.name()
    execing = bool(st.sw("exec") and st.o.exec_cmd)
    verbose = st.sw("verbose")
    target = st.o.target if st.sw("target") else None
    specs: list[Any] = list(t.status_targets()) or [None]
    matched = False
    for spec in specs:
        if target is not None and (spec is None or spec.target_type != target):
            continue
        if ls_only:
            if not execing or verbose:
                ctx.out(f"{name}\t({i.major}, {i.minor})\n")
            matched = True
            break
        if not execing or verbose:
            if not use_concise:
                if not matched and verbose:
                    display_info(st, t)
                if multiple and not verbose:
                    ctx.out(f"{name}: ")
            elif not matched:
                if st.concise_output_produced:
                    ctx.out(";")
                st.concise_output_produced = True
                ctx.out(f"{_quoted(name)},{_quoted(t.get_uuid())},{i.minor},"
                        f"{'ro' if i.read_only else 'rw'}")
            if spec is not None:
                params = spec.params
                if not st.sw("showkeys") and is_table:
                    if spec.target_type == "crypt":
                        params = _hide_crypt_key(params)
                    elif spec.target_type == "integrity":
                        for key in ("internal_hash:", "journal_crypt:", "journal_mac:"):
                            params = _hide_key(params, key)
                if use_concise:
                    ctx.out(",")
                ctx.out(f"{spec.start} {spec.length} {spec.target_type} ")
                ctx.out(_quoted(params) if use_concise else params)
            if not use_concise:
                ctx.out("\n")
        matched = True
    if multiple and verbose and matched and not ls_only and (not use_concise or verbose > 1):
        ctx.out("\n")
    if matched and execing:
        from devmapper.cli.commands import exec_command

        if not exec_command(st, name, st.exec_argv):
            return False
    return True


@per_device
def deps(st: State, name: str | None, multiple: bool) -> bool:
    ctx = st.ctx
    t = st.device_task("deps", name)
    if t is None or not st.run(t):
        return False
    if not t.exists:
        ctx.out("Device does not exist.\n")
        return True
    if st.sw("verbose"):
        display_info(st, t)
    if multiple and not st.sw("verbose"):
        ctx.out(f"{name}: ")
    devs = t.deps()
    ctx.out(f"{len(devs)} dependencies\t:")
    for major, minor in devs:
        dn = None
        if st.dev_name_type in ("blk", "map"):
            dn = st.names.get_name(major, minor, st.dev_name_type == "blk")
        ctx.out(f" ({dn})" if dn is not None else f" ({major}, {minor})")
    ctx.out("\n")
    if multiple and st.sw("verbose"):
        ctx.out("\n")
    return True


def _display_name(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    if listed is None:
        return True
    name, major, minor = listed
    dn = None
    if st.dev_name_type in ("blk", "map"):
        dn = st.names.get_name(major, minor, st.dev_name_type == "blk")
    st.ctx.out(f"{name}\t({dn})\n" if dn is not None else f"{name}\t({major}:{minor})\n")
    return True


def ls(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    if (st.sw("target") and st.o.target) or (st.sw("exec") and st.o.exec_cmd):
        return make_status("ls")(st, args, None, False)
    if st.sw("tree"):
        return display_tree(st)
    return process_all(st, args, False, _display_name)


def build_deptree(st: State) -> bool:
    """_build_whole_deptree: every device, and what each one uses."""
    from devmapper.cli.tree import DepTree

    if st.dtree is not None:
        return True

    def lookup(major: int, minor: int) -> tuple[str, str, Info, list[tuple[int, int]]] | None:
        if not st.names.is_dm(major, minor):
            return None
        t = st.lib.task("deps")
        if t is None:
            return None
        t.set_major(major)
        t.minor = minor
        if st.sw("inactive"):
            t.query_inactive = True
        if not t.run() or not t.exists:
            return None
        return t.name(), t.get_uuid(), t.info(), t.deps()

    st.dtree = DepTree(lookup)

    def add(st_: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
        if listed is not None:
            assert st.dtree is not None
            st.dtree.add_dev(listed[1], listed[2])
        return True

    return process_all(st, [], False, add)


def display_tree(st: State) -> bool:
    from devmapper.cli.tree import TreeOptions, TreePrinter

    r = build_deptree(st)
    if st.dtree is not None:
        opts = st.tree_opts or TreeOptions()
        printer = TreePrinter(st.dtree, opts,
                              lambda a, b: st.names.get_name(a, b, True))
        printer.walk(st.dtree.root, 0)
        st.ctx.out(printer.text())
    return r


# ---------------------------------------------------------------- targets, version


def targets(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    t = st.lib.task("versions")
    if t is None:
        return False
    if st.sw("checks"):
        t.enable_checks = True
    if not st.run(t):
        return False
    for tv in t.versions():
        a, b, c = tv.version
        st.ctx.out(f"{tv.name:<16} v{a}.{b}.{c}\n")
    return True


def target_version(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    for target in args:
        t = st.lib.task("target-version")
        if t is None:
            return False
        if not t.set_name(target):
            return False
        if not st.run(t):
            return False
        for tv in t.versions():
            a, b, c = tv.version
            st.ctx.out(f"{tv.name:<16} v{a}.{b}.{c}\n")
    return True


def version(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    st.ctx.out(f"Library version:   {st.lib.lib_version}\n")
    t = st.lib.task("version")
    if t is None:
        return False
    if not t.run():
        st.ctx.log_error("Failed to get driver version")
        return False
    assert t.hdr is not None
    a, b, c = t.hdr.version
    st.ctx.out(f"Driver version:    {a}.{b}.{c}\n")
    st.report = None  # no headings for `dmstats version`
    return True


# ---------------------------------------------------------------- splitname, mangle


def splitname(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    assert st.report is not None
    split = split_name(args[1] if len(args) == 2 else "LVM", args[0], "")
    st.report.add_object(ReportObj(st, None, None, None, None, split))
    return True


@per_device
def mangle_cmd(st: State, arg: str | None, multiple: bool) -> bool:
    from devmapper.cli.commands import do_rename

    ctx = st.ctx
    t = st.lib.task("status")
    if t is None:
        return False
    if not st.set_task_device(t, arg):
        return False
    if not st.sw("checks"):
        t.enable_checks = True
    if not st.run(t) or not t.exists:
        return False
    name = t.name() if arg is None else arg  # -u/-j/-m: the device's own name
    uuid = t.get_uuid()
    # The build default, not DM_DEFAULT_NAME_MANGLING_MODE; the library itself runs with
    # mangling off for this command, and its "mangled" form is then the auto one.
    target = st.o.mangling or mangle.AUTO
    mode = st.lib.mangling
    if target == mangle.AUTO:
        if "\\x5cx" in name:
            ctx.log_error(f'The name "{name}" seems to be mangled more than once. Manual '
                          "intervention required to rename the device.")
            return False
        if "\\x5cx" in uuid:
            ctx.log_error(f'The UUID "{uuid}" seems to be mangled more than once. Manual '
                          "intervention required to correct the device UUID.")
            return False
    new_name: str | None
    new_uuid: str | None
    if target == mangle.NONE:
        new_name, new_uuid = t.name(), uuid
        if mode == mangle.NONE:
            new_name = mangle.unmangle(t.name(), "name", mode, ctx.log_error)
            new_uuid = mangle.unmangle(uuid, "UUID", mode, ctx.log_error)
    else:
        new_name = mangle.mangle(t.name(), "name", mode, ctx.log_error)
        new_uuid = mangle.mangle(uuid, "UUID", mode, ctx.log_error)
    if new_name is None or new_uuid is None:
        return False
    if uuid != new_uuid:
        ctx.log_error(f"{name}: {uuid}: UUID in incorrect form. ")
        ctx.log_error("Unable to change device UUID. The device must be deactivated first.")
        return False
    if name == new_name:
        ctx.log_print(f"{name}: {uuid or '[no UUID]'}: name "
                      f"{'and UUID ' if uuid else ''}already in correct form")
        return True
    ctx.log_print(f"{name}: renaming to {new_name}")
    return do_rename(st, name, new_name, None)
