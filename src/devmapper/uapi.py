"""The device-mapper ioctl interface, version 4: every struct, flag and command in one place.

Mirrors include/uapi/linux/dm-ioctl.h. All integers are native-endian (the ioctl ABI);
every encoder here produces exactly the bytes the kernel reads or writes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

DM_DIR = "mapper"
DM_CONTROL_NODE = "control"
DM_MAX_TYPE_NAME = 16
DM_NAME_LEN = 128
DM_UUID_LEN = 129

DM_VERSION_MAJOR = 4
#: The interface version the engine reports: the one Debian 12's kernel 6.1 reports.
ENGINE_VERSION = (4, 47, 0)

#: The smallest buffer the kernel accepts (offsetof(struct dm_ioctl, data)).
DM_IOCTL_MIN_SIZE = 305
DM_IOCTL_SIZE = 312
DM_MAX_DATA_SIZE = 1 << 30
DM_MAX_TARGETS = 1048576

_IOCTL_STRUCT = struct.Struct("=3IIIIiIIIQ128s129s7s")
assert _IOCTL_STRUCT.size == DM_IOCTL_SIZE

SPEC = struct.Struct("=QQiI16s")  # dm_target_spec
DEPS_HEAD = struct.Struct("=II")  # dm_target_deps count, padding
NAME_LIST_HEAD = struct.Struct("=QI")  # dm_name_list dev, next
VERSIONS_HEAD = struct.Struct("=I3I")  # dm_target_versions next, version[3]
MSG_HEAD = struct.Struct("=Q")  # dm_target_msg sector
U64 = struct.Struct("=Q")
U32X2 = struct.Struct("=II")


class Cmd(enum.IntEnum):
    VERSION = 0
    REMOVE_ALL = 1
    LIST_DEVICES = 2
    DEV_CREATE = 3
    DEV_REMOVE = 4
    DEV_RENAME = 5
    DEV_SUSPEND = 6
    DEV_STATUS = 7
    DEV_WAIT = 8
    TABLE_LOAD = 9
    TABLE_CLEAR = 10
    TABLE_DEPS = 11
    TABLE_STATUS = 12
    LIST_VERSIONS = 13
    TARGET_MSG = 14
    DEV_SET_GEOMETRY = 15
    DEV_ARM_POLL = 16
    GET_TARGET_VERSION = 17


class Flag:
    """Flag bits of dm_ioctl.flags, as plain ints: they are tested on every command."""

    READONLY = 1 << 0
    SUSPEND = 1 << 1
    EXISTS = 1 << 2  # libdevmapper-private
    PERSISTENT_DEV = 1 << 3
    STATUS_TABLE = 1 << 4
    ACTIVE_PRESENT = 1 << 5
    INACTIVE_PRESENT = 1 << 6
    BUFFER_FULL = 1 << 8
    SKIP_BDGET = 1 << 9
    SKIP_LOCKFS = 1 << 10
    NOFLUSH = 1 << 11
    QUERY_INACTIVE_TABLE = 1 << 12
    UEVENT_GENERATED = 1 << 13
    UUID = 1 << 14
    SECURE_DATA = 1 << 15
    DATA_OUT = 1 << 16
    DEFERRED_REMOVE = 1 << 17
    INTERNAL_SUSPEND = 1 << 18
    IMA_MEASUREMENT = 1 << 19


def flag_names(flags: int) -> list[str]:
    return [name for name, bit in vars(Flag).items()
            if isinstance(bit, int) and not name.startswith("_") and flags & bit]


#: Flags the kernel clears on entry to every command.
FLAGS_CLEARED_ON_ENTRY = Flag.BUFFER_FULL | Flag.UEVENT_GENERATED | Flag.SECURE_DATA | Flag.DATA_OUT

NAME_LIST_FLAG_HAS_UUID = 1
NAME_LIST_FLAG_DOESNT_HAVE_UUID = 2

#: _IOWR(0xfd, nr, struct dm_ioctl) on x86, arm and most other architectures.
IOCTL_BASE = 0xC0000000 | (DM_IOCTL_SIZE << 16) | (0xFD << 8)


def ioctl_request(cmd: int) -> int:
    return IOCTL_BASE | cmd


#: Interface version libdevmapper puts in each command (what it needs the kernel to have).
CMD_MIN_VERSION: dict[Cmd, tuple[int, int, int]] = {
    Cmd.DEV_SET_GEOMETRY: (4, 6, 0),
    Cmd.TARGET_MSG: (4, 2, 0),
    Cmd.DEV_ARM_POLL: (4, 36, 0),
    Cmd.GET_TARGET_VERSION: (4, 41, 0),
}


def encode_dev(major: int, minor: int) -> int:
    """huge_encode_dev: the u64 the ioctl carries."""
    return (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)


def decode_dev(dev: int) -> tuple[int, int]:
    major = (dev >> 8) & 0xFFF
    minor = (dev & 0xFF) | ((dev >> 12) & 0xFFF00)
    return major, minor


def os_dev_to_pair(dev: int) -> tuple[int, int]:
    """The kernel's new_decode_dev, the same as os.major/os.minor for st_rdev."""
    import os

    return os.major(dev), os.minor(dev)


