"""Our dmsetup against the transcripts of the real one (tests/fixtures/dmsetup), step by step:
exit code, stdout and stderr byte for byte. Needs root and loop devices (losetup)."""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from transcripts import replay  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DIRS = [ROOT / "tests" / "fixtures" / "dmsetup", ROOT / "tests" / "cli" / "transcripts"]
FIXTURES = sorted(p for d in DIRS if d.is_dir() for p in d.glob("*.json"))

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("losetup") or not os.path.exists("/dev/loop-control"),
    reason="needs root and loop devices")


LOOP_CTL_REMOVE = 0x4C81


@pytest.fixture(autouse=True)
def _no_loop_left() -> Iterator[None]:
    """A table naming 7:N creates loopN, as on the kernel: remove what a scenario created."""
    before = set(glob.glob("/dev/loop[0-9]*"))
    yield
    for node in set(glob.glob("/dev/loop[0-9]*")) - before:
        fd = os.open("/dev/loop-control", os.O_RDWR)
        try:
            fcntl.ioctl(fd, LOOP_CTL_REMOVE, int(node.removeprefix("/dev/loop")))
        except OSError:
            pass  # bound meanwhile by someone else: theirs
        finally:
            os.close(fd)


@pytest.fixture(autouse=True)
def _quiet_engine() -> None:
    # The engine's "kernel log" is not part of dmsetup's output.
    logging.getLogger("devmapper").addHandler(logging.NullHandler())


#: Scenarios where the engine, not dmsetup, still answers differently from kernel 6.1.
ENGINE_DIFFERENCES: dict[str, str] = {}
#: Targets the engine lacks, replaced by a stand-in for the scenarios that only need tables.
STAND_INS = {"table_showkeys": {"crypt": "transcripts:TableOnlyCrypt"}}


def _params() -> list[object]:
    out: list[object] = []
    for p in FIXTURES:
        marks = []
        if p.stem in ENGINE_DIFFERENCES:
            marks.append(pytest.mark.xfail(reason=ENGINE_DIFFERENCES[p.stem], strict=False))
        out.append(pytest.param(p, id=p.stem, marks=marks))
    return out


@pytest.mark.parametrize("path", _params())
def test_transcript(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devmapper import targets

    if path.stem in STAND_INS:  # registered for this test only
        monkeypatch.setattr(targets, "_REGISTRY", {**targets._REGISTRY, **STAND_INS[path.stem]})
        monkeypatch.setattr(targets, "_loaded", dict(targets._loaded))
    diffs = replay(path, tmp_path)
    assert not diffs, "\n".join(diffs)
