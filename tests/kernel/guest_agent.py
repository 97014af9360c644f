#!/bin/python3
"""Request agent that runs inside the QEMU guest (started by tests/kernel/guest.py).

Runs under Debian's /bin/python3 (3.11) in the guest, so it uses the standard library only.

Protocol, all files in the control directory shared with the host over 9p:
  req/<id>.json     {"cmd": str, "timeout": float, "env": {..} | null, "cwd": str | null,
                     "stdin": bool, "op": "run" | "shutdown"}  (written by the host, renamed
                     into place so it is never seen half-written)
  req/<id>.stdin    raw stdin bytes, present when "stdin" is true (written before the json)
  resp/<id>.out     raw stdout bytes
  resp/<id>.err     raw stderr bytes
  resp/<id>.json    {"rc": int, "timed_out": bool, "seconds": float} - renamed into place
                    last, so its presence means the .out/.err files are complete
  ready.json        written once the modules are loaded: the host waits for it to finish boot
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# 9p without caching shows host-side writes at once; polling is the only portable wake-up.
# Each listdir over 9p costs milliseconds of emulated CPU under TCG, so poll fast only right
# after a request (tests send bursts) and back off while idle.
POLL_MIN = 0.005
POLL_MAX = 0.1
# After a timeout kill, how long to wait for the pipes to drain (a setsid'ed grandchild may
# keep them open forever).
DRAIN_SECONDS = 5.0


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def load_modules(modules: list[str]) -> dict[str, int]:
    # One modprobe per module: a module missing from this kernel must not stop the others.
    results = {}
    for mod in modules:
        proc = subprocess.run(["modprobe", mod], capture_output=True)
        results[mod] = proc.returncode
    return results


def handle(ctrl: Path, rid: str, req: dict) -> None:
    try:
        run_request(ctrl, rid, req)
    except Exception as exc:  # noqa: BLE001 - the host must always get an answer
        resp = ctrl / "resp"
        (resp / f"{rid}.out").write_bytes(b"")
        (resp / f"{rid}.err").write_bytes(f"agent: {exc!r}\n".encode())
        meta = {"rc": 126, "timed_out": False, "seconds": 0.0, "agent_error": True}
        write_atomic(resp / f"{rid}.json", json.dumps(meta).encode())


def run_request(ctrl: Path, rid: str, req: dict) -> None:
    resp = ctrl / "resp"
    stdin_data = None
    stdin_path = ctrl / "req" / f"{rid}.stdin"
    if req.get("stdin"):
        stdin_data = stdin_path.read_bytes()
        os.unlink(stdin_path)
    env = dict(os.environ)
    env.update(req.get("env") or {})
    timeout = float(req.get("timeout") or 60)
    start = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.Popen(
            ["/bin/bash", "-c", req["cmd"]],
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=req.get("cwd") or None,
            env=env,
            # Own process group, so a timeout kills the whole pipeline, not only bash.
            start_new_session=True,
        )
    except OSError as exc:
        out, err, rc = b"", f"agent: cannot start command: {exc}\n".encode(), 127
    else:
        try:
            out, err = proc.communicate(stdin_data, timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                out, err = proc.communicate(timeout=DRAIN_SECONDS)
            except subprocess.TimeoutExpired:
                out, err = b"", b"agent: output lost, pipes held open after kill\n"
                proc.kill()
                proc.wait()
        rc = proc.returncode
    (resp / f"{rid}.out").write_bytes(out)
    (resp / f"{rid}.err").write_bytes(err)
    meta = {"rc": rc, "timed_out": timed_out, "seconds": time.monotonic() - start}
    write_atomic(resp / f"{rid}.json", json.dumps(meta).encode())


def main() -> int:
    ctrl = Path(sys.argv[1])
    modules = sys.argv[2].split(",") if len(sys.argv) > 2 and sys.argv[2] else []
    reqdir = ctrl / "req"
    mods = load_modules(modules)
    ready = {
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "modules": mods,
        "pid": os.getpid(),
    }
    write_atomic(ctrl / "ready.json", json.dumps(ready).encode())
    threads: list[threading.Thread] = []
    delay = POLL_MIN
    while True:
        try:
            names = sorted(os.listdir(reqdir))
        except FileNotFoundError:
            # The host removed its work dir: nobody will ever ask again, power off.
            return 0
        for name in names:
            if not name.endswith(".json"):
                continue
            rid = name[: -len(".json")]
            path = reqdir / name
            try:
                req = json.loads(path.read_bytes())
                os.unlink(path)
            except (OSError, ValueError):
                continue
            if req.get("op") == "shutdown":
                for t in threads:
                    t.join(timeout=1)
                return 0
            # One thread per request: a test may run a blocking `dmsetup wait` and the
            # command that wakes it at the same time.
            t = threading.Thread(target=handle, args=(ctrl, rid, req), daemon=True)
            t.start()
            threads.append(t)
            delay = POLL_MIN
        alive = [t for t in threads if t.is_alive()]
        if len(alive) < len(threads):
            delay = POLL_MIN  # the host usually sends the next request right after an answer
        threads = alive
        time.sleep(delay)
        delay = min(delay * 1.3, POLL_MAX)


if __name__ == "__main__":
    sys.exit(main())
