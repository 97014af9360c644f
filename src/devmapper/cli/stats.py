"""`dmsetup stats`: the command table, help and the listing commands.

Statistics regions are not implemented by devmapper: the engine keeps none, so list, print
and report show nothing (as LVM2's do for devices without regions), and the commands that
would create or change regions say they are unsupported.
"""

from __future__ import annotations

from devmapper.cli.state import Listed, State

SUBCOMMANDS = (
    ("help", ""),
    ("clear", "[--allregions|--regionid id] [--alldevices|<device>...] "),
    ("create", "[--start <start> [--length <len>]\n\t    [--areas <nr_areas>] "
               "[--areasize <size>] \n\t    [--programid <id>] [--userdata <data> ] \n"
               "\t    [--bounds histogram_boundaries] [--precise] \n\t    [--segments] "
               "[--alldevices|<device>...] "),
    ("create", "--filemap [--nogroup] [--nomonitor] [--follow mode]\n\t    [--programid <id>] "
               "[--userdata <data> ] \n\t    [--bounds histogram_boundaries] [--precise] "
               "<file_path>"),
    ("delete", "[--allprograms|--programid id] \n\t    [--allregions|--regionid id] \n"
               "\t    [--alldevices|<device>...] "),
    ("group", "[--alias NAME] --regions <regions>\n\t    [--allprograms|--programid id] "
              "[--alldevices|<device>...] "),
    ("list", "[--allprograms|--programid id] [--allregions|--regionid id] "),
    ("print", "[--clear] [--allprograms|--programid id] \n\t    [--allregions|--regionid id] "
              "\n\t    [--alldevices|<device>...] "),
    ("report", "[--interval <seconds>] [--count <cnt>]\n\t    [--units <u>] [--programid <id>] "
               "[--regionid <id>] \n\t    [-o <fields>] [-O|--sort <sort_fields>]\n"
               "\t    [-S|--select <selection>] [--nameprefixes]\n\t    [--noheadings] "
               "[--separator <separator>]\n\t    [--allprograms|--programid id] [<device>...]"),
    ("ungroup", "--groupid <id> [--allprograms|--programid id] \n\t    "
                "[--alldevices|<device>...] "),
    ("update_filemap", "--groupid <id> \n\t    [--nomonitor] [--follow mode] <file_path>"),
    ("version", ""),
)

_HEAD = """Usage:

dmsetup stats
        [-h|--help]
        [-v|--verbose [-v|--verbose ...]]
        [--areas <nr_areas>] [--areasize <size>]
        [--userdata <data>] [--clear]
        [--count <count>] [--interval <seconds>]
        [-o <fields>] [-O|--sort <sort_fields>]
\t      [--programid <id>]
        [--start <start>] [--length <length>]
        [--segments] [--units <units>]

"""
_TAIL = """
<device> may be device name or (if only one) -u <uuid> or -j <major> -m <minor>
<fields> are comma-separated.  Use 'help -c' for list.

"""


def usage_text() -> str:
    return _HEAD + "".join(f"\t{n} {h}\n" for n, h in SUBCOMMANDS) + _TAIL


def _help(st: State) -> None:
    from devmapper.cli.report import Report, ReportError

    st.ctx.stderr.write(usage_text())
    try:
        Report(st.ctx, 0, "help", " ", headings=False)
    except ReportError:
        pass


def stats(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    sub, rest = args[0], args[1:]
    names = {n for n, _h in SUBCOMMANDS}
    if sub not in names:
        st.ctx.log_error("Unknown stats command.")
        _help(st)
        return False
    if sub == "help":
        _help(st)
        return True
    if sub == "version":
        from devmapper.cli.display import version

        return version(st, rest, None, False)
    if sub in ("list", "print", "report"):
        return True  # no statistics regions anywhere: nothing to show
    st.ctx.log_error(f"dmsetup stats {sub}: statistics regions are not supported by "
                     "devmapper.")
    return False
