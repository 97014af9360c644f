"""P6 (issue 3): `dmsetup version` wall time / `python3 -c pass`, goal <= 2.0.

Both run as fresh processes with the same interpreter, interleaved so machine load hits
both alike; the ratio is of the medians. The backend is the engine daemon on a private
socket (started here with --no-expose, stopped at the end), or the kernel when
/dev/mapper/control answers and --kernel is given.

Run: python bench/bench_dmsetup.py [--runs N] [--kernel]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def wall(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def dmsetup_argv() -> list[str]:
    """The console script installed beside this interpreter, else the module."""
    script = os.path.join(os.path.dirname(sys.executable), "dmsetup")
    if os.path.exists(script):
        return [sys.executable, script, "version"]
    return [sys.executable, "-c", "import sys; from devmapper.cli.dmsetup import main; "
            "sys.exit(main(['version']))"]


def measure(runs: int, env: dict[str, str]) -> tuple[float, float]:
    ours, base = [], []
    argv = dmsetup_argv()
    for _ in range(3):  # warm the page cache (and any bytecode cache)
        wall(argv, env)
        wall([sys.executable, "-c", "pass"], env)
    for _ in range(runs):
        ours.append(wall(argv, env))
        base.append(wall([sys.executable, "-c", "pass"], env))
    return statistics.median(ours), statistics.median(base)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--kernel", action="store_true", help="measure against the kernel driver")
    args = ap.parse_args()
    env = dict(os.environ)
    daemon = None
    with tempfile.TemporaryDirectory(prefix="bench-dmsetup-") as tmp:
        if args.kernel:
            env["DEVMAPPER_BACKEND"] = "kernel"
        else:
            sock = os.path.join(tmp, "control.sock")
            env.update(DEVMAPPER_BACKEND="engine", DEVMAPPER_SOCKET=sock,
                       DEVMAPPER_AUTOSTART="0")
            daemon = subprocess.Popen([sys.executable, "-m", "devmapper.daemon", "--foreground",
                                       "--no-expose", "--socket", sock],
                                      stderr=subprocess.DEVNULL, env=env)
            deadline = time.monotonic() + 30
            while not os.path.exists(sock):
                if time.monotonic() > deadline or daemon.poll() is not None:
                    print("daemon did not start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        try:
            ours, base = measure(args.runs, env)
        finally:
            if daemon is not None:
                daemon.terminate()
                daemon.wait(10)
    backend = "kernel" if args.kernel else "engine daemon"
    print(f"P6 dmsetup version ({backend}): {ours * 1000:.1f} ms, python3 -c pass: "
          f"{base * 1000:.1f} ms, ratio {ours / base:.2f} (goal <= 2.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
