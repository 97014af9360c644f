"""Small reads through devmapperd, which the /dev/fuse server answers with one writev straight
from a read-only mapping of the backing file (MappedDevice.send): they follow table swaps and
writes, and a backing file shrunk under the mapping gives EIO, as the read() path does."""

from __future__ import annotations

import mmap
import os
import random

from blockdevlib import Served, run

MiB = 1 << 20


def _fill(path: str, seed: int) -> bytes:
    data = random.Random(seed).randbytes(8 * MiB)
    with open(path, "r+b") as f:
        f.write(data)
    return data


def _read4k(node: str, offset: int) -> bytes:
    fd = os.open(node, os.O_RDONLY | os.O_DIRECT)
    try:
        with mmap.mmap(-1, 4096) as block:  # page-aligned, as O_DIRECT wants
            assert os.preadv(fd, [block], offset) == 4096
            return bytes(block)
    finally:
        os.close(fd)


def test_small_reads_follow_writes_and_table_swaps(served: Served) -> None:
    a, b = served.file("a.img", 8 * MiB), served.file("b.img", 8 * MiB)
    da, db = _fill(a, 1), _fill(b, 2)
    offsets = [random.Random(3).randrange(0, 8 * MiB // 4096) * 4096 for _ in range(64)]
    with served.dm() as dm:
        dm.create("sm", f"0 {8 * MiB // 512} linear {a} 0")
        node = served.node("sm")
        for off in offsets:
            assert _read4k(node, off) == da[off:off + 4096]
        # A write through the device, then reads of it: the mapping shares the page cache.
        run("dd", "if=/dev/urandom", f"of={node}", "bs=4k", "count=16", "seek=100",
            "oflag=direct", "status=none")
        with open(a, "rb") as f:
            f.seek(100 * 4096)
            written = f.read(16 * 4096)
        for i in range(16):
            assert _read4k(node, (100 + i) * 4096) == written[i * 4096:(i + 1) * 4096]
        # Another file under the same device: reads come from the new table's mapping.
        dm.load("sm", f"0 {8 * MiB // 512} linear {b} 0")
        dm.resume("sm")
        for off in offsets:
            assert _read4k(node, off) == db[off:off + 4096]


def test_small_read_past_a_shrunk_backing_file_is_eio(served: Served) -> None:
    a = served.file("a.img", 8 * MiB)
    data = _fill(a, 4)
    with served.dm() as dm:
        dm.create("shr", f"0 {8 * MiB // 512} linear {a} 0")
        node = served.node("shr")
        assert _read4k(node, 6 * MiB) == data[6 * MiB:6 * MiB + 4096]  # mapped from here on
        os.truncate(a, 4 * MiB)
        r = run("dd", f"if={node}", "of=/dev/null", "bs=4k", "count=1", f"skip={6 * MiB // 4096}",
                "iflag=direct", check=False, timeout=30)  # an unanswered READ would hang
        assert r.returncode != 0 and "Input/output error" in r.stderr
        # The server goes on: bytes still in the file read as before.
        assert _read4k(node, MiB) == data[MiB:MiB + 4096]
