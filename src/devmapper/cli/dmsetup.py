"""dmsetup: a drop-in for LVM2's dmsetup 1.02.185 over any devmapper driver.

    main(argv, transport=None, stdin=None, stdout=None, stderr=None) -> exit status

``argv`` excludes the program name. Without a ``transport`` the driver is the kernel when
it has device-mapper (reached, as libdm does, through DM_DEV_DIR/mapper/control, made if
missing), else the engine daemon (see cli/control.py). ``--backend
kernel|engine|inprocess|auto`` or DEVMAPPER_BACKEND choose explicitly (the option is not
listed by `dmsetup help`, whose text stays LVM2's byte for byte).

Startup is kept cheap (`dmsetup version` must cost little more than starting Python):
this module imports only the option parser; everything else is imported on use.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from devmapper.cli.context import Ctx
    from devmapper.cli.state import State
    from devmapper.control import Transport

_DISPLAY = "devmapper.cli.display"
_COMMANDS = "devmapper.cli.commands"
_UDEV = "devmapper.cli.udevcmds"
#: command -> (module, function)
_FN: dict[str, tuple[str, str]] = {
    "create": (_COMMANDS, "create"), "remove": (_COMMANDS, "remove"),
    "remove_all": (_COMMANDS, "remove_all"), "suspend": (_COMMANDS, "suspend"),
    "resume": (_COMMANDS, "resume"), "load": (_COMMANDS, "load"),
    "clear": (_COMMANDS, "clear"), "reload": (_COMMANDS, "load"),
    "wipe_table": (_COMMANDS, "error_device"), "rename": (_COMMANDS, "rename"),
    "message": (_COMMANDS, "message"), "wait": (_COMMANDS, "wait"),
    "mknodes": (_COMMANDS, "mknodes"), "setgeometry": (_COMMANDS, "setgeometry"),
    "ls": (_DISPLAY, "ls"), "info": (_DISPLAY, "info"), "deps": (_DISPLAY, "deps"),
    "targets": (_DISPLAY, "targets"), "target-version": (_DISPLAY, "target_version"),
    "version": (_DISPLAY, "version"), "splitname": (_DISPLAY, "splitname"),
    "mangle": (_DISPLAY, "mangle_cmd"),
    "udevflags": (_UDEV, "udevflags"), "udevcomplete": (_UDEV, "udevcomplete"),
    "udevcomplete_all": (_UDEV, "udevcomplete_all"), "udevcookies": (_UDEV, "udevcookies"),
    "udevcreatecookie": (_UDEV, "udevcreatecookie"),
    "udevreleasecookie": (_UDEV, "udevreleasecookie"),
}


def command_fn(name: str) -> Callable[..., bool]:
    if name in ("status", "table", "measure"):
        from devmapper.cli.display import make_status

        return make_status(name)
    if name == "help":
        return _help
    if name == "stats":
        from devmapper.cli.stats import stats

        return stats
    import importlib

    module, fn = _FN[name]
    return getattr(importlib.import_module(module), fn)


def _help(st: State, args: list[str], listed: Any, multiple: bool) -> bool:
    from devmapper.cli.usage import usage_text

    st.ctx.stderr.write(usage_text())
    if st.sw("columns"):
        from devmapper.cli.report import Report, ReportError

        try:
            Report(st.ctx, 0, "help", " ", headings=False)
        except ReportError:
            pass
    return True


def _lib_version() -> str:
    from devmapper import __version__

    return __version__


def main(argv: list[str] | None = None, transport: Transport | None = None,
         stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run dmsetup; returns its exit status (0 or 1, as LVM2's)."""
    from devmapper.cli.context import Ctx

    if argv is None:
        argv = sys.argv[1:]
    own_stdout = stdout is None
    if own_stdout:
        # Die of SIGPIPE and SIGINT like a C program, without a Python traceback.
        import signal

        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    ctx = Ctx(stdin or _stdin(), stdout or _stdout(), stderr or _stderr())
    captured: list[str] = []
    if not own_stdout:
        # Output goes through a buffer, as a C program's stdout into a pipe: an --exec
        # child's output, written straight to the descriptor, comes out first.
        import io

        real_out = ctx.stdout
        ctx.stdout = io.StringIO()
        ctx.child_output = captured
    try:
        return _main(ctx, argv, transport)
    finally:
        if not own_stdout:
            assert isinstance(ctx.stdout, io.StringIO)
            real_out.write("".join(captured) + ctx.stdout.getvalue())
        else:
            try:
                ctx.stdout.flush()
            except OSError:
                pass


def _stdin() -> TextIO:
    import io

    try:
        return io.TextIOWrapper(io.FileIO(0, closefd=False), encoding="utf-8",
                                errors="surrogateescape")
    except OSError:  # no stdin at all: read as empty, as from /dev/null
        return io.StringIO("")


def _stdout() -> TextIO:
    """Buffered like C's stdout: by line on a terminal, fully into pipes and files."""
    import io

    raw = io.FileIO(1, "w", closefd=False)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                            errors="surrogateescape", line_buffering=raw.isatty())


def _stderr() -> TextIO:
    import io

    return io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                            errors="surrogateescape", write_through=True)


def _transport_factory(ctx: Ctx, choice: str | None, dev_dir: str) -> Callable[[], Transport]:
    def make() -> Transport:
        from devmapper.cli import control

        backend = control.resolve(choice)
        if backend == "kernel":
            from devmapper.control.kernel import KernelTransport

            path, fd = control.open_control(dev_dir, ctx.log_error, ctx.log_verbose)
            return KernelTransport.from_fd(fd, path)
        from devmapper.backend import default_transport

        return default_transport(backend)
    return make


