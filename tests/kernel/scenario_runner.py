#!/bin/python3
"""Run differential scenarios (scenarios/) through one DeviceMapper; describe results as data.

The same code runs on both sides: on the host over an in-process engine, in the QEMU guest over
the real /dev/mapper/control. Backing devices are loop devices over fresh files on both sides,
attached with the loop ioctls (no losetup: a subprocess costs seconds under TCG).

Normalisation, and only this, hides what legitimately differs between the two sides:
- loop devices' major:minor and node paths become placeholders ({A}, {A.path}); mapped
  devices keep their real numbers (the engine uses the guest's dm major, 254, and minors are
  allocated lowest-free on both sides, so they must agree);
- UEVENT_GENERATED is dropped from flags: the kernel sets it when a kobject uevent went out;
  the engine has no kobject and must not set it, or libdevmapper would wait on a udev cookie
  that nobody completes.

Guest entry point: `scenario_runner.py WORKDIR [NAME ...]` prints {name: result} as JSON.
DEVMAPPER_KEEP_BACKING=DIR keeps a copy of every backing file there, to study a diff.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import re
import shutil
import stat
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(HERE.parents[1] / "src") not in sys.path:
    sys.path.insert(0, str(HERE.parents[1] / "src"))

from scenarios import Scenario, load_all  # noqa: E402

from devmapper.blockio import BLKDISCARD  # noqa: E402
from devmapper.library import DeviceInfo, DeviceMapper, DMError  # noqa: E402
from devmapper.uapi import Flag, TargetSpec, flag_names  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

SECTOR = 512
LOOP_CLR_FD = 0x4C01
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
#: Flags that differ by design (see the module docstring).
IGNORED_FLAGS = Flag.UEVENT_GENERATED


def pattern(seed: int, nbytes: int) -> bytes:
    """The known data a scenario writes: deterministic, different for every seed."""
    return hashlib.shake_256(f"devmapper-scenario-{seed}".encode()).digest(nbytes)


def errname(e: OSError) -> dict[str, str]:
    return {"errno": errno.errorcode.get(e.errno or 0, str(e.errno))}


# ---------------------------------------------------------------- loop devices


class Backing:
    """A file attached to a loop device (ours: detached by index, never by name)."""

    def __init__(self, label: str, path: Path, sectors: int, fill: int | None,
                 node_dir: Path) -> None:
        self.label = label
        self.path = path
        with open(path, "wb") as f:
            if fill is None:
                f.truncate(sectors * SECTOR)
            else:
                f.write(pattern(fill, sectors * SECTOR))
        backing = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.index, self.node = _attach(backing, node_dir)
        finally:
            os.close(backing)
        st = os.stat(self.node)
        self.devt = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"

    def detach(self) -> None:
        fd = os.open(self.node, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.fsync(fd)  # the engine writes through this node's page cache
            fcntl.ioctl(fd, LOOP_CLR_FD, 0)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
        finally:
            os.close(fd)

    def sha256(self) -> str:
        with open(self.path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()


def _attach(backing: int, node_dir: Path) -> tuple[int, str]:
    """Bind a free loop device to the open file: (index, node)."""
    with open("/dev/loop-control", "rb", buffering=0) as ctl:
        for _ in range(100):  # another process may take the free device first: EBUSY
            index = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            node = _loop_node(index, node_dir)
            fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)
            try:
                # struct loop_config: fd, block_size 512, loop_info64 (zero: rw, buffered).
                config = bytearray(8 + 232 + 64)
                config[0:8] = backing.to_bytes(4, sys.byteorder) + (512).to_bytes(
                    4, sys.byteorder)
                fcntl.ioctl(fd, LOOP_CONFIGURE, bytes(config))
                return index, node
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
            finally:
                os.close(fd)
    raise OSError(errno.EBUSY, "no free loop device")


def _loop_node(index: int, node_dir: Path) -> str:
    """/dev/loopN, or a node of our own where /dev has none (no devtmpfs, a container)."""
    node = f"/dev/loop{index}"
    if os.path.exists(node):
        return node
    with open(f"/sys/block/loop{index}/dev") as f:
        major, minor = (int(x) for x in f.read().split(":"))
    node = str(node_dir / f"loop{index}")
    if not os.path.exists(node):
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(major, minor))
    return node


# ---------------------------------------------------------------- I/O on mapped devices


class Handle(Protocol):
    def read(self, offset: int, length: int) -> bytes: ...
    def write(self, offset: int, data: bytes) -> None: ...
    def discard(self, offset: int, length: int) -> None: ...
    def close(self) -> None: ...


class KernelHandle:
    """A kernel block device opened O_DIRECT: every request reaches dm, no page cache."""

    def __init__(self, node: str) -> None:
        self.fd = os.open(node, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)

    def read(self, offset: int, length: int) -> bytes:
        buf = mmap.mmap(-1, length)  # page-aligned, as O_DIRECT needs
        try:
            n = os.preadv(self.fd, [buf], offset)
            return bytes(buf[:n])
        finally:
            buf.close()

    def write(self, offset: int, data: bytes) -> None:
        buf = mmap.mmap(-1, len(data))
        try:
            buf[:] = data
            n = os.pwritev(self.fd, [buf], offset)
            if n != len(data):
                raise OSError(errno.EIO, "short write")
        finally:
            buf.close()

    def discard(self, offset: int, length: int) -> None:
        fcntl.ioctl(self.fd, BLKDISCARD, struct.pack("QQ", offset, length))

    def close(self) -> None:
        os.close(self.fd)


class KernelOpener:
    def __init__(self, node_dir: Path) -> None:
        self.node_dir = node_dir

    def __call__(self, dm: DeviceMapper, name: str) -> Handle:
        info = dm.info(name)
        # Our own node: the test does not depend on udev or on /dev/mapper being populated.
        node = self.node_dir / f"dm-{info.major}-{info.minor}"
        if not node.exists():
            os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(info.major, info.minor))
        return KernelHandle(str(node))


class EngineHandle:
    def __init__(self, dm: DeviceMapper, name: str) -> None:
        self.block = dm.open(name)

    def read(self, offset: int, length: int) -> bytes:
        return self.block.read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self.block.write(offset, memoryview(data))

    def discard(self, offset: int, length: int) -> None:
        self.block.discard(offset, length)

    def close(self) -> None:
        self.block.close()


def engine_opener(dm: DeviceMapper, name: str) -> Handle:
    return EngineHandle(dm, name)


# ---------------------------------------------------------------- the runner


class Runner:
    """Runs one scenario; `opener` opens a mapped device for I/O on this side."""

    def __init__(self, dm: DeviceMapper, opener: Any, workdir: Path) -> None:
        self.dm = dm
        self.opener = opener
        self.workdir = workdir
        self.backing: dict[str, Backing] = {}
        self.handles: dict[str, Handle] = {}

    # ---- placeholders
    def subst(self, text: str) -> str:
        def one(m: re.Match[str]) -> str:
            key = m.group(1)
            if key.startswith("dm:"):
                i = self.dm.info(key[3:])
                return f"{i.major}:{i.minor}"
            label, _, attr = key.partition(".")
            b = self.backing[label]
            return b.node if attr == "path" else b.devt

        return re.sub(r"\{([A-Za-z0-9_:.-]+)\}", one, text)

    def norm(self, text: str) -> str:
        for b in self.backing.values():
            text = re.sub(rf"(?<![\d:]){re.escape(b.devt)}(?![\d:])", "{" + b.label + "}", text)
            text = text.replace(b.node, "{" + b.label + ".path}")
        return text

    def devt(self, major: int, minor: int) -> str:
        return self.norm(f"{major}:{minor}")

    def info_dict(self, i: DeviceInfo) -> dict[str, Any]:
        return {"name": i.name, "uuid": i.uuid, "dev": self.devt(i.major, i.minor),
                "open_count": i.open_count, "event_nr": i.event_nr,
                "target_count": i.target_count,
                "flags": flag_names(i.flags & ~IGNORED_FLAGS)}

    def lines(self, specs: list[TargetSpec]) -> list[str]:
        return [self.norm(f"{s.start} {s.length} {s.target_type} {s.params}".rstrip())
                for s in specs]

    # ---- one operation
    def do(self, op: dict[str, Any]) -> Any:
        try:
            got = self._do(op)
        except OSError as e:
            return errname(e)
        return got if op.get("reply", True) else "ok"

    def _do(self, op: dict[str, Any]) -> Any:  # noqa: C901 - one branch per op kind
        dm, kind, name = self.dm, op["op"], op.get("name", "")
        inactive = bool(op.get("inactive"))
        if kind == "create":
            tbl = self.subst(op["table"]) if "table" in op else None
            return self.info_dict(dm.create(name, tbl, uuid=op.get("uuid"),
                                            minor=op.get("minor"),
                                            read_only=bool(op.get("readonly"))))
        if kind == "load":
            return self.info_dict(dm.load(name, self.subst(op["table"]),
                                          read_only=bool(op.get("readonly"))))
        if kind == "clear":
            return self.info_dict(dm.clear(name))
        if kind == "suspend":
            return self.info_dict(dm.suspend(name, noflush=bool(op.get("noflush")),
                                             lockfs=op.get("lockfs", True)))
        if kind == "resume":
            return self.info_dict(dm.resume(name, noflush=bool(op.get("noflush"))))
        if kind == "info":
            return self.info_dict(dm.info(name, inactive=inactive))
        if kind == "table":
            return self.lines(dm.table(name, inactive=inactive))
        if kind == "status":
            return self.lines(dm.status(name, inactive=inactive))
        if kind == "deps":
            return [self.devt(*d) for d in dm.deps(name, inactive=inactive)]
        if kind == "state":
            out = {}
            for key, sub in (("info", "info"), ("table", "table"), ("status", "status"),
                             ("deps", "deps")):
                out[key] = self.do({"op": sub, "name": name})
                out[f"inactive_{key}"] = self.do({"op": sub, "name": name, "inactive": True})
            return out
        if kind == "ls":
            listed: Any = dm.list(name_prefix=op.get("name_prefix", ""),
                                  uuid_prefix=op.get("uuid_prefix", ""))
            return [[d.name, self.devt(d.major, d.minor), d.event_nr, d.uuid] for d in listed]
        if kind in ("rename", "set_uuid"):
            if kind == "rename":
                return self.info_dict(dm.rename(name, op["new"], uuid=op.get("uuid")))
            return self.info_dict(dm.rename(name, new_uuid=op["uuid"]))
        if kind == "remove":
            dm.remove(name, deferred=bool(op.get("deferred")))
            return "ok"
        if kind == "remove_all":
            dm.remove_all()
            return "ok"
        if kind == "message":
            return dm.message(name, op["sector"], self.subst(op["text"]))
        if kind in ("read", "write", "discard"):
            return self.io(op)
        if kind == "open":
            self.handles[name] = self.opener(dm, name)
            return "ok"
        if kind == "close":
            self.handles.pop(name).close()
            return "ok"
        if kind == "wait_gone":
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    dm.info(name)
                except DMError as e:
                    if e.errno == errno.ENXIO:
                        return "gone"
                    raise
                time.sleep(0.02)
            return "still there"
        if kind == "pause":
            time.sleep(op["seconds"])
            return "ok"
        if kind == "wait_event":
            deadline = time.monotonic() + op["timeout"]
            while True:
                got = dm.info(name)
                if got.event_nr >= op["event_nr"] or time.monotonic() > deadline:
                    return self.info_dict(got)
                time.sleep(0.05)
        if kind == "wait_status":
            want = self.subst(op["contains"])
            deadline = time.monotonic() + op["timeout"]
            while True:
                lines = [f"{s.start} {s.length} {s.target_type} {s.params}"
                         for s in dm.status(name)]
                if any(want in line for line in lines) or time.monotonic() > deadline:
                    return {"matched": any(want in line for line in lines),
                            "status": [self.norm(line) for line in lines]}
                time.sleep(0.05)
        raise ValueError(f"unknown op {kind!r}")

    def io(self, op: dict[str, Any]) -> Any:
        name = op["name"]
        offset, length = op["offset"] * SECTOR, op["length"] * SECTOR
        held = self.handles.get(name)
        h = held or self.opener(self.dm, name)
        try:
            if op["op"] == "write":
                h.write(offset, pattern(op["seed"], length))
                return "ok"
            if op["op"] == "discard":
                h.discard(offset, length)
                return "ok"
            data = h.read(offset, length)
            return {"sha256": hashlib.sha256(data).hexdigest()[:16], "bytes": len(data),
                    "zero": not any(data)}
        finally:
            if held is None:
                h.close()

    # ---- the whole scenario
    def run(self, scen: Scenario) -> dict[str, Any]:
        result: dict[str, Any] = {"ops": [], "hashes": {}, "leftover": [], "error": None}
        try:
            self.settle()
            for label, spec in scen.devices.items():
                sectors, fill = spec if isinstance(spec, tuple) else (spec, None)
                self.backing[label] = Backing(label, self.workdir / f"{scen.name}-{label}.img",
                                              sectors, fill, self.workdir)
            for op in scen.ops:
                result["ops"].append([describe(op), self.do(op)])
        except Exception:  # noqa: BLE001 - a runner bug must show in the result, not hang
            result["error"] = traceback.format_exc()
        finally:
            result["leftover"] = self.teardown()
            keep = os.environ.get("DEVMAPPER_KEEP_BACKING")  # a directory, to study a diff
            for label, b in self.backing.items():
                result["hashes"][label] = b.sha256()
                if keep:
                    shutil.copyfile(b.path, Path(keep) / b.path.name)
                b.path.unlink()
        return result

    def teardown(self) -> list[str]:
        """Close, remove everything, detach the loops. Returns devices that would not go."""
        for h in self.handles.values():
            with contextlib.suppress(OSError):
                h.close()
        self.handles.clear()
        left = self.settle()
        for b in self.backing.values():
            b.detach()
        return left

    def settle(self) -> list[str]:
        """Remove every device, and wait until minor 0 is free again.

        The kernel frees a minor only at the end of dm_destroy, after the name is gone (a
        deferred removal runs from a workqueue), and the next scenario's minors must start
        from 0 again, as on a fresh engine.
        """
        deadline = time.monotonic() + 10
        left: list[str] = []
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.dm.remove_all()
            left = [d.name for d in self.dm.list(with_uuid=False)]
            if not left:
                probe = self.dm.create("devmapper-minor-probe")
                self.dm.remove("devmapper-minor-probe")
                if probe.minor == 0:
                    break
            for n in left:
                self.unhold(n)
            time.sleep(0.02)
        return left

    def unhold(self, name: str) -> None:
        """Drop whatever keeps a device from going: its inactive table, a suspend, and a live
        table that holds a device open (the kernel lets a table map its own device)."""
        for step in (lambda: self.dm.clear(name), lambda: self.dm.resume(name),
                     lambda: self.dm.load(name, "0 8 zero"), lambda: self.dm.resume(name)):
            with contextlib.suppress(OSError):
                step()


def describe(op: dict[str, Any]) -> str:
    args = " ".join(f"{k}={v!r}" for k, v in op.items() if k != "op")
    return f"{op['op']} {args}".strip()


@contextlib.contextmanager
def udev_paused() -> Iterator[None]:
    """No udev worker (blkid) may open our devices mid-run: open counts must be ours alone.

    udevd is stopped and started again afterwards, rather than its queue paused: a paused
    queue keeps every event of the run and replays them all at the end, which takes longer
    under TCG than the run itself and would hold up the tests that follow.
    """
    argv = _udevd_argv()
    if argv is not None:
        _quiet(["udevadm", "settle", "--timeout=60"])
        _quiet(["udevadm", "control", "--exit"])
    try:
        yield
    finally:
        if argv is not None and _udevd_argv() is None:
            _quiet(argv)  # with --daemon it returns once udevd is up


def _quiet(argv: list[str]) -> None:
    """Run a command with no stdio of ours: our stdout is the JSON result, and a daemon
    holding the pipe open would keep the guest agent waiting for its end."""
    import subprocess

    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False)


def _udevd_argv() -> list[str] | None:
    """The command line of the running udevd, or None."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == "systemd-udevd":
            return argv
    return None


def main(argv: list[str]) -> int:
    from devmapper.control.kernel import KernelTransport

    workdir = Path(argv[0])
    wanted = set(argv[1:])
    scenarios = [s for s in load_all() if not wanted or s.name in wanted]
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    with udev_paused(), DeviceMapper(KernelTransport()) as dm:
        opener = KernelOpener(workdir)
        for scen in scenarios:
            t = time.monotonic()
            out[scen.name] = Runner(dm, opener, workdir).run(scen)
            out[scen.name]["seconds"] = round(time.monotonic() - t, 3)
    out["_seconds"] = round(time.monotonic() - t0, 3)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
