"""The victim of test_crash.py: an engine doing heavy origin and snapshot writes.

`python crash_child.py DIR FIRST_SEQ SEED` loads (or creates) LVM's layout over DIR's
origin.img and cow.img in an in-process engine, then several threads write whole 4 KiB
blocks to the origin and to the snapshot, with flushes, until killed. A journal (append-
only, one atomic write per line) records `B seq target block` before each write, `A seq`
once it returned, and `FS n` / `FE n` around each flush. Blocks are self-describing (see
block_bytes) so the parent can tell which write a block holds, or that it is garbage.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import struct
import sys
import threading

BLOCK = 4096
BLOCKS = 256  # a 1 MiB origin
CHUNK = 16  # sectors: two blocks per chunk, so snapshot writes copy half a chunk first
THREADS = 4
HEAD = struct.Struct("<4sBIQ")  # magic, target, block, seq


def block_bytes(target: str, block: int, seq: int) -> bytes:
    """A block that names its writer: header, payload from the header, then a digest."""
    head = HEAD.pack(b"SNPT", ord(target), block, seq)
    body = hashlib.shake_256(head).digest(BLOCK - HEAD.size - 16)
    return head + body + hashlib.blake2b(head + body, digest_size=16).digest()


def parse_block(data: bytes) -> tuple[str, int, int] | None:
    """(target, block, seq) of a well-formed block, None for anything else."""
    head, body, digest = data[:HEAD.size], data[HEAD.size:-16], data[-16:]
    if hashlib.blake2b(head + body, digest_size=16).digest() != digest:
        return None
    magic, target, block, seq = HEAD.unpack(head)
    if magic != b"SNPT":
        return None
    return chr(target), block, seq


def main(argv: list[str]) -> None:
    from devmapper.library import DeviceMapper

    d, first_seq, seed = argv[0], int(argv[1]), int(argv[2])
    origin, cow = os.path.join(d, "origin.img"), os.path.join(d, "cow.img")
    jfd = os.open(os.path.join(d, "journal"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def journal(line: str) -> None:
        os.write(jfd, (line + "\n").encode())

    dm = DeviceMapper.in_process()
    sectors = BLOCKS * BLOCK // 512
    dm.create("base-real", f"0 {sectors} linear {origin} 0")
    info = dm.info("base-real")
    real = f"{info.major}:{info.minor}"
    dm.create("base", f"0 {sectors} snapshot-origin {real}")
    dm.suspend("base")
    # Chunk size 0: a new COW gets the table's default... so give it on first use only.
    with open(cow, "rb") as f:
        fresh = f.read(4) == b"\0\0\0\0"
    dm.create("snap", f"0 {sectors} snapshot {real} {cow} P {CHUNK if fresh else 0}")
    dm.resume("base")
    base, snap = dm.open("base"), dm.open("snap")
    seqs = itertools.count(first_seq)
    seq_lock = threading.Lock()
    journal("READY")

    def worker(t: int) -> None:
        rng = random.Random(seed * 100 + t)
        mine = list(range(t, BLOCKS, THREADS))
        flushes = itertools.count()
        while True:
            block = rng.choice(mine)
            target = rng.choice("OOS")
            with seq_lock:
                seq = next(seqs)
            journal(f"B {seq} {target} {block}")
            dev = base if target == "O" else snap
            dev.write(block * BLOCK, memoryview(block_bytes(target, block, seq)))
            journal(f"A {seq}")
            if t == 0 and rng.random() < 0.1:
                n = f"{seed}.{next(flushes)}"
                journal(f"FS {n}")
                base.flush()
                snap.flush()
                journal(f"FE {n}")

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


if __name__ == "__main__":
    main(sys.argv[1:])
