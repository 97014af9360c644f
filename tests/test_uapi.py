"""Wire format: golden bytes for every struct and payload of interface v4."""

from __future__ import annotations

import struct

import pytest

from devmapper import uapi
from devmapper.uapi import Cmd, DmIoctl, Flag, TargetSpec


def test_struct_sizes_and_offsets() -> None:
    raw = DmIoctl(version=(4, 47, 1), data_size=0x11223344, data_start=312, target_count=7,
                  open_count=-1, flags=0x80000001, event_nr=9, dev=0xFE05,
                  name="n", uuid="u").pack()
    assert len(raw) == 312
    assert raw[0:12] == struct.pack("=3I", 4, 47, 1)
    assert raw[12:16] == struct.pack("=I", 0x11223344)
    assert raw[16:20] == struct.pack("=I", 312)
    assert raw[20:24] == struct.pack("=I", 7)
    assert raw[24:28] == struct.pack("=i", -1)
    assert raw[28:32] == struct.pack("=I", 0x80000001)
    assert raw[32:36] == struct.pack("=I", 9)
    assert raw[36:40] == bytes(4)
    assert raw[40:48] == struct.pack("=Q", 0xFE05)
    assert raw[48:50] == b"n\0" and raw[176:178] == b"u\0"
    assert raw[305:] == bytes(7)
    back = DmIoctl.unpack(raw)
    assert (back.name, back.uuid, back.open_count, back.flags) == ("n", "u", -1, 0x80000001)


def test_name_and_uuid_limits() -> None:
    DmIoctl(name="x" * 127, uuid="y" * 128).pack()
    with pytest.raises(ValueError):
        DmIoctl(name="x" * 128).pack()
    with pytest.raises(ValueError):
        DmIoctl(uuid="y" * 129).pack()


@pytest.mark.parametrize(("cmd", "number"), [
    (Cmd.VERSION, 0xC138FD00), (Cmd.REMOVE_ALL, 0xC138FD01), (Cmd.LIST_DEVICES, 0xC138FD02),
    (Cmd.DEV_CREATE, 0xC138FD03), (Cmd.DEV_REMOVE, 0xC138FD04), (Cmd.DEV_RENAME, 0xC138FD05),
    (Cmd.DEV_SUSPEND, 0xC138FD06), (Cmd.DEV_STATUS, 0xC138FD07), (Cmd.DEV_WAIT, 0xC138FD08),
    (Cmd.TABLE_LOAD, 0xC138FD09), (Cmd.TABLE_CLEAR, 0xC138FD0A), (Cmd.TABLE_DEPS, 0xC138FD0B),
    (Cmd.TABLE_STATUS, 0xC138FD0C), (Cmd.LIST_VERSIONS, 0xC138FD0D),
    (Cmd.TARGET_MSG, 0xC138FD0E), (Cmd.DEV_SET_GEOMETRY, 0xC138FD0F),
    (Cmd.DEV_ARM_POLL, 0xC138FD10), (Cmd.GET_TARGET_VERSION, 0xC138FD11),
])
def test_ioctl_numbers(cmd: Cmd, number: int) -> None:
    assert uapi.ioctl_request(cmd) == number


def test_flag_bits() -> None:
    expected = {
        "READONLY": 0, "SUSPEND": 1, "EXISTS": 2, "PERSISTENT_DEV": 3, "STATUS_TABLE": 4,
        "ACTIVE_PRESENT": 5, "INACTIVE_PRESENT": 6, "BUFFER_FULL": 8, "SKIP_BDGET": 9,
        "SKIP_LOCKFS": 10, "NOFLUSH": 11, "QUERY_INACTIVE_TABLE": 12, "UEVENT_GENERATED": 13,
        "UUID": 14, "SECURE_DATA": 15, "DATA_OUT": 16, "DEFERRED_REMOVE": 17,
        "INTERNAL_SUSPEND": 18, "IMA_MEASUREMENT": 19,
    }
    for name, bit in expected.items():
        assert getattr(Flag, name) == 1 << bit


