"""Run one of the tier's guest-side drivers as a single guest request and read its JSON.

Every batch of the tier (lib_driver.py, scenario_runner.py, tests/cli/kernel_replay.py) is a
script run by the guest's /bin/python3 with a fresh scratch directory in the guest's /tmp as
its first argument; it prints {name: result, ..., "_seconds": time inside the guest} as JSON.
One request per batch keeps the per-request cost of the 9p agent out of the measurements.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guest import Guest

#: Start udevd again if a driver that stopped it (scenario_runner.udev_paused) was killed.
RESTART_UDEVD = ("udevadm control --ping >/dev/null 2>&1 || "
                 "{ /usr/lib/systemd/systemd-udevd --daemon || /lib/systemd/systemd-udevd "
                 "--daemon; } </dev/null >/dev/null 2>&1")


def run_driver(guest: Guest, script: Path, *, label: str, notes: list[str], timeout: float,
               args: Sequence[str] = ()) -> dict[str, Any]:
    """Run `script SCRATCH [args...]` in the guest; its JSON result. A line for the tier's
    summary goes to `notes`: `label`, the time inside the guest and with the request."""
    extra = "".join(" " + shlex.quote(a) for a in args)
    # Scratch files in the guest's /tmp (tmpfs), not the 9p work dir: loop I/O stays local.
    cmd = (f"d=$(mktemp -d) && /bin/python3 {shlex.quote(str(script))} \"$d\"{extra}; "
           "rc=$?; rm -rf \"$d\"; exit $rc")
    t0 = time.monotonic()
    try:
        r = guest.run(cmd, timeout=timeout).check()
    finally:
        # Whatever happened to the driver, udevd must not stay stopped for the tests after.
        guest.run(RESTART_UDEVD, timeout=60)
    results: dict[str, Any] = json.loads(r.stdout)
    notes.append(f"{label}: {results['_seconds']:.1f} s in the guest "
                 f"({time.monotonic() - t0:.1f} s with the request)")
    return results
