"""Leg-failure scenarios run the same way on the engine and on the real kernel.

Each scenario yields checkpoint lines "label|status params|event_nr[|extra]" with device
names replaced by labels (A, B: backing devices; X: a stacked linear device that is later
reloaded with the `error` target). The engine side runs here in Python; KERNEL_SCRIPT runs
the same steps with dmsetup/dd in the QEMU guest and prints the same lines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from devmapper.library import DeviceMapper

from .mirror_helpers import read_at

REGION = 512  # sectors
SIZE = 4096  # sectors: 8 regions
W_OFF = 10 * 4096  # region 0
V_OFF = 300 * 4096  # region 4


class EngineRun:
    def __init__(self, dm: DeviceMapper, a: str, b: str) -> None:
        self.dm = dm
        self.names = {a: "A", b: "B"}
        self.lines: list[str] = []
        self.a = a

    def label(self, params: str) -> str:
        return " ".join(self.names.get(w, w) for w in params.split())

    def mark(self, label: str, name: str = "m", *extra: str) -> None:
        params = self.dm.status(name)[0].params
        ev = self.dm.info(name).event_nr
        self.lines.append("|".join([label, self.label(params), str(ev), *extra]))

    def stacked(self, b: str) -> str:
        self.dm.create("x", f"0 {SIZE} linear {b} 0")
        info = self.dm.info("x")
        dev = f"{info.major}:{info.minor}"
        self.names[dev] = "X"
        return dev

    def fail_x(self) -> None:
        self.dm.load("x", f"0 {SIZE} error")
        self.dm.resume("x")

    def wait_sync(self) -> None:
        deadline = time.monotonic() + 30
        while " 8/8 " not in self.dm.status("m")[0].params:
            assert time.monotonic() < deadline
            time.sleep(0.01)

    def write_async(self, off: int, byte: bytes) -> dict[str, object]:
        result: dict[str, object] = {}

        def run() -> None:
            try:
                with self.dm.open("m") as blk:
                    blk.write(off, memoryview(byte * 4096))
                result["rc"] = 0
            except OSError as e:
                result["rc"] = e.errno

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(0.5)  # long enough to complete; a held write stays
        result["thread"] = t
        return result


def _done(r: dict[str, object]) -> str:
    return "done" if "rc" in r else "held"


def engine_write_failure(dm: DeviceMapper, a: str, b: str, features: str) -> list[str]:
    run = EngineRun(dm, a, b)
    x = run.stacked(b)
    dm.create("m", f"0 {SIZE} mirror core 1 {REGION} 2 {a} 0 {x} 0 {features}".rstrip())
    run.wait_sync()
    run.mark("synced")
    run.fail_x()
    w = run.write_async(W_OFF, b"W")
    run.mark("write1", "m", _done(w))
    v = run.write_async(V_OFF, b"V")
    run.mark("write2", "m", _done(v))
    with dm.open("m") as blk:
        data = blk.read(W_OFF, 8)
    run.mark("read", "m", data.decode())
    dm.suspend("m", noflush=True)
    run.mark("suspended")
    dm.load("m", f"0 {SIZE} linear {a} 0")
    dm.resume("m")
    for r in (w, v):
        t = r["thread"]
        assert isinstance(t, threading.Thread)
        t.join(10)
    run.mark("linear", "m", str(w.get("rc")), str(v.get("rc")),
             (read_at(a, W_OFF, 8) + read_at(a, V_OFF, 8)).decode())
    dm.remove("m")
    dm.remove("x")
    return run.lines


def engine_resume_after_failure(dm: DeviceMapper, a: str, b: str) -> list[str]:
    run = EngineRun(dm, a, b)
    x = run.stacked(b)
    dm.create("m", f"0 {SIZE} mirror core 1 {REGION} 2 {a} 0 {x} 0")
    run.wait_sync()
    run.mark("synced")
    run.fail_x()
    w = run.write_async(W_OFF, b"W")
    run.mark("write1", "m", str(w.get("rc")))
    dm.suspend("m")
    dm.resume("m")
    run.wait_sync()
    time.sleep(0.1)
    run.mark("resumed")
    dm.remove("m")
    dm.remove("x")
    return run.lines


def engine_read_failure(dm: DeviceMapper, a: str, b: str, features: str) -> list[str]:
    run = EngineRun(dm, a, b)
    x = run.stacked(b)
    dm.create("m", f"0 {SIZE} mirror core 1 {REGION} 2 {x} 0 {a} 0 {features}".rstrip())
    run.wait_sync()
    run.mark("synced")
    run.fail_x()
    with dm.open("m") as blk:
        n = len(blk.read(W_OFF, 4096))
    run.mark("read", "m", str(n))
    dm.remove("m")
    dm.remove("x")
    return run.lines


ENGINE_SCENARIOS: dict[str, Callable[[DeviceMapper, str, str], list[str]]] = {
    "write": lambda dm, a, b: engine_write_failure(dm, a, b, ""),
    "write_handle_errors": lambda dm, a, b: engine_write_failure(dm, a, b, "1 handle_errors"),
    "resume_after_failure": engine_resume_after_failure,
    "read": lambda dm, a, b: engine_read_failure(dm, a, b, ""),
    "read_handle_errors": lambda dm, a, b: engine_read_failure(dm, a, b, "1 handle_errors"),
}

#: The same scenarios for bash in the guest: prints "== name" and then checkpoint lines.
#: $A and $B are loop devices; names are mapped back to labels by the caller.
KERNEL_SCRIPT = r"""
SIZE=4096; REGION=512
mark() { local l=$1 n=$2; shift 2
  local s=$(dmsetup status $n | cut -d' ' -f4-)
  local e=$(dmsetup info -c --noheadings -o events $n)
  local IFS='|'; echo "$l|$s|${e// /}${*:+|$*}"; }
