"""Live move: pvmove's job over the library, for the kernel and the engine alike.

Every linear or striped segment of a live device that maps onto the source device is moved,
one at a time. A linear segment is reloaded as a `mirror` (core log) of its old area (leg 0,
the default leg: reads and not-yet-copied writes go there) and its new area (leg 1); once the
mirror reports every region in sync, the segment is reloaded as linear on the new area.

A striped segment cannot become a mirror as a whole (only some stripes move), so it goes the
way pvmove takes it, through a temporary device NAME-pvmove: that device is created as linear
over the stripe areas that move (one after another), the segment is reloaded to use it for
those stripes (same data, so the swap changes nothing), the temporary device is reloaded as
one mirror per area (old, new), and once in sync the segment is reloaded on the new areas and
the temporary device removed. Writes never stop being acknowledged in between: every reload
is an ordinary suspend/resume swap of one device.

The move's plan (the original and final tables) is kept in a state file, one per device
name, under /run/devmapper/moves/ ($DEVMAPPER_MOVE_DIR overrides), so an interrupted move
can be continued or aborted by another process. Without a state file the plan is derived
from the table: a 2-leg core-log mirror segment means "moving from leg 0 to leg 1".
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from devmapper.library import DMError
from devmapper.uapi import TargetSpec

if TYPE_CHECKING:
    from devmapper.library import DeviceMapper

STATE_ENV = "DEVMAPPER_MOVE_DIR"
STATE_DIR = "/run/devmapper/moves"
#: Mirror region size for the temporary mirrors (sectors): big regions copy fast; writes to
#: the one region being copied wait for at most this much I/O.
DEFAULT_REGION_SIZE = 4096
BLKGETSIZE64 = 0x80081272
#: The temporary device a striped segment moves through is NAME + this (pvmove0's part)...
TEMP_SUFFIX = "-pvmove"
#: ... and carries this uuid prefix, so a device of that name that is not ours is never touched.
TEMP_UUID_PREFIX = "DEVMAPPER-MOVE-"

#: progress(done_sectors, total_sectors, segment_index, segment_count)
Progress = Callable[[int, int, int, int], None]


class MoveError(Exception):
    pass


@dataclass(frozen=True)
class Seg:
    """One table line, comparable: what the driver prints back for it."""

    start: int
    length: int
    kind: str
    params: str

    @classmethod
    def of(cls, spec: TargetSpec) -> Seg:
        return cls(spec.start, spec.length, spec.target_type, " ".join(spec.params.split()))

    def spec(self) -> TargetSpec:
        return TargetSpec(self.start, self.length, self.kind, self.params)

    def linear(self) -> tuple[str, int] | None:
        if self.kind != "linear":
            return None
        dev, off = self.params.split()
        return dev, int(off)

    def striped(self) -> tuple[int, int, list[tuple[str, int]]] | None:
        """(stripes, chunk size, [(device, offset)]) of a striped segment, else None."""
        if self.kind != "striped":
            return None
        w = self.params.split()
        n = int(w[0])
        return n, int(w[1]), [(w[2 + 2 * i], int(w[3 + 2 * i])) for i in range(n)]

    def with_stripes(self, stripes: list[tuple[str, int]]) -> Seg:
        st = self.striped()
        assert st is not None and len(stripes) == st[0]
        return Seg(self.start, self.length, "striped",
                   f"{st[0]} {st[1]} " + " ".join(f"{d} {o}" for d, o in stripes))

    def areas(self) -> list[tuple[str, int, int]]:
        """(device, offset, length) of each area a linear or striped segment maps onto."""
        lin = self.linear()
        if lin is not None:
            return [(lin[0], lin[1], self.length)]
        st = self.striped()
        if st is not None:
            width = self.length // st[0]
            return [(d, o, width) for d, o in st[2]]
        return []

    def mirror_legs(self) -> list[tuple[str, int]] | None:
        """The legs of a core-log mirror, else None."""
        if self.kind != "mirror":
            return None
        w = self.params.split()
        if w[0] != "core":
            return None
        at = 2 + int(w[1])
        n = int(w[at])
        return [(w[at + 1 + 2 * i], int(w[at + 2 + 2 * i])) for i in range(n)]


@dataclass
class MovePlan:
    name: str
    source: str
    dest: str
    original: list[Seg]
    final: list[Seg]
    region_size: int = DEFAULT_REGION_SIZE

    def to_json(self) -> str:
        def segs(s: list[Seg]) -> list[list[object]]:
            return [[x.start, x.length, x.kind, x.params] for x in s]

        return json.dumps({"name": self.name, "from": self.source, "to": self.dest,
                           "region_size": self.region_size,
                           "original": segs(self.original), "final": segs(self.final)},
                          indent=1)

    @classmethod
    def from_json(cls, text: str) -> MovePlan:
        d = json.loads(text)

        def segs(rows: list[list[object]]) -> list[Seg]:
            return [Seg(int(str(r[0])), int(str(r[1])), str(r[2]), str(r[3])) for r in rows]

        return cls(d["name"], d["from"], d["to"], segs(d["original"]), segs(d["final"]),
                   int(d.get("region_size", DEFAULT_REGION_SIZE)))

    @property
    def total(self) -> int:
        return sum(o.length for o, f in zip(self.original, self.final, strict=True) if o != f)


# ---------------------------------------------------------------- naming devices


def canonical_device(arg: str) -> str:
    """How a table prints a device: major:minor for block devices, the real path for files
    (the engine's extension); "major:minor" text is kept as it is."""
    major, sep, minor = arg.partition(":")
    if sep and major.isdigit() and minor.isdigit():
        return arg
    try:
        st = os.stat(arg)
    except OSError as e:
        raise MoveError(f"{arg}: {e.strerror}")
    if stat.S_ISBLK(st.st_mode):
        return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if stat.S_ISREG(st.st_mode):
        return os.path.realpath(arg)
    raise MoveError(f"{arg}: not a block device or file")


def device_sectors(name: str) -> int | None:
    """Size of a canonical device name in sectors, when this host can see it."""
    path = name
    major, sep, minor = name.partition(":")
    if sep and major.isdigit() and minor.isdigit():
        path = _node_for(int(major), int(minor)) or ""
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISBLK(st.st_mode):
            return int(struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, bytes(8)))[0]) >> 9
        return st.st_size >> 9
    finally:
        os.close(fd)


