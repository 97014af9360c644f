"""The v4 commands, answered as drivers/md/dm-ioctl.c answers them.

Each command gets the kernel's private copy of the caller's buffer (``Req``), may write a
payload at offset 312 and set data_size, and returns 0 or raises OSError with the errno.
The reply is what the kernel would copy back to the caller: data_size bytes on success,
only the 12 version bytes on failure.
"""

from __future__ import annotations

import errno
import logging
import struct
from typing import TYPE_CHECKING

from devmapper import uapi
from devmapper.engine.table import Table, TableError
from devmapper.targets import all_target_types, lookup_target_type
from devmapper.targets.base import StatusType, TargetError
from devmapper.uapi import (
    DM_IOCTL_MIN_SIZE,
    DM_IOCTL_SIZE,
    DM_MAX_DATA_SIZE,
    DM_MAX_TARGETS,
    SPEC,
    Cmd,
    DmIoctl,
    Flag,
    align8,
    encode_dev,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from devmapper.engine.core import ControlSession, Engine
    from devmapper.engine.mapped_device import MappedDevice

log = logging.getLogger("devmapper.kernel")
_VERSION = struct.Struct("=3I")


class Req:
    """The kernel's copy of one request: header fields plus the raw buffer."""

    __slots__ = ("hdr", "buf", "input_size", "session")

    def __init__(self, hdr: DmIoctl, buf: bytearray, input_size: int,
                 session: ControlSession | None) -> None:
        self.hdr = hdr
        self.buf = buf
        self.input_size = input_size
        self.session = session

    def result_space(self) -> int:
        """get_result_buffer: output goes at 312, up to the caller's data_size."""
        self.hdr.data_start = DM_IOCTL_SIZE
        return max(0, self.input_size - DM_IOCTL_SIZE)

    def put_output(self, payload: bytes, data_size: int | None = None) -> None:
        end = DM_IOCTL_SIZE + len(payload)
        if len(self.buf) < end:
            self.buf.extend(bytes(end - len(self.buf)))
        self.buf[DM_IOCTL_SIZE:end] = payload
        self.hdr.data_size = end if data_size is None else data_size

    def string_at_data_start(self) -> str | None:
        """The NUL-terminated string at data_start, or None if out of bounds/unterminated."""
        start = self.hdr.data_start
        if start < DM_IOCTL_MIN_SIZE or start >= self.input_size:
            return None
        end = self.buf.find(b"\0", start, self.input_size)
        if end < 0:
            return None
        return self.buf[start:end].decode("utf-8", "surrogateescape")


def _err(code: int) -> OSError:
    return OSError(code, "")


# ---------------------------------------------------------------- helpers


def _find(engine: Engine, req: Req) -> MappedDevice:
    """__find_device_hash_cell: writes back the canonical name and uuid."""
    hdr = req.hdr
    md = engine.find(hdr.name, hdr.uuid, hdr.dev)
    if md is None:
        raise _err(errno.ENXIO)
    hdr.name = md.name
    hdr.uuid = md.uuid
    if md.inactive is not None:
        hdr.flags |= Flag.INACTIVE_PRESENT
    else:
        hdr.flags &= ~Flag.INACTIVE_PRESENT
    return md


def dev_status(md: MappedDevice, hdr: DmIoctl) -> None:
    """__dev_status."""
    flags = hdr.flags & ~(Flag.SUSPEND | Flag.READONLY | Flag.ACTIVE_PRESENT
                          | Flag.INTERNAL_SUSPEND)
    if md.suspended:
        flags |= Flag.SUSPEND
    if md.deferred_remove:
        flags |= Flag.DEFERRED_REMOVE
    hdr.dev = md.dev
    hdr.open_count = md.engine.open_count(md)
    hdr.event_nr = md.event_nr
    hdr.target_count = 0
    query_inactive = flags & Flag.QUERY_INACTIVE_TABLE
    if md.live is not None:
        if not query_inactive:
            if md.read_only:
                flags |= Flag.READONLY
            hdr.target_count = len(md.live.targets)
        flags |= Flag.ACTIVE_PRESENT
    if query_inactive and md.inactive is not None:
        if md.inactive.read_only:
            flags |= Flag.READONLY
        hdr.target_count = len(md.inactive.targets)
    hdr.flags = flags


def _live_or_inactive(md: MappedDevice, hdr: DmIoctl) -> Table | None:
    return md.inactive if hdr.flags & Flag.QUERY_INACTIVE_TABLE else md.live


def check_name(name: str) -> None:
    # Kernel 6.1 (interface 4.47) rejects only '/': "control", "." and ".." are accepted,
    # as the real driver in QEMU shows (tests/fixtures/kernel_facts.json).
    if "/" in name:
        log.error("device name cannot contain '/'")
        raise _err(errno.EINVAL)


# ---------------------------------------------------------------- commands


def remove_all(engine: Engine, req: Req) -> None:
    engine.remove_all(bool(req.hdr.flags & Flag.DEFERRED_REMOVE), False)
    req.hdr.data_size = 0


def list_devices(engine: Engine, req: Req) -> None:
    hdr = req.hdr
    pfx_name, pfx_uuid = hdr.name, hdr.uuid
    with_uuid = bool(hdr.flags & Flag.UUID)
    with engine.lock:
        # Code point order is UTF-8 byte order: the kernel's rb-tree order by strcmp.
        mds = sorted(engine.by_name.items())
        if pfx_name or pfx_uuid:
            mds = [(n, md) for n, md in mds
                   if n.startswith(pfx_name) and md.uuid.startswith(pfx_uuid)]
        entries = [uapi.NameListEntry(n, md.dev, md.event_nr, md.uuid or None)
                   for n, md in mds]
    payload = uapi.encode_name_list(entries, with_uuid) if entries else b""
    space = req.result_space()
    if space < len(payload) or space < 8:
        hdr.flags |= Flag.BUFFER_FULL
        return
    if entries:
        req.put_output(payload)
    else:
        # "Flags no data": dev 0 written, data_size covers nothing past the header.
        req.put_output(bytes(8), DM_IOCTL_SIZE)


def dev_create(engine: Engine, req: Req) -> None:
    hdr = req.hdr
    check_name(hdr.name)
    minor = None
    if hdr.flags & Flag.PERSISTENT_DEV:
        minor = uapi.decode_dev(hdr.dev)[1]
    from devmapper.engine.mapped_device import MappedDevice

    with engine.lock:
        if hdr.name in engine.by_name:
            log.error("device name %s already in use", hdr.name)
            raise _err(errno.EBUSY)
        if hdr.uuid and hdr.uuid in engine.by_uuid:
            log.error("device uuid %s already in use", hdr.uuid)
            raise _err(errno.EBUSY)
        try:
            minor = engine.allocate_minor(minor)
        except OSError as e:
            # A persistent minor in use: 4.47 answers ENXIO.
            raise _err(errno.ENXIO if e.errno == errno.EBUSY else e.errno or errno.EINVAL)
        md = MappedDevice(engine, hdr.name, hdr.uuid, engine.major, minor)
        if engine.exposure is not None:
            try:
                dev = engine.exposure.allocate(md)
            except OSError:
                engine.release_minor(minor)
                raise
            if dev is not None:
                engine.release_minor(minor)
                md.set_dev(*dev)
        engine.by_name[md.name] = md
        if md.uuid:
            engine.by_uuid[md.uuid] = md
        engine.by_dev[(md.major, md.minor)] = md
    hdr.flags &= ~Flag.INACTIVE_PRESENT
    dev_status(md, hdr)


def dev_remove(engine: Engine, req: Req) -> None:
    hdr = req.hdr
    with engine.lock:
        md = _find(engine, req)
        if not engine.try_remove(md, bool(hdr.flags & Flag.DEFERRED_REMOVE)):
            return  # marked: it goes at the last close
    hdr.flags &= ~Flag.DEFERRED_REMOVE


def dev_rename(engine: Engine, req: Req) -> None:
    hdr = req.hdr
    change_uuid = bool(hdr.flags & Flag.UUID)
    new = req.string_at_data_start()
    limit = uapi.DM_UUID_LEN - 1 if change_uuid else uapi.DM_NAME_LEN - 1
    if not new or len(new.encode("utf-8", "surrogateescape")) > limit:
        log.error("Invalid new mapped device name or uuid string supplied.")
        raise _err(errno.EINVAL)
    if not change_uuid:
        check_name(new)
    with engine.lock:
        if (engine.by_uuid if change_uuid else engine.by_name).get(new) is not None:
            log.error("Unable to change %s on mapped device %s to one that already exists: %s",
                      "uuid" if change_uuid else "name", hdr.name or hdr.uuid, new)
            raise _err(errno.EBUSY)
        # 4.47 finds the device to rename by name only: a uuid finds nothing (ENXIO).
        md = engine.by_name.get(hdr.name) if hdr.name and not hdr.uuid else None
        if md is None:
            raise _err(errno.ENXIO)
        _find(engine, req)  # writes back the old name and uuid, which the reply carries
        if change_uuid:
            if md.uuid:
                raise _err(errno.EINVAL)
            md.uuid = new
            engine.by_uuid[new] = md
        else:
            old = md.name
            del engine.by_name[old]
            md.name = new
            engine.by_name[new] = md
            if engine.exposure is not None:
                engine.exposure.renamed(md, old)
    if md.live is not None:
        md.table_event()
    dev_status(md, hdr)


def dev_suspend(engine: Engine, req: Req) -> None:
    if req.hdr.flags & Flag.SUSPEND:
        _do_suspend(engine, req)
    else:
        _do_resume(engine, req)


def _do_suspend(engine: Engine, req: Req) -> None:
    hdr = req.hdr
    with engine.lock:
        md = _find(engine, req)
    with md.suspend_lock:
        if not md.suspended:
            md.suspend(bool(hdr.flags & Flag.NOFLUSH), not hdr.flags & Flag.SKIP_LOCKFS)
    dev_status(md, hdr)


def _do_resume(engine: Engine, req: Req) -> None:
    hdr = req.hdr
    with engine.lock:
        md = _find(engine, req)
        new_map = md.inactive
        md.inactive = None
    hdr.flags &= ~Flag.INACTIVE_PRESENT
    old_map = None
    try:
        with md.suspend_lock:
            if new_map is not None:
                if not md.suspended:
                    md.suspend(bool(hdr.flags & Flag.NOFLUSH),
                               not hdr.flags & Flag.SKIP_LOCKFS)
                try:
                    old_map = md.swap_table(new_map)
                except TableError as e:
                    new_map.destroy()
                    raise _err(e.errno)
            if md.suspended:
                try:
                    md.resume()
                except TargetError as e:
                    raise _err(e.errno)
                finally:
                    if new_map is not None and engine.exposure is not None:
                        engine.exposure.changed(md)
    finally:
        # The replaced table goes even when resume fails, as in do_resume.
        if old_map is not None:
            old_map.destroy()
    engine.global_event()
    dev_status(md, hdr)


def dev_status_cmd(engine: Engine, req: Req) -> None:
    with engine.lock:
        md = _find(engine, req)
    dev_status(md, req.hdr)


def dev_wait(engine: Engine, req: Req) -> None:
    with engine.lock:
        md = _find(engine, req)
    cancelled = getattr(req.session, "cancelled", None)
    if not md.wait_event(req.hdr.event_nr, cancelled):
        raise _err(errno.EINTR)
    dev_status(md, req.hdr)
    table = _live_or_inactive(md, req.hdr)
    if table is not None:
        _retrieve_status(table, req)


def table_load(engine: Engine, req: Req) -> None:
    hdr = req.hdr
    with engine.lock:
        md = _find(engine, req)
    if hdr.target_count > DM_MAX_TARGETS:
        raise _err(errno.EOVERFLOW)
    table = Table(md, bool(hdr.flags & Flag.READONLY))
    try:
        _populate_table(table, req)
        table.complete()
        if not md.type_set:
            # dm_setup_md_queue on the first load checks the limits now; later loads at resume.
            table.validate_areas()
    except TableError as e:
        table.destroy()
        raise _err(e.errno)
    except BaseException:
        table.destroy()
        raise
    md.type_set = True
    with engine.lock:
        if md.deleting:
            table.destroy()
            raise _err(errno.ENXIO)
        old = md.inactive
        md.inactive = table
    hdr.flags |= Flag.INACTIVE_PRESENT
    dev_status(md, hdr)
    if old is not None:
        old.destroy()


def _populate_table(table: Table, req: Req) -> None:
    hdr = req.hdr
    buf = req.buf
    end = req.input_size
    if not hdr.target_count:
        log.error("populate_table: no targets specified")
        raise TableError(errno.EINVAL, "no targets specified")
    spec_pos = 0
    nxt = hdr.data_start
    min_size = DM_IOCTL_SIZE
    for _ in range(hdr.target_count):
        if nxt < min_size:
            log.error("populate_table: next target spec (%d) overlaps header", nxt)
            raise TableError(errno.EINVAL, "spec overlaps")
        remaining = end - spec_pos
        if remaining - SPEC.size <= nxt:
            log.error("Target spec extends beyond end of parameters")
            raise TableError(errno.EINVAL, "spec beyond end")
        if nxt % 8:
            log.error("Next dm_target_spec (offset %d) is not 8-byte aligned", nxt)
            raise TableError(errno.EINVAL, "spec misaligned")
        spec_pos += nxt
        start, length, _status, nxt, ttype = SPEC.unpack_from(buf, spec_pos)
        params_at = spec_pos + SPEC.size
        nul = buf.find(b"\0", params_at, end)
        if nul < 0:
            log.error("populate_table: target parameters not NUL-terminated")
            raise TableError(errno.EINVAL, "params not terminated")
        min_size = nul - spec_pos + 1
        type_end = ttype.find(b"\0")
        type_name = (ttype if type_end < 0 else ttype[:type_end]).decode("utf-8", "replace")
        params = buf[params_at:nul].decode("utf-8", "surrogateescape")
        table.add_target(type_name, start, length, params)


def table_clear(engine: Engine, req: Req) -> None:
    with engine.lock:
        md = _find(engine, req)
        old = md.inactive
        md.inactive = None
    req.hdr.flags &= ~Flag.INACTIVE_PRESENT
    dev_status(md, req.hdr)
    if old is not None:
        old.destroy()


def table_deps(engine: Engine, req: Req) -> None:
    with engine.lock:
        md = _find(engine, req)
    dev_status(md, req.hdr)
    table = _live_or_inactive(md, req.hdr)
    if table is None:
        return
    devs = [d.dev for d in table.devices() if d.dev]
    payload = uapi.encode_deps(devs)
    if req.result_space() < len(payload):
        req.hdr.flags |= Flag.BUFFER_FULL
        return
    req.put_output(payload)


def table_status(engine: Engine, req: Req) -> None:
    with engine.lock:
        md = _find(engine, req)
    dev_status(md, req.hdr)
    table = _live_or_inactive(md, req.hdr)
    if table is not None:
        _retrieve_status(table, req)


def _retrieve_status(table: Table, req: Req) -> None:
    """retrieve_status, including its exact BUFFER_FULL and data_size rules."""
    hdr = req.hdr
    if hdr.flags & Flag.STATUS_TABLE:
        kind = StatusType.TABLE
    elif hdr.flags & Flag.IMA_MEASUREMENT:
        kind = StatusType.IMA
    else:
        kind = StatusType.INFO
    noflush = bool(hdr.flags & Flag.NOFLUSH)
    length = req.result_space()
    out = bytearray()
    used = 0
    for t in table.targets:
        remaining = length - len(out)
        if remaining <= SPEC.size:
            hdr.flags |= Flag.BUFFER_FULL
            break
        spec_at = len(out)
        out += SPEC.pack(t.begin, t.length, 0, 0, t.name.encode()[:15])
        remaining = length - len(out)
        text = (t.table() if kind is StatusType.TABLE else t.status(kind, noflush)).encode(
            "utf-8", "surrogateescape")
        if len(text) + 1 >= remaining:
            # DMEMIT truncates to the room left; the kernel flags the buffer as full.
            out += text[:remaining - 1] + b"\0"
            hdr.flags |= Flag.BUFFER_FULL
            break
        out += text + b"\0"
        used = DM_IOCTL_SIZE + len(out)
        out += bytes(align8(len(out)) - len(out))
        struct.pack_into("=I", out, spec_at + 20, len(out))
    if used:
        req.put_output(bytes(out[:used - DM_IOCTL_SIZE]))
    hdr.target_count = len(table.targets)


def list_versions(engine: Engine, req: Req) -> None:
    _list_versions(req, None)


def get_target_version(engine: Engine, req: Req) -> None:
    _list_versions(req, req.hdr.name)


def _list_versions(req: Req, name: str | None) -> None:
    if name is not None:
        ttype = lookup_target_type(name)
        if ttype is None:
            raise _err(errno.EINVAL)
        types = [ttype]
    else:
        types = all_target_types()
    needed = sum(16 + len(t.name) + 1 + 7 for t in types)
    if req.result_space() < needed:
        req.hdr.flags |= Flag.BUFFER_FULL
        return
    payload = uapi.encode_versions([uapi.TargetVersion(t.name, t.version) for t in types])
    req.put_output(payload + bytes(needed - len(payload)), DM_IOCTL_SIZE + needed)


def target_msg(engine: Engine, req: Req) -> None:
    hdr = req.hdr
    start = hdr.data_start  # the message is read before get_result_buffer moves it
    with engine.lock:
        md = _find(engine, req)
    req.result_space()
    if start < DM_IOCTL_MIN_SIZE or start + 8 > req.input_size:
        raise _err(errno.EINVAL)
    sector = struct.unpack_from("=Q", req.buf, start)[0]
    msg_end = req.buf.find(b"\0", start + 8, req.input_size)
    if msg_end < 0:
        log.error("Invalid target message parameters.")
        raise _err(errno.EINVAL)
    argv = uapi.split_params(req.buf[start + 8:msg_end].decode("utf-8", "surrogateescape"))
    if not argv:
        log.error("Empty message received.")
        raise _err(errno.EINVAL)
    result: str | None = None
    if argv[0].startswith("@"):
        if argv[0].lower() == "@cancel_deferred_remove":
            if len(argv) != 1:
                raise _err(errno.EINVAL)
            if md.deleting:
                raise _err(errno.EBUSY)
            md.deferred_remove = False
        elif argv[0] == "@stats_list" and len(argv) <= 2:
            result = ""  # dm-stats regions cannot be created here, so there are none
        else:
            log.error("Unsupported message sent to DM core: %s", argv[0])
            raise _err(errno.EINVAL)
    else:
        table = md.live
        if table is None:
            raise _err(errno.EINVAL)
        target = table.find_target(sector)
        if target is None:
            log.error("Target message sector outside device.")
            raise _err(errno.EINVAL)
        try:
            result = target.message(argv)
        except TargetError as e:
            raise _err(e.errno)
    dev_status(md, hdr)
    if result is not None:
        hdr.flags |= Flag.DATA_OUT
        raw = result.encode("utf-8", "surrogateescape")
        maxlen = req.result_space()
        if not maxlen or len(raw) + 1 >= maxlen:
            hdr.flags |= Flag.BUFFER_FULL
            req.put_output(raw[:max(0, maxlen - 1)] + b"\0" if maxlen else b"",
                           hdr.data_size)
        else:
            req.put_output(raw + b"\0")


def dev_set_geometry(engine: Engine, req: Req) -> None:
    with engine.lock:
        md = _find(engine, req)
    text = req.string_at_data_start()
    if text is None:
        log.error("Invalid geometry supplied.")
        raise _err(errno.EINVAL)
    values = uapi.scan_ulongs(text, 4)
    if values is None:
        log.error("Unable to interpret geometry settings.")
        raise _err(errno.EINVAL)
    cyl, heads, sectors, start = values
    if cyl > 65535 or heads > 255 or sectors > 255:
        log.error("Geometry exceeds range limits.")
        raise _err(errno.EINVAL)
    if start > cyl * heads * sectors:
        log.error("Start sector is beyond the geometry limits.")
        raise _err(errno.EINVAL)
    md.geometry = (cyl, heads, sectors, start)
    req.hdr.data_size = 0


def dev_arm_poll(engine: Engine, req: Req) -> None:
    if req.session is not None:
        req.session.arm()


# cmd -> (handler, no_params, issues_global_event)
_COMMANDS: dict[int, tuple[Callable[[Engine, Req], None], bool, bool]] = {
    Cmd.REMOVE_ALL: (remove_all, True, True),
    Cmd.LIST_DEVICES: (list_devices, False, False),
    Cmd.DEV_CREATE: (dev_create, True, True),
    Cmd.DEV_REMOVE: (dev_remove, True, True),
    Cmd.DEV_RENAME: (dev_rename, False, True),
    Cmd.DEV_SUSPEND: (dev_suspend, True, False),
    Cmd.DEV_STATUS: (dev_status_cmd, True, False),
    Cmd.DEV_WAIT: (dev_wait, False, False),
    Cmd.TABLE_LOAD: (table_load, False, False),
    Cmd.TABLE_CLEAR: (table_clear, True, False),
    Cmd.TABLE_DEPS: (table_deps, False, False),
    Cmd.TABLE_STATUS: (table_status, False, False),
    Cmd.LIST_VERSIONS: (list_versions, False, False),
    Cmd.TARGET_MSG: (target_msg, False, False),
    Cmd.DEV_SET_GEOMETRY: (dev_set_geometry, False, False),
    Cmd.DEV_ARM_POLL: (dev_arm_poll, True, False),
    Cmd.GET_TARGET_VERSION: (get_target_version, False, False),
}

_KERNEL_VERSION = _VERSION.pack(*uapi.ENGINE_VERSION)


def dispatch(engine: Engine, cmd: int, raw: bytes | bytearray | memoryview,
             session: ControlSession | None) -> tuple[int, bytes]:
    """ctl_ioctl: version check, copy_params, validate_params, the command, copy-out."""
    if len(raw) < 12:
        return errno.EFAULT, b""
    major, minor, _patch = _VERSION.unpack_from(raw, 0)
    if major != uapi.DM_VERSION_MAJOR or minor > uapi.ENGINE_VERSION[1]:
        log.error("ioctl interface mismatch: kernel(%d.%d.%d), user(%d.%d.%d), cmd(%d)",
                  *uapi.ENGINE_VERSION, major, minor, _patch, cmd)
        return errno.EINVAL, _KERNEL_VERSION
    if cmd == Cmd.VERSION:
        return 0, _KERNEL_VERSION
    entry = _COMMANDS.get(cmd)
    if entry is None:
        log.error("dm_ctl_ioctl: unknown command 0x%x", uapi.ioctl_request(cmd))
        return errno.ENOTTY, _KERNEL_VERSION
    fn, no_params, global_event = entry
    if len(raw) < DM_IOCTL_MIN_SIZE:
        return errno.EFAULT, _KERNEL_VERSION
    hdr = DmIoctl.unpack(raw)
    if hdr.data_size < DM_IOCTL_MIN_SIZE or hdr.data_size > DM_MAX_DATA_SIZE:
        log.error("Invalid data size in the ioctl structure: %d", hdr.data_size)
        return errno.EINVAL, _KERNEL_VERSION
    if no_params:
        buf = bytearray(raw[:DM_IOCTL_MIN_SIZE])
        input_size = DM_IOCTL_MIN_SIZE
    else:
        if hdr.data_size > len(raw):
            return errno.EFAULT, _KERNEL_VERSION
        buf = bytearray(raw[:hdr.data_size])
        input_size = hdr.data_size
    hdr.version = uapi.ENGINE_VERSION
    hdr.flags &= ~uapi.FLAGS_CLEARED_ON_ENTRY
    # validate_params: strings are forcibly terminated, name/uuid exclusivity checked.
    hdr.name = _terminated(hdr.raw_name, uapi.DM_NAME_LEN)
    hdr.uuid = _terminated(hdr.raw_uuid, uapi.DM_UUID_LEN)
    if cmd == Cmd.DEV_CREATE:
        if not hdr.name:
            log.error("name not supplied when creating device")
            return errno.EINVAL, _KERNEL_VERSION
    elif cmd not in (Cmd.REMOVE_ALL, Cmd.LIST_DEVICES, Cmd.LIST_VERSIONS) and hdr.uuid \
            and hdr.name:
        log.error("only supply one of name or uuid, cmd(%d)", cmd)
        return errno.EINVAL, _KERNEL_VERSION
    hdr.data_size = DM_IOCTL_MIN_SIZE
    req = Req(hdr, buf, input_size, session)
    try:
        fn(engine, req)
    except OSError as e:
        return e.errno or errno.EIO, _KERNEL_VERSION
    if global_event:
        engine.global_event()
    size = hdr.data_size
    if size == 0:
        return 0, _KERNEL_VERSION  # only check_version's write-back reaches the caller
    if len(buf) < size:
        buf.extend(bytes(size - len(buf)))
    head = _pack_header(hdr)
    buf[:DM_IOCTL_MIN_SIZE] = head[:DM_IOCTL_MIN_SIZE]
    return 0, bytes(buf[:size])


def _terminated(raw: bytes, size: int) -> str:
    raw = raw[:size - 1]
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "surrogateescape")


def _pack_header(hdr: DmIoctl) -> bytes:
    name = hdr.name.encode("utf-8", "surrogateescape")[:uapi.DM_NAME_LEN - 1]
    uuid = hdr.uuid.encode("utf-8", "surrogateescape")[:uapi.DM_UUID_LEN - 1]
    return uapi.DmIoctl(hdr.version, hdr.data_size, hdr.data_start, hdr.target_count,
                        hdr.open_count, hdr.flags, hdr.event_nr, hdr.dev,
                        name.decode("utf-8", "surrogateescape"),
                        uuid.decode("utf-8", "surrogateescape")).pack()


__all__ = ["dispatch", "encode_dev"]
