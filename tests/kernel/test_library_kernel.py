"""The library over KernelTransport against the real /dev/mapper/control, every command.

All checks (lib_driver.py) run in one guest request; each is reported here as its own test.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from guest import Guest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

from in_guest import run_driver  # noqa: E402
from lib_driver import CHECKS, XFAIL  # noqa: E402

GUEST_TIMEOUT = 1200.0


@pytest.fixture(scope="module")
def lib_results(guest: Guest, tier_notes: list[str]) -> dict[str, Any]:
    return run_driver(guest, HERE / "lib_driver.py", label=f"library on the kernel: "
                      f"{len(CHECKS)} checks", notes=tier_notes, timeout=GUEST_TIMEOUT)


def _param(name: str) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
    return pytest.param(name, id=name, marks=marks)


@pytest.mark.parametrize("name", [_param(n) for n in CHECKS])
def test_library_on_kernel(name: str, lib_results: dict[str, Any]) -> None:
    result = lib_results.get(name)
    assert result is not None, f"the guest driver returned nothing for {name}"
    assert result["ok"], f"{name} failed in the guest:\n{result['error']}"
