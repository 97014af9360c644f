"""The library: libdevmapper's role, in Python.

:class:`DeviceMapper` turns method calls into v4 commands over a control transport (the
kernel, an in-process engine, or the engine daemon) and decodes typed results. Failures raise
:class:`DMError`, an OSError carrying the errno the driver returned and the command it
answered. Results that outgrow the buffer are retried with a larger one, as on BUFFER_FULL.
"""

from __future__ import annotations

import builtins
import errno
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devmapper import uapi
from devmapper.uapi import DM_IOCTL_SIZE, Cmd, DmIoctl, Flag, TargetSpec

if TYPE_CHECKING:
    from collections.abc import Iterable

    from devmapper.blockio import EngineBlock, NodeBlock
    from devmapper.control import Transport

#: ioctl names as libdevmapper prints them in "device-mapper: NAME ioctl on ... failed".
COMMAND_NAMES = {
    Cmd.VERSION: "version", Cmd.REMOVE_ALL: "remove_all", Cmd.LIST_DEVICES: "list",
    Cmd.DEV_CREATE: "create", Cmd.DEV_REMOVE: "remove", Cmd.DEV_RENAME: "rename",
    Cmd.DEV_SUSPEND: "suspend", Cmd.DEV_STATUS: "info", Cmd.DEV_WAIT: "waitevent",
    Cmd.TABLE_LOAD: "reload", Cmd.TABLE_CLEAR: "clear", Cmd.TABLE_DEPS: "deps",
    Cmd.TABLE_STATUS: "status", Cmd.LIST_VERSIONS: "targets", Cmd.TARGET_MSG: "message",
    Cmd.DEV_SET_GEOMETRY: "setgeometry", Cmd.DEV_ARM_POLL: "armpoll",
    Cmd.GET_TARGET_VERSION: "target-version",
}

INITIAL_BUFFER = 16 * 1024


class DMError(OSError):
    """A command the driver refused: ``errno`` (and ``strerror``), the ``command``, and the
    device it named (``name`` and ``uuid``, either may be empty)."""

    def __init__(self, err: int, command: Cmd, name: str = "", uuid: str = "") -> None:
        super().__init__(err, os.strerror(err))
        self.command = command
        self.name = name
        self.uuid = uuid

    @property
    def device(self) -> str:
        """The name, else the uuid."""
        return self.name or self.uuid

    @property
    def command_name(self) -> str:
        """The command as libdevmapper names it ("reload", "info", ...)."""
        return COMMAND_NAMES.get(self.command, str(self.command))

    def __str__(self) -> str:
        return f"{self.command_name} ioctl on {self.device} failed: {self.strerror}"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What DEV_STATUS and most commands report about a device.

    ``version`` is the interface version the driver answered this command with; ``header``
    the whole reply header (data_size, data_start, padding...), for what has no field here.
    """

    name: str
    uuid: str
    major: int
    minor: int
    open_count: int
    event_nr: int
    target_count: int
    flags: int
    version: tuple[int, int, int] = (0, 0, 0)
    header: DmIoctl | None = field(default=None, compare=False, repr=False)

    @property
    def exists(self) -> bool:
        return True

    @property
    def suspended(self) -> bool:
        return bool(self.flags & Flag.SUSPEND)

    @property
    def read_only(self) -> bool:
        return bool(self.flags & Flag.READONLY)

    @property
    def live_table(self) -> bool:
        return bool(self.flags & Flag.ACTIVE_PRESENT)

    @property
    def inactive_table(self) -> bool:
        return bool(self.flags & Flag.INACTIVE_PRESENT)

    @property
    def deferred_remove(self) -> bool:
        return bool(self.flags & Flag.DEFERRED_REMOVE)

    @classmethod
    def from_header(cls, hdr: DmIoctl) -> DeviceInfo:
        major, minor = uapi.decode_dev(hdr.dev)
        return cls(hdr.name, hdr.uuid, major, minor, hdr.open_count, hdr.event_nr,
                   hdr.target_count, hdr.flags, hdr.version, hdr)


#: A device as LIST_DEVICES reports it (name, dev, major, minor, event_nr, uuid).
ListedDevice = uapi.NameListEntry


@dataclass(frozen=True, slots=True)
class Reply:
    """A raw reply: the header and the whole buffer, for callers that need both."""

    hdr: DmIoctl
    buf: bytes

    @property
    def version(self) -> tuple[int, int, int]:
        """The interface version the driver answered this command with."""
        return self.hdr.version


def parse_table(text: str) -> list[TargetSpec]:
    """Table text as dmsetup reads it: `start length type params` per line; # comments."""
    specs = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 3)
        if len(fields) < 3:
            raise ValueError(f"Invalid format on line: {raw}")
        start, length, ttype = fields[:3]
        if not (start.isdigit() and length.isdigit()):
            raise ValueError(f"Invalid format on line: {raw}")
        specs.append(TargetSpec(int(start), int(length), ttype,
                                fields[3] if len(fields) > 3 else ""))
    return specs


