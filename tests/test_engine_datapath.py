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
        with pytest.raises(OSError) as e:
            dev.discard(8 * 512, 512)
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