def _main(ctx: Ctx, argv: list[str], transport: Transport | None) -> int:
    dev_dir = os.environ.get("DM_DEV_DIR", "")
    if dev_dir:
        if not dev_dir.startswith("/"):
            ctx.log_error("Invalid DM_DEV_DIR environment variable value.")
            return 1
    else:
        dev_dir = "/dev/"
    from devmapper.cli.options import process_switches

    o = process_switches(argv, ctx.log_error)
    if o is None:
        ctx.log_error("Couldn't process command line.")
        return 1
    rc = _run(ctx, o, dev_dir, transport)
    return 0 if (o.sw.get("help") or o.sw.get("version")) else rc


def _run(ctx: Ctx, o: Any, dev_dir: str, transport: Transport | None) -> int:
    from devmapper.cli.usage import COMMANDS, usage_text

    ctx.verbose = o.sw.get("verbose", 0)
    if ctx.verbose > 2:
        ctx.start_clock()
    argv: list[str] = o.args
    # --help and --version skip the checks and set-up below, and always exit 0.
    switch = bool(o.sw.get("help") or o.sw.get("version"))
    if o.sw.get("help"):
        name = "help"
    elif o.sw.get("version"):
        name = "version"
    else:
        if o.command is None:
            ctx.stderr.write(usage_text())
            return 1
        name = o.command
        if name not in COMMANDS:
            ctx.log_error("Unknown command.")
            ctx.stderr.write(usage_text())
            return 1
        _h, min_args, max_args, _r = COMMANDS[name]
        if len(argv) < min_args or (max_args >= 0 and len(argv) > max_args):
            ctx.log_error("Incorrect number of arguments.")
            ctx.stderr.write(usage_text())
            return 1
    if name == "version" and _fast_version_ok(o, ctx, switch):
        from devmapper.cli.fastversion import version

        choice = o.backend or os.environ.get("DEVMAPPER_BACKEND") or None
        if version(ctx, dev_dir, choice, transport, _lib_version()):
            return 0
        ctx.log_error("Command failed.")
        return 0 if switch else 1
    rc = _run_state(ctx, o, dev_dir, transport, name, switch)
    return 0 if switch else rc


def _fast_version_ok(o: Any, ctx: Ctx, switch: bool) -> bool:
    """The set-up the full path does for the version command prints nothing here."""
    if ctx.verbose >= 2:
        return False
    return switch or not (o.sw.get("columns") or o.sw.get("options") or o.sw.get("tree")
                          or o.sw.get("count") or o.sw.get("interval")
                          or os.environ.get("DM_UDEV_COOKIE"))


def _run_state(ctx: Ctx, o: Any, dev_dir: str, transport: Transport | None, name: str,
               switch: bool) -> int:
    from devmapper.cli.usage import COMMANDS

    argv: list[str] = o.args
    st = _state(ctx, o, dev_dir, transport)
    if not switch:
        if name == "splitname" and not st.sw("columns"):
            o.sw["columns"] = 1
        if name == "mangle":
            st.lib.mangling = "none"
        from devmapper.cli.prepare import process_options, report_init, set_up_udev_support

        if not process_options(st, name):
            ctx.log_error("Couldn't process command line.")
            return 1
        set_up_udev_support(st, dev_dir)
        if st.sw("select") and COMMANDS[name][3] == 2:
            st.selection_cmd = name
            o.sw["columns"] = 1
            name = "info"
        if st.sw("columns") and name != "stats" and not report_init(st, name):
            return 1
    fn = command_fn(name)
    repeatable = COMMANDS[name][3]
    multiple = bool(repeatable and len(argv) != 1
                    and (argv or (not st.sw("uuid") and not st.sw("major"))))
    # --count N repeats the command N times (--interval alone: forever), reports every
    # --interval seconds (default 1).
    count = o.ints.get("count", 0) if o.sw.get("count") else 0
    if not count and (o.sw.get("count") or o.sw.get("interval")):
        count = -1
    count = 1 if switch else count or 1
    interval = o.ints.get("interval", 1) if o.sw.get("interval") else 1
    while True:
        ok = _perform(st, fn, repeatable, argv, multiple)
        if st.concise_output_produced:
            ctx.out("\n")
            ctx.stdout.flush()
        report = st.report
        if report is not None:
            report.output()
            if count != 1 and ok:
                ctx.out("\n")
                ctx.stdout.flush()
                import time

                time.sleep(interval)
        if not ok:
            ctx.log_debug("<backtrace>")
            return 1
        count -= 1
        if count == 0:
            return 0


def _state(ctx: Ctx, o: Any, dev_dir: str, transport: Transport | None) -> State:
    from devmapper.cli.lib import Lib
    from devmapper.cli.state import State

    choice = o.backend or os.environ.get("DEVMAPPER_BACKEND") or None
    lib = Lib(ctx, transport, None if transport else _transport_factory(ctx, choice, dev_dir),
              _lib_version())
    lib.dev_dir = dev_dir
    if o.mangling:
        lib.mangling = o.mangling
    return State(ctx, lib, o)


def _perform(st: State, fn: Callable[..., bool], repeatable: int, argv: list[str],
             multiple: bool) -> bool:
    """_perform_command_for_all_repeatable_args: stop at the first failure."""
    i = 0
    while True:
        if not fn(st, argv[i:], None, multiple):
            st.ctx.log_error("Command failed.")
            return False
        i += 1
        if not (repeatable and i < len(argv)):
            return True


if __name__ == "__main__":
    sys.exit(main())