def _node_for(major: int, minor: int) -> str | None:
    try:
        with open(f"/sys/dev/block/{major}:{minor}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return "/dev/" + line.strip().split("=", 1)[1]
    except OSError:
        return None
    return None


# ---------------------------------------------------------------- planning and state


def plan_move(name: str, table: list[TargetSpec], source: str, dest: str,
              dest_offset: int | None = None,
              region_size: int = DEFAULT_REGION_SIZE) -> MovePlan:
    """The final table: each linear segment and each stripe on ``source`` moved to ``dest``,
    at the same offset, or packed one after another from ``dest_offset``."""
    if source == dest:
        raise MoveError("source and destination are the same device")
    original = [Seg.of(s) for s in table]
    final = []
    at = dest_offset

    def place(off: int, length: int) -> int:
        nonlocal at
        if at is None:
            return off
        off, at = at, at + length
        return off

    moved = 0
    for seg in original:
        lin, st = seg.linear(), seg.striped()
        if lin is not None and lin[0] == source:
            final.append(Seg(seg.start, seg.length, "linear",
                             f"{dest} {place(lin[1], seg.length)}"))
            moved += 1
        elif st is not None and any(d == source for d, _ in st[2]):
            width = seg.length // st[0]
            final.append(seg.with_stripes([(dest, place(o, width)) if d == source else (d, o)
                                           for d, o in st[2]]))
            moved += 1
        else:
            if seg.kind not in ("linear", "striped", "zero", "error") and \
                    source in seg.params.split():
                raise MoveError(f"segment at {seg.start} ({seg.kind}) uses {source}: only "
                                "linear and striped segments can be moved")
            final.append(seg)
    if not moved:
        raise MoveError(f"no segment of {name} is on {source}")
    # Nothing may land on an area of dest that another segment (or stripe) already uses.
    areas = sorted((o, o + n) for s in final for d, o, n in s.areas() if d == dest)
    for (_, end), (start, _) in zip(areas, areas[1:], strict=False):
        if start < end:
            raise MoveError(f"segments would overlap on {dest}")
    size = device_sectors(dest)
    if size is not None and areas and max(e for _, e in areas) > size:
        raise MoveError(f"{dest} is too small: {max(e for _, e in areas)} sectors needed, "
                        f"{size} there")
    return MovePlan(name, source, dest, original, final, region_size)


def state_dir() -> str:
    return os.environ.get(STATE_ENV, STATE_DIR)


def state_path(name: str) -> str:
    return os.path.join(state_dir(), name.replace("/", "%2F") + ".json")


def save_state(plan: MovePlan) -> None:
    os.makedirs(state_dir(), exist_ok=True)
    path = state_path(plan.name)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(plan.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(dm: DeviceMapper, name: str) -> MovePlan:
    try:
        with open(state_path(name)) as f:
            return MovePlan.from_json(f.read())
    except FileNotFoundError:
        pass
    # No state file: a core-log mirror segment with two legs is a move from leg 0 to leg 1;
    # a stripe on the temporary device moves as the temporary device's segment says.
    current = [Seg.of(s) for s in dm.table(name)]
    temp = _temp_device(dm, temp_name(name))
    temp_segs = [Seg.of(s) for s in dm.table(temp_name(name))] if temp else []
    original, final = [], []
    pair: tuple[str, str] | None = None
    for seg in current:
        legs = seg.mirror_legs()
        st = seg.striped()
        if legs is not None and len(legs) == 2:
            (old, old_off), (new, new_off) = legs
            pair = pair or (old, new)
            original.append(Seg(seg.start, seg.length, "linear", f"{old} {old_off}"))
            final.append(Seg(seg.start, seg.length, "linear", f"{new} {new_off}"))
        elif temp and st is not None and any(d == temp for d, _ in st[2]):
            old_stripes, new_stripes = [], []
            for d, o in st[2]:
                if d != temp:
                    old_stripes.append((d, o))
                    new_stripes.append((d, o))
                    continue
                area = next((t for t in temp_segs if t.start == o), None)
                legs = area.mirror_legs() if area is not None else None
                lin = area.linear() if area is not None else None
                if legs is not None and len(legs) == 2:
                    pair = pair or (legs[0][0], legs[1][0])
                    old_stripes.append(legs[0])
                    new_stripes.append(legs[1])
                elif lin is not None:  # not copying yet: the area stays where it is
                    old_stripes.append(lin)
                    new_stripes.append(lin)
                else:
                    raise MoveError(f"{temp_name(name)} does not look like a move's device")
            original.append(seg.with_stripes(old_stripes))
            final.append(seg.with_stripes(new_stripes))
            pair = pair or ("?", "?")
        else:
            original.append(seg)
            final.append(seg)
    if pair is None:
        if not temp:
            raise MoveError(f"no move of {name} in progress")
        pair = ("?", "?")  # only a temporary device the table never used: run_plan drops it
    return MovePlan(name, pair[0], pair[1], original, final)


@contextlib.contextmanager
def move_lock(name: str) -> Iterator[None]:
    """One mover per device at a time: an flock the kernel drops if the mover dies."""
    os.makedirs(state_dir(), exist_ok=True)
    fd = os.open(state_path(name)[:-len(".json")] + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MoveError(f"another devmapper move is working on {name}")
        yield
    finally:
        os.close(fd)


def drop_state(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(state_path(name))


# ---------------------------------------------------------------- doing it


def _mirror_seg(old: Seg, new: Seg, region_size: int) -> Seg:
    lo, ln = old.linear(), new.linear()
    assert lo is not None and ln is not None
    rs = region_size
    while rs > old.length:  # a region may not be bigger than the target
        rs >>= 1
    if rs < 2:
        raise MoveError(f"segment at {old.start} is too short to mirror")
    return Seg(old.start, old.length, "mirror",
               f"core 1 {rs} 2 {lo[0]} {lo[1]} {ln[0]} {ln[1]}")


def _swap(dm: DeviceMapper, name: str, index: int, seg: Seg) -> None:
    """Reload the table with one segment replaced; the resume swaps it in live."""
    current = [Seg.of(s) for s in dm.table(name)]
    current[index] = seg
    read_only = dm.info(name).read_only
    dm.load(name, [s.spec() for s in current], read_only=read_only)
    dm.resume(name)


def _mirror_status(params: str) -> tuple[int, int, str]:
    """(regions in sync, regions, leg health) from a mirror status line."""
    words = params.split()
    if len(words) < 5:
        raise MoveError("not a mirror status: changed outside the move")
    n = int(words[0])
    done, total = (int(x) for x in words[1 + n].split("/"))
    return done, total, words[3 + n]


def _wait_mirror(dm: DeviceMapper, name: str, indices: list[int],
                 on_progress: Callable[[float], None], poll: float = 0.2) -> None:
    """Until the mirror segments ``indices`` of ``name`` report every region in sync.
    Device events (DEV_ARM_POLL on the control descriptor) wake us early; the status is
    re-read at least every ``poll``."""
    while True:
        with contextlib.suppress(OSError):
            dm.arm_poll()
        status = dm.status(name)
        done = total = 0
        for index in indices:
            if index >= len(status) or status[index].target_type != "mirror":
                raise MoveError(f"segment {index} of {name} is no longer a mirror: changed "
                                "outside the move")
            d, t, health = _mirror_status(status[index].params)
            if "D" in health or "F" in health or "S" in health:
                raise MoveError(f"a leg of {name} failed (status {health}): --abort or "
                                "--continue once it is fixed")
            done, total = done + d, total + t
        on_progress(done / total if total else 1.0)
        if done == total:
            return
        try:
            select.select([dm.fileno()], [], [], poll)
        except (OSError, ValueError):
            time.sleep(poll)


# ---------------------------------------------------------------- the temporary device


def temp_name(name: str) -> str:
    return name + TEMP_SUFFIX


def _temp_device(dm: DeviceMapper, temp: str, strict: bool = True) -> str | None:
    """major:minor of the move's temporary device, None if there is none; a device of that
    name that the move did not create is never touched: an error (None unless ``strict``)."""
    try:
        info = dm.info(temp)
    except DMError as e:
        if e.errno == errno.ENXIO:
            return None
        raise
    if not info.uuid.startswith(TEMP_UUID_PREFIX):
        if not strict:
            return None
        raise MoveError(f"{temp} exists and is not a devmapper move's device")
    return f"{info.major}:{info.minor}"


def _remove_temp(dm: DeviceMapper, name: str, strict: bool = True) -> None:
    temp = temp_name(name)
    temp_dev = _temp_device(dm, temp, strict)
    if temp_dev is None:
        return
    # A run cut short between a load and its resume left an inactive table holding it.
    if any(_on_temp(Seg.of(s), temp_dev) for s in dm.table(name, inactive=True)):
        dm.clear(name)
    for attempt in range(50):
        try:
            dm.remove(temp)
            return
        except DMError as e:
            # udev may still be probing a device that just changed (dmsetup --retry's case).
            if e.errno != errno.EBUSY or attempt == 49:
                raise MoveError(f"cannot remove {temp}: {e.strerror}")
            time.sleep(0.1)


def _area_seg(start: int, length: int, area: tuple[str, int]) -> Seg:
    return Seg(start, length, "linear", f"{area[0]} {area[1]}")


def _on_temp(seg: Seg, temp_dev: str | None) -> set[int]:
    """The stripes of ``seg`` on the temporary device."""
    st = seg.striped()
    if st is None or temp_dev is None:
        return set()
    return {j for j, (d, _) in enumerate(st[2]) if d == temp_dev}


def _via_temp(seg: Seg, moving: list[int], temp_dev: str) -> Seg:
    """``seg`` with stripe moving[k] on the temporary device's area k."""
    st = seg.striped()
    assert st is not None
    width = seg.length // st[0]
    stripes = list(st[2])
    for k, j in enumerate(moving):
        stripes[j] = (temp_dev, k * width)
    return seg.with_stripes(stripes)


def _move_striped(dm: DeviceMapper, plan: MovePlan, index: int, src: Seg, dst: Seg,
                  on_progress: Callable[[float], None]) -> None:
    """Bring striped segment ``index`` from ``src`` to ``dst`` through the temporary device,
    from whatever step an earlier, interrupted run left it at."""
    s_st, d_st = src.striped(), dst.striped()
    if s_st is None or d_st is None or s_st[:2] != d_st[:2] or src.length != dst.length:
        raise MoveError(f"segment {index} of {plan.name}: {src.params} cannot become "
                        f"{dst.params}")
    stripes, _chunk, s_areas = s_st
    d_areas = d_st[2]
    width = src.length // stripes
    temp = temp_name(plan.name)
    cur = Seg.of(dm.table(plan.name)[index])
    temp_dev = _temp_device(dm, temp)
    # A stripe on the temporary device is mid-move even where its plan (derived from the
    # table) says old and new are the same area.
    on_temp = _on_temp(cur, temp_dev)
    moving = [j for j in range(stripes) if s_areas[j] != d_areas[j] or j in on_temp]
    if cur == dst:
        _remove_temp(dm, plan.name)
        return
    if cur == src:
        # A temporary device left before the segment used it holds nothing: start afresh.
        _remove_temp(dm, plan.name)
        dm.create(temp, [_area_seg(k * width, width, s_areas[j]).spec()
                         for k, j in enumerate(moving)],
                  uuid=TEMP_UUID_PREFIX + plan.name)
        temp_dev = _temp_device(dm, temp)
        assert temp_dev is not None
        # Same data under the same sectors: this swap changes nothing the user sees.
        _swap(dm, plan.name, index, _via_temp(src, moving, temp_dev))
    elif temp_dev is None or cur != _via_temp(src, moving, temp_dev):
        raise MoveError(f"segment {index} of {plan.name} changed outside the move: "
                        f"{cur.kind} {cur.params}")

    def step(seg: Seg, k: int) -> str:
        s, d = s_areas[moving[k]], d_areas[moving[k]]
        if seg.start != k * width or seg.length != width:
            return "?"
        lin, legs = seg.linear(), seg.mirror_legs()
        if lin == d or legs == [d, s]:
            return "dst"  # the area we go to is the only leg, or leg 0: it has every write
        if lin == s:
            return "src"
        if legs == [s, d]:
            return "copying"
        return "?"

    areas = [Seg.of(s) for s in dm.table(temp)]
    steps = {step(a, k) for k, a in enumerate(areas)} if len(areas) == len(moving) else {"?"}
    if "?" in steps or ("dst" in steps and len(steps) > 1):
        raise MoveError(f"{temp} changed outside the move")
    if steps != {"dst"}:
        if steps != {"copying"}:
            dm.load(temp, [_mirror_seg(_area_seg(k * width, width, s_areas[j]),
                                       _area_seg(k * width, width, d_areas[j]),
                                       plan.region_size).spec()
                           for k, j in enumerate(moving)])
            dm.resume(temp)
        _wait_mirror(dm, temp, list(range(len(moving))), on_progress)
    # The segment goes straight to the new areas; the temporary device is unused after it.
    _swap(dm, plan.name, index, dst)
    _remove_temp(dm, plan.name)


def run_plan(dm: DeviceMapper, plan: MovePlan, progress: Progress | None = None,
             backwards: bool = False) -> None:
    """Bring every segment from ``original`` to ``final`` (or back, when ``backwards``)."""
    src_segs, dst_segs = (plan.final, plan.original) if backwards else (plan.original,
                                                                        plan.final)
    current = [Seg.of(s) for s in dm.table(plan.name)]
    if len(current) != len(plan.original):
        raise MoveError(f"{plan.name} changed outside the move: {len(current)} segments, "
                        f"{len(plan.original)} planned")
    temp = temp_name(plan.name)
    temp_dev = _temp_device(dm, temp, strict=False)
    # A segment that moves, or one still on the temporary device (a stripe that had not
    # started copying when the move was cut short).
    todo = [i for i, (o, f) in enumerate(zip(plan.original, plan.final, strict=True))
            if o != f or _on_temp(current[i], temp_dev)]
    if any(plan.original[i].kind == "striped" for i in todo):
        _temp_device(dm, temp)  # someone else's device by that name: stop before any step
    total = sum(plan.original[i].length for i in todo)
    done = 0
    for k, i in enumerate(todo):
        src, dst = src_segs[i], dst_segs[i]
        seg_len = src.length

        def report(frac: float, k: int = k, base: int = done, n: int = seg_len) -> None:
            if progress is not None:
                progress(base + int(frac * n), total, k, len(todo))

        if src.kind == "striped":
            _move_striped(dm, plan, i, src, dst, report)
            done += seg_len
            if progress is not None:
                progress(done, total, k, len(todo))
            continue
        cur = Seg.of(dm.table(plan.name)[i])
        if cur == dst:
            done += seg_len
            continue
        legs = cur.mirror_legs()
        if legs == [dst.linear(), src.linear()]:
            # Mid-copy in the other direction: leg 0, the area we go to, holds every write.
            _swap(dm, plan.name, i, dst)
            done += seg_len
            continue
        if cur == src:
            _swap(dm, plan.name, i, _mirror_seg(src, dst, plan.region_size))
        elif legs != [src.linear(), dst.linear()]:
            raise MoveError(f"segment {i} of {plan.name} changed outside the move: "
                            f"{cur.kind} {cur.params}")
        _wait_mirror(dm, plan.name, [i], report)
        _swap(dm, plan.name, i, dst)
        done += seg_len
        if progress is not None:
            progress(done, total, k, len(todo))
    # Left by a run cut short between creating it and using it.
    if not any(_on_temp(Seg.of(s), temp_dev) for s in dm.table(plan.name)):
        _remove_temp(dm, plan.name, strict=False)


def move(dm: DeviceMapper, name: str, source: str, dest: str, *,
         dest_offset: int | None = None, region_size: int = DEFAULT_REGION_SIZE,
         progress: Progress | None = None) -> MovePlan:
    """Move every linear segment and stripe of ``name`` on ``source`` to ``dest`` while it is
    in use."""
    with move_lock(name):
        if os.path.exists(state_path(name)):
            raise MoveError(f"a move of {name} is already in progress: --continue or --abort "
                            "it")
        table = dm.table(name)
        plan = plan_move(name, table, canonical_device(source), canonical_device(dest),
                         dest_offset, region_size)
        save_state(plan)
        run_plan(dm, plan, progress)
        drop_state(name)
    return plan


def continue_move(dm: DeviceMapper, name: str, progress: Progress | None = None) -> MovePlan:
    with move_lock(name):
        plan = load_state(dm, name)
        run_plan(dm, plan, progress)
        drop_state(name)
    return plan


def abort_move(dm: DeviceMapper, name: str, progress: Progress | None = None) -> MovePlan:
    """Back to the original table: a segment mid-copy is reloaded on its old area at once;
    a segment already moved is copied back the same way it went."""
    with move_lock(name):
        plan = load_state(dm, name)
        run_plan(dm, plan, progress, backwards=True)
        drop_state(name)
    return plan


class ProgressBar:
    """A one-line progress bar on a terminal stream (stderr)."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 40) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self._last = ""
        self._tty = self.stream.isatty()

    def __call__(self, done: int, total: int, seg: int, segs: int) -> None:
        frac = done / total if total else 1.0
        fill = int(frac * self.width)
        line = f"{self.label}: [{'#' * fill}{'.' * (self.width - fill)}] {frac * 100:5.1f}% " \
               f"segment {seg + 1}/{segs}"
        if line == self._last:
            return
        if self._tty:
            self.stream.write("\r" + line)
        elif int(frac * 10) != int(self._frac_last() * 10) or frac >= 1.0:
            self.stream.write(line + "\n")  # a log file gets a line per 10%
        self.stream.flush()
        self._last = line

    def _frac_last(self) -> float:
        try:
            return float(self._last.split("]")[1].split("%")[0]) / 100
        except (IndexError, ValueError):
            return -1.0

    def close(self) -> None:
        if self._tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
