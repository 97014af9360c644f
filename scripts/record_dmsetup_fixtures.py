#!/usr/bin/env python3
"""Record ground-truth transcripts of the real LVM2 dmsetup against the real kernel.

Boots Debian's kernel once under QEMU (tests/kernel/guest.py), runs every scenario below with
/usr/sbin/dmsetup (LVM2 1.02.185) inside it, and writes one JSON fixture per scenario to
tests/fixtures/dmsetup/. Machine-specific values (loop device paths and numbers, the dm block
major, the scenario's directory) are replaced by placeholders so that the same fixture can be
replayed against our own dmsetup + engine on the host. The format is documented in
tests/fixtures/dmsetup/README.md.

Also runs tests/kernel/ioctl_facts.py in the guest and writes tests/fixtures/kernel_facts.json.

    python scripts/record_dmsetup_fixtures.py              # everything: one boot, ~35 min
    python scripts/record_dmsetup_fixtures.py create_uuid  # only the named scenarios
    python scripts/record_dmsetup_fixtures.py --list
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shlex
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "kernel"))

from guest import Guest, GuestTimeout, Result  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "dmsetup"
FACTS_OUT = ROOT / "tests" / "fixtures" / "kernel_facts.json"
FACTS_SCRIPT = ROOT / "tests" / "kernel" / "ioctl_facts.py"
DMSETUP = "/usr/sbin/dmsetup"
FORMAT_VERSION = 1
MIB = 1 << 20
DEFAULT_TIMEOUT = 60.0
UNBOUND = 0  # loop "size" meaning: a free loop device node with no file attached

# ----------------------------------------------------------------------------- scenario model


@dataclass
class Step:
    """Either a dmsetup invocation (argv) or a neutral action the replayer must perform."""

    argv: list[str] | None = None
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    background: str | None = None  # start without waiting; a later `join` action collects it
    action: dict[str, Any] | None = None
    note: str | None = None
    # Seconds before the recorder kills the step; a step expected to hang says so with a
    # short timeout and is recorded with "timed_out": true and what it printed until then.
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class Scenario:
    name: str
    description: str
    steps: list[Step]
    # Backing files attached to loop devices in order: LOOP0, LOOP1, ... (bytes, sector size).
    loops: list[tuple[int, int]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # created in the scenario dir
    dirs: list[str] = field(default_factory=list)

    @classmethod
    def from_fixture(cls, fx: dict[str, Any]) -> Scenario:
        """Rebuild the scenario from a recorded fixture (the fixture alone is replayable)."""
        steps = []
        for st in fx["steps"]:
            if "action" in st:
                steps.append(Step(action=dict(st)))
                continue
            steps.append(
                Step(
                    argv=list(st["argv"]),
                    stdin=st["stdin"],
                    env=dict(st.get("env") or {}),
                    background=st.get("background"),
                    note=st.get("note"),
                    timeout=st.get("timeout", DEFAULT_TIMEOUT),
                )
            )
        setup = fx["setup"]
        return cls(
            fx["name"],
            fx["description"],
            steps,
            loops=[
                (UNBOUND, 0) if lp.get("unbound") else (lp["size"], lp["sector_size"])
                for lp in setup["loops"]
            ],
            files=dict(setup["files"]),
            dirs=list(setup["dirs"]),
        )


def compare(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Differences in rc/stdout/stderr between two recordings of one scenario."""
    diffs = []
    for n, (e, a) in enumerate(zip(expected["steps"], actual["steps"], strict=True)):
        if "argv" not in e:
            continue
        for key in ("rc", "timed_out", "stdout", "stderr", "stdout_b64", "stderr_b64"):
            if e.get(key) != a.get(key):
                diffs.append(f"step {n} {e['argv']} {key}: {e.get(key)!r} != {a.get(key)!r}")
    return diffs


def dm(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
       bg: str | None = None, note: str | None = None,
       timeout: float = DEFAULT_TIMEOUT) -> Step:  # fmt: skip
    return Step(argv=["dmsetup", *args], stdin=stdin, env=env or {}, background=bg, note=note,
                timeout=timeout)  # fmt: skip


def hold(device: str, hid: str) -> Step:
    """Keep /dev/mapper/<device> open (open count + 1) until release(hid)."""
    return Step(action={"action": "hold_open", "device": device, "id": hid})


def release(hid: str) -> Step:
    return Step(action={"action": "release", "id": hid})


def join(bid: str) -> Step:
    """Wait for the background step `bid` to finish; its result is recorded on that step."""
    return Step(action={"action": "join", "id": bid})


def sleep(seconds: float) -> Step:
    return Step(action={"action": "sleep", "seconds": seconds})


def loops(*sizes: int) -> list[tuple[int, int]]:
    return [(s, 512) for s in sizes]


LIN0 = "0 100 linear {LOOP0} 0"
ZERO = "0 10 zero"
KEY = "0123456789abcdef0123456789abcdef"
CRYPT = f"0 2048 crypt aes-cbc-essiv:sha256 {KEY} 0 {{LOOP0}} 0"
NAME127 = "n" * 127
NAME128 = "n" * 128
UUID128 = "u" * 128
UUID129 = "u" * 129