def _cstr(raw: bytes) -> str:
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "surrogateescape")


def _fixed(text: str, size: int) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) >= size:
        raise ValueError(f"{text!r} is longer than {size - 1} bytes")
    return raw


def align8(n: int) -> int:
    return (n + 7) & ~7


@dataclass
class DmIoctl:
    """struct dm_ioctl, the 312-byte header of every request and reply."""

    version: tuple[int, int, int] = (DM_VERSION_MAJOR, 0, 0)
    data_size: int = DM_IOCTL_SIZE
    data_start: int = DM_IOCTL_SIZE
    target_count: int = 0
    open_count: int = 0
    flags: int = 0
    event_nr: int = 0
    dev: int = 0
    name: str = ""
    uuid: str = ""
    # Raw bytes of name/uuid as received: the kernel checks their termination itself.
    raw_name: bytes = field(default=b"", repr=False)
    raw_uuid: bytes = field(default=b"", repr=False)

    def pack(self) -> bytes:
        return _IOCTL_STRUCT.pack(
            *self.version,
            self.data_size,
            self.data_start,
            self.target_count,
            self.open_count,
            self.flags & 0xFFFFFFFF,
            self.event_nr & 0xFFFFFFFF,
            0,
            self.dev,
            _fixed(self.name, DM_NAME_LEN),
            _fixed(self.uuid, DM_UUID_LEN),
            b"",
        )

    def pack_into(self, buf: bytearray) -> None:
        buf[:DM_IOCTL_SIZE] = self.pack()

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> DmIoctl:
        if len(buf) < DM_IOCTL_SIZE:
            buf = bytes(buf) + bytes(DM_IOCTL_SIZE - len(buf))
        (v0, v1, v2, data_size, data_start, target_count, open_count, flags, event_nr, _pad,
         dev, name, uuid, _data) = _IOCTL_STRUCT.unpack_from(buf)
        return cls(
            (v0, v1, v2), data_size, data_start, target_count, open_count, flags, event_nr,
            dev, _cstr(name), _cstr(uuid), name, uuid,
        )


def build_request(hdr: DmIoctl, payload: bytes = b"", size: int = 0) -> bytearray:
    """A request buffer: header, payload at 312, padded to at least ``size`` bytes."""
    total = max(DM_IOCTL_SIZE + len(payload), size)
    buf = bytearray(total)
    hdr.data_size = total
    hdr.data_start = DM_IOCTL_SIZE
    hdr.pack_into(buf)
    buf[DM_IOCTL_SIZE:DM_IOCTL_SIZE + len(payload)] = payload
    return buf


# ---------------------------------------------------------------- target specs


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """One line of a table: sector_start, length, target type and its parameters."""

    start: int
    length: int
    target_type: str
    params: str
    status: int = 0


