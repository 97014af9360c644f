"""mirror: legs, region sync, core and disk logs; every leg's and the log's bytes on disk."""

from __future__ import annotations

from scenarios import (
    Scenario,
    create,
    info,
    pause,
    read,
    remove,
    state,
    status,
    wait_event,
    wait_status,
    write,
)

LEGS = (2048, 70)  # sectors, fill seed: the first leg holds data to resync


def _io(name: str) -> list:
    return [
        write(name, 0, 64, seed=71),
        write(name, 1000, 100, seed=72),
        read(name, 0, 2048),
    ]


SCENARIOS = [
    Scenario("mirror-core-nosync", {"A": LEGS, "B": 2048}, [
        create("m", "0 2048 mirror core 2 64 nosync 2 {A} 0 {B} 0"),
        state("m"),
        *_io("m"),
        status("m"),
        remove("m"),
    ], needs=("mirror",)),
    Scenario("mirror-core-resync", {"A": LEGS, "B": 2048}, [
        create("m", "0 2048 mirror core 2 64 sync 2 {A} 0 {B} 0", reply=False),
        wait_status("m", " 32/32 "),
        wait_event("m", 1),  # the event that marks the end of the resync
        state("m"),
        *_io("m"),
        remove("m"),
    ], needs=("mirror",)),
    Scenario("mirror-core-default-three-legs", {"A": LEGS, "B": 2048, "C": 2048}, [
        create("m", "0 1024 mirror core 1 128 3 {A} 0 {B} 512 {C} 1024", reply=False),
        wait_status("m", " 8/8 "),
        wait_event("m", 1),  # the event that marks the end of the resync
        state("m"),
        write("m", 10, 20, seed=73),
        read("m", 0, 1024),
        remove("m"),
    ], needs=("mirror",)),
    Scenario("mirror-disk-log", {"A": LEGS, "B": 2048, "C": 64}, [
        create("m", "0 2048 mirror disk 2 {C} 64 2 {A} 0 {B} 0", reply=False),
        wait_status("m", " 32/32 "),
        wait_event("m", 1),  # the event that marks the end of the resync
        state("m"),
        *_io("m"),
        info("m"),
        remove("m"),
    ], needs=("mirror",)),
    Scenario("mirror-disk-log-reopen-in-sync", {"A": LEGS, "B": 2048, "C": 64}, [
        # The second activation reads the log the first one left: nothing to resync.
        create("m", "0 2048 mirror disk 2 {C} 64 2 {A} 0 {B} 0", reply=False),
        wait_status("m", " 32/32 "),
        remove("m"),
        # The log says every region is in sync: one event at activation, nothing to copy.
        create("m2", "0 2048 mirror disk 2 {C} 64 2 {A} 0 {B} 0", reply=False),
        wait_event("m2", 1),
        status("m2"),
        write("m2", 0, 64, seed=74),
        read("m2", 0, 2048),
        remove("m2"),
    ], needs=("mirror",)),
    Scenario("mirror-features", {"A": LEGS, "B": 2048}, [
        create("m", "0 2048 mirror core 2 64 nosync 2 {A} 0 {B} 0 1 handle_errors"),
        state("m"),
        remove("m"),
        create("k", "0 2048 mirror core 2 64 nosync 2 {A} 0 {B} 0 2 handle_errors keep_log"),
        create("k", "0 2048 mirror core 2 64 nosync 2 {A} 0 {B} 0 1 keep_log"),
    ], needs=("mirror",)),
    Scenario("mirror-errors", {"A": 2048, "B": 2048, "C": 64}, [
        create("e", "0 2048 mirror core 2 64 nosync 1 {A} 0"),
        create("e", "0 2048 mirror core 2 64 nosync 2 {A} 0"),
        create("e", "0 2048 mirror core 2 63 nosync 2 {A} 0 {B} 0"),
        create("e", "0 2048 mirror core 1 0 2 {A} 0 {B} 0"),
        create("e", "0 2048 mirror bogus 1 64 2 {A} 0 {B} 0"),
        create("e", "0 2048 mirror core 3 64 x y 2 {A} 0 {B} 0"),
        create("e", "0 2048 mirror disk 2 {C} 64 2 {A} 0 {B} x"),
        create("e", "0 2048 mirror core 2 64 nosync 2 {A} 0 {B} 0 1 bogus"),
        create("e", "0 2048 mirror core 2 64 nosync 2 {A} 0 3000:0 0"),
        create("e", "0 4096 mirror core 2 64 nosync 2 {A} 0 {B} 0"),
        create("e", "0 2048 mirror core 2 64 nosync 10 {A} 0 {B} 0 {A} 0 {B} 0 {A} 0 {B} 0 "
               "{A} 0 {B} 0 {A} 0 {B} 0"),
    ], needs=("mirror",)),
    Scenario("mirror-failed-leg", {"A": LEGS}, [
        # The second leg is an error target: without handle_errors the write still succeeds
        # on the first leg, the leg is marked D and the region falls out of sync, and stays
        # so (no event): the core log's resync search is past it until the next resume.
        create("bad", "0 2048 error"),
        create("m", "0 2048 mirror core 2 64 nosync 2 {A} 0 {dm:bad} 0", reply=False),
        # kmirrord's first pass runs at resume, before any write can come; the engine's
        # worker thread may start later, and would then find the failed region and
        # "recover" it: let it run first.
        pause(1.0),
        write("m", 0, 64, seed=75),
        wait_status("m", " AD "),
        wait_event("m", 1, timeout=5),
        status("m"),
        read("m", 0, 64),
        remove("m"),
        info("bad"),
    ], needs=("mirror",)),
]
