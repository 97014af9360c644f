"""Replay recorded dmsetup transcripts (tests/fixtures/dmsetup/README.md, format 1) against
our dmsetup over one in-process engine, and report every step that differs.

Loop devices are real ones on the host (losetup), so {LOOPn_DEV} and friends resolve to real
numbers, as in the guest. Known, intended differences are normalised on both sides:
- `Library version:` prints devmapper's version, not LVM2's;
- /dev/mapper/NAME inside table text becomes NAME's major:minor (see mapper_paths);
- `targets` lists only what the engine registers: the kernel's list is compared restricted to
  those targets (names, versions and order; anything extra in ours still differs).
A step whose DM_DEV_DIR names another directory with no control node in it runs our kernel
path instead of the engine (see elsewhere_control): the driver is reached, or not, through
that directory, and the guest's read-only root let the real libdm create nothing there.
Steps the real dmsetup hung on (timed_out) are run but not compared.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devmapper.cli import task as cli_task
from devmapper.cli.dmsetup import main
from devmapper.control.engine import EngineTransport
from devmapper.engine.core import Engine
from devmapper.targets.base import Target, TargetError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from devmapper.targets.base import StatusType, TargetContext

_LIB_VERSION = re.compile(r"^Library version:   .*$", re.M)
_INCOMPATIBLE = re.compile(r"^Incompatible libdevmapper .* and kernel driver", re.M)


class Loop:
    def __init__(self, path: str) -> None:
        self.path = path
        st = os.stat(path)
        self.major, self.minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        self.name = os.path.basename(path)


@contextlib.contextmanager
def loops(workdir: Path, specs: list[dict[str, Any]]) -> Iterator[list[Loop]]:
    """Attach the scenario's loop devices; "unbound" ones are free nodes picked last."""
    made: dict[int, Loop] = {}
    attached: list[str] = []
    try:
        for i, spec in enumerate(specs):
            if spec.get("unbound"):
                continue
            backing = workdir / f".loop{i}.img"
            with open(backing, "wb") as f:
                f.truncate(int(spec["size"]))
            out = subprocess.run(
                ["losetup", "-f", "--show", "--sector-size", str(spec.get("sector_size", 512)),
                 str(backing)], check=True, capture_output=True, text=True).stdout.strip()
            attached.append(out)
            made[i] = Loop(out)
        for i, spec in enumerate(specs):
            if spec.get("unbound"):
                free = subprocess.run(["losetup", "-f"], check=True, capture_output=True,
                                      text=True).stdout.strip()
                made[i] = Loop(free)
        yield [made[i] for i in range(len(specs))]
    finally:
        for path in attached:
            subprocess.run(["losetup", "-d", path], check=False, capture_output=True)


