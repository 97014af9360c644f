"""The part of libdevmapper dmsetup sees: tasks, their ioctls, and libdm's own messages.

A :class:`Task` is libdm's ``struct dm_task``: a command type, a device (name, uuid or
major:minor), options, and after :meth:`Task.run` the driver's answer. It goes through
:meth:`DeviceMapper.command` (the raw v4 command API) so that flags, names and payloads are
exactly libdm's, and it prints libdm's messages ("device-mapper: reload ioctl on NAME
(254:0) failed: Invalid argument") through the shared :class:`Lib`.
"""

from __future__ import annotations

import errno
import os
import time
from typing import TYPE_CHECKING

from devmapper import uapi
from devmapper.cli import mangle, nodes, udev
from devmapper.library import DMError
from devmapper.uapi import Cmd, Flag

if TYPE_CHECKING:
    from devmapper.cli.lib import Lib

#: task type -> (command, interface minor libdm asks for)
TASKS: dict[str, tuple[Cmd, int]] = {
    "create": (Cmd.DEV_CREATE, 0), "reload": (Cmd.TABLE_LOAD, 0),
    "remove": (Cmd.DEV_REMOVE, 0), "remove_all": (Cmd.REMOVE_ALL, 0),
    "suspend": (Cmd.DEV_SUSPEND, 0), "resume": (Cmd.DEV_SUSPEND, 0),
    "info": (Cmd.DEV_STATUS, 0), "deps": (Cmd.TABLE_DEPS, 0), "rename": (Cmd.DEV_RENAME, 0),
    "version": (Cmd.VERSION, 0), "status": (Cmd.TABLE_STATUS, 0),
    "table": (Cmd.TABLE_STATUS, 0), "waitevent": (Cmd.DEV_WAIT, 0),
    "names": (Cmd.LIST_DEVICES, 0), "clear": (Cmd.TABLE_CLEAR, 0),
    "mknodes": (Cmd.DEV_STATUS, 0), "versions": (Cmd.LIST_VERSIONS, 1),
    "message": (Cmd.TARGET_MSG, 2), "setgeometry": (Cmd.DEV_SET_GEOMETRY, 6),
    "armpoll": (Cmd.DEV_ARM_POLL, 36), "target-version": (Cmd.GET_TARGET_VERSION, 41),
}
# Commands the kernel reads only the header of (libdm sends no parameters with them).
_NO_PARAMS = {"remove_all", "create", "remove", "suspend", "status", "clear", "armpoll"}
_UEVENT = {"resume", "remove", "rename"}
IOCTL_RETRIES = 25
RETRY_DELAY = 0.2
MIN_BUFFER = 16 * 1024


class Info:
    """struct dm_info."""

    __slots__ = ("exists", "suspended", "live_table", "inactive_table", "read_only",
                 "deferred_remove", "open_count", "event_nr", "major", "minor", "target_count")

    def __init__(self, hdr: uapi.DmIoctl | None) -> None:
        self.exists = hdr is not None
        f = hdr.flags if hdr else 0
        self.suspended = bool(f & Flag.SUSPEND)
        self.read_only = bool(f & Flag.READONLY)
        self.live_table = bool(f & Flag.ACTIVE_PRESENT)
        self.inactive_table = bool(f & Flag.INACTIVE_PRESENT)
        self.deferred_remove = bool(f & Flag.DEFERRED_REMOVE)
        self.open_count = hdr.open_count if hdr else 0
        self.event_nr = hdr.event_nr if hdr else 0
        self.target_count = hdr.target_count if hdr else 0
        self.major, self.minor = uapi.decode_dev(hdr.dev) if hdr else (0, 0)


