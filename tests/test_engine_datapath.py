"""The I/O path: linear and striped mappings checked against a reference model."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devmapper.control.engine import EngineTransport
from devmapper.engine.core import Engine
from devmapper.library import DeviceMapper
from tests.conftest import read_file

SECTOR = 512


def stripe_location(offset: int, stripes: int, chunk: int, width_start: list[int]) -> tuple[
        int, int]:
    """The kernel's stripe_map_sector, written independently in bytes: (stripe, byte)."""
    sector, within = divmod(offset, SECTOR)
    chunk_nr, chunk_off = divmod(sector, chunk)
    row, stripe = divmod(chunk_nr, stripes)
    return stripe, (width_start[stripe] + row * chunk + chunk_off) * SECTOR + within


@st.composite
def layouts(draw: st.DrawFn) -> list[tuple[str, int, tuple[int, ...]]]:
    """A table: segments of (type, sectors, args) — linear offsets or stripe geometry."""
    segs = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["linear", "striped", "zero"]))
        if kind == "striped":
            stripes = draw(st.integers(1, 4))
            chunk = draw(st.sampled_from([1, 3, 8, 16]))
            rows = draw(st.integers(1, 6))
            segs.append((kind, stripes * chunk * rows, (stripes, chunk)))
        elif kind == "linear":
            segs.append((kind, draw(st.integers(1, 64)), (draw(st.integers(0, 64)),)))
        else:
            segs.append((kind, draw(st.integers(1, 16)), ()))
    return segs


def build(dm: DeviceMapper, files: list[str], segs: list[tuple[str, int, tuple[int, ...]]]
          ) -> list[tuple[int, int, Callable[[int], tuple[str, int] | None]]]:
    """Load the table; return (start, end, locate) per segment for the model."""
    lines = []
    model = []
    start = 0
    for n, (kind, length, args) in enumerate(segs):
        base = n * 256  # each segment gets its own sectors on the files
        if kind == "linear":
            f = files[n % len(files)]
            off = base + args[0]
            lines.append(f"{start} {length} linear {f} {off}")
            model.append((start, start + length,
                          lambda o, f=f, off=off: (f, off * SECTOR + o)))
        elif kind == "striped":
            stripes, chunk = args
            devs = [(files[i % len(files)], base + 100 * i) for i in range(stripes)]
            spec = " ".join(f"{f} {s}" for f, s in devs)
            lines.append(f"{start} {length} striped {stripes} {chunk} {spec}")

            def locate(o: int, devs: list[tuple[str, int]] = devs, chunk: int = chunk
                       ) -> tuple[str, int]:
                i, byte = stripe_location(o, len(devs), chunk, [s for _f, s in devs])
                return devs[i][0], byte
            model.append((start, start + length, locate))
        else:
            lines.append(f"{start} {length} zero")
            model.append((start, start + length, lambda o: None))
        start += length
    dm.create("t", "\n".join(lines))
    return model


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segs=layouts(), ios=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 9000),
                                              st.binary(min_size=1, max_size=1)),
                                    min_size=1, max_size=12))
def test_mapping_matches_model(tmp_path: Path, segs: list[tuple[str, int, tuple[int, ...]]],
                               ios: list[tuple[int, int, bytes]]) -> None:
    files = []
    for i in range(3):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(4 << 20 >> 4) * 16)
        files.append(str(p))
    dm = DeviceMapper(EngineTransport(Engine()))
    try:
        model = build(dm, files, segs)
        size = model[-1][1] * SECTOR
        with dm.open("t") as dev:
            assert dev.size == size
            for raw_off, raw_len, fill in ios:
                off = raw_off % size
                length = min(raw_len, size - off)
                data = fill * length
                dev.write(off, memoryview(data))
                back = bytearray(length)
                dev.read_into(off, memoryview(back))
                expected = bytearray()
                # Model: walk byte ranges per segment and compare with the files.
                pos = off
                while pos < off + length:
                    seg = next(s for s in model if s[0] * SECTOR <= pos < s[1] * SECTOR)
                    rel = pos - seg[0] * SECTOR
                    where = seg[2](rel)
                    step = 1 if where is not None else min(off + length, seg[1] * SECTOR) - pos
                    if where is None:
                        expected += bytes(step)
                    else:
                        expected += read_file(where[0], where[1], 1)
                    pos += step
                assert bytes(back) == bytes(expected)
                # A zero target swallows writes; everything else stores them.
                assert all(b in (0, fill[0]) for b in back)
    finally:
        dm.remove_all()
        dm.close()