def encode_load_specs(specs: list[TargetSpec]) -> bytes:
    """TABLE_LOAD payload: each spec's ``next`` is relative to that spec."""
    out = bytearray()
    for spec in specs:
        params = spec.params.encode("utf-8", "surrogateescape") + b"\0"
        rec_len = align8(SPEC.size + len(params))
        out += SPEC.pack(spec.start, spec.length, spec.status, rec_len,
                         _fixed(spec.target_type, DM_MAX_TYPE_NAME))
        out += params + bytes(rec_len - SPEC.size - len(params))
    return bytes(out)


def encode_status_specs(specs: list[TargetSpec]) -> bytes:
    """TABLE_STATUS/DEV_WAIT payload: ``next`` is relative to the first spec."""
    out = bytearray()
    for spec in specs:
        params = spec.params.encode("utf-8", "surrogateescape") + b"\0"
        rec_len = align8(SPEC.size + len(params))
        out += SPEC.pack(spec.start, spec.length, spec.status, len(out) + rec_len,
                         _fixed(spec.target_type, DM_MAX_TYPE_NAME))
        out += params + bytes(rec_len - SPEC.size - len(params))
    return bytes(out)


def decode_status_reply(buf: bytes | memoryview, hdr: DmIoctl) -> list[TargetSpec]:
    specs = []
    first = hdr.data_start
    pos = first
    raw = buf if isinstance(buf, bytes) else bytes(buf)
    end = hdr.data_size
    for _ in range(hdr.target_count):
        s, length, status, nxt, ttype = SPEC.unpack_from(raw, pos)
        nul = raw.find(b"\0", pos + SPEC.size, end)
        params = raw[pos + SPEC.size:nul if nul >= 0 else end].decode("utf-8", "surrogateescape")
        specs.append(TargetSpec(s, length, _cstr(ttype), params, status))
        pos = first + nxt
    return specs


# ---------------------------------------------------------------- other payloads


def encode_deps(devs: list[int]) -> bytes:
    return DEPS_HEAD.pack(len(devs), 0) + b"".join(U64.pack(d) for d in devs)


def decode_deps(buf: bytes | memoryview, start: int) -> list[int]:
    count, _ = DEPS_HEAD.unpack_from(buf, start)
    return [U64.unpack_from(buf, start + 8 + 8 * i)[0] for i in range(count)]


@dataclass(frozen=True, slots=True)
class NameListEntry:
    """One device of LIST_DEVICES: name, encoded dev_t, event number and uuid (if asked)."""

    name: str
    dev: int
    event_nr: int | None = None
    uuid: str | None = None

    @property
    def major(self) -> int:
        return (self.dev >> 8) & 0xFFF

    @property
    def minor(self) -> int:
        return (self.dev & 0xFF) | ((self.dev >> 12) & 0xFFF00)


_PAD = [bytes(i) for i in range(8)]


def encode_name_list(entries: list[NameListEntry], with_uuid: bool) -> bytes:
    """LIST_DEVICES payload with the event_nr/flags/uuid trailer of interface >= 4.45."""
    parts: list[bytes] = []
    head, trailer = NAME_LIST_HEAD.pack, U32X2.pack
    last = len(entries) - 1
    for i, ent in enumerate(entries):
        name = ent.name.encode("utf-8", "surrogateescape")
        name_pad = -(13 + len(name)) & 7
        rec_len = 13 + len(name) + name_pad + 8
        uuid = b""
        flags = 0
        if with_uuid:
            if ent.uuid:
                flags = NAME_LIST_FLAG_HAS_UUID
                uuid = ent.uuid.encode("utf-8", "surrogateescape") + b"\0"
                uuid += _PAD[-len(uuid) & 7]
                rec_len += len(uuid)
            else:
                flags = NAME_LIST_FLAG_DOESNT_HAVE_UUID
        parts += (head(ent.dev, 0 if i == last else rec_len), name, b"\0", _PAD[name_pad],
                  trailer(ent.event_nr or 0, flags), uuid)
    return b"".join(parts)