def scenarios() -> list[Scenario]:  # noqa: PLR0915 - it is a list of data
    s: list[Scenario] = []
    add = s.append
    # fmt: off

    # --------------------------------------------------------------- version, help, usage
    add(Scenario("version", "version, --version and -v variants", [
        dm("version"),
        dm("--version"),
        dm("-v", "version"),
        dm("version", "extra"),
    ]))
    add(Scenario("targets", "targets and target-version", [
        dm("targets"),
        dm("-v", "targets"),
        dm("target-version", "linear"),
        dm("target-version", "linear", "striped", "zero", "error"),
        dm("target-version", "nosuchtarget"),
        dm("target-version", "linear", "nosuchtarget", "zero"),
        dm("target-version"),
    ], loops=[]))
    add(Scenario("help", "help, --help, no command, unknown command, bad option", [
        dm("help"),
        dm("help", "-c"),
        dm("help", "--columns"),
        dm("--help"),
        dm("-h"),
        dm(),
        dm("frobnicate"),
        dm("--frobnicate", "ls"),
        dm("create"),
        dm("info", "-c", "-o", "help"),
        dm("ls", "--tree", "-o", "help"),
        dm("splitname", "-o", "help"),
    ]))

    # --------------------------------------------------------------- create
    add(Scenario("create_table_option", "create with --table, then inspect and remove", [
        dm("create", "a", "--table", LIN0),
        dm("table", "a"),
        dm("status", "a"),
        dm("info", "a"),
        dm("ls"),
        dm("deps", "a"),
        dm("remove", "a"),
        dm("ls"),
    ], loops=loops(MIB)))
    add(Scenario("create_table_stdin", "create reading the table from stdin", [
        dm("create", "a", stdin=LIN0 + "\n"),
        dm("table", "a"),
        dm("create", "b", stdin=ZERO),
        dm("table", "b"),
        dm("create", "c", stdin="", timeout=10,
           note="empty table: the device is created without a table, then dmsetup waits for a "
                "udev event that never comes (hangs while udev runs)"),
        dm("info", "c"),
        dm("create", "c2", "--noudevsync", stdin=""),
        dm("info", "c2"),
        dm("load", "c", stdin="0 20 zero\n"),
        dm("table", "--inactive", "c"),
    ], loops=loops(MIB)))
    add(Scenario("create_multiline", "multi-line tables with comments and blank lines", [
        dm("create", "a", stdin=(
            "# a comment line\n"
            "0 100 linear {LOOP0} 0\n"
            "\n"
            "   # indented comment\n"
            "100 50 zero\n"
            "150 100 linear {LOOP1} 100\n"
        )),
        dm("table", "a"),
        dm("status", "a"),
        dm("info", "a"),
        dm("deps", "a"),
        dm("create", "b", "--table", "0 10 zero\n10 10 error"),
        dm("table", "b"),
        dm("create", "c", "--table", "0 10 zero # trailing comment"),
        dm("table", "c"),
        dm("create", "d", "--table", "  0   10   zero  "),
        dm("table", "d"),
    ], loops=loops(MIB, MIB)))
    add(Scenario("create_table_file", "create and load from a table file in the cwd", [
        dm("create", "a", "table1"),
        dm("table", "a"),
        dm("load", "a", "table2"),
        dm("table", "--inactive", "a"),
        dm("create", "b", "no-such-file"),
    ], files={"table1": "0 30 zero\n", "table2": "0 40 error\n"}))
    add(Scenario("create_notable", "--notable: a device without tables", [
        dm("create", "a", "--notable"),
        dm("create", "b", "-n"),
        dm("info", "a"),
        dm("info", "-c", "a"),
        dm("table", "a"),
        dm("status", "a"),
        dm("deps", "a"),
        dm("ls"),
        dm("ls", "--tree"),
        dm("resume", "a"),
        dm("info", "a"),
        dm("suspend", "a"),
        dm("info", "a"),
        dm("resume", "a"),
        dm("info", "a"),
        dm("load", "a", "--table", ZERO),
        dm("resume", "a"),
        dm("info", "a"),
        dm("create", "c", "--notable", "--table", ZERO),
    ]))
    add(Scenario("create_uuid", "-u / --uuid, uuid lookups", [
        dm("create", "a", "-u", "UUID-A", "--table", ZERO),
        dm("create", "b", "--uuid", "UUID-B", "--table", ZERO),
        dm("create", "c", "--table", ZERO),
        dm("info", "a"),
        dm("info", "-u", "UUID-B"),
        dm("info", "--uuid", "UUID-B"),
        dm("info", "-u", "NO-SUCH-UUID"),
        dm("info", "-c"),
        dm("table", "-u", "UUID-A"),
        dm("ls"),
        dm("create", "d", "-u", UUID128, "--table", ZERO),
        dm("info", "-c", "-o", "name,uuid", "d"),
        dm("create", "e", "-u", UUID129, "--table", ZERO),
        dm("create", "f", "-u", "", "--table", ZERO),
        dm("info", "f"),
        dm("remove", "-u", "UUID-A"),
        dm("ls"),
    ]))
    add(Scenario("create_readonly", "-r / --readonly", [
        dm("create", "a", "-r", "--table", LIN0),
        dm("create", "b", "--readonly", "--table", ZERO),
        dm("info", "a"),
        dm("info", "-c"),
        dm("table", "a"),
        dm("ls", "--tree", "-o", "ascii,rw"),
        dm("load", "b", "--table", ZERO),
        dm("resume", "b"),
        dm("info", "b"),
        dm("-r", "load", "b", "--table", ZERO),
        dm("resume", "b"),
        dm("info", "b"),
    ], loops=loops(MIB)))
    add(Scenario("create_persistent", "-j/-m persistent major and minor", [
        dm("create", "a", "-j", "{DM_MAJOR}", "-m", "100", "--table", ZERO),
        dm("info", "a"),
        dm("create", "b", "--major", "{DM_MAJOR}", "--minor", "101", "--table", ZERO),
        dm("info", "-c", "-o", "name,major,minor"),
        dm("create", "c", "-j", "{DM_MAJOR}", "-m", "100", "--table", ZERO),
        dm("create", "d", "-m", "102", "--table", ZERO),
        dm("create", "e", "-j", "{DM_MAJOR}", "--table", ZERO),
        dm("create", "f", "-j", "1", "-m", "103", "--table", ZERO),
        dm("info", "-c", "-o", "name,major,minor"),
        dm("info", "-j", "{DM_MAJOR}", "-m", "100"),
        dm("info", "-j", "{DM_MAJOR}", "-m", "250"),
        dm("create", "g", "--table", ZERO),
        dm("info", "-c", "-o", "name,minor", "g"),
    ]))
    add(Scenario("create_concise", "create --concise with several devices; table --concise", [
        dm("create", "--concise",
           "a,,,rw,0 10 zero;b,UUID-B,,ro,0 20 zero,20 10 error;c,,150,,0 5 zero"),
        dm("ls"),
        dm("info", "-c", "-o", "name,uuid,minor,attr"),
        dm("table"),
        dm("table", "--concise"),
        dm("table", "--concise", "b"),
        dm("create", "--concise", stdin="d,,,,0 7 zero\n"),
        dm("table", "d"),
        dm("create", "--concise", "e,,,xx,0 10 zero"),
        dm("create", "--concise", "f"),
        dm("create", "--concise", "g,,,,0 10 zero;a,,,,0 10 zero"),
        dm("ls"),
        dm("create", "--concise", "h\\,x,,,,0 10 zero"),
        dm("ls"),
    ]))
    add(Scenario("create_duplicate", "duplicate name and duplicate uuid (EBUSY)", [
        dm("create", "a", "-u", "U1", "--table", ZERO),
        dm("create", "a", "--table", ZERO),
        dm("create", "a", "-u", "U2", "--table", ZERO),
        dm("create", "b", "-u", "U1", "--table", ZERO),
        dm("create", "a", "--notable"),
        dm("ls"),
        dm("info", "-c", "-o", "name,uuid"),
    ]))
    add(Scenario("create_invalid_names", "names the kernel or libdm reject", [
        dm("create", "a/b", "--table", ZERO),
        dm("create", "control", "--table", ZERO),
        dm("create", ".", "--table", ZERO),
        dm("create", "..", "--table", ZERO),
        dm("create", "", "--table", ZERO),
        dm("create", NAME128, "--table", ZERO),
        dm("create", NAME127, "--table", ZERO),
        dm("ls"),
        dm("info", NAME128),
        dm("create", "x", "-u", "a/b", "--table", ZERO),
        dm("ls"),
    ]))

    # --------------------------------------------------------------- remove
    add(Scenario("remove", "remove: plain, several, missing, no argument", [
        dm("create", "a", "--table", ZERO),
        dm("create", "b", "--table", ZERO),
        dm("create", "c", "--table", ZERO),
        dm("remove", "a"),
        dm("remove", "a"),
        dm("remove", "b", "c"),
        dm("remove"),
        dm("-v", "remove", "nosuch"),
        dm("ls"),
    ]))
    add(Scenario("remove_open", "remove of an open device: plain, -f, --retry", [
        dm("create", "a", "--table", LIN0),
        hold("a", "h1"),
        dm("info", "a"),
        dm("remove", "a"),
        dm("remove", "--retry", "a"),
        dm("remove", "-f", "a"),
        dm("info", "a"),
        dm("table", "a"),
        dm("status", "a"),
        release("h1"),
        dm("remove", "a"),
        dm("ls"),
    ], loops=loops(MIB)))
    add(Scenario("remove_deferred", "remove --deferred while open, @cancel_deferred_remove", [
        dm("create", "a", "--table", ZERO),
        dm("create", "b", "--table", ZERO),
        hold("a", "h1"),
        dm("remove", "--deferred", "a"),
        dm("info", "a"),
        dm("info", "-c", "a"),
        dm("ls"),
        dm("message", "a", "0", "@cancel_deferred_remove"),
        dm("info", "a"),
        dm("message", "a", "0", "@cancel_deferred_remove"),
        dm("message", "b", "0", "@cancel_deferred_remove"),
        dm("remove", "--deferred", "a"),
        release("h1"),
        dm("info", "a"),
        dm("ls"),
        dm("remove", "--deferred", "b"),
        dm("ls"),
    ]))
    add(Scenario("remove_stacked", "removing a device held by another dm table", [
        dm("create", "a", "--table", "0 50 linear {LOOP0} 0"),
        dm("create", "top", "--table", "0 50 linear /dev/mapper/a 0"),
        dm("remove", "a"),
        dm("info", "a"),
        dm("remove", "top", "a"),
        dm("ls"),
    ], loops=loops(MIB)))
    add(Scenario("remove_all", "remove_all with and without -f, with an open device", [
        dm("create", "a", "--table", ZERO),
        dm("create", "b", "--table", LIN0),
        dm("create", "c", "--notable"),
        dm("remove_all"),
        dm("ls"),
        dm("create", "a", "--table", ZERO),
        dm("create", "b", "--table", LIN0),
        hold("b", "h1"),
        dm("remove_all"),
        dm("ls"),
        dm("-v", "remove_all"),
        dm("remove_all", "-f"),
        dm("ls"),
        dm("table"),
        release("h1"),
        dm("remove_all", "--force"),
        dm("ls"),
        dm("remove_all", "extra"),
    ], loops=loops(MIB)))

    # --------------------------------------------------------------- suspend, resume, load
    add(Scenario("suspend_resume", "suspend (--noflush, --nolockfs) and resume", [
        dm("create", "a", "--table", LIN0),
        dm("create", "b", "--table", ZERO),
        dm("suspend", "a"),
        dm("info", "a"),
        dm("info", "-c", "-o", "name,attr,suspended"),
        dm("status", "a"),
        dm("suspend", "a"),
        dm("resume", "a"),
        dm("resume", "a"),
        dm("suspend", "--noflush", "a"),
        dm("resume", "a"),
        dm("suspend", "--nolockfs", "a", "b"),
        dm("info", "-c", "-o", "name,attr"),
        dm("resume", "a", "b"),
        dm("suspend", "--noflush", "--nolockfs", "b"),
        dm("resume", "--noflush", "b"),
        dm("suspend", "nosuch"),
        dm("resume", "nosuch"),
        dm("suspend"),
        dm("-v", "suspend", "a"),
        dm("-v", "resume", "a"),
    ], loops=loops(MIB)))
    add(Scenario("load_reload", "load / reload an inactive table, then resume", [
        dm("create", "a", "--table", LIN0),
        dm("load", "a", "--table", "0 200 zero"),
        dm("info", "a"),
        dm("info", "-c", "-o", "name,attr,tables_loaded"),
        dm("table", "a"),
        dm("table", "--inactive", "a"),
        dm("status", "--inactive", "a"),
        dm("deps", "--inactive", "a"),
        dm("reload", "a", stdin="0 300 linear {LOOP0} 8\n"),
        dm("table", "--inactive", "a"),
        dm("resume", "a"),
        dm("info", "a"),
        dm("table", "a"),
        dm("table", "--inactive", "a"),
        dm("load", "nosuch", "--table", ZERO),
        dm("load", "a"),
        dm("load"),
        dm("-v", "load", "a", "--table", ZERO),
        dm("clear", "a"),
    ], loops=loops(MIB)))
    add(Scenario("clear_wipe", "clear (drop inactive table) and wipe_table", [
        dm("create", "a", "--table", LIN0),
        dm("load", "a", "--table", ZERO),
        dm("clear", "a"),
        dm("info", "a"),
        dm("clear", "a"),
        dm("clear", "nosuch"),
        dm("clear"),
        dm("wipe_table", "a"),
        dm("table", "a"),
        dm("status", "a"),
        dm("info", "a"),
        dm("deps", "a"),
        dm("create", "b", "--table", LIN0),
        dm("wipe_table", "--noflush", "--nolockfs", "b"),
        dm("table", "b"),
        dm("wipe_table", "nosuch"),
    ], loops=loops(MIB)))
    add(Scenario("resume_no_table", "resume of a suspended device with no live table", [
        dm("create", "a", "--notable"),
        dm("suspend", "a"),
        dm("resume", "a"),
        dm("info", "a"),
    ]))

    # --------------------------------------------------------------- rename
    add(Scenario("rename", "rename, --setuuid, to an existing name, missing device", [
        dm("create", "a", "--table", ZERO),
        dm("create", "b", "-u", "UUID-B", "--table", ZERO),
        dm("rename", "a", "a2"),
        dm("ls"),
        dm("info", "a2"),
        dm("rename", "a2", "b"),
        dm("rename", "nosuch", "x"),
        dm("rename", "a2", "a2"),
        dm("rename", "a2", "x/y"),
        dm("rename", "a2", NAME128),
        dm("rename", "a2", ""),
        dm("rename", "a2", "--setuuid", "UUID-A"),
        dm("info", "-c", "-o", "name,uuid"),
        dm("rename", "a2", "--setuuid", "UUID-OTHER"),
        dm("rename", "b", "--setuuid", "UUID-A"),
        dm("rename", "-u", "UUID-B", "b2"),
        dm("info", "-c", "-o", "name,uuid,events"),
        dm("rename", "a2"),
        dm("rename"),
        dm("-v", "rename", "a2", "a3"),
    ]))

    # --------------------------------------------------------------- message
    add(Scenario("message", "target messages: no handler, bad sector, missing device", [
        dm("create", "a", "--table", LIN0),
        dm("message", "a", "0", "hello"),
        dm("message", "a", "0", "hello", "world"),
        dm("message", "a", "1000", "hello"),
        dm("message", "nosuch", "0", "hello"),
        dm("message", "a", "0"),
        dm("message", "a"),
        dm("message", "a", "x", "hello"),
        dm("message", "a", "0", "@stats_list"),
        dm("message", "a", "0", "@nosuchcore"),
        dm("create", "s", "--table", "0 96 striped 2 8 {LOOP1} 0 {LOOP2} 0"),
        dm("message", "s", "0", "hello"),
    ], loops=loops(MIB, MIB, MIB)))

    # --------------------------------------------------------------- ls
    stack = [
        dm("create", "a", "-u", "UUID-A", "--table", "0 100 linear {LOOP0} 0"),
        dm("create", "b", "--table", "0 100 linear {LOOP1} 0"),
        dm("create", "top", "--table",
           "0 100 linear /dev/mapper/a 0\n100 100 linear /dev/mapper/b 0"),
        dm("create", "z", "-r", "--table", ZERO),
    ]
    add(Scenario("ls", "ls: plain, --target, -o blkdevname, --exec", [
        dm("ls"),
        *stack,
        dm("ls"),
        dm("ls", "--target", "linear"),
        dm("ls", "--target", "zero"),
        dm("ls", "--target", "striped"),
        dm("ls", "-o", "blkdevname"),
        dm("ls", "-o", "devname"),
        dm("ls", "-o", "devno"),
        dm("ls", "-o", "bogus"),
        dm("ls", "--exec", "echo"),
        dm("ls", "--exec", "echo X"),
        dm("ls", "--target", "zero", "--exec", "echo"),
        dm("-v", "ls"),
        dm("ls", "a"),
    ], loops=loops(MIB, MIB)))
    add(Scenario("ls_tree", "ls --tree and its -o options", [
        *stack,
        dm("ls", "--tree"),
        dm("ls", "--tree", "-o", "ascii"),
        dm("ls", "--tree", "-o", "ascii,compact"),
        dm("ls", "--tree", "-o", "ascii,inverted"),
        dm("ls", "--tree", "-o", "ascii,compact,inverted"),
        dm("ls", "--tree", "-o", "vt100"),
        dm("ls", "--tree", "-o", "utf"),
        dm("ls", "--tree", "-o", "ascii,blkdevname"),
        dm("ls", "--tree", "-o", "ascii,nodevice"),
        dm("ls", "--tree", "-o", "ascii,active,open,rw,uuid"),
        dm("ls", "--tree", "-o", "ascii,notrunc"),
        dm("ls", "--tree", "-o", "ascii,device,blkdevname,active,open,rw,uuid"),
        dm("ls", "--tree", "-o", "ascii,bogus"),
        dm("ls", "--tree", "top"),
    ], loops=loops(MIB, MIB)))

    # --------------------------------------------------------------- info
    add(Scenario("info", "info: plain and columns with fields, separators, sort, select", [
        dm("info"),
        *stack,
        dm("info"),
        dm("info", "a", "z"),
        dm("info", "nosuch"),
        dm("info", "a", "nosuch"),
        dm("info", "-c"),
        dm("info", "-C"),
        dm("info", "--columns", "a"),
        dm("info", "-c", "--noheadings"),
        dm("info", "-c", "nosuch"),
        dm("info", "-o", "name,uuid,open,major,minor"),
        dm("info", "-c", "-o", "name,uuid,open,major,minor"),
        dm("info", "-c", "-o", "+uuid"),
        dm("info", "-c", "-o", "name,+devno"),
        dm("info", "-c", "-o", "+name,blkdevname"),
        dm("info", "-c", "--separator", ",", "-o", "name,uuid,open"),
        dm("info", "-c", "--separator", " | "),
        dm("info", "-c", "--rows"),
        dm("info", "-c", "--rows", "-o", "name,open"),
        dm("info", "-c", "--sort", "-name"),
        dm("info", "-c", "-O", "open,name", "-o", "name,open"),
        dm("info", "-c", "-S", "name=a"),
        dm("info", "-c", "-S", "name=~^[ab]$"),
        dm("info", "-c", "-S", "open>0", "-o", "name,open"),
        dm("info", "-c", "--select", "name=nosuch"),
        dm("info", "-c", "-S", "bogus=1"),
        dm("info", "-c", "--nameprefixes"),
        dm("info", "-c", "--nameprefixes", "--noheadings", "-o", "name,uuid"),
        dm("info", "-c", "--nameprefixes", "--unquoted", "-o", "name,uuid"),
        dm("info", "-c", "--unquoted", "-o", "name,uuid"),
        dm("info", "-c", "-o", "bogus"),
        dm("info", "-c", "-o",
           "name,mangled_name,unmangled_name,uuid,mangled_uuid,unmangled_uuid,blkdevname,"
           "attr,tables_loaded,readonly,open,segments,events,suspended,devno,major,minor,"
           "read_ahead,blkdevs_used,devs_used,devnos_used,device_count,names_using_dev,"
           "devnos_using_dev,device_ref_count,subsystem,lv_layer,lv_name,vg_name"),
        dm("info", "-c", "-o", "name,devs_used,blkdevs_used,devnos_used,device_count", "top"),
        dm("info", "-c", "-o", "name,names_using_dev,devnos_using_dev,device_ref_count", "a"),
        dm("-v", "info", "a"),
        dm("-v", "info", "-c", "a"),
        dm("info", "-c", "-o", "name", "--separator", ":", "--noheadings", "--rows"),
    ], loops=loops(MIB, MIB)))

    # --------------------------------------------------------------- deps, status, table
    add(Scenario("deps", "deps with -o devname|blkdevname|devno", [
        *stack,
        dm("deps"),
        dm("deps", "top"),
        dm("deps", "a"),
        dm("deps", "z"),
        dm("deps", "-o", "devname"),
        dm("deps", "-o", "blkdevname"),
        dm("deps", "-o", "devno"),
        dm("deps", "-o", "devname", "top"),
        dm("deps", "-o", "blkdevname", "top"),
        dm("deps", "-o", "bogus", "top"),
        dm("deps", "nosuch"),
        dm("-v", "deps", "a"),
    ], loops=loops(MIB, MIB)))
    add(Scenario("status", "status: plain, --target, -v, --noflush, striped", [
        *stack,
        dm("create", "s", "--table", "0 64 striped 2 16 {LOOP0} 200 {LOOP1} 200"),
        dm("create", "e", "--table", "0 10 error"),
        dm("status"),
        dm("status", "s"),
        dm("status", "--target", "linear"),
        dm("status", "--target", "striped"),
        dm("status", "--target", "nosuch"),
        dm("status", "--target", "linear", "top"),
        dm("-v", "status", "a"),
        dm("status", "--noflush", "s"),
        dm("status", "nosuch"),
        dm("status", "s", "nosuch"),
        dm("table", "s"),
    ], loops=loops(MIB, MIB)))
    add(Scenario("table", "table: plain, --target, --inactive, --concise", [
        *stack,
        dm("table"),
        dm("table", "top"),
        dm("table", "--target", "zero"),
        dm("table", "--target", "linear", "top"),
        dm("table", "--target", "error"),
        dm("load", "a", "--table", "0 100 zero"),
        dm("table", "--inactive"),
        dm("table", "--inactive", "b"),
        dm("table", "--concise"),
        dm("table", "--concise", "--inactive", "a"),
        dm("-v", "table", "z"),
        dm("table", "nosuch"),
    ], loops=loops(MIB, MIB)))
    add(Scenario("table_showkeys", "crypt tables: keys hidden unless --showkeys", [
        dm("create", "c", "--table", CRYPT),
        dm("table", "c"),
        dm("table", "--showkeys", "c"),
        dm("table", "--concise", "c"),
        dm("table", "--concise", "--showkeys", "c"),
        dm("status", "c"),
        dm("status", "--showkeys", "c"),
        dm("load", "c", "--table",
           f"0 2048 crypt aes-xts-plain64 {KEY}{KEY} 0 {{LOOP0}} 0 1 allow_discards"),
        dm("table", "--inactive", "c"),
        dm("table", "--inactive", "--showkeys", "c"),
        dm("-v", "table", "c"),
    ], loops=loops(2 * MIB)))

    # --------------------------------------------------------------- wait, geometry, split
    add(Scenario("wait", "wait: with event number, -v, blocking until rename raises an event", [
        dm("create", "a", "--table", ZERO),
        dm("wait", "a", "5"),
        dm("-v", "wait", "a", "5"),
        dm("wait", "a", "1", "--noflush"),
        dm("wait", "nosuch"),
        dm("wait", "nosuch", "3"),
        dm("wait"),
        dm("-v", "wait", "a", bg="w1"),
        sleep(2),
        dm("rename", "a", "b"),
        join("w1"),
        dm("info", "-c", "-o", "name,events"),
        dm("wait", "b", "0"),
        dm("-v", "wait", "b", "0"),
        dm("wait", "b", "x", note="x parses as 0, so this returns at once (event_nr is 1)"),
    ]))
    add(Scenario("setgeometry", "setgeometry success and failure", [
        dm("create", "a", "--table", "0 2048 zero"),
        dm("setgeometry", "a", "100", "4", "32", "0"),
        dm("setgeometry", "a", "65535", "255", "255", "0"),
        dm("setgeometry", "a", "70000", "4", "32", "0"),
        dm("setgeometry", "a", "100", "256", "32", "0"),
        dm("setgeometry", "a", "x", "4", "32", "0"),
        dm("setgeometry", "a", "100", "4", "32"),
        dm("setgeometry", "nosuch", "100", "4", "32", "0"),
        dm("-v", "setgeometry", "a", "1", "1", "1", "1"),
    ]))
    add(Scenario("splitname", "splitname of LVM-style names", [
        dm("splitname", "vg-lv"),
        dm("splitname", "vg--x-lv--y-layer"),
        dm("splitname", "vg-lv", "LVM"),
        dm("splitname", "vg-lv", "OTHER"),
        dm("splitname", "novg"),
        dm("splitname", "-c", "--noheadings", "vg-lv-cow"),
        dm("splitname", "-o", "vg_name,lv_name", "--separator", "/", "vg-lv"),
        dm("splitname", "--nameprefixes", "vg-lv"),
        dm("splitname"),
    ]))

    # --------------------------------------------------------------- name mangling
    add(Scenario("mangle", "mangle and --manglename auto|hex|none with odd names", [
        dm("create", "a b", "--table", ZERO),
        dm("ls"),
        dm("ls", "--manglename", "none"),
        dm("ls", "--manglename", "hex"),
        dm("ls", "--manglename", "auto"),
        dm("info", "-c", "-o", "name,mangled_name,unmangled_name"),
        dm("info", "a b"),
        dm("info", "a\\x20b"),
        dm("--manglename", "none", "info", "a\\x20b"),
        dm("--manglename", "hex", "create", "plain", "--table", ZERO),
        dm("--manglename", "none", "create", "c d", "--table", ZERO),
        dm("--manglename", "none", "create", "q\\x20r", "--table", ZERO),
        dm("ls", "--manglename", "none"),
        dm("info", "-c", "-o", "name,mangled_name,unmangled_name"),
        dm("mangle"),
        dm("ls", "--manglename", "none"),
        dm("mangle", "plain"),
        dm("create", "caf\u00e9", "--table", ZERO),
        dm("create", "x#y", "--table", ZERO),
        dm("create", "p\\q", "--table", ZERO),
        dm("ls", "--manglename", "none"),
        dm("ls", "--manglename", "hex"),
        dm("--manglename", "bogus", "ls"),
        dm("create", "u1", "-u", "uuid with space", "--table", ZERO),
        dm("info", "-c", "-o", "name,uuid,mangled_uuid,unmangled_uuid", "u1"),
        dm("mangle", "nosuch"),
    ]))

    # --------------------------------------------------------------- udev helpers
    add(Scenario("udev", "udevflags, udevcomplete, udevcomplete_all, udevcookies", [
        dm("udevflags", "0"),
        dm("udevflags", "0x0d4d0000"),
        dm("udevflags", "0xffff1234"),
        dm("udevflags", "0x00010000"),
        dm("udevflags", "0x00200000"),
        dm("udevflags", "12345"),
        dm("udevflags", "notanumber"),
        dm("udevflags"),
        dm("udevcookies"),
        dm("udevcomplete", "0x0d4d0abc"),
        dm("udevcomplete", "notanumber"),
        dm("udevcomplete"),
        dm("udevcomplete_all", stdin="n\n"),
        dm("udevcomplete_all", "-y"),
        dm("udevcomplete_all", "-y", "5"),
        dm("udevcomplete_all", "-y", "x"),
        dm("udevcookies"),
    ]))

    # --------------------------------------------------------------- table load errors
    add(Scenario("load_errors", "TABLE_LOAD errors as create reports them", [
        dm("create", "gap", "--table", "0 10 zero\n20 10 zero"),
        dm("create", "overlap", "--table", "0 10 zero\n5 10 zero"),
        dm("create", "notzero", "--table", "5 10 zero"),
        dm("create", "zerolen", "--table", "0 0 zero"),
        dm("create", "unknown", "--table", "0 10 frobnicate"),
        dm("create", "lin1", "--table", "0 10 linear {LOOP0}"),
        dm("create", "lin2", "--table", "0 10 linear {LOOP0} x"),
        dm("create", "lin3", "--table", "0 10 linear"),
        dm("create", "lin4", "--table", "0 10 linear {LOOP0} 0 extra"),
        dm("create", "str1", "--table", "0 15 striped 2 8 {LOOP0} 0 {LOOP1} 0"),
        dm("create", "str2", "--table", "0 24 striped 2 8 {LOOP0} 0 {LOOP1} 0"),
        dm("create", "str3", "--table", "0 32 striped 2 8 {LOOP0} 0"),
        dm("create", "str4", "--table", "0 32 striped 0 8"),
        dm("create", "str5", "--table", "0 48 striped 2 3 {LOOP0} 0 {LOOP1} 0"),
        dm("create", "miss1", "--table", "0 10 linear {LOOP3} 0",
           note="LOOP3 has no backing file: size 0, which the area check skips"),
        dm("create", "miss2", "--table", "0 10 linear /dev/nonexistent 0"),
        dm("create", "miss3", "--table", "0 10 linear 7:200 0",
           note="opening 7:200 makes the kernel create loop200 (block device autoloading)"),
        dm("create", "miss4", "--table", "0 10 linear {DM_MAJOR}:99 0"),
        dm("create", "miss5", "--table", "0 32 striped 2 8 {LOOP0} 0 /dev/nonexistent 0"),
        dm("create", "past1", "--table", "0 4096 linear {LOOP0} 0"),
        dm("create", "past2", "--table", "0 10 linear {LOOP0} 2040"),
        dm("create", "past3", "--table", "0 2048 linear {LOOP0} 0"),
        dm("create", "align", "--table", "0 8 linear {LOOP2} 1"),
        dm("create", "align2", "--table", "0 9 linear {LOOP2} 0"),
        dm("create", "zeroarg", "--table", "0 10 zero extra"),
        dm("create", "err1", "--table", "0 10 error"),
        dm("create", "err2", "--table", "0 10 error {LOOP0} 0"),
        dm("create", "err3", "--table", "0 10 error a b c"),
        dm("table", "err1", "err2", "err3"),
        dm("create", "empty", "--table", "", timeout=10,
           note="empty table: created without a table, then waits forever for udev"),
        dm("create", "junk", "--table", "hello"),
        dm("create", "neg", "--table", "-5 10 zero"),
        dm("create", "nolen", "--table", "0"),
        dm("create", "notype", "--table", "0 10"),
        dm("create", "longtype", "--table", "0 10 abcdefghijklmnopq"),
        dm("ls"),
    ], loops=[(MIB, 512), (MIB, 512), (MIB, 4096), (UNBOUND, 0)]))
    add(Scenario("load_errors_existing", "load errors on an existing device; checks at resume", [
        dm("create", "a", "--table", "0 100 linear {LOOP0} 0"),
        dm("load", "a", "--table", "0 10 zero\n20 10 zero"),
        dm("load", "a", "--table", "0 10 frobnicate"),
        dm("load", "a", "--table", "0 10 linear /dev/mapper/a 0"),
        dm("load", "a", "--table", "0 10 linear {DM_MAJOR}:0 0"),
        dm("info", "a"),
        dm("load", "a", "--table", "0 4096 linear {LOOP0} 0"),
        dm("info", "a"),
        dm("resume", "a"),
        dm("info", "a"),
        dm("table", "a"),
        dm("resume", "a"),
        dm("info", "a"),
        dm("create", "b", "--table", "0 8 linear /dev/mapper/b 0"),
    ], loops=loops(MIB)))
    add(Scenario("targets_zero_error_striped", "zero/error/striped devices after creation", [
        dm("create", "z", "--table", "0 1000 zero"),
        dm("create", "e", "--table", "0 1000 error"),
        dm("create", "s", "--table", "0 1024 striped 2 128 {LOOP0} 0 {LOOP1} 0"),
        dm("create", "s3", "--table", "0 96 striped 3 8 {LOOP0} 1024 {LOOP1} 1024 {LOOP0} 1500"),
        dm("create", "mix", "--table", "0 10 zero\n10 10 error\n20 8 striped 1 8 {LOOP1} 8"),
        dm("table"),
        dm("status"),
        dm("deps"),
        dm("info", "-c", "-o", "name,segments,devs_used"),
        dm("ls", "--tree", "-o", "ascii"),
    ], loops=loops(MIB, MIB)))

    # --------------------------------------------------------------- environment, misc
    add(Scenario("env_dm_dev_dir", "DM_DEV_DIR pointing elsewhere", [
        dm("create", "a", "--table", ZERO),
        dm("ls", env={"DM_DEV_DIR": "/dev"}),
        dm("ls", env={"DM_DEV_DIR": "/nonexistent"}),
        dm("ls", env={"DM_DEV_DIR": "relative"}),
        dm("version", env={"DM_DEV_DIR": "/nonexistent"}),
    ]))
    add(Scenario("misc_commands", "mknodes, measure, stats list, udevcreatecookie + udevcookies", [
        dm("create", "a", "--table", ZERO),
        dm("mknodes"),
        dm("mknodes", "a"),
        dm("mknodes", "nosuch"),
        dm("measure"),
        dm("measure", "a"),
        dm("stats", "list"),
        dm("udevcreatecookie", note="prints a random cookie: normalised"),
        dm("udevcookies", note="lists the cookie just created: normalised"),
        dm("udevcomplete_all", "-y"),
        dm("udevcookies"),
    ]))
    # fmt: on
    return s


