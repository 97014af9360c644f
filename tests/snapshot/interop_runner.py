"""Run one snapshot scenario ("plan") on either side and record what it saw.

The same plan runs in the QEMU guest against the real kernel (through our library's kernel
transport, with O_DIRECT I/O on /dev/mapper nodes over loop devices) and on the host in an
in-process engine (over the same image files). Both sides record status lines, table lines
with device names replaced by their roles, constructor errors as the kernel logs them, and
digests of what devices read back; the tests compare the two records and the image files.

In the guest: `PYTHONPATH=<src> python3 interop_runner.py PLAN.json OUT.json`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import mmap
import os
import random
import re
import shutil
import stat
import struct
import subprocess
import sys
import time
from typing import Any

from devmapper.library import DeviceMapper, DMError

Step = dict[str, Any]
BLKDISCARD = 0x1277


class Backend:
    """Where the plan runs: names image files and mapped devices, does block I/O."""

    def __init__(self, dm: DeviceMapper, workdir: str, files: dict[str, str]) -> None:
        self.dm = dm
        self.workdir = workdir
        self.files = files  # role -> image file name in workdir
        self.devs: dict[str, str] = {}  # role -> what tables name

    def setup(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        pass

    def sectors(self, role: str) -> int:
        return os.path.getsize(os.path.join(self.workdir, self.files[role])) >> 9

    def write(self, name: str, off: int, data: bytes) -> None:
        raise NotImplementedError

    def read_all(self, name: str) -> bytes:
        raise NotImplementedError

    def flush(self, name: str) -> None:
        raise NotImplementedError

    def discard(self, name: str, off: int, length: int) -> None:
        raise NotImplementedError

    def last_error(self) -> str | None:
        return None


class KernelBackend(Backend):
    """The guest: loop devices over the images, O_DIRECT on /dev/mapper nodes.

    With ``tmpfs`` the images are copied to the guest's /dev/shm first (and back after):
    loop devices over the shared 9p folder cannot discard, tmpfs can, as the host can.
    """

    tmpfs = False

    def _image(self, fname: str) -> str:
        if self.tmpfs:
            return os.path.join("/dev/shm/snapint", fname)
        return os.path.join(self.workdir, fname)

    def setup(self) -> None:
        if self.tmpfs:
            os.makedirs("/dev/shm/snapint", exist_ok=True)
            for fname in self.files.values():
                shutil.copyfile(os.path.join(self.workdir, fname), self._image(fname))
        for role, fname in self.files.items():
            out = subprocess.run(["losetup", "-f", "--show", self._image(fname)],
                                 check=True, capture_output=True, text=True).stdout.strip()
            self.devs[role] = out
        subprocess.run(["dmesg", "-C"], check=False)

    def teardown(self) -> None:
        subprocess.run(["dmsetup", "remove_all", "--force"], capture_output=True)
        for dev in self.devs.values():
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        if self.tmpfs:
            for fname in self.files.values():
                shutil.copyfile(self._image(fname), os.path.join(self.workdir, fname))
            shutil.rmtree("/dev/shm/snapint", ignore_errors=True)

    def _open(self, name: str, flags: int) -> int:
        # No udev in the guest: make our own node for the device's current dev_t.
        info = self.dm.info(name)
        node = f"/dev/snapint-{name}"
        try:
            os.unlink(node)
        except FileNotFoundError:
            pass
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(info.major, info.minor))
        return os.open(node, flags | os.O_DIRECT | os.O_CLOEXEC)

    def write(self, name: str, off: int, data: bytes) -> None:
        fd = self._open(name, os.O_WRONLY)
        try:
            buf = mmap.mmap(-1, len(data))  # page-aligned, as O_DIRECT wants
            buf.write(data)
            if os.pwritev(fd, [buf], off) != len(data):
                raise OSError(errno.EIO, "short write")
        finally:
            os.close(fd)

    def read_all(self, name: str) -> bytes:
        fd = self._open(name, os.O_RDONLY)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            buf = mmap.mmap(-1, size)
            if os.preadv(fd, [buf], 0) != size:
                raise OSError(errno.EIO, "short read")
            return bytes(buf)
        finally:
            os.close(fd)

    def flush(self, name: str) -> None:
        fd = self._open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def discard(self, name: str, off: int, length: int) -> None:
        fd = self._open(name, os.O_WRONLY)
        try:
            fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", off, length))
        finally:
            os.close(fd)

    def last_error(self) -> str | None:
        out = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
        subprocess.run(["dmesg", "-C"], check=False)
        lines = [ln for ln in out.splitlines() if "device-mapper: table:" in ln]
        if not lines:
            return None
        # "device-mapper: table: 254:3: snapshot: Couldn't ... (-EINVAL)" -> from "snapshot:"
        return re.sub(r"^.*device-mapper: table: \d+:\d+: ", "", lines[-1])


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class EngineBackend(Backend):
    """The host: an in-process engine over the image files themselves."""

    def setup(self) -> None:
        for role, fname in self.files.items():
            self.devs[role] = os.path.join(self.workdir, fname)
        self._cap = _Capture()
        logging.getLogger("devmapper.kernel").addHandler(self._cap)

    def teardown(self) -> None:
        logging.getLogger("devmapper.kernel").removeHandler(self._cap)
        for _ in range(3):  # holders first, then what they held
            for dev in self.dm.list():
                try:
                    self.dm.remove(dev.name)
                except DMError:
                    pass

    def write(self, name: str, off: int, data: bytes) -> None:
        with self.dm.open(name) as blk:
            blk.write(off, memoryview(data))

    def read_all(self, name: str) -> bytes:
        with self.dm.open(name) as blk:
            return blk.read(0, blk.size)

    def flush(self, name: str) -> None:
        with self.dm.open(name) as blk:
            blk.flush()

    def discard(self, name: str, off: int, length: int) -> None:
        with self.dm.open(name) as blk:
            blk.discard(off, length)

    def last_error(self) -> str | None:
        lines = [ln for ln in self._cap.lines if re.match(r"^\d+:\d+: ", ln)]
        self._cap.lines.clear()
        if not lines:
            return None
        return re.sub(r"^\d+:\d+: ", "", lines[-1])


def _err(e: OSError) -> str:
    """An errno's name, the same whichever alias (ENOTSUP/EOPNOTSUPP) a build prefers."""
    code = e.errno or 0
    if code == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(code, str(code))


