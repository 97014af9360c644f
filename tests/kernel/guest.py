"""Boot the real Linux kernel once under QEMU (virtme-ng) and run commands inside it.

The host has no device-mapper; Debian's kernel in the guest has the real one (interface 4.47).
The guest shares the host's root filesystem read-only (9p) plus one read-write work directory,
visible at the same path on both sides. An agent (guest_agent.py) inside the guest polls a
request directory there, runs each request with bash and writes back (rc, stdout, stderr).

    with Guest() as g:
        r = g.run("dmsetup version")
        print(r.rc, r.out, r.err)

Standalone: `python tests/kernel/guest.py [command ...]` boots, runs the command (default:
`dmsetup version`) and prints the boot time.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

AGENT = Path(__file__).with_name("guest_agent.py")

# dm-dust is not built in Debian's 6.1; modprobe failures are recorded, never fatal.
DEFAULT_MODULES: tuple[str, ...] = (
    "loop",
    "dm-mod",
    "dm-zero",
    "dm-snapshot",
    "dm-mirror",
    "dm-log",
    "dm-region-hash",
    "dm-flakey",
    "dm-delay",
    "dm-crypt",
    "dm-unstripe",
    "dm-verity",
    "dm-log-writes",
    "dm-thin-pool",
    "dm-dust",
)

# Boot is ~15 s under TCG on a quiet machine; leave room for a loaded CI box.
DEFAULT_BOOT_TIMEOUT = 240.0
# Extra time the host grants beyond a request's own timeout (the agent kills the command at
# `timeout`; this only covers transport and a slow guest).
RESPONSE_GRACE = 30.0

# Processes to kill if the interpreter exits without stop() being called.
_LIVE: weakref.WeakSet[Guest] = weakref.WeakSet()


class GuestError(RuntimeError):
    """The guest failed to boot, died, or did not answer. Carries the console log."""

    def __init__(self, message: str, console: str = "") -> None:
        self.console = console
        if console:
            tail = console[-8000:]
            message = f"{message}\n----- guest console (last {len(tail)} chars) -----\n{tail}"
        super().__init__(message)


class GuestTimeout(GuestError):
    """A command ran past its timeout; the agent killed it. `result` holds what it printed."""

    def __init__(self, message: str, result: Result | None = None, console: str = "") -> None:
        self.result = result
        super().__init__(message, console)


@dataclass(frozen=True)
class Result:
    rc: int
    out: bytes
    err: bytes

    @property
    def stdout(self) -> str:
        return self.out.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.decode(errors="replace")

    def check(self) -> Result:
        """Return self if rc == 0, else raise with both streams in the message."""
        if self.rc != 0:
            raise AssertionError(
                f"guest command failed rc={self.rc}\nstdout: {self.stdout}\nstderr: {self.stderr}"
            )
        return self


def find_kernel() -> str:
    """The kernel to boot: $DEVMAPPER_GUEST_KERNEL, else the newest Debian amd64 image."""
    env = os.environ.get("DEVMAPPER_GUEST_KERNEL")
    if env:
        return env
    images = sorted(glob.glob("/boot/vmlinuz-*-amd64"))
    if not images:
        raise GuestError(
            "no kernel image found in /boot (apt-get install linux-image-amd64, "
            "or set DEVMAPPER_GUEST_KERNEL)"
        )
    return images[-1]


def check_prerequisites() -> None:
    """Raise GuestError naming whatever is missing to boot the guest."""
    missing = []
    if shutil.which("vng") is None:
        missing.append("vng (pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 (apt-get install qemu-system-x86)")
    # virtme-ng needs a static busybox for its initramfs-less boot.
    if not any(os.path.exists(p) for p in ("/bin/busybox", "/usr/bin/busybox")):
        missing.append("busybox (apt-get install busybox-static)")
    if missing:
        raise GuestError("cannot boot the test kernel, missing: " + ", ".join(missing))
    find_kernel()


# A separate process that kills the VM's process group if this interpreter dies without a
# clean stop (SIGKILL, crash): it blocks reading a pipe whose write end only we hold. A clean
# stop writes one byte first, telling it to exit without killing anything.
_REAPER = """
import os, signal, sys
pgid = int(sys.argv[1])
if sys.stdin.buffer.read(1) == b"":
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        import time; time.sleep(2)
"""


class Guest:
    """One QEMU guest running the real kernel, driven through a shared-directory agent."""

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        *,
        kernel: str | None = None,
        memory: str = "2G",
        modules: Iterable[str] = DEFAULT_MODULES,
        boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
        extra_vng_args: Iterable[str] = (),
    ) -> None:
        self._own_workdir = workdir is None
        if workdir is None:
            # Under /tmp: the guest overlays /tmp on the host's, and the rwdir mount sits on top.
            workdir = tempfile.mkdtemp(prefix="devmapper-guest-")
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kernel = kernel
        self.memory = memory
        self.modules = tuple(modules)
        self.boot_timeout = boot_timeout
        self.extra_vng_args = tuple(extra_vng_args)
        self.ctrl = self.workdir / ".guest-agent"
        self.console_path = self.workdir / ".guest-console.log"
        self.boot_seconds: float | None = None
        self.info: dict[str, object] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._reaper_w: int | None = None
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._attached_pid: int | None = None

    @classmethod
    def attach(cls, workdir: str | os.PathLike[str]) -> Guest:
        """Talk to a guest another process serves (`guest.py --serve DIR`); does not own it."""
        g = cls(workdir)
        g._own_workdir = False
        try:
            g._attached_pid = int((g.ctrl / "vng.pid").read_text())
            g.info = json.loads((g.ctrl / "ready.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise GuestError(f"no guest served from {g.workdir}: {exc}") from exc
        if not g.running:
            raise GuestError(f"the guest served from {g.workdir} is gone", g.console())
        return g

    # ----------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        if self._attached_pid is not None:
            try:
                os.kill(self._attached_pid, 0)
            except ProcessLookupError:
                return False
            return True
        return self._proc is not None and self._proc.poll() is None

    def console(self) -> str:
        """Everything the VM printed to its console so far (kernel, vng and agent output)."""
        try:
            return self.console_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> Guest:
        """Boot the VM and wait for the agent. Raises GuestError with the console on failure."""
        if self._proc is not None:
            raise GuestError("guest already started")
        check_prerequisites()
        kernel = self.kernel or find_kernel()
        shutil.rmtree(self.ctrl, ignore_errors=True)
        (self.ctrl / "req").mkdir(parents=True)
        (self.ctrl / "resp").mkdir()
        # The agent runs from the shared work dir so it is found whatever the guest overlays.
        agent = self.ctrl / "agent.py"
        shutil.copyfile(AGENT, agent)
        exec_cmd = f"exec /bin/python3 {agent} {self.ctrl} {','.join(self.modules)}"
        argv = [
            "vng",
            "--run",
            kernel,
            # KVM aborts on this host (MSR 0x10a) and virtiofsd does not start: TCG + 9p.
            "--disable-kvm",
            "--force-9p",
            "--memory",
            self.memory,
            "--rwdir",
            str(self.workdir),
            "--cwd",
            str(self.workdir),
            *self.extra_vng_args,
            "--exec",
            exec_cmd,
        ]
        console = open(self.console_path, "wb")  # noqa: SIM115 - lives as long as the VM
        t0 = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                # vng forks qemu into its own process group: killpg takes both down.
                start_new_session=True,
            )
        finally:
            console.close()
        _LIVE.add(self)
        self._start_reaper(self._proc.pid)
        (self.ctrl / "vng.pid").write_text(str(self._proc.pid))
        ready = self.ctrl / "ready.json"
        deadline = t0 + self.boot_timeout
        while not ready.exists():
            if self._proc.poll() is not None:
                self._boot_failed(f"guest exited during boot (vng rc={self._proc.returncode})")
            if time.monotonic() > deadline:
                self._boot_failed(f"guest did not become ready within {self.boot_timeout:.0f} s")
            time.sleep(0.05)
        self.boot_seconds = time.monotonic() - t0
        self.info = json.loads(ready.read_bytes())
        return self

    def _boot_failed(self, message: str) -> NoReturn:
        self._cleanup_processes()
        console = self.console()  # read before the work dir goes
        self._proc = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        raise GuestError(message, console)

    def _start_reaper(self, pgid: int) -> None:
        r, w = os.pipe()
        try:
            self._reaper = subprocess.Popen(
                [sys.executable, "-c", _REAPER, str(pgid)],
                stdin=r,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Not in our process group: a Ctrl-C to pytest must not kill the reaper first.
                start_new_session=True,
            )
        finally:
            os.close(r)
        self._reaper_w = w

    def _cleanup_processes(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            # vng is gone; make sure no straggler (qemu) of its group survives either.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._reaper_w is not None:
            with contextlib.suppress(OSError):
                os.write(self._reaper_w, b"x")  # clean stop: the reaper exits quietly
            os.close(self._reaper_w)
            self._reaper_w = None
        if self._reaper is not None:
            try:
                self._reaper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._reaper.kill()
            self._reaper = None
        _LIVE.discard(self)

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the agent to power the VM off; kill it if it does not. Idempotent.

        An attached guest (see attach()) is only forgotten, not stopped.
        """
        self._attached_pid = None
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(OSError):
                self._write_request(f"zz-shutdown-{os.getpid()}", {"op": "shutdown"}, None)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self._cleanup_processes()
        self._proc = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Guest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- requests

    def _write_request(self, rid: str, req: dict[str, object], stdin: bytes | None) -> None:
        reqdir = self.ctrl / "req"
        if stdin is not None:
            (reqdir / f"{rid}.stdin").write_bytes(stdin)
        tmp = reqdir / f"{rid}.json.tmp"
        tmp.write_bytes(json.dumps(req).encode())
        os.rename(tmp, reqdir / f"{rid}.json")  # the agent never sees a half-written request

    def run(
        self,
        cmd: str,
        stdin: bytes | None = None,
        timeout: float = 60,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> Result:
        """Run `cmd` with bash -c in the guest; return its exit code and raw output.

        Thread-safe: concurrent calls run concurrently in the guest. A command still running
        after `timeout` seconds is killed (its whole process group) and GuestTimeout is raised.
        A dead or silent VM raises GuestError with the console log.
        """
        if not self.running:
            raise GuestError("guest is not running", self.console())
        with self._lock:
            rid = f"{os.getpid()}-{next(self._ids):06d}"
        req = {
            "op": "run",
            "cmd": cmd,
            "timeout": timeout,
            "env": dict(env) if env else None,
            "cwd": str(cwd) if cwd is not None else None,
            "stdin": stdin is not None,
        }
        self._write_request(rid, req, stdin)
        resp = self.ctrl / "resp"
        meta_path = resp / f"{rid}.json"
        deadline = time.monotonic() + timeout + RESPONSE_GRACE
        delay = 0.002
        while not meta_path.exists():
            if not self.running:
                raise GuestError(f"guest died while running {cmd!r}", self.console())
            if time.monotonic() > deadline:
                raise GuestError(f"no answer from the guest agent for {cmd!r}", self.console())
            time.sleep(delay)
            delay = min(delay * 1.5, 0.05)
        meta = json.loads(meta_path.read_bytes())
        paths = [resp / f"{rid}.out", resp / f"{rid}.err", meta_path]
        result = Result(int(meta["rc"]), paths[0].read_bytes(), paths[1].read_bytes())
        for p in paths:
            p.unlink()
        if meta.get("timed_out"):
            raise GuestTimeout(f"guest command timed out after {timeout} s: {cmd!r}", result)
        return result

    def reset(self) -> None:
        """Drop every dm device and loop device (between tests/scenarios)."""
        self.run(
            "dmsetup remove_all --force >/dev/null 2>&1; "
            "dmsetup remove_all --force >/dev/null 2>&1; losetup -D; udevadm settle",
            timeout=60,
        )


@atexit.register
def _stop_all() -> None:
    for g in list(_LIVE):
        with contextlib.suppress(Exception):
            g.stop(timeout=10)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Boot the test kernel and run one command in it.")
    ap.add_argument("--serve", metavar="DIR", help="boot with work dir DIR and keep running")
    ap.add_argument("--attach", metavar="DIR", help="run the command in a guest served at DIR")
    ap.add_argument("command", nargs="*", help="shell command (default: dmsetup version)")
    args = ap.parse_args(argv)
    if args.serve:
        g = Guest(args.serve).start()
        print(f"serving {g.workdir}: boot {g.boot_seconds:.1f} s; Ctrl-C stops", file=sys.stderr)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while g.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            g.stop()
        return 0
    cmd = " ".join(args.command) if args.command else "dmsetup version"
    g = Guest.attach(args.attach) if args.attach else Guest().start()
    try:
        if g.boot_seconds is not None:
            print(f"boot: {g.boot_seconds:.1f} s, kernel {g.info.get('kernel')}", file=sys.stderr)
        modules = g.info.get("modules")
        if isinstance(modules, dict):
            failed = sorted(m for m, rc in modules.items() if rc)
            if failed:
                print(f"modules that failed to load: {failed}", file=sys.stderr)
        r = g.run(cmd, timeout=600)
        sys.stdout.buffer.write(r.out)
        sys.stderr.buffer.write(r.err)
        return r.rc
    finally:
        g.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
