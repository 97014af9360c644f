"""snapshot-merge: copy a snapshot's exceptions back into its origin (dm-snap.c).

Same arguments as snapshot; it takes over the exceptions of the snapshot sharing its COW
(handover) and, once resumed, merges them in the background, newest first, in runs of
consecutive chunks: other snapshots copy those chunks out first, writes to the chunks
being merged wait, the data goes COW -> origin, the origin is flushed, the entries are
cleared on disk, then the exceptions leave the table. Meanwhile the device reads chunks
still in the COW from there and everything else from the origin, and writes to merged or
never-snapshotted chunks go to the origin (copying out into other snapshots). Status
counts down until <allocated> equals <metadata>.
"""

from __future__ import annotations

import errno
import threading
from typing import TYPE_CHECKING

from devmapper.targets.snap.core import Pending, Snapshot, Waiters, log
from devmapper.targets.snap.registry import do_origin

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import TargetContext


def _eio() -> OSError:
    return OSError(errno.EIO, "I/O error")


class _Step:
    """The run of chunks being merged; writes to it wait (bios_queued_during_merge)."""

    __slots__ = ("first", "count", "done")

    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self.done = Pending(first, 0, 0, Waiters())  # a latch: ok=False errors the writes


class SnapshotMergeTarget(Snapshot):
    name = "snapshot-merge"
    version = (1, 5, 0)
    is_merge = True

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        self._thread: threading.Thread | None = None
        self._shutdown = threading.Event()
        self._step: _Step | None = None
        super().__init__(ctx, begin, length, argv)

    # ---- I/O (snapshot_merge_map)
    def _pieces(self, offset: int, n: int) -> list[tuple[int, int, int, int]]:
        """(chunk, device byte offset, start in the buffer, length) per chunk touched."""
        pos = self._base + offset
        shift, mask, cb = self.chunk_byte_shift, self._mask, self.chunk_bytes
        out = []
        done = 0
        while done < n:
            p = pos + done
            k = min(n - done, cb - (p & mask))
            out.append((p >> shift, p, done, k))
            done += k
        return out

    def read(self, offset: int, buf: memoryview) -> None:
        shift, mask = self.chunk_byte_shift, self._mask
        for chunk, p, at, k in self._pieces(offset, len(buf)):
            with self.lock:
                new = self.complete.get(chunk) if self.valid else None
            if new is None:
                self.origin.read(p, buf[at:at + k])
            else:
                self.cow.read((new << shift) + (p & mask), buf[at:at + k])

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        shift, mask = self.chunk_byte_shift, self._mask
        for chunk, p, at, k in self._pieces(offset, len(data)):
            piece = data[at:at + k]
            step = None
            with self.lock:
                new = self.complete.get(chunk) if self.valid else None
                if new is not None:
                    step = self._step
                    if step is not None and step.first <= chunk < step.first + step.count:
                        new = None  # queued until this run is merged, then to the origin
                    else:
                        step = None
                        self._track(chunk)
            if step is not None:
                step.done.wait()
                if not step.done.ok:
                    raise _eio()
                self.origin.write(p, piece, fua)
            elif new is not None:
                try:
                    self.cow.write((new << shift) + (p & mask), piece, fua)
                finally:
                    self._untrack(chunk)
            else:
                self._origin_write(p, piece, fua)

    def _origin_write(self, pos: int, piece: memoryview, fua: bool) -> None:
        """do_origin then the origin: other snapshots copy the chunk out first."""
        entry = self.registry.lookup(self.origin_key)
        if entry is None:
            self.origin.write(pos, piece, fua)
            return
        entry.gate.enter()
        try:
            do_origin(entry, pos, len(piece))
            self.origin.write(pos, piece, fua)
        finally:
            entry.gate.exit()

    def flush(self) -> None:
        self.origin.flush()
        self.cow.flush()

    def discard(self, offset: int, length: int) -> None:
        # Once merging, discards no longer effect change. They reach us only with
        # discard_zeroes_cow (takes_discards), as the kernel offers them.
        pass

    # ---- lifecycle
    def presuspend(self, noflush: bool) -> None:
        self.stop_merge()

    def resume(self) -> None:
        super().resume()
        self.start_merge()

    def merge_running(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def start_merge(self) -> None:
        if self.merge_running():
            return
        self._shutdown.clear()
        self._thread = threading.Thread(target=self._merge_loop, name="kmerge", daemon=True)
        self._thread.start()

    def stop_merge(self) -> None:
        t = self._thread
        if t is None:
            return
        self._shutdown.set()
        t.join()
        self._thread = None
        self._shutdown.clear()

    # ---- the merge (snapshot_merge_next_chunks + merge_callback)
    def _merge_loop(self) -> None:
        while not self._shutdown.is_set():
            if not self.valid:
                log.error("snapshots: Snapshot is invalid: can't merge")
                return
            try:
                n, last_old, last_new = self.store.prepare_merge()
            except OSError:
                log.error("snapshots: Read error in exception store: shutting down merge")
                with self.lock:
                    self.merge_failed = True
                return
            if n <= 0:
                return
            if not self._merge_run(last_old + 1 - n, last_new + 1 - n, n):
                return

    def _merge_run(self, old_chunk: int, new_chunk: int, n: int) -> bool:
        cb = self.chunk_bytes
        dest = old_chunk * cb
        count = min(n * cb, self.origin.size - dest)
        # Other snapshots copy these chunks out before the origin changes under them.
        entry = self.registry.lookup(self.origin_key)
        if entry is not None:
            do_origin(entry, dest, n * cb)
        step = _Step(old_chunk, n)
        with self.lock:
            self._step = step
            # Wait for writes already sent to these chunks in the COW.
            while any(c in self._tracked for c in range(old_chunk, old_chunk + n)):
                self.wait_drained()
        try:
            buf = bytearray(count)
            try:
                self.cow.read(new_chunk * cb, memoryview(buf))
            except OSError:
                log.error("snapshots: Read error: shutting down merge.")
                raise
            try:
                self.origin.write(dest, memoryview(buf))
            except OSError:
                log.error("snapshots: Write error: shutting down merge.")
                raise
            try:
                self.origin.flush()
            except OSError:
                log.error("snapshots: Flush after merge failed: shutting down merge")
                raise
            try:
                self.store.commit_merge(n)
            except OSError:
                log.error("snapshots: Write error in exception store: shutting down merge")
                raise
            self._remove_chunks(old_chunk, n)
        except OSError:
            self._fail(step)
            return False
        return True

    def _remove_chunks(self, first: int, n: int) -> None:
        """remove_single_exception_chunk: newest first, then release the queued writes."""
        with self.lock:
            for chunk in range(first + n - 1, first - 1, -1):
                if self.complete.pop(chunk, None) is None:
                    log.error("snapshots: Corruption detected: exception for block %d is on "
                              "disk but not in memory", chunk)
                    raise OSError(errno.EINVAL, "exception missing")
            step, self._step = self._step, None
        if step is not None:
            step.done.finish(True)

    def _fail(self, step: _Step) -> None:
        with self.lock:
            self.merge_failed = True
            if self._step is step:
                self._step = None
        step.done.finish(False)
