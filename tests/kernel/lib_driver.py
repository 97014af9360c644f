#!/bin/python3
"""The library against the real driver: every command over KernelTransport, in the guest.

Runs inside the QEMU guest (Debian's /bin/python3, the repository's src on sys.path) as one
process, so a single guest request covers every check: `lib_driver.py WORKDIR [NAME ...]`
prints {name: {"ok", "error", "seconds"}} as JSON. test_library_kernel.py imports CHECKS for
the names and asserts each result as its own test.

Each check starts with no mapped devices and ends by removing what it made; udevd is stopped
for the whole run (scenario_runner.udev_paused) so that no blkid opens our devices.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import stat
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parents[1] / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from scenario_runner import SECTOR, Backing, pattern, udev_paused  # noqa: E402

from devmapper import uapi  # noqa: E402
from devmapper.library import INITIAL_BUFFER, DeviceMapper, DMError, format_table  # noqa: E402
from devmapper.uapi import DM_IOCTL_SIZE, Cmd, DmIoctl, Flag, TargetSpec  # noqa: E402

CHECKS: dict[str, Callable[[Ctx], None]] = {}
#: Checks that fail because of a known bug outside this tier: the exact failure, for
#: xfail(strict=True) in test_library_kernel.py.
XFAIL: dict[str, str] = {}


def check(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    CHECKS[fn.__name__.removeprefix("check_")] = fn
    return fn


class Ctx:
    """What a check may use: the library on the real driver, loop devices, device nodes."""

    def __init__(self, dm: DeviceMapper, workdir: Path) -> None:
        self.dm = dm
        self.workdir = workdir
        self.loops: list[Backing] = []
        # dm.open() opens DM_DEV_DIR/mapper/NAME: our own nodes, udev being paused.
        self.dev_dir = workdir / "dev"
        (self.dev_dir / "mapper").mkdir(parents=True, exist_ok=True)
        control = self.dev_dir / "mapper" / "control"
        if not control.exists():  # as libdevmapper expects of a DM_DEV_DIR
            os.mknod(control, stat.S_IFCHR | 0o600, os.stat("/dev/mapper/control").st_rdev)
        os.environ["DM_DEV_DIR"] = str(self.dev_dir)
        self.dm_major = dm_major()

    def loop(self, sectors: int, fill: int | None = None) -> Backing:
        label = f"L{len(self.loops)}"
        b = Backing(label, self.workdir / f"lib-{label}.img", sectors, fill, self.workdir)
        self.loops.append(b)
        return b

    def node(self, name: str) -> str:
        """/DM_DEV_DIR/mapper/NAME for the device as it is now (made, or remade, here)."""
        info = self.dm.info(name)
        path = self.dev_dir / "mapper" / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(info.major, info.minor))
        return str(path)

    def cleanup(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.dm.remove_all()
            left = self.dm.list(with_uuid=False)
            if not left:
                break
            for d in left:
                for step in (self.dm.clear, self.dm.resume):
                    with contextlib.suppress(OSError):
                        step(d.name)
            time.sleep(0.05)
        for b in self.loops:
            with contextlib.suppress(OSError):
                b.detach()
            b.path.unlink()
        self.loops.clear()


def dm_major() -> int:
    with open("/proc/devices") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1] == "device-mapper":
                return int(parts[0])
    raise AssertionError("device-mapper is not in /proc/devices")


def errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except DMError as e:
        return e.errno or 0
    raise AssertionError("expected a DMError, the call succeeded")


def eq(got: Any, want: Any, what: str = "") -> None:
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def flags(names: list[str]) -> int:
    return sum(getattr(Flag, n) for n in names)


def raw(dm: DeviceMapper, cmd: int, hdr: DmIoctl, payload: bytes = b"",
        size: int = 16384) -> tuple[int, DmIoctl]:
    """One ioctl with a hand-made header: (errno, reply header)."""
    buf = uapi.build_request(hdr, payload, size)
    try:
        dm.transport.ioctl(cmd, buf)
        err = 0
    except OSError as e:
        err = e.errno or 0
    return err, DmIoctl.unpack(buf)


# ---------------------------------------------------------------- version and targets


@check
def check_version(c: Ctx) -> None:
    v = c.dm.version()
    if v[0] != 4 or v < (4, 47, 0):
        raise AssertionError(f"driver version {v}, want 4.47 or later")


@check
def check_version_mismatch_einval_and_version_written(c: Ctx) -> None:
    for version in [(4, 99, 0), (5, 0, 0), (3, 0, 0)]:
        err, out = raw(c.dm, Cmd.LIST_DEVICES, DmIoctl(version=version))
        eq(err, errno.EINVAL, f"version {version}")
        eq(out.version, c.dm.version(), "version written back")


@check
def check_unknown_command_enotty(c: Ctx) -> None:
    eq(raw(c.dm, 18, DmIoctl())[0], errno.ENOTTY, "ioctl nr 18")


@check
def check_targets_and_target_version(c: Ctx) -> None:
    listed: Any = c.dm.targets()  # (typed Any: DeviceMapper.list shadows list for mypy)
    targets = {t.name: t.version for t in listed}
    for name in ("linear", "striped", "zero", "error", "snapshot", "snapshot-origin",
                 "mirror"):
        if name not in targets:
            raise AssertionError(f"{name} missing from LIST_VERSIONS: {sorted(targets)}")
        eq(c.dm.target_version(name), targets[name], f"target_version({name})")
    eq(errno_of(lambda: c.dm.target_version("nosuch")), errno.EINVAL, "unknown target")


# ---------------------------------------------------------------- create


@check
def check_create_reports_a_fresh_device(c: Ctx) -> None:
    info = c.dm.create("fresh", uuid="FRESH-UUID")
    eq((info.name, info.uuid, info.major), ("fresh", "FRESH-UUID", c.dm_major), "identity")
    eq((info.open_count, info.event_nr, info.target_count), (0, 0, 0), "counts")
    eq((info.suspended, info.live_table, info.inactive_table), (False, False, False),
       "state")
    eq(c.dm.info(uuid="FRESH-UUID"), info, "info by uuid")
    eq(c.dm.info(dev=(info.major, info.minor)), info, "info by major:minor")
    err, _ = raw(c.dm, Cmd.DEV_STATUS, DmIoctl(name="fresh", uuid="FRESH-UUID"))
    eq(err, errno.EINVAL, "name and uuid together")
    eq(errno_of(lambda: c.dm.info("nosuch")), errno.ENXIO, "missing device")


@check
def check_create_persistent_minor(c: Ctx) -> None:
    info = c.dm.create("pm", "0 8 zero", minor=200, uuid="PM")
    eq((info.major, info.minor), (c.dm_major, 200), "persistent minor")
    eq(c.dm.info(dev=(c.dm_major, 200)).name, "pm", "lookup by dev")
    eq(errno_of(lambda: c.dm.create("pm2", minor=200)), errno.ENXIO, "minor in use")
    eq(c.dm.create("pm3", minor=(1 << 20) - 1).minor, (1 << 20) - 1, "largest minor")


@check
def check_create_errors(c: Ctx) -> None:
    c.dm.create("dup", uuid="DUP")
    eq(errno_of(lambda: c.dm.create("dup")), errno.EBUSY, "name in use")
    eq(errno_of(lambda: c.dm.create("dup2", uuid="DUP")), errno.EBUSY, "uuid in use")
    eq(errno_of(lambda: c.dm.create("a/b")), errno.EINVAL, "slash")
    eq(errno_of(lambda: c.dm.create("")), errno.EINVAL, "empty name")
    eq(c.dm.create("n" * 127, uuid="u" * 128).uuid, "u" * 128, "longest name and uuid")
    # A table that does not load leaves no device behind (the library removes it).
    eq(errno_of(lambda: c.dm.create("bad", "0 8 frobnicate")), errno.EINVAL, "bad table")
    eq([d.name for d in c.dm.list()], ["dup", "n" * 127], "devices left")


@check
def check_create_read_only(c: Ctx) -> None:
    info = c.dm.create("ro", "0 8 zero", read_only=True)
    eq((info.read_only, info.live_table, info.suspended), (True, True, False), "flags")
    c.dm.load("ro", "0 8 zero")
    eq(c.dm.info("ro", inactive=True).read_only, False, "inactive table read-write")
    eq(c.dm.resume("ro").read_only, False, "read-write after resume")


# ---------------------------------------------------------------- tables


@check
def check_load_reload_clear(c: Ctx) -> None:
    a = c.loop(2048)
    c.dm.create("t")
    info = c.dm.load("t", f"0 100 linear {a.devt} 0")
    eq((info.inactive_table, info.live_table), (True, False), "after load")
    eq(c.dm.table("t", inactive=True), [TargetSpec(0, 100, "linear", f"{a.devt} 0")],
       "inactive table")
    eq(c.dm.table("t"), [], "no live table")
    eq(c.dm.info("t", inactive=True).target_count, 1, "inactive target count")
    eq(c.dm.deps("t", inactive=True), [tuple(map(int, a.devt.split(":")))], "inactive deps")
    eq(c.dm.clear("t").inactive_table, False, "after clear")
    eq(c.dm.table("t", inactive=True), [], "cleared")
    c.dm.load("t", f"0 100 linear {a.devt} 0")
    info = c.dm.resume("t")
    eq((info.live_table, info.inactive_table, info.target_count), (True, False, 1), "resumed")
    c.dm.reload("t", f"0 50 linear {a.devt} 50\n50 50 zero")
    eq(len(c.dm.table("t")), 1, "live table unchanged before resume")
    eq(len(c.dm.table("t", inactive=True)), 2, "new inactive table")
    c.dm.resume("t")
    eq(format_table(c.dm.table("t")), f"0 50 linear {a.devt} 50\n50 50 zero\n", "swapped")
    eq(c.dm.table("t", secure=True), c.dm.table("t"), "secure table of linear/zero")
    eq([s.params for s in c.dm.status("t", noflush=True)], ["", ""], "status noflush")
    eq(errno_of(lambda: c.dm.load("t", "")), errno.EINVAL, "no targets")
    eq(errno_of(lambda: c.dm.load("nosuch", "0 8 zero")), errno.ENXIO, "missing device")
    eq(errno_of(lambda: c.dm.clear("nosuch")), errno.ENXIO, "clear missing")


@check
def check_suspend_resume_flags(c: Ctx) -> None:
    a = c.loop(1024)
    c.dm.create("s", f"0 512 linear {a.devt} 0")
    for noflush, lockfs in ((False, True), (True, True), (False, False), (True, False)):
        kw = f"noflush={noflush} lockfs={lockfs}"
        info = c.dm.suspend("s", noflush=noflush, lockfs=lockfs)
        eq(info.suspended, True, f"suspend {kw}")
        eq(c.dm.suspend("s", noflush=noflush, lockfs=lockfs).suspended, True, f"again {kw}")
        eq(c.dm.resume("s", noflush=noflush, lockfs=lockfs).suspended, False, f"resume {kw}")
    eq(c.dm.resume("s").suspended, False, "resume of a running device")
    c.dm.create("nt")
    c.dm.suspend("nt")
    eq(errno_of(lambda: c.dm.resume("nt")), errno.EINVAL, "resume without a table")
    eq(errno_of(lambda: c.dm.suspend("nosuch")), errno.ENXIO, "suspend missing")


@check
def check_suspend_lockfs_freezes_the_filesystem(c: Ctx) -> None:
    a = c.loop(8192)
    c.dm.create("fs", f"0 8192 linear {a.devt} 0")
    node = c.node("fs")
    mnt = c.workdir / "mnt"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mkfs.ext2", "-q", "-F", "-b", "4096", node], check=True,
                   capture_output=True)
    subprocess.run(["mount", "-t", "ext2", node, str(mnt)], check=True, capture_output=True)
    try:
        eq(c.dm.info("fs").open_count, 1, "mounted")
        data = pattern(500, 4096)
        (mnt / "f").write_bytes(data)  # in the page cache only
        c.dm.suspend("fs")  # lockfs: the filesystem is frozen, its data written first
        with open(a.node, "rb") as dev:
            on_disk = dev.read()
        c.dm.resume("fs")
        if data not in on_disk:
            raise AssertionError("suspend with lockfs did not write the file's data out")
        c.dm.suspend("fs", lockfs=False)
        c.dm.resume("fs", lockfs=False)
        c.dm.suspend("fs", noflush=True)
        c.dm.resume("fs", noflush=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@check
def check_large_table_buffer_full_retries(c: Ctx) -> None:
    a = c.loop(40000)
    n = 3000
    specs = [TargetSpec(i * 8, 8, "linear", f"{a.devt} {(n - 1 - i) * 8}") for i in range(n)]
    c.dm.create("big", specs)
    eq(c.dm.info("big").target_count, n, "target count")
    eq(c.dm.table("big"), specs, "table of 3000 targets")
    status = c.dm.status("big")
    eq((len(status), status[-1].start), (n, (n - 1) * 8), "status of 3000 targets")
    if c.dm._size_hint.get(Cmd.TABLE_STATUS, 0) <= INITIAL_BUFFER:
        raise AssertionError("TABLE_STATUS never came back with BUFFER_FULL")
    c.dm.load("big", specs[:500] + [TargetSpec(500 * 8, (n - 500) * 8, "zero", "")])
    eq(len(c.dm.table("big", inactive=True)), 501, "large inactive table")
    _info, lines = c.dm.wait("big", event_nr=99)  # differs: returns at once, with status
    eq(len(lines), n, "DEV_WAIT status of 3000 targets")
    # A tiny buffer gets BUFFER_FULL and no partial data from the kernel.
    hdr = DmIoctl(name="big", flags=Flag.STATUS_TABLE)
    err, out = raw(c.dm, Cmd.TABLE_STATUS, hdr, size=DM_IOCTL_SIZE + 64)
    eq((err, bool(out.flags & Flag.BUFFER_FULL)), (0, True), "64-byte buffer")


@check
def check_long_device_list_buffer_full_retries(c: Ctx) -> None:
    names = [f"dev-{i:03d}-" + "x" * 90 for i in range(200)]
    for i, name in reversed(list(enumerate(names))):  # created out of order
        # Few tables: a device without one has no gendisk yet in 6.1, so it is cheap.
        c.dm.create(name, "0 8 zero" if i % 10 == 0 else None,
                    uuid=f"UUID-{i:03d}-" + "u" * 90 if i % 3 else None)
    listed = c.dm.list()
    eq([d.name for d in listed], sorted(names), "all 200, in name order")
    for d in listed:
        i = int(d.name[4:7])
        eq(d.uuid, f"UUID-{i:03d}-" + "u" * 90 if i % 3 else None, f"uuid of {d.name}")
        eq((d.major, d.event_nr), (c.dm_major, 0), f"dev and event of {d.name}")
    if c.dm._size_hint.get(Cmd.LIST_DEVICES, 0) <= INITIAL_BUFFER:
        raise AssertionError("LIST_DEVICES never came back with BUFFER_FULL")
    eq({d.uuid for d in c.dm.list(with_uuid=False)}, {None}, "no uuids without the flag")
    c.dm.remove_all()
    eq(c.dm.list(), [], "remove_all")


@check
def check_buffer_full_retries_for_every_reply_with_data(c: Ctx) -> None:
    """Each command that answers with data, from a buffer too small for the answer: the
    kernel sets BUFFER_FULL, the library retries bigger and returns the whole answer."""
    a, b = c.loop(1024), c.loop(1024)
    c.dm.create("bf", f"0 100 linear {a.devt} 0\n100 100 linear {b.devt} 0", uuid="BF")
    for _ in range(3):
        c.dm.message("bf", 0, "@stats_create - /4")
    calls: dict[int, Callable[[DeviceMapper], object]] = {
        Cmd.LIST_DEVICES: lambda dm: dm.list(),
        Cmd.LIST_VERSIONS: lambda dm: dm.targets(),
        Cmd.TABLE_DEPS: lambda dm: dm.deps("bf"),
        Cmd.TABLE_STATUS: lambda dm: (dm.table("bf"), dm.status("bf")),
        Cmd.DEV_WAIT: lambda dm: dm.wait("bf", event_nr=99)[1],
        Cmd.TARGET_MSG: lambda dm: dm.message("bf", 0, "@stats_list"),
    }
    tiny = DM_IOCTL_SIZE + 8
    for cmd, call in calls.items():
        want = call(c.dm)
        small = DeviceMapper(c.dm.transport)  # shares the control fd; not closed here
        small._size_hint[cmd] = tiny
        eq(call(small), want, f"{Cmd(cmd).name} from a {tiny}-byte buffer")
        if small._size_hint[cmd] <= tiny:
            raise AssertionError(f"{Cmd(cmd).name}: no BUFFER_FULL from a {tiny}-byte buffer")


@check
def check_list_event_numbers_and_empty_list(c: Ctx) -> None:
    eq(c.dm.list(), [], "empty")
    c.dm.create("e1", "0 8 zero", uuid="E1")
    c.dm.create("e2")
    c.dm.rename("e1", "e0")  # a live table: an event
    c.dm.rename("e2", "e3")  # no table: none
    eq([(d.name, d.event_nr, d.uuid) for d in c.dm.list()],
       [("e0", 1, "E1"), ("e3", 0, None)], "list")
    # 6.1 filters by prefix when a name or uuid is given.
    c.dm.create("e00", uuid="E00")
    eq([d.name for d in c.dm.list(name_prefix="e0")], ["e0", "e00"], "name prefix")
    eq([d.name for d in c.dm.list(uuid_prefix="E0")], ["e00"], "uuid prefix")
    eq(c.dm.list(name_prefix="zz"), [], "no match")


@check
def check_deps(c: Ctx) -> None:
    a, b = c.loop(1024), c.loop(1024)
    c.dm.create("d", f"0 100 linear {a.devt} 0\n100 100 linear {b.devt} 0\n"
                     f"200 100 linear {a.devt} 200")
    want = [tuple(map(int, x.devt.split(":"))) for x in (b, a)]  # most recently added first
    eq(c.dm.deps("d"), want, "deps")
    info = c.dm.info("d")
    c.dm.create("up", f"0 100 linear {info.major}:{info.minor} 0")
    eq(c.dm.deps("up"), [(info.major, info.minor)], "deps of a stacked device")
    c.dm.create("z", "0 8 zero")
    eq(c.dm.deps("z"), [], "no deps")


# ---------------------------------------------------------------- messages, rename, remove


@check
def check_messages(c: Ctx) -> None:
    a = c.loop(1024)
    c.dm.create("m", f"0 100 linear {a.devt} 0")
    eq(errno_of(lambda: c.dm.message("m", 0, "hello")), errno.EINVAL, "no handler")
    eq(errno_of(lambda: c.dm.message("m", 100, "hello")), errno.EINVAL, "sector outside")
    eq(errno_of(lambda: c.dm.message("m", 0, "")), errno.EINVAL, "empty message")
    eq(errno_of(lambda: c.dm.message("m", 0, "@nosuch")), errno.EINVAL, "unknown core msg")
    eq(errno_of(lambda: c.dm.message("nosuch", 0, "x")), errno.ENXIO, "missing device")
    stats = c.dm.message("m", 0, "@stats_create - /1")
    eq(stats, "0", "@stats_create answers the region id (DATA_OUT)")
    listed = c.dm.message("m", 0, "@stats_list")
    if not listed or not listed.startswith("0: 0+100 100"):
        raise AssertionError(f"@stats_list: {listed!r}")
    c.dm.create("n")
    eq(errno_of(lambda: c.dm.message("n", 0, "x")), errno.EINVAL, "no live table")


@check
def check_rename_and_set_uuid(c: Ctx) -> None:
    c.dm.create("r1", "0 8 zero")
    c.dm.create("r2", uuid="R2")
    info = c.dm.rename("r1", "r1b")
    # The kernel answers with the name it found the device under, not the new one.
    eq((info.name, info.event_nr), ("r1", 1), "rename reply")
    eq(c.dm.info("r1b").event_nr, 1, "renamed device")
    eq(errno_of(lambda: c.dm.info("r1")), errno.ENXIO, "old name gone")
    eq(errno_of(lambda: c.dm.rename("r1b", "r2")), errno.EBUSY, "to an existing name")
    eq(errno_of(lambda: c.dm.rename("nosuch", "x")), errno.ENXIO, "missing source")
    eq(errno_of(lambda: c.dm.rename("r1b", "")), errno.EINVAL, "empty new name")
    eq(errno_of(lambda: c.dm.rename("r1b", "a/b")), errno.EINVAL, "slash")
    # DEV_RENAME finds its device by name only (dm_hash_rename): a uuid alone is ENXIO.
    eq(errno_of(lambda: c.dm.rename(uuid="R2", new_name="r2b")), errno.ENXIO, "by uuid")
    eq(c.dm.rename("r1b", new_uuid="R1").uuid, "", "set-uuid reply: the old (empty) uuid")
    eq(c.dm.info("r1b").uuid, "R1", "uuid set")
    eq(errno_of(lambda: c.dm.rename("r1b", new_uuid="R3")), errno.EINVAL, "uuid already set")
    c.dm.create("r4")
    eq(errno_of(lambda: c.dm.rename("r4", new_uuid="R2")), errno.EBUSY, "uuid taken")
    eq(errno_of(lambda: c.dm.rename("r4", new_uuid="u" * 129)), errno.EINVAL, "uuid too long")


@check
def check_remove_open_deferred_and_cancel(c: Ctx) -> None:
    a = c.loop(1024)
    c.dm.create("o", f"0 100 linear {a.devt} 0")
    c.node("o")
    handle = c.dm.open("o")
    try:
        eq(c.dm.info("o").open_count, 1, "open")
        eq(errno_of(lambda: c.dm.remove("o")), errno.EBUSY, "remove of an open device")
        eq(c.dm.message("o", 0, "@cancel_deferred_remove"), None, "cancel, none pending")
        c.dm.remove("o", deferred=True)
        eq(c.dm.info("o").deferred_remove, True, "deferred")
        c.dm.message("o", 0, "@cancel_deferred_remove")
        eq(c.dm.info("o").deferred_remove, False, "cancelled")
        c.dm.remove("o", deferred=True)
        c.dm.remove_all()
        eq(c.dm.info("o").deferred_remove, True, "still there after remove_all")
    finally:
        handle.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and c.dm.list():
        time.sleep(0.02)
    eq(c.dm.list(), [], "removed at the last close")
    eq(errno_of(lambda: c.dm.remove("o")), errno.ENXIO, "remove of a missing device")


@check
def check_remove_all_keeps_open_devices(c: Ctx) -> None:
    a = c.loop(1024)
    c.dm.create("low", f"0 100 linear {a.devt} 0")
    low = c.dm.info("low")
    c.dm.create("high", f"0 100 linear {low.major}:{low.minor} 0")
    c.dm.create("k")
    c.dm.create("held", "0 8 zero")
    c.node("held")
    handle = c.dm.open("held")
    try:
        eq(c.dm.info("low").open_count, 1, "held by a table")
        eq(errno_of(lambda: c.dm.remove("low")), errno.EBUSY, "remove of a held device")
        c.dm.remove_all()  # removes high, then low in a later pass
        eq([d.name for d in c.dm.list()], ["held"], "only the open device is left")
    finally:
        handle.close()
    c.dm.remove_all()
    eq(c.dm.list(), [], "all gone")


# ---------------------------------------------------------------- events


class Forked:
    """fn run in a forked child: cheap (no new interpreter under TCG), killed if it hangs."""

    def __init__(self, fn: Callable[[], str]) -> None:
        self._r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: report and leave without the parent's cleanups
            os.close(self._r)
            try:
                out = fn()
            except BaseException as e:  # noqa: BLE001
                out = f"child failed: {e!r}"
            os.write(w, out.encode())
            os._exit(0)
        os.close(w)

    def sleeps_in(self, wchan: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(f"/proc/{self.pid}/wchan") as f:
                if f.read() == wchan:
                    return True
            time.sleep(0.02)
        return False

    def result(self, timeout: float) -> tuple[str, bool]:
        """What the child wrote, and whether it finished within `timeout`."""
        try:
            done = bool(select.select([self._r], [], [], timeout)[0])
            if not done:
                os.kill(self.pid, 9)
            chunks = []
            while chunk := os.read(self._r, 65536):
                chunks.append(chunk)
            return b"".join(chunks).decode(), done
        finally:
            os.close(self._r)
            os.waitpid(self.pid, 0)


@check
def check_wait_for_event(c: Ctx) -> None:
    from devmapper.control.kernel import KernelTransport

    c.dm.create("w", "0 8 zero")

    def wait() -> str:
        info, lines = DeviceMapper(KernelTransport()).wait("w", event_nr=0)
        types: Any = lines
        return " ".join([str(info.event_nr), info.name, *[s.target_type for s in types]])

    # The waiter is another process: DEV_WAIT blocks (and see wait_in_a_thread below).
    child = Forked(wait)
    asleep = child.sleeps_in("dm_wait_event")
    c.dm.rename("w", "w2")
    eq((asleep, child.result(30)), (True, ("1 w zero", True)), "DEV_WAIT woken by rename")
    info, lines = c.dm.wait("w2", event_nr=5)  # differs from the current number: at once
    eq((info.event_nr, len(lines)), (1, 1), "DEV_WAIT with another number")


@check
def check_wait_in_a_thread_leaves_other_threads_running(c: Ctx) -> None:
    from devmapper.control.kernel import KernelTransport

    c.dm.create("wt", "0 8 zero")

    def threaded() -> str:
        dm = DeviceMapper(KernelTransport())
        t = threading.Thread(target=dm.wait, args=("wt",), kwargs={"event_nr": 0},
                             daemon=True)
        t.start()
        time.sleep(0.5)  # the waiter is in DEV_WAIT by now, unless the main thread is stuck
        DeviceMapper(KernelTransport()).rename("wt", "wt2")
        t.join(10)
        return "main thread ran, waiter " + ("woke" if not t.is_alive() else "still blocked")

    eq(Forked(threaded).result(8), ("main thread ran, waiter woke", True),
       "threads during DEV_WAIT")


@check
def check_arm_poll_and_poll(c: Ctx) -> None:
    p = select.poll()
    p.register(c.dm.fileno(), select.POLLIN)
    c.dm.arm_poll()
    eq(p.poll(0), [], "armed, no event yet")
    c.dm.create("ev")
    eq(bool(p.poll(1000)), True, "create is an event")
    c.dm.arm_poll()
    eq(p.poll(0), [], "re-armed")
    c.dm.info("ev")
    c.dm.load("ev", "0 8 zero")
    eq(p.poll(0), [], "status and load are not events")
    c.dm.resume("ev")
    eq(bool(p.poll(1000)), True, "resume is an event")
    c.dm.arm_poll()
    c.dm.rename("ev", "ev2")
    eq(bool(p.poll(1000)), True, "rename is an event")
    c.dm.arm_poll()
    c.dm.remove("ev2")
    eq(bool(p.poll(1000)), True, "remove is an event")


# ---------------------------------------------------------------- geometry, I/O, errno


HDIO_GETGEO = 0x0301
_HD_GEOMETRY = struct.Struct("@BBHL")  # heads, sectors, cylinders, start


def getgeo(node: str) -> tuple[int, int, int, int]:
    """(cylinders, heads, sectors, start) as the block device reports them."""
    fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(_HD_GEOMETRY.size)
        fcntl.ioctl(fd, HDIO_GETGEO, buf)
    finally:
        os.close(fd)
    heads, sectors, cylinders, start = _HD_GEOMETRY.unpack(buf)
    return cylinders, heads, sectors, start


@check
def check_geometry(c: Ctx) -> None:
    c.dm.create("g", "0 2048 zero")
    node = c.node("g")
    eq(getgeo(node), (0, 0, 0, 0), "no geometry set")
    c.dm.set_geometry("g", 100, 4, 32, 8)
    eq(getgeo(node), (100, 4, 32, 8), "HDIO_GETGEO after set")
    c.dm.set_geometry("g", 65535, 255, 255, 0)
    eq(getgeo(node), (65535, 255, 255, 0), "largest geometry")
    for bad in [(65536, 4, 32), (100, 256, 32), (100, 4, 256)]:
        def set_bad(bad: tuple[int, int, int] = bad) -> None:
            c.dm.set_geometry("g", *bad, 0)

        eq(errno_of(set_bad), errno.EINVAL, f"geometry {bad}")
    err, _ = raw(c.dm, Cmd.DEV_SET_GEOMETRY, DmIoctl(name="g"), b"100 4 32\0")
    eq(err, errno.EINVAL, "three numbers")
    eq(getgeo(node), (65535, 255, 255, 0), "a failed set changes nothing")
    eq(errno_of(lambda: c.dm.set_geometry("nosuch", 1, 1, 1, 0)), errno.ENXIO, "missing")


@check
def check_open_and_block_io(c: Ctx) -> None:
    a = c.loop(2048)
    c.dm.create("io", f"0 1024 linear {a.devt} 512")
    c.node("io")
    with c.dm.open("io") as blk:
        eq(blk.size, 1024 * SECTOR, "size")
        eq(c.dm.info("io").open_count, 1, "open count")
        data = pattern(501, 8192)
        blk.write(4096, memoryview(data))
        blk.flush()
        eq(blk.read(4096, 8192), data, "read back")
    eq(c.dm.info("io").open_count, 0, "closed")
    with open(a.node, "rb") as dev:
        dev.seek(512 * SECTOR + 4096)
        eq(dev.read(8192), data, "on the loop device at the linear offset")


@check
def check_data_size_too_small_einval(c: Ctx) -> None:
    buf = uapi.build_request(DmIoctl(), b"", 400)
    struct.pack_into("=I", buf, 12, 304)  # data_size below the 305-byte minimum
    try:
        c.dm.transport.ioctl(Cmd.LIST_DEVICES, buf)
    except OSError as e:
        eq(e.errno, errno.EINVAL, "data_size 304")
    else:
        raise AssertionError("data_size 304 accepted")


# ---------------------------------------------------------------- driver


def run(names: list[str], workdir: Path) -> dict[str, Any]:
    from devmapper.control.kernel import KernelTransport

    out: dict[str, Any] = {}
    with DeviceMapper(KernelTransport()) as dm:
        ctx = Ctx(dm, workdir)
        ctx.cleanup()
        for name in names:
            t = time.monotonic()
            result: dict[str, Any]
            try:
                CHECKS[name](ctx)
                result = {"ok": True, "error": None}
            except Exception:  # noqa: BLE001 - every failure is reported, none stops the run
                result = {"ok": False, "error": traceback.format_exc()}
            try:
                ctx.cleanup()
            except Exception:  # noqa: BLE001
                if result["ok"]:
                    result = {"ok": False, "error": "cleanup: " + traceback.format_exc()}
            result["seconds"] = round(time.monotonic() - t, 3)
            out[name] = result
    return out


@contextlib.contextmanager
def _timed(out: dict[str, Any]) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    out["_seconds"] = round(time.monotonic() - t0, 3)


def main(argv: list[str]) -> int:
    workdir = Path(argv[0])
    names = argv[1:] or list(CHECKS)
    out: dict[str, Any] = {}
    with udev_paused(), _timed(out):
        out.update(run(names, workdir))
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
