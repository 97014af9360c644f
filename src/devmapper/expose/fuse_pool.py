"""How many /dev/fuse workers to run: the policy RawFuseServer's monitor applies every tick.

Workers only add throughput while they wait in the kernel: two workers running Python fight
over the GIL and serve fewer small requests than one (4 KiB QD16 from the page cache: 78,000
IOPS with one worker, 15,000 with the 33 a spawn-when-none-waits rule started), while large
requests are mostly copying, which runs without the GIL and gains from a second worker. What
the pool sees each tick is, per worker, whether it waits for a request and how many it has
taken. The rules:
  - every worker stuck on one request for _STUCK_FOR (a flush, slow storage, a suspended
    device): one more at once, so a blocked device holds only its own requests' threads;
  - two or more waiting for a second: the spares end, each at its next request;
  - while the GIL is full by the estimate (_PYTHON_PER_REQUEST per request served), every
    worker not stuck but one is spare, and the spares end after a second;
  - otherwise the pool tries sizes and keeps what serves more (a trial). While the workers
    are all busy and the estimate says the GIL has room, it tries one worker more (up to
    _ACTIVE_MAX running); while two or more run, it tries one fewer. A trial measures the
    request rate for _TRIAL_FOR of busy time at the new size against the rate before it; one
    more worker stays only if it served _GAIN more, one fewer stays unless it served _GAIN
    less. Each trial that changes nothing waits twice as long for the next (up to _HOLD_MAX).

The estimate alone was wrong wherever a request costs more than it says: on a slower or a
busy machine (other processes taking the CPUs) and with a target that runs much Python per
request, the GIL looked roomy while it was full, and a pool grown past one never shrank. On
a busy machine more workers can really help (2 CPU hogs beside fio at 4 KiB QD16: 38,000 IOPS
with one worker, 50,000 with two), which only a measurement tells apart.
"""

from __future__ import annotations

TICK_BUSY = 0.002  # monitor period while any worker is busy
TICK_IDLE = 0.02  # ... and while all wait: a request blocked meanwhile waits this long for help
_SPARE_FOR = 1.0  # seconds spare workers are seen before they end
# How long a worker must hold one request to count as stuck. Longer than a tick: workers that
# only wait for the GIL, or for a CPU while the machine is busy, miss a 2 ms tick now and
# then; counted as stuck, they grew the pool (8 workers at 4 KiB QD16 for good, each request
# then a fight for the GIL: -30 %), and kept it from shrinking.
_STUCK_FOR = 0.010
# The Python (GIL-holding) part of one request on a fast, idle machine. While the workers
# together serve fewer than half a tick's worth, the GIL may have room: a trial decides.
_PYTHON_PER_REQUEST = 10e-6
_ACTIVE_MAX = 2  # running workers (not stuck) a grow trial goes to: one per core here
_BEFORE_MIN = 0.05  # busy seconds measured at a size before a trial leaves it
_TRIAL_FOR = 0.2  # busy seconds a trial measures at its size
_TRIAL_WITHIN = 2.0  # ... gathered within this long, or the trial is dropped
_GAIN = 0.10
_HOLD_MIN = 1.0  # seconds from one trial to the next, doubled while trials change nothing
_HOLD_MAX = 16.0


class _Rate:
    """Requests served over busy time, the older half dropped every half second."""

    def __init__(self) -> None:
        self.served = 0
        self.elapsed = 0.0

    def add(self, served: int, elapsed: float) -> None:
        self.served += served
        self.elapsed += elapsed
        if self.elapsed > 0.5:
            self.served //= 2
            self.elapsed /= 2

    @property
    def value(self) -> float:
        return self.served / self.elapsed if self.elapsed else 0.0


