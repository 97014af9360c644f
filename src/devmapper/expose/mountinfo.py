"""/proc/self/mountinfo, parsed: which filesystems sit on which device, what is mounted where."""

from __future__ import annotations

from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    # The kernel octal-escapes space, tab, newline and backslash in paths.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Mount:
    mount_id: int
    dev: tuple[int, int]
    root: str
    mount_point: str
    fstype: str
    source: str
    options: str


def mounts(path: str = MOUNTINFO) -> list[Mount]:
    out = []
    with open(path) as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            fields, tail = left.split(" "), right.split(" ")
            major, minor = fields[2].split(":")
            out.append(
                Mount(
                    mount_id=int(fields[0]),
                    dev=(int(major), int(minor)),
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    fstype=tail[0],
                    source=_unescape(tail[1]) if len(tail) > 1 else "",
                    options=tail[2] if len(tail) > 2 else "",
                )
            )
    return out


def mounts_of_device(dev: tuple[int, int]) -> list[Mount]:
    return [m for m in mounts() if m.dev == dev]


def mounts_at(mount_point: str) -> list[Mount]:
    return [m for m in mounts() if m.mount_point == mount_point]
