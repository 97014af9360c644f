"""striped over many geometries: the bytes on every stripe device must match the kernel's.

Each geometry writes the whole device, then ranges that straddle chunk and stripe boundaries,
reads it all back, and the sha256 of every backing file proves the layout byte for byte.
"""

from __future__ import annotations

from scenarios import (
    Op,
    Scenario,
    create,
    deps,
    read,
    remove,
    state,
    status,
    table,
    wait_event,
    write,
)

LABELS = "ABCDEFGH"


def _io(name: str, size: int, chunk: int, seed: int) -> list[Op]:
    ops = [write(name, 0, size, seed=seed)]
    # Straddle a chunk boundary, a whole stripe row, and the last chunk.
    for i, (off, length) in enumerate([(chunk - 1, 2), (max(chunk // 2, 1), chunk * 3),
                                       (size // 3, chunk + 1), (size - chunk, chunk)]):
        if off >= 0 and off + length <= size:
            ops.append(write(name, off, length, seed=seed * 100 + i + 1))
    ops += [read(name, 0, size), read(name, chunk - 1, min(3, size - chunk + 1))]
    return ops


def geometry(name: str, stripes: int, chunk: int, rows: int,
             offsets: list[int] | None = None, slack: int = 64) -> Scenario:
    """`stripes` devices, each area `rows` chunks long, starting at `offsets` on its device."""
    offsets = offsets or [0] * stripes
    width = rows * chunk
    size = width * stripes
    devices: dict[str, int | tuple[int, int]] = {
        LABELS[i]: offsets[i] + width + slack for i in range(stripes)}
    areas = " ".join(f"{{{LABELS[i]}}} {offsets[i]}" for i in range(stripes))
    tbl = f"0 {size} striped {stripes} {chunk} {areas}"
    return Scenario(f"striped-{name}", devices, [
        create("s", tbl), state("s"), *_io("s", size, chunk, seed=stripes * 1000 + chunk)])


SCENARIOS = [
    geometry("2x8", 2, 8, 64),
    geometry("2x128", 2, 128, 8),
    geometry("3x8", 3, 8, 16),
    geometry("4x16-offsets", 4, 16, 8, offsets=[0, 64, 128, 200]),
    geometry("3x1", 3, 1, 40),
    geometry("3x3-non-power-of-two", 3, 3, 33),
    geometry("5x24", 5, 24, 4, offsets=[8, 0, 16, 24, 32]),
    geometry("2x7-odd-offsets", 2, 7, 10, offsets=[1, 3]),
    geometry("1x8-single-stripe", 1, 8, 32, offsets=[5]),
    geometry("8x4", 8, 4, 8),
    Scenario("striped-same-device-twice", {"A": 2048}, [
        create("s", "0 1024 striped 2 16 {A} 0 {A} 1024"),
        state("s"),
        *_io("s", 1024, 16, seed=77),
    ]),
    Scenario("striped-mixed-table", {"A": 1024, "B": 1024, "C": 1024}, [
        # Two striped targets of different geometry around a linear one.
        create("s", "0 256 striped 2 8 {A} 0 {B} 0\n"
                    "256 100 linear {C} 0\n"
                    "356 384 striped 3 32 {A} 128 {B} 128 {C} 128"),
        state("s"),
        write("s", 0, 740, seed=78),
        write("s", 250, 120, seed=79),
        write("s", 350, 40, seed=80),
        read("s", 0, 740),
    ]),
    Scenario("striped-io-errors", {"A": 1024}, [
        # stripe_end_io: a failed request marks its stripe D and raises one event; every
        # stripe on the failing device counts it (matched by device name).
        create("bad", "0 2048 error"),
        create("s", "0 64 striped 2 16 {A} 0 {dm:bad} 0"),
        create("t", "0 64 striped 2 16 {dm:bad} 0 {dm:bad} 512"),
        read("s", 0, 16),
        status("s"),
        read("s", 16, 8),
        wait_event("s", 1),
        status("s"),
        read("t", 0, 8),
        wait_event("t", 1),
        status("t"),
        remove("s"),
        remove("t"),
        remove("bad"),
    ]),
    Scenario("striped-errors", {"A": 1024, "B": 1024}, [
        create("e", "0 15 striped 2 8 {A} 0 {B} 0"),  # length not divisible by #stripes
        create("e", "0 24 striped 2 8 {A} 0 {B} 0"),  # width 12 not divisible by chunk 8
        create("e", "0 32 striped 0 8"),
        create("e", "0 32 striped 2 0 {A} 0 {B} 0"),
        create("e", "0 32 striped 2 x {A} 0 {B} 0"),
        create("e", "0 32 striped x 8 {A} 0 {B} 0"),
        create("e", "0 32 striped 2 8 {A} 0"),  # too few destinations
        create("e", "0 32 striped 2 8 {A} 0 {B} 0 {A} 64"),  # too many
        create("e", "0 32 striped 2 8 {A} 0 {B} x"),
        create("e", "0 32 striped 2 8 {A} 0 3000:0 0"),  # no such device
        create("e", "0 32 striped 2 8 {A} 0 /dev/nonexistent 0"),
        create("e", "0 32 striped 2 8"),
        create("e", "0 32 striped"),
        create("e", "0 4096 striped 2 8 {A} 0 {B} 0"),  # areas past the devices' ends
        create("e", "0 32 striped 2 8 {A} 0 {B} 1020"),  # one area past its end
        create("e", "0 32 striped 2 8 {A} 0 {B} 992"),  # exactly to the end: fine
        table("e"),
        deps("e"),
    ]),
]