def decode_name_list(buf: bytes | memoryview, start: int, end: int) -> list[NameListEntry]:
    entries: list[NameListEntry] = []
    raw = bytes(buf[:end]) if not isinstance(buf, bytes) else buf
    unpack_head, unpack_tr = NAME_LIST_HEAD.unpack_from, U32X2.unpack_from
    pos = start
    while True:
        dev, nxt = unpack_head(raw, pos)
        limit = pos + nxt if nxt else end
        nul = raw.index(b"\0", pos + 12, limit)
        name = raw[pos + 12:nul].decode("utf-8", "surrogateescape")
        trailer = pos + ((nul + 1 - pos + 7) & ~7)
        event_nr: int | None = None
        uuid: str | None = None
        if trailer + 8 <= limit:
            event_nr, flags = unpack_tr(raw, trailer)
            if flags & NAME_LIST_FLAG_HAS_UUID:
                uend = raw.index(b"\0", trailer + 8, limit)
                uuid = raw[trailer + 8:uend].decode("utf-8", "surrogateescape")
        entries.append(NameListEntry(name, dev, event_nr, uuid))
        if not nxt:
            return entries
        pos += nxt


@dataclass(frozen=True, slots=True)
class TargetVersion:
    name: str
    version: tuple[int, int, int]


def encode_versions(targets: list[TargetVersion]) -> bytes:
    out = bytearray()
    for i, tv in enumerate(targets):
        name = tv.name.encode() + b"\0"
        rec_len = align8(VERSIONS_HEAD.size + len(name))
        nxt = 0 if i == len(targets) - 1 else rec_len
        out += VERSIONS_HEAD.pack(nxt, *tv.version) + name
        out += bytes(rec_len - VERSIONS_HEAD.size - len(name))
    return bytes(out)


def decode_versions(buf: bytes | memoryview, start: int) -> list[TargetVersion]:
    out = []
    pos = start
    while True:
        nxt, a, b, c = VERSIONS_HEAD.unpack_from(buf, pos)
        name = _cstr(bytes(buf[pos + 16:pos + 16 + DM_MAX_TYPE_NAME + 64]))
        out.append(TargetVersion(name, (a, b, c)))
        if not nxt:
            return out
        pos += nxt


def encode_target_msg(sector: int, message: str) -> bytes:
    return MSG_HEAD.pack(sector) + message.encode("utf-8", "surrogateescape") + b"\0"


def encode_string(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape") + b"\0"


def decode_string(buf: bytes | memoryview, start: int, end: int) -> str:
    return _cstr(bytes(buf[start:end]))


#: The kernel's isspace() (lib/ctype.c): C whitespace plus Latin-1 no-break space 0xa0.
KERNEL_SPACE = frozenset(b" \t\n\v\f\r\xa0")


def split_params(params: str) -> list[str]:
    """dm_split_args, on the bytes the kernel sees: split on the kernel's whitespace; a
    backslash makes the next byte literal; a trailing backslash stays as it is."""
    raw = params.encode("utf-8", "surrogateescape")
    out: list[str] = []
    i, n = 0, len(raw)
    while True:
        while i < n and raw[i] in KERNEL_SPACE:
            i += 1
        if i >= n:
            return out
        word = bytearray()
        while i < n:
            c = raw[i]
            if c == 0x5C and i + 1 < n:  # backslash quotes the next byte
                word.append(raw[i + 1])
                i += 2
                continue
            if c in KERNEL_SPACE:
                break
            word.append(c)
            i += 1
        i += 1  # past the whitespace that ended the word
        out.append(word.decode("utf-8", "surrogateescape"))


def scan_ulongs(text: str, count: int) -> list[int] | None:
    """sscanf("%lu %lu ... %lu%c") == count: unsigned decimals (wrapping at 2**64 as the
    kernel's parser does), separated by optional whitespace, and nothing after the last."""
    raw = text.encode("utf-8", "surrogateescape")
    values = []
    i, n = 0, len(raw)
    for _ in range(count):
        while i < n and raw[i] in KERNEL_SPACE:
            i += 1
        start = i
        while i < n and 0x30 <= raw[i] <= 0x39:
            i += 1
        if i == start:
            return None
        values.append(int(raw[start:i]) & 0xFFFFFFFFFFFFFFFF)
    return values if i == n else None
