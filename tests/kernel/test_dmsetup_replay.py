"""Our dmsetup against the real one on the guest's kernel: every recorded transcript, and the
live scenarios, through tests/cli/kernel_replay.py (one guest request for the whole batch).

Each scenario is its own test: exit code, stdout and stderr of every step must be identical to
what LVM2's dmsetup 1.02.185 printed on this kernel, either recorded in tests/fixtures/dmsetup
or run live next to ours (see kernel_replay.py for which and why).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "cli"))

import kernel_replay  # noqa: E402

NAMES = kernel_replay.names_in_batch()


@pytest.mark.parametrize("name", NAMES)
def test_our_dmsetup_matches_the_real_one(name: str, dmsetup_batch: dict[str, Any]) -> None:
    res = dmsetup_batch.get(name)
    assert res is not None, f"the guest batch returned nothing for {name}"
    assert res["error"] is None, f"{name} ({res['how']}) failed in the guest:\n{res['error']}"
    assert not res["diffs"], f"{name} ({res['how']}): our dmsetup differs\n" + "\n".join(
        res["diffs"])
