"""dmsetup's switches (_process_switches): the same option table, values and diagnostics."""

from __future__ import annotations

import os
from collections.abc import Callable

from devmapper.cli.getopt import REQUIRED_ARG, GetoptError, LongOpt, getopt_long

SHORTOPTS = "cCfG:hj:m:M:no:O:rS:u:U:vy"
_R = REQUIRED_ARG
# LVM2's table, in its order (it decides the "possibilities" of an ambiguous prefix).
LONGOPTS = [LongOpt(n, a, n) for n, a in (
    ("readonly", 0), ("alias", _R), ("alldevices", 0), ("allprograms", 0), ("allregions", 0),
    ("area", 0), ("areas", _R), ("areasize", _R), ("bounds", _R), ("checks", 0),
    ("clear", 0), ("columns", 0), ("concise", 0), ("count", _R), ("deferred", 0),
    ("select", _R), ("exec", _R), ("filemap", 0), ("follow", _R), ("force", 0),
    ("foreground", 0), ("gid", _R), ("group", 0), ("groupid", _R), ("help", 0),
    ("histogram", 0), ("inactive", 0), ("interval", _R), ("length", _R), ("manglename", _R),
    ("major", _R), ("minor", _R), ("mode", _R), ("nameprefixes", 0), ("nogroup", 0),
    ("noflush", 0), ("noheadings", 0), ("nolockfs", 0), ("noopencount", 0), ("nosuffix", 0),
    ("notable", 0), ("notimesuffix", 0), ("udevcookie", _R), ("nomonitor", 0),
    ("noudevrules", 0), ("noudevsync", 0), ("options", _R), ("precise", 0),
    ("programid", _R), ("raw", 0), ("readahead", _R), ("region", 0), ("regions", _R),
    ("regionid", _R), ("relative", 0), ("retry", 0), ("rows", 0), ("segments", 0),
    ("separator", _R), ("setuuid", 0), ("showkeys", 0), ("sort", _R), ("start", _R),
    ("table", _R), ("target", _R), ("tree", 0), ("uid", _R), ("units", _R), ("uuid", _R),
    ("unbuffered", 0), ("unquoted", 0), ("userdata", _R), ("verbose", _R),
    ("verifyudev", 0), ("version", 0), ("yes", 0), ("addnodeonresume", 0),
    ("addnodeoncreate", 0),
    # devmapper's own, last: which driver answers.
    ("backend", _R),
)]
_SHORT = {"c": "columns", "C": "columns", "f": "force", "G": "gid", "h": "help",
          "j": "major", "m": "minor", "M": "mode", "n": "notable", "o": "options",
          "O": "sort", "r": "readonly", "S": "select", "u": "uuid", "U": "uid",
          "v": "verbose", "y": "yes"}
_INT_ARGS = {"areas", "major", "minor", "regionid", "groupid", "gid", "uid", "count",
             "interval"}
READ_AHEAD_AUTO = 0xFFFFFFFF  # UINT32_MAX
READ_AHEAD_NONE = 0


def atoi(text: str) -> int:
    """C atoi: leading blanks, sign, digits; anything else ends the number."""
    s = text.lstrip(" \t\n\v\f\r")
    sign = -1 if s[:1] == "-" else 1
    if s[:1] in "+-":
        s = s[1:]
    n = 0
    for ch in s:
        if not "0" <= ch <= "9":
            break
        n = n * 10 + ord(ch) - 48
    n *= sign
    return ((n + (1 << 31)) % (1 << 32)) - (1 << 31)


class Opts:
    def __init__(self) -> None:
        self.sw: dict[str, int] = {}
        self.ints: dict[str, int] = {}
        self.strs: dict[str, str] = {}
        self.uuid: str | None = None
        self.table: str | None = None
        self.target: str | None = None
        self.exec_cmd: str | None = None
        self.read_ahead_minimum = False
        self.udev_cookie = 0
        self.mangling: str | None = None
        self.backend: str | None = None
        self.command: str | None = None
        self.args: list[str] = []

    def on(self, name: str) -> int:
        return self.sw.get(name, 0)


def process_switches(argv: list[str], log_error: Callable[[str], None]) -> Opts | None:
    """Parse argv (without the program name); None after printing a diagnostic."""
    o = Opts()
    try:
        parsed, operands = getopt_long("dmsetup", argv, SHORTOPTS, LONGOPTS)
    except GetoptError as e:
        log_error(str(e))
        return None
    for key, value in parsed:
        name = _SHORT.get(key, key)
        o.sw[name] = o.sw.get(name, 0) + 1
        if value is None:
            continue
        if not _value(o, name, value, log_error):
            return None
    if (o.on("major") and not o.on("minor")) or (o.on("minor") and not o.on("major")):
        log_error("Please specify both major number and minor number.")
        return None
    if o.on("table") and o.on("notable"):
        log_error("--table and --notable are incompatible.")
        return None
    if o.on("addnodeonresume") and o.on("addnodeoncreate"):
        log_error("--addnodeonresume and --addnodeoncreate are incompatible.")
        return None
    if operands:
        if operands[0] == "stats":
            o.command = "stats"
        else:
            o.command = operands[0]
        o.args = operands[1:]
    return o


def _value(o: Opts, name: str, value: str, log_error: Callable[[str], None]) -> bool:
    if name in _INT_ARGS:
        o.ints[name] = atoi(value)
        if name == "count" and o.ints[name] < 0:
            log_error("Count must be zero or greater.")
            return False
        if name == "interval" and o.ints[name] <= 0:
            log_error("Interval must be a positive integer.")
            return False
    elif name == "verbose":
        pass  # --verbose takes (and ignores) an argument in LVM2's table
    elif name == "mode":
        return _mode(o, value, log_error)
    elif name == "uuid":
        o.uuid = value
    elif name == "table":
        o.table = value
    elif name == "target":
        o.target = value
    elif name == "exec":
        o.exec_cmd = value
    elif name == "manglename":
        mode = value.lower()
        if mode not in ("none", "auto", "hex"):
            log_error("Unknown name mangling mode.")
            return False
        o.mangling = mode
    elif name == "readahead":
        return _readahead(o, value, log_error)
    elif name == "udevcookie":
        from devmapper.cli.udev import parse_cookie

        cookie = parse_cookie(value)
        if cookie is None:
            log_error("Incorrect cookie value.")
        o.udev_cookie = cookie or 0
    elif name == "backend":
        o.backend = value
    else:
        o.strs[name] = value
    return True


def _mode(o: Opts, value: str, log_error: Callable[[str], None]) -> bool:
    import re

    m = re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-7]+", value)
    mode = int(value.strip(), 8) if m else 0
    err = ""
    if m and not -(1 << 63) <= mode < (1 << 63):
        err = os.strerror(34)
    if not m or err or not (mode & 0xFFFFFFFF):
        log_error(f"Invalid argument for --mode: {value}. {err}")
        return False
    o.ints["mode"] = mode
    return True


def _readahead(o: Opts, value: str, log_error: Callable[[str], None]) -> bool:
    low = value.lower()
    if low == "auto":
        o.ints["readahead"] = READ_AHEAD_AUTO
    elif low == "none":
        o.ints["readahead"] = READ_AHEAD_NONE
    else:
        if value.lstrip(" \t\n\v\f\r").startswith("+"):
            o.read_ahead_minimum = True
        n = atoi(value)
        if n < -1:
            log_error(f"Negative read ahead value ({n}) is not understood.")
            return False
        o.ints["readahead"] = n & 0xFFFFFFFF
    return True
