#!/bin/python3
"""Record raw errno facts from the device-mapper ioctl interface, where dmsetup hides them.

Runs INSIDE the guest as root under Debian's /bin/python3 (stdlib only), against
/dev/mapper/control, with hand-built struct dm_ioctl buffers (layout: kernel-facts.md §1).
Prints one JSON document on stdout; scripts/record_dmsetup_fixtures.py stores it as
tests/fixtures/kernel_facts.json.

    /bin/python3 ioctl_facts.py WORKDIR      # WORKDIR: writable dir for loop backing files

Each fact: the request in words, the errno (0 = success) and, when the call succeeded, the
reply header fields the kernel wrote back. On failure the kernel copies back only the version,
so the other reply fields are left out.
"""

from __future__ import annotations

import errno as E
import fcntl
import json
import os
import stat
import struct
import subprocess
import sys
import time
from typing import Any

# A private control node: this kernel (6.1) accepts a device named "control", and udev then
# replaces /dev/mapper/control with a symlink to that block device.
CONTROL = "/dev/.dm-facts-control"
HDR = struct.Struct("=3IIIIiIIIQ128s129s7s")  # struct dm_ioctl, 312 bytes, native endian
assert HDR.size == 312
IOC_BASE = 0xC138FD00  # _IOWR(0xfd, nr, struct dm_ioctl) on x86

CMDS = {
    "VERSION": 0, "REMOVE_ALL": 1, "LIST_DEVICES": 2, "DEV_CREATE": 3, "DEV_REMOVE": 4,
    "DEV_RENAME": 5, "DEV_SUSPEND": 6, "DEV_STATUS": 7, "DEV_WAIT": 8, "TABLE_LOAD": 9,
    "TABLE_CLEAR": 10, "TABLE_DEPS": 11, "TABLE_STATUS": 12, "LIST_VERSIONS": 13,
    "TARGET_MSG": 14, "DEV_SET_GEOMETRY": 15, "DEV_ARM_POLL": 16, "GET_TARGET_VERSION": 17,
}  # fmt: skip

FLAG_NAMES = [
    "READONLY", "SUSPEND", "EXISTS", "PERSISTENT_DEV", "STATUS_TABLE", "ACTIVE_PRESENT",
    "INACTIVE_PRESENT", "bit7", "BUFFER_FULL", "SKIP_BDGET", "SKIP_LOCKFS", "NOFLUSH",
    "QUERY_INACTIVE_TABLE", "UEVENT_GENERATED", "UUID", "SECURE_DATA", "DATA_OUT",
    "DEFERRED_REMOVE", "INTERNAL_SUSPEND", "IMA_MEASUREMENT",
]  # fmt: skip
F = {name: 1 << i for i, name in enumerate(FLAG_NAMES)}

DM_MAJOR = 0
FACTS: list[dict[str, Any]] = []


def flag_names(flags: int) -> list[str]:
    return [n for i, n in enumerate(FLAG_NAMES) if flags & (1 << i)] + (
        [hex(flags & ~((1 << len(FLAG_NAMES)) - 1))] if flags >> len(FLAG_NAMES) else []
    )


def encode_dev(major: int, minor: int) -> int:
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_dev(dev: int) -> tuple[int, int]:
    return (dev & 0xFFF00) >> 8, (dev & 0xFF) | ((dev >> 12) & 0xFFF00)


