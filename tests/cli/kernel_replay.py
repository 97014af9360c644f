"""Replay the recorded transcripts with OUR dmsetup on the real kernel in the QEMU guest.

The fixtures were recorded with LVM2's dmsetup in the same guest; running them again with
ours (kernel backend: /dev/mapper/control, udev cookies, sysfs) must give the same bytes:
exit code, stdout and stderr of every step. Uses the fixture recorder
(scripts/record_dmsetup_fixtures.py) with its dmsetup swapped for ours.

Two kinds of comparison, both against the real dmsetup 1.02.185 on the guest's kernel:

- recorded: our dmsetup replays a fixture; every step must match the recording;
- live: the real dmsetup and ours run the same scenario one after the other in this guest,
  and must agree step by step. Used for the scenarios of LIVE below (large tables and long
  device lists, beyond what the fixtures hold), and for a fixture with a step the real
  dmsetup hung on (`create` with an empty table: the device gets no table, hence no gendisk
  and no uevent, and libdm waits for udev forever): that step gets `--noudevsync` for BOTH
  programs, the fair way to make the real one return.

The whole batch runs inside the guest in one request (`--in-guest`): starting Python costs
about 2 s per call under TCG, so our dmsetup runs in a forked child of a process that has
imported it already (a fresh process in every other respect: its own pid, session, cwd,
environment, stdin/stdout/stderr, argv[0] "dmsetup", exit status through sys.exit), while
the real one is exec'd as usual.

    python tests/cli/kernel_replay.py [--attach DIR] [NAME ...]    # from the host

Exit status 1 if any step differs; the differences are printed. The `Library version:` line
names devmapper's version by design and is compared as <LIB>. tests/kernel/
test_dmsetup_replay.py runs the same batch in the pytest kernel tier, one test per scenario.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dmsetup"
for _p in (ROOT / "tests" / "kernel", ROOT / "src"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from guest import Guest, GuestTimeout, Result  # noqa: E402

REAL_DMSETUP = "/usr/sbin/dmsetup"
#: Fixtures the real dmsetup replays too, proving the recordings are reproducible (a sample:
#: re-recording all takes half an hour); in the results as "real:NAME".
REPRODUCE = ["create_duplicate", "remove_deferred", "ls_tree"]
#: The whole batch in the guest, at most (it took 340-370 s at load 3-7 on 2 cores).
GUEST_TIMEOUT = 2400.0


def recorder() -> ModuleType:
    name = "record_dmsetup_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "scripts" / "record_dmsetup_fixtures.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while being created
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


def compare(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    rec = recorder()
    expected, actual = copy.deepcopy(expected), copy.deepcopy(actual)
    for fx in (expected, actual):
        for step in fx["steps"]:
            _version_line(step)
    diffs: list[str] = rec.compare(expected, actual)
    return diffs


# ----------------------------------------------------------------------------- live scenarios


def live_scenarios() -> list[Any]:
    """Scenarios the fixtures do not hold, run live through both dmsetups."""
    rec = recorder()
    dm, Scenario, Step = rec.dm, rec.Scenario, rec.Step
    settle = Step(action={"action": "settle"})
    n = 3000
    # 3000 targets (about 90 KB of table text): TABLE_STATUS needs BUFFER_FULL retries.
    big = "".join(f"{i * 8} 8 linear {{LOOP0}} {(n - 1 - i) * 8}\n" for i in range(n))
    big2 = "".join(f"{i * 16} 16 linear {{LOOP0}} {i * 8}\n" for i in range(n // 2))
    # 200 devices, 100-character names, most with 100-character uuids (LIST_DEVICES needs
    # about 45 KB), a few with a table; a device without one gets no uevent in 6.1, so the
    # whole set is made with --noudevsync by both programs, then udev is let settle.
    devs = []
    for i in range(200):
        name = f"dev-{i:03d}-" + "x" * 92
        uuid = f"UUID-{i:03d}-" + "u" * 91 if i % 3 else ""
        devs.append(f"{name},{uuid},,,0 8 zero" if i % 20 == 0 else f"{name},{uuid},,,")
    some = [d.split(",")[0] for d in devs[::20]]
    return [
        Scenario("live_large_table", "3000-target tables: create, table, status, reload", [
            dm("create", "big", stdin=big),
            dm("info", "big"),
            dm("table", "big"),
            dm("status", "big"),
            dm("deps", "big"),
            dm("info", "-c", "-o", "name,segments,events,devs_used", "big"),
            dm("load", "big", stdin=big2),
            dm("info", "big"),
            dm("table", "--inactive", "big"),
            dm("suspend", "--nolockfs", "big"),
            dm("resume", "big"),
            dm("table", "big"),
            dm("-v", "wait", "big", "99"),
            dm("ls", "--tree", "-o", "ascii"),
            dm("remove", "big"),
        ], loops=rec.loops(16 * rec.MIB)),
        Scenario("live_long_list", "200 devices with long names and uuids", [
            # Made last to first (the list must still come back in name order).
            dm("create", "--noudevsync", "--concise", ";".join(reversed(devs))),
            settle,
            dm("ls"),
            dm("ls", "-o", "blkdevname"),
            dm("info", "-c", "-o", "name,uuid,major,minor,events,attr,segments"),
            dm("rename", some[1], "renamed"),
            dm("rename", some[2], "--setuuid", "NEW-UUID"),  # has one: EINVAL
            dm("rename", some[3], "--setuuid", "NEW-UUID"),
            dm("message", some[2], "0", "@cancel_deferred_remove"),
            dm("info", "-c", "-o", "name,uuid,events", "--sort", "-events,name"),
            dm("table"),
            dm("status"),
            dm("deps"),
            dm("info", some[4], "renamed"),
            dm("ls", "--tree"),
            dm("remove_all"),
            settle,
            dm("ls"),
        ]),
    ]


# ----------------------------------------------------------------------------- in the guest


class LocalGuest:
    """The guest seen from inside: what the fixture recorder needs of a Guest."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def run(self, cmd: str, stdin: bytes | None = None, timeout: float = 60, *,
            env: dict[str, str] | None = None, cwd: str | None = None) -> Result:
        return spawn(["/bin/bash", "-c", cmd], stdin, timeout, {**os.environ, **(env or {})},
                     cwd)


