"""dmsetup's commands and options, one by one, success and failure, exit codes.

Expected texts come from LVM2 dmsetup 1.02.185 on kernel 6.1 (recorded in the QEMU guest);
tables use targets that need no backing device so the texts do not depend on the host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devmapper.cli.usage import usage_text

if TYPE_CHECKING:  # the fixture's type (another directory's conftest may own the name)
    from conftest import Dmsetup

USAGE = usage_text()
INFO_A = ("Name:              a\nState:             ACTIVE\nRead Ahead:        256\n"
          "Tables present:    LIVE\nOpen count:        0\nEvent number:      0\n"
          "Major, minor:      254, 0\nNumber of targets: 1\n\n")
HEADINGS = "Name             Maj Min Stat Open Targ Event  UUID                            \n"


def two_devices(dmsetup: Dmsetup) -> None:
    """a: zero; b (uuid myuuid-1): linear over a."""
    dmsetup("create", "a", "--table", "0 100 zero").ok()
    dmsetup("create", "b", "-u", "myuuid-1", "--table", "0 50 linear 254:0 10").ok()


# ---------------------------------------------------------------- help, usage, options


def test_help_goes_to_stderr_with_rc_0(dmsetup: Dmsetup) -> None:
    for argv in (["help"], ["--help"], ["-h"]):
        r = dmsetup(*argv)
        assert (r.rc, r.out, r.err) == (0, "", USAGE)


def test_help_columns_lists_fields(dmsetup: Dmsetup) -> None:
    r = dmsetup("help", "-c")
    assert r.rc == 0 and r.err.startswith(USAGE)
    fields = r.err[len(USAGE):]
    assert fields.startswith("Mapped Device Name Fields\n-------------------------\n"
                             "  name_all              - All fields in this section.\n"
                             "  name                  - Name of mapped device.\n")
    assert fields.endswith("Special Fields\n--------------\n"
                           "  selected              - Set if item passes selection criteria.\n"
                           "  help                  - Show help.\n"
                           "  ?                     - Show help.\n \n")
    assert dmsetup("-h", "-c").err == r.err


def test_no_command_unknown_command_and_argument_count(dmsetup: Dmsetup) -> None:
    r = dmsetup()
    assert (r.rc, r.out, r.err) == (1, "", USAGE)
    r = dmsetup("bogus")
    assert (r.rc, r.err) == (1, "Unknown command.\n" + USAGE)
    r = dmsetup("setgeometry", "a", "1", "2")
    assert (r.rc, r.err) == (1, "Incorrect number of arguments.\n" + USAGE)
    r = dmsetup("target-version")
    assert (r.rc, r.err) == (1, "Incorrect number of arguments.\n" + USAGE)


@pytest.mark.parametrize(("argv", "message"), [
    (["--bogusopt"], "dmsetup: unrecognized option '--bogusopt'"),
    (["-Z"], "dmsetup: invalid option -- 'Z'"),
    (["info", "-c", "-o"], "dmsetup: option requires an argument -- 'o'"),
    (["--ta", "x", "ls"], "dmsetup: option '--ta' is ambiguous; possibilities: '--table' "
                          "'--target'"),
    (["--notable=1", "ls"], "dmsetup: option '--notable' doesn't allow an argument"),
    (["--tab"], "dmsetup: option '--table' requires an argument"),
    (["create", "x", "-m", "7", "--table", "0 1 zero"],
     "Please specify both major number and minor number."),
    (["create", "x", "--table", "0 1 zero", "--notable"],
     "--table and --notable are incompatible."),
    (["--addnodeonresume", "--addnodeoncreate", "ls"],
     "--addnodeonresume and --addnodeoncreate are incompatible."),
    (["--manglename", "bogus", "ls"], "Unknown name mangling mode."),
    (["ls", "-o", "bogus"], "Option not recognised: bogus."),
    (["ls", "--tree", "-o", "ascii,bogus"], "Tree options not recognised: bogus."),
    (["create", "x", "-M", "9", "--table", "0 1 zero"], "Invalid argument for --mode: 9. "),
    (["--readahead", "-5", "ls"], "Negative read ahead value (-5) is not understood."),
])
def test_command_line_errors(dmsetup: Dmsetup, argv: list[str], message: str) -> None:
    r = dmsetup(*argv)
    assert (r.rc, r.out, r.err) == (1, "", message + "\nCouldn't process command line.\n")


def test_verbose_takes_an_argument_as_in_lvm2(dmsetup: Dmsetup) -> None:
    # LVM2's option table gives --verbose a required argument: "version" is eaten by it.
    r = dmsetup("--verbose", "version")
    assert (r.rc, r.err) == (1, USAGE)


def test_options_may_follow_operands_and_double_dash_ends_them(dmsetup: Dmsetup) -> None:
    r = dmsetup("splitname", "a-b", "--", "-x")
    assert r.ok().out == "VG   LV   LVLayer\n                 \n"


def test_dm_dev_dir_must_be_absolute(dmsetup: Dmsetup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DM_DEV_DIR", "relative")
    r = dmsetup("ls")
    assert (r.rc, r.out, r.err) == (1, "", "Invalid DM_DEV_DIR environment variable value.\n")


def _run_own_backend(*argv: str) -> tuple[int, str, str]:
    """dmsetup choosing its driver itself (no transport passed in)."""
    import io

    from devmapper.cli.dmsetup import main

    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), None, io.StringIO(), out, err)
    return rc, out.getvalue(), err.getvalue()


def test_backend_option_and_env(dmsetup: Dmsetup, monkeypatch: pytest.MonkeyPatch) -> None:
    from devmapper import __version__

    rc, out, err = _run_own_backend("--backend", "inprocess", "version")
    assert (rc, out, err) == (0, f"Library version:   {__version__}\n"
                                 "Driver version:    4.47.0\n", "")
    assert _run_own_backend("--backend", "inprocess", "ls") == (0, "No devices found\n", "")
    monkeypatch.setenv("DEVMAPPER_BACKEND", "inprocess")
    rc, out, err = _run_own_backend("targets")
    assert (rc, err) == (0, "") and out.endswith("linear           v1.4.0\n"
                                                 "error            v1.5.0\n")
    monkeypatch.setenv("DEVMAPPER_BACKEND", "bogus")
    rc, out, err = _run_own_backend("ls")
    assert (rc, out) == (1, "")
    assert err == ("DEVMAPPER_BACKEND must be kernel, engine, inprocess or auto\n"
                   "Failure to communicate with kernel device-mapper driver.\n"
                   + ("Check that device-mapper is available in the kernel.\n"
                      if os.geteuid() == 0 else "")
                   + f"Incompatible libdevmapper {__version__} and kernel driver "
                     "(unknown version).\nCommand failed.\n")
    # The option wins over the environment.
    assert _run_own_backend("--backend", "inprocess", "ls")[0] == 0


# ---------------------------------------------------------------- version, targets


def test_version(dmsetup: Dmsetup) -> None:
    from devmapper import __version__

    want = f"Library version:   {__version__}\nDriver version:    4.47.0\n"
    for argv in (["version"], ["--version"], ["-v", "version"], ["-vv", "version"]):
        r = dmsetup(*argv)
        assert r.rc == 0 and r.out.endswith("Driver version:    4.47.0\n"), argv
        assert r.out.startswith(f"Library version:   {__version__}\n")
    assert dmsetup("version").out == want
    r = dmsetup("-vv", "version")
    assert r.out == (f"Library version:   {__version__}\n"
                     "dm version   [ opencount flush ]   [16384] (*1)\n"
                     "dm version   [ opencount flush ]   [16384] (*1)\n"
                     "Driver version:    4.47.0\n")


def test_version_switch_and_command_set_up(dmsetup: Dmsetup, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """As verified in the guest: --version skips the checks; the command repeats with
    --count, and runs the udev set-up (DM_DEV_DIR messages, DM_UDEV_COOKIE errors)."""
    from devmapper import __version__

    once = f"Library version:   {__version__}\nDriver version:    4.47.0\n"
    assert (dmsetup("--version", "foo").rc, dmsetup("--version", "foo").out) == (0, once)
    assert dmsetup("version", "--count", "2").out == once * 2
    monkeypatch.setenv("DM_UDEV_COOKIE", "bad")
    assert (dmsetup("version").err, dmsetup("version").out) == ("Incorrect cookie value.\n", once)
    monkeypatch.delenv("DM_UDEV_COOKIE")
    monkeypatch.setenv("DM_DEV_DIR", str(tmp_path))
    r = dmsetup("version", "-vv")
    assert r.out.startswith(f"The path {tmp_path} used for creating device nodes that is set "
                            "via DM_DEV_DIR environment variable differs from the path /dev/ "
                            "that is used by udev. All warnings about udev not working "
                            "correctly while processing particular nodes will be suppressed. "
                            "These nodes and symlinks will be managed in each directory "
                            "separately.\nDM udev checking disabled\nLibrary version:   ")


def test_targets_and_target_version(dmsetup: Dmsetup) -> None:
    r = dmsetup("targets").ok()
    assert "linear           v1.4.0\n" in r.out and "zero             v1.1.0\n" in r.out
    r = dmsetup("target-version", "linear", "zero").ok()
    assert r.out == "linear           v1.4.0\nzero             v1.1.0\n"
    r = dmsetup("target-version", "nosuch")
    assert (r.rc, r.err) == (1, "device-mapper: target-version ioctl on nosuch  failed: "
                                "Invalid argument\nCommand failed.\n")


# ---------------------------------------------------------------- create


def test_create_table_forms(dmsetup: Dmsetup, tmp_path: Path) -> None:
    dmsetup("create", "t1", "--table", "0 10 zero").ok()
    dmsetup("create", "t2", stdin="0 10 zero\n# comment\n\n10 10 error # trailing\n").ok()
    table = tmp_path / "t.txt"
    table.write_text("0 10 zero\n10 10 error\n")
    dmsetup("create", "t3", str(table)).ok()
    assert dmsetup("table", "t1").out == "0 10 zero \n"
    assert dmsetup("table", "t2").out == "0 10 zero \n10 10 error \n"
    assert dmsetup("table", "t3").out == "0 10 zero \n10 10 error \n"
    dmsetup("create", "t4", "--table", "0 10 zero\n10 10 error\n20 5 zero").ok()
    assert dmsetup("table", "t4").out == "0 10 zero \n10 10 error \n20 5 zero \n"
    r = dmsetup("create", "t5", "--table", "0 10 zero\nbad")
    assert r.err == "Invalid format on line 2 of table .\nCommand failed.\n"


@pytest.mark.parametrize(("argv", "stdin", "err"), [
    (["create", "d", "--table", "foo"], "", "Invalid format on line 1 of table .\n"),
    (["create", "d", "--table", "0 100"], "", "Invalid format on line 1 of table .\n"),
    (["create", "d"], "0 10 zero\nbad line\n", "Invalid format on line 2 of table on stdin.\n"),
    (["create", "d", "/nonexistent"], "", "Couldn't open '/nonexistent' for reading.\n"),
    (["create", "x/y", "--table", "0 100 zero"], "", 'Name "x/y" invalid. It contains "/".\n'),
    (["create", "d", "--table", "0 1 abcdefghijklmnopq"], "",
     "Target type name abcdefghijklmnopq is too long.\n"),
    (["create"], "", "Please provide a name for the new device.\n"),
    (["create", "n" * 128, "--table", "0 1 zero"], "", f'Name "{"n" * 128}" too long.\n'),
])
def test_create_input_errors(dmsetup: Dmsetup, argv: list[str], stdin: str, err: str) -> None:
    r = dmsetup(*argv, stdin=stdin)
    assert (r.rc, r.out, r.err) == (1, "", err + "Command failed.\n")
    assert dmsetup("ls").out == "No devices found\n"


def test_create_driver_errors(dmsetup: Dmsetup) -> None:
    dmsetup("create", "a", "--table", "0 10 zero").ok()
    r = dmsetup("create", "a", "--table", "0 10 zero")
    assert r.err == ("device-mapper: create ioctl on a  failed: Device or resource busy\n"
                     "Command failed.\n")
    dmsetup("create", "u", "-u", "myuuid-1", "--table", "0 10 zero").ok()
    r = dmsetup("create", "e", "-u", "myuuid-1", "--table", "0 100 zero")
    assert r.err == ("device-mapper: create ioctl on e myuuid-1 failed: Device or resource "
                     "busy\nCommand failed.\n")
    r = dmsetup("create", "d", "--table", "0 100 bogus /dev/loop0 0")
    assert (r.rc, r.err) == (1, "device-mapper: reload ioctl on d (254:2) failed: Invalid "
                                "argument\nCommand failed.\n")
    # the failed device was removed again
    assert dmsetup("ls").out == "a\t(254:0)\nu\t(254:1)\n"


def test_create_options(dmsetup: Dmsetup) -> None:
    dmsetup("create", "g", "-r", "--table", "0 10 zero").ok()
    assert "State:             ACTIVE (READ-ONLY)\n" in dmsetup("info", "g").out
    dmsetup("create", "h", "-j", "254", "-m", "7", "--table", "0 10 zero").ok()
    assert "Major, minor:      254, 7\n" in dmsetup("info", "h").out
    dmsetup("create", "u", "--uuid", "some-uuid", "--table", "0 10 zero").ok()
    assert dmsetup("info", "u").out.endswith("UUID: some-uuid\n\n")
    r = dmsetup("create", "v", "-v", "--table", "0 10 zero").ok()
    assert r.out.startswith("Name:              v\nState:             ACTIVE\n")


def test_create_notable_and_load(dmsetup: Dmsetup) -> None:
    dmsetup("create", "f", "--notable").ok()
    r = dmsetup("info", "f")
    assert r.rc == 0
    assert r.out == ("Name:              f\nState:             ACTIVE\nTables present:    None\n"
                     "Open count:        0\nEvent number:      0\nMajor, minor:      254, 0\n"
                     "Number of targets: 0\n\n")
    assert r.err == "/dev/mapper/f: open failed: No such file or directory\n"
    assert dmsetup("table", "f").out == "\n"
    assert dmsetup("status", "f").out == "\n"
    assert dmsetup("deps", "f").out == "0 dependencies\t:\n"
    dmsetup("load", "f", "--table", "0 200 zero").ok()
    assert "Tables present:    INACTIVE\n" in dmsetup("info", "f").out
    assert dmsetup("table", "--inactive", "f").out == "0 200 zero \n"
    assert dmsetup("info", "-c", "f").out == HEADINGS + (
        "f                254   0 -I-w    0    0      0                                 \n")
    dmsetup("resume", "f").ok()
    assert "Tables present:    LIVE\n" in dmsetup("info", "f").out


def test_create_concise(dmsetup: Dmsetup) -> None:
    dmsetup("create", "--concise", "c1,,,,0 10 zero;c2,uuid2,,ro,0 10 zero,10 10 error").ok()
    assert dmsetup("ls").out == "c1\t(254:0)\nc2\t(254:1)\n"
    assert dmsetup("table", "--concise").out == ("c1,,0,rw,0 10 zero ;"
                                                 "c2,uuid2,1,ro,0 10 zero ,10 10 error \n")
    assert dmsetup("table", "--concise", "c2").out == "c2,uuid2,1,ro,0 10 zero ,10 10 error \n"
    dmsetup("create", "--concise", stdin="c7,,,,0 10 zero").ok()
    dmsetup("create", "--concise", "c8,,50,,0 10 zero").ok()
    assert "Major, minor:      254, 50\n" in dmsetup("info", "c8").out


@pytest.mark.parametrize(("argv", "err"), [
    (["create", "--concise", "c3,,,,0 10 zero;c4"],
     "Five comma-separated fields are required for each device\n"
     "Parsed 1 fields: name: c4 uuid: (null) minor: (null) flags: (null) table: (null)\n"),
    (["create", "--concise", "c5,,,xx,0 10 zero"],
     "Invalid flags parameter 'xx' must be 'ro' or 'rw' or empty.\n"),
    (["create", "--concise", "-u", "x", "c6,,,,0 10 zero"],
     "--concise is incompatible with --[no]table, --minor, --uuid and --inactive.\n"),
    (["create", "--concise", "a", "b"], "dmsetup create --concise takes at most one argument\n"),
    (["create", "--concise", "c9,,,,0 1 zero\\"],
     "Backslash must be followed by another character at end of string.\n"
     "Parsed 5 fields: name: c9 uuid:  minor:  flags:  table: 0 1 zero\n"),
])
def test_create_concise_errors(dmsetup: Dmsetup, argv: list[str], err: str) -> None:
    r = dmsetup(*argv)
    assert (r.rc, r.err) == (1, err + "Command failed.\n")


# ---------------------------------------------------------------- remove


def test_remove_variants(dmsetup: Dmsetup) -> None:
    two_devices(dmsetup)
    r = dmsetup("remove", "a")
    assert r.err == ("device-mapper: remove ioctl on a  failed: Device or resource busy\n"
                     "Command failed.\n")
    dmsetup("remove", "b", "a").ok()
    r = dmsetup("remove", "nosuch")
    assert r.err == ("device-mapper: remove ioctl on nosuch  failed: No such device or "
                     "address\nCommand failed.\n")


def test_remove_retry_and_force_and_deferred(dmsetup: Dmsetup) -> None:
    from devmapper.blockio import EngineBlock

    dmsetup("create", "a", "--table", "0 100 zero").ok()
    holder = EngineBlock(dmsetup.engine.by_name["a"])
    busy = "device-mapper: remove ioctl on a  failed: Device or resource busy\n"
    r = dmsetup("remove", "--retry", "a")
    assert (r.rc, r.err) == (1, busy * 25 + "Command failed.\n")
    r = dmsetup("remove", "-f", "a")
    assert (r.rc, r.err) == (1, busy + "Command failed.\n")
    assert dmsetup("table", "a").out == "0 100 error \n"
    dmsetup("remove", "--deferred", "a").ok()
    assert "State:             ACTIVE (DEFERRED REMOVE)\n" in dmsetup("info", "a").out
    dmsetup("message", "a", "0", "@cancel_deferred_remove").ok()
    assert "State:             ACTIVE\n" in dmsetup("info", "a").out
    holder.close()
    r = dmsetup("remove", "-f", "s")
    assert r.err == ("device-mapper: table ioctl on s  failed: No such device or address\n"
                     "device-mapper: reload ioctl on s  failed: No such device or address\n"
                     "device-mapper: remove ioctl on s  failed: No such device or address\n"
                     "Command failed.\n")


def test_remove_all(dmsetup: Dmsetup) -> None:
    from devmapper.blockio import EngineBlock

    two_devices(dmsetup)
    dmsetup("remove_all").ok()
    assert dmsetup("ls").out == "No devices found\n"
    dmsetup("create", "a", "--table", "0 100 zero").ok()
    holder = EngineBlock(dmsetup.engine.by_name["a"])
    r = dmsetup("remove_all", "-f")
    assert (r.rc, r.err) == (0, "Unable to remove 1 device(s).\n")
    assert dmsetup("table", "a").out == "0 100 error \n"
    holder.close()
    dmsetup("remove_all", "-f").ok()


# ---------------------------------------------------------------- suspend, resume, load, clear


def test_suspend_resume_reload_clear(dmsetup: Dmsetup) -> None:
    dmsetup("create", "f", "--table", "0 10 zero").ok()
    dmsetup("suspend", "f").ok()
    assert "State:             SUSPENDED\n" in dmsetup("info", "f").out
    assert dmsetup("info", "-c", "-o", "name,attr,suspended", "f").out == (
        "Name             Stat Suspended\nf                L-sw Suspended\n")
    dmsetup("reload", "f", "--table", "0 300 error").ok()
    assert "Tables present:    LIVE & INACTIVE\n" in dmsetup("info", "f").out
    dmsetup("clear", "f").ok()
    assert "Tables present:    LIVE\n" in dmsetup("info", "f").out
    dmsetup("resume", "f").ok()
    dmsetup("suspend", "--noflush", "--nolockfs", "f").ok()
    dmsetup("resume", "--noflush", "f").ok()
    r = dmsetup("suspend", "-v", "f").ok()
    assert r.out.startswith("Name:              f\nState:             SUSPENDED\n")
    r = dmsetup("resume", "-v", "f").ok()
    assert "State:             ACTIVE\n" in r.out


@pytest.mark.parametrize("cmd", ["suspend", "resume", "clear", "wait"])
def test_simple_commands_on_missing_device(dmsetup: Dmsetup, cmd: str) -> None:
    r = dmsetup(cmd, "nosuch")
    ioctl = {"wait": "waitevent"}.get(cmd, cmd)
    assert (r.rc, r.err) == (1, f"device-mapper: {ioctl} ioctl on nosuch  failed: No such "
                                "device or address\nCommand failed.\n")


def test_load_errors(dmsetup: Dmsetup) -> None:
    r = dmsetup("load", "nosuch", "--table", "0 1 zero")
    assert r.err == ("device-mapper: reload ioctl on nosuch  failed: No such device or "
                     "address\nCommand failed.\n")
    r = dmsetup("load", "m1", "--notable")
    assert r.err == "--notable only available when creating new device.\nCommand failed.\n"
    assert dmsetup("load").err == "Please specify device.\nCommand failed.\n"
    r = dmsetup("load", "-u", "x", "a", "b")
    assert r.err == "Too many command line arguments.\nCommand failed.\n"


def test_wipe_table(dmsetup: Dmsetup) -> None:
    dmsetup("create", "w", "--table", "0 10 zero\n10 5 zero").ok()
    dmsetup("wipe_table", "w").ok()
    assert dmsetup("table", "w").out == "0 15 error \n"
    r = dmsetup("wipe_table", "nosuch")
    assert r.err == ("device-mapper: table ioctl on nosuch  failed: No such device or "
                     "address\ndevice-mapper: reload ioctl on nosuch  failed: No such device or"
                     " address\nCommand failed.\n")


# ---------------------------------------------------------------- rename, message, geometry


def test_rename(dmsetup: Dmsetup) -> None:
    dmsetup("create", "a", "--table", "0 10 zero").ok()
    dmsetup("create", "h", "--table", "0 10 zero").ok()
    dmsetup("rename", "h", "hh").ok()
    r = dmsetup("rename", "hh", "a")
    assert r.err == ("device-mapper: rename ioctl on hh  failed: Device or resource busy\n"
                     "Command failed.\n")
    r = dmsetup("rename", "nosuch", "zz")
    assert r.err == ("device-mapper: rename ioctl on nosuch  failed: No such device or "
                     "address\nCommand failed.\n")
    dmsetup("rename", "hh", "--setuuid", "newuuid").ok()
    out = dmsetup("info", "hh").out
    assert "Event number:      2\n" in out and out.endswith("UUID: newuuid\n\n")
    r = dmsetup("rename", "hh", "--setuuid", "other")
    assert r.err == ("device-mapper: rename ioctl on hh  failed: Invalid argument\n"
                     "Command failed.\n")
    r = dmsetup("rename", "hh", "x/y")
    assert r.err == 'Name "x/y" invalid. It contains "/".\nCommand failed.\n'
    r = dmsetup("rename", "hh", "")
    assert r.err == "Non empty new name is required.\nCommand failed.\n"


def test_message_and_setgeometry(dmsetup: Dmsetup) -> None:
    dmsetup("create", "hh", "--table", "0 10 zero").ok()
    einval = "device-mapper: message ioctl on hh  failed: Invalid argument\nCommand failed.\n"
    assert dmsetup("message", "hh", "0", "hello").err == einval
    assert dmsetup("message", "hh", "x", "hello").err == "Invalid sector.\nCommand failed.\n"
    assert dmsetup("message", "hh", "0").err == "No message supplied.\n" + einval
    dmsetup("setgeometry", "hh", "1", "2", "3", "0").ok()
    r = dmsetup("setgeometry", "hh", "100000", "2", "3", "0")
    assert r.err == ("device-mapper: setgeometry ioctl on hh  failed: Invalid argument\n"
                     "Command failed.\n")


# ---------------------------------------------------------------- info


def test_info_long_and_missing(dmsetup: Dmsetup) -> None:
    assert dmsetup("info").out == "No devices found\n"
    dmsetup("create", "a", "--table", "0 100 zero").ok()
    assert dmsetup("info", "a").ok().out == INFO_A
    assert dmsetup("info").out == INFO_A
    assert dmsetup("info", "-j", "254", "-m", "0").out == INFO_A
    for argv in (["info", "nosuch"], ["info", "-c", "nosuch"], ["info", "-u", "nosuch"],
                 ["info", "-j", "254", "-m", "99"], ["status", "nosuch"]):
        r = dmsetup(*argv)
        assert (r.rc, r.err) == (1, "Device does not exist.\nCommand failed.\n"), argv
    r = dmsetup("info", "x/y")
    assert r.err == "Device x/y not found\nCommand failed.\n"


def test_info_columns(dmsetup: Dmsetup) -> None:
    two_devices(dmsetup)
    rows = ("a                254   0 L--w    1    1      0                                 \n"
            "b                254   1 L--w    0    1      0 myuuid-1                        \n")
    assert dmsetup("info", "-c").out == HEADINGS + rows
    assert dmsetup("info", "-c", "a").out == HEADINGS + rows.splitlines(True)[0]
    assert dmsetup("info", "-c", "--noheadings").out == (
        "a:254:0:L--w:1:1:0:\nb:254:1:L--w:0:1:0:myuuid-1\n")
    assert dmsetup("info", "-c", "-o", "name,uuid,devno,blkdevname", "a").out == (
        "Name             UUID                             DevNo BlkDevName      \n"
        "a                                                 254:0 dm-0            \n")
    assert dmsetup("info", "-c", "-o", "+devno", "a").out == (
        "Name             Maj Min Stat Open Targ Event  UUID                             DevNo\n"
        "a                254   0 L--w    1    1      0                                  254:0\n")
    assert dmsetup("info", "-c", "--separator", ",", "a").out == (
        "Name,Maj,Min,Stat,Open,Targ,Event,UUID\na,254,0,L--w,1,1,0,\n")
    assert dmsetup("info", "-c", "--rows", "a").out == (
        "Name a\nMaj 254\nMin 0\nStat L--w\nOpen 1\nTarg 1\nEvent 0\nUUID \n")
    assert dmsetup("info", "-c", "--nameprefixes", "a").out == (
        "Name Maj Min Stat Open Targ Event UUID\nDM_NAME='a' DM_MAJOR='254' DM_MINOR='0' "
        "DM_ATTR='L--w' DM_OPEN='1' DM_SEGMENTS='1' DM_EVENTS='0' DM_UUID=''\n")
    assert dmsetup("info", "-c", "--nameprefixes", "--noheadings", "a").out == (
        "DM_NAME='a':DM_MAJOR='254':DM_MINOR='0':DM_ATTR='L--w':DM_OPEN='1':DM_SEGMENTS='1':"
        "DM_EVENTS='0':DM_UUID=''\n")
    assert dmsetup("info", "-c", "--sort", "-name").out == HEADINGS + "".join(
        reversed(rows.splitlines(True)))
    assert dmsetup("info", "-c", "-O", "minor").out == HEADINGS + rows


def test_info_columns_all_fields(dmsetup: Dmsetup) -> None:
    two_devices(dmsetup)
    r = dmsetup("info", "-c", "-o", "name,devs_used,names_using_dev,device_ref_count,"
                "devnos_used,blkdevs_used,device_count,devnos_using_dev")
    assert r.ok().out == (
        "Name             DevNamesUsed     RefNames #Refs DevNosUsed       BlkDevNamesUsed  "
        "#Devs RefDevNos\n"
        "a                                 b            1                                       "
        "0 254:1    \n"
        "b                a                             0 254:0            dm-0                 "
        "1          \n")
    r = dmsetup("info", "-c", "-o", "name,attr,tables_loaded,suspended,readonly,major,minor,"
                "open,segments,events,read_ahead,mangled_name,unmangled_name,mangled_uuid,"
                "unmangled_uuid")
    assert r.ok().out == (
        "Name             Stat Tables Suspended Read-only Maj Min Open Targ Event  RAhead "
        "MangledName      UnmangledName    MangledUUID                      UnmangledUUID      "
        "             \n"
        "a                L--w Live   Active    Writeable 254   0    1    1      0    256 a"
        "                a                                                                     "
        "            \n"
        "b                L--w Live   Active    Writeable 254   1    0    1      0    256 b"
        "                b                myuuid-1                         myuuid-1           "
        "             \n")
    assert dmsetup("info", "-c", "-o", "subsystem,vg_name,lv_name,lv_layer").out == (
        "Subsys VG   LV   LVLayer\n                        \nmyuuid                  \n")


def test_info_columns_errors(dmsetup: Dmsetup) -> None:
    r = dmsetup("info", "-c", "-o", "bogus")
    assert r.rc == 1 and r.err.endswith(" \nUnrecognised field: bogus\n")
    assert r.err.startswith("Mapped Device Name Fields\n")
    r = dmsetup("info", "-c", "-O", "bogus")
    assert r.rc == 1 and r.err.endswith(" \ndm_report: Unrecognised field: bogus\n")
    r = dmsetup("info", "-c", "-o", "help")
    assert (r.rc, r.out) == (0, "No devices found\n")
    assert r.err.endswith("  ?                     - Show help.\n \n")


def test_select(dmsetup: Dmsetup) -> None:
    two_devices(dmsetup)
    assert dmsetup("info", "-c", "-S", "name=b").out == HEADINGS + (
        "b                254   1 L--w    0    1      0 myuuid-1                        \n")
    assert dmsetup("info", "-c", "-S", "open>0").out == HEADINGS + (
        "a                254   0 L--w    1    1      0                                 \n")
    assert dmsetup("info", "-c", "-S", "name=~^b", "-o", "name").out == "Name            \nb   " \
        "            \n"
    assert dmsetup("info", "-c", "-S", "uuid!='' || minor=0", "-o", "name").out == (
        "Name            \na               \nb               \n")
    assert dmsetup("info", "-c", "-S", "!(name=a)", "-o", "name,selected").out == (
        "Name             Selected\na                       0\nb                       1\n")
    # selection on another command: -S picks the devices, run as one of several
    r = dmsetup("table", "-S", "name=a")
    assert r.ok().out == "a: 0 100 zero \n"
    r = dmsetup("info", "-c", "-S", "bogus=1")
    assert r.rc == 1 and r.err.endswith(
        " \nUnrecognised selection field: bogus\nSelection syntax error at 'bogus=1'.\n"
        "Use 'help' for selection to get more help.\n")
    r = dmsetup("info", "-c", "-S", "help")
    assert r.rc == 0 and r.err.endswith("       }  - List subset end\n \n")
    r = dmsetup("info", "-c", "-S", "name=a x")
    assert r.err == ("Expecting logical operator\nSelection syntax error at 'x'.\n"
                     "Use 'help' for selection to get more help.\n")


# ---------------------------------------------------------------- status, table, deps, wait


def test_status_table_deps(dmsetup: Dmsetup) -> None:
    for cmd in ("status", "table", "deps"):
        assert dmsetup(cmd).out == "No devices found\n"
    two_devices(dmsetup)
    assert dmsetup("status").out == "a: 0 100 zero \nb: 0 50 linear \n"
    assert dmsetup("table").out == "a: 0 100 zero \nb: 0 50 linear 254:0 10\n"
    assert dmsetup("table", "b").out == "0 50 linear 254:0 10\n"
    assert dmsetup("deps").out == "a: 0 dependencies\t:\nb: 1 dependencies\t: (254, 0)\n"
    assert dmsetup("deps", "-o", "devname", "b").out == "1 dependencies\t: (a)\n"
    assert dmsetup("deps", "-o", "blkdevname", "b").out == "1 dependencies\t: (dm-0)\n"
    assert dmsetup("deps", "-o", "devno", "b").out == "1 dependencies\t: (254, 0)\n"
    assert dmsetup("table", "--target", "zero").out == "a: 0 100 zero \n"
    assert dmsetup("status", "--target", "striped").out == ""
    r = dmsetup("status", "-v", "a")
    assert r.out == INFO_A.replace("Open count:        0", "Open count:        1") + (
        "0 100 zero \n")
    r = dmsetup("table", "nosuch")
    assert r.err == ("device-mapper: table ioctl on nosuch  failed: No such device or "
                     "address\nCommand failed.\n")
    r = dmsetup("deps", "nosuch")
    assert r.err == ("device-mapper: deps ioctl on nosuch  failed: No such device or "
                     "address\nCommand failed.\n")
    r = dmsetup("table", "-u", "nosuchuuid")
    assert r.err == ("device-mapper: table ioctl on  nosuchuuid failed: No such device or "
                     "address\nCommand failed.\n")
    assert dmsetup("status", "-j", "254", "-m", "0").out == "0 100 zero \n"
    assert dmsetup("deps", "-o", "bogus", "a").err == (
        "Option not recognised: bogus.\nCouldn't process command line.\n")


def test_table_hides_crypt_keys_unless_showkeys() -> None:
    from devmapper.cli.display import _hide_crypt_key, _hide_key

    params = "aes-cbc-essiv:sha256 0123456789abcdef 0 7:1 0"
    assert _hide_crypt_key(params) == "aes-cbc-essiv:sha256 0000000000000000 0 7:1 0"
    keyring = "aes-xts-plain64 :32:logon:cryptsetup:x 0 7:1 0"
    assert _hide_crypt_key(keyring) == keyring
    assert _hide_key("1 internal_hash:sha256:abcd x", "internal_hash:") == \
        "1 internal_hash:sha256:0000 x"


def test_wait(dmsetup: Dmsetup) -> None:
    dmsetup("create", "hh", "--table", "0 10 zero").ok()
    dmsetup("rename", "hh", "--setuuid", "u").ok()
    dmsetup("wait", "hh", "0").ok()
    r = dmsetup("wait", "-v", "hh", "0").ok()
    assert "Event number:      1\n" in r.out
    assert dmsetup("wait").err == "No device specified.\nCommand failed.\n"


# ---------------------------------------------------------------- ls


def test_ls(dmsetup: Dmsetup) -> None:
    assert dmsetup("ls").out == "No devices found\n"
    two_devices(dmsetup)
    assert dmsetup("ls").out == "a\t(254:0)\nb\t(254:1)\n"
    assert dmsetup("ls", "-o", "blkdevname").out == "a\t(dm-0)\nb\t(dm-1)\n"
    assert dmsetup("ls", "-o", "devname").out == "a\t(a)\nb\t(b)\n"
    assert dmsetup("ls", "--target", "linear").out == "b\t(254, 1)\n"
    r = dmsetup("ls", "--exec", "echo")
    assert r.ok().out == "/dev/mapper/a\n/dev/mapper/b\n"
    r = dmsetup("ls", "--exec", "echo X", "-v")
    # the children print straight to the descriptor, before dmsetup's buffered output
    assert r.ok().out == "X /dev/mapper/a\nX /dev/mapper/b\na\t(254, 0)\nb\t(254, 1)\n"


def test_ls_tree(dmsetup: Dmsetup) -> None:
    two_devices(dmsetup)
    assert dmsetup("ls", "--tree", "-o", "ascii").out == "b (254:1)\n `-a (254:0)\n"
    assert dmsetup("ls", "--tree", "-o", "utf").out == "b (254:1)\n \u2514\u2500a (254:0)\n"
    assert dmsetup("ls", "--tree", "-o", "ascii,compact").out == "b (254:1)---a (254:0)\n"
    assert dmsetup("ls", "--tree", "-o", "ascii,inverted").out == "a (254:0)\n `-b (254:1)\n"
    assert dmsetup("ls", "--tree", "-o", "ascii,active,open,rw,uuid").out == (
        "b (254:1) [ACTIVE, RW, 0, myuuid-1]\n `-a (254:0) [ACTIVE, RW, 1, ]\n")
    assert dmsetup("ls", "--tree", "-o", "ascii,blkdevname,nodevice").out == (
        "b <dm-1>\n `-a <dm-0>\n")
    assert dmsetup("ls", "--tree", "-o", "vt100").out == (
        "b (254:1)\n \x1b(0\x0fmq\x1b(B a (254:0)\n".replace(" a (", "a ("))


def test_ls_tree_truncates_at_80_columns(dmsetup: Dmsetup) -> None:
    long = "x" * 90
    dmsetup("create", long, "--table", "0 10 zero").ok()
    out = dmsetup("ls", "--tree", "-o", "ascii").out
    assert out == "x" * 79 + "...\n"
    assert dmsetup("ls", "--tree", "-o", "ascii,notrunc").out == long + " (254:0)\n"


# ---------------------------------------------------------------- names and mangling


def test_mangling(dmsetup: Dmsetup, monkeypatch: pytest.MonkeyPatch) -> None:
    dmsetup("create", "sp ace", "--table", "0 10 zero").ok()
    assert dmsetup("ls").out == "sp ace\t(254:0)\n"
    assert dmsetup("--manglename", "none", "ls").out == "sp\\x20ace\t(254:0)\n"
    assert dmsetup("info", "-c", "-o", "name,mangled_name,unmangled_name").out == (
        "Name             MangledName      UnmangledName   \n"
        "sp ace           sp\\x20ace        sp ace          \n")
    dmsetup("--manglename", "none", "create", "no ne", "--table", "0 10 zero").ok()
    r = dmsetup("ls")
    assert (r.rc, r.err) == (1, 'The name "no ne" should be mangled but it contains '
                                "blacklisted characters.\nCommand failed.\n")
    assert dmsetup("mangle").out == ("no ne: renaming to no\\x20ne\n"
                                     "sp\\x20ace: [no UUID]: name already in correct form\n")
    assert dmsetup("ls").out == "no ne\t(254:1)\nsp ace\t(254:0)\n"
    monkeypatch.setenv("DM_DEFAULT_NAME_MANGLING_MODE", "none")
    assert dmsetup("ls").out == "no\\x20ne\t(254:1)\nsp\\x20ace\t(254:0)\n"


def test_splitname(dmsetup: Dmsetup) -> None:
    assert dmsetup("splitname", "vg-lv").out == "VG   LV   LVLayer\nvg   lv          \n"
    assert dmsetup("splitname", "vg-lv-layer").out == "VG   LV   LVLayer\nvg   lv   layer  \n"
    assert dmsetup("splitname", "vg--x-lv--y", "LVM").out == (
        "VG   LV   LVLayer\nvg-x lv-y        \n")
    assert dmsetup("splitname", "foo-bar", "OTHER").out == "VG   LV   LVLayer\n                 \n"
    assert dmsetup("splitname", "vg-lv", "--noheadings", "--separator", ":").out == "vg:lv:\n"
    assert dmsetup("splitname", "vg-lv", "-o", "vg_name,lv_name,lv_layer,subsystem").out == (
        "VG   LV   LVLayer Subsys\nvg   lv           LVM   \n")


# ---------------------------------------------------------------- udev


def test_udev_commands_without_udev(dmsetup: Dmsetup) -> None:
    r = dmsetup("udevflags", "0x0d4d0001").ok()
    assert r.out == ("DM_UDEV_DISABLE_DM_RULES_FLAG='1'\nDM_UDEV_DISABLE_DISK_RULES_FLAG='1'\n"
                     "DM_UDEV_DISABLE_OTHER_RULES_FLAG='1'\nDM_UDEV_PRIMARY_SOURCE_FLAG='1'\n"
                     "DM_SUBSYSTEM_UDEV_FLAG0='1'\nDM_SUBSYSTEM_UDEV_FLAG2='1'\n"
                     "DM_SUBSYSTEM_UDEV_FLAG3='1'\n")
    assert "DM_UDEV_FLAG7='1'\n" in dmsetup("udevflags", "0xffff0001").out
    for bad in ("0", "abc", "0x", "1_0"):
        assert dmsetup("udevflags", bad).err == "Incorrect cookie value.\nCommand failed.\n"
    # Cookies are System V semaphores, udev or not.
    r = dmsetup("udevcomplete", "0x0d4d0001")
    assert (r.rc, r.out, r.err) == (1, "DM_COOKIE_COMPLETED=0xd4d0001   \n",
                                    "Could not find notification semaphore identified by "
                                    "cookie value 223150081 (0xd4d0001)\nCommand failed.\n")
    # flags only, no cookie: nothing to signal
    assert dmsetup("udevcomplete", "0x00010000").ok().out == "DM_COOKIE_COMPLETED=0x10000     \n"
    cookie = dmsetup("udevcreatecookie").ok().out
    assert cookie.startswith("0x0D4D") and len(cookie) == 11
    assert f"0x{int(cookie, 16):<10x} " in dmsetup("udevcookies").out
    dmsetup("udevreleasecookie", cookie.strip()).ok()
    assert f"0x{int(cookie, 16):<10x} " not in dmsetup("udevcookies").out
    assert dmsetup("udevreleasecookie").err == (
        "No udev transaction cookie given.\nCommand failed.\n")
    r = dmsetup("udevcookies").ok()
    assert r.out.startswith("Cookie       Semid      Value      Last semop time           "
                            "Last change time\n")
    r = dmsetup("udevcomplete_all", stdin="")
    assert r.rc == 0
    assert r.out == ("Do you really want to continue? [y/n]: \n"
                     "Semaphores with keys prefixed by 3405 (0xd4d) NOT destroyed.\n")
    assert r.err == ("WARNING: This operation will destroy all semaphores with keys that have "
                     "a prefix 3405 (0xd4d).\n")
    r = dmsetup("udevcomplete_all", "10", stdin="x\nn\n")
    assert r.out.count("Do you really want to continue? [y/n]: ") == 2
    assert "older than 10 minutes with keys" in r.err
    assert dmsetup("udevcomplete_all", "x").err == (
        "Failed to read age_in_minutes parameter.\nCommand failed.\n")


def test_udevcomplete_all_yes_and_cookie_semaphores(dmsetup: Dmsetup) -> None:
    from devmapper.cli import udev

    made = udev.create_cookie(lambda m: None, lambda m: None)
    assert made is not None
    cookie, _semid = made
    r = dmsetup("udevcookies").ok()
    assert f"0x{cookie:<10x} " in r.out
    r = dmsetup("udevcomplete_all", "-y").ok()
    assert r.out.startswith("1 semaphores with keys prefixed by 3405 (0xd4d) destroyed.") or \
        " destroyed. " in r.out
    assert f"0x{cookie:<10x} " not in dmsetup("udevcookies").out


# ---------------------------------------------------------------- misc


def test_mknodes_is_a_no_op_for_the_engine(dmsetup: Dmsetup) -> None:
    dmsetup("mknodes").ok()
    dmsetup("create", "a", "--table", "0 1 zero").ok()
    dmsetup("mknodes", "a").ok()


def test_measure(dmsetup: Dmsetup) -> None:
    dmsetup("create", "a", "--table", "0 1 zero").ok()
    r = dmsetup("measure", "a")
    assert r.rc == 0 and r.out.startswith("0 1 zero")


def test_verbose_debug_lines(dmsetup: Dmsetup) -> None:
    dmsetup("create", "a", "--table", "0 100 zero").ok()
    r = dmsetup("-vv", "info", "a")
    assert r.out == ("dm version   [ opencount flush ]   [16384] (*1)\n"
                     "dm info a  [ opencount flush ]   [16384] (*1)\n"
                     "Name:              a\nState:             ACTIVE\n"
                     "a (254:0): read ahead is 256\n" + INFO_A[INFO_A.index("Read Ahead"):])
    r = dmsetup("-vvv", "ls")
    lines = r.out.splitlines()
    assert lines[0] == "Timestamp:       0.000000000 seconds"
    assert lines[1:3] == ["dm version   [ opencount flush ]   [16384] (*1)",
                          "dm names   [ opencount flush ]   [16384] (*1)"]
    assert lines[3].startswith("Timestamp: ") and lines[4] == "a\t(254:0)"
    r = dmsetup("-vv", "create", "b", "--table", "0 1 zero")
    assert r.out.splitlines()[:4] == ["dm version   [ opencount flush ]   [16384] (*1)",
                                  "dm create b  [ opencount flush ]   [16384] (*1)",
                                  "dm reload   (254:1) [ opencount flush ]   [16384] (*1)",
                                  "dm resume b  [ opencount flush ]   [16384] (*1)"]


def test_stats(dmsetup: Dmsetup) -> None:
    from devmapper.cli.stats import usage_text as stats_usage

    dmsetup("create", "a", "--table", "0 1 zero").ok()
    assert dmsetup("stats", "list").ok().out == ""
    assert dmsetup("stats", "report").ok().out == ""
    r = dmsetup("stats", "help")
    assert r.rc == 0 and r.err.startswith(stats_usage() + "Mapped Device Name Fields\n")
    r = dmsetup("stats", "bogus")
    assert r.rc == 1 and r.err.startswith("Unknown stats command.\n" + stats_usage())
    assert r.err.endswith(" \nCommand failed.\n")
    r = dmsetup("stats", "create", "a")
    assert r.rc == 1 and r.err.endswith("Command failed.\n")
    assert dmsetup("stats").err.startswith("Incorrect number of arguments.\n")


def test_count_repeats_reports(dmsetup: Dmsetup) -> None:
    dmsetup("create", "a", "--table", "0 1 zero").ok()
    r = dmsetup("info", "-c", "-o", "name", "--count", "2", "--interval", "1").ok()
    assert r.out == "Name            \na               \n\nName            \na               \n"
    assert dmsetup("info", "-c", "-o", "name", "--count", "-1").err == (
        "Count must be zero or greater.\nCouldn't process command line.\n")
