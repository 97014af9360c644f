"""The commands that change devices: create, load, remove, suspend/resume, rename, message...

Each function is dmsetup.c's of the same name: (state, args, listed device, multiple)
-> success. Messages and their order are LVM2's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from devmapper.cli import udev
from devmapper.cli.state import Listed, State
from devmapper.cli.task import Task

# sscanf("%llu %llu %s %n"): possessive digits, as scanf never gives characters back.
_LINE = re.compile(r"[ \t\n\v\f\r]*([+-]?\d++)[ \t\n\v\f\r]*([+-]?\d++)"
                   r"[ \t\n\v\f\r]*(\S++)[ \t\n\v\f\r]*")
_U64 = 1 << 64


def _ull(text: str) -> int:
    """%llu: a sign wraps around, overflow saturates."""
    neg = text.startswith("-")
    n = int(text.lstrip("+-"))
    if n >= _U64:
        return _U64 - 1
    return (_U64 - n) % _U64 if neg else n


def parse_line(st: State, t: Task, buffer: str, file: str, line: int) -> bool:
    text = buffer.rstrip(" \t\n\v\f\r").lstrip(" \t\n\v\f\r")
    if not text or text.startswith("#"):
        return True
    m = _LINE.match(text)
    if not m:
        st.ctx.log_error(f"Invalid format on line {line} of table {file}.")
        return False
    params = text[m.end():]
    hash_at = params.find("#")
    if hash_at >= 0:
        params = params[:hash_at]
    return t.add_target(_ull(m.group(1)), _ull(m.group(2)), m.group(3), params)


def parse_table_lines(st: State, t: Task, table: str) -> bool:
    """_parse_table_lines: --table (or a concise entry) may hold several lines."""
    return all(parse_line(st, t, line, "", n)
               for n, line in enumerate(table.split("\n"), 1))


def parse_file(st: State, t: Task, file: str | None, table: str | None = None) -> bool:
    if table is None:
        table = st.o.table
    if table is not None:
        return parse_table_lines(st, t, table)
    if file is not None:
        try:
            with open(file, encoding="utf-8", errors="surrogateescape", newline="") as f:
                text = f.read()
        except OSError:
            st.ctx.log_error(f"Couldn't open '{file}' for reading.")
            return False
        label = file
    else:
        text = st.ctx.stdin.read()
        label = "on stdin"
    # getline(): lines end at \n only; a last line without one still counts.
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return all(parse_line(st, t, line, label, n) for n, line in enumerate(lines, 1))


def _udev_flags(st: State) -> int:
    flags = 0
    if st.sw("noudevrules"):
        flags |= udev.DISABLE_DM_RULES | udev.DISABLE_SUBSYSTEM_RULES
    if st.udev_only:
        flags |= udev.DISABLE_LIBRARY_FALLBACK
    return flags


def _set_add_node(st: State, t: Task) -> None:
    t.add_node = "resume"
    if st.sw("addnodeonresume"):
        t.add_node = "resume"
    if st.sw("addnodeoncreate"):
        t.add_node = "create"


def _read_ahead(st: State, t: Task) -> None:
    if st.sw("readahead"):
        t.read_ahead = st.o.ints.get("readahead")
        t.read_ahead_minimum = st.o.read_ahead_minimum
        if t.read_ahead == 0xFFFFFFFF:  # auto: leave the kernel's
            t.read_ahead = None


def load(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    if st.sw("notable"):
        st.ctx.log_error("--notable only available when creating new device.")
        return False
    name = None
    if not st.sw("uuid") and not st.sw("major"):
        if not args:
            st.ctx.log_error("Please specify device.")
            return False
        name, args = args[0], args[1:]
    elif len(args) > 1:
        st.ctx.log_error("Too many command line arguments.")
        return False
    file = args[0] if len(args) == 1 else None
    t = _reload(st, name, lambda t: parse_file(st, t, file))
    return t is not None and _verbose_info(st, t)


def _reload(st: State, name: str | None, table: Callable[[Task], bool]) -> Task | None:
    """Load a table (filled in by ``table``) into one device: the run task, else None."""
    t = st.lib.task("reload")
    if t is None or not st.set_task_device(t, name) or not table(t):
        return None
    if st.sw("readonly"):
        t.read_only = True
    st.common_flags(t)
    return t if st.run(t) else None


def _verbose_info(st: State, t: Task) -> bool:
    """-v after a change: the device's info."""
    if not st.sw("verbose"):
        return True
    from devmapper.cli.display import display_info

    return display_info(st, t)


