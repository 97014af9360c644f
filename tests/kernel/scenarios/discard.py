"""Discards (BLKDISCARD) through linear, striped, zero and error targets and tables mixing
them: which requests the kernel takes, its errno for the others, and the bytes left on the
backing loop devices (their discards punch holes: the sha256 of every backing file)."""

from __future__ import annotations

from scenarios import Scenario, create, discard, read, remove, status, wait_status, write

SCENARIOS = [
    Scenario("discard-linear", {"A": (1024, 60)}, [
        create("l", "0 512 linear {A} 256"),
        discard("l", 0, 64),
        discard("l", 100, 9),  # not a whole 4 KiB block of the backing file
        read("l", 0, 512),
        discard("l", 500, 24),  # past the device's end
        discard("l", 0, 0),
        read("l", 0, 512),
        remove("l"),
    ]),
    Scenario("discard-striped", {"A": (1024, 61), "B": (1024, 62)}, [
        create("s", "0 512 striped 2 16 {A} 0 {B} 0"),
        discard("s", 8, 40),  # across three chunks on both stripes
        discard("s", 200, 1),
        read("s", 0, 512),
        status("s"),
        remove("s"),
    ]),
    Scenario("discard-zero-error", {}, [
        create("z", "0 64 zero"),
        discard("z", 0, 64),
        read("z", 0, 64),
        create("e", "0 64 error"),
        discard("e", 0, 8),
        remove("z"),
        remove("e"),
    ]),
    Scenario("discard-mixed-tables", {"A": (1024, 63)}, [
        create("lz", "0 64 linear {A} 0\n64 64 zero"),
        discard("lz", 32, 64),  # across the two targets
        read("lz", 0, 128),
        create("le", "0 64 linear {A} 512\n64 64 error"),
        discard("le", 0, 8),
        discard("le", 60, 8),
        read("le", 0, 64),
        remove("lz"),
        remove("le"),
    ]),
    Scenario("discard-stacked", {"A": (1024, 65)}, [
        create("z", "0 64 zero"),
        create("over-zero", "0 64 linear {dm:z} 0"),  # a lower device without discards
        discard("over-zero", 0, 8),
        create("l", "0 128 linear {A} 0"),
        create("over-l", "0 64 linear {dm:l} 32"),
        discard("over-l", 8, 16),
        read("l", 0, 128),
        remove("over-zero"),
        remove("over-l"),
        remove("z"),
        remove("l"),
    ]),
    Scenario("discard-snapshots", {"A": (1024, 66), "B": 1024}, [
        create("snap", "0 1024 snapshot {A} {B} P 8"),
        create("base", "0 1024 snapshot-origin {A}"),
        discard("snap", 0, 8),  # no discard_zeroes_cow: the target takes none
        discard("base", 0, 8),  # snapshot-origin takes none
        write("base", 0, 16, seed=67),
        remove("snap"),
        create("snapz", "0 1024 snapshot {A} {B} P 8 1 discard_zeroes_cow"),
        discard("snapz", 0, 8),  # a remapped chunk: zeroed in the COW
        read("snapz", 0, 16),
        status("snapz"),
        remove("snapz"),
        remove("base"),
    ]),
    Scenario("discard-mirror", {"A": (1024, 68), "B": (1024, 69)}, [
        create("m", "0 512 mirror core 1 64 2 {A} 0 {B} 0", reply=False),  # resync: a race
        wait_status("m", "512/512"),
        discard("m", 64, 64),
        read("m", 0, 256),
        remove("m"),
    ]),
    Scenario("discard-striped-failing-stripe", {"A": (1024, 64)}, [
        create("bad", "0 2048 error"),
        create("s", "0 64 striped 2 16 {A} 0 {dm:bad} 0"),
        discard("s", 0, 16),
        discard("s", 16, 8),
        status("s"),
        read("s", 0, 16),
        remove("s"),
        remove("bad"),
    ]),
]
