"""Live move under write load: every acknowledged block verifies afterwards, the table ends
linear on the new device; interrupted moves are continued or aborted."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devmapper.library import DeviceMapper
from devmapper.move import (
    MoveError,
    abort_move,
    continue_move,
    load_state,
    move,
    state_path,
)

from .mirror_helpers import MiB, read_at

BLOCK = 4096
SEG = 8 * MiB // 512  # sectors per moved segment


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "moves"
    monkeypatch.setenv("DEVMAPPER_MOVE_DIR", str(d))
    return d


def block(n: int, version: int, rng: random.Random) -> bytes:
    """A self-checking block: number, version, payload, sha256 of the rest."""
    body = struct.pack("<QQ", n, version) + rng.randbytes(BLOCK - 16 - 32)
    return body + hashlib.sha256(body).digest()


class Load:
    """Threads rewriting checksummed blocks of a device; remembers what was acknowledged."""

    def __init__(self, dm: DeviceMapper, name: str, nblocks: int, threads: int = 4) -> None:
        self.dm = dm
        self.name = name
        self.nblocks = nblocks
        self.acked: dict[int, bytes] = {}
        self.count = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i, threads))
                         for i in range(threads)]

    def _run(self, me: int, every: int) -> None:
        rng = random.Random(me)
        version = 0
        try:
            with self.dm.open(self.name) as blk:
                while not self._stop.is_set():
                    # Each thread owns the blocks n % every == me: per-block order is its own.
                    n = rng.randrange(me, self.nblocks, every)
                    version += 1
                    data = block(n, version, rng)
                    blk.write(n * BLOCK, memoryview(data))
                    with self._lock:
                        self.acked[n] = data
                        self.count += 1
        except BaseException as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(e)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def verify(self) -> None:
        assert not self.errors, self.errors
        with self.dm.open(self.name) as blk:
            for n, data in self.acked.items():
                got = blk.read(n * BLOCK, BLOCK)
                assert got == data, f"block {n} lost"
                assert hashlib.sha256(got[:-32]).digest() == got[-32:]


@pytest.fixture
def volume(dm: DeviceMapper, mkfile: Callable[..., str]) -> Iterator[dict[str, str]]:
    """vol: 8 MiB on A at 0, 4 MiB on C (not moved), 8 MiB on A at 16 MiB."""
    a = mkfile("a.img", 32 * MiB, seed=11)
    b = mkfile("b.img", 32 * MiB)
    c = mkfile("c.img", 8 * MiB, seed=12)
    dm.create("vol", f"0 {SEG} linear {a} 0\n"
                     f"{SEG} 8192 linear {c} 0\n"
                     f"{SEG + 8192} {SEG} linear {a} 32768\n")
    yield {"a": a, "b": b, "c": c}


def final_table(f: dict[str, str]) -> list[str]:
    return [f"0 {SEG} linear {f['b']} 0", f"{SEG} 8192 linear {f['c']} 0",
            f"{SEG + 8192} {SEG} linear {f['b']} 32768"]


def table_lines(dm: DeviceMapper, name: str) -> list[str]:
    return [f"{s.start} {s.length} {s.target_type} {s.params}" for s in dm.table(name)]


def test_move_under_write_load(dm: DeviceMapper, volume: dict[str, str],
                               state_dir: Path) -> None:
    nblocks = (2 * SEG + 8192) * 512 // BLOCK
    during: list[int] = []
    with Load(dm, "vol", nblocks) as load:
        while load.count < 200:  # the load is running before the move starts
            threading.Event().wait(0.01)
        move(dm, "vol", volume["a"], volume["b"], region_size=256,
             progress=lambda done, total, seg, segs: during.append(load.count))
        after = load.count
        while load.count < after + 200:  # and after it ends
            threading.Event().wait(0.01)
    assert during[-1] > during[0]  # writes were acknowledged while data was copied
    load.verify()
    assert table_lines(dm, "vol") == final_table(volume)
    assert not os.path.exists(state_path("vol"))
    # The moved data is where the table says, on B.
    with dm.open("vol") as blk:
        assert blk.read(0, SEG * 512) == read_at(volume["b"], 0, SEG * 512)
        assert blk.read((SEG + 8192) * 512, SEG * 512) == \
            read_at(volume["b"], 32768 * 512, SEG * 512)


class Interrupt(Exception):
    pass


def interrupt_after(calls: int) -> Callable[[int, int, int, int], None]:
    seen = [0]

    def progress(done: int, total: int, seg: int, segs: int) -> None:
        seen[0] += 1
        if seen[0] >= calls and seg == 1:
            raise Interrupt

    return progress


def test_interrupted_move_continues(dm: DeviceMapper, volume: dict[str, str]) -> None:
    nblocks = (2 * SEG + 8192) * 512 // BLOCK
    with Load(dm, "vol", nblocks) as load:
        with pytest.raises(Interrupt):
            move(dm, "vol", volume["a"], volume["b"], region_size=64,
                 progress=interrupt_after(1))
        kinds = [s.target_type for s in dm.table("vol")]
        assert kinds == ["linear", "linear", "mirror"]  # segment 0 done, segment 2 copying
        plan = load_state(dm, "vol")
        assert plan.source == volume["a"] and plan.dest == volume["b"]
        with pytest.raises(MoveError):  # one move at a time
            move(dm, "vol", volume["a"], volume["b"])
        continue_move(dm, "vol")
    load.verify()
    assert table_lines(dm, "vol") == final_table(volume)


def test_interrupted_move_aborts(dm: DeviceMapper, volume: dict[str, str]) -> None:
    original = table_lines(dm, "vol")
    nblocks = (2 * SEG + 8192) * 512 // BLOCK
    with Load(dm, "vol", nblocks) as load:
        with pytest.raises(Interrupt):
            move(dm, "vol", volume["a"], volume["b"], region_size=64,
                 progress=interrupt_after(1))
        # Segment 0 already moved (copied back), segment 2 mid-copy (dropped at once).
        abort_move(dm, "vol")
    load.verify()
    assert table_lines(dm, "vol") == original
    with pytest.raises(MoveError):
        abort_move(dm, "vol")  # nothing left to abort


def test_abort_without_state_file_reads_the_table(dm: DeviceMapper,
                                                  volume: dict[str, str]) -> None:
    original = table_lines(dm, "vol")
    with pytest.raises(Interrupt):
        move(dm, "vol", volume["a"], volume["b"], region_size=64, progress=interrupt_after(1))
    os.unlink(state_path("vol"))  # the mirror segment in the table is all that is left
    abort_move(dm, "vol")
    # Only the segment still mirroring goes back; segment 0 had already moved.
    assert table_lines(dm, "vol") == [final_table(volume)[0]] + original[1:]


def test_pack_onto_an_offset(dm: DeviceMapper, volume: dict[str, str]) -> None:
    move(dm, "vol", volume["a"], volume["b"], dest_offset=2048)
    assert table_lines(dm, "vol") == [
        f"0 {SEG} linear {volume['b']} 2048", f"{SEG} 8192 linear {volume['c']} 0",
        f"{SEG + 8192} {SEG} linear {volume['b']} {2048 + SEG}"]
    assert read_at(volume["b"], 2048 * 512, SEG * 512) == read_at(volume["a"], 0, SEG * 512)


def test_plan_errors(dm: DeviceMapper, volume: dict[str, str],
                     mkfile: Callable[..., str]) -> None:
    small = mkfile("small.img", MiB)
    with pytest.raises(MoveError, match="no segment"):
        move(dm, "vol", volume["b"], volume["a"])
    with pytest.raises(MoveError, match="too small"):
        move(dm, "vol", volume["a"], small)
    with pytest.raises(MoveError, match="overlap"):
        move(dm, "vol", volume["a"], volume["c"], dest_offset=0)
    with pytest.raises(MoveError, match="same device"):
        move(dm, "vol", volume["a"], volume["a"])
    assert not os.path.exists(state_path("vol"))


def test_one_mover_at_a_time(dm: DeviceMapper, volume: dict[str, str]) -> None:
    from devmapper.move import move_lock

    with move_lock("vol"), pytest.raises(MoveError, match="another devmapper move"):
        move(dm, "vol", volume["a"], volume["b"])
    with move_lock("vol"), pytest.raises(MoveError, match="another devmapper move"):
        abort_move(dm, "vol")
    move(dm, "vol", volume["a"], volume["b"])  # the lock went with its holder
    assert table_lines(dm, "vol") == final_table(volume)


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from devmapper.cli.tool import main

    with pytest.raises(SystemExit) as info:
        main(["move", "vol"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["move", "vol", "--from", "a", "--to", "b", "--region-size", "3"])
    assert "power of two" in capsys.readouterr().err
