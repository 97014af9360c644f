"""Events of a mirror table count only once it is live, as in the kernel (the table's event
callback is bound when it is swapped in): `dmsetup wait` never wakes for a table that was
only loaded, and the in-sync event of a resync after the swap is the one event."""

from __future__ import annotations

import threading
from collections.abc import Callable

from devmapper.library import DeviceMapper
from devmapper.targets.mirror import MirrorTarget

from .mirror_helpers import MiB, target, wait_sync


def inactive_mirror(dm: DeviceMapper, name: str) -> MirrorTarget:
    engine = dm.transport.engine  # type: ignore[attr-defined]
    table = engine.by_name[name].inactive
    assert table is not None
    t = table.targets[0]
    assert isinstance(t, MirrorTarget)
    return t


def test_loaded_table_raises_no_event(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    size = 2 * MiB
    a, b, log = mkfile("a.img", size, seed=3), mkfile("b.img", size), mkfile("l.img", MiB)
    dm.create("m", f"0 {size // 512} linear {a} 0")
    ev = dm.info("m").event_nr
    woke = threading.Event()

    def waiter() -> None:
        dm.wait("m", ev)
        woke.set()

    threading.Thread(target=waiter, daemon=True).start()
    dm.load("m", f"0 {size // 512} mirror disk 2 {log} 256 2 {a} 0 {b} 0 1 handle_errors")
    t = inactive_mirror(dm, "m")
    t._event()  # what a failure noticed before the swap would raise: nobody hears it
    t.log.event()  # type: ignore[attr-defined]  # the disk log's own (log device failed)
    assert not woke.wait(0.3)
    assert dm.info("m").event_nr == ev
    dm.clear("m")
    assert dm.info("m").event_nr == ev
    # Live: the resync's one in-sync event wakes the waiter.
    dm.load("m", f"0 {size // 512} mirror core 1 256 2 {a} 0 {b} 0")
    dm.resume("m")
    assert woke.wait(10)
    wait_sync(dm, "m")
    assert dm.info("m").event_nr == ev + 1
    target(dm, "m")._event()
    assert dm.info("m").event_nr == ev + 2


def test_nosync_mirror_loaded_and_resumed_raises_no_event(
        dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    """In sync from the constructor on (nosync): the kernel's kmirrord sees that before the
    table is bound, so no event ever comes."""
    size = MiB
    a, b = mkfile("a.img", size), mkfile("b.img", size)
    dm.create("m", f"0 {size // 512} mirror core 2 256 nosync 2 {a} 0 {b} 0")
    ev = dm.info("m").event_nr
    dm.load("m", f"0 {size // 512} mirror core 2 128 nosync 2 {a} 0 {b} 0")
    dm.resume("m")
    threading.Event().wait(0.2)
    assert dm.info("m").event_nr == ev
