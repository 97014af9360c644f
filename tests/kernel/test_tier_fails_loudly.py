"""The tier never skips: a guest that cannot start is an error, in CI and via scripts/test.sh.

Runs a kernel test in a child pytest with a kernel image that does not exist (QEMU cannot
start; vng gives up in a few seconds) and checks the outcome is an error, not a skip, with
the console attached; and that the scripts CI runs do not deselect the tier.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_guest_that_cannot_start_is_an_error_not_a_skip(tmp_path: Path) -> None:
    env = {**os.environ, "CI": "1", "DEVMAPPER_GUEST_KERNEL": str(tmp_path / "no-such-vmlinuz")}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "kernel",
         "tests/kernel/test_guest.py::test_driver_version",
         "tests/kernel/test_guest.py::test_result_streams_and_exit_code"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert re.search(r"^2 errors in ", out, re.M), out
    assert not re.search(r"\d+ (skipped|xfailed|deselected)", out), out
    assert "no-such-vmlinuz does not exist" in out, out  # the console log is attached
    assert "kernel guest: boot FAILED" in out, out  # the summary says so, with its time


def test_ci_runs_the_tier() -> None:
    """.ci/run runs scripts/test.sh, which runs pytest over tests/ without deselecting it."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash scripts/test\.sh", ci, re.M), ci
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert re.search(r"^exec python3 -m pytest\b", test_sh, re.M), test_sh
    for text in (ci, test_sh):
        assert "not kernel" not in text and "--deselect" not in text, text
        assert "--ignore" not in text, text
    assert "tests" in re.findall(r'testpaths = \[(.*)\]',
                                 (ROOT / "pyproject.toml").read_text())[0]