def _expand(text: str, be: Backend) -> str:
    def sub(m: re.Match[str]) -> str:
        kind, _, arg = m.group(1).partition(":")
        if kind == "dev":
            info = be.dm.info(arg)
            return f"{info.major}:{info.minor}"
        if kind == "sectors":
            return str(be.sectors(arg))
        return be.devs[kind]
    return re.sub(r"\{([^}]+)\}", sub, text)


def _roles(text: str, be: Backend) -> str:
    """Table lines with device names replaced by their roles, comparable across sides."""
    names = {v: "{" + k + "}" for k, v in be.devs.items()}
    for dev in be.dm.list():
        names[f"{dev.major}:{dev.minor}"] = "{dev:" + dev.name + "}"
    # Block devices print as major:minor in tables.
    for role, path in be.devs.items():
        if path.startswith("/dev/"):
            st = os.stat(path)
            names[f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"] = "{" + role + "}"
    return " ".join(names.get(w, w) for w in text.split())


def run_plan(be: Backend, plan: list[Step]) -> list[Any]:
    out: list[Any] = []
    for step in plan:
        op = step["op"]
        name = step.get("name", "")
        rec: Any = None
        if op == "create":
            be.dm.create(name, _expand(step["table"], be) if "table" in step else None)
        elif op == "reload":
            be.dm.load(name, _expand(step["table"], be))
        elif op == "suspend":
            be.dm.suspend(name)
        elif op == "resume":
            try:
                be.dm.resume(name)
            except DMError as e:
                rec = ["resume-error", _err(e)]
        elif op == "remove":
            be.dm.remove(name)
        elif op == "bad":
            try:
                be.dm.create(name, _expand(step["table"], be))
                rec = ["created"]
                be.dm.remove(name)
            except DMError as e:
                rec = [_err(e), be.last_error()]
                try:
                    be.dm.remove(name)
                except DMError:
                    pass
        elif op == "write":
            data = random.Random(step["seed"]).randbytes(step["len"])
            try:
                be.write(name, step["off"], data)
                rec = "ok"
            except OSError as e:
                rec = _err(e)
        elif op == "read":
            try:
                rec = hashlib.sha256(be.read_all(name)).hexdigest()
            except OSError as e:
                rec = _err(e)
        elif op == "dump":
            with open(os.path.join(be.workdir, step["file"]), "wb") as f:
                f.write(be.read_all(name))
        elif op == "flush":
            be.flush(name)
        elif op == "discard":
            try:
                be.discard(name, step["off"], step["len"])
                rec = "ok"
            except OSError as e:
                rec = _err(e)
        elif op == "status":
            rec = [s.params for s in be.dm.status(name)]
        elif op == "table":
            rec = [_roles(s.params, be) for s in be.dm.table(name)]
        elif op == "wait_merge":
            rec = _wait_merge(be, name, step.get("timeout", 120))
        elif op == "sleep":
            time.sleep(step["seconds"])
        else:
            raise ValueError(f"unknown step {op}")
        out.append(rec)
    return out


def _wait_merge(be: Backend, name: str, timeout: float) -> str:
    """Poll a snapshot-merge status until <allocated> == <metadata> (what LVM waits for)."""
    deadline = time.monotonic() + timeout
    while True:
        status = be.dm.status(name)[0].params
        m = re.match(r"^(\d+)/(\d+) (\d+)$", status)
        if not m or m.group(1) == m.group(3):
            return status
        if time.monotonic() > deadline:
            return "timeout: " + status
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        spec = json.load(f)
    from devmapper.control.kernel import KernelTransport

    be = KernelBackend(DeviceMapper(KernelTransport()), spec["workdir"], spec["files"])
    be.tmpfs = bool(spec.get("tmpfs"))
    be.setup()
    try:
        results = run_plan(be, spec["plan"])
    finally:
        be.teardown()
    with open(argv[1], "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
