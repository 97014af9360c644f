"""Large READs answered by splice (fuse_raw._Splicer): the bytes must be the device's, whatever
path a request took: spliced, or read() after a fallback (not one direct extent, a failed or
short splice, too large for the pipe). Real FUSE + loop, in-process engine or file backends."""

from __future__ import annotations

import mmap
import os
import random
import threading
from collections.abc import Callable, Iterator

import pytest

from devmapper.expose import Exposer
from devmapper.expose.filebackend import FileBackend
from devmapper.library import DeviceMapper
from tests.conftest import read_file as pread  # reads of the FUSE file: any byte offset

from .helpers import engine_library, run


@pytest.fixture
def exposer(make_exposer: Callable[..., Exposer]) -> Exposer:
    """Splicing is the /dev/fuse server's (over io_uring a reply is always copied)."""
    return make_exposer("raw")

pytestmark = pytest.mark.root

KiB, MiB = 1 << 10, 1 << 20


class SpliceFile:
    """A file backend offering direct() as MappedDevice does: fn(fd, position) for bytes
    inside `extent`, None otherwise; what fn answered is kept in `answers`. (Not a
    FileBackend subclass: FileBackend's `direct` is its O_DIRECT flag.)"""

    def __init__(self, path: str, **kw: bool) -> None:
        self.file = FileBackend(path, **kw)
        self.path = path
        self.read_only = self.file.read_only
        self.extent = (0, 1 << 62)
        self.src = self.file.fd  # the descriptor handed to fn
        self.answers: list[object] = []

    @property
    def size(self) -> int:
        return self.file.size

    def direct(self, offset: int, size: int, fn: Callable[[int, int], object]) -> object:
        lo, hi = self.extent
        if offset < lo or offset + size > hi:
            return None
        answer = fn(self.src, offset)
        self.answers.append(answer)
        return answer

    def read(self, offset: int, buf: memoryview) -> None:
        self.file.read(offset, buf)

    def write(self, offset: int, data: memoryview, fua: bool = False) -> None:
        self.file.write(offset, data, fua)

    def flush(self) -> None:
        self.file.flush()

    def discard(self, offset: int, length: int) -> None:
        self.file.discard(offset, length)

    def opened(self) -> None:
        self.file.opened()

    def closed(self) -> None:
        self.file.closed()

    def close(self) -> None:
        self.file.close()


