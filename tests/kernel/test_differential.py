"""Differential tests: every scenario of scenarios/ through the engine and through the kernel.

The kernel side runs the whole corpus in one guest request (scenario_runner.py, in the guest's
/bin/python3); the engine side runs each scenario in this process over loop devices attached
on the host. Every operation's normalised result, the data read back and the sha256 of every
backing file afterwards must be identical. A known difference is an xfail(strict=True) whose
reason is the exact diff (Scenario.xfail), never a weakened comparison.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from guest import Guest

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
sys.path.insert(0, str(SRC))

from in_guest import run_driver  # noqa: E402
from scenario_runner import Runner, engine_opener  # noqa: E402
from scenarios import Scenario, load_all  # noqa: E402

from devmapper.control.engine import EngineTransport  # noqa: E402
from devmapper.engine.core import Engine  # noqa: E402
from devmapper.library import DeviceMapper  # noqa: E402
from devmapper.targets import lookup_target_type  # noqa: E402

SCENARIOS = load_all()
# The whole corpus in the guest: about a second per scenario under TCG on a quiet machine.
GUEST_TIMEOUT = 1800.0


@pytest.fixture(scope="module")
def kernel_results(guest: Guest, tier_notes: list[str]) -> dict[str, Any]:
    return run_driver(guest, HERE / "scenario_runner.py", label=f"differential: "
                      f"{len(SCENARIOS)} scenarios, kernel side", notes=tier_notes,
                      timeout=GUEST_TIMEOUT)


@pytest.fixture(scope="module")
def host_loops() -> None:
    """The engine side needs loop devices on the host; without them the tier fails loudly."""
    if not os.path.exists("/dev/loop-control") or os.geteuid() != 0:
        pytest.fail("the differential tests need root and /dev/loop-control on the host")


def run_engine(scen: Scenario, workdir: Path) -> dict[str, Any]:
    with DeviceMapper(EngineTransport(Engine())) as dm:
        return Runner(dm, engine_opener, workdir).run(scen)


def diff(kernel: dict[str, Any], engine: dict[str, Any]) -> list[str]:
    """Every difference, one entry per operation or backing file, readable on its own."""
    out = []
    for key in ("error", "leftover"):
        if kernel.get(key) != engine.get(key):
            out.append(f"{key}:\n  kernel: {kernel.get(key)}\n  engine: {engine.get(key)}")
    kops, eops = kernel["ops"], engine["ops"]
    for i in range(max(len(kops), len(eops))):
        k = kops[i] if i < len(kops) else None
        e = eops[i] if i < len(eops) else None
        if k != e:
            label = (k or e or ["?"])[0]
            out.append(f"op {i} `{label}`:\n  kernel: {json.dumps(k and k[1])}\n"
                       f"  engine: {json.dumps(e and e[1])}")
    for label in sorted(set(kernel["hashes"]) | set(engine["hashes"])):
        kh, eh = kernel["hashes"].get(label), engine["hashes"].get(label)
        if kh != eh:
            out.append(f"backing {label} sha256: kernel {kh} engine {eh}")
    return out


def _param(scen: Scenario) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=scen.xfail)] if scen.xfail else []
    return pytest.param(scen, id=scen.name, marks=marks)


@pytest.mark.parametrize("scen", [_param(s) for s in SCENARIOS])
def test_scenario(scen: Scenario, kernel_results: dict[str, Any], host_loops: None,
                  tmp_path: Path) -> None:
    missing = [t for t in scen.needs if lookup_target_type(t) is None]
    assert not missing, f"the engine has no {missing} target"
    kernel = kernel_results.get(scen.name)
    assert kernel is not None, f"the guest runner returned nothing for {scen.name}"
    assert kernel["error"] is None, f"the scenario failed in the guest:\n{kernel['error']}"
    engine = run_engine(scen, tmp_path)
    assert engine["error"] is None, f"the scenario failed on the engine:\n{engine['error']}"
    differences = diff(kernel, engine)
    assert not differences, f"{scen.name}: engine differs from kernel\n" + "\n".join(
        differences)