def call(
    cmd: str,
    name: str | bytes = b"",
    uuid: str | bytes = b"",
    flags: int = 0,
    data: bytes = b"",
    *,
    dev: int = 0,
    event_nr: int = 0,
    target_count: int = 0,
    version: tuple[int, int, int] = (4, 0, 0),
    bufsize: int = 16384,
    data_size: int | None = None,
    nr: int | None = None,
) -> dict[str, Any]:
    """Issue one ioctl; return errno and (on success) the decoded reply header."""
    nb = name.encode() if isinstance(name, str) else name
    ub = uuid.encode() if isinstance(uuid, str) else uuid
    buf = bytearray(max(bufsize, HDR.size + len(data)))
    size = len(buf) if data_size is None else data_size
    # struct.pack pads short strings with NUL and truncates long ones: a 128-byte name fills
    # the field with no terminator, which is the point of the "too long" cases.
    buf[: HDR.size] = HDR.pack(
        *version, size, HDR.size, target_count, 0, flags, event_nr, 0, dev, nb, ub, b""
    )
    buf[HDR.size : HDR.size + len(data)] = data
    fd = os.open(CONTROL, os.O_RDWR)
    try:
        fcntl.ioctl(fd, IOC_BASE | (CMDS[cmd] if nr is None else nr), buf, True)
        err = 0
    except OSError as exc:
        err = exc.errno or -1
    finally:
        os.close(fd)
    f = HDR.unpack_from(buf)
    reply: dict[str, Any] = {"errno": err, "errno_name": E.errorcode.get(err, "OK")}
    reply["version_out"] = list(f[0:3])
    if err == 0:
        major, minor = decode_dev(f[10])
        reply.update(
            data_size=f[3],
            data_start=f[4],
            target_count=f[5],
            open_count=f[6],
            flags=f[7],
            flag_names=flag_names(f[7]),
            event_nr=f[8],
            dev=[major, minor],
            name=f[11].split(b"\0", 1)[0].decode(errors="replace"),
            uuid=f[12].split(b"\0", 1)[0].decode(errors="replace"),
        )
        reply["_payload"] = bytes(buf[f[4] : f[3]]) if f[3] > f[4] else b""
    return reply


def fact(key: str, request: str, reply: dict[str, Any], **extra: Any) -> dict[str, Any]:
    reply = dict(reply)
    reply.pop("_payload", None)
    entry = {"key": key, "request": request, **reply, **extra}
    FACTS.append(entry)
    return entry


def spec(start: int, length: int, ttype: str, params: str) -> bytes:
    """One dm_target_spec with params, padded so `next` lands on an 8-byte boundary."""
    p = params.encode() + b"\0"
    total = 40 + len(p)
    total += -total % 8
    return struct.pack("=QQiI16s", start, length, 0, total, ttype.encode()) + p.ljust(
        total - 40, b"\0"
    )


def load(
    name: str, targets: list[tuple[int, int, str, str]], count: int | None = None
) -> dict[str, Any]:
    data = b"".join(spec(*t) for t in targets)
    return call(
        "TABLE_LOAD", name, data=data, target_count=len(targets) if count is None else count
    )


def msg(name: str, sector: int, text: str) -> dict[str, Any]:
    return call("TARGET_MSG", name, data=struct.pack("=Q", sector) + text.encode() + b"\0")


def sh(cmd: str) -> str:
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout


def cleanup() -> None:
    subprocess.run("dmsetup remove_all --force >/dev/null 2>&1; udevadm settle", shell=True)


def create(name: str, table: str | None = None, uuid: str = "") -> None:
    r = call("DEV_CREATE", name, uuid)
    assert r["errno"] == 0, (name, r)
    if table is not None:
        start, length, ttype, *params = table.split(" ", 3)
        line = (int(start), int(length), ttype, params[0] if params else "")
        assert load(name, [line])["errno"] == 0
        assert call("DEV_SUSPEND", name)["errno"] == 0


def make_control() -> None:
    minor = 236
    with open("/proc/misc") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1] == "device-mapper":
                minor = int(parts[0])
    if os.path.exists(CONTROL):
        os.unlink(CONTROL)
    os.mknod(CONTROL, stat.S_IFCHR | 0o600, os.makedev(10, minor))