class Replayer:
    def __init__(self, fixture: dict[str, Any], workdir: Path) -> None:
        self.fx = fixture
        self.workdir = workdir
        self.engine = Engine()
        self.loops: list[Loop] = []
        self.held: dict[str, Any] = {}
        self.background: dict[str, tuple[threading.Thread, dict[str, Any], dict[str, Any]]] = {}
        self.diffs: list[str] = []

    def subst(self, text: str) -> str:
        values = {"DM_MAJOR": "254", "WORKDIR": str(self.workdir)}
        for i, lp in enumerate(self.loops):
            values.update({f"LOOP{i}": lp.path, f"LOOP{i}_NAME": lp.name,
                           f"LOOP{i}_DEV": f"{lp.major}:{lp.minor}",
                           f"LOOP{i}_MAJOR": str(lp.major), f"LOOP{i}_MINOR": str(lp.minor)})
        return re.sub(r"\{([A-Z0-9_]+)\}", lambda m: values.get(m.group(1), m.group(0)), text)

    def run(self) -> list[str]:
        setup = self.fx.get("setup", {})
        for name, text in setup.get("files", {}).items():
            (self.workdir / name).write_text(text)
        for name in setup.get("dirs", []):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        with loops(self.workdir, setup.get("loops", [])) as made:
            self.loops = made
            cwd = os.getcwd()
            os.chdir(self.workdir)
            try:
                for n, step in enumerate(self.fx["steps"]):
                    self.step(n, step)
            finally:
                os.chdir(cwd)
                for t, _s, _r in self.background.values():
                    t.join(10)
                for h in self.held.values():
                    h.close()
                self.engine.remove_all(False, False)
        return self.diffs

    def step(self, n: int, step: dict[str, Any]) -> None:
        action = step.get("action")
        if action == "hold_open":
            from devmapper.blockio import EngineBlock

            self.held[step["id"]] = EngineBlock(self.engine.by_name[step["device"]])
        elif action == "release":
            self.held.pop(step["id"]).close()
        elif action == "sleep":
            time.sleep(float(step["seconds"]))
        elif action == "join":
            t, st, result = self.background.pop(step["id"])
            t.join(60)
            self.compare(n, st, result)
        elif "argv" in step:
            result = {}
            if step.get("background"):
                t = threading.Thread(target=self.execute, args=(step, result), daemon=True)
                t.start()
                self.background[step["background"]] = (t, step, result)
            else:
                self.execute(step, result)
                self.compare(n, step, result)

    def mapper_paths(self, text: str) -> str:
        """/dev/mapper/NAME in a table -> the device's major:minor.

        The kernel resolves the node to its device number; an in-process engine exposes no
        nodes, so the replayer does that lookup itself (only in table text: a path given as a
        device argument is dmsetup's business and stays as it is)."""
        def one(m: re.Match[str]) -> str:
            md = self.engine.by_name.get(m.group(1))
            return f"{md.major}:{md.minor}" if md is not None else m.group(0)
        return re.sub(r"/dev/mapper/([^\s,;]+)", one, text)

    def execute(self, step: dict[str, Any], result: dict[str, Any]) -> None:
        argv = [self.subst(a) for a in step["argv"][1:]]
        argv = [self.mapper_paths(a) if any(c.isspace() for c in a) else a for a in argv]
        stdin = self.subst(step["stdin"]) if step.get("stdin") is not None else ""
        stdin = self.mapper_paths(stdin)
        env = {k: self.subst(v) for k, v in (step.get("env") or {}).items()}
        out, err = io.StringIO(), io.StringIO()
        if elsewhere_control(env.get("DM_DEV_DIR", "")):
            # No engine behind that node: dmsetup's own kernel path, on a read-only root.
            with _env({**env, "DEVMAPPER_BACKEND": "kernel"}), _read_only_root():
                rc = main(argv, None, io.StringIO(stdin), out, err)
        else:
            with _env(env):
                rc = main(argv, EngineTransport(self.engine), io.StringIO(stdin), out, err)
        result.update(rc=rc, stdout=out.getvalue(), stderr=err.getvalue())

    def registered_only(self, text: str) -> str:
        """The kernel's `targets` lines for the targets the engine registers."""
        from devmapper.targets import lookup_target_type

        return "".join(line for line in text.splitlines(keepends=True)
                       if lookup_target_type(line.split(" ", 1)[0]) is not None)

    def compare(self, n: int, step: dict[str, Any], result: dict[str, Any]) -> None:
        if step.get("timed_out") or "rc" not in result:
            return
        norms = [(re.compile(p, re.M), r) for p, r in step.get("normalise", [])]

        def norm(text: str) -> str:
            text = _LIB_VERSION.sub("Library version:   <LIB>", text)
            text = _INCOMPATIBLE.sub("Incompatible libdevmapper <LIB> and kernel driver", text)
            for rx, rep in norms:
                text = rx.sub(rep, text)
            return text

        want = {k: norm(self.subst(step[k])) for k in ("stdout", "stderr")}
        if step["argv"][-1:] == ["targets"]:
            want["stdout"] = self.registered_only(want["stdout"])
        got = {k: norm(result[k]) for k in ("stdout", "stderr")}
        cmd = " ".join(step["argv"])
        if result["rc"] != step["rc"]:
            self.diffs.append(f"step {n} `{cmd}`: rc {result['rc']} != {step['rc']}")
        for k in ("stdout", "stderr"):
            if got[k] != want[k]:
                self.diffs.append(f"step {n} `{cmd}`: {k}\n  got:  {got[k]!r}\n"
                                  f"  want: {want[k]!r}")


class TableOnlyCrypt(Target):
    """A stand-in for dm-crypt that only keeps its table (no I/O, empty status): enough for
    what dmsetup does with crypt tables (hiding keys without --showkeys)."""

    name = "crypt"
    version = (1, 24, 0)

    def __init__(self, ctx: TargetContext, begin: int, length: int, argv: Sequence[str]) -> None:
        super().__init__(ctx, begin, length, argv)
        if len(argv) < 5:
            raise TargetError("Not enough arguments")
        try:
            self.dev = ctx.get_device(argv[3])
        except OSError as e:
            raise TargetError("Device lookup failed", e.errno or errno.ENXIO) from None
        self.args = [*argv[:3], self.dev.name, *argv[4:]]

    def status(self, kind: StatusType, noflush: bool = False) -> str:
        return ""

    def table(self) -> str:
        return " ".join(self.args)


def elsewhere_control(dev_dir: str) -> bool:
    """DM_DEV_DIR names a directory other than /dev with no control node in it."""
    if not dev_dir.startswith("/") or os.path.realpath(dev_dir) == "/dev":
        return False
    return not os.path.lexists(os.path.join(dev_dir, "mapper", "control"))


@contextlib.contextmanager
def _read_only_root() -> Iterator[None]:
    """mkdir and mknod fail with EROFS, as on the recording guest's root filesystem."""
    def refuse(path: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    saved = os.mkdir, os.mknod
    os.mkdir = os.mknod = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        os.mkdir, os.mknod = saved


@contextlib.contextmanager
def _env(extra: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def replay(path: Path, workdir: Path) -> list[str]:
    saved = cli_task.RETRY_DELAY
    cli_task.RETRY_DELAY = 0  # --retry waits 25 x 0.2 s in LVM2; the text is what matters
    try:
        return Replayer(load(path), workdir).run()
    finally:
        cli_task.RETRY_DELAY = saved
