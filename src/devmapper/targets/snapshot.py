"""snapshot: a writable point-in-time view of an origin device (dm-snap.c, snapshot_map).

`<origin> <COW> <P|PO|N> <chunk-size> [<#feature args> [discard_zeroes_cow
[discard_passdown_origin]]]`. Reads of chunks with no exception come from the origin;
writes copy the chunk into the COW first (unless they cover it whole) and then go there.
Status: `<allocated>/<total> <metadata>` in sectors, or `Invalid` / `Overflow`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from devmapper.targets.snap.core import Snapshot, log


def _eio() -> OSError:
    return OSError(errno.EIO, "I/O error")


def _no_read(offset: int, buf: memoryview) -> None:
    raise _eio()


class _Invalid:
    """The exception table of an invalid snapshot: every lookup is an I/O error."""

    def __contains__(self, chunk: object) -> bool:
        raise _eio()


_INVALID = _Invalid()


class SnapshotTarget(Snapshot):
    name = "snapshot"
    version = (1, 16, 0)

    # ---- reads: no lock, no tracking. An origin write changes a chunk only after its
    # exception is in `complete`, so a read that still finds no exception *after* reading
    # the origin got the chunk's snapshot-time content; otherwise it re-reads the COW.
    def _update_read_path(self) -> None:
        super()._update_read_path()
        update = self.__dict__.get("_read_update")
        if update is None:
            reader, update = self._make_reader()
            # The device binds our read once (at table swap) while geometry and validity
            # can change later (handover, invalidation): a closure whose cells we update.
            self.read = reader  # type: ignore[method-assign,assignment]
            self._read_update = update
        update(self._rd)

    def _make_reader(self) -> tuple[Callable[[int, memoryview], None],
                                    Callable[[tuple | None], None]]:  # type: ignore[type-arg]
        shift = mask = room = 0
        # While invalid, `complete` is _INVALID, whose membership test fails with EIO: the
        # read path then needs no validity check of its own.
        complete: dict[int, int] | _Invalid = _INVALID
        origin_read: Callable[[int, memoryview], None] = _no_read
        slow = self._read_slow
        base = self._base

        def read(offset: int, buf: memoryview) -> None:
            # Within one chunk, and not remapped: from the origin.
            if (offset & mask) + len(buf) <= room and (first := offset >> shift) \
                    not in complete:
                origin_read(offset, buf)
                if first not in complete:
                    return
            slow(offset, buf)

        def read_based(offset: int, buf: memoryview) -> None:
            read(base + offset, buf)  # the kernel maps by device sector, see core

        def update(rd: tuple | None) -> None:  # type: ignore[type-arg]
            nonlocal shift, mask, room, complete, origin_read
            if rd is None:
                complete = _INVALID
                origin_read = _no_read
            else:
                _base, shift, complete, origin_read = rd
                room = 1 << shift
                mask = room - 1

        # A table starting at sector 0 (as LVM's do) skips a call and an addition.
        return (read if not base else read_based), update

    def _read_slow(self, pos: int, buf: memoryview) -> None:
        """Remapped chunks, reads spanning chunks, chunks copied out during the read."""
        if not self.valid:
            raise _eio()
        shift, complete = self.chunk_byte_shift, self.complete
        first, last = pos >> shift, (pos + len(buf) - 1) >> shift
        if first == last:
            self.cow.read((complete[first] << shift) + (pos & self._mask), buf)
            return
        chunks = range(first, last + 1)
        if any(c in complete for c in chunks):
            self._read_pieces(pos, buf, only_remapped=False)
            return
        self.origin.read(pos, buf)
        if complete and any(c in complete for c in chunks):
            # Chunks copied out while we read the origin: take those from the COW.
            self._read_pieces(pos, buf, only_remapped=True)

    def _read_pieces(self, pos: int, buf: memoryview, only_remapped: bool) -> None:
        shift = self.chunk_byte_shift
        mask = self._mask
        n = len(buf)
        done = 0
        while done < n:
            p = pos + done
            k = min(n - done, self.chunk_bytes - (p & mask))
            piece = buf[done:done + k]
            chunk = p >> shift
            new = self.complete.get(chunk)
            if new is None and not only_remapped:
                self.origin.read(p, piece)
                new = self.complete.get(chunk)
            if new is not None:
                self.cow.read((new << shift) + (p & mask), piece)
            done += k

    # ---- writes go to the COW, after the chunk's exception exists
    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        pos = self._base + offset
        n = len(data)
        mask = self._mask
        shift = self.chunk_byte_shift
        done = 0
        while done < n:
            p = pos + done
            k = min(n - done, self.chunk_bytes - (p & mask))
            self._write_chunk(p >> shift, p, data[done:done + k], fua)
            done += k

    def _write_chunk(self, chunk: int, pos: int, piece: memoryview, fua: bool) -> None:
        if not self.valid:
            raise _eio()
        shift = self.chunk_byte_shift
        new = self.complete.get(chunk)
        if new is not None and not self.snapshot_overflowed:
            self.cow.write((new << shift) + (pos & self._mask), piece, fua)
            return
        with self.lock:
            if not self.valid or self.snapshot_overflowed:
                raise _eio()
            new = self.complete.get(chunk)
            pe = None
            mine = False
            if new is None:
                pe = self.pending.get(chunk)
                if pe is None:
                    mine = True
                    pe = self._insert_pending(chunk)
        if new is not None:
            self.cow.write((new << shift) + (pos & self._mask), piece, fua)
            return
        if pe is None:
            self._cow_full()
            raise _eio()
        if mine and len(piece) == self.chunk_bytes:
            # The write covers the chunk: it is the copy (start_full_bio).
            error = False
            try:
                self.cow.write(pe.new << shift, piece, fua)
            except OSError:
                error = True
            self._copy_done(pe, error)
            pe.wait()
            if not pe.ok:
                raise _eio()
            return
        if mine:
            self._copy_out(pe)
        pe.wait()
        if not pe.ok:
            raise _eio()
        self.cow.write((pe.new << shift) + (pos & self._mask), piece, fua)

    def _cow_full(self) -> None:
        """No room for an exception: PO overflows (writes fail, reads go on), P/N invalidate."""
        if self.store.userspace_supports_overflow:
            with self.lock:
                if self.valid and not self.snapshot_overflowed:
                    self.snapshot_overflowed = True
                    log.error("snapshots: Snapshot overflowed: Unable to allocate exception.")
        else:
            self.invalidate(errno.ENOMEM)

    def flush(self) -> None:
        self.cow.flush()

    def discard(self, offset: int, length: int) -> None:
        """With discard_zeroes_cow: zero whole remapped chunks; passdown also discards the
        origin directly (bypassing copy-out, as the feature intends). Without the feature
        the table takes no discards (takes_discards), so none arrive here."""
        pos = self._base + offset
        end = pos + length
        shift = self.chunk_byte_shift
        mask = self._mask
        while pos < end:
            k = min(end - pos, self.chunk_bytes - (pos & mask))
            if not self.valid or self.snapshot_overflowed:
                raise _eio()
            new = self.complete.get(pos >> shift)
            if new is not None:
                where = (new << shift) + (pos & mask)
                if k == self.chunk_bytes:
                    self.cow.write(where, memoryview(bytes(k)))
                else:
                    self.cow.discard(where, k)
            if self.discard_passdown_origin:
                self.origin.discard(pos, k)
            pos += k