def run(workdir: str) -> None:  # noqa: PLR0915 - a flat list of experiments
    global DM_MAJOR
    make_control()
    cleanup()
    with open("/proc/devices") as devices:
        for line in devices:
            parts = line.split()
            if len(parts) == 2 and parts[1] == "device-mapper":
                DM_MAJOR = int(parts[0])
    img = os.path.join(workdir, "facts-loop.img")
    with open(img, "wb") as f:
        f.truncate(1 << 20)  # 2048 sectors
    loop = sh(f"losetup -f --show {img}").strip()
    st = os.stat(loop)
    loop_dev = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    # A loop device node that exists but has no backing file (open gives ENXIO).
    unbound = sh("losetup -f").strip()

    # ---------------------------------------------------------------- version check
    for v in [(4, 0, 0), (4, 47, 0), (4, 48, 0), (4, 99, 0), (3, 0, 0), (5, 0, 0), (4, 0, 99)]:
        fact(
            f"version_{v[0]}_{v[1]}_{v[2]}", f"VERSION with version {v}", call("VERSION", version=v)
        )
    # VERSION returns right after the version check, before reading the rest of the buffer.
    fact("version_data_size_304", "VERSION with data_size 304 (< 305)",
         call("VERSION", data_size=304), note="VERSION writes back only the version")  # fmt: skip
    fact("data_size_304", "LIST_DEVICES with data_size 304 (< 305)",
         call("LIST_DEVICES", data_size=304))  # fmt: skip
    fact("data_size_305", "LIST_DEVICES with data_size 305", call("LIST_DEVICES", data_size=305))
    fact("unknown_cmd_18", "ioctl nr 18 (one past GET_TARGET_VERSION)", call("VERSION", nr=18))
    fact("unknown_cmd_255", "ioctl nr 255", call("VERSION", nr=255))

    # ---------------------------------------------------------------- create
    # 128 before 127 and 129 before 128: the kernel may cut an unterminated field short, and
    # the shorter twin must not exist yet or the answer would be EBUSY.
    for key, nm in [
        ("create_empty_name", ""),
        ("create_name_slash", "/"),
        ("create_name_a_slash_b", "a/b"),
        ("create_name_control", "control"),
        ("create_name_dot", "."),
        ("create_name_dotdot", ".."),
        ("create_name_128", "n" * 128),
        ("create_name_127", "n" * 127),
    ]:
        fact(key, f"DEV_CREATE name={nm[:10]!r} (len {len(nm)})", call("DEV_CREATE", nm))
    fact(
        "create_uuid_129",
        "DEV_CREATE uuid of 129 chars (no NUL)",
        call("DEV_CREATE", "u129", "u" * 129),
    )
    fact("create_uuid_128", "DEV_CREATE uuid of 128 chars", call("DEV_CREATE", "u128", "u" * 128))
    fact("create_ok", "DEV_CREATE dup1 uuid=DUP-U", call("DEV_CREATE", "dup1", "DUP-U"))
    fact("create_dup_name", "DEV_CREATE dup1 again", call("DEV_CREATE", "dup1"))
    fact("create_dup_uuid", "DEV_CREATE dup2 uuid=DUP-U", call("DEV_CREATE", "dup2", "DUP-U"))
    fact("status_new_device", "DEV_STATUS of a new device without table",
         call("DEV_STATUS", "dup1"))  # fmt: skip
    used_minor = call("DEV_STATUS", "dup1")["dev"][1]
    fact(
        "create_persistent_minor_in_use",
        f"DEV_CREATE PERSISTENT_DEV minor {used_minor} (in use)",
        call(
            "DEV_CREATE", "pers1", flags=F["PERSISTENT_DEV"], dev=encode_dev(DM_MAJOR, used_minor)
        ),
    )
    fact(
        "create_persistent_free_minor",
        "DEV_CREATE PERSISTENT_DEV minor 200",
        call("DEV_CREATE", "pers2", flags=F["PERSISTENT_DEV"], dev=encode_dev(DM_MAJOR, 200)),
    )
    fact(
        "create_persistent_other_major",
        "DEV_CREATE PERSISTENT_DEV major 1 minor 201 (major ignored?)",
        call("DEV_CREATE", "pers3", flags=F["PERSISTENT_DEV"], dev=encode_dev(1, 201)),
    )
    fact(
        "create_persistent_big_minor",
        "DEV_CREATE PERSISTENT_DEV minor 1048575",
        call("DEV_CREATE", "pers4", flags=F["PERSISTENT_DEV"], dev=encode_dev(DM_MAJOR, 1048575)),
    )
    fact(
        "create_readonly_flag",
        "DEV_CREATE with READONLY flag",
        call("DEV_CREATE", "ro1", flags=F["READONLY"]),
    )
    fact("status_readonly_created", "DEV_STATUS of it", call("DEV_STATUS", "ro1"))
    fact(
        "status_both_name_uuid",
        "DEV_STATUS with name and uuid",
        call("DEV_STATUS", "dup1", "DUP-U"),
    )
    fact("status_by_uuid", "DEV_STATUS by uuid only", call("DEV_STATUS", "", "DUP-U"))
    fact("status_by_dev", "DEV_STATUS by dev only",
         call("DEV_STATUS", dev=encode_dev(DM_MAJOR, used_minor)))  # fmt: skip
    fact("status_missing", "DEV_STATUS of a missing name", call("DEV_STATUS", "nosuch"))
    fact("status_nothing", "DEV_STATUS with no name, uuid or dev", call("DEV_STATUS"))
    cleanup()

    # ---------------------------------------------------------------- TABLE_LOAD errors
    call("DEV_CREATE", "t")
    loads: list[tuple[str, str, list[tuple[int, int, str, str]], int | None]] = [
        ("load_ok_zero", "one zero target", [(0, 10, "zero", "")], None),
        ("load_gap", "gap between targets", [(0, 10, "zero", ""), (20, 10, "zero", "")], None),
        ("load_overlap", "overlapping targets", [(0, 10, "zero", ""), (5, 10, "zero", "")], None),
        ("load_not_at_0", "first target at 5", [(5, 10, "zero", "")], None),
        ("load_zero_length", "zero-length target", [(0, 0, "zero", "")], None),
        ("load_unknown_type", "unknown target type", [(0, 10, "frobnicate", "")], None),
        ("load_count_0", "target_count 0", [(0, 10, "zero", "")], 0),
        ("load_count_too_big", "target_count 1048577", [(0, 10, "zero", "")], 1048577),
        ("load_linear_no_offset", "linear with one arg", [(0, 10, "linear", loop)], None),
        ("load_linear_bad_offset", "linear offset 'x'", [(0, 10, "linear", f"{loop} x")], None),
        ("load_linear_no_args", "linear without args", [(0, 10, "linear", "")], None),
        ("load_linear_extra_arg", "linear 3 args", [(0, 10, "linear", f"{loop} 0 x")], None),
        ("load_linear_devt", "linear by major:minor", [(0, 10, "linear", f"{loop_dev} 0")], None),
        ("load_striped_indivisible", "striped length 15 over 2",
         [(0, 15, "striped", f"2 8 {loop} 0 {loop} 100")], None),
        ("load_striped_chunk", "striped 24 over 2 chunk 8",
         [(0, 24, "striped", f"2 8 {loop} 0 {loop} 100")], None),
        ("load_striped_missing_dev", "striped 2 with one device",
         [(0, 32, "striped", f"2 8 {loop} 0")], None),
        ("load_striped_0", "striped 0 stripes", [(0, 32, "striped", "0 8")], None),
        ("load_missing_unbound_loop", "linear on an unbound loop device (no file)",
         [(0, 10, "linear", f"{unbound} 0")], None),
        ("load_missing_path", "linear on /dev/nonexistent",
         [(0, 10, "linear", "/dev/nonexistent 0")], None),
        ("load_missing_devt", "linear on 7:200", [(0, 10, "linear", "7:200 0")], None),
        ("load_missing_dm_devt", "linear on dm minor 99",
         [(0, 10, "linear", f"{DM_MAJOR}:99 0")], None),
        ("load_past_end", "linear 4096 sectors on a 2048-sector device",
         [(0, 4096, "linear", f"{loop} 0")], None),
        ("load_offset_past_end", "linear offset 2040 len 10",
         [(0, 10, "linear", f"{loop} 2040")], None),
        ("load_zero_with_args", "zero with an argument", [(0, 10, "zero", "x")], None),
        ("load_error_with_args", "error with dev args", [(0, 10, "error", f"{loop} 0")], None),
        ("load_type_16_chars", "16-char target type (no NUL)", [(0, 10, "abcdefghijklmnop", "")],
         None),
    ]  # fmt: skip
    for key, what, targets, count in loads:
        call("TABLE_CLEAR", "t")
        fact(key, f"TABLE_LOAD on a new device: {what}", load("t", targets, count))
    call("TABLE_CLEAR", "t")
    t_minor = call("DEV_STATUS", "t")["dev"][1]
    # Raw ioctls bring no udev cookie, so no /dev/mapper link: use devtmpfs' /dev/dm-N.
    fact("load_self_path", "TABLE_LOAD t (new, no table): linear on its own /dev/dm-N",
         load("t", [(0, 8, "linear", f"/dev/dm-{t_minor} 0")]))  # fmt: skip
    fact("load_self_devt", "TABLE_LOAD t: linear on its own major:minor",
         load("t", [(0, 8, "linear", f"{DM_MAJOR}:{t_minor} 0")]))  # fmt: skip
    call("TABLE_CLEAR", "t")
    assert load("t", [(0, 8, "zero", "")])["errno"] == 0 and call("DEV_SUSPEND", "t")["errno"] == 0
    fact("reload_self_devt", "TABLE_LOAD t (has a live table): linear on itself",
         load("t", [(0, 8, "linear", f"{DM_MAJOR}:{t_minor} 0")]))  # fmt: skip
    fact("reload_self_status", "DEV_STATUS t after that (open count)", call("DEV_STATUS", "t"))
    # Never resumed: a live table mapping onto itself would loop I/O (udev probes it) forever.
    call("TABLE_CLEAR", "t")
    fact(
        "load_missing_device",
        "TABLE_LOAD on a missing device",
        load("nosuch", [(0, 1, "zero", "")]),
    )
    first = spec(0, 10, "zero", "")
    bad_next = first[:20] + struct.pack("=I", 0) + first[24:] + spec(10, 10, "zero", "")
    fact("load_bad_next", "TABLE_LOAD 2 targets, first spec next=0",
         call("TABLE_LOAD", "t", target_count=2, data=bad_next))  # fmt: skip
    # Device-area checks run in TABLE_LOAD only until the device's first successful load
    # (which fixes its type and queue limits); "t" has had loads, so use fresh devices.
    for key, what, target in [
        ("load_fresh_past_end", "linear 4096 sectors on a 2048-sector device",
         (0, 4096, "linear", f"{loop} 0")),
        ("load_fresh_offset_past_end", "linear offset 2040 len 10",
         (0, 10, "linear", f"{loop} 2040")),
        ("load_fresh_unbound_loop", "linear on an unbound loop device (size 0)",
         (0, 10, "linear", f"{unbound} 0")),
    ]:  # fmt: skip
        call("DEV_CREATE", "fresh")
        fact(key, f"first TABLE_LOAD of a new device: {what}", load("fresh", [target]))
        call("DEV_REMOVE", "fresh")
    # A later load whose device area is too small loads fine and fails at resume.
    call("TABLE_CLEAR", "t")
    assert load("t", [(0, 100, "linear", f"{loop} 0")])["errno"] == 0
    assert call("DEV_SUSPEND", "t")["errno"] == 0
    fact("reload_past_end", "TABLE_LOAD past end on a device with a live table",
         load("t", [(0, 4096, "linear", f"{loop} 0")]))  # fmt: skip
    fact("reload_past_end_resume", "DEV_SUSPEND (resume) to swap that table in",
         call("DEV_SUSPEND", "t"))  # fmt: skip
    fact("reload_past_end_status", "DEV_STATUS afterwards", call("DEV_STATUS", "t"))
    fact("reload_past_end_resume_again", "DEV_SUSPEND (resume) again", call("DEV_SUSPEND", "t"))
    cleanup()

    # ---------------------------------------------------------------- suspend / resume
    call("DEV_CREATE", "nt")
    fact("resume_no_table_unsuspended", "resume of a new device with no table",
         call("DEV_SUSPEND", "nt"))  # fmt: skip
    fact("suspend_no_table", "suspend of a device with no table",
         call("DEV_SUSPEND", "nt", flags=F["SUSPEND"]))  # fmt: skip
    fact("status_suspended_no_table", "DEV_STATUS", call("DEV_STATUS", "nt"))
    fact("resume_no_table_suspended", "resume of a suspended device with no table",
         call("DEV_SUSPEND", "nt"))  # fmt: skip
    fact("clear_no_inactive", "TABLE_CLEAR with no inactive table", call("TABLE_CLEAR", "nt"))
    fact("deps_no_table", "TABLE_DEPS with no table", call("TABLE_DEPS", "nt"))
    fact("table_status_no_table", "TABLE_STATUS with no table", call("TABLE_STATUS", "nt"))
    fact("msg_no_table", "TARGET_MSG to a device with no table", msg("nt", 0, "hello"))
    fact("wait_no_table", "DEV_WAIT event 5 on a device with no table (event_nr 0)",
         call("DEV_WAIT", "nt", event_nr=5))  # fmt: skip
    cleanup()

    # ---------------------------------------------------------------- remove
    create("o", "0 100 linear " + loop + " 0")
    create("o2", "0 10 zero")
    fd = os.open(f"/dev/dm-{call('DEV_STATUS', 'o')['dev'][1]}", os.O_RDONLY)
    try:
        fact("status_open", "DEV_STATUS of an open device", call("DEV_STATUS", "o"))
        fact("remove_open", "DEV_REMOVE of an open device", call("DEV_REMOVE", "o"))
        fact("remove_all_with_open", "REMOVE_ALL with one open device", call("REMOVE_ALL"))
        fact("list_after_remove_all", "DEV_STATUS of the open one after REMOVE_ALL",
             call("DEV_STATUS", "o"))  # fmt: skip
        fact("cancel_deferred_not_pending", "TARGET_MSG @cancel_deferred_remove, none pending",
             msg("o", 0, "@cancel_deferred_remove"))  # fmt: skip
        fact("remove_open_deferred", "DEV_REMOVE DEFERRED_REMOVE of an open device",
             call("DEV_REMOVE", "o", flags=F["DEFERRED_REMOVE"]))  # fmt: skip
        fact("status_deferred", "DEV_STATUS while removal is deferred", call("DEV_STATUS", "o"))
        fact("remove_deferred_again", "DEV_REMOVE DEFERRED_REMOVE again",
             call("DEV_REMOVE", "o", flags=F["DEFERRED_REMOVE"]))  # fmt: skip
        fact("cancel_deferred", "TARGET_MSG @cancel_deferred_remove while pending",
             msg("o", 0, "@cancel_deferred_remove"))  # fmt: skip
        fact("status_after_cancel", "DEV_STATUS after cancel", call("DEV_STATUS", "o"))
        call("DEV_REMOVE", "o", flags=F["DEFERRED_REMOVE"])
    finally:
        os.close(fd)
    time.sleep(0.5)
    fact("status_after_deferred_close", "DEV_STATUS after the last close",
         call("DEV_STATUS", "o"))  # fmt: skip
    fact("remove_missing", "DEV_REMOVE of a missing device", call("DEV_REMOVE", "nosuch"))
    create("o3", "0 10 zero")
    fact("remove_unopened_deferred", "DEV_REMOVE DEFERRED_REMOVE of an unopened device",
         call("DEV_REMOVE", "o3", flags=F["DEFERRED_REMOVE"]))  # fmt: skip
    fact("status_unopened_deferred", "DEV_STATUS of it afterwards", call("DEV_STATUS", "o3"))
    create("low", "0 100 linear " + loop + " 0")
    create("high", f"0 100 linear {DM_MAJOR}:{call('DEV_STATUS', 'low')['dev'][1]} 0")
    fact("remove_held_by_table", "DEV_REMOVE of a device used by another table",
         call("DEV_REMOVE", "low"))  # fmt: skip
    fact("status_held_by_table", "DEV_STATUS of it (open count)", call("DEV_STATUS", "low"))
    cleanup()

    # ---------------------------------------------------------------- rename
    create("r1", "0 10 zero")
    create("r2", "0 10 zero", uuid="R2-UUID")

    def rename(src: str, new: bytes, uuid: bool = False, **kw: Any) -> dict[str, Any]:
        return call("DEV_RENAME", src, flags=F["UUID"] if uuid else 0, data=new + b"\0", **kw)

    fact("rename_to_existing", "DEV_RENAME r1 -> r2 (exists)", rename("r1", b"r2"))
    fact("rename_missing_source", "DEV_RENAME nosuch -> x", rename("nosuch", b"x"))
    fact("rename_empty", "DEV_RENAME r1 -> ''", rename("r1", b""))
    fact("rename_slash", "DEV_RENAME r1 -> 'a/b'", rename("r1", b"a/b"))
    fact("rename_control", "DEV_RENAME r1 -> 'control'", rename("r1", b"control"))
    fact("rename_control_back", "DEV_RENAME control -> r1", rename("control", b"r1"))
    fact("rename_dot", "DEV_RENAME r1 -> '.'", rename("r1", b"."))
    rename(".", b"r1")
    fact("rename_127", "DEV_RENAME r1 -> 127 chars", rename("r1", b"m" * 127))
    fact("rename_back", "DEV_RENAME 127 chars -> r1", rename("m" * 127, b"r1"))
    fact("rename_128", "DEV_RENAME r1 -> 128 chars (fits the buffer)", rename("r1", b"m" * 128))
    fact("rename_same", "DEV_RENAME r1 -> r1", rename("r1", b"r1"))
    fact("rename_no_nul", "DEV_RENAME r1, new name not NUL-terminated in the buffer",
         call("DEV_RENAME", "r1", data=b"zz", bufsize=312 + 2))  # fmt: skip
    fact("rename_ok", "DEV_RENAME r1 -> r3", rename("r1", b"r3"))
    fact("status_after_rename", "DEV_STATUS r3 (event_nr)", call("DEV_STATUS", "r3"))
    fact("setuuid_ok", "DEV_RENAME r3 set uuid R3-UUID", rename("r3", b"R3-UUID", uuid=True))
    fact("setuuid_again", "DEV_RENAME r3 set uuid again", rename("r3", b"OTHER", uuid=True))
    fact("setuuid_existing_uuid", "DEV_RENAME r2 set uuid (r2 has one)",
         rename("r2", b"X-UUID", uuid=True))  # fmt: skip
    call("DEV_CREATE", "r4")
    fact(
        "setuuid_dup", "DEV_RENAME r4 set uuid R2-UUID (used)", rename("r4", b"R2-UUID", uuid=True)
    )
    fact("setuuid_129", "DEV_RENAME r4 set uuid of 129 chars", rename("r4", b"u" * 129, uuid=True))
    fact("setuuid_empty", "DEV_RENAME r4 set uuid ''", rename("r4", b"", uuid=True))
    fact("rename_by_uuid", "DEV_RENAME by uuid R2-UUID -> r5",
         call("DEV_RENAME", "", "R2-UUID", data=b"r5\0"))  # fmt: skip
    cleanup()

    # ---------------------------------------------------------------- target messages
    create("m", "0 100 linear " + loop + " 0")
    fact("msg_no_handler", "TARGET_MSG 'hello' to linear", msg("m", 0, "hello"))
    fact("msg_empty", "TARGET_MSG ''", msg("m", 0, ""))
    fact("msg_sector_outside", "TARGET_MSG sector 100 (table is 100 long)", msg("m", 100, "x"))
    fact("msg_missing_device", "TARGET_MSG to a missing device", msg("nosuch", 0, "hello"))
    fact("msg_core_unknown", "TARGET_MSG '@nosuch'", msg("m", 0, "@nosuch"))
    r = msg("m", 0, "@stats_list")
    fact("msg_stats_list", "TARGET_MSG '@stats_list'", r,
         payload=r.get("_payload", b"").split(b"\0", 1)[0].decode())  # fmt: skip
    r = msg("m", 0, "@stats_create - /1")
    fact("msg_stats_create", "TARGET_MSG '@stats_create - /1'", r,
         payload=r.get("_payload", b"").split(b"\0", 1)[0].decode())  # fmt: skip
    fact("msg_no_data", "TARGET_MSG with no dm_target_msg (data_start = data_size)",
         call("TARGET_MSG", "m", bufsize=312))  # fmt: skip
    cleanup()

    # ---------------------------------------------------------------- buffer too small
    for i in range(5):
        create(f"list{i}", "0 10 zero", uuid=f"LIST-UUID-{i}")
    r = call("LIST_DEVICES", bufsize=312 + 16)
    fact("list_devices_small", "LIST_DEVICES with a 16-byte payload area (5 devices)", r)
    r = call("LIST_DEVICES", bufsize=312)
    fact("list_devices_no_room", "LIST_DEVICES with data_size 312", r)
    r = call("LIST_DEVICES")
    fact("list_devices_ok", "LIST_DEVICES with 16 KiB", r,
         payload_len=len(r.get("_payload", b"")))  # fmt: skip
    r = call("LIST_DEVICES", flags=F["UUID"])
    fact("list_devices_uuid", "LIST_DEVICES with UUID flag", r,
         payload_len=len(r.get("_payload", b"")))  # fmt: skip
    r = call("LIST_DEVICES", name="list3")
    fact("list_devices_filter_name", "LIST_DEVICES with name 'list3' set", r,
         payload_len=len(r.get("_payload", b"")))  # fmt: skip
    create("big", None)
    many = [(i * 8, 8, "linear", f"{loop} {i * 8}") for i in range(64)]
    assert load("big", many)["errno"] == 0
    call("DEV_SUSPEND", "big")
    fact("table_status_small", "TABLE_STATUS STATUS_TABLE, 64 targets, 64-byte area",
         call("TABLE_STATUS", "big", flags=F["STATUS_TABLE"], bufsize=312 + 64))  # fmt: skip
    fact("table_status_no_room", "TABLE_STATUS STATUS_TABLE, 64 targets, data_size 312",
         call("TABLE_STATUS", "big", flags=F["STATUS_TABLE"], bufsize=312))  # fmt: skip
    r = call("TABLE_STATUS", "big", flags=F["STATUS_TABLE"], bufsize=65536)
    fact("table_status_ok", "TABLE_STATUS STATUS_TABLE, 64 targets, 64 KiB", r)
    fact("deps_small", "TABLE_DEPS with an 8-byte area", call("TABLE_DEPS", "big", bufsize=320))
    fact("versions_small", "LIST_VERSIONS with a 16-byte area",
         call("LIST_VERSIONS", bufsize=312 + 16))  # fmt: skip
    # The target name goes in the header's name field, not the payload.
    r = call("GET_TARGET_VERSION", name="linear")
    fact("get_target_version_linear", "GET_TARGET_VERSION name=linear", r,
         payload_len=len(r.get("_payload", b"")))  # fmt: skip
    fact("get_target_version_unknown", "GET_TARGET_VERSION name=nosuch",
         call("GET_TARGET_VERSION", name="nosuch"))  # fmt: skip
    fact("get_target_version_in_data", "GET_TARGET_VERSION, 'linear' in the payload, no name",
         call("GET_TARGET_VERSION", data=b"linear\0"))  # fmt: skip
    fact("status_inactive_none", "DEV_STATUS QUERY_INACTIVE_TABLE (no inactive table)",
         call("DEV_STATUS", "big", flags=F["QUERY_INACTIVE_TABLE"]))  # fmt: skip
    fact("table_status_inactive_none", "TABLE_STATUS QUERY_INACTIVE_TABLE (none)",
         call("TABLE_STATUS", "big", flags=F["QUERY_INACTIVE_TABLE"]))  # fmt: skip
    fact("remove_all", "REMOVE_ALL", call("REMOVE_ALL"),
         note="REMOVE_ALL writes back only the version: the rest is the request")  # fmt: skip
    cleanup()

    # ---------------------------------------------------------------- DEV_STATUS flags
    call("DEV_CREATE", "s")
    fact("dev_status_no_table", "DEV_STATUS of a new device (no table)", call("DEV_STATUS", "s"))
    load("s", [(0, 10, "zero", "")])
    fact("dev_status_inactive_only", "DEV_STATUS with only an inactive table",
         call("DEV_STATUS", "s"))  # fmt: skip
    call("DEV_SUSPEND", "s")
    fact("dev_status_live", "DEV_STATUS with a live table", call("DEV_STATUS", "s"))
    call("DEV_SUSPEND", "s", flags=F["SUSPEND"])
    fact("dev_status_suspended", "DEV_STATUS suspended", call("DEV_STATUS", "s"))
    call("DEV_SUSPEND", "s")
    fact("geometry_ok", "DEV_SET_GEOMETRY '100 4 32 0'",
         call("DEV_SET_GEOMETRY", "s", data=b"100 4 32 0\0"),
         note="SET_GEOMETRY writes nothing back but the version")  # fmt: skip
    fact("geometry_cyl_big", "DEV_SET_GEOMETRY '70000 4 32 0'",
         call("DEV_SET_GEOMETRY", "s", data=b"70000 4 32 0\0"))  # fmt: skip
    fact("geometry_short", "DEV_SET_GEOMETRY '100 4 32'",
         call("DEV_SET_GEOMETRY", "s", data=b"100 4 32\0"))  # fmt: skip
    fact("wait_differs", "DEV_WAIT event_nr 5 (current 0): returns at once",
         call("DEV_WAIT", "s", event_nr=5))  # fmt: skip
    fact("arm_poll", "DEV_ARM_POLL", call("DEV_ARM_POLL"))
    cleanup()
    subprocess.run(["losetup", "-d", loop])
    os.unlink(img)
    os.unlink(CONTROL)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    run(sys.argv[1])
    json.dump(
        {
            "format": 1,
            "about": "errno and reply headers of raw DM ioctls against the real kernel; "
            "see tests/kernel/ioctl_facts.py for each request",
            "ioctl_base": hex(IOC_BASE),
            "dm_major": DM_MAJOR,
            "facts": FACTS,
        },
        sys.stdout,
        indent=1,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