def spawn(argv: list[str], stdin: bytes | None, timeout: float, env: dict[str, str],
          cwd: str | None, executable: str | None = None) -> Result:
    """Run a program as the guest agent does (own session; killed with its group at the
    timeout, raising GuestTimeout with what it printed)."""
    proc = subprocess.Popen(argv, executable=executable, env=env, cwd=cwd,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=5)
        raise GuestTimeout(f"timed out: {argv}", Result(-1, out or b"", err or b""))
    return Result(proc.returncode, out, err)


#: Pipe ends of children in flight: a forked child closes those that are not its own, as an
#: exec'd one would (close_fds), so that no sibling's pipe stays open through it.
_OPEN_FDS: set[int] = set()
_FDS_LOCK = threading.Lock()


def fork_ours(argv: list[str], stdin: bytes | None, timeout: float, env: dict[str, str],
              cwd: str) -> Result:
    """Our dmsetup in a forked child of this process, which imported it already."""
    with _FDS_LOCK:
        pipes = [os.pipe(), os.pipe(), os.pipe()]  # stdin, stdout, stderr
        mine = {fd for p in pipes for fd in p}
        inherited = _OPEN_FDS | mine
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            status = 70
            try:
                os.setsid()
                os.chdir(cwd)
                # No input is /dev/null, as in the recorder; else the bytes, then EOF.
                fd0 = pipes[0][0] if stdin is not None else os.open(os.devnull, os.O_RDONLY)
                for target, fd in ((0, fd0), (1, pipes[1][1]), (2, pipes[2][1])):
                    os.dup2(fd, target)
                for fd in inherited:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                os.environ.clear()
                os.environ.update(env)
                sys.argv = ["dmsetup", *argv]
                status = _as_program(_dmsetup_main)
            finally:
                os._exit(status)
        (in_r, in_w), (out_r, out_w), (err_r, err_w) = pipes
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        _OPEN_FDS.update((in_w, out_r, err_r))
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

    def drain(fd: int) -> None:
        while data := os.read(fd, 65536):
            chunks[fd].append(data)

    def feed() -> None:
        try:
            with contextlib.suppress(BrokenPipeError):
                _write_all(in_w, stdin or b"")
        finally:
            with _FDS_LOCK:
                os.close(in_w)  # EOF for the child
                _OPEN_FDS.discard(in_w)

    readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in chunks]
    writer = threading.Thread(target=feed, daemon=True)
    for t in (*readers, writer):
        t.start()
    pidfd = os.pidfd_open(pid)
    try:
        exited = bool(select.select([pidfd], [], [], timeout)[0])
        if not exited:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        _, wstatus = os.waitpid(pid, 0)
    finally:
        os.close(pidfd)
    for t in readers:
        t.join(5)  # a grandchild (ls --exec) may hold a pipe: do not wait for it forever
    writer.join(5)
    with _FDS_LOCK:
        for fd, reader in ((out_r, readers[0]), (err_r, readers[1])):
            if not reader.is_alive():
                os.close(fd)
                _OPEN_FDS.discard(fd)
    out, err = b"".join(chunks[out_r]), b"".join(chunks[err_r])
    if not exited:
        raise GuestTimeout(f"timed out: dmsetup {argv}", Result(-1, out, err))
    return Result(os.waitstatus_to_exitcode(wstatus), out, err)


