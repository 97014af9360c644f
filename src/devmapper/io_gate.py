"""The I/O gate: how suspend stops new I/O and waits for I/O in flight (dm.c's
DMF_BLOCK_IO_FOR_SUSPEND and md->pending), shared by mapped devices and the snapshot
origins' internal suspend."""

from __future__ import annotations

import threading


class Gate:
    """I/O in flight; closing waits for it to drain, and holds new I/O until open.

    The handshake costs two list operations per request. Under the GIL, list.append/pop are
    atomic and sequentially consistent, so it is Dekker-style: a request appends itself to
    ``inflight``, then checks ``blocked``; close sets ``blocked``, then waits for the list to
    empty. Either close sees the request, or the request sees ``blocked`` and backs out. Hot
    paths inline enter/exit: ``inflight.append(None)`` then ``if gate.blocked: gate.wait()``;
    ``inflight.pop()`` then ``if gate.blocked: gate.notify()``.
    """

    def __init__(self) -> None:
        self.inflight: list[None] = []
        self.blocked = False
        self.cond = threading.Condition(threading.Lock())  # also for waiters of open()
        self._closer = threading.Lock()  # one close at a time, held until open

    def wait(self) -> None:
        """Called by a request that found the gate closed after entering: back out, wait."""
        inflight = self.inflight
        while self.blocked:
            inflight.pop()
            self.notify()
            with self.cond:
                while self.blocked:
                    self.cond.wait()
            inflight.append(None)

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def enter(self) -> None:
        self.inflight.append(None)
        if self.blocked:
            self.wait()

    def exit(self) -> None:
        self.inflight.pop()
        if self.blocked:
            self.notify()

    def close(self) -> None:
        self._closer.acquire()
        with self.cond:
            self.blocked = True
            while self.inflight:
                # A request leaving wakes us; the timeout covers one that left in between.
                self.cond.wait(0.05)

    def open(self) -> None:
        with self.cond:
            self.blocked = False
            self.cond.notify_all()
        self._closer.release()
