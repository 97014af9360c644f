"""A snapshot target that does not start at sector 0 maps by device sector, as the kernel's
snapshot_map does (it never subtracts the target's begin): its reads and copies use the
origin's bytes at the same device offset."""

from __future__ import annotations

from snaphelpers import ORIGIN_SIZE, Env, dev_of

SECTORS = ORIGIN_SIZE // 512
HALF = SECTORS // 2


def test_snapshot_after_another_target(env: Env) -> None:
    env.dm.create("base-real", f"0 {SECTORS} linear {env.origin} 0")
    real = dev_of(env.dm, "base-real")
    env.dm.create("base", f"0 {SECTORS} snapshot-origin {real}")
    env.dm.suspend("base")
    env.dm.create("snap", f"0 {HALF} zero\n{HALF} {HALF} snapshot {real} {env.cow} P 8")
    env.dm.resume("base")
    at = HALF * 512 + 3 * 4096
    old = env.origin_data[at:at + 8192]
    with env.dm.open("snap") as snap, env.dm.open("base") as base:
        assert snap.read(at, 8192) == old  # unchanged chunks: the origin's, same offset
        base.write(at, memoryview(b"n" * 8192))  # first writes: copied out, then changed
        assert snap.read(at, 8192) == old
        assert snap.read(at + 4096 - 512, 1024) == old[4096 - 512:4096 + 512]  # spanning
        snap.write(at + 4096, memoryview(b"s" * 512))
        assert snap.read(at, 8192) == old[:4096] + b"s" * 512 + old[4096 + 512:]
        assert base.read(at, 8192) == b"n" * 8192
        assert snap.read(0, 512) == bytes(512)  # the zero target