waitsync() { for i in $(seq 600); do
  case "$(dmsetup status m)" in *" 8/8 "*) return;; esac; sleep 0.1; done; }
stacked() { dmsetup create x --table "0 $SIZE linear $B 0"; }
failx() { dmsetup load x --table "0 $SIZE error"; dmsetup resume x; }
wr() { ( head -c 4096 /dev/zero | tr '\0' "$2" |
         dd of=/dev/mapper/m bs=4096 seek=$1 oflag=direct status=none; echo $? > rc.$2 ) &
       sleep 2; }
done_() { [ -e rc.$1 ] && echo done || echo held; }
peek() { dd if=$A bs=1 skip=$1 count=8 status=none; }
write_failure() {
  rm -f rc.W rc.V; stacked
  dmsetup create m --table "0 $SIZE mirror core 1 $REGION 2 $A 0 /dev/mapper/x 0 $1"
  waitsync; mark synced m; failx
  wr 10 W; mark write1 m $(done_ W)
  wr 300 V; mark write2 m $(done_ V)
  mark read m $(dd if=/dev/mapper/m bs=4096 skip=10 count=1 iflag=direct status=none | head -c 8)
  dmsetup suspend --noflush m; sleep 1; mark suspended m
  dmsetup load m --table "0 $SIZE linear $A 0"; dmsetup resume m; wait
  mark linear m $(cat rc.W) $(cat rc.V) "$(peek 40960)$(peek 1228800)"
  dmsetup remove m; dmsetup remove x
}
echo "== write"; write_failure ""
echo "== write_handle_errors"; write_failure "1 handle_errors"
echo "== resume_after_failure"
stacked; dmsetup create m --table "0 $SIZE mirror core 1 $REGION 2 $A 0 /dev/mapper/x 0"
waitsync; mark synced m; failx
head -c 4096 /dev/zero | tr '\0' W | dd of=/dev/mapper/m bs=4096 seek=10 oflag=direct status=none
mark write1 m $?
dmsetup suspend m; dmsetup resume m; waitsync; sleep 1; mark resumed m
dmsetup remove m; dmsetup remove x
for f in "" "1 handle_errors"; do
  [ -z "$f" ] && echo "== read" || echo "== read_handle_errors"
  stacked; dmsetup create m --table "0 $SIZE mirror core 1 $REGION 2 /dev/mapper/x 0 $A 0 $f"
  waitsync; mark synced m; failx
  mark read m $(dd if=/dev/mapper/m bs=4096 skip=10 count=1 iflag=direct status=none | wc -c)
  dmsetup remove m; dmsetup remove x
