"""I/O in flight across suspend / load / resume: nothing lost, nothing torn."""

from __future__ import annotations

import hashlib
import random
import struct
import threading
from collections.abc import Callable

from devmapper.library import DeviceMapper

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