def test_dev_encoding() -> None:
    assert uapi.encode_dev(254, 0) == 0xFE00
    assert uapi.encode_dev(7, 300) == 0x10072C  # minor's high bits go above the major
    assert uapi.encode_dev(259, 0x12345) == 0x45 | (259 << 8) | (0x12300 << 12)
    for major, minor in [(0, 0), (254, 255), (254, 256), (4095, (1 << 20) - 1)]:
        assert uapi.decode_dev(uapi.encode_dev(major, minor)) == (major, minor)


def test_load_specs_golden() -> None:
    raw = uapi.encode_load_specs([TargetSpec(0, 1024, "linear", "/dev/loop0 0"),
                                  TargetSpec(1024, 8, "zero", "")])
    first = struct.pack("=QQiI16s", 0, 1024, 0, 56, b"linear") + b"/dev/loop0 0\0" + bytes(3)
    second = struct.pack("=QQiI16s", 1024, 8, 0, 48, b"zero") + b"\0" + bytes(7)
    assert raw == first + second


def test_status_specs_next_is_relative_to_first() -> None:
    raw = uapi.encode_status_specs([TargetSpec(0, 8, "zero", ""),
                                    TargetSpec(8, 8, "linear", "7:0 0")])
    assert struct.unpack_from("=I", raw, 20)[0] == 48
    assert struct.unpack_from("=I", raw, 48 + 20)[0] == 48 + 48
    hdr = DmIoctl(data_start=312, data_size=312 + len(raw), target_count=2)
    specs = uapi.decode_status_reply(bytes(312) + raw, hdr)
    assert specs == [TargetSpec(0, 8, "zero", ""), TargetSpec(8, 8, "linear", "7:0 0")]


def test_deps_golden() -> None:
    assert uapi.encode_deps([0x700, 0x701]) == struct.pack("=IIQQ", 2, 0, 0x700, 0x701)
    assert uapi.decode_deps(struct.pack("=IIQQ", 2, 0, 0x700, 0x701), 0) == [0x700, 0x701]


def test_name_list_golden_with_uuid_trailer() -> None:
    raw = uapi.encode_name_list([uapi.NameListEntry("a", 0xFE00, 3, "U-1"),
                                 uapi.NameListEntry("bb", 0xFE01, 0, None)], with_uuid=True)
    rec1 = struct.pack("=QI", 0xFE00, 24 + 8) + b"a\0" + bytes(2)  # name ends at 14 -> 16
    rec1 += struct.pack("=II", 3, uapi.NAME_LIST_FLAG_HAS_UUID) + b"U-1\0" + bytes(4)
    rec2 = struct.pack("=QI", 0xFE01, 0) + b"bb\0" + bytes(1)
    rec2 += struct.pack("=II", 0, uapi.NAME_LIST_FLAG_DOESNT_HAVE_UUID)
    assert raw == rec1 + rec2
    entries = uapi.decode_name_list(raw, 0, len(raw))
    assert entries == [uapi.NameListEntry("a", 0xFE00, 3, "U-1"),
                       uapi.NameListEntry("bb", 0xFE01, 0, None)]


def test_versions_golden() -> None:
    raw = uapi.encode_versions([uapi.TargetVersion("linear", (1, 4, 0)),
                                uapi.TargetVersion("zero", (1, 2, 0))])
    rec1 = struct.pack("=I3I", 24, 1, 4, 0) + b"linear\0" + bytes(1)
    rec2 = struct.pack("=I3I", 0, 1, 2, 0) + b"zero\0" + bytes(3)
    assert raw == rec1 + rec2
    assert uapi.decode_versions(raw, 0) == [uapi.TargetVersion("linear", (1, 4, 0)),
                                            uapi.TargetVersion("zero", (1, 2, 0))]


def test_target_msg_and_strings() -> None:
    assert uapi.encode_target_msg(8, "hi") == struct.pack("=Q", 8) + b"hi\0"
    assert uapi.encode_string("new") == b"new\0"


@pytest.mark.parametrize(("text", "words"), [
    ("a b  c", ["a", "b", "c"]),
    ("  lead trail  ", ["lead", "trail"]),
    (r"with\ space x", ["with space", "x"]),
    (r"back\\slash", ["back\\slash"]),
    ("", []),
])
def test_split_params(text: str, words: list[str]) -> None:
    assert uapi.split_params(text) == words
