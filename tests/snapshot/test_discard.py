"""Discards: only with discard_zeroes_cow, and passed to the origin with passdown."""

from __future__ import annotations

import errno

import pytest
from snaphelpers import Env, lvm_layout, status_of

SECTORS = 2048
CHUNK = 4096


def test_no_discard_without_the_feature(env: Env) -> None:
    lvm_layout(env.dm, env.origin, env.cow, SECTORS)
    for name in ("snap", "base"):
        with env.dm.open(name) as dev, pytest.raises(OSError) as info:
            dev.discard(0, CHUNK)
        assert info.value.errno == errno.EOPNOTSUPP


def test_discard_zeroes_cow(env: Env) -> None:
    lvm_layout(env.dm, env.origin, env.cow, SECTORS, features="1 discard_zeroes_cow")
    with env.dm.open("snap") as snap:
        snap.write(0, memoryview(b"a" * (2 * CHUNK)))  # chunks 0 and 1 remapped
        snap.discard(0, CHUNK)  # a whole remapped chunk: zeroed in the COW
        snap.discard(CHUNK, 1024)  # part of one: the COW range is discarded
        snap.discard(4 * CHUNK, CHUNK)  # not remapped: nothing happens
        assert snap.read(0, CHUNK) == bytes(CHUNK)
        assert snap.read(CHUNK, CHUNK) == bytes(1024) + b"a" * (CHUNK - 1024)
        assert snap.read(4 * CHUNK, CHUNK) == env.origin_data[4 * CHUNK:5 * CHUNK]
    assert status_of(env.dm, "snap") == "32/2048 16"
    with env.dm.open("base") as base:
        assert base.read(0, 8 * CHUNK) == env.origin_data[:8 * CHUNK]


def test_discard_passdown_origin(env: Env) -> None:
    lvm_layout(env.dm, env.origin, env.cow, SECTORS,
               features="2 discard_zeroes_cow discard_passdown_origin")
    with env.dm.open("snap") as snap:
        snap.discard(2 * CHUNK, CHUNK)
    # Straight to the origin's device, bypassing copy-out (the feature's point).
    assert status_of(env.dm, "snap") == "16/2048 16"
    with env.dm.open("base") as base:
        assert base.read(2 * CHUNK, CHUNK) == bytes(CHUNK)


def test_merge_ignores_discards(env: Env) -> None:
    real = lvm_layout(env.dm, env.origin, env.cow, SECTORS, features="1 discard_zeroes_cow")
    env.dm.suspend("snap")
    env.dm.suspend("base")
    env.dm.load("base", f"0 {SECTORS} snapshot-merge {real} {env.cow} P 8 "
                        "1 discard_zeroes_cow")
    env.dm.resume("base")
    with env.dm.open("base") as base:
        base.discard(0, CHUNK)
        assert base.read(0, CHUNK) == env.origin_data[:CHUNK]
