"""The scenarios of this directory's transcripts, recorded like tests/fixtures/dmsetup (same
format, same recorder: scripts/record_dmsetup_fixtures.py) with the real dmsetup in the guest.

    python tests/cli/transcripts/record.py [NAME...]    # all, or only these
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
import record_dmsetup_fixtures as rec  # noqa: E402
from record_dmsetup_fixtures import Scenario, dm  # noqa: E402

Z = "0 100 zero"
NONE = {"DM_DEFAULT_NAME_MANGLING_MODE": "none"}
HEX = {"DM_DEFAULT_NAME_MANGLING_MODE": "hex"}
AUTO = {"DM_DEFAULT_NAME_MANGLING_MODE": "auto"}
BAD = {"DM_DEFAULT_NAME_MANGLING_MODE": "bogus"}
COLS = ("info", "-c", "-o", "name,mangled_name,unmangled_name,uuid,mangled_uuid")


def scenarios() -> list[Scenario]:
    return [
        Scenario("verbose_levels", "-v to -vvvv on commands that only read, and errors", [
            dm("create", "a", "--table", Z),
            dm("-vv", "info", "a"),
            dm("-vvv", "info", "a"),
            dm("-vvvv", "info", "a"),
            dm("-vv", "ls"),
            dm("-vvvv", "ls"),
            dm("-vv", "table", "a"),
            dm("-vvvv", "status", "a"),
            dm("-vv", "deps", "a"),
            dm("-vvvv", "version"),
            dm("-vv", "info", "-c", "a"),
            dm("-vv", "info", "nosuch"),
            dm("-vvvv", "table", "nosuch"),
            dm("-vv", "message", "a", "0", "hello"),
            dm("remove", "a"),
        ]),
        Scenario("env_mangling_mode", "DM_DEFAULT_NAME_MANGLING_MODE and --manglename over it", [
            dm("create", "sp ace", "-u", "u ID", "--table", Z),
            dm("ls"),
            dm("ls", env=NONE),
            dm("ls", env=HEX),
            dm("ls", env=AUTO),
            dm("ls", env=BAD),
            dm(*COLS),
            dm(*COLS, env=NONE),
            dm(*COLS, env=HEX),
            dm("--manglename", "auto", "ls", env=NONE),
            dm("--manglename", "none", "ls", env=HEX),
            dm("info", "sp ace", env=NONE),
            dm("info", "sp\\x20ace", env=NONE),
            dm("create", "x y", "--table", Z, env=NONE),
            dm("create", "hx", "--table", Z, env=HEX),
            dm("ls", env=HEX),
            dm("ls"),
            dm("mangle", env=NONE),
            dm("ls"),
            dm("remove_all"),
        ]),
    ]


if __name__ == "__main__":
    rec.scenarios = scenarios
    sys.exit(rec.main(["--out", str(Path(__file__).parent), "--no-facts", *sys.argv[1:]]))
