"""mirror: RAID-1 over 2 to 9 legs with a dirty region log (dm-raid1.c, dm-region-hash.c).

The target is split into regions (a power of two of sectors). Each region is CLEAN (in sync,
no writes), DIRTY (in sync, writes in flight: the log marks it before the first write),
NOSYNC (legs may differ: writes go to the default leg only) or RECOVERING (being copied from
the default leg: writes wait). A background thread, kmirrord's part, copies out-of-sync
regions one at a time and writes the log's clean marks out; it runs between resume and
suspend. Reads of in-sync regions come from the default leg (or the nearest healthy one),
reads of out-of-sync regions from the default leg, which is the copy source.

Errors follow the kernel: a failed leg keeps an error count and type (status A/D/F/S/R/U).
With handle_errors the default leg moves off a failed leg when in sync, an event is raised,
and writes that failed on a leg are held until the next suspend (userspace is expected to
reconfigure the mirror, as dmeventd does); without it they complete as long as one leg
took them, and the region is marked out of sync.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import TYPE_CHECKING

from devmapper.targets.base import (
    SECTOR_SHIFT,
    Requeue,
    StatusType,
    Target,
    TargetError,
    parse_u64,
)
from devmapper.targets.dirty_log import CoreLog, LogError, create_dirty_log
from devmapper.targets.dirty_log.core import sscanf_uint
from devmapper.targets.dirty_log.disk import DiskLog

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import TargetContext, Underlying

log = logging.getLogger("devmapper.kernel")

MAX_NR_MIRRORS = 9  # DM_KCOPYD_MAX_REGIONS + 1
#: Bounce buffer for recovery when copy_file_range cannot be used: memory stays bounded.
COPY_CHUNK = 4 << 20

# region states (dm-region-hash.h)
CLEAN, DIRTY, NOSYNC, RECOVERING = range(4)
# error types (enum dm_raid1_error), as bit numbers
WRITE_ERROR, FLUSH_ERROR, SYNC_ERROR, READ_ERROR = range(4)


def _eio(what: str) -> OSError:
    return OSError(errno.EIO, what)


class Leg:
    """One mirror leg: its device, offset, and what went wrong with it."""

    __slots__ = ("dev", "offset", "base", "error_count", "error_type", "fd")

    def __init__(self, dev: Underlying, offset: int) -> None:
        self.dev = dev
        self.offset = offset  # sectors
        self.base = offset << SECTOR_SHIFT
        self.error_count = 0
        self.error_type = 0
        # A regular file's descriptor lets recovery use copy_file_range.
        fd = getattr(dev, "file_fd", None)
        self.fd: int | None = fd if isinstance(fd, int) else None

    def status_char(self) -> str:
        if not self.error_count:
            return "A"
        t = self.error_type
        for bit, ch in ((FLUSH_ERROR, "F"), (WRITE_ERROR, "D"), (SYNC_ERROR, "S"),
                        (READ_ERROR, "R")):
            if t & (1 << bit):
                return ch
        return "U"


class Region:
    __slots__ = ("state", "pending")

    def __init__(self, state: int) -> None:
        self.state = state
        self.pending = 0


class MirrorTarget(Target):
    name = "mirror"
    version = (1, 14, 0)

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        super().__init__(ctx, begin, length, argv)
        args = list(argv)
        self.log, used = self._create_log(ctx, length, args)
        del args[:used]
        nr = sscanf_uint(args[0]) if args else None
        if nr is None or nr < 2 or nr > MAX_NR_MIRRORS:
            raise TargetError("Invalid number of mirrors")
        del args[0]
        if len(args) < nr * 2:
            raise TargetError("Too few mirror arguments")
        self.legs: list[Leg] = []
        for i in range(nr):
            offset = parse_u64(args[2 * i + 1], "Invalid offset")
            try:
                dev = ctx.get_device(args[2 * i])
            except OSError as e:
                raise TargetError("Device lookup failure", e.errno or errno.ENODEV)
            self.legs.append(Leg(dev, offset))
        del args[:2 * nr]
        self.handle_errors, self.keep_log = self._parse_features(args)

        self.nr_regions = self.log.region_count
        self.region_size = self.log.region_size
        self._region_bytes = self.region_size << SECTOR_SHIFT
        self._nbytes = length << SECTOR_SHIFT
        self._persistent = isinstance(self.log, DiskLog)
        self._cond = threading.Condition(threading.Lock())
        # Events count only once this table is the device's live one (see _event).
        self._live = False
        if isinstance(self.log, DiskLog):
            self.log.bind(self._cond, self._flush_legs_for_log, self._event)
        self._regions: dict[int, Region] = {}
        self._default = 0
        self.in_sync = False
        self.log_failure = False
        self.leg_failure = False
        self._flush_failure = False
        # lifecycle
        self._suspending = False
        self._noflush = False
        self._recovery_on = False
        self._recovering: int | None = None
        self._kick = False
        self._stop = False
        self._worker: threading.Thread | None = None
        self._buf: bytearray | None = None
        #: Regions this table copied (recovered), for tests and benchmarks.
        self.recovered = 0
        # kmirrord runs once at construction, before the table is live: a log already fully
        # in sync (nosync) sets in_sync there, and that event reaches nobody.
        if self.log.sync_count == self.nr_regions:
            self.in_sync = True

    # ---- construction
    @staticmethod
    def _create_log(ctx: TargetContext, length: int, args: list[str]) -> tuple[CoreLog, int]:
        if len(args) < 2:
            raise TargetError("Insufficient mirror log arguments")
        count = sscanf_uint(args[1])
        if count is None:
            raise TargetError("Invalid mirror log argument count")
        if count > len(args) - 2:
            raise TargetError("Insufficient mirror log arguments")
        try:
            return create_dirty_log(args[0], ctx, length, args[2:2 + count]), 2 + count
        except LogError as e:
            if str(e):
                log.warning("dirty region log: %s", e)
            raise TargetError("Error creating mirror dirty log")

    @staticmethod
    def _parse_features(args: list[str]) -> tuple[bool, bool]:
        handle_errors = keep_log = False
        if args:
            count = sscanf_uint(args[0])
            if count is None:
                raise TargetError("Invalid number of features")
            del args[0]
            if count > len(args):
                raise TargetError("Not enough arguments to support feature count")
            for word in args[:count]:
                if word == "handle_errors":
                    handle_errors = True
                elif word == "keep_log":
                    keep_log = True
                else:
                    raise TargetError("Unrecognised feature requested")
            del args[:count]
            if keep_log and not handle_errors:
                raise TargetError("keep_log feature requires the handle_errors feature")
        if args:
            raise TargetError("Too many mirror arguments")
        return handle_errors, keep_log

    # ---- legs and failures (callers of *_locked hold self._cond)
    @property
    def default_leg(self) -> Leg:
        return self.legs[self._default]

    def _valid_leg(self) -> Leg | None:
        for leg in self.legs:
            if not leg.error_count:
                return leg
        return None

    def _choose_leg(self) -> Leg | None:
        """choose_mirror: the default leg, else the nearest healthy one going backwards."""
        n = len(self.legs)
        i = self._default
        for _ in range(n):
            leg = self.legs[i]
            if not leg.error_count:
                return leg
            i = (i - 1) % n
        return None

    def _fail_leg_locked(self, leg: Leg, kind: int) -> bool:
        """fail_mirror: record the error; True when userspace must hear of it (an event)."""
        self.leg_failure = True
        leg.error_count += 1
        if leg.error_type & (1 << kind):
            return False
        leg.error_type |= 1 << kind
        if not self.handle_errors:
            return False
        if leg is self.default_leg:
            if not self.in_sync and not self.keep_log:
                # Better to keep reading the failing leg than to return stale data.
                log.error("raid1: Primary mirror (%s) failed while out-of-sync: Reads may fail.",
                          leg.dev.name)
            else:
                new = self._valid_leg()
                if new is not None:
                    self._default = self.legs.index(new)
                else:
                    log.warning("raid1: All sides of mirror have failed.")
        return True

    def _fail_legs(self, legs: Sequence[Leg], kind: int) -> None:
        with self._cond:
            raise_event = False
            for leg in legs:
                raise_event |= self._fail_leg_locked(leg, kind)
        if raise_event:
            self._event()

    def _flush_legs(self, error: int) -> bool:
        """Flush every leg; the ones that fail are failed with ``error``."""
        failed = []
        for leg in self.legs:
            try:
                leg.dev.flush()
            except OSError:
                failed.append(leg)
        if failed:
            self._fail_legs(failed, error)
        return not failed

    def _flush_legs_for_log(self) -> bool:
        """mirror_flush, the disk log's flush callback: legs durable before clean marks."""
        return self._flush_legs(FLUSH_ERROR)

    # ---- the region hash (callers hold self._cond)
    def _region(self, r: int) -> Region:
        reg = self._regions.get(r)
        if reg is None:
            reg = self._regions[r] = Region(CLEAN if self.log.in_sync(r) else NOSYNC)
        return reg

    def _mark_nosync_locked(self, r: int) -> None:
        """dm_rh_mark_nosync: a write reached some legs only; the region must resync."""
        self.log.set_region_sync(r, False)
        reg = self._region(r)
        reg.state = NOSYNC  # a recovery waiting on this region gives up
        self._cond.notify_all()

    def _dec(self, r: int) -> None:
        cond = self._cond
        with cond:
            reg = self._regions[r]
            reg.pending -= 1
            if reg.pending:
                return
            if self._flush_failure:
                reg.state = NOSYNC
            elif reg.state == RECOVERING:
                cond.notify_all()  # recovery was waiting for the region to quiesce
            elif reg.state == DIRTY:
                del self._regions[r]
                self.log.clear_region(r)
                if self._persistent:
                    self._kick = True  # kmirrord writes the clean mark out
                    cond.notify_all()

    # ---- I/O
    def _split(self, offset: int, view: memoryview) -> list[tuple[int, int, memoryview]]:
        """The pieces of a request, one per region (the kernel caps bios at a region)."""
        rb = self._region_bytes
        n = len(view)
        r, within = divmod(offset, rb)
        if within + n <= rb:
            return [(r, offset, view)]
        out = []
        pos = 0
        while pos < n:
            r, within = divmod(offset + pos, rb)
            k = min(rb - within, n - pos)
            out.append((r, offset + pos, view[pos:pos + k]))
            pos += k
        return out

    def read(self, offset: int, buf: memoryview) -> None:
        for r, off, view in self._split(offset, buf):
            self._read_region(r, off, view)

    def _read_region(self, r: int, off: int, view: memoryview) -> None:
        log_in_sync = self.log.in_sync
        while True:
            if log_in_sync(r):
                leg = self._choose_leg()
            else:
                # Out of sync: only the default leg, the recovery source, is right.
                leg = self.default_leg
                if leg.error_count:
                    leg = None
            if leg is None:
                raise _eio("mirror: no leg to read from")
            try:
                leg.dev.read(leg.base + off, view)
                return
            except OSError as e:
                if e.errno == errno.EOPNOTSUPP:
                    raise
                self._fail_legs([leg], READ_ERROR)
                if not self.default_leg.error_count or (
                        log_in_sync(r) and self._choose_leg() is not None):
                    log.warning("raid1: Read failure on mirror device %s.  Trying alternative "
                                "device.", leg.dev.name)
                    continue
                log.error("raid1: Read failure on mirror device %s.  Failing I/O.",
                          leg.dev.name)
                raise

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        for r, off, view in self._split(offset, data):
            self._write_region(r, off, view, fua)

    def _write_region(self, r: int, off: int, view: memoryview, fua: bool) -> None:
        cond = self._cond
        with cond:
            reg = self._region(r)
            while reg.state == RECOVERING:  # I/O to a region being recovered waits for it
                cond.wait()
                reg = self._region(r)
            reg.pending += 1
            if reg.state == CLEAN:
                reg.state = DIRTY
                self.log.mark_region(r)
            in_sync = reg.state == DIRTY
            gen = self.log.gen
        try:
            # The dirty mark is on disk before any leg sees the write.
            if self._persistent and self.log.flush(gen) < 0:
                self.log_failure = True
            if in_sync:
                if self.log_failure and self.handle_errors:
                    self._write_failed(r)
                    return
                failed = []
                for leg in self.legs:
                    try:
                        leg.dev.write(leg.base + off, view, fua)
                    except OSError:
                        failed.append(leg)
                if failed:
                    self._fail_legs(failed, WRITE_ERROR)
                    self._write_failed(r)
            elif self.leg_failure and self.handle_errors and not self.keep_log:
                self._write_failed(r)
            else:
                # Out of sync: the default leg only; recovery copies it to the others later.
                leg = self.default_leg
                leg.dev.write(leg.base + off, view, fua)
        finally:
            self._dec(r)

    def _write_failed(self, r: int | None) -> None:
        """do_failures for one write (r None: a flush)."""
        with self._cond:
            if not self.log_failure:
                self.in_sync = False
                if r is None:
                    self._flush_failure = True
                else:
                    self._mark_nosync_locked(r)
            no_leg = self._valid_leg() is None
        if no_leg or (self.keep_log and self.log_failure):
            raise _eio("mirror: write failed on every leg")
        if self.handle_errors and not self.keep_log:
            self._hold()
        # Otherwise the write counts as done: at least one leg has it.

    def _hold(self) -> None:
        """hold_bio: wait for userspace to reconfigure the mirror (the next suspend)."""
        with self._cond:
            while not self._suspending:
                self._cond.wait()
            noflush = self._noflush
        if not noflush:
            raise _eio("mirror: held write failed by suspend")
        # DM_MAPIO_REQUEUE: the mapped device re-issues the whole write to whatever table is
        # live after the resume (dmeventd's repair, a move, or this one holding it again).
        raise Requeue()

    def flush(self) -> None:
        if self._persistent and self.log.flush() < 0:
            self.log_failure = True
        if not self._flush_legs(WRITE_ERROR):  # flush bios fail like writes
            self._write_failed(None)

    def takes_discards(self) -> bool:
        # mirror_ctr sets num_discard_bios; mirror_iterate_devices names the legs only.
        return all(leg.dev.takes_discards for leg in self.legs)

    def discard(self, offset: int, length: int) -> None:
        unsupported = False
        for leg in self.legs:
            try:
                leg.dev.discard(leg.base + offset, length)
            except OSError:
                unsupported = True
        if unsupported:  # a failed discard does not degrade the mirror
            raise OSError(errno.EOPNOTSUPP, "discard not supported")

    # ---- recovery (kmirrord)
    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._stop = False
            self._worker = threading.Thread(target=self._run, daemon=True,
                                            name=f"kmirrord-{self.ctx.device_name}")
            self._worker.start()

    def _stop_worker(self) -> None:
        worker = self._worker
        if worker is None:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if worker is not threading.current_thread():
            worker.join()
        self._worker = None

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not (self._stop or self._kick or (
                        self._recovery_on and self.log.sync_search < self.nr_regions)):
                    cond.wait()
                if self._stop:
                    return
                self._kick = False
            self._do_mirror()

    def _do_mirror(self) -> None:
        # dm_rh_update_states: clean marks were set as regions went clean; write them out.
        if self._persistent:
            self.log.flush()
        with self._cond:
            r = self.log.get_resync_work() if self._recovery_on else None
            if r is not None:
                self._region(r).state = RECOVERING
                self._recovering = r
        if r is not None:
            self._recover(r)
            if self._persistent:
                # The kernel's next pass (update_states) writes the clean mark out before it
                # looks at the sync count: the in-sync event comes with the log on disk.
                self.log.flush()
        with self._cond:
            done = not self.in_sync and self.log.sync_count == self.nr_regions
            if done:
                self.in_sync = True
                # reset_ms_flags: a completed resync forgives every leg.
                self.leg_failure = False
                for leg in self.legs:
                    leg.error_count = leg.error_type = 0
        if done:
            self._event()  # the kernel's one event: the mirror is in sync

    def _recover(self, r: int) -> None:
        cond = self._cond
        with cond:
            reg = self._regions[r]
            while reg.pending and reg.state == RECOVERING:
                cond.wait()
            if reg.state != RECOVERING:  # a failed write marked it out of sync meanwhile
                self._recovering = None
                cond.notify_all()
                return
            src = self.default_leg
        read_err, failed = self._copy_region(r, src)
        if read_err:
            log.error("raid1: Unable to read primary mirror during recovery")
            self._fail_legs([src], SYNC_ERROR)
        if failed:
            log.error("raid1: Write error during recovery")
            self._fail_legs(failed, SYNC_ERROR)
        ok = not read_err and not failed
        with cond:
            if ok:
                self.log.clear_region(r)
                self.log.set_region_sync(r, True)
            else:
                # Without handle_errors the kernel counts a failed copy as in sync anyway.
                self.log.set_region_sync(r, not self.handle_errors)
            del self._regions[r]
            self._recovering = None
            self.recovered += 1
            cond.notify_all()  # delayed writes go on

    def _copy_region(self, r: int, src: Leg) -> tuple[bool, list[Leg]]:
        """Copy region r from ``src`` to every other leg: (read failed, legs whose write
        failed). Big sequential copies; copy_file_range between regular files."""
        start = r * self._region_bytes
        count = min(self._region_bytes, self._nbytes - start)
        failed: list[Leg] = []
        slow: list[Leg] = []
        for dst in self.legs:
            if dst is src:
                continue
            if src.fd is not None and dst.fd is not None and \
                    self._copy_file_range(src, dst, start, count):
                continue
            slow.append(dst)
        if not slow:
            return False, failed
        if self._buf is None:
            self._buf = bytearray(min(COPY_CHUNK, self._region_bytes))
        buf = memoryview(self._buf)
        pos = 0
        while pos < count:
            k = min(len(buf), count - pos)
            view = buf[:k]
            try:
                src.dev.read(src.base + start + pos, view)
            except OSError:
                return True, failed
            for dst in slow:
                if dst in failed:
                    continue
                try:
                    dst.dev.write(dst.base + start + pos, view)
                except OSError:
                    failed.append(dst)
            pos += k
        return False, failed

    @staticmethod
    def _copy_file_range(src: Leg, dst: Leg, start: int, count: int) -> bool:
        assert src.fd is not None and dst.fd is not None
        done = 0
        try:
            while done < count:
                n = os.copy_file_range(src.fd, dst.fd, count - done, src.base + start + done,
                                       dst.base + start + done)
                if n <= 0:
                    return False
                done += n
        except OSError:
            return False  # the buffered copy retries and tells read from write errors
        return True

    # ---- lifecycle
    def _event(self) -> None:
        """dm_table_event: the kernel binds a table's event callback when the table goes
        live (__bind), so events of a table that was only loaded reach nobody; the engine's
        Table.event() would count them, so they stop here."""
        if self._live:
            self.ctx.event()

    def preresume(self) -> None:
        self._live = True  # swapped in: dm_swap_table runs before the targets' resume hooks

    def presuspend(self, noflush: bool) -> None:
        with self._cond:
            self._suspending = True
            self._noflush = noflush
            self._recovery_on = False
            self._cond.notify_all()  # held writes complete or fail now
            while self._recovering is not None:  # dm_rh_stop_recovery: let it finish
                self._cond.wait()

    def postsuspend(self) -> None:
        self._stop_worker()
        if self.log.postsuspend() < 0:
            log.warning("raid1: log postsuspend failed")

    def resume(self) -> None:
        with self._cond:
            self._suspending = False
        if self.log.resume() < 0:
            log.warning("raid1: log resume failed")
        with self._cond:
            self._recovery_on = True
            self._kick = True
        self._start_worker()

    def destroy(self) -> None:
        with self._cond:
            self._recovery_on = False
        self._stop_worker()
        self.log.close()

    # ---- reporting
    def status(self, kind: StatusType, noflush: bool = False) -> str:
        if kind is StatusType.INFO:
            names = " ".join(leg.dev.name for leg in self.legs)
            chars = "".join(leg.status_char() for leg in self.legs)
            return f"{len(self.legs)} {names} {self.log.sync_count}/{self.nr_regions} 1 " \
                   f"{chars} {self.log.status_info()}"
        if kind is StatusType.IMA:
            parts = [f"target_name={self.name},target_version=1.14.0",
                     f"nr_mirrors={len(self.legs)}"]
            for i, leg in enumerate(self.legs):
                parts.append(f"mirror_device_{i}={leg.dev.name}")
                parts.append(f"mirror_device_{i}_status={leg.status_char()}")
            parts.append(f"handle_errors={'y' if self.handle_errors else 'n'}")
            parts.append(f"keep_log={'y' if self.keep_log else 'n'}")
            return ",".join(parts) + ",log_type_status=;"
        return ""

    def table(self) -> str:
        out = self.log.status_table() + str(len(self.legs))
        out += "".join(f" {leg.dev.name} {leg.offset}" for leg in self.legs)
        features = [f for f, on in (("handle_errors", self.handle_errors),
                                    ("keep_log", self.keep_log)) if on]
        if features:
            out += f" {len(features)} " + " ".join(features)
        return out

    def iterate_devices(self) -> list[tuple[Underlying, int, int]]:
        return [(leg.dev, leg.offset, self.length) for leg in self.legs]