# ----------------------------------------------------------------------------- substitution

# Values that vary from run to run even on one machine: replaced in recorded output, and the
# exact (regex, replacement) pairs are stored on the step so a replayer can do the same.
NORMALISERS: list[tuple[str, str]] = [
    (r"Timestamp: +[0-9]+\.[0-9]+ seconds", "Timestamp: <TIME>"),
    (r"0x[0-9a-f]{7,8}\b(?= \(semid)", "<COOKIE>"),
    (r"semid [0-9]+", "semid <SEMID>"),
    (r"^0x[0-9a-fA-F]{7,8}$", "<COOKIE>"),
    (r"^(0x[0-9a-f]{7,8}) +[0-9]+ +[0-9]+ +.*$", "<COOKIE LINE>"),
]


@dataclass
class Env:
    """Machine values for one scenario run; templates use the placeholder names as keys."""

    workdir: str
    dm_major: int
    loops: list[tuple[str, int, int]]  # (path, major, minor)

    def values(self) -> dict[str, str]:
        v = {"WORKDIR": self.workdir, "DM_MAJOR": str(self.dm_major)}
        for i, (path, major, minor) in enumerate(self.loops):
            v[f"LOOP{i}"] = path
            v[f"LOOP{i}_NAME"] = path.rsplit("/", 1)[1]
            v[f"LOOP{i}_DEV"] = f"{major}:{minor}"
            v[f"LOOP{i}_MAJOR"] = str(major)
            v[f"LOOP{i}_MINOR"] = str(minor)
        return v

    def expand(self, text: str) -> str:
        vals = self.values()
        return re.sub(r"\{([A-Z0-9_]+)\}", lambda m: vals.get(m.group(1), m.group(0)), text)

    def placeholders(self, text: str) -> str:
        """Replace machine values by placeholders, only in contexts where they are values."""
        text = text.replace(self.workdir, "{WORKDIR}")
        for i, (path, major, minor) in enumerate(self.loops):
            name = path.rsplit("/", 1)[1]
            text = re.sub(rf"{re.escape(path)}(?![0-9])", f"{{LOOP{i}}}", text)
            text = re.sub(rf"(?<![\w/]){re.escape(name)}(?![0-9])", f"{{LOOP{i}_NAME}}", text)
            text = re.sub(rf"(?<![\w:.]){major}:{minor}(?![\w:.])", f"{{LOOP{i}_DEV}}", text)
            text = re.sub(rf"\({major}, {minor}\)", f"({{LOOP{i}_MAJOR}}, {{LOOP{i}_MINOR}})",
                          text)  # fmt: skip
        # The dm major as a whole number token: scenarios never use it as a size or count.
        return re.sub(rf"(?<![\w.\\]){self.dm_major}(?![\w.])", "{DM_MAJOR}", text)