def create_one_device(st: State, name: str, file: str | None,
                      table: str | None = None, uuid: str | None = None,
                      minor: int | None = None, read_only: bool = False) -> bool:
    t = st.lib.task("create")
    if t is None:
        return False

    def prepare() -> bool:
        if not t.set_name(name):
            return False
        if uuid is not None and not t.set_uuid(uuid):
            return False
        if not st.sw("notable") and not parse_file(st, t, file, table):
            return False
        if read_only:
            t.read_only = True
        if st.sw("major"):
            t.set_major(st.o.ints.get("major", 0))
        if minor is not None:
            t.minor = minor
        st.common_flags(t)
        _read_ahead(st, t)
        if st.sw("notable"):
            st.lib.udev_sync = False
        _set_add_node(st, t)
        return True

    return _run_synced(st, t, prepare) and _verbose_info(st, t)


def _run_synced(st: State, t: Task, prepare: Callable[[], bool], sync: bool = True) -> bool:
    """Prepare and run a task; with ``sync``, under a udev cookie, then wait for udev
    (unless --udevcookie leaves the wait to the caller)."""
    cookie = 0
    try:
        if not prepare():
            return False
        if sync:
            ok_cookie, cookie = t.set_cookie(st.o.udev_cookie, _udev_flags(st))
            if not ok_cookie:
                return False
        return st.run(t)
    finally:
        if sync and not st.o.udev_cookie:
            st.lib.udev_wait(cookie)


