"""The pieces of dmsetup that copy C behaviour exactly: getopt, atoi, strtoul, mangling,
LVM name splitting, /dev/mapper nodes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from devmapper.cli import mangle, nodes
from devmapper.cli.display import split_name
from devmapper.cli.getopt import NO_ARG, REQUIRED_ARG, GetoptError, LongOpt, getopt_long
from devmapper.cli.options import atoi
from devmapper.cli.udev import parse_cookie

LONG = [LongOpt("table", REQUIRED_ARG, "table"), LongOpt("target", REQUIRED_ARG, "target"),
        LongOpt("tree", NO_ARG, "tree"), LongOpt("verbose", REQUIRED_ARG, "verbose")]


def test_getopt_permutes_and_groups() -> None:
    opts, rest = getopt_long("p", ["ls", "-vv", "--tree", "x", "-ofoo", "--table=1", "--",
                                   "-y"], "vo:", LONG)
    assert opts == [("v", None), ("v", None), ("tree", None), ("o", "foo"), ("table", "1")]
    assert rest == ["ls", "x", "-y"]
    opts, _ = getopt_long("p", ["--tab", "t", "--tr"], "", LONG)
    assert opts == [("table", "t"), ("tree", None)]


@pytest.mark.parametrize(("argv", "msg"), [
    (["--t"], "p: option '--t' is ambiguous; possibilities: '--table' '--target' '--tree'"),
    (["--nope"], "p: unrecognized option '--nope'"),
    (["--tree=1"], "p: option '--tree' doesn't allow an argument"),
    (["--table"], "p: option '--table' requires an argument"),
    (["-x"], "p: invalid option -- 'x'"),
    (["-o"], "p: option requires an argument -- 'o'"),
])
def test_getopt_errors(argv: list[str], msg: str) -> None:
    with pytest.raises(GetoptError) as e:
        getopt_long("p", argv, "vo:", LONG)
    assert str(e.value) == msg


def test_atoi_and_cookies() -> None:
    assert [atoi(s) for s in ("12", " -3x", "abc", "+7", "4294967297")] == [12, -3, 0, 7, 1]
    assert parse_cookie("0x0d4d0001") == 0x0D4D0001
    assert parse_cookie("017") == 15
    assert parse_cookie(" 12") == 12
    for bad in ("0", "", "0x", "08", "12 ", "1_0", "4294967296", "x"):
        assert parse_cookie(bad) is None, bad


def test_mangle_and_unmangle() -> None:
    errors: list[str] = []
    log = errors.append
    assert mangle.mangle("sp ace", "name", mangle.AUTO, log) == "sp\\x20ace"
    assert mangle.mangle("sp\\x20ace", "name", mangle.AUTO, log) == "sp\\x20ace"
    assert mangle.mangle("a b\\x20c", "name", mangle.AUTO, log) is None
    assert errors.pop() == ('The name "a b\\x20c" contains mixed mangled and unmangled '
                           "characters or it's already mangled improperly.")
    assert mangle.mangle("a b\\x20c", "name", mangle.HEX, log) == "a\\x20b\\x5cx20c"
    assert mangle.unmangle("sp\\x20ace", "name", mangle.AUTO, log) == "sp ace"
    assert mangle.unmangle("no ne", "name", mangle.AUTO, log) is None
    assert errors.pop() == ('The name "no ne" should be mangled but it contains blacklisted '
                           "characters.")
    assert mangle.unmangle("no ne", "name", mangle.NONE, log) == "no ne"
    assert not mangle.check_multiple("a\\x5cx20", "name", mangle.AUTO, log)
    assert mangle.mangle("\xe9", "name", mangle.AUTO, log) == "\\xc3\\xa9"
    assert mangle.mangle(" " * 32, "name", mangle.AUTO, log) is None
    assert errors.pop() == f'Mangled form of the name too long for "{" " * 32}".'


def test_split_lvm_names() -> None:
    assert split_name("LVM-xyz", "vg-lv", "-") == ("LVM", "vg", "lv", "")
    assert split_name("LVM", "vg--a-lv--b-layer", "") == ("LVM", "vg-a", "lv-b", "layer")
    assert split_name("LVM", "a-b-c-d", "") == ("LVM", "a", "b", "c")
    assert split_name("CRYPT-x", "a-b", "-") == ("CRYPT", "", "", "")
    assert split_name("", "a-b", "-") == ("", "", "", "")
    assert split_name("nodash", "a-b", "-") == ("", "", "", "")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_nodes(tmp_path: Path) -> None:
    dev = str(tmp_path)
    assert nodes.add_node(dev, "a", 254, 3) is None
    st = os.stat(tmp_path / "mapper" / "a")
    assert stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == 254
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 6
    assert nodes.add_node(dev, "a", 254, 3) is None  # already right: untouched
    assert nodes.rename_node(dev, "a", "b") is None
    assert not (tmp_path / "mapper" / "a").exists() and (tmp_path / "mapper" / "b").exists()
    (tmp_path / "mapper" / "f").write_text("")
    assert nodes.add_node(dev, "f", 254, 4) == (
        f"A non-block device file at '{tmp_path}/mapper/f' is already present")
    assert nodes.rm_node(dev, "b") is None and nodes.rm_node(dev, "b") is None
    assert not (tmp_path / "mapper" / "b").exists()


# ---- the kernel's control node, as libdm's _open_control reaches it

def test_control_creates_directory_and_node(tmp_path: Path) -> None:
    from devmapper.cli import control

    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    errors: list[str] = []
    verbose: list[str] = []
    dev = tmp_path / "a" / "b"
    try:
        path, fd = control.open_control(str(dev), errors.append, verbose.append)
        os.close(fd)  # a kernel with device-mapper: the node opens
        assert errors == []
    except control.ControlError:  # no driver on this host: the open fails after mknod
        assert errors[0] == f"{dev}/mapper/control: open failed: No such device"
        assert errors[1:2] == ["Failure to communicate with kernel device-mapper driver."]
    assert verbose == [f'Creating directory "{dev}/mapper"',
                       f"Creating device {dev}/mapper/control (10, 236)"]
    st = os.stat(dev / "mapper" / "control")
    assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_rdev == os.makedev(10, 236)


def test_control_replaces_a_wrong_node(tmp_path: Path) -> None:
    from devmapper.cli import control

    (tmp_path / "mapper").mkdir()
    (tmp_path / "mapper" / "control").write_text("not a node")
    verbose: list[str] = []
    assert control._control_exists(str(tmp_path / "mapper" / "control"), print,
                                   verbose.append) == 0
    assert verbose == [f"{tmp_path}/mapper/control: Wrong inode type"]
    assert not (tmp_path / "mapper" / "control").exists()


def test_control_dir_errors(tmp_path: Path) -> None:
    from devmapper.cli import control

    (tmp_path / "file").write_text("")
    errors: list[str] = []
    assert not control._create_dir(str(tmp_path / "file"), errors.append, print)
    assert errors == [f'Directory "{tmp_path}/file" not found']
    errors.clear()
    assert not control._create_dir(str(tmp_path / "file" / "mapper"), errors.append,
                                   lambda _m: None)
    assert errors == [f"{tmp_path}/file/mapper: mkdir failed: Not a directory"]
    assert control.resolve("engine") == "engine" and control.resolve("kernel") == "kernel"


# ---- the library under dmsetup: errors, replies, transports, backend choice


def test_dmerror_fields() -> None:
    import errno

    from devmapper.library import DeviceMapper, DMError
    from devmapper.uapi import Cmd

    with DeviceMapper.in_process() as dm:
        with pytest.raises(DMError) as e:
            dm.info("nope")
        assert (e.value.errno, e.value.command, e.value.name, e.value.uuid) == (
            errno.ENXIO, Cmd.DEV_STATUS, "nope", "")
        assert e.value.command_name == "info" and e.value.device == "nope"
        assert str(e.value) == "info ioctl on nope failed: No such device or address"
        with pytest.raises(DMError) as e:
            dm.remove(uuid="U-1")
        assert (e.value.name, e.value.uuid, e.value.device) == ("", "U-1", "U-1")


def test_reply_version_and_header() -> None:
    from devmapper.library import DeviceMapper
    from devmapper.uapi import Cmd

    with DeviceMapper.in_process() as dm:
        info = dm.create("a", "0 8 zero\n")
        assert info.version == dm.version() == dm.command(Cmd.DEV_STATUS, "a").version
        assert info.header is not None and info.header.name == "a"
        assert info.header.data_start >= 312
        assert info == dm.info("a")  # the header does not take part in equality


def test_kernel_transport_from_fd(tmp_path: Path) -> None:
    import errno

    from devmapper.control.kernel import KernelTransport

    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    t = KernelTransport.from_fd(fd, "f", owned=False)
    assert (t.fileno(), t.path) == (fd, "f")
    with pytest.raises(OSError) as e:
        t.ioctl(0, bytearray(312))  # not a control node
    assert e.value.errno == errno.ENOTTY
    t.close()
    os.fstat(fd)  # still open: not ours to close
    KernelTransport.from_fd(fd).close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_auto_backend_ignores_dm_dev_dir(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    from devmapper import backend
    from devmapper.control import kernel

    opened: list[str] = []

    class Probe:
        kind = "kernel"

        def __init__(self, path: str | None = None) -> None:
            self.path = path or kernel.control_path()
            opened.append(self.path)
            if self.path != kernel.DEFAULT_CONTROL:
                raise FileNotFoundError(2, "No such file or directory", self.path)

        def ioctl(self, cmd: int, buf: bytearray) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(kernel, "KernelTransport", Probe)
    monkeypatch.delenv("DEVMAPPER_BACKEND", raising=False)
    monkeypatch.delenv("DM_DEV_DIR", raising=False)
    assert backend.kernel_available()
    assert isinstance(backend.default_transport(), Probe)
    assert opened == [kernel.DEFAULT_CONTROL] * 2  # the probe's node, reused
    # DM_DEV_DIR moves the node the kernel is reached through, not the choice.
    monkeypatch.setenv("DM_DEV_DIR", str(tmp_path))
    opened.clear()
    assert backend.kernel_available()
    with pytest.raises(FileNotFoundError):
        backend.default_transport()
    assert opened == [kernel.DEFAULT_CONTROL] * 2 + [str(tmp_path / "mapper" / "control")]


def test_dmsetup_asks_libdm_interface_versions() -> None:
    """Each command carries the version libdm's _cmd_data_v4 gives it."""
    import io
    import struct

    from devmapper.cli.dmsetup import main
    from devmapper.control.engine import EngineTransport
    from devmapper.uapi import Cmd

    sent: list[tuple[int, tuple[int, ...]]] = []

    class Recording(EngineTransport):
        def ioctl(self, cmd: int, buf: bytearray) -> None:
            sent.append((cmd, struct.unpack_from("=3I", buf)))
            super().ioctl(cmd, buf)

    t = Recording()
    for argv in (["targets"], ["target-version", "zero"], ["create", "a", "--table", "0 8 zero"],
                 ["message", "a", "0", "x"], ["setgeometry", "a", "1", "1", "1", "0"]):
        main(argv, t, io.StringIO(), io.StringIO(), io.StringIO())
    got = dict(sent)
    assert got[Cmd.LIST_VERSIONS] == (4, 1, 0) and got[Cmd.GET_TARGET_VERSION] == (4, 41, 0)
    assert got[Cmd.TARGET_MSG] == (4, 2, 0) and got[Cmd.DEV_SET_GEOMETRY] == (4, 6, 0)
    assert got[Cmd.DEV_CREATE] == got[Cmd.TABLE_LOAD] == got[Cmd.VERSION] == (4, 0, 0)
