"""Replay a few recorded dmsetup fixtures against the real dmsetup in the guest.

Proves that a fixture file alone is enough to replay a scenario (setup, placeholders, actions,
normalisation) and that the recordings are reproducible. The full corpus takes many minutes,
so only a small, varied sample runs here; `scripts/record_dmsetup_fixtures.py` re-records all.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from guest import Guest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dmsetup"
SAMPLE = ["create_duplicate", "remove_deferred", "ls_tree"]


def _recorder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "record_dmsetup_fixtures", ROOT / "scripts" / "record_dmsetup_fixtures.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being created
    spec.loader.exec_module(mod)
    return mod


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


@pytest.mark.parametrize("name", SAMPLE)
def test_fixture_replays_identically(clean_guest: Guest, name: str) -> None:
    rec = _recorder()
    expected = json.loads((FIXTURES / f"{name}.json").read_text())
    recorder = rec.Recorder(clean_guest)
    recorder.dm_major = recorder.find_dm_major()
    actual = recorder.record(rec.Scenario.from_fixture(expected))
    assert rec.compare(expected, actual) == []