class Task:
    """struct dm_task and dm_task_run."""

    def __init__(self, lib: Lib, ttype: str) -> None:
        self.lib = lib
        self.ctx = lib.ctx
        self.type = ttype
        self.dev_name: str | None = None
        self.mangled_name: str | None = None
        self.uuid: str | None = None
        self.mangled_uuid: str | None = None
        self.major = -1
        self.minor = -1
        self.allow_major_fallback = True
        self.newname: str | None = None
        self.new_uuid = False
        self.message: str | None = None
        self.sector = 0
        self.geometry: str | None = None
        self.targets: list[tuple[int, int, str, str]] = []
        self.read_only = self.no_flush = self.skip_lockfs = self.no_open_count = False
        self.query_inactive = self.deferred_remove = self.retry_remove = False
        self.secure_data = self.ima_measurement = self.enable_checks = False
        self.event_nr = 0
        self.cookie_set = False
        self.add_node = "resume"
        self.read_ahead: int | None = None
        self.read_ahead_minimum = False
        self.show_dev_only = False  # the reload of create+load: by major:minor only
        # results
        self._names: list[tuple[str, int, int]] = []
        self.hdr: uapi.DmIoctl | None = None
        self.buf: bytes = b""
        self.ioctl_errno = 0

    # ---- setters (dm_task_set_*)
    def set_name(self, name: str) -> bool:
        if "/" in name:
            return self._set_name_from_path(name, name.rsplit("/", 1)[1])
        return self._set_name(name, self.lib.mangling)

    def _set_name(self, name: str, mode: str) -> bool:
        self.dev_name = self.mangled_name = None
        if len(name.encode("utf-8", "surrogateescape")) >= uapi.DM_NAME_LEN:
            self.ctx.log_error(f'Name "{name}" too long.')
            return False
        ok, self.mangled_name = self._mangle(name, "name", mode, "Device name",
                                             f'Failed to mangle device name "{name}".')
        if ok:
            self.dev_name = name
        return ok

    def _mangle(self, value: str, what: str, mode: str, label: str,
                failed: str) -> tuple[bool, str | None]:
        """libdm's check and mangling of a name or uuid it is given: (ok, the mangled
        value when it differs, else None), with libdm's messages."""
        if not mangle.check_multiple(value, what, mode, self.ctx.log_error):
            return False, None
        if mode == mangle.NONE:
            return True, None
        m = mangle.mangle(value, what, mode, self.ctx.log_error)
        if m is None:
            self.ctx.log_error(failed)
            return False, None
        if m == value:
            return True, None
        self.ctx.log_debug(f"{label} mangled [{mode}]: {value} --> {m}")
        return True, m

    def _unmangled(self, value: str, what: str, mode: str) -> str | None:
        """The driver's name or uuid unmangled, None (reported) when it cannot be."""
        if not mangle.check_multiple(value, what, mode, self.ctx.log_error):
            return None
        return mangle.unmangle(value, what, mode, self.ctx.log_error)

    def _set_name_from_path(self, path: str, name: str) -> bool:
        if self.type == "create":
            self.ctx.log_error(f'Name "{path}" invalid. It contains "/".')
            return False
        ddir = nodes.dm_dir(self.lib.dev_dir)
        final = None
        try:
            st1 = os.stat(path)
            try:
                if os.stat(os.path.join(ddir, name)).st_rdev == st1.st_rdev:
                    final = name
            except OSError:
                pass
        except OSError:
            if len(path) < 3 or path.startswith("/") or path.count("/") != 1:
                self.ctx.log_error(f"Device {path} not found")
                return False
            try:
                st1 = os.stat(os.path.join(ddir, "..", path))
            except OSError:
                self.ctx.log_error(f"Device {path} not found")
                return False
        if final is None:
            from devmapper.cli.taskops import find_dm_name_of_device

            final = find_dm_name_of_device(ddir, st1.st_rdev)
            if final is None:
                self.ctx.log_error(f"Device {name} not found")
                return False
        return self._set_name(final, mangle.NONE)

    def set_uuid(self, uuid: str) -> bool:
        mode = self.lib.mangling
        self.uuid = self.mangled_uuid = None
        ok, self.mangled_uuid = self._mangle(uuid, "UUID", mode, "Device uuid",
                                             f'Failed to mangle device uuid "{uuid}".')
        if ok:
            self.uuid = uuid
        return ok

    def set_newname(self, newname: str) -> bool:
        mode = self.lib.mangling
        if "/" in newname:
            self.ctx.log_error(f'Name "{newname}" invalid. It contains "/".')
            return False
        if len(newname.encode("utf-8", "surrogateescape")) >= uapi.DM_NAME_LEN:
            self.ctx.log_error(f'Name "{newname}" too long')
            return False
        if not newname:
            self.ctx.log_error("Non empty new name is required.")
            return False
        ok, m = self._mangle(newname, "new name", mode, "New device name",
                             f'Failed to mangle new device name "{newname}"')
        if ok:
            self.newname, self.new_uuid = m or newname, False
        return ok

    def set_newuuid(self, newuuid: str) -> bool:
        mode = self.lib.mangling
        if len(newuuid.encode("utf-8", "surrogateescape")) >= uapi.DM_UUID_LEN:
            self.ctx.log_error(f'Uuid "{newuuid}" too long')
            return False
        ok, m = self._mangle(newuuid, "new UUID", mode, "New device uuid",
                             f'Failed to mangle new device UUID "{newuuid}"')
        if ok:
            self.newname, self.new_uuid = m or newuuid, True
        return ok

    def set_major(self, major: int) -> None:
        self.major = major
        self.allow_major_fallback = False

    def add_target(self, start: int, length: int, ttype: str, params: str) -> bool:
        if len(ttype.encode("utf-8", "surrogateescape")) >= uapi.DM_MAX_TYPE_NAME:
            self.ctx.log_error(f"Target type name {ttype} is too long.")
            return False
        self.targets.append((start, length, ttype, params))
        return True

    def set_cookie(self, cookie: int, flags: int) -> tuple[bool, int]:
        """dm_task_set_cookie: returns (ok, cookie), the cookie 0 without udev sync."""
        lib = self.lib
        if lib.cookie_supported():
            if lib.udev_disabled:
                flags &= ~udev.DISABLE_LIBRARY_FALLBACK
                flags |= udev.DISABLE_DM_RULES | udev.DISABLE_SUBSYSTEM_RULES
            self.event_nr = flags << udev.FLAGS_SHIFT
        if not lib.udev_sync_support():
            self.cookie_set = True
            return True, 0
        log, debug = self.ctx.log_error, self.ctx.log_debug
        if cookie:
            semid = udev._get_sem(cookie, log)
            if semid is None:
                self.event_nr = 0
                return False, cookie
        else:
            made = udev.create_cookie(log, debug)
            if made is None:
                self.event_nr = 0
                return False, 0
            cookie, semid = made
        if not udev.sem_inc(cookie, semid, log, debug):
            log(f"Could not set notification semaphore identified by cookie value "
                f"{cookie} ({cookie:#x})")
            self.event_nr = 0
            return False, cookie
        self.event_nr |= cookie & 0xFFFF
        self.cookie_set = True
        names = ["DISABLE_DM_RULES", "DISABLE_SUBSYSTEM_RULES", "DISABLE_DISK_RULES",
                 "DISABLE_OTHER_RULES", "LOW_PRIORITY", "DISABLE_LIBRARY_FALLBACK",
                 "PRIMARY_SOURCE"]
        text = "".join(f" {n}" for i, n in enumerate(names) if flags & (1 << i))
        text += "".join(f" SUBSYSTEM_{i}" if flags & (1 << (8 + i)) else " " for i in range(8))
        debug(f"Udev cookie 0x{cookie:x} (semid {semid}) assigned to "
              f"{self.type.upper()} task({_TASK_NUMBERS.get(self.type, 0)}) with flags"
              f"{text} (0x{flags:x})")
        return True, cookie

    # ---- results
    def info(self) -> Info:
        return Info(self.hdr)

    @property
    def exists(self) -> bool:
        return self.hdr is not None

    def name(self) -> str:
        return self.hdr.name if self.hdr else ""

    def get_uuid(self) -> str:
        return self.hdr.uuid if self.hdr else ""

    def status_targets(self) -> list[uapi.TargetSpec]:
        if self.hdr is None:
            return []
        return uapi.decode_status_reply(self.buf, self.hdr)

    def deps(self) -> list[tuple[int, int]]:
        hdr = self.hdr
        if hdr is None or hdr.data_size <= uapi.DM_IOCTL_SIZE:
            return []
        return [uapi.decode_dev(d) for d in uapi.decode_deps(self.buf, hdr.data_start)]

    def names(self) -> list[tuple[str, int, int]]:
        """(name, major, minor) of each listed device; names already unmangled."""
        return self._names

    def versions(self) -> list[uapi.TargetVersion]:
        assert self.hdr is not None
        return uapi.decode_versions(self.buf, self.hdr.data_start)

    def message_response(self) -> str | None:
        if self.hdr is None or not self.hdr.flags & Flag.DATA_OUT:
            return None
        return uapi.decode_string(self.buf, self.hdr.data_start, self.hdr.data_size)

    def read_ahead_value(self) -> int | None:
        """dm_task_get_read_ahead, with libdm's messages when it cannot be read."""
        return self.lib_read_ahead(self.name(), self.info())

    def lib_read_ahead(self, name: str, info: Info) -> int | None:
        lib = self.lib
        if lib.kind == "kernel":
            ra = nodes.sysfs_read_ahead(info.major, info.minor) if info.major else None
            if ra is None:
                path = os.path.join(nodes.dm_dir(lib.dev_dir), lib.mangle_for_node(name))
                ra, err = nodes.node_read_ahead(path)
                if err:
                    self.ctx.log_error(err)
                    return None
        else:
            from devmapper.cli.taskops import engine_read_ahead

            ra = engine_read_ahead(lib, name, info)
            if ra is None:
                return None
        self.ctx.log_debug(f"{name} ({info.major}:{info.minor}): read ahead is {ra}")
        return ra

    # ---- running
    def run(self) -> bool:
        if self.type == "create" and self.targets:
            return self._create_and_load()
        if self.type == "mknodes" and not self.dev_name and not self.uuid and self.major <= 0:
            return self._mknodes_all()
        if not self.lib.open():
            self._udev_complete()
            return False
        attempt = 1
        while True:
            err = self._ioctl(attempt)
            if err is None:
                break
            if (err == errno.EBUSY and self.type == "remove" and self.retry_remove
                    and attempt < IOCTL_RETRIES):
                attempt += 1
                time.sleep(RETRY_DELAY)
                continue
            self._udev_complete()
            return False
        self._after(self.cookie_set and bool(
            self.event_nr >> udev.FLAGS_SHIFT & udev.DISABLE_LIBRARY_FALLBACK))
        return True

    def _after(self, rely: bool) -> None:
        hdr = self.hdr
        if hdr is None:
            if self.type == "mknodes" and self.dev_name:
                self.lib.node_op("del", self.dev_name)
            return
        major, minor = uapi.decode_dev(hdr.dev)
        lib = self.lib
        name = self.dev_name or ""
        if self.type == "create" and self.add_node == "create":
            lib.node_op("add", name, major, minor, rely_on_udev=rely)
        elif self.type == "remove" and name:
            lib.node_op("del", name, rely_on_udev=rely)
        elif self.type == "rename" and not self.new_uuid and name:
            lib.node_op("rename", self.newname or "", old=name, rely_on_udev=rely)
        elif self.type == "resume":
            if self.add_node == "resume" and name:
                lib.node_op("add", name, major, minor, rely_on_udev=rely)
            if self.read_ahead is not None:
                from devmapper.cli.taskops import set_read_ahead

                set_read_ahead(self, major, minor)
        elif self.type == "mknodes":
            lib.node_op("add", hdr.name, major, minor)

    def _udev_complete(self) -> None:
        base = self.event_nr & 0xFFFF
        if self.cookie_set and base and self.lib.udev_sync_support():
            udev.complete(base | udev.DM_COOKIE_MAGIC << udev.FLAGS_SHIFT,
                          self.ctx.log_error, self.ctx.log_debug)

    def _ioctl(self, attempt: int) -> int | None:
        """_do_dm_ioctl: None on success, else the errno (already reported)."""
        lib = self.lib
        assert lib.dm is not None
        cmd, vminor = TASKS[self.type]
        flags, dev = 0, 0
        major = self.major
        if self.minor >= 0:
            if major <= 0 and self.allow_major_fallback:
                self.ctx.log_verbose(f"Overriding major number of {major} with "
                                     f"{lib.dm_major()} for persistent device.")
                major = self.major = lib.dm_major()
            if major <= 0:
                self.ctx.log_error("Missing major number for persistent device.")
                self.ctx.log_error("Couldn't create ioctl argument.")
                return errno.EINVAL
            flags |= Flag.PERSISTENT_DEV
            dev = uapi.encode_dev(major, self.minor)
        # libdm sends no name with the reload of create+load, nor with a resume by
        # major:minor (the kernel refuses a name and a device number together).
        by_dev = self.type == "resume" and self.minor >= 0 and major >= 0
        name = "" if self.show_dev_only or by_dev else (self.mangled_name or self.dev_name or "")
        uuid = self.mangled_uuid or self.uuid or ""
        uuid = uuid.encode("utf-8", "surrogateescape")[:uapi.DM_UUID_LEN - 1].decode(
            "utf-8", "surrogateescape")
        if self.type == "suspend":
            flags |= Flag.SUSPEND
        if self.no_flush:
            flags |= Flag.NOFLUSH
        if self.read_only:
            flags |= Flag.READONLY
        if self.skip_lockfs:
            flags |= Flag.SKIP_LOCKFS
        if self.deferred_remove and self.type in ("remove", "remove_all"):
            flags |= Flag.DEFERRED_REMOVE
        if self.secure_data:
            flags |= Flag.SECURE_DATA
        if self.query_inactive:
            flags |= Flag.QUERY_INACTIVE_TABLE
        if self.new_uuid:
            flags |= Flag.UUID
        if self.ima_measurement:
            flags |= Flag.IMA_MEASUREMENT
        if self.type == "table":
            flags |= Flag.STATUS_TABLE
        if self.no_open_count:
            flags |= Flag.SKIP_BDGET
        payload, size = self._payload()
        event_nr = self.event_nr
        if self.type in _UEVENT and lib.cookie_supported():
            event_nr |= udev.PRIMARY_SOURCE << udev.FLAGS_SHIFT
            if not self.cookie_set and lib.udev_sync_support():
                event_nr |= (udev.DISABLE_DM_RULES
                             | udev.DISABLE_SUBSYSTEM_RULES) << udev.FLAGS_SHIFT
        self._debug_line(name, uuid, size, attempt)
        try:
            reply = lib.dm.command(cmd, name, uuid, dev, flags, payload, event_nr,
                                   len(self.targets) if self.type == "reload" else 0, size,
                                   (uapi.DM_VERSION_MAJOR, vminor, 0))
        except DMError as e:
            self.ioctl_errno = e.errno or errno.EIO
            if self.ioctl_errno == errno.ENXIO and self.type in ("info", "mknodes", "status"):
                self.hdr = None
                return None
            text = (f"device-mapper: {_NAMES.get(self.type, self.type)} ioctl on "
                    f"{name or self.dev_name or ''} {uuid or self.uuid or ''}"
                    f"{self._devno_text(major)} failed: {os.strerror(self.ioctl_errno)}")
            if self.ioctl_errno == errno.EINTR:
                self.ctx.log_verbose(text)
            else:
                self.ctx.log_error(text)
            return self.ioctl_errno
        hdr, buf = reply.hdr, reply.buf
        if self.type == "create" and self.cookie_set and not self.show_dev_only:
            # Creating a device sends no uevent, so nobody would ever complete the cookie:
            # LVM2's dmsetup hangs on `create NAME` with an empty table while udev runs.
            # We complete it ourselves instead.
            self._udev_complete()
        elif self.type in _UEVENT and lib.udev_sync_support() and not (
                hdr.flags & Flag.UEVENT_GENERATED):
            self.ctx.log_debug("Uevent not generated! Calling udev_complete internally to "
                               "avoid process lock-up.")
            self._udev_complete()
        if not self._unmangle(hdr, buf):
            return errno.EINVAL
        self.hdr, self.buf = hdr, buf
        return None

    def _devno_text(self, major: int) -> str:
        if major <= 0:
            return ""
        minor = self.minor if self.minor > 0 else 0
        return f"({major}:{minor})"

    def _debug_line(self, name: str, uuid: str, size: int, attempt: int) -> None:
        if self.ctx.verbose < 2:
            return
        major = self.major
        dev = ""
        if major > 0:
            dev = f"({major}:{self.minor if self.minor > 0 else 0}) "
        flag_text = "".join((
            "noopencount " if self.no_open_count else "opencount ",
            "noflush " if self.no_flush else "flush ",
            "readonly " if self.read_only else "",
            "skiplockfs " if self.skip_lockfs else "",
            "retryremove " if self.retry_remove else "",
            "deferredremove " if self.deferred_remove else "",
            "securedata " if self.secure_data else "",
            "ima_measurement " if self.ima_measurement else "",
            "inactive " if self.query_inactive else "",
            "enablechecks " if self.enable_checks else "",
        ))
        msg = self.message or ""
        if msg[:7].lower() == "key set":
            msg = "key set"
        sector = str(self.sector) if self.sector else ""
        self.ctx.log_debug(
            f"dm {_NAMES.get(self.type, self.type)} {'UUID ' if self.new_uuid else ''}{name} "
            f"{uuid}{' ' if self.newname else ''}{self.newname or ''} {dev}[ {flag_text}] "
            f"{sector} {msg} [{size}] (*{attempt})")

    def _payload(self) -> tuple[bytes, int]:
        """The parameters libdm appends to the header, and libdm's buffer size."""
        size = uapi.DM_IOCTL_SIZE
        payload = b""
        if self.type not in _NO_PARAMS and self.targets:
            specs = []
            for start, length, ttype, params in self.targets:
                # libdm doubles backslashes: the kernel's argument splitter undoes it.
                specs.append(uapi.TargetSpec(start, length, ttype, params.replace("\\", "\\\\")))
                size += 40 + len(params.encode("utf-8", "surrogateescape")) + 1 + 8
            payload = uapi.encode_load_specs(specs)
        elif self.newname is not None:
            payload = uapi.encode_string(self.newname)
            size += len(payload)
        elif self.message is not None:
            payload = uapi.encode_target_msg(self.sector, self.message)
            size += len(payload)
        elif self.geometry is not None:
            payload = uapi.encode_string(self.geometry)
            size += len(payload)
        return payload, max(size, MIN_BUFFER, uapi.DM_IOCTL_SIZE + len(payload))

    def _unmangle(self, hdr: uapi.DmIoctl, buf: bytes) -> bool:
        mode = self.lib.mangling
        self._names = []
        if mode != mangle.NONE:
            if hdr.name:
                n = self._unmangled(hdr.name, "name", mode)
                if n is None:
                    return False
                hdr.name = n
            if self.type != "remove" and hdr.uuid:
                u = self._unmangled(hdr.uuid, "UUID", mode)
                if u is None:
                    return False
                hdr.uuid = u
        if self.type == "names" and hdr.data_size > uapi.DM_IOCTL_SIZE:
            for ent in uapi.decode_name_list(buf, hdr.data_start, hdr.data_size):
                name = ent.name
                if mode != mangle.NONE:
                    n = self._unmangled(name, "name", mode)
                    if n is None:
                        return False
                    name = n
                major, minor = uapi.decode_dev(ent.dev)
                self._names.append((name, major, minor))
        return True

    # ---- compound operations libdm performs inside dm_task_run (taskops.py)
    def _create_and_load(self) -> bool:
        from devmapper.cli.taskops import create_and_load

        return create_and_load(self)

    def _mknodes_all(self) -> bool:
        from devmapper.cli.taskops import mknodes_all

        return mknodes_all(self)


_NAMES = {"versions": "versions"}
_TASK_NUMBERS = {name: i for i, name in enumerate(
    ("create", "reload", "remove", "remove_all", "suspend", "resume", "info", "deps",
     "rename", "version", "status", "table", "waitevent", "names", "clear", "mknodes",
     "versions", "message", "setgeometry"))}