def _write_all(fd: int, data: bytes | None) -> None:
    view = memoryview(data or b"")
    while view:
        view = view[os.write(fd, view):]


def _dmsetup_main() -> object:
    from devmapper.cli.dmsetup import main

    return main()


def _as_program(fn: Callable[[], object]) -> int:
    """Exit status as `sys.exit(fn())` run by the interpreter would give."""
    try:
        code = fn()
    except SystemExit as e:
        code = e.code
    except BaseException:  # noqa: BLE001 - as the interpreter: traceback, status 1
        traceback.print_exc()
        code = 1
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF
    else:
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return status


#: What our dmsetup imports lazily from the standard library (the guest reads every file
#: over 9p, at about 20 ms a stat under TCG: a cold import costs more than the command).
_STDLIB = ("argparse", "ctypes", "ctypes.util", "enum", "fcntl", "functools", "locale",
           "logging", "select", "shlex", "signal", "socket", "stat", "struct", "subprocess",
           "termios", "textwrap")


def _warm_up() -> None:
    """Import, once before the first fork, everything our dmsetup may import on use."""
    import pkgutil

    import devmapper
    import devmapper.cli
    import devmapper.control

    sys.dont_write_bytecode = True  # the guest's view of the sources is read-only
    names = list(_STDLIB)
    for pkg in (devmapper.cli, devmapper.control):
        names += [m.name for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + ".")]
    names += [f"devmapper.{m}" for m in ("library", "uapi", "backend", "blockio",
                                          "daemon_client")]
    for name in names:
        with contextlib.suppress(Exception):
            importlib.import_module(name)


@dataclass
class Call:
    """One dmsetup step, expanded for this machine."""

    args: list[str]
    env: dict[str, str]


def make_replayer(g: LocalGuest, ours: bool) -> Any:
    rec = recorder()

    class Replayer(rec.Recorder):  # type: ignore[misc, name-defined]
        def command(self, step: Any, env: Any, kfile: str) -> Call:  # type: ignore[override]
            return Call([env.expand(a) for a in step.argv[1:]],
                        {k: env.expand(v) for k, v in sorted(step.env.items())})

        def run_step(self, cmd: Call, stdin: bytes | None, timeout: float,  # type: ignore[override]
                     cwd: str) -> Result:
            env = {**os.environ, **cmd.env}
            try:
                if ours:
                    return fork_ours(cmd.args, stdin, timeout, env, cwd)
                return spawn(["dmsetup", *cmd.args], stdin, timeout, env, cwd,
                             executable=REAL_DMSETUP)
            except GuestTimeout as exc:
                assert exc.result is not None
                return Result(-1, exc.result.out, exc.result.err)

        # setup and reset as the recorder's, in one shell each (a process costs ~0.5 s here)
        def setup(self, sc: Any) -> Any:
            sdir = self.g.workdir / "scenarios" / sc.name
            shutil.rmtree(sdir, ignore_errors=True)
            sdir.mkdir(parents=True)
            for name, content in sc.files.items():
                (sdir / name).write_text(content)
            for d in sc.dirs:
                (sdir / d).mkdir()
            order, cmds = [], []
            for i, (size, sector) in enumerate(sc.loops):
                if size != rec.UNBOUND:
                    img = sdir / f"disk{i}.img"
                    with open(img, "wb") as f:
                        f.truncate(size)
                    order.append(i)
                    cmds.append(f"losetup -f --show --sector-size {sector} {img}")
            # Unbound ones last, so that attaching a file cannot take the free device.
            for i, (size, _) in enumerate(sc.loops):
                if size == rec.UNBOUND:
                    order.append(i)
                    cmds.append("losetup -f")
            paths = dict(zip(order, self.sh("set -e; " + "; ".join(cmds)).check()
                             .out.decode().split(), strict=True)) if cmds else {}
            loops = []
            for i in range(len(sc.loops)):
                dev = os.stat(paths[i]).st_rdev
                loops.append((paths[i], os.major(dev), os.minor(dev)))
            return rec.Env(str(sdir), self.dm_major, loops)

        def reset(self) -> None:
            kill = "".join(f"kill {pid}; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done; "
                           for pid in self.holders.values())
            self.holders.clear()
            r = self.sh(kill + "dmsetup remove_all --force >/dev/null 2>&1; udevadm settle; "
                        "losetup -D; dmsetup udevcomplete_all -y >/dev/null 2>&1; "
                        "udevadm settle; dmsetup ls")
            if r.out.decode().strip() != "No devices found":
                raise RuntimeError(f"guest not clean between scenarios: {r.out!r} {r.err!r}")

        def act(self, action: dict[str, Any], env: Any, pending: Any) -> None:
            if action["action"] == "settle":
                self.sh("udevadm settle --timeout=120")
            else:
                super().act(action, env, pending)

    r = Replayer(g)
    r.dm_major = r.find_dm_major()
    return r


