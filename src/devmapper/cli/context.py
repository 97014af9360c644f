"""Where dmsetup's output goes, and libdm's logging levels (libdm-common.c _default_log).

log_print goes to stdout, log_error and log_warn to stderr; with -vv and more every debug
and verbose message is printed too, to stdout, as libdm's default log function does.
"""

from __future__ import annotations

import time
from typing import TextIO


class Ctx:
    def __init__(self, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.verbose = 0  # the -v count
        self.t0: float | None = None
        # When output is captured in memory: what --exec children printed, in order.
        self.child_output: list[str] | None = None

    def out(self, text: str) -> None:
        self.stdout.write(text)

    def log_error(self, msg: str) -> None:
        self.stderr.write(msg + "\n")

    log_warn = log_error

    def log_print(self, msg: str) -> None:
        self.stdout.write(msg + "\n")

    def log_verbose(self, msg: str) -> None:
        if self.verbose > 1:
            self.stdout.write(msg + "\n")

    log_debug = log_verbose

    def start_clock(self) -> None:
        """-vvv: timestamps relative to the start, after each command's ioctl."""
        self.t0 = time.monotonic()
        self.log_debug("Timestamp:       0.000000000 seconds")

    def timestamp(self) -> None:
        if self.t0 is not None:
            ns = int((time.monotonic() - self.t0) * 1e9)
            self.log_debug(f"Timestamp: {ns // 1_000_000_000:7d}.{ns % 1_000_000_000:09d} "
                           "seconds")