def dread(path: str, offset: int, size: int) -> bytes:
    """An O_DIRECT read into a page-aligned buffer (as the loop device's pages are)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, size)
    try:
        n = os.preadv(fd, [buf], offset)
        return buf[:n]
    finally:
        buf.close()
        os.close(fd)


def answered(ex: Exposer, path: str, offset: int, size: int) -> bytes:
    """dread(), failing instead of hanging when the server never answers (a reply that went
    to the wrong request): the FUSE connection is aborted, which ends the read."""
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(dread(path, offset, size)), daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():
        run("umount", "-f", ex.mount_dir, check=False)  # MNT_FORCE aborts the connection
        t.join(10)
        pytest.fail(f"read {offset}+{size} was never answered")
    return got[0]


def dwrite(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, len(data))
    try:
        buf[:] = data
        assert os.pwritev(fd, [buf], offset) == len(data)
    finally:
        buf.close()
        os.close(fd)


def fill(path: str, data: bytes, at: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def pipes() -> set[str]:
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("pipe:"):
            out.add(target)
    return out


# ---- a file backend with direct(): every fallback of the splice path -----------------------

def test_spliced_reads_are_the_files_bytes(exposer: Exposer, file_backend) -> None:
    b = file_backend("sp", 8 * MiB, SpliceFile)
    data = os.urandom(8 * MiB)
    fill(b.path, data)
    exposer.attach("sp", b)
    node, path = exposer.node("sp"), exposer.path("sp")
    for off, size in [(0, MiB), (3 * 512, 512 * KiB), (5 * MiB + 4096, 2 * MiB),
                      (8 * MiB - 768 * KiB, 768 * KiB), (8 * MiB - 512 * KiB - 512, 512 * KiB)]:
        assert answered(exposer, node, off, size) == data[off:off + size], (off, size)
    assert b.answers and all(a is True for a in b.answers)
    # The FUSE file at odd byte offsets and sizes, and one 1 MiB direct read (an aligned
    # buffer), which FUSE sends as READs of at most max_read (512 KiB): each is spliced
    # (a whole 1 MiB READ would not fit the pipe beside its header, and be one copy by one
    # worker instead of two side by side).
    for off, size in [(1, 300_001), (4095, 200 * KiB), (7 * MiB + 17, MiB - 17)]:
        assert pread(path, off, size) == data[off:off + size], (off, size)
    before = len(b.answers)
    assert dread(path, MiB, MiB) == data[MiB:2 * MiB]
    assert len(b.answers) - before >= 2 and all(a is True for a in b.answers)
    # Small reads never ask for direct().
    before = len(b.answers)
    for off in range(0, 64 * KiB, 4 * KiB):
        assert dread(node, off, 4 * KiB) == data[off:off + 4 * KiB]
    assert len(b.answers) == before


def test_splice_fallbacks_leave_no_trace(exposer: Exposer, file_backend) -> None:
    b = file_backend("fb", 8 * MiB, SpliceFile)
    data = os.urandom(8 * MiB)
    fill(b.path, data)
    exposer.attach("fb", b)
    node = exposer.node("fb")

    def check(off: int, size: int) -> None:
        assert answered(exposer, node, off, size) == data[off:off + size], (off, size)

    # Not one extent: direct() answers None and read() serves the request.
    b.extent = (0, 4 * MiB)
    check(4 * MiB - 256 * KiB, 512 * KiB)
    check(6 * MiB, 512 * KiB)
    assert b.answers == []
    b.extent = (0, 1 << 62)
    # A descriptor splice cannot read from fails at once (EBADF): read() again.
    wronly = os.open(b.path, os.O_WRONLY)
    try:
        b.src = wronly
        check(MiB + 512, 512 * KiB)
    finally:
        b.src = b.file.fd
        os.close(wronly)
    assert b.answers == [False]
    check(MiB + 512, 512 * KiB)  # the next one is spliced, from an empty pipe
    assert b.answers == [False, True]
    # The file shrinks under the device: the splice stops short at EOF with the header and
    # part of the data in the pipe; read() answers (zeroes past EOF, as FileBackend reads).
    os.truncate(b.path, 2 * MiB + 100 * KiB)
    got = answered(exposer, node, 2 * MiB, 512 * KiB)
    assert got == data[2 * MiB:2 * MiB + 100 * KiB] + bytes(412 * KiB)
    assert b.answers[-1] is False
    check(MiB, 512 * KiB)  # nothing of the failed request is left in the pipe
    check(0, 512 * KiB + 512)
    assert b.answers[-2:] == [True, True]


# ---- the engine: MappedDevice.direct under a two-target table -------------------------------

@pytest.fixture
def dm(make_exposer: Callable[..., Exposer]) -> Iterator[tuple[Exposer, DeviceMapper]]:
    ex = make_exposer()
    with engine_library(ex) as lib:
        yield ex, lib


def two_targets(base: str, lib: DeviceMapper, name: str, content: bytes) -> str:
    """A device of len(content) bytes over two files: the first half at offset 0 of a.img,
    the second at 4 MiB into b.img (so the halves are two extents)."""
    half = len(content) // 2
    a, b = os.path.join(base, f"{name}-a.img"), os.path.join(base, f"{name}-b.img")
    with open(a, "wb") as f:
        f.write(content[:half])
    with open(b, "wb") as f:
        f.truncate(4 * MiB + half + MiB)
    fill(b, content[half:], 4 * MiB)
    lib.create(name, f"0 {half // 512} linear {a} 0\n"
                     f"{half // 512} {half // 512} linear {b} {4 * MiB // 512}")
    return name


def test_engine_reads_across_two_extents(dm, dirs) -> None:
    ex, lib = dm
    data = os.urandom(16 * MiB)
    had = pipes()
    two_targets(dirs["base"], lib, "two", data)
    node, path = ex.node("two"), ex.path("two")
    half = 8 * MiB
    cases = [(0, MiB), (512, 512 * KiB), (3 * MiB + 3584, 2 * MiB),  # first extent
             (half - 512 * KiB, MiB), (half - 512, 512 * KiB + 1024),  # spanning: read()
             (half, MiB), (half + 7 * 512, 640 * KiB),  # second extent
             (16 * MiB - MiB, MiB), (16 * MiB - 512 * KiB - 1536, 512 * KiB + 1536)]  # the end
    for off, size in cases:
        assert dread(node, off, size) == data[off:off + size], (off, size)
    for off, size in [(half - 99_999, 200_000), (13, 700_000), (16 * MiB - 300_001, 300_001)]:
        assert pread(path, off, size) == data[off:off + size], (off, size)
    assert pread(path, 16 * MiB - 4096, 512 * KiB) == data[-4096:]  # past the end: short
    assert pipes() - had, "no worker made a pipe: nothing was spliced"


def _stamped(base: bytes, off: int, size: int, version: int) -> bytes:
    """Bytes off..off+size of the device at `version`: each 8-byte word is its index (low 5
    bytes, from `base`) and the version (high 3 bytes)."""
    out = bytearray(base[off:off + size])
    for k, byte in enumerate(version.to_bytes(3, "little")):
        out[5 + k::8] = bytes((byte,)) * (size // 8)
    return bytes(out)


def test_engine_reads_race_writes_and_suspend(dm, dirs) -> None:
    """Readers check that every word they get is the word of its place (some version of it:
    a read overlapping a write may see either), while a writer rewrites blocks and the device
    is suspended and resumed; at the end the device holds exactly what was written."""
    ex, lib = dm
    size = 16 * MiB
    index = (0x5A5A000000 + i for i in range(size // 8))  # low 5 bytes: never all zero
    base = b"".join(i.to_bytes(8, "little") for i in index)
    two_targets(dirs["base"], lib, "race", base)
    node = ex.node("race")
    model = bytearray(base)
    stop = threading.Event()
    errors: list[str] = []
    counts = {"reads": 0, "writes": 0, "cycles": 0}

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        while not stop.is_set() and not errors:
            n = rnd.choice((128 * KiB, 512 * KiB, MiB, 768 * KiB + 512))
            off = rnd.randrange(0, size - n + 1, 512)
            got = dread(node, off, n)
            for k in range(5):
                if got[k::8] != base[off + k:off + n:8]:
                    errors.append(f"read {off}+{n}: words out of place")
            counts["reads"] += 1

    def writer() -> None:
        rnd = random.Random(7)
        version = 0
        while not stop.is_set() and not errors:
            version += 1
            n = rnd.choice((64 * KiB, 512 * KiB, MiB))
            off = rnd.randrange(0, size - n + 1, 4096)
            block = _stamped(base, off, n, version)
            dwrite(node, off, block)
            model[off:off + n] = block
            counts["writes"] += 1

    def flapper() -> None:
        while not stop.is_set():
            lib.suspend("race", noflush=counts["cycles"] % 2 == 1)
            stop.wait(0.03)
            lib.resume("race")
            counts["cycles"] += 1
            stop.wait(0.03)

    threads = [threading.Thread(target=f, args=a) for f, a in
               [(reader, (1,)), (reader, (2,)), (writer, ()), (flapper, ())]]
    for t in threads:
        t.start()
    stop.wait(4)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert counts["reads"] > 20 and counts["writes"] > 5 and counts["cycles"] > 5, counts
    for off in range(0, size, MiB):
        assert dread(node, off, MiB) == model[off:off + MiB], off