def format_table(specs: Iterable[TargetSpec]) -> str:
    return "".join(f"{s.start} {s.length} {s.target_type} {s.params}".rstrip(" ") + "\n"
                   for s in specs)


class DeviceMapper:
    """A Pythonic handle on one device-mapper driver."""

    def __init__(self, transport: Transport | None = None) -> None:
        if transport is None:
            from devmapper.backend import default_transport

            transport = default_transport()
        self.transport = transport
        self._size_hint: dict[int, int] = {}

    @classmethod
    def in_process(cls) -> DeviceMapper:
        """A fresh userspace engine inside this process."""
        from devmapper.control.engine import EngineTransport

        return cls(EngineTransport())

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> DeviceMapper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the raw command
    def command(self, cmd: Cmd, name: str = "", uuid: str = "", dev: int = 0, flags: int = 0,
                payload: bytes = b"", event_nr: int = 0, target_count: int = 0,
                size: int = 0, version: tuple[int, int, int] | None = None) -> Reply:
        """Send one command; on BUFFER_FULL retry with a bigger buffer. ``version`` is the
        interface version asked for (default: the oldest that has the command); the reply's
        is ``Reply.version``."""
        size = max(size or self._size_hint.get(cmd, INITIAL_BUFFER),
                   DM_IOCTL_SIZE + len(payload))
        version = version or uapi.CMD_MIN_VERSION.get(cmd, (4, 0, 0))
        while True:
            hdr = DmIoctl(version=version, flags=flags, name=name, uuid=uuid, dev=dev,
                          event_nr=event_nr, target_count=target_count)
            buf = uapi.build_request(hdr, payload, size)
            try:
                self.transport.ioctl(cmd, buf)
            except OSError as e:
                raise DMError(e.errno or errno.EIO, cmd, name, uuid) from None
            out = DmIoctl.unpack(buf)
            if out.flags & Flag.BUFFER_FULL and size < uapi.DM_MAX_DATA_SIZE:
                size = min(size * 8, uapi.DM_MAX_DATA_SIZE)
                self._size_hint[cmd] = size  # the next call of this kind starts there
                continue
            return Reply(out, bytes(buf))

    @staticmethod
    def _id(name: str | None, uuid: str | None,
            dev: tuple[int, int] | None) -> tuple[str, str, int]:
        """How a command names its device: by uuid, name or major:minor."""
        return name or "", uuid or "", uapi.encode_dev(*dev) if dev else 0

    # ---- commands
    def version(self) -> tuple[int, int, int]:
        buf = uapi.build_request(DmIoctl(), b"", DM_IOCTL_SIZE)
        try:
            self.transport.ioctl(Cmd.VERSION, buf)
        except OSError as e:
            raise DMError(e.errno or errno.EIO, Cmd.VERSION) from None
        return DmIoctl.unpack(buf).version

    def create(self, name: str, table: Iterable[TargetSpec] | str | None = None, *,
               uuid: str | None = None, read_only: bool = False, minor: int | None = None,
               major: int = 0) -> DeviceInfo:
        """DEV_CREATE, then (with a table) TABLE_LOAD and resume, as `dmsetup create`."""
        flags = 0
        dev = 0
        if minor is not None:
            flags |= Flag.PERSISTENT_DEV
            dev = uapi.encode_dev(major, minor)
        info = DeviceInfo.from_header(
            self.command(Cmd.DEV_CREATE, name, uuid or "", dev, flags).hdr)
        if table is None:
            return info
        try:
            self.load(name, table, read_only=read_only)
            return self.resume(name)
        except DMError:
            self.remove(name)
            raise

    def load(self, name: str | None = None, table: Iterable[TargetSpec] | str = (), *,
             uuid: str | None = None, dev: tuple[int, int] | None = None,
             read_only: bool = False) -> DeviceInfo:
        specs = parse_table(table) if isinstance(table, str) else list(table)
        flags = Flag.READONLY if read_only else 0
        reply = self.command(Cmd.TABLE_LOAD, *self._id(name, uuid, dev), flags=flags,
                             payload=uapi.encode_load_specs(specs), target_count=len(specs))
        return DeviceInfo.from_header(reply.hdr)

    reload = load

    def clear(self, name: str | None = None, *, uuid: str | None = None,
              dev: tuple[int, int] | None = None) -> DeviceInfo:
        return DeviceInfo.from_header(
            self.command(Cmd.TABLE_CLEAR, *self._id(name, uuid, dev)).hdr)

    def suspend(self, name: str | None = None, *, uuid: str | None = None,
                dev: tuple[int, int] | None = None, noflush: bool = False,
                lockfs: bool = True) -> DeviceInfo:
        flags = Flag.SUSPEND | (Flag.NOFLUSH if noflush else 0) | (
            0 if lockfs else Flag.SKIP_LOCKFS)
        reply = self.command(Cmd.DEV_SUSPEND, *self._id(name, uuid, dev), flags=flags)
        return DeviceInfo.from_header(reply.hdr)

    def resume(self, name: str | None = None, *, uuid: str | None = None,
               dev: tuple[int, int] | None = None, noflush: bool = False,
               lockfs: bool = True) -> DeviceInfo:
        flags = (Flag.NOFLUSH if noflush else 0) | (0 if lockfs else Flag.SKIP_LOCKFS)
        reply = self.command(Cmd.DEV_SUSPEND, *self._id(name, uuid, dev), flags=flags)
        return DeviceInfo.from_header(reply.hdr)

    def remove(self, name: str | None = None, *, uuid: str | None = None,
               dev: tuple[int, int] | None = None, deferred: bool = False) -> None:
        flags = Flag.DEFERRED_REMOVE if deferred else 0
        self.command(Cmd.DEV_REMOVE, *self._id(name, uuid, dev), flags=flags)

    def remove_all(self, deferred: bool = False) -> None:
        self.command(Cmd.REMOVE_ALL, flags=Flag.DEFERRED_REMOVE if deferred else 0)

    def rename(self, name: str | None = None, new_name: str | None = None, *,
               uuid: str | None = None, new_uuid: str | None = None) -> DeviceInfo:
        if (new_name is None) == (new_uuid is None):
            raise ValueError("give exactly one of new_name and new_uuid")
        flags = Flag.UUID if new_uuid is not None else 0
        payload = uapi.encode_string(new_uuid if new_uuid is not None else new_name or "")
        return DeviceInfo.from_header(self.command(
            Cmd.DEV_RENAME, name or "", uuid or "", flags=flags, payload=payload).hdr)

    def info(self, name: str | None = None, *, uuid: str | None = None,
             dev: tuple[int, int] | None = None, inactive: bool = False) -> DeviceInfo:
        flags = Flag.QUERY_INACTIVE_TABLE if inactive else 0
        reply = self.command(Cmd.DEV_STATUS, *self._id(name, uuid, dev), flags=flags)
        return DeviceInfo.from_header(reply.hdr)

    def _status(self, flags: int, name: str | None, uuid: str | None,
                dev: tuple[int, int] | None) -> tuple[DeviceInfo, list[TargetSpec]]:
        reply = self.command(Cmd.TABLE_STATUS, *self._id(name, uuid, dev), flags=flags)
        return DeviceInfo.from_header(reply.hdr), uapi.decode_status_reply(reply.buf, reply.hdr)

    def status(self, name: str | None = None, *, uuid: str | None = None,
               dev: tuple[int, int] | None = None, inactive: bool = False,
               noflush: bool = False) -> list[TargetSpec]:
        flags = (Flag.QUERY_INACTIVE_TABLE if inactive else 0) | (
            Flag.NOFLUSH if noflush else 0)
        return self._status(flags, name, uuid, dev)[1]

    def table(self, name: str | None = None, *, uuid: str | None = None,
              dev: tuple[int, int] | None = None, inactive: bool = False,
              secure: bool = False) -> list[TargetSpec]:
        flags = Flag.STATUS_TABLE | (Flag.QUERY_INACTIVE_TABLE if inactive else 0) | (
            Flag.SECURE_DATA if secure else 0)
        return self._status(flags, name, uuid, dev)[1]

    def deps(self, name: str | None = None, *, uuid: str | None = None,
             dev: tuple[int, int] | None = None, inactive: bool = False) -> list[tuple[int, int]]:
        flags = Flag.QUERY_INACTIVE_TABLE if inactive else 0
        reply = self.command(Cmd.TABLE_DEPS, *self._id(name, uuid, dev), flags=flags)
        if reply.hdr.data_size <= DM_IOCTL_SIZE:
            return []
        return [uapi.decode_dev(d) for d in uapi.decode_deps(reply.buf, reply.hdr.data_start)]

    def list(self, *, with_uuid: bool = True, name_prefix: str = "",
             uuid_prefix: str = "") -> builtins.list[ListedDevice]:
        reply = self.command(Cmd.LIST_DEVICES, name_prefix, uuid_prefix,
                             flags=Flag.UUID if with_uuid else 0)
        hdr = reply.hdr
        if hdr.data_size <= DM_IOCTL_SIZE:
            return []
        return uapi.decode_name_list(reply.buf, hdr.data_start, hdr.data_size)

    def message(self, name: str | None = None, sector: int = 0, message: str = "", *,
                uuid: str | None = None, dev: tuple[int, int] | None = None) -> str | None:
        reply = self.command(Cmd.TARGET_MSG, *self._id(name, uuid, dev),
                             payload=uapi.encode_target_msg(sector, message))
        if reply.hdr.flags & Flag.DATA_OUT:
            return uapi.decode_string(reply.buf, reply.hdr.data_start, reply.hdr.data_size)
        return None

    def wait(self, name: str | None = None, event_nr: int = 0, *, uuid: str | None = None,
             dev: tuple[int, int] | None = None) -> tuple[DeviceInfo, builtins.list[TargetSpec]]:
        """DEV_WAIT: block until the device's event number differs from ``event_nr``."""
        reply = self.command(Cmd.DEV_WAIT, *self._id(name, uuid, dev), event_nr=event_nr)
        return DeviceInfo.from_header(reply.hdr), uapi.decode_status_reply(reply.buf, reply.hdr)

    def targets(self) -> builtins.list[uapi.TargetVersion]:
        reply = self.command(Cmd.LIST_VERSIONS)
        return uapi.decode_versions(reply.buf, reply.hdr.data_start)

    def target_version(self, target: str) -> tuple[int, int, int]:
        reply = self.command(Cmd.GET_TARGET_VERSION, target)
        return uapi.decode_versions(reply.buf, reply.hdr.data_start)[0].version

    def set_geometry(self, name: str | None = None, cylinders: int = 0, heads: int = 0,
                     sectors: int = 0, start: int = 0, *, uuid: str | None = None) -> None:
        self.command(Cmd.DEV_SET_GEOMETRY, name or "", uuid or "",
                     payload=uapi.encode_string(f"{cylinders} {heads} {sectors} {start}"))

    def arm_poll(self) -> None:
        """DEV_ARM_POLL: poll(fileno()) becomes readable at the next device event."""
        self.command(Cmd.DEV_ARM_POLL)

    def fileno(self) -> int:
        return self.transport.fileno()

    def open(self, name: str, read_only: bool = False) -> EngineBlock | NodeBlock:
        """Open a mapped device for I/O; the handle counts in the device's open count."""
        from devmapper.blockio import EngineBlock, NodeBlock

        engine = getattr(self.transport, "engine", None)
        if engine is not None:
            md = engine.by_name.get(name)
            if md is None:
                raise DMError(errno.ENXIO, Cmd.DEV_STATUS, name)
            return EngineBlock(md)
        dev_dir = os.environ.get("DM_DEV_DIR", "/dev")
        return NodeBlock(os.path.join(dev_dir, "mapper", name), read_only)
