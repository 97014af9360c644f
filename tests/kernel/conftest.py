"""Kernel tier: tests that run against the real device-mapper in a QEMU guest.

The guest boots once per pytest session (about 20 s, see README.md) and is shared by every test
in this directory. A boot failure is an error, never a skip: deselect the tier explicitly with
`-m "not kernel"` where QEMU is not available.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from guest import Guest  # noqa: E402

_BOOT: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/kernel/ is in the kernel tier, so `-m "not kernel"` skips it all.
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(scope="session")
def guest() -> Iterator[Guest]:
    """The booted guest, one per session. Raises (with the console log) if it cannot boot."""
    g = Guest()
    t0 = time.monotonic()
    try:
        g.start()
    except BaseException:
        _BOOT.append(f"kernel guest: boot FAILED after {time.monotonic() - t0:.1f} s "
                     "(every kernel test errors; the tier is never skipped)")
        raise
    _BOOT.append(f"kernel guest: {g.info.get('kernel')} booted in {g.boot_seconds:.1f} s")
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="session")
def dmsetup_batch(guest: Guest, tier_notes: list[str]) -> dict[str, Any]:
    """tests/cli/kernel_replay.py's whole batch in the guest, once: {scenario: result}."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
    import kernel_replay

    results = kernel_replay.replay(guest, [])
    tier_notes.append(f"{results['_note']} ({len(results) - 2} scenarios)")
    return results


@pytest.fixture
def clean_guest(guest: Guest) -> Iterator[Guest]:
    """The session guest with no dm or loop devices before and after the test."""
    guest.reset()
    yield guest
    guest.reset()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _BOOT:
        terminalreporter.write_line(line)


# ---- the tier's total time, and notes from its tests (added as a plugin so the hooks above
# stay as they are)

_NOTES: list[str] = []


class _TierClock:
    def __init__(self, rootpath: Path) -> None:
        here = Path(__file__).resolve().parent
        try:
            self.prefix = here.relative_to(rootpath.resolve()).as_posix() + "/"
        except ValueError:  # rootdir elsewhere: node ids are then relative to it anyway
            self.prefix = "tests/kernel/"
        self.seconds = 0.0
        self.tests = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Tests run one after another, so the sum of their phases is the tier's wall time,
        # the boot included (it happens in the first kernel test's setup).
        if report.nodeid.startswith(self.prefix):
            self.seconds += report.duration
            if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
                self.tests += 1

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        for line in _NOTES:
            terminalreporter.write_line(line)
        if self.tests:
            terminalreporter.write_line(
                f"kernel tier: {self.tests} tests in {self.seconds:.1f} s (boot included)")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_TierClock(config.rootpath), "devmapper-kernel-tier-clock")


@pytest.fixture(scope="session")
def tier_notes() -> list[str]:
    """Lines for the kernel tier's summary (e.g. the time spent inside the guest)."""
    return _NOTES