done
"""

#: What Debian's 6.1 kernel printed for KERNEL_SCRIPT (names mapped to labels); "suspended"
#: lines carry no completion state (a write held there is requeued until the resume).
KERNEL_TRACES: dict[str, list[str]] = {
    "write": [
        "synced|2 A X 8/8 1 AA 1 core|1",
        "write1|2 A X 7/8 1 AD 1 core|1|done",
        "write2|2 A X 6/8 1 AD 1 core|1|done",
        "read|2 A X 6/8 1 AD 1 core|1|WWWWWWWW",
        "suspended|2 A X 6/8 1 AD 1 core|1",
        "linear||1|0|0|WWWWWWWWVVVVVVVV",
    ],
    "write_handle_errors": [
        "synced|2 A X 8/8 1 AA 1 core|1",
        "write1|2 A X 7/8 1 AD 1 core|2|held",
        "write2|2 A X 6/8 1 AD 1 core|2|held",
        "read|2 A X 6/8 1 AD 1 core|2|WWWWWWWW",
        "suspended|2 A X 6/8 1 AD 1 core|2",
        "linear||2|0|0|WWWWWWWWVVVVVVVV",
    ],
    "resume_after_failure": [
        "synced|2 A X 8/8 1 AA 1 core|1",
        "write1|2 A X 7/8 1 AD 1 core|1|0",
        "resumed|2 A X 8/8 1 AA 1 core|2",
    ],
    "read": [
        "synced|2 X A 8/8 1 AA 1 core|1",
        "read|2 X A 8/8 1 RA 1 core|1|4096",
    ],
    "read_handle_errors": [
        "synced|2 X A 8/8 1 AA 1 core|1",
        "read|2 X A 8/8 1 RA 1 core|2|4096",
    ],
}


# ---------------------------------------------------------------- requeue at a noflush suspend
#
# The kernel ends a held write at a noflush suspend with DM_MAPIO_REQUEUE: dm.c pushes it
# back and re-issues it to whatever table is live after the resume. The engine does the same
# (targets.base.Requeue, MappedDevice's pushback): the writer hears nothing until the next
# table has taken or failed the write.


def _rc(r: dict[str, object]) -> str:
    """dd's exit status in the guest: 0, or 1 for an I/O error."""
    return "held" if "rc" not in r else "0" if r["rc"] == 0 else "1"


def engine_requeue(dm: DeviceMapper, a: str, b: str, then: str) -> list[str]:
    run = EngineRun(dm, a, b)
    x = run.stacked(b)
    dm.create("m", f"0 {SIZE} mirror core 1 {REGION} 2 {a} 0 {x} 0 1 handle_errors")
    run.wait_sync()
    run.fail_x()
    w = run.write_async(W_OFF, b"W")
    run.mark("write", "m", _done(w))
    dm.suspend("m", noflush=True)
    t = w["thread"]
    assert isinstance(t, threading.Thread)
    if then == "same_table":
        dm.resume("m")  # no new table: the kernel requeues into this one, which holds again
        time.sleep(1)  # recovery of the region tries the dead leg: S, an event
        run.mark("resumed", "m", _rc(w))
        dm.suspend("m")  # a flushing suspend fails what is held
        t.join(10)
        run.mark("suspended", "m", _rc(w))
        dm.resume("m")
    else:
        dm.load("m", f"0 {SIZE} error")
        dm.resume("m")
        t.join(10)
        run.mark("error", "m", _rc(w), read_at(a, W_OFF, 8).decode())
    dm.remove("m")
    dm.remove("x")
    return run.lines


REQUEUE_SCENARIOS: dict[str, Callable[[DeviceMapper, str, str], list[str]]] = {
    "requeue_same_table": lambda dm, a, b: engine_requeue(dm, a, b, "same_table"),
    "requeue_to_error": lambda dm, a, b: engine_requeue(dm, a, b, "error"),
}

#: The guest's side, with KERNEL_SCRIPT's helpers (run after it in the same shell).
REQUEUE_KERNEL_SCRIPT = r"""
rc_() { [ -e rc.$1 ] && cat rc.$1 || echo held; }
requeue() {
  rm -f rc.W; stacked
  dmsetup create m --table "0 $SIZE mirror core 1 $REGION 2 $A 0 /dev/mapper/x 0 1 handle_errors"
  waitsync; failx
  wr 10 W; mark write m $(done_ W)
  dmsetup suspend --noflush m
  if [ $1 = same_table ]; then
    dmsetup resume m; sleep 1; mark resumed m $(rc_ W)
    dmsetup suspend m; wait; mark suspended m $(rc_ W); dmsetup resume m
  else
    dmsetup load m --table "0 $SIZE error"; dmsetup resume m; wait
    mark error m $(rc_ W) "$(peek 40960)"
  fi
  dmsetup remove m; dmsetup remove x
}
echo "== requeue_same_table"; requeue same_table
echo "== requeue_to_error"; requeue error
"""

#: What the kernel does (the QEMU tier checks it), and the engine with it.
KERNEL_REQUEUE_TRACES: dict[str, list[str]] = {
    "requeue_same_table": [
        "write|2 A X 7/8 1 AD 1 core|2|held",
        "resumed|2 A X 7/8 1 AD 1 core|3|held",  # requeued into the same table: held again
        "suspended|2 A X 7/8 1 AD 1 core|3|1",  # the flushing suspend fails it
    ],
    "requeue_to_error": [
        "write|2 A X 7/8 1 AD 1 core|2|held",
        "error||2|1|WWWWWWWW",  # re-issued to the error table: EIO (A has the data anyway)
    ],
}