def create(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    if st.sw("concise"):
        if len(args) > 1:
            st.ctx.log_error("dmsetup create --concise takes at most one argument")
            return False
        return create_concise(st, args)
    if not args:
        st.ctx.log_error("Please provide a name for the new device.")
        return False
    minor = st.o.ints.get("minor") if st.sw("minor") else None
    return create_one_device(st, args[0], args[1] if len(args) == 2 else None,
                             uuid=st.o.uuid if st.sw("uuid") else None, minor=minor,
                             read_only=bool(st.sw("readonly")))


def create_concise(st: State, args: list[str]) -> bool:
    """_create_concise: name,uuid,minor,flags,table[,table...][;...], backslash quoting."""
    ctx = st.ctx
    if st.sw("table") or st.sw("minor") or st.sw("uuid") or st.sw("notable") \
            or st.sw("inactive"):
        ctx.log_error("--concise is incompatible with --[no]table, --minor, --uuid and "
                      "--inactive.")
        return False
    text = args[0] if args else ctx.stdin.read()
    fields: list[list[str] | None] = [[], None, None, None, None]
    f = 0

    def shown(i: int) -> str:
        v = fields[i]
        return "(null)" if v is None else "".join(v)

    def parsed_msg() -> str:
        return (f"Parsed {f + 1} fields: name: {shown(0)} uuid: {shown(1)} minor: {shown(2)} "
                f"flags: {shown(3)} table: {shown(4)}")

    c = 0
    n = len(text)
    while c < n:
        ch = text[c]
        cur = fields[f]
        assert cur is not None
        if ch == "\\":
            c += 1
            if c >= n:
                ctx.log_error("Backslash must be followed by another character at end of "
                              "string.")
                ctx.log_error(parsed_msg())
                return False
            cur.append(text[c])
            c += 1
            continue
        if ch == "," and f < 4:
            f += 1
            fields[f] = []
            c += 1
            while c < n and text[c].isspace():
                c += 1
            continue
        if ch == "," and f >= 4:
            cur.append("\n")
            c += 1
            continue
        if ch == ";" or c + 1 == n:
            if ch != ";":
                cur.append(ch)
            c += 1
            if f != 4:
                ctx.log_error("Five comma-separated fields are required for each device")
                ctx.log_error(parsed_msg())
                return False
            name, uuid, minor, flags, table = ("".join(x or []) for x in fields)
            read_only = flags == "ro"
            if flags and flags not in ("ro", "rw"):
                ctx.log_error(f"Invalid flags parameter '{flags}' must be 'ro' or 'rw' or "
                              "empty.")
                return False
            from devmapper.cli.options import atoi

            if not create_one_device(st, name, None, table=table, uuid=uuid or None,
                                     minor=atoi(minor) if minor else None,
                                     read_only=read_only):
                return False
            f = 0
            fields = [[], None, None, None, None]
            while c < n and text[c].isspace():
                c += 1
            continue
        cur.append(ch)
        c += 1
    if fields[0]:
        ctx.log_error("Incomplete entry: five comma-separated fields are required for each "
                      "device")
        ctx.log_error(parsed_msg())
        return False
    return True


def do_rename(st: State, name: str | None, new_name: str | None,
              new_uuid: str | None) -> bool:
    t = st.lib.task("rename")
    if t is None:
        return False

    def prepare() -> bool:
        if not st.set_task_device(t, name):
            return False
        if new_uuid is not None:
            if not t.set_newuuid(new_uuid):
                return False
        elif new_name is None or not t.set_newname(new_name):
            return False
        st.common_flags(t)
        return True

    return _run_synced(st, t, prepare)


def rename(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    name = args[0] if len(args) == 2 else None
    if st.sw("setuuid"):
        return do_rename(st, name, None, args[-1])
    return do_rename(st, name, args[-1], None)


def _device_args(st: State, ttype: str, args: list[str]) -> tuple[Task | None, list[str]]:
    """message and setgeometry: the device from -u/-j/-m, else the first argument."""
    if st.sw("uuid") or st.sw("major"):
        return st.device_task(ttype, None), args
    return st.device_task(ttype, args[0]), args[1:]


def message(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    t, args = _device_args(st, "message", args)
    if t is None:
        return False
    sector = _strtoull(args[0]) if args else None
    if sector is None:
        st.ctx.log_error("Invalid sector.")
        return False
    t.sector = sector
    args = args[1:]
    if not args:
        st.ctx.log_error("No message supplied.")
    t.message = " ".join(args)
    if not st.run(t):
        return False
    response = t.message_response()
    if response is not None:
        if not response or response.endswith("\n"):
            st.ctx.out(response)
        else:
            st.ctx.out(response + "\n")
    return True


def _strtoull(text: str) -> int | None:
    m = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?)(\d+)", text)
    if not m:
        return None
    n = int(m.group(2))
    if n >= _U64:
        return None  # ERANGE
    return (_U64 - n) % _U64 if m.group(1) == "-" else n


def setgeometry(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    t, args = _device_args(st, "setgeometry", args)
    if t is None:
        return False
    t.geometry = " ".join(args[:4])
    return st.run(t)


def simple(st: State, ttype: str, name: str | None, event_nr: int = 0,
           display: bool = False) -> bool:
    """_simple: one command on one device, udev-synchronised for resume and remove."""
    t = st.lib.task(ttype)
    if t is None:
        return False

    def prepare() -> bool:
        if not st.set_task_device(t, name):
            return False
        if event_nr:
            t.event_nr = event_nr
        if st.sw("noflush"):
            t.no_flush = True
        st.common_flags(t)
        if st.sw("nolockfs"):
            t.skip_lockfs = True
        _set_add_node(st, t)
        _read_ahead(st, t)
        if st.sw("retry") and ttype == "remove":
            t.retry_remove = True
        if st.sw("deferred") and ttype in ("remove", "remove_all"):
            t.deferred_remove = True
        return True

    ok = _run_synced(st, t, prepare, sync=ttype in ("resume", "remove"))
    return ok and (not display or _verbose_info(st, t))


def suspend(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    return simple(st, "suspend", args[0] if args else None, display=True)


def resume(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    return simple(st, "resume", args[0] if args else None, display=True)


def clear(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    return simple(st, "clear", args[0] if args else None, display=True)


def wait(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    from devmapper.cli.options import atoi

    name = None
    if not st.sw("uuid") and not st.sw("major"):
        if not args:
            st.ctx.log_error("No device specified.")
            return False
        name, args = args[0], args[1:]
    event_nr = atoi(args[-1]) & 0xFFFFFFFF if args else 0
    return simple(st, "waitevent", name, event_nr, display=True)


def get_device_size(st: State, name: str) -> int:
    t = st.device_task("table", name)
    if t is None or not st.run(t) or not t.exists:
        return 0
    return sum(spec.length for spec in t.status_targets())


def error_device(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    """wipe_table, and remove --force: load an error table over the device and resume it."""
    name = listed[0] if listed else (args[0] if args else None)
    if not name:
        st.ctx.log_error("No device specified.")
        return False
    size = get_device_size(st, name)
    if _reload(st, name, lambda t: t.add_target(0, size, "error", "")) is None:
        return False
    if st.sw("force"):
        # Avoid hanging on a flush with --force.
        st.o.sw["nolockfs"] = st.o.sw["noflush"] = 1
    if not simple(st, "resume", name):
        simple(st, "clear", name)
        return False
    return True


def remove(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    if st.sw("force") and args:
        if st.o.udev_cookie:
            st.ctx.log_warn("WARNING: Use of cookie and --force is not compatible.")
        error_device(st, args, None, False)
    return simple(st, "remove", args[0] if args else None)


def _count_devices(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    st.num_devices += 1
    return True


def remove_all(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    from devmapper.cli.display import process_all

    r = simple(st, "remove_all", "") | mknodes_all(st)
    if not st.sw("force"):
        return r
    st.num_devices = 0
    r |= process_all(st, args, True, _count_devices)
    if not st.num_devices:
        return r
    r |= process_all(st, args, True, error_device)
    r |= simple(st, "remove_all", "") | mknodes_all(st)
    st.num_devices = 0
    r |= process_all(st, args, True, _count_devices)
    if not st.num_devices:
        return r
    st.ctx.log_error(f"Unable to remove {st.num_devices} device(s).")
    return r


def mknodes_all(st: State, name: str | None = None) -> bool:
    """dm_mknodes(name)."""
    t = st.lib.task("mknodes")
    if t is None:
        return False
    if name and not t.set_name(name):
        return False
    t.no_open_count = True
    return t.run()


def mknodes(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    return mknodes_all(st, args[0] if args else None)


def exec_command(st: State, name: str, argv_cache: list[list[str] | None]) -> bool:
    """--exec: run the command with the device's node appended (split on whitespace)."""
    from devmapper.cli import nodes

    if argv_cache[0] is None:
        words = (st.o.exec_cmd or "").split()
        if not words:
            return False
        if len(words) >= 256:
            st.ctx.log_error("Too many args to --exec.")
            return False
        argv_cache[0] = words
    if not mknodes_all(st, name):
        return False
    import subprocess

    path = os.path.join(nodes.dm_dir(st.lib.dev_dir), name)
    cached = argv_cache[0]
    assert cached is not None
    captured = st.ctx.child_output
    try:
        if captured is None:
            # The child writes straight to our stdout; like C's, ours is not flushed first.
            subprocess.run([*cached, path], check=False)
        else:  # output captured in memory (tests): keep the child's output apart
            res = subprocess.run([*cached, path], check=False, stdout=subprocess.PIPE)
            captured.append(res.stdout.decode("utf-8", "surrogateescape"))
    except OSError:
        pass  # the child's exit status 127: dmsetup carries on
    return True

