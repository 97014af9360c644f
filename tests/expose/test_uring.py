"""FUSE over io_uring: the requests really go through the rings, the bytes are right, and a
suspended engine device holds only its own requests (the ring thread never waits for it)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from devmapper.expose import Exposer
from devmapper.library import DeviceMapper

from .helpers import engine_library, fuse_uring_param, make_file, run

MiB = 1 << 20


@pytest.fixture
def uring_dm(
    fuse_uring_enabled: None, make_exposer: Callable[..., Exposer]
) -> Iterator[tuple[Exposer, DeviceMapper]]:
    ex = make_exposer("uring")
    with engine_library(ex) as lib:
        yield ex, lib


def fio_verify(node: str, rw: str, bs: str, size: str, depth: int = 16) -> None:
    run("fio", "--name=v", f"--filename={node}", f"--rw={rw}", f"--bs={bs}", f"--size={size}",
        f"--iodepth={depth}", "--ioengine=libaio", "--direct=1", "--verify=crc32c",
        "--verify_fatal=1", "--do_verify=1", "--verify_state_save=0", timeout=120)


def test_requests_come_through_the_rings(uring_dm, dirs) -> None:
    ex, lib = uring_dm
    img = make_file(os.path.join(dirs["base"], "u.img"), 64 * MiB)
    lib.create("u", f"0 {64 * MiB // 512} linear {img} 0")
    node = ex.node("u")
    before = ex.server.answered
    # Small and large, reads and writes: large ones are shared by the two ring threads.
    fio_verify(node, "randwrite", "4k", "16M")
    fio_verify(node, "write", "1M", "64M", depth=4)
    assert ex.server.uring
    assert ex.server.answered - before > 4096 + 128  # not on /dev/fuse
    with open(img, "rb") as f:  # the bytes are in the backing file, as written
        head = f.read(MiB)
    with open(node, "rb", buffering=0) as f:
        assert f.read(MiB) == head


def test_suspended_engine_device_holds_only_its_own(uring_dm, dirs) -> None:
    ex, lib = uring_dm
    held_img = make_file(os.path.join(dirs["base"], "held.img"), 8 * MiB)
    free_img = make_file(os.path.join(dirs["base"], "free.img"), 8 * MiB)
    lib.create("held", f"0 {8 * MiB // 512} linear {held_img} 0")
    lib.create("free", f"0 {8 * MiB // 512} linear {free_img} 0")
    lib.suspend("held")
    readers = [subprocess.Popen(["dd", f"if={ex.node('held')}", "of=/dev/null", "bs=64k",
                                 "count=16", "iflag=direct", f"skip={i}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(3)]
    try:
        time.sleep(0.5)
        assert all(p.poll() is None for p in readers)
        assert ex.server.threads >= 1 + 3  # their requests wait in waiter threads
        # Meanwhile the other device is served through the rings.
        fio_verify(ex.node("free"), "randrw", "4k", "4M")
        assert all(p.poll() is None for p in readers)
    finally:
        lib.resume("held")
        codes = [p.wait(30) for p in readers]
    assert codes == [0, 0, 0]


def test_without_enable_uring_the_server_stays_on_dev_fuse(make_exposer, file_backend) -> None:
    with fuse_uring_param("N"):
        ex = make_exposer("uring")
        ex.attach("plain", file_backend("plain", 4 * MiB))
        run("dd", "if=/dev/urandom", f"of={ex.node('plain')}", "bs=64k", "count=16",
            "oflag=direct")
        run("dd", f"if={ex.node('plain')}", "of=/dev/null", "bs=4k", "iflag=direct")
        assert not ex.server.uring and ex.server.answered == 0


def test_without_io_uring_the_server_stays_on_dev_fuse(make_exposer, file_backend) -> None:
    # io_uring refused to this process (kernel.io_uring_disabled, or a seccomp profile):
    # no ring registers an entry, and the requests stay on /dev/fuse.
    sysctl = "/proc/sys/kernel/io_uring_disabled"
    if not os.path.exists(sysctl):
        pytest.skip("this kernel has no kernel.io_uring_disabled")
    with open(sysctl) as f:
        before = f.read().strip()
    with fuse_uring_param("Y"):
        with open(sysctl, "w") as f:
            f.write("2")
        try:
            ex = make_exposer("uring")
            ex.attach("noring", file_backend("noring", 4 * MiB))
            run("dd", f"if={ex.node('noring')}", "of=/dev/null", "bs=4k", "iflag=direct",
                timeout=30)
            assert not ex.server.uring and ex.server.answered == 0
        finally:
            with open(sysctl, "w") as f:
                f.write(before)