def test_discard_checks_as_blkdiscard(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    """BLKDISCARD's answers in its order (the kernel's, scenarios/discard.py): EOPNOTSUPP
    for a device whose table does not take discards, then EINVAL (not in sectors, past the
    end), EPERM (read-only), EINVAL (empty); a table takes them when all its targets do."""
    f = backing(1 << 20)
    with open(f, "r+b") as fh:
        fh.write(b"D" * (64 * 512))
    dm.create("l", f"0 64 linear {f} 0")
    dm.create("z", "0 64 zero")
    dm.create("lz", f"0 32 linear {f} 0\n32 32 zero")
    dm.create("ro", f"0 64 linear {f} 0", read_only=True)
    z = dm.info("z")
    dm.create("over-z", f"0 64 linear {z.major}:{z.minor} 0")

    def answer(name: str, offset: int, length: int) -> int:
        with dm.open(name) as dev:
            try:
                dev.discard(offset, length)
            except OSError as e:
                return e.errno or 0
        return 0

    for name in ("z", "lz", "over-z"):
        assert answer(name, 0, 512) == errno.EOPNOTSUPP
        assert answer(name, 1, 3) == errno.EOPNOTSUPP  # before any other check
    assert answer("l", 1, 512) == errno.EINVAL
    assert answer("l", 0, 100) == errno.EINVAL
    assert answer("l", 60 * 512, 8 * 512) == errno.EINVAL
    assert answer("ro", 60 * 512, 8 * 512) == errno.EINVAL
    assert answer("ro", 0, 512) == errno.EPERM
    assert answer("l", 0, 0) == errno.EINVAL
    assert answer("l", 8 * 512, 8 * 512) == 0
    with open(f, "rb") as fh:
        data = fh.read(64 * 512)
    assert data == b"D" * 4096 + bytes(4096) + b"D" * (48 * 512)


def test_io_past_end_and_error_target(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    f = backing(1 << 20)
    dm.create("a", f"0 8 linear {f} 0\n8 8 error")
    with dm.open("a") as dev:
        buf = memoryview(bytearray(512))
        dev.read_into(0, buf)
        for off in (8 * 512, 7 * 512 + 100):  # inside the error target, or crossing into it
            with pytest.raises(OSError) as e:
                dev.read_into(off, memoryview(bytearray(1024)))
            assert e.value.errno == errno.EIO
        with pytest.raises(OSError) as e:
            dev.read_into(16 * 512 - 1, memoryview(bytearray(2)))
        assert e.value.errno == errno.EIO
        with pytest.raises(OSError):
            dev.write(8 * 512, memoryview(b"x"))
        with pytest.raises(OSError) as e:  # kernel 6.1's error target takes no discards, so
            dev.discard(0, 512)  # neither does the device (scenario discard-mixed-tables)
        assert e.value.errno == errno.EOPNOTSUPP
        # An empty request reaches no target, error included; past the end it still fails.
        dev.read_into(9 * 512, memoryview(bytearray(0)))
        dev.write(9 * 512, memoryview(b""))
        with pytest.raises(OSError) as e:
            dev.read_into(16 * 512 + 1, memoryview(bytearray(0)))
        assert e.value.errno == errno.EIO


def test_discard_punches_the_file(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    f = backing(1 << 20, fill=b"\xab")
    dm.create("a", f"0 2048 linear {f} 0")
    with dm.open("a") as dev:
        dev.discard(4096, 8192)
        dev.flush()
    assert read_file(f, 4096, 8192) == bytes(8192)
    assert read_file(f, 0, 4096) == b"\xab" * 4096


def test_stacked_io(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    f = backing(1 << 20)
    low = dm.create("low", f"0 2048 linear {f} 0")
    dm.create("high", f"0 1024 linear {low.major}:{low.minor} 512")
    with dm.open("high") as dev:
        dev.write(100, memoryview(b"hello"))
    assert read_file(f, 512 * 512 + 100, 5) == b"hello"


def test_zero_target_reads_zeros(dm: DeviceMapper) -> None:
    dm.create("z", "0 100 zero")
    with dm.open("z") as dev:
        dev.write(0, memoryview(b"x" * 512))
        assert dev.read(0, 51200) == bytes(51200)


@st.composite
def linear_runs(draw: st.DrawFn) -> list[tuple[str, int, int, int]]:
    """Many small targets: (kind, sectors, file index, file sector). Linear targets often
    continue the previous one on the same file (the I/O map merges those) or jump."""
    segs: list[tuple[str, int, int, int]] = []
    for _ in range(draw(st.integers(1, 40))):
        length = draw(st.sampled_from([1, 3, 8, 16, 24]))
        kind = draw(st.sampled_from(["linear", "linear", "linear", "zero", "error"]))
        prev = segs[-1] if segs else None
        if kind == "linear" and prev and prev[0] == "linear" and draw(st.booleans()):
            segs.append((kind, length, prev[2], prev[3] + prev[1]))  # contiguous
        else:
            segs.append((kind, length, draw(st.integers(0, 1)), draw(st.integers(0, 2000))))
    return segs


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segs=linear_runs(), ios=st.lists(st.tuples(st.integers(0, 1 << 20),
                                                  st.integers(0, 20000), st.booleans()),
                                        min_size=1, max_size=16))
def test_io_map_matches_model(tmp_path: Path, segs: list[tuple[str, int, int, int]],
                              ios: list[tuple[int, int, bool]]) -> None:
    """The device's direct-mapped fast path agrees with a per-byte model: merged runs,
    buckets shared by targets, requests spanning targets, errors and zeros."""
    files = [tmp_path / "f0", tmp_path / "f1"]
    for f in files:
        f.write_bytes(os.urandom(1 << 20) + os.urandom(1 << 20)[:2100 * SECTOR - (1 << 20)])
    dm = DeviceMapper(EngineTransport(Engine()))
    lines, start, model = [], 0, []
    for kind, length, fi, fsec in segs:
        lines.append(f"{start} {length} {kind}" + (f" {files[fi]} {fsec}" if kind == "linear"
                                                     else ""))
        model.append((start * SECTOR, (start + length) * SECTOR, kind, fi, fsec * SECTOR))
        start += length
    size = start * SECTOR
    try:
        dm.create("t", "\n".join(lines))
        with dm.open("t") as dev:
            for n, (raw_off, raw_len, write) in enumerate(ios):
                off = raw_off % size
                length = min(raw_len, size - off)
                # An empty request reaches no target (the kernel makes no bio for it).
                touched = [m for m in model if m[0] < off + length and off < m[1]] if length else []
                fails = any(m[2] == "error" for m in touched)
                data = bytes([n + 1]) * length
                if write:
                    if fails:
                        with pytest.raises(OSError):
                            dev.write(off, memoryview(data))
                        continue
                    dev.write(off, memoryview(data))
                back = bytearray(length)
                if fails:
                    with pytest.raises(OSError) as e:
                        dev.read_into(off, memoryview(back))
                    assert e.value.errno == errno.EIO
                    continue
                dev.read_into(off, memoryview(back))
                expected = bytearray()
                for m_start, m_end, kind, fi, fbase in touched:
                    lo, hi = max(off, m_start), min(off + length, m_end)
                    if kind == "zero":
                        expected += bytes(hi - lo)
                    else:
                        expected += read_file(str(files[fi]), fbase + lo - m_start, hi - lo)
                assert bytes(back) == bytes(expected)
                if write:
                    assert all(m[2] == "zero" or b == n + 1 for m in touched
                               for b in back[max(off, m[0]) - off:min(off + length, m[1]) - off])
            for off, length in ((-512, 512), (size, 1), (size - 1, 2), (1 << 62, 512)):
                with pytest.raises(OSError) as e:
                    dev.read_into(off, memoryview(bytearray(length)))
                assert e.value.errno == errno.EIO
            if segs[-1][0] != "error":  # an empty read at the end goes to the last target
                dev.read_into(size, memoryview(bytearray(0)))
    finally:
        dm.remove_all()
        dm.close()


def test_short_read_of_a_shrunk_file_is_eio(dm: DeviceMapper, backing: Callable[..., str]
                                            ) -> None:
    f = backing(1 << 20, fill=b"\x5a")
    dm.create("a", f"0 2048 linear {f} 0")
    os.truncate(f, 4096)
    with dm.open("a") as dev:
        assert dev.read(0, 4096) == b"\x5a" * 4096
        with pytest.raises(OSError) as e:
            dev.read_into(2048, memoryview(bytearray(4096)))  # fast path reads 2048 bytes
        assert e.value.errno == errno.EIO


def test_large_table_io_map(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    """10,000 targets in a shuffled layout: every 4 KiB block lands where its target says."""
    import random

    n = 10_000
    f = backing(n * 4096)
    order = list(range(n))
    random.Random(3).shuffle(order)
    dm.create("big", "\n".join(f"{i * 8} 8 linear {f} {order[i] * 8}" for i in range(n)))
    with dm.open("big") as dev:
        for i in range(0, n, 7):
            dev.write(i * 4096, memoryview(i.to_bytes(4, "little") * 1024))
        for i in range(0, n, 7):
            assert read_file(f, order[i] * 4096, 4) == i.to_bytes(4, "little")
        dev.write(3 * 4096, memoryview(b"fua!" * 1024), True)  # FUA: the target's path
        assert read_file(f, order[3] * 4096, 4) == b"fua!"
        # A request across two targets splits at the boundary.
        back = bytearray(4096)
        dev.read_into(7 * 4096 + 2048, memoryview(back))
        assert back[:2048] == read_file(f, order[7] * 4096 + 2048, 2048)
        assert back[2048:] == read_file(f, order[8] * 4096, 2048)


def test_direct_hands_out_one_extent_inside_the_gate(engine: Engine, dm: DeviceMapper,
                                                      backing: Callable[..., str]) -> None:
    """MappedDevice.direct: fn(fd, position) for bytes that are one direct extent, run inside
    the I/O gate (a suspend waits for it, and it waits for the resume); None otherwise."""
    import threading

    data = os.urandom(1 << 20)
    f, g = backing(1 << 20), backing(1 << 20)
    with open(f, "wb") as out:
        out.write(data)
    # [0, 256): f at 0, [256, 512): f at 256 (contiguous: one extent with the first),
    # [512, 768): g at 1024 sectors in, [768, 776): zero.
    dm.create("d", f"0 256 linear {f} 0\n256 256 linear {f} 256\n"
                   f"512 256 linear {g} 1024\n768 8 zero")
    md = engine.by_name["d"]

    def peek(n: int) -> Callable[[int, int], tuple[bytes, int]]:
        return lambda fd, pos: (os.pread(fd, n, pos), pos)

    assert md.direct(0, 256 * SECTOR, peek(256 * SECTOR)) == (data[:256 * SECTOR], 0)
    at = 100 * SECTOR + 7  # any byte offset; across the merged boundary at sector 256
    assert md.direct(at, 300 * SECTOR, peek(300 * SECTOR)) == (
        data[at:at + 300 * SECTOR], at)
    assert md.direct(600 * SECTOR, 8, lambda fd, pos: pos) == 1024 * SECTOR + 88 * SECTOR
    for off, n in [(500 * SECTOR, 24 * SECTOR),  # two extents
                   (768 * SECTOR, 512), (700 * SECTOR, 100 * SECTOR),  # the zero target
                   (776 * SECTOR - 10, 20), (776 * SECTOR, 1), (1 << 40, 1),  # past the end
                   (-512, 512), (0, 0)]:
        assert md.direct(off, n, lambda fd, pos: "called") is None, (off, n)

    # Inside the gate: a suspend waits for fn to return ...
    in_fn, release = threading.Event(), threading.Event()

    def slow(fd: int, pos: int) -> str:
        in_fn.set()
        release.wait(10)
        return "done"

    results: list[object] = []
    t = threading.Thread(target=lambda: results.append(md.direct(0, 4096, slow)))
    t.start()
    assert in_fn.wait(10)
    s = threading.Thread(target=dm.suspend, args=("d",))
    s.start()
    s.join(0.3)
    assert s.is_alive(), "suspend finished while fn ran inside the gate"
    release.set()
    s.join(10)
    t.join(10)
    assert results == ["done"] and dm.info("d").suspended
    # ... and a direct() of a suspended device waits for the resume.
    t = threading.Thread(target=lambda: results.append(md.direct(0, 4096, lambda fd, p: p)))
    t.start()
    t.join(0.3)
    assert t.is_alive(), "direct() ran fn on a suspended device"
    dm.resume("d")
    t.join(10)
    assert results == ["done", 0]
