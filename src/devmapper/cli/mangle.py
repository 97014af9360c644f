"""Name and uuid mangling (libdm-common.c): characters udev cannot carry become \\xNN.

Modes: "none" passes names through, "auto" mangles what needs it and unmangles what the
driver returns, "hex" mangles every character outside the whitelist. Errors are reported
through ``log`` with libdevmapper's text; functions return None on error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

NONE, AUTO, HEX = "none", "auto", "hex"
DM_NAME_LEN = 128
DM_UUID_LEN = 129

_WHITELIST = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#+-.:=@_")
_HEX2 = re.compile(rb"[0-9a-fA-F]{1,2}")

Log = Callable[[str], None]


def default_mode() -> str:
    """DM_DEFAULT_NAME_MANGLING_MODE, else the build default (auto, as Debian builds it)."""
    env = os.environ.get("DM_DEFAULT_NAME_MANGLING_MODE", "").lower()
    return env if env in (NONE, AUTO, HEX) else AUTO


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def check_multiple(s: str, what: str, mode: str, log: Log) -> bool:
    if mode == AUTO and "\\x5cx" in s:
        log(f'The {what} "{s}" seems to be mangled more than once. '
            "This is not allowed in auto mode.")
        return False
    return True


def mangle(s: str, what: str, mode: str, log: Log) -> str | None:
    """mangle_string: the mangled form (the same string when nothing needed mangling)."""
    raw = _enc(s)
    if not raw:
        return s
    if mode == NONE:
        mode = AUTO
    out = bytearray()
    need = -1  # -1 unknown, 0 already mangled/clean, 1 mangled here
    i = 0
    while i < len(raw):
        c = raw[i]
        if mode == AUTO and c == 0x5C and raw[i + 1:i + 2] == b"x":
            if len(raw) - i < 4 or need == 1:
                _mixed(s, what, log)
                return None
            out += raw[i:i + 4]
            i += 4
            need = 0
            continue
        if c in _WHITELIST:
            out.append(c)
        else:
            if mode != HEX and need == 0:
                _mixed(s, what, log)
                return None
            out += b"\\x%02x" % c
            need = 1
        i += 1
    # The result must fit libdm's buffer with its NUL: 128 bytes for names, 129 for uuids.
    if len(out) >= (DM_UUID_LEN if "UUID" in what else DM_NAME_LEN):
        log(f'Mangled form of the {what} too long for "{s}".')
        return None
    return _dec(bytes(out))


def _mixed(s: str, what: str, log: Log) -> None:
    log(f'The {what} "{s}" contains mixed mangled and unmangled characters '
        "or it's already mangled improperly.")


def unmangle(s: str, what: str, mode: str, log: Log) -> str | None:
    """unmangle_string; strict (any mode but none) rejects non-whitelisted characters."""
    raw = _enc(s)
    strict = mode != NONE
    out = bytearray()
    decoded = False
    i = 0
    while i < len(raw):
        c = raw[i]
        if strict and c not in _WHITELIST and c != 0x5C:
            log(f'The {what} "{s}" should be mangled but it contains blacklisted characters.')
            return None
        if c == 0x5C and raw[i + 1:i + 2] == b"x":
            m = _HEX2.match(raw, i + 2)
            if not m:
                # "Hex encoding mismatch": libdm keeps the prefix, or the whole string
                # when nothing was decoded yet.
                return _dec(bytes(out)) if decoded else s
            out.append(int(m.group(), 16))
            decoded = True
            i += 4
            continue
        out.append(c)
        i += 1
    return _dec(bytes(out))