class _Trial:
    def __init__(self, step: int, size: int, before: float, now: float) -> None:
        self.step = step  # +1 or -1
        self.size = size  # workers the trial measures
        self.before = before
        self.deadline = now + _TRIAL_WITHIN

    def kept(self, rate: float) -> bool:
        """Whether the new size, measured serving `rate`, serves enough to stay."""
        return rate >= self.before * (1 + _GAIN if self.step > 0 else 1 - _GAIN)


class PoolSizer:
    """Feed it what the workers did each tick; it answers how the pool should change."""

    def __init__(self, min_workers: int = 1) -> None:
        self.min_workers = min_workers
        self.tick = TICK_IDLE  # how long the monitor sleeps before the next observation
        self.trials = 0  # trials finished (for tests and curiosity)
        self._seen: dict[int, tuple[int, float]] = {}  # worker -> (requests taken, since when)
        self._roomy_ticks = 0
        self._spare_since: float | None = None
        self._size = 0
        self._recent = _Rate()  # busy ticks at the current size
        self._trial: _Trial | None = None
        self._next_trial = 0.0
        self._hold = _HOLD_MIN

    def observe(self, now: float, elapsed: float, workers: list[tuple[int, list[int]]]) -> int:
        """`workers`: (ident, [busy, requests taken]) for each. Returns how many workers to
        start (> 0) or to end (< 0), or 0."""
        waiting = stuck = served = 0
        seen = {}
        for ident, (busy, seq) in workers:
            before, since = self._seen.get(ident, (-1, now))
            if seq != before:
                since = now
            seen[ident] = (seq, since)
            waiting += not busy
            stuck += busy and now - since >= _STUCK_FOR
            served += seq - before if before >= 0 else 0
        self._seen = seen
        size = len(workers)
        active = size - waiting - stuck
        busy_tick = self.tick == TICK_BUSY  # began with a worker busy: the load was on
        saturated = busy_tick and not waiting  # a tick that began idle says nothing of it
        self.tick = TICK_BUSY if waiting < size else TICK_IDLE
        roomy = served * _PYTHON_PER_REQUEST < elapsed / 2
        self._roomy_ticks = self._roomy_ticks + 1 if saturated and roomy else 0
        if size != self._size:
            self._size = size
            self._recent = _Rate()
        elif busy_tick:
            self._recent.add(served, elapsed)

        if workers and stuck == size:
            self._trial = None  # a blocked device measures nothing
            self._spare_since = None
            return 1
        if self._trial is not None:
            return self._judge(now, size)
        can_try = now >= self._next_trial and self._recent.elapsed >= _BEFORE_MIN
        if can_try and self._roomy_ticks >= 3 and active < _ACTIVE_MAX:
            return self._try(1, size, now)
        # Spares: two or more waiting; or, while the GIL is full, every worker not stuck but
        # one, whether it is running or waiting at this instant.
        spare = waiting - 1 if waiting >= 2 else 0 if roomy else size - stuck - 1
        if size <= self.min_workers:
            self._spare_since = None
        elif spare > 0:
            if self._spare_since is None:
                self._spare_since = now
            elif now - self._spare_since >= _SPARE_FOR:
                self._spare_since = None
                return -spare
        else:
            self._spare_since = None
            if can_try and saturated and active >= 2:
                return self._try(-1, size, now)
        return 0

    def _try(self, step: int, size: int, now: float) -> int:
        self._trial = _Trial(step, size + step, self._recent.value, now)
        self._roomy_ticks = 0
        self._spare_since = None
        return step

    def _judge(self, now: float, size: int) -> int:
        trial = self._trial
        assert trial is not None
        settled = size == trial.size and self._recent.elapsed >= _TRIAL_FOR
        if not settled and now < trial.deadline:
            return 0
        self._trial = None
        if not settled:  # the size never settled or the load went away: no verdict
            self._next_trial = now + self._hold
            return 0
        self.trials += 1
        kept = trial.kept(self._recent.value)
        self._hold = _HOLD_MIN if kept else min(self._hold * 2, _HOLD_MAX)
        self._next_trial = now + self._hold
        return 0 if kept else -trial.step
