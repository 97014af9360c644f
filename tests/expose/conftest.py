"""Fixtures for the exposure tests: real FUSE mounts, loop devices and nodes, as root.

Every fixture undoes what it made even when a test fails: filesystems the test mounted are
unmounted by `helpers.mounted`, then the exposer is closed, then anything still bound to a
file under the test's FUSE mount is detached and the mount removed (cleanup.clean_stale).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import pytest

from devmapper.expose import Exposer, cleanup
from devmapper.expose.filebackend import FileBackend

from .helpers import fuse_uring_param, make_file


def _can_expose() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for dev in ("/dev/fuse", "/dev/loop-control"):
        if not os.path.exists(dev):
            return f"needs {dev}"
    return None


_why_not = _can_expose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not _why_not:
        return
    for item in items:
        here = "tests/expose/" in str(item.fspath).replace(os.sep, "/")
        if here and item.get_closest_marker("root"):
            item.add_marker(pytest.mark.skip(reason=_why_not))


@pytest.fixture
def dirs(tmp_path: os.PathLike[str]) -> dict[str, str]:
    base = str(tmp_path)
    return {
        "base": base,
        "mount": os.path.join(base, "run", "fuse"),
        "dev": os.path.join(base, "dev"),
    }


@pytest.fixture
def backends() -> Iterator[list[FileBackend]]:
    """Backends to close once every exposer serving them is closed (it is set up first)."""
    made: list[FileBackend] = []
    yield made
    for b in made:
        with contextlib.suppress(OSError):
            b.close()


@pytest.fixture
def file_backend(dirs: dict[str, str], backends: list[FileBackend]) -> Callable[..., FileBackend]:
    def make(name: str, size: int, cls: type[FileBackend] = FileBackend, **kw: bool) -> FileBackend:
        path = make_file(os.path.join(dirs["base"], f"{name}.img"), size)
        b = cls(path, **kw)
        backends.append(b)
        return b

    return make


@pytest.fixture
def make_exposer(
    dirs: dict[str, str], backends: list[FileBackend]
) -> Iterator[Callable[..., Exposer]]:
    made: list[Exposer] = []

    def make(fuse: str = "raw", **kw: object) -> Exposer:
        ex = Exposer(dirs["mount"], dirs["dev"], fuse=fuse, **kw)  # type: ignore[arg-type]
        ex.start()
        made.append(ex)
        return ex

    yield make
    for ex in reversed(made):
        with contextlib.suppress(Exception):
            ex.close()
    with contextlib.suppress(Exception):  # the safety net: leave no loop or mount behind
        cleanup.clean_stale(dirs["mount"], dirs["dev"])


@pytest.fixture
def fuse_uring_enabled() -> Iterator[None]:
    with fuse_uring_param("Y"):
        yield


@pytest.fixture(params=["raw", "uring"])
def exposer(request: pytest.FixtureRequest, make_exposer: Callable[..., Exposer]) -> Exposer:
    if request.param == "uring":
        request.getfixturevalue("fuse_uring_enabled")
    return make_exposer(request.param)
