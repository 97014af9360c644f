"""Every v4 command against the in-process engine: semantics and errno as the kernel's."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import threading
from collections.abc import Callable

import pytest

from devmapper import uapi
from devmapper.engine.core import Engine
from devmapper.library import DeviceMapper, DMError
from devmapper.uapi import DM_IOCTL_SIZE, Cmd, DmIoctl, Flag, TargetSpec

LOOP_CTL_REMOVE = 0x4C81


def raw(engine: Engine, cmd: Cmd, size: int = 16384, payload: bytes = b"",
        **fields: object) -> tuple[int, bytes]:
    hdr = DmIoctl(**fields)  # type: ignore[arg-type]
    return engine.ioctl(cmd, uapi.build_request(hdr, payload, size))


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(DMError) as e:
        fn()
    return e.value.errno


# ---- VERSION and request mechanics

def test_version_reports_4_47_and_writes_back_version(engine: Engine) -> None:
    err, reply = raw(engine, Cmd.VERSION, version=(4, 0, 0))
    assert err == 0 and struct.unpack("=3I", reply[:12]) == (4, 47, 0) and len(reply) == 12


@pytest.mark.parametrize("version", [(3, 0, 0), (5, 0, 0), (4, 48, 0)])
def test_version_mismatch_is_einval_but_version_written(engine: Engine,
                                                        version: tuple[int, int, int]) -> None:
    err, reply = raw(engine, Cmd.LIST_DEVICES, version=version)
    assert err == errno.EINVAL
    assert struct.unpack("=3I", reply[:12]) == (4, 47, 0)


def test_unknown_command_enotty(engine: Engine) -> None:
    assert raw(engine, 18)[0] == errno.ENOTTY  # type: ignore[arg-type]


@pytest.mark.parametrize("data_size", [0, 304, (1 << 30) + 1])
def test_bad_data_size_einval(engine: Engine, data_size: int) -> None:
    buf = uapi.build_request(DmIoctl(), b"", 400)
    struct.pack_into("=I", buf, 12, data_size)
    assert engine.ioctl(Cmd.LIST_DEVICES, buf)[0] == errno.EINVAL


def test_name_and_uuid_both_given_einval(dm: DeviceMapper, engine: Engine) -> None:
    dm.create("a", uuid="U")
    assert raw(engine, Cmd.DEV_STATUS, name="a", uuid="U")[0] == errno.EINVAL


def test_no_params_commands_reply_305_bytes(dm: DeviceMapper, engine: Engine) -> None:
    err, reply = raw(engine, Cmd.DEV_CREATE, name="a")
    assert err == 0 and len(reply) == 305
    assert DmIoctl.unpack(reply).data_size == 305


# ---- create

def test_create_new_device_has_no_table_and_is_not_suspended(dm: DeviceMapper) -> None:
    info = dm.create("a", uuid="UUID-A")
    assert (info.name, info.uuid, info.major, info.minor) == ("a", "UUID-A", 254, 0)
    assert not info.suspended and not info.live_table and not info.inactive_table
    assert info.open_count == 0 and info.event_nr == 0 and info.target_count == 0


@pytest.mark.parametrize("name", ["a/b", "/", "a/"])
def test_create_invalid_names(dm: DeviceMapper, name: str) -> None:
    assert errno_of(lambda: dm.create(name)) == errno.EINVAL


@pytest.mark.parametrize("name", ["control", ".", ".."])
def test_create_names_4_47_accepts(dm: DeviceMapper, name: str) -> None:
    # Later kernels refuse these; the 4.47 driver in QEMU accepts them.
    assert dm.create(name).name == name


def test_create_empty_name(engine: Engine) -> None:
    assert raw(engine, Cmd.DEV_CREATE, name="")[0] == errno.EINVAL


def test_create_long_name_is_truncated_to_127(engine: Engine) -> None:
    buf = uapi.build_request(DmIoctl(), b"", 400)
    buf[48:48 + 128] = b"n" * 128  # unterminated: the kernel terminates it at 127
    err, reply = engine.ioctl(Cmd.DEV_CREATE, buf)
    assert err == 0 and DmIoctl.unpack(reply).name == "n" * 127


def test_create_duplicate_name_or_uuid_ebusy(dm: DeviceMapper) -> None:
    dm.create("a", uuid="U")
    assert errno_of(lambda: dm.create("a")) == errno.EBUSY
    assert errno_of(lambda: dm.create("b", uuid="U")) == errno.EBUSY


def test_create_persistent_minor(dm: DeviceMapper) -> None:
    assert dm.create("a", minor=42, major=254).minor == 42
    assert dm.create("b").minor == 0
    assert errno_of(lambda: dm.create("c", minor=42)) == errno.ENXIO


# ---- load and its validation

def test_load_goes_to_inactive_slot(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    f = backing(1 << 20)
    dm.create("a")
    info = dm.load("a", f"0 2048 linear {f} 0")
    assert info.inactive_table and not info.live_table
    assert dm.table("a") == []
    assert dm.table("a", inactive=True) == [TargetSpec(0, 2048, "linear", f"{f} 0")]
    info = dm.resume("a")
    assert info.live_table and not info.inactive_table and info.target_count == 1


@pytest.mark.parametrize(("table", "err"), [
    ("0 0 zero", errno.EINVAL),  # zero-length target
    ("0 8 nosuchtarget", errno.EINVAL),
    ("8 8 zero", errno.EINVAL),  # does not start at 0
    ("0 8 zero\n16 8 zero", errno.EINVAL),  # gap
    ("0 8 zero\n4 8 zero", errno.EINVAL),  # overlap
    ("0 8 zero extra", errno.EINVAL),
    ("0 8 linear {f}", errno.EINVAL),  # argument count
    ("0 8 linear {f} x", errno.EINVAL),  # bad sector
    ("0 8 linear /nonexistent/dev 0", errno.ENODEV),
    ("0 8 linear 200:200 0", errno.ENXIO),
    ("0 4096 linear {f} 0", errno.EINVAL),  # area past the device end
    ("0 2048 linear {f} 1", errno.EINVAL),
    ("0 9 striped 2 1 {f} 0 {f} 8", errno.EINVAL),  # length not divisible by stripes
    ("0 12 striped 2 4 {f} 0 {f} 8", errno.EINVAL),  # width not divisible by chunk
    ("0 8 striped 2 2 {f} 0", errno.EINVAL),  # not enough destinations
    ("0 8 striped 0 2", errno.EINVAL),
    ("0 8 striped 2 0 {f} 0 {f} 0", errno.EINVAL),
    ("0 8 striped 2", errno.EINVAL),
])
def test_load_errors(dm: DeviceMapper, backing: Callable[..., str], table: str,
                     err: int) -> None:
    f = backing(1 << 20)
    dm.create("a")
    assert errno_of(lambda: dm.load("a", table.format(f=f))) == err
    assert not dm.info("a").inactive_table


def test_load_with_no_targets_einval(dm: DeviceMapper) -> None:
    dm.create("a")
    assert errno_of(lambda: dm.load("a", [])) == errno.EINVAL


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/loop-control"),
                    reason="needs root and /dev/loop-control")
def test_load_on_missing_loop_device_creates_it(dm: DeviceMapper) -> None:
    # As 4.47 (kernel_facts load_missing_devt): opening 7:N creates loopN, unbound (size
    # 0, so the area check passes); the table loads and reads past its end fail.
    minor = next(m for m in range(200, 1 << 20) if not os.path.exists(f"/sys/dev/block/7:{m}"))
    try:
        dm.create("a", f"0 8 linear 7:{minor} 0")
        assert dm.deps("a") == [(7, minor)]
        assert dm.table("a")[0].params == f"7:{minor} 0"
        with dm.open("a") as blk, pytest.raises(OSError) as e:
            blk.read(0, 512)
        assert e.value.errno == errno.EIO
        dm.remove("a")
    finally:
        fd = os.open("/dev/loop-control", os.O_RDWR)
        try:
            fcntl.ioctl(fd, LOOP_CTL_REMOVE, minor)
        except OSError:
            pass
        finally:
            os.close(fd)


def test_load_references_own_device(dm: DeviceMapper) -> None:
    # 4.47 refuses it on the first load (no disk yet: ENXIO); on a later load it loads
    # and the table holds its own device open; I/O through it fails.
    info = dm.create("a")
    assert errno_of(lambda: dm.load("a", f"0 8 linear {info.major}:{info.minor} 0")) \
        == errno.ENXIO
    dm.load("a", "0 8 zero")
    dm.resume("a")
    assert dm.load("a", f"0 8 linear {info.major}:{info.minor} 0").open_count == 1
    dm.resume("a")
    with dm.open("a") as blk, pytest.raises(OSError) as e:
        blk.read(0, 512)
    assert e.value.errno == errno.EIO
    assert errno_of(lambda: dm.remove("a")) == errno.EBUSY
    dm.load("a", "0 8 zero")
    dm.resume("a")


def test_load_missing_device_enxio(dm: DeviceMapper) -> None:
    assert errno_of(lambda: dm.load("nope", "0 8 zero")) == errno.ENXIO


def test_load_spec_outside_buffer_einval(dm: DeviceMapper, engine: Engine) -> None:
    dm.create("a")
    payload = uapi.encode_load_specs([TargetSpec(0, 8, "zero", "")])
    buf = uapi.build_request(DmIoctl(name="a", target_count=2), payload, 0)
    struct.pack_into("=I", buf, 12, len(buf))
    assert engine.ioctl(Cmd.TABLE_LOAD, buf)[0] == errno.EINVAL
    # misaligned next
    buf = uapi.build_request(DmIoctl(name="a", target_count=1), payload, 1024)
    struct.pack_into("=I", buf, 16, 313)
    assert engine.ioctl(Cmd.TABLE_LOAD, buf)[0] == errno.EINVAL


def test_later_load_area_checked_at_resume(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    f = backing(1 << 20)
    dm.create("a", f"0 8 linear {f} 0")
    # The first load checked areas; a later load defers the check to resume.
    dm.load("a", f"0 4096 linear {f} 0")
    assert errno_of(lambda: dm.resume("a")) == errno.EINVAL
    info = dm.info("a")
    assert info.suspended and not info.inactive_table
    assert dm.table("a") == [TargetSpec(0, 8, "linear", f"{f} 0")]
    dm.resume("a")


def test_readonly_table(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    f = backing(1 << 20)
    info = dm.create("a", f"0 8 linear {f} 0", read_only=True)
    assert info.read_only
    with dm.open("a") as blk:
        with pytest.raises(OSError) as e:
            blk.write(0, memoryview(bytes(512)))
        assert e.value.errno == errno.EPERM  # blkdev_write_iter's answer


def test_clear_drops_inactive(dm: DeviceMapper) -> None:
    dm.create("a", "0 8 zero")
    dm.load("a", "0 16 zero")
    info = dm.clear("a")
    assert not info.inactive_table and info.live_table
    assert dm.resume("a").target_count == 1
    assert dm.table("a") == [TargetSpec(0, 8, "zero", "")]


# ---- suspend / resume

def test_suspend_resume_rules(dm: DeviceMapper) -> None:
    dm.create("a")
    # resume with nothing to do on an unsuspended device is a no-op
    assert not dm.resume("a").suspended
    assert dm.suspend("a").suspended
    assert dm.suspend("a").suspended  # idempotent
    assert errno_of(lambda: dm.resume("a")) == errno.EINVAL  # no live table
    dm.load("a", "0 8 zero")
    info = dm.resume("a")
    assert not info.suspended and info.live_table


def test_resume_swaps_and_keeps_suspend_until_resumed(dm: DeviceMapper) -> None:
    dm.create("a", "0 8 zero")
    dm.suspend("a", noflush=True, lockfs=False)
    dm.load("a", "0 16 error")
    assert dm.table("a")[0].target_type == "zero"
    dm.resume("a")
    assert dm.table("a") == [TargetSpec(0, 16, "error", "")]


# ---- status, table, deps, inactive queries

def test_status_and_table_lines(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    f1, f2 = backing(1 << 20), backing(1 << 20)
    dm.create("s", f"0 64 striped 2 16 {f1} 0 {f2} 8\n64 8 zero\n72 8 error")
    assert dm.table("s") == [TargetSpec(0, 64, "striped", f"2 16 {f1} 0 {f2} 8"),
                             TargetSpec(64, 8, "zero", ""), TargetSpec(72, 8, "error", "")]
    assert dm.status("s") == [TargetSpec(0, 64, "striped", f"2 {f1} {f2} 1 AA"),
                              TargetSpec(64, 8, "zero", ""), TargetSpec(72, 8, "error", "")]


def test_striped_counts_errors_per_device_as_stripe_end_io(
        dm: DeviceMapper, backing: Callable[..., str]) -> None:
    """A failed request marks its stripe D and raises an event; every stripe on the same
    device counts it (the kernel matches by device name); events stop once a stripe has
    seen DM_IO_ERROR_THRESHOLD (15) errors, the status keeps counting."""
    f = backing(1 << 20)
    bad = dm.create("bad", "0 2048 error")
    b = f"{bad.major}:{bad.minor}"
    dm.create("s", f"0 64 striped 2 16 {f} 0 {b} 0")
    dm.create("t", f"0 64 striped 2 16 {b} 0 {b} 512")
    buf = memoryview(bytearray(4096))
    with dm.open("s") as s, dm.open("t") as t:
        s.read_into(0, buf)  # stripe 0: the file
        assert dm.status("s")[0].params == f"2 {f} {b} 1 AA"
        for offset in (16 * 512, 16 * 512 + 4096 - 512):  # one chunk; its last sector
            with pytest.raises(OSError) as e:
                s.read_into(offset, buf[:512])
            assert e.value.errno == errno.EIO
        assert dm.status("s")[0].params == f"2 {f} {b} 1 AD"
        assert dm.info("s").event_nr == 2
        with pytest.raises(OSError):
            t.read_into(0, buf)  # stripe 0, and stripe 1 is on the same device
        assert dm.status("t")[0].params == f"2 {b} {b} 1 DD"
        assert dm.info("t").event_nr == 1
        for _ in range(20):
            with pytest.raises(OSError):
                t.read_into(16 * 512, buf)
        assert dm.info("t").event_nr == 14  # counts 1..14 raise one; 15 on do not
        assert dm.status("t")[0].params == f"2 {b} {b} 1 DD"
        with pytest.raises(OSError):  # a request spanning both stripes: the same rules
            s.write(8 * 512, memoryview(bytes(16 * 512)))
        assert dm.info("s").event_nr == 3


def test_stacked_device_prints_major_minor_and_deps(dm: DeviceMapper) -> None:
    a = dm.create("a", "0 64 zero")
    b = dm.create("b", "0 64 zero")
    dm.create("top", f"0 32 linear {a.major}:{a.minor} 0\n32 32 linear {b.major}:{b.minor} 0")
    assert dm.table("top")[0].params == f"{a.major}:{a.minor} 0"
    # The kernel adds each device at the head of the table's list.
    assert dm.deps("top") == [(b.major, b.minor), (a.major, a.minor)]
    assert dm.info("a").open_count == 1
    assert errno_of(lambda: dm.remove("a")) == errno.EBUSY
    dm.remove("top")
    assert dm.info("a").open_count == 0


def test_inactive_table_holds_devices_open(dm: DeviceMapper) -> None:
    a = dm.create("a", "0 64 zero")
    dm.create("b")
    dm.load("b", f"0 8 linear {a.major}:{a.minor} 0")
    assert dm.info("a").open_count == 1
    assert dm.deps("b", inactive=True) == [(a.major, a.minor)]
    assert dm.info("b", inactive=True).target_count == 1
    dm.clear("b")
    assert dm.info("a").open_count == 0


def test_status_buffer_full_retry(dm: DeviceMapper, engine: Engine) -> None:
    lines = "\n".join(f"{i * 8} 8 zero" for i in range(3000))
    dm.create("big", lines)
    assert len(dm.table("big")) == 3000  # library retries on BUFFER_FULL
    err, reply = raw(engine, Cmd.TABLE_STATUS, size=400, name="big")
    hdr = DmIoctl.unpack(reply)
    assert err == 0 and hdr.flags & Flag.BUFFER_FULL and hdr.target_count == 3000
    # 88 bytes of room: one spec (40) + its empty params (1), aligned to 48; the next spec
    # needs more than the 40 left. data_size ends after the last NUL written.
    assert hdr.data_size == DM_IOCTL_SIZE + 40 + 1


def test_status_of_device_without_table(dm: DeviceMapper, engine: Engine) -> None:
    dm.create("a")
    err, reply = raw(engine, Cmd.TABLE_STATUS, name="a")
    hdr = DmIoctl.unpack(reply)
    assert err == 0 and hdr.target_count == 0 and hdr.data_size == 305


# ---- list

def test_list_devices_sorted_with_uuid_and_events(dm: DeviceMapper) -> None:
    dm.create("b", "0 8 zero", uuid="UB")
    dm.create("a")
    dm.rename("b", "c")  # an event on a device with a live table
    got = dm.list()
    assert [(d.name, d.uuid, d.event_nr) for d in got] == [("a", None, 0), ("c", "UB", 1)]
    assert [d.uuid for d in dm.list(with_uuid=False)] == [None, None]


def test_list_empty_and_buffer_full(dm: DeviceMapper, engine: Engine) -> None:
    err, reply = raw(engine, Cmd.LIST_DEVICES)
    assert err == 0 and DmIoctl.unpack(reply).data_size == 312
    assert dm.list() == []
    for i in range(50):
        dm.create(f"dev{i:03d}")
    err, reply = raw(engine, Cmd.LIST_DEVICES, size=512)
    assert err == 0 and DmIoctl.unpack(reply).flags & Flag.BUFFER_FULL
    assert len(dm.list()) == 50


def test_list_filters_by_prefix(dm: DeviceMapper) -> None:
    for n in ("vg-a", "vg-b", "other"):
        dm.create(n)
    assert [d.name for d in dm.list(name_prefix="vg-")] == ["vg-a", "vg-b"]


# ---- versions

def test_versions(dm: DeviceMapper, engine: Engine) -> None:
    names = {t.name for t in dm.targets()}
    assert {"linear", "striped", "zero", "error"} <= names
    assert dm.target_version("striped") == (1, 6, 0)
    assert errno_of(lambda: dm.target_version("nosuch")) == errno.EINVAL


# ---- messages

def test_messages(dm: DeviceMapper) -> None:
    dm.create("a", "0 8 zero")
    assert errno_of(lambda: dm.message("a", 0, "hello")) == errno.EINVAL  # no handler
    assert errno_of(lambda: dm.message("a", 8, "hello")) == errno.EINVAL  # outside
    assert errno_of(lambda: dm.message("a", 0, "   ")) == errno.EINVAL  # empty
    assert errno_of(lambda: dm.message("a", 0, "@nosuch")) == errno.EINVAL
    assert dm.message("a", 0, "@cancel_deferred_remove") is None
    dm.create("empty")
    assert errno_of(lambda: dm.message("empty", 0, "anything")) == errno.EINVAL
    assert dm.message("a", 0, "@stats_list") == ""


# ---- rename

def test_rename_cases(dm: DeviceMapper) -> None:
    dm.create("a")
    dm.create("b", uuid="UB")
    assert errno_of(lambda: dm.rename("a", "b")) == errno.EBUSY
    assert errno_of(lambda: dm.rename("zz", "q")) == errno.ENXIO
    assert errno_of(lambda: dm.rename("a", "x/y")) == errno.EINVAL
    assert errno_of(lambda: dm.rename("a", "")) == errno.EINVAL
    assert errno_of(lambda: dm.rename("a", "n" * 128)) == errno.EINVAL
    assert dm.rename("a", "c").name == "a"  # the reply carries the old name
    assert dm.rename("c", new_uuid="UC").uuid == ""  # ... and the old uuid
    assert dm.info("c").uuid == "UC"
    assert errno_of(lambda: dm.rename(uuid="UC", new_name="d")) == errno.ENXIO
    assert errno_of(lambda: dm.rename("c", new_uuid="UD")) == errno.EINVAL  # has one
    assert errno_of(lambda: dm.rename("c", new_uuid="UB")) == errno.EBUSY
    assert dm.info(uuid="UC").name == "c"


# ---- remove, deferred remove, remove_all

def test_remove_and_deferred_remove(dm: DeviceMapper) -> None:
    dm.create("a", "0 8 zero")
    assert errno_of(lambda: dm.remove("nope")) == errno.ENXIO
    blk = dm.open("a")
    assert errno_of(lambda: dm.remove("a")) == errno.EBUSY
    dm.remove("a", deferred=True)
    assert dm.info("a").deferred_remove
    dm.message("a", 0, "@cancel_deferred_remove")
    assert not dm.info("a").deferred_remove
    dm.remove("a", deferred=True)
    blk.close()  # last close removes it
    assert errno_of(lambda: dm.info("a")) == errno.ENXIO


def test_remove_all_keeps_open_devices(dm: DeviceMapper) -> None:
    base = dm.create("base", "0 64 zero")
    dm.create("top", f"0 8 linear {base.major}:{base.minor} 0")
    dm.create("held", "0 8 zero")
    blk = dm.open("held")
    dm.remove_all()  # top goes, which releases base, which then goes too
    assert [d.name for d in dm.list()] == ["held"]
    dm.remove_all(deferred=True)
    assert dm.info("held").deferred_remove
    blk.close()
    assert dm.list() == []


# ---- wait, events, arm_poll

def test_wait_blocks_until_event(dm: DeviceMapper) -> None:
    dm.create("a", "0 8 zero")
    result: list[int] = []

    def waiter() -> None:
        info, _status = dm.wait("a", 0)
        result.append(info.event_nr)

    t = threading.Thread(target=waiter)
    t.start()
    t.join(0.2)
    assert t.is_alive()
    dm.rename("a", "b")
    t.join(5)
    assert result == [1]
    # an event number that differs returns at once
    info, status = dm.wait("b", 0)
    assert info.event_nr == 1 and status == [TargetSpec(0, 8, "zero", "")]


def test_arm_poll(dm: DeviceMapper) -> None:
    dm.arm_poll()
    p = select.poll()
    p.register(dm.fileno(), select.POLLIN)
    assert p.poll(0) == []
    dm.create("a")
    assert p.poll(1000)
    dm.arm_poll()
    assert p.poll(0) == []


# ---- geometry

def test_set_geometry(dm: DeviceMapper, engine: Engine) -> None:
    dm.create("a", "0 8 zero")
    dm.set_geometry("a", 100, 16, 63, 0)
    assert errno_of(lambda: dm.set_geometry("a", 65536, 1, 1, 0)) == errno.EINVAL
    assert errno_of(lambda: dm.set_geometry("a", 1, 256, 1, 0)) == errno.EINVAL
    assert errno_of(lambda: dm.set_geometry("a", 1, 1, 1, 2)) == errno.EINVAL
    err, reply = raw(engine, Cmd.DEV_SET_GEOMETRY, name="a", payload=b"1 2 3\0")
    assert err == errno.EINVAL
    err, reply = raw(engine, Cmd.DEV_SET_GEOMETRY, name="a", payload=b"1 2 3 4\0")
    assert err == 0 and reply == struct.pack("=3I", 4, 47, 0)  # data_size 0: only the version
