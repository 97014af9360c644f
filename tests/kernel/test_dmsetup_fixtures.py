"""Every recorded dmsetup fixture is well formed, and a sample replays identically against the
real dmsetup from the fixture file alone.

Proves that a fixture file alone is enough to replay a scenario (setup, placeholders, actions,
normalisation) and that the recordings are reproducible. The full corpus takes many minutes,
so only a small, varied sample (kernel_replay.REPRODUCE) runs, inside the guest as part of
the dmsetup batch (conftest.dmsetup_batch, which replays every fixture with ours as well);
`scripts/record_dmsetup_fixtures.py` re-records all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dmsetup"
sys.path.insert(0, str(ROOT / "tests" / "cli"))

from kernel_replay import REPRODUCE  # noqa: E402


def test_every_fixture_is_well_formed() -> None:
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 30
    for path in files:
        fx = json.loads(path.read_text())
        assert fx["format"] == 1 and fx["name"] == path.stem
        for st in fx["steps"]:
            assert ("argv" in st) != ("action" in st), (path.name, st)
            if "argv" in st:
                assert st["argv"][0] == "dmsetup"
                assert "rc" in st and ("stdout" in st or "stdout_b64" in st), (path.name, st)


@pytest.mark.parametrize("name", REPRODUCE)
def test_fixture_replays_identically(name: str, dmsetup_batch: dict[str, Any]) -> None:
    res = dmsetup_batch.get(f"real:{name}")
    assert res is not None, f"the guest batch did not replay {name} with the real dmsetup"
    assert res["error"] is None, f"{name} failed in the guest:\n{res['error']}"
    assert res["diffs"] == [], "\n".join(res["diffs"])