def noudevsync_where_hung(fx: dict[str, Any]) -> tuple[Any, list[int]]:
    """The fixture's scenario with --noudevsync added to the steps the real dmsetup hung on."""
    rec = recorder()
    scen = rec.Scenario.from_fixture(fx)
    hung = [n for n, st in enumerate(fx["steps"]) if st.get("timed_out")]
    for n in hung:
        step = scen.steps[n]
        step.argv = [*step.argv, "--noudevsync"]
    return scen, hung


def run_all(workdir: Path, names: list[str]) -> dict[str, Any]:
    """Every fixture (or those named) and every live scenario: {name: result}."""
    t0 = time.monotonic()
    _warm_up()
    rec = recorder()
    g = LocalGuest(workdir)
    ours, real = make_replayer(g, True), make_replayer(g, False)
    out: dict[str, Any] = {}

    def one(name: str, how: str, fn: Callable[[], list[str]]) -> None:
        t = time.monotonic()
        try:
            diffs, error = fn(), None
        except Exception:  # noqa: BLE001 - reported as the scenario's failure
            diffs, error = [], traceback.format_exc()
        out[name] = {"how": how, "diffs": diffs, "error": error,
                     "seconds": round(time.monotonic() - t, 3)}

    for path in sorted(FIXTURES.glob("*.json")):
        if names and path.stem not in names:
            continue
        expected = json.loads(path.read_text())
        scen, hung = noudevsync_where_hung(expected)
        if hung:
            one(path.stem, f"live, --noudevsync on steps {hung} for both",
                lambda scen=scen: compare(real.record(scen), ours.record(scen)))
        else:
            one(path.stem, "recorded", lambda fx=expected: compare(
                fx, ours.record(rec.Scenario.from_fixture(fx))))
    for scen in live_scenarios():
        if names and scen.name not in names:
            continue
        one(scen.name, "live", lambda scen=scen: compare(real.record(scen), ours.record(scen)))
    for name in REPRODUCE:
        if names and f"real:{name}" not in names:
            continue
        fx = json.loads((FIXTURES / f"{name}.json").read_text())
        one(f"real:{name}", "the real dmsetup against its own recording", lambda fx=fx: compare(
            fx, real.record(rec.Scenario.from_fixture(fx))))
    ours.reset()
    out["_seconds"] = round(time.monotonic() - t0, 3)
    return out


def names_in_batch() -> list[str]:
    """What run_all compares our dmsetup in (REPRODUCE's "real:" entries aside)."""
    return [p.stem for p in sorted(FIXTURES.glob("*.json"))] + [
        s.name for s in live_scenarios()]


# ----------------------------------------------------------------------------- from the host


def replay(g: Guest, names: list[str], timeout: float = GUEST_TIMEOUT) -> dict[str, Any]:
    """Run the batch in the guest (one request); {name: {"how", "diffs", "error"}}."""
    sys.path.insert(0, str(ROOT / "tests" / "kernel"))
    from in_guest import run_driver

    notes: list[str] = []
    results = run_driver(g, Path(__file__).resolve(), label="dmsetup replay", notes=notes,
                         timeout=timeout, args=["--in-guest", *names])
    results["_note"] = notes[0]
    return results


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--attach", metavar="DIR", help="use a guest served at DIR")
    ap.add_argument("names", nargs="*")
    if len(argv) >= 2 and argv[1] == "--in-guest":  # WORKDIR --in-guest [NAME ...]
        json.dump(run_all(Path(argv[0]), argv[2:]), sys.stdout)
        return 0
    args = ap.parse_args(argv)
    g = Guest.attach(args.attach) if args.attach else Guest().start()
    try:
        results = replay(g, args.names)
    finally:
        g.stop()
    bad = 0
    for name, res in results.items():
        if name.startswith("_"):
            continue
        failed = bool(res["diffs"] or res["error"])
        bad += failed
        print(f"{'DIFF' if failed else 'ok  '} {name} ({res['how']}, {res['seconds']:.1f} s)")
        for d in res["diffs"]:
            print(f"     {d}")
        if res["error"]:
            print(res["error"])
    total = sum(not n.startswith("_") for n in results)
    print(f"{total - bad}/{total} scenarios identical; {results['_note']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
