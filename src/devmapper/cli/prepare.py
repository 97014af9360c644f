"""Setting up a command after option parsing (dmsetup.c's main): -o for ls/deps and --tree,
udev synchronisation, and the column report."""

from __future__ import annotations

import os

from devmapper.cli.context import Ctx
from devmapper.cli.state import State


def process_options(st: State, name: str) -> bool:
    """_process_options: tree options with --tree, ls/deps name options otherwise."""
    o = st.o
    if st.sw("tree"):
        from devmapper.cli.tree import TreeOptions, parse_tree_options

        st.tree_opts = TreeOptions()
        return parse_tree_options(o.strs.get("options"), st.tree_opts, st.ctx.log_error,
                                  _utf8_locale(), _termwidth(st.ctx))
    if st.sw("columns") or not st.sw("options"):
        return True
    st.dev_name_type = "devno"
    text = o.strs.get("options", "")
    pos = 0
    while pos < len(text):
        end = text.find(",", pos)
        end = len(text) if end < 0 else end
        word = text[pos:end]
        if "devno".startswith(word):
            st.dev_name_type = "devno"
        elif "blkdevname".startswith(word):
            st.dev_name_type = "blk"
        elif "devname".startswith(word):
            st.dev_name_type = "map"
        else:
            st.ctx.log_error(f"Option not recognised: {text[pos:]}.")
            return False
        if end >= len(text):
            break
        pos = end + 1
    return True


def _utf8_locale() -> bool:
    """nl_langinfo(CODESET) after setlocale(LC_ALL, ""), as the C program would see it.

    Python coerces a C locale to C.UTF-8 at startup and exports LC_CTYPE; the process's
    initial environment (/proc/self/environ) shows what the user really set."""
    env = dict(os.environ)
    try:
        with open("/proc/self/environ", "rb") as f:
            initial = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        if "LC_CTYPE" in env and b"LC_CTYPE" not in initial and "LC_ALL" not in env:
            del env["LC_CTYPE"]
    except OSError:
        pass
    name = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or "C"
    import locale

    try:
        old = locale.setlocale(locale.LC_CTYPE)
        try:
            locale.setlocale(locale.LC_CTYPE, name)
            return locale.nl_langinfo(locale.CODESET) == "UTF-8"
        finally:
            locale.setlocale(locale.LC_CTYPE, old)
    except (locale.Error, ValueError):
        return False


def _termwidth(ctx: Ctx) -> int | None:
    try:
        import fcntl
        import struct
        import termios

        fd = ctx.stdout.fileno()
        raw = fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8))
        return struct.unpack("HHHH", raw)[1]
    except (OSError, AttributeError, ValueError, ImportError):
        return None


def set_up_udev_support(st: State, dev_dir: str) -> None:
    o = st.o
    if st.sw("noudevsync"):
        st.lib.udev_sync = False
    if not o.udev_cookie:
        env = os.environ.get("DM_UDEV_COOKIE", "")
        if env:
            from devmapper.cli.udev import parse_cookie

            cookie = parse_cookie(env)
            if cookie is None:
                st.ctx.log_error("Incorrect cookie value.")
            else:
                o.udev_cookie = cookie
                st.ctx.log_debug(f"Using udev transaction 0x{cookie:08X} defined by "
                                 "DM_UDEV_COOKIE environment variable.")
    elif st.sw("udevcookie"):
        st.ctx.log_debug(f"Using udev transaction 0x{o.udev_cookie:08X} defined by "
                         "--udevcookie option.")
    dirs_diff = dev_dir.rstrip("/") != "/dev"
    st.udev_only = not dirs_diff and bool(o.udev_cookie or not st.sw("verifyudev"))
    if dirs_diff:
        st.ctx.log_debug(f"The path {dev_dir} used for creating device nodes that is set "
                         "via DM_DEV_DIR environment variable differs from the path /dev/ "
                         "that is used by udev. All warnings about udev not working "
                         "correctly while processing particular nodes will be suppressed. "
                         "These nodes and symlinks will be managed in each directory "
                         "separately.")
        st.lib.udev_checking = False  # dm_udev_set_checking(0)
        st.ctx.log_debug("DM udev checking disabled")


def report_init(st: State, name: str) -> bool:
    from devmapper.cli.report import (
        DEFAULT_OPTIONS,
        DR_NAME,
        DR_TREE,
        SPLITNAME_OPTIONS,
        Report,
        ReportError,
    )

    o = st.o
    options = DEFAULT_OPTIONS
    if name == "splitname":
        options = SPLITNAME_OPTIONS
        st.report_type |= DR_NAME
    separator = " "
    aligned = headings = True
    prefixes = rows = False
    keys = ""
    if st.sw("noheadings"):
        separator, aligned, headings = ":", False, False
    if st.sw("rows"):
        rows = True
    if st.sw("nameprefixes"):
        aligned, prefixes = False, True
    if st.sw("options") and "options" in o.strs:
        opt = o.strs["options"]
        if "help" in opt:
            headings = False
        options = opt if not opt.startswith("+") else f"{options},{opt[1:]}"
    if st.sw("sort") and "sort" in o.strs:
        keys = o.strs["sort"]
        if name in ("status", "table"):
            st.ctx.log_error("--sort is not yet supported with status and table.")
            return False
    if st.sw("separator") and "separator" in o.strs:
        separator, aligned = o.strs["separator"], False
    selection = o.strs.get("select") if st.sw("select") else None
    try:
        st.report = Report(st.ctx, st.report_type, options, separator, aligned=aligned,
                           headings=headings, prefixes=prefixes,
                           quoted=not st.sw("unquoted"), rows=rows, keys=keys,
                           selection=selection)
    except ReportError:
        return False
    st.report_type = st.report.report_types
    if st.report_type & DR_TREE:
        from devmapper.cli.display import build_deptree

        build_deptree(st)
        if st.dtree is None:
            st.ctx.log_error("Internal device dependency tree creation failed.")
            return False
    return True
