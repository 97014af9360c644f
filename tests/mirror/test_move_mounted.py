"""The engine's move under a mounted filesystem: the device is a real block device (FUSE file
+ loop, the daemon's exposure), ext4 is mounted on it, fio writes with verification state
while the data moves; afterwards fio verifies every block and fsck finds nothing."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devmapper.control.engine import EngineTransport
from devmapper.engine.core import Engine
from devmapper.library import DeviceMapper
from devmapper.move import MoveError, abort_move, move, temp_name

pytestmark = pytest.mark.root

MiB = 1 << 20
FIO = ["fio", "--name=load", "--rw=randwrite", "--bs=4k", "--size=16M", "--numjobs=2",
       "--verify=crc32c", "--ioengine=psync"]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for dev in ("/dev/fuse", "/dev/loop-control"):
        if not os.path.exists(dev):
            return f"needs {dev}"
    for tool in ("fio", "mkfs.ext4", "e2fsck"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            return f"needs {tool}"
    return None


@pytest.fixture
def exposed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[DeviceMapper, object, Path]]:
    why = _why_not()
    if why:
        pytest.skip(why)
    from devmapper.expose import EngineExposure, Exposer

    monkeypatch.setenv("DEVMAPPER_MOVE_DIR", str(tmp_path / "moves"))
    ex = Exposer(str(tmp_path / "fuse"), str(tmp_path / "dev"))
    ex.start()
    dm = DeviceMapper(EngineTransport(Engine(exposure=EngineExposure(ex))))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        yield dm, ex, mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        for dev in dm.list():
            try:
                dm.remove(dev.name)
            except OSError:
                pass
        ex.close()


class Stop(Exception):
    pass


def stop_early(done: int, total: int, seg: int, segs: int) -> None:
    if done:
        raise Stop


@contextlib.contextmanager
def mounted_under_load(ex: object, mnt: Path, tmp_path: Path, name: str) -> Iterator[str]:
    """ext4 on NAME, mounted, fio writing with verification state while the body runs;
    afterwards fio verifies every block it wrote and e2fsck finds nothing."""
    node = ex.node(name)  # type: ignore[attr-defined]
    subprocess.run(["mkfs.ext4", "-q", "-F", node], check=True)
    subprocess.run(["mount", node, str(mnt)], check=True)
    load = subprocess.Popen([*FIO, f"--directory={mnt}", "--time_based", "--runtime=600",
                             "--do_verify=0", "--verify_state_save=1", "--fsync=16",
                             f"--output={tmp_path / 'fio.out'}"], cwd=tmp_path)
    try:
        time.sleep(3)
        yield node
        time.sleep(2)
    finally:
        load.terminate()
        load.wait(60)
    verify = subprocess.run([*FIO, f"--directory={mnt}", "--verify_only",
                             "--verify_state_load=1"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    subprocess.run(["umount", str(mnt)], check=True)
    assert subprocess.run(["e2fsck", "-fn", node], capture_output=True).returncode == 0


def test_move_under_mounted_ext4(exposed: tuple[DeviceMapper, object, Path],
                                 tmp_path: Path) -> None:
    dm, ex, mnt = exposed
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    for p in (a, b):
        with open(p, "wb") as f:
            f.truncate(128 * MiB)
    dm.create("vol", f"0 {96 * MiB // 512} linear {a} 0\n"
                     f"{96 * MiB // 512} {32 * MiB // 512} linear {b} 0\n")
    with mounted_under_load(ex, mnt, tmp_path, "vol"):
        # Abort halfway once, then move for real: both under the running load.
        with pytest.raises(Stop):
            move(dm, "vol", str(a), str(b), dest_offset=32 * MiB // 512, progress=stop_early)
        abort_move(dm, "vol")
        assert [s.params for s in dm.table("vol")] == [f"{a} 0", f"{b} 0"]
        with pytest.raises(MoveError):
            abort_move(dm, "vol")
        move(dm, "vol", str(a), str(b), dest_offset=32 * MiB // 512)
        assert [(s.target_type, s.params) for s in dm.table("vol")] == [
            ("linear", f"{b} {32 * MiB // 512}"), ("linear", f"{b} 0")]


def test_striped_move_under_mounted_ext4(exposed: tuple[DeviceMapper, object, Path],
                                         tmp_path: Path) -> None:
    """A striped segment with a stripe on the source moves through the temporary mirror
    device (vol-pvmove), pvmove's way, with the filesystem mounted and fio writing."""
    dm, ex, mnt = exposed
    a, b, c = (tmp_path / f"{n}.img" for n in "abc")
    for p in (a, b, c):
        with open(p, "wb") as f:
            f.truncate(64 * MiB)
    s32 = 32 * MiB // 512
    dm.create("vol", f"0 {2 * s32} striped 2 128 {a} 0 {c} 0\n"
                     f"{2 * s32} {s32} linear {a} {s32}\n")
    original = [s.params for s in dm.table("vol")]
    with mounted_under_load(ex, mnt, tmp_path, "vol"):
        with pytest.raises(Stop):
            move(dm, "vol", str(a), str(b), region_size=1024, progress=stop_early)
        assert [s.target_type for s in dm.table(temp_name("vol"))] == ["mirror"]
        abort_move(dm, "vol")
        assert [s.params for s in dm.table("vol")] == original
        assert temp_name("vol") not in [d.name for d in dm.list()]
        with pytest.raises(MoveError):
            abort_move(dm, "vol")
        move(dm, "vol", str(a), str(b), region_size=1024)
        assert [(s.target_type, s.params) for s in dm.table("vol")] == [
            ("striped", f"2 128 {b} 0 {c} 0"), ("linear", f"{b} {s32}")]
        assert temp_name("vol") not in [d.name for d in dm.list()]
