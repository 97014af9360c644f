"""The differential corpus: scenarios run through the engine on the host and the kernel in QEMU.

A scenario names its backing devices (fresh files attached as loop devices on each side), then
lists operations: library commands, I/O of known data, and waits. Both sides produce the same
JSON-able result per operation, normalised so that only real behaviour differs (see
scenario_runner.py); afterwards the backing files' sha256 prove the on-disk layout.

Table text refers to devices by placeholder, substituted when the operation runs:
  {A}        major:minor of backing device A     {A.path}   its node, e.g. /dev/loop3
  {dm:NAME}  major:minor of mapped device NAME (for stacking)

A new target joins by adding a module here with a ``SCENARIOS`` list; every module in this
package is collected. Runs in the guest's /bin/python3 too: standard library only.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

Op = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    #: backing device -> size in sectors, or (size, fill seed) for a file pre-filled with data
    devices: dict[str, int | tuple[int, int]]
    ops: list[Op]
    #: target types beyond linear/striped/zero/error (the test says so if the engine lacks one)
    needs: tuple[str, ...] = ()
    #: a known engine/kernel difference: the exact diff, for xfail(strict=True)
    xfail: str | None = None


def _op(kind: str, **args: Any) -> Op:
    return {"op": kind, **{k: v for k, v in args.items() if v is not None}}


# ---- commands (each result: the normalised reply, or {"errno": NAME})
def create(name: str, table: str | None = None, *, uuid: str | None = None,
           minor: int | None = None, readonly: bool | None = None, reply: bool = True) -> Op:
    """reply=False records only success or the errno: for a target that raises events on
    its own schedule (mirror resync), the event number in the reply is a race."""
    return _op("create", name=name, table=table, uuid=uuid, minor=minor, readonly=readonly,
               reply=None if reply else False)


def load(name: str, table: str, *, readonly: bool | None = None) -> Op:
    return _op("load", name=name, table=table, readonly=readonly)


def clear(name: str) -> Op:
    return _op("clear", name=name)


def suspend(name: str, *, noflush: bool | None = None, lockfs: bool | None = None) -> Op:
    return _op("suspend", name=name, noflush=noflush, lockfs=lockfs)


def resume(name: str, *, noflush: bool | None = None) -> Op:
    return _op("resume", name=name, noflush=noflush)


def info(name: str, *, inactive: bool | None = None) -> Op:
    return _op("info", name=name, inactive=inactive)


def table(name: str, *, inactive: bool | None = None) -> Op:
    return _op("table", name=name, inactive=inactive)


def status(name: str, *, inactive: bool | None = None) -> Op:
    return _op("status", name=name, inactive=inactive)


def deps(name: str, *, inactive: bool | None = None) -> Op:
    return _op("deps", name=name, inactive=inactive)


def state(name: str) -> Op:
    """info, table, status and deps of both table slots at once: the usual checkpoint."""
    return _op("state", name=name)


def ls(*, name_prefix: str | None = None, uuid_prefix: str | None = None) -> Op:
    """LIST_DEVICES (with uuids); 6.1 filters by name and uuid prefix when given."""
    return _op("ls", name_prefix=name_prefix, uuid_prefix=uuid_prefix)


def rename(name: str, new: str, *, reply: bool = True) -> Op:
    """reply=False records only success: the header the kernel sends back after a rename is
    compared in a scenario of its own, so that one difference does not mask others."""
    return _op("rename", name=name, new=new, reply=None if reply else False)


def rename_by_uuid(uuid: str, new: str) -> Op:
    return _op("rename", uuid=uuid, new=new)


def set_uuid(name: str, uuid: str, *, reply: bool = True) -> Op:
    return _op("set_uuid", name=name, uuid=uuid, reply=None if reply else False)


def remove(name: str, *, deferred: bool | None = None) -> Op:
    return _op("remove", name=name, deferred=deferred)


def remove_all() -> Op:
    return _op("remove_all")


def message(name: str, sector: int, text: str) -> Op:
    return _op("message", name=name, sector=sector, text=text)


# ---- I/O through the mapped device; offsets and lengths in sectors
def write(name: str, offset: int, length: int, seed: int) -> Op:
    """Write `length` sectors of the pattern for `seed` at `offset`."""
    return _op("write", name=name, offset=offset, length=length, seed=seed)


def read(name: str, offset: int, length: int) -> Op:
    """Read back: the result is the sha256 of the data (or the errno)."""
    return _op("read", name=name, offset=offset, length=length)


def discard(name: str, offset: int, length: int) -> Op:
    """BLKDISCARD `length` sectors at `offset` (the engine: MappedDevice.discard)."""
    return _op("discard", name=name, offset=offset, length=length)


def open_dev(name: str) -> Op:
    """Hold the device open (it counts in open_count) until close_dev."""
    return _op("open", name=name)


def close_dev(name: str) -> Op:
    return _op("close", name=name)


def wait_gone(name: str) -> Op:
    """Wait (up to 10 s) for a device to disappear: deferred removal is asynchronous."""
    return _op("wait_gone", name=name)


def wait_status(name: str, contains: str, timeout: float = 60.0) -> Op:
    """Poll the status until its text contains `contains` (placeholders allowed)."""
    return _op("wait_status", name=name, contains=contains, timeout=timeout)


def wait_event(name: str, event_nr: int, timeout: float = 10.0) -> Op:
    """Poll until the device's event number reaches `event_nr` (target events are raised
    asynchronously, e.g. by kmirrord); the result is the device's info at the end."""
    return _op("wait_event", name=name, event_nr=event_nr, timeout=timeout)


def pause(seconds: float) -> Op:
    """Let background work run (a target's first pass after resume); use sparingly."""
    return _op("pause", seconds=seconds)


def load_all() -> list[Scenario]:
    """Every scenario of every module in this package, in module then list order."""
    out: list[Scenario] = []
    for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        out += importlib.import_module(f"{__name__}.{mod}").SCENARIOS
    names = [s.name for s in out]
    dups = {n for n in names if names.count(n) > 1}
    if dups:
        raise ValueError(f"duplicate scenario names: {sorted(dups)}")
    return out