def normalise(text: str) -> tuple[str, list[list[str]]]:
    applied = []
    for pattern, repl in NORMALISERS:
        new = re.sub(pattern, repl, text, flags=re.MULTILINE)
        if new != text:
            applied.append([pattern, repl])
            text = new
    return text, applied


def encode_stream(key: str, data: bytes, env: Env, step: dict[str, Any]) -> None:
    """Store a stream as placeholder text, or base64 if it is not UTF-8."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        step[key + "_b64"] = base64.b64encode(data).decode()
        return
    templ = env.placeholders(text)
    if env.expand(templ) != text:
        raise RuntimeError(f"placeholder substitution does not round-trip for {text!r}")
    templ, applied = normalise(templ)
    step[key] = templ
    if applied:
        step.setdefault("normalise", []).extend(applied)


# ----------------------------------------------------------------------------- recording


class Recorder:
    def __init__(self, guest: Guest) -> None:
        self.g = guest
        self.dm_major = 0
        self.holders: dict[str, int] = {}

    def sh(self, cmd: str, timeout: float = 120) -> Result:
        return self.g.run(cmd, timeout=timeout)

    def reset(self) -> None:
        for pid in self.holders.values():
            self.sh(f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done")
        self.holders.clear()
        self.sh("dmsetup remove_all --force >/dev/null 2>&1; udevadm settle; losetup -D; "
                "dmsetup udevcomplete_all -y >/dev/null 2>&1; udevadm settle")  # fmt: skip
        r = self.sh("dmsetup ls")
        if r.out.decode().strip() != "No devices found":
            raise RuntimeError(f"guest not clean between scenarios: {r.out!r} {r.err!r}")

    def find_dm_major(self) -> int:
        r = self.sh("awk '$2 == \"device-mapper\" {print $1}' /proc/devices").check()
        return int(r.out.decode().split()[0])

    def setup(self, sc: Scenario) -> Env:
        sdir = self.g.workdir / "scenarios" / sc.name
        self.sh(f"rm -rf {shlex.quote(str(sdir))}")
        sdir.mkdir(parents=True)
        for name, content in sc.files.items():
            (sdir / name).write_text(content)
        for d in sc.dirs:
            (sdir / d).mkdir()
        paths: dict[int, str] = {}
        for i, (size, sector) in enumerate(sc.loops):
            if size == UNBOUND:
                continue
            img = sdir / f"disk{i}.img"
            with open(img, "wb") as f:
                f.truncate(size)
            r = self.sh(f"losetup -f --show --sector-size {sector} {img}").check()
            paths[i] = r.out.decode().strip()
        # Unbound ones last, so that attaching a file cannot take the free device.
        for i, (size, _) in enumerate(sc.loops):
            if size == UNBOUND:
                paths[i] = self.sh("losetup -f").check().out.decode().strip()
        loops_: list[tuple[str, int, int]] = []
        for i in range(len(sc.loops)):
            st = self.sh(f"stat -c '%t %T' {paths[i]}").check().out.decode().split()
            loops_.append((paths[i], int(st[0], 16), int(st[1], 16)))
        return Env(str(sdir), self.dm_major, loops_)

    def command(self, step: Step, env: Env, kfile: str) -> str:
        assert step.argv is not None
        exports = "".join(
            f"export {k}={shlex.quote(env.expand(v))}; " for k, v in sorted(step.env.items())
        )
        args = " ".join(shlex.quote(env.expand(a)) for a in step.argv[1:])
        # argv[0] is exactly "dmsetup" (as a user would type it) but the binary is LVM2's.
        return (
            f"dmesg -C; ({exports}exec -a dmsetup {DMSETUP} {args}); rc=$?; "
            f"dmesg > {kfile} 2>&1; exit $rc"
        )

    def run_step(self, cmd: str, stdin: bytes | None, timeout: float, cwd: str) -> Result:
        try:
            return self.g.run(cmd, stdin, timeout, cwd=cwd)
        except GuestTimeout as exc:
            assert exc.result is not None
            # rc None marks a hang; the agent killed it after `timeout` seconds.
            return Result(-1, exc.result.out, exc.result.err)

    def fill(self, out: dict[str, Any], r: Result, env: Env, kfile: Path) -> None:
        if r.rc == -1:
            out["timed_out"] = True
        out["rc"] = None if r.rc == -1 else r.rc
        encode_stream("stdout", r.out, env, out)
        encode_stream("stderr", r.err, env, out)
        klog = kfile.read_text(errors="replace") if kfile.exists() else ""
        # Informational only: what the kernel logged while the step ran (dmesg, no times).
        lines = [re.sub(r"^\[ *[0-9.]+\] ", "", ln) for ln in klog.splitlines()]
        out["kernel_log"] = [env.placeholders(ln) for ln in lines if ln.strip()]

    def record(self, sc: Scenario) -> dict[str, Any]:
        self.reset()
        env = self.setup(sc)
        steps_out: list[dict[str, Any]] = []
        pending: dict[str, tuple[Future[Result], dict[str, Any], Path]] = {}
        with ThreadPoolExecutor(max_workers=4) as pool:
            for n, step in enumerate(sc.steps):
                out: dict[str, Any] = {}
                if step.action is not None:
                    out.update(step.action)
                    self.act(step.action, env, pending)
                    steps_out.append(out)
                    continue
                assert step.argv is not None
                out["argv"] = step.argv
                out["stdin"] = step.stdin
                out["env"] = step.env
                if step.note:
                    out["note"] = step.note
                if step.timeout != DEFAULT_TIMEOUT:
                    out["timeout"] = step.timeout
                stdin = env.expand(step.stdin).encode() if step.stdin is not None else None
                kfile = Path(env.workdir) / f".kmsg.{n}"
                cmd = self.command(step, env, str(kfile))
                if step.background:
                    out["background"] = step.background
                    fut = pool.submit(self.run_step, cmd, stdin, step.timeout, env.workdir)
                    pending[step.background] = (fut, out, kfile)
                else:
                    self.fill(out, self.run_step(cmd, stdin, step.timeout, env.workdir), env, kfile)
                steps_out.append(out)
            if pending:
                raise RuntimeError(f"{sc.name}: background steps never joined: {list(pending)}")
        return {
            "format": FORMAT_VERSION,
            "name": sc.name,
            "description": sc.description,
            "setup": {
                "loops": [
                    {"name": f"LOOP{i}", "size": size, "sector_size": sector}
                    if size != UNBOUND
                    else {"name": f"LOOP{i}", "unbound": True}
                    for i, (size, sector) in enumerate(sc.loops)
                ],
                "files": sc.files,
                "dirs": sc.dirs,
            },
            "steps": steps_out,
        }

    def act(self, action: dict[str, Any], env: Env,
            pending: dict[str, tuple[Future[Result], dict[str, Any], Path]]) -> None:  # fmt: skip
        kind = action["action"]
        if kind == "hold_open":
            dev = shlex.quote(f"/dev/mapper/{action['device']}")
            r = self.sh(f"sleep infinity < {dev} > /dev/null 2>&1 & echo $!").check()
            pid = int(r.out.decode())
            self.holders[action["id"]] = pid
            # The open must have happened before the next step runs.
            self.sh(
                f"dev=$(readlink -f {dev}); "
                f'until [ "$(readlink /proc/{pid}/fd/0)" = "$dev" ]; do sleep 0.05; done',
                timeout=30,
            ).check()
        elif kind == "release":
            pid = self.holders.pop(action["id"])
            self.sh(f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done")
        elif kind == "join":
            fut, out, kfile = pending.pop(action["id"])
            self.fill(out, fut.result(), env, kfile)
        elif kind == "sleep":
            time.sleep(float(action["seconds"]))
        else:
            raise ValueError(f"unknown action {kind}")


def guest_facts(g: Guest) -> dict[str, Any]:
    ver = g.run(f"{DMSETUP} version").check().out.decode()
    return {
        "kernel": g.info.get("kernel"),
        "dmsetup": ver.splitlines()[0].split(":", 1)[1].strip(),
        "driver": ver.splitlines()[1].split(":", 1)[1].strip(),
        "modules_loaded": sorted(m for m, rc in dict(g.info["modules"]).items() if rc == 0),  # type: ignore[call-overload]
        "udev_running": g.run("pgrep -x systemd-udevd >/dev/null").rc == 0,
    }


def to_json(obj: Any, indent: int = 0) -> str:
    """JSON with short scalar lists (argv) on one line, so fixtures read well in a diff."""
    pad = "  " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{json.dumps(k)}: {to_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(obj, list) and obj:
        flat = json.dumps(obj, ensure_ascii=False)
        if all(not isinstance(x, dict | list) for x in obj) and len(flat) + len(pad) <= 100:
            return flat
        items = [pad + to_json(x, indent + 1) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return json.dumps(obj, ensure_ascii=False)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("only", nargs="*", help="record only these scenarios")
    ap.add_argument("--list", action="store_true", help="list scenario names and exit")
    ap.add_argument("--out", type=Path, default=FIXTURES, help="fixture directory")
    ap.add_argument("--attach", metavar="DIR", help="use a guest served by guest.py --serve DIR")
    ap.add_argument("--no-facts", action="store_true", help="skip kernel_facts.json")
    ap.add_argument("--facts-only", action="store_true", help="only kernel_facts.json")
    args = ap.parse_args(argv)
    corpus = scenarios()
    names = [sc.name for sc in corpus]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate scenario names")
    if args.list:
        print("\n".join(names))
        return 0
    unknown = set(args.only) - set(names)
    if unknown:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}")
    chosen = [sc for sc in corpus if not args.only or sc.name in args.only]
    if args.facts_only:
        chosen = []
    g = Guest.attach(args.attach) if args.attach else Guest().start()
    try:
        if g.boot_seconds is not None:
            print(f"guest booted in {g.boot_seconds:.1f} s", file=sys.stderr)
        rec = Recorder(g)
        rec.dm_major = rec.find_dm_major()
        args.out.mkdir(parents=True, exist_ok=True)
        facts = guest_facts(g)
        for sc in chosen:
            t = time.monotonic()
            fixture = rec.record(sc)
            fixture["recorded_with"] = facts
            path = args.out / f"{sc.name}.json"
            path.write_text(to_json(fixture) + "\n")
            n = sum(1 for st in fixture["steps"] if "argv" in st)
            print(f"{sc.name}: {n} steps, {time.monotonic() - t:.1f} s", file=sys.stderr)
        rec.reset()
        if not args.no_facts and (args.facts_only or not args.only):
            script = g.workdir / "ioctl_facts.py"
            script.write_bytes(FACTS_SCRIPT.read_bytes())
            r = g.run(f"/bin/python3 {script} {g.workdir}", timeout=300)
            if r.rc != 0:
                raise RuntimeError(f"ioctl_facts.py failed:\n{r.stderr}")
            data = json.loads(r.out)
            data["recorded_with"] = facts
            FACTS_OUT.write_text(json.dumps(data, indent=2) + "\n")
            print(f"kernel facts: {len(data['facts'])} entries", file=sys.stderr)
            rec.reset()
    finally:
        g.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
