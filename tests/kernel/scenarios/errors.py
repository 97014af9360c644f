"""Table validation: every errno TABLE_LOAD and resume give, on a first and on a later load."""

from __future__ import annotations

from scenarios import (
    Scenario,
    clear,
    create,
    info,
    load,
    ls,
    read,
    remove,
    resume,
    state,
    suspend,
    write,
)

# (why, table) loaded into a device that never had a table: checks run at TABLE_LOAD.
FIRST_LOAD = [
    ("gap", "0 10 zero\n20 10 zero"),
    ("overlap", "0 10 zero\n5 10 zero"),
    ("not at 0", "5 10 zero"),
    ("zero length", "0 0 zero"),
    ("zero length later", "0 10 zero\n10 0 zero"),
    ("unknown target", "0 10 frobnicate"),
    ("unknown after good", "0 10 zero\n10 10 frobnicate"),
    ("linear no args", "0 10 linear"),
    ("linear one arg", "0 10 linear {A}"),
    ("linear bad offset", "0 10 linear {A} x"),
    ("linear negative offset", "0 10 linear {A} -1"),
    ("linear extra arg", "0 10 linear {A} 0 x"),
    ("missing major:minor", "0 10 linear 3000:0 0"),
    ("major:minor out of range", "0 10 linear 5000:0 0"),
    ("missing path", "0 10 linear /dev/nonexistent 0"),
    ("area past end", "0 4096 linear {A} 0"),
    ("offset past end", "0 10 linear {A} 2040"),
    ("offset at end", "0 8 linear {A} 2048"),
    ("area exactly to the end", "0 8 linear {A} 2040"),
    ("zero with args", "0 10 zero x"),
    ("error with args", "0 10 error {A} 0"),
    ("error with junk args", "0 10 error a b c"),
    ("largest device", f"0 {(1 << 54) - 1} zero"),
]


def _first_load_ops() -> list:
    ops = []
    for _why, tbl in FIRST_LOAD:
        ops += [create("t"), load("t", tbl), info("t"), remove("t")]
    return ops


SCENARIOS = [
    Scenario("table-load-errors", {"A": 2048}, _first_load_ops()),
    Scenario("create-with-bad-table-removes-device", {"A": 2048}, [
        create("t", "0 10 frobnicate"),
        ls(),
        create("t", "0 4096 linear {A} 0"),
        ls(),
    ]),
    Scenario("load-errors-misc", {"A": 2048}, [
        load("nosuch", "0 8 zero"),
        create("t"),
        load("t", ""),  # no targets
        info("t"),
        create("u", "0 8 zero"),
        load("t", "0 8 linear {dm:u} 0"),
        info("u"),  # the inactive table holds u open
        load("u", "0 8 linear {dm:t} 0"),  # t has no live table: nothing to map
        clear("t"),
        info("u"),
        resume("nosuch"),
        suspend("nosuch"),
        clear("nosuch"),
        info("nosuch"),
    ]),
    Scenario("later-load-area-past-end", {"A": 2048}, [
        # A later load is checked against its devices only at resume: the load succeeds,
        # the resume fails, the device stays suspended and the inactive table is dropped.
        create("t", "0 100 linear {A} 0"),
        write("t", 0, 100, seed=90),
        load("t", "0 4096 linear {A} 0"),
        state("t"),
        resume("t"),
        state("t"),
        resume("t"),
        state("t"),
        read("t", 0, 100),
        load("t", "0 8 linear {A} 2044"),
        resume("t"),
        state("t"),
        load("t", "0 200 linear {A} 0"),
        resume("t"),
        state("t"),
    ]),
    Scenario("later-load-errors-still-at-load", {"A": 2048}, [
        # Constructor errors and gaps are found at load even when a table is live.
        create("t", "0 100 linear {A} 0"),
        load("t", "0 10 zero\n20 10 zero"),
        load("t", "0 10 frobnicate"),
        load("t", "0 10 linear 3000:0 0"),
        load("t", "0 10 linear /dev/nonexistent 0"),
        state("t"),
    ]),
    Scenario("table-over-device-after-its-first-load", {}, [
        # Once a device had a table loaded (even never resumed) other tables may map it.
        create("fresh"),
        load("fresh", "0 8 zero"),
        create("u", "0 8 linear {dm:fresh} 0"),
        info("fresh"),
        state("u"),
    ]),
    Scenario("self-reference-later-load", {"A": 1024}, [
        # Accepted when a table is live: the inactive table then holds the device itself.
        create("t", "0 100 linear {A} 0"),
        load("t", "0 8 linear {dm:t} 0"),
        state("t"),
        clear("t"),
        info("t"),
    ]),
    # ---- differences the engine once had, kept as regression checks
    Scenario("table-over-device-that-never-had-a-table", {}, [
        create("fresh"),
        create("v", "0 8 zero"),
        load("v", "0 8 linear {dm:fresh} 0"),
    ]),
    Scenario("self-reference-first-load", {}, [
        create("t"),
        load("t", "0 8 linear {dm:t} 0"),
        info("t"),
    ]),
    Scenario("load-char-device", {}, [
        create("t"),
        load("t", "0 10 linear /dev/null 0"),
    ]),
    Scenario("load-too-large-device", {}, [
        create("t"),
        load("t", f"0 {(1 << 55) - 1} zero"),
        load("t", "0 8 zero\n8 18014398509481984 zero"),
        info("t"),
    ]),
]
