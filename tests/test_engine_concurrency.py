"""I/O in flight across suspend / load / resume: nothing lost, nothing torn."""

from __future__ import annotations

import hashlib
import random
import struct
import threading
from collections.abc import Callable

import pytest

from devmapper import targets
from devmapper.library import DeviceMapper
from devmapper.targets.base import Requeue
from devmapper.targets.zero import ZeroTarget

BLOCK = 4096
BLOCKS = 256


def block_payload(block: int, gen: int) -> bytes:
    head = struct.pack("=QQ", block, gen)
    body = hashlib.sha256(head).digest() * ((BLOCK - 48) // 32 + 1)
    body = body[:BLOCK - 48]
    return head + body + hashlib.sha256(head + body).digest()


def check_block(data: bytes) -> tuple[int, int]:
    assert hashlib.sha256(data[:-32]).digest() == data[-32:], "torn or corrupt block"
    block, gen = struct.unpack_from("=QQ", data)
    return block, gen


def test_writers_survive_table_swaps(dm: DeviceMapper, backing: Callable[..., str]) -> None:
    f = backing(BLOCKS * BLOCK * 2)
    sectors = BLOCKS * BLOCK // 512
    # Tables with the same data layout but different target splits, so different I/O maps:
    # one extent; four contiguous targets (merged); eight alternating between the file
    # (direct) and a device stacked on it (through its targets); striped (no direct path).
    low = dm.create("low", f"0 {sectors} linear {f} 0")
    part = sectors // 8
    tables = [
        f"0 {sectors} linear {f} 0",
        "\n".join(f"{i * sectors // 4} {sectors // 4} linear {f} {i * sectors // 4}"
                  for i in range(4)),
        "\n".join(f"{i * part} {part} linear {f if i % 2 else f'{low.major}:{low.minor}'} "
                  f"{i * part}" for i in range(8)),
        f"0 {sectors} striped 1 8 {f} 0",
    ]
    dm.create("c", tables[0])
    acked: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rnd = random.Random(seed)
        gen = 0
        try:
            with dm.open("c") as dev:
                while not stop.is_set():
                    # Each writer owns the blocks congruent to its seed: no write races.
                    block = rnd.randrange(seed, BLOCKS, 4)
                    gen += 1
                    dev.write(block * BLOCK, memoryview(block_payload(block, gen)))
                    with lock:
                        acked[block] = gen
                    back = bytearray(BLOCK)
                    dev.read_into(block * BLOCK, memoryview(back))
                    assert check_block(bytes(back)) == (block, gen)
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    swaps = 0
    try:
        for i in range(60):
            table = tables[(i + 1) % len(tables)]
            if i % 2:
                dm.suspend("c", noflush=bool(i % 4 == 1))
                dm.load("c", table)
                dm.resume("c")
            else:
                dm.load("c", table)  # resume suspends, swaps and resumes in one go
                dm.resume("c")
            swaps += 1
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert swaps == 60 and acked
    with dm.open("c") as dev:
        for block, gen in acked.items():
            data = bytearray(BLOCK)
            dev.read_into(block * BLOCK, memoryview(data))
            assert check_block(bytes(data)) == (block, gen)


def test_suspend_blocks_new_io_until_resume(dm: DeviceMapper,
                                            backing: Callable[..., str]) -> None:
    f = backing(1 << 20)
    dm.create("s", f"0 2048 linear {f} 0")
    dm.suspend("s")
    done = threading.Event()

    def reader() -> None:
        with dm.open("s") as dev:
            dev.read(0, 512)
        done.set()

    t = threading.Thread(target=reader)
    t.start()
    assert not done.wait(0.3)  # held at the gate
    info = dm.info("s")  # control commands keep answering while I/O waits
    assert info.suspended
    dm.resume("s")
    assert done.wait(5)
    t.join()


# ---------------------------------------------------------------- requeue (DM_MAPIO_REQUEUE)

class HoldingTarget(ZeroTarget):
    """Registered as "holding" for one test: I/O waits until a suspend; a noflush suspend
    sends it back (Requeue), a flushing one fails it, as dm-raid1's hold_bio does."""

    name = "holding"
    gate = threading.Event()

    def presuspend(self, noflush: bool) -> None:
        self.noflush = noflush
        self.gate.set()

    def _hold(self) -> None:
        self.gate.wait(10)
        if not self.noflush:
            raise OSError(5, "held I/O failed by a flushing suspend")
        raise Requeue()

    def read(self, offset: int, buf: memoryview) -> None:
        self._hold()

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        self._hold()

    def flush(self) -> None:
        self._hold()

    def discard(self, offset: int, length: int) -> None:
        self._hold()

    def takes_discards(self) -> bool:
        return True


@pytest.mark.parametrize("op", ["read", "write", "flush", "discard"])
def test_requeue_reissues_to_the_next_table(dm: DeviceMapper, backing: Callable[..., str],
                                            monkeypatch: pytest.MonkeyPatch, op: str) -> None:
    monkeypatch.setitem(targets._REGISTRY, "holding", f"{__name__}:HoldingTarget")
    monkeypatch.setattr(targets, "_loaded", dict(targets._loaded))
    HoldingTarget.gate.clear()
    f = backing(BLOCK * 8)
    with open(f, "r+b") as fh:
        fh.write(b"N" * BLOCK)
    dm.create("rq", "0 64 holding")
    dev = dm.open("rq")
    result: list[object] = []
    calls = {
        "read": lambda: dev.read(0, BLOCK),
        "write": lambda: dev.write(0, memoryview(b"W" * BLOCK)),
        "flush": dev.flush,
        "discard": lambda: dev.discard(0, BLOCK),
    }
    t = threading.Thread(target=lambda: result.append(calls[op]()))
    t.start()
    dm.suspend("rq", noflush=True)  # the held request leaves the target: suspend completes
    assert t.is_alive()  # ... but not the caller: it waits for the resume
    dm.load("rq", f"0 64 linear {f} 0")
    dm.resume("rq")
    t.join(10)
    assert not t.is_alive()
    with open(f, "rb") as fh:
        first = fh.read(BLOCK)
    if op == "read":
        assert result == [b"N" * BLOCK]  # served by the new table
    elif op == "write":
        assert first == b"W" * BLOCK
    else:
        assert result == [None]
    dev.close()


def test_requeue_outside_noflush_suspend_fails(dm: DeviceMapper,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(targets._REGISTRY, "holding", f"{__name__}:HoldingTarget")
    monkeypatch.setattr(targets, "_loaded", dict(targets._loaded))
    HoldingTarget.gate.clear()
    dm.create("rq", "0 64 holding")
    dev = dm.open("rq")
    errors: list[int] = []

    def write() -> None:
        try:
            dev.write(0, memoryview(b"W" * BLOCK))
        except OSError as e:
            errors.append(e.errno or 0)

    t = threading.Thread(target=write)
    t.start()
    dm.suspend("rq")  # flushing: the held write fails, nothing is requeued
    t.join(10)
    assert errors == [5]
    dm.resume("rq")
    dev.close()
