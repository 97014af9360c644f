"""Live move of striped segments, pvmove's way: through a temporary mirror device
(NAME-pvmove) for the stripes on the source. Under write load every acknowledged block
verifies; a move cut short at any of its steps is continued or aborted, with or without its
state file, and leaves no temporary device behind."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devmapper.library import DeviceMapper
from devmapper.move import (
    MoveError,
    abort_move,
    continue_move,
    move,
    state_path,
    temp_name,
)

from .mirror_helpers import MiB, read_at
from .test_move import BLOCK, Load, table_lines

STRIPE = 4 * MiB // 512  # sectors per stripe area
CHUNK = 128


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "moves"
    monkeypatch.setenv("DEVMAPPER_MOVE_DIR", str(d))
    return d


@pytest.fixture
def volume(dm: DeviceMapper, mkfile: Callable[..., str]) -> Iterator[dict[str, str]]:
    """vol: a linear segment on A, then 3 stripes (A at 8192, C, A at 16384)."""
    a = mkfile("a.img", 16 * MiB, seed=21)
    b = mkfile("b.img", 16 * MiB)
    c = mkfile("c.img", 8 * MiB, seed=22)
    dm.create("vol", f"0 4096 linear {a} 0\n"
                     f"4096 {3 * STRIPE} striped 3 {CHUNK} {a} 8192 {c} 0 {a} 16384\n")
    yield {"a": a, "b": b, "c": c}


def original(f: dict[str, str]) -> list[str]:
    return [f"0 4096 linear {f['a']} 0",
            f"4096 {3 * STRIPE} striped 3 {CHUNK} {f['a']} 8192 {f['c']} 0 {f['a']} 16384"]


def final(f: dict[str, str]) -> list[str]:
    return [f"0 4096 linear {f['b']} 0",
            f"4096 {3 * STRIPE} striped 3 {CHUNK} {f['b']} 8192 {f['c']} 0 {f['b']} 16384"]


SIZE = (4096 + 3 * STRIPE) * 512


def no_temp(dm: DeviceMapper) -> bool:
    return temp_name("vol") not in [d.name for d in dm.list()]


def test_striped_move_under_write_load(dm: DeviceMapper, volume: dict[str, str],
                                       state_dir: Path) -> None:
    seen: list[tuple[int, list[str]]] = []

    def progress(done: int, total: int, seg: int, segs: int) -> None:
        seen.append((load.count, [d.name for d in dm.list()]))

    with Load(dm, "vol", SIZE // BLOCK) as load:
        while load.count < 200:
            threading.Event().wait(0.01)
        move(dm, "vol", volume["a"], volume["b"], region_size=256, progress=progress)
        after = load.count
        while load.count < after + 200:
            threading.Event().wait(0.01)
    load.verify()
    assert table_lines(dm, "vol") == final(volume)
    assert any(temp_name("vol") in names for _, names in seen)  # it went through pvmove
    assert seen[-1][0] > seen[0][0]  # writes were acknowledged while data was copied
    assert no_temp(dm) and not os.path.exists(state_path("vol"))
    # The stripes are where the table says: B holds what the two A stripes held.
    with dm.open("vol") as blk:
        data = blk.read(0, SIZE)
    dm.create("check", "\n".join(final(volume)))
    with dm.open("check") as blk:
        assert blk.read(0, SIZE) == data
    assert read_at(volume["c"], 0, STRIPE * 512) != bytes(STRIPE * 512)  # C left alone


class Cut(Exception):
    pass


class CutAt:
    """Makes the n-th table-changing command (create, load, resume, remove) raise before it
    runs: the move stops exactly between two of its steps."""

    def __init__(self, dm: DeviceMapper, n: int) -> None:
        self.dm, self.n, self.calls = dm, n, 0
        self.saved = {m: getattr(dm, m) for m in ("create", "load", "resume", "remove")}

    def __enter__(self) -> CutAt:
        for name, fn in self.saved.items():
            setattr(self.dm, name, self._wrap(fn))
        return self

    def _wrap(self, fn: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            self.calls += 1
            if self.calls == self.n:
                raise Cut
            return fn(*args, **kwargs)
        return call

    def __exit__(self, *exc: object) -> None:
        for name, fn in self.saved.items():
            setattr(self.dm, name, fn)


@pytest.mark.parametrize("finish", ["continue", "abort", "abort-without-state"])
def test_cut_at_every_step(dm: DeviceMapper, volume: dict[str, str], finish: str) -> None:
    with dm.open("vol") as blk:
        before = blk.read(0, SIZE)
    n = 1
    while True:
        with CutAt(dm, n) as cut:
            try:
                move(dm, "vol", volume["a"], volume["b"], region_size=64)
            except Cut:
                pass
            else:
                break
        assert cut.calls == n
        if finish == "continue":
            continue_move(dm, "vol")
            expected = final(volume)
        else:
            if finish == "abort-without-state":
                os.unlink(state_path("vol"))
            try:
                abort_move(dm, "vol")
            except MoveError as e:
                # Without its state file a move not yet visible in the table is no move.
                assert finish == "abort-without-state" and "no move" in str(e), e
            expected = original(volume)
            if finish == "abort-without-state":
                # What moved already stays moved: only the table tells what was going on.
                expected = table_lines(dm, "vol")
                assert all(line in (original(volume)[i], final(volume)[i])
                           for i, line in enumerate(expected)), (n, expected)
        assert table_lines(dm, "vol") == expected, n
        assert no_temp(dm), n
        assert not os.path.exists(state_path("vol")), n
        with dm.open("vol") as blk:
            assert blk.read(0, SIZE) == before, n
        # Back to the start for the next cut.
        if table_lines(dm, "vol") != original(volume):
            dm.load("vol", "\n".join(original(volume)))
            dm.resume("vol")
            # Data on A is as it was: nothing was written, and copies go A -> B only...
            with dm.open("vol") as blk:
                assert blk.read(0, SIZE) == before
        n += 1
    assert n > 8  # linear: 2 swaps; striped: create, swap, reload, swap, remove
    assert table_lines(dm, "vol") == final(volume) and no_temp(dm)


class Stop(Exception):
    pass


def stop_in_striped(done: int, total: int, seg: int, segs: int) -> None:
    if seg == 1:  # the first report of the striped segment: its mirrors are live
        raise Stop


def test_cut_mid_copy_under_load_then_abort(dm: DeviceMapper, volume: dict[str, str]) -> None:
    """Aborted while the stripes copy (or have just copied: under load the first report
    may already say done): the segment goes straight back to A (leg 0 of
    the temporary mirrors has every write), the linear segment already on B is copied back."""

    with Load(dm, "vol", SIZE // BLOCK) as load:
        with pytest.raises(Stop):
            move(dm, "vol", volume["a"], volume["b"], region_size=64,
                 progress=stop_in_striped)
        temp = dm.table(temp_name("vol"))
        assert [s.target_type for s in temp] == ["mirror", "mirror"]
        info = dm.info(temp_name("vol"))
        assert f"{info.major}:{info.minor}" in dm.table("vol")[1].params
        abort_move(dm, "vol")
    load.verify()
    assert table_lines(dm, "vol") == original(volume) and no_temp(dm)


def test_cut_mid_copy_then_continue_by_table(dm: DeviceMapper, volume: dict[str, str]) -> None:
    with Load(dm, "vol", SIZE // BLOCK) as load:
        with pytest.raises(Stop):
            move(dm, "vol", volume["a"], volume["b"], region_size=64,
                 progress=stop_in_striped)
        os.unlink(state_path("vol"))  # the temporary device's table is the plan now
        continue_move(dm, "vol")
    load.verify()
    assert table_lines(dm, "vol") == final(volume) and no_temp(dm)


def test_pack_stripes_onto_an_offset(dm: DeviceMapper, volume: dict[str, str]) -> None:
    move(dm, "vol", volume["a"], volume["b"], dest_offset=1024)
    b = volume["b"]
    assert table_lines(dm, "vol") == [
        f"0 4096 linear {b} 1024",
        f"4096 {3 * STRIPE} striped 3 {CHUNK} {b} 5120 {volume['c']} 0 {b} {5120 + STRIPE}"]
    assert read_at(b, 5120 * 512, STRIPE * 512) == read_at(volume["a"], 8192 * 512, STRIPE * 512)


def test_temp_name_taken_by_someone_else(dm: DeviceMapper, volume: dict[str, str]) -> None:
    dm.create(temp_name("vol"), "0 8 zero")
    with pytest.raises(MoveError, match="not a devmapper move"):
        move(dm, "vol", volume["a"], volume["b"])
    assert dm.table(temp_name("vol"))[0].target_type == "zero"  # untouched
    assert table_lines(dm, "vol") == original(volume)  # stopped before its first step
    # A move without striped segments does not need the name.
    dm.create("lin", f"0 4096 linear {volume['a']} 0")
    move(dm, "lin", volume["a"], volume["b"], dest_offset=28000)
    assert dm.table(temp_name("vol"))[0].target_type == "zero"
    dm.remove(temp_name("vol"))
    continue_move(dm, "vol")
    assert table_lines(dm, "vol") == final(volume)


def test_stripe_overlap_on_dest(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    a, b = mkfile("a.img", 8 * MiB), mkfile("b.img", 8 * MiB)
    dm.create("vol", f"0 8192 striped 2 {CHUNK} {a} 0 {b} 0")
    with pytest.raises(MoveError, match="overlap"):
        move(dm, "vol", a, b)
    with pytest.raises(MoveError, match="too small"):
        move(dm, "vol", a, b, dest_offset=16384 - 2048)
    move(dm, "vol", a, b, dest_offset=4096)
    assert table_lines(dm, "vol") == [f"0 8192 striped 2 {CHUNK} {b} 4096 {b} 0"]
