"""Replay the recorded transcripts with OUR dmsetup on the real kernel in the QEMU guest.

The fixtures were recorded with LVM2's dmsetup in the same guest; running them again with
ours (kernel backend: /dev/mapper/control, udev cookies, sysfs) must give the same bytes.
Uses the fixture recorder (scripts/record_dmsetup_fixtures.py) with its binary swapped.

    python tests/cli/kernel_replay.py [--attach DIR] [NAME ...]

Exit status 1 if any step differs; the differences are printed. The `Library version:` line
names devmapper's version by design and is ignored.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dmsetup"
sys.path.insert(0, str(ROOT / "tests" / "kernel"))

from guest import Guest  # noqa: E402

# The guest reads the host's files over 9p, slowly: the sources are copied to its tmpfs
# once per run and compiled there, so each dmsetup call starts from cached bytecode.
SHM = "/dev/shm/devmapper-src"
WRAPPER = f"""#!/bin/sh
export PYTHONPYCACHEPREFIX=/dev/shm/devmapper-pycache
exec /bin/python3 -c 'import sys; sys.path.insert(0, "{SHM}"); \\
from devmapper.cli.dmsetup import main; sys.exit(main())' "$@"
"""


def recorder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "record_dmsetup_fixtures", ROOT / "scripts" / "record_dmsetup_fixtures.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


_LIB_VERSION = re.compile(r"^Library version:   .*$", re.M)
_INCOMPATIBLE = re.compile(r"^Incompatible libdevmapper .* and kernel driver", re.M)


def _version_line(step: dict[str, Any]) -> None:
    """Our library version is devmapper's, not LVM2's: compare around it."""
    for key in ("stdout", "stderr"):
        text = step.get(key)
        if isinstance(text, str):
            text = _LIB_VERSION.sub("Library version:   <LIB>", text)
            step[key] = _INCOMPATIBLE.sub("Incompatible libdevmapper <LIB> and kernel driver",
                                          text)


def replay(g: Guest, names: list[str]) -> dict[str, list[str]]:
    rec = recorder()
    wrapper = g.workdir / "our-dmsetup"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    g.run(f"rm -rf {SHM} /dev/shm/devmapper-pycache && cp -r {ROOT / 'src'} {SHM} && "
          f"PYTHONPYCACHEPREFIX=/dev/shm/devmapper-pycache /bin/python3 -m compileall -q "
          f"{SHM}/devmapper", timeout=600).check()
    rec.DMSETUP = str(wrapper)
    r = rec.Recorder(g)
    r.dm_major = r.find_dm_major()
    results: dict[str, list[str]] = {}
    for path in sorted(FIXTURES.glob("*.json")):
        if names and path.stem not in names:
            continue
        expected = json.loads(path.read_text())
        actual = r.record(rec.Scenario.from_fixture(expected))
        for fx in (expected, actual):
            for step in fx["steps"]:
                _version_line(step)
        results[path.stem] = diffs = rec.compare(expected, actual)
        print(f"{'ok  ' if not diffs else 'DIFF'} {path.stem}", flush=True)
        for d in diffs:
            print(f"     {d}", flush=True)
    r.reset()
    return results


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attach", metavar="DIR", help="use a guest served at DIR")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args(argv)
    g = Guest.attach(args.attach) if args.attach else Guest().start()
    try:
        results = replay(g, args.names)
    finally:
        g.stop()
    bad = sum(bool(d) for d in results.values())
    print(f"{len(results) - bad}/{len(results)} scenarios identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
