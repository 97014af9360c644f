"""Mirror table syntax: constructor errors, status and table lines, target version.

The expected errors are what Debian's 6.1 kernel printed for the same tables (dmesg
"device-mapper: table: 254:0: mirror: <text> (-<errno>)"); test_kernel_interop.py re-checks
them against the live kernel.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from devmapper.engine.table import Table, TableError
from devmapper.library import DeviceMapper, DMError
from devmapper.targets.base import StatusType

from .mirror_helpers import MiB, target, wait_sync

EINVAL, ENODEV = errno.EINVAL, errno.ENODEV
LOG_ERR = "Error creating mirror dirty log"

#: (table after "0 4096 ", expected ti->error text, errno); None = the table loads.
#: A, B, L are 4 MiB devices, SMALL a 1 KiB one.
CTR_CASES: list[tuple[str, tuple[str, int] | None]] = [
    ("mirror", ("Insufficient mirror log arguments", EINVAL)),
    ("mirror core", ("Insufficient mirror log arguments", EINVAL)),
    ("mirror core x", ("Invalid mirror log argument count", EINVAL)),
    ("mirror core 3 1024", ("Insufficient mirror log arguments", EINVAL)),
    ("mirror core 1 1024", ("Invalid number of mirrors", EINVAL)),
    ("mirror core 1 1024 1 A 0", ("Invalid number of mirrors", EINVAL)),
    ("mirror core 1 1024 10 A 0 B 0", ("Invalid number of mirrors", EINVAL)),
    ("mirror core 1 1024 2 A 0", ("Too few mirror arguments", EINVAL)),
    ("mirror core 1 1024 2 A 0 B", ("Too few mirror arguments", EINVAL)),
    ("mirror core 1 1024 2 A x B 0", ("Invalid offset", EINVAL)),
    ("mirror core 1 1024 2 A -1 B 0", ("Invalid offset", EINVAL)),
    ("mirror core 1 1024 2 A +1 B 0", ("Invalid offset", EINVAL)),
    ("mirror core 1 1000 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror core 1 1 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror core 1 8192 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror core 1 0 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror core 2 1024 fast 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror core 0 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror core 3 1024 sync x 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror bogus 1 1024 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror disk 1 1024 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror disk 2 /dev/nonexistent 1024 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror disk 2 L 1000 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror disk 2 SMALL 1024 2 A 0 B 0", (LOG_ERR, EINVAL)),
    ("mirror core 1 1024 2 A 0 /dev/nonexistent 0", ("Device lookup failure", ENODEV)),
    ("mirror core 1 1024 2 A 0 B 0 x", ("Invalid number of features", EINVAL)),
    ("mirror core 1 1024 2 A 0 B 0 1", ("Not enough arguments to support feature count",
                                        EINVAL)),
    ("mirror core 1 1024 2 A 0 B 0 1 frob", ("Unrecognised feature requested", EINVAL)),
    ("mirror core 1 1024 2 A 0 B 0 1 keep_log",
     ("keep_log feature requires the handle_errors feature", EINVAL)),
    ("mirror core 1 1024 2 A 0 B 0 2 keep_log handle_errors", None),
    ("mirror core 1 1024 2 A 0 B 0 1 handle_errors extra", ("Too many mirror arguments", EINVAL)),
    ("mirror core 1 1024 2 A 0 B 0 0 extra", ("Too many mirror arguments", EINVAL)),
    ("mirror core 1 1024 2 A 0 B 0 0", None),
    ("mirror core 1 1024 9 A 0 B 0 A 0 B 0 A 0 B 0 A 0 B 0 A 0", None),
    ("mirror core 1 1024 2 A 0 B 4096", None),
    # The offset wraps modulo 2^64 and then fails the area check.
    ("mirror core 1 1024 2 A 99999999999999999999 B 0", ("too small for target", EINVAL)),
    # sscanf %u wraps too: region size 4294967298 is 2.
    ("mirror core 1 4294967298 2 A 0 B 0", None),
    ("mirror core 1 04 2 A 0 B 0", None),
]

#: The tables above that load, as the kernel printed them back (7:0 = A, 7:1 = B).
CTR_TABLES = {
    "mirror core 1 1024 2 A 0 B 0 2 keep_log handle_errors":
        "mirror core 1 1024 2 A 0 B 0 2 handle_errors keep_log",
    "mirror core 1 1024 2 A 0 B 0 0": "mirror core 1 1024 2 A 0 B 0",
    "mirror core 1 1024 9 A 0 B 0 A 0 B 0 A 0 B 0 A 0 B 0 A 0":
        "mirror core 1 1024 9 A 0 B 0 A 0 B 0 A 0 B 0 A 0 B 0 A 0",
    "mirror core 1 1024 2 A 0 B 4096": "mirror core 1 1024 2 A 0 B 4096",
    "mirror core 1 4294967298 2 A 0 B 0": "mirror core 1 2 2 A 0 B 0",
    "mirror core 1 04 2 A 0 B 0": "mirror core 1 4 2 A 0 B 0",
}


def substitute(line: str, names: dict[str, str]) -> str:
    return " ".join(names.get(w, w) for w in line.split())


def engine_load(dm: DeviceMapper, line: str) -> tuple[str, int] | str:
    """Build the table in the engine: (error text, errno), or the table line it prints."""
    engine = dm.transport.engine  # type: ignore[attr-defined]
    dm.create("ctr")
    table = Table(engine.by_name["ctr"], False)
    try:
        kind, _, params = line.partition(" ")
        table.add_target(kind, 0, 4096, params)
        table.complete()
        table.validate_areas()
        t = table.targets[0]
        return f"{t.name} {t.table()}"
    except TableError as e:
        return str(e), e.errno
    finally:
        table.destroy()
        dm.remove("ctr")


@pytest.fixture
def ctr_names(mkfile: Callable[..., str]) -> dict[str, str]:
    return {"A": mkfile("a.img", 4 * MiB), "B": mkfile("b.img", 4 * MiB),
            "L": mkfile("l.img", 4 * MiB), "SMALL": mkfile("s.img", 1024)}


@pytest.mark.parametrize(("line", "expected"), CTR_CASES, ids=[c[0] for c in CTR_CASES])
def test_constructor(dm: DeviceMapper, ctr_names: dict[str, str], line: str,
                     expected: tuple[str, int] | None) -> None:
    got = engine_load(dm, substitute(line, ctr_names))
    if expected is None:
        assert got == substitute(CTR_TABLES[line], ctr_names)
    else:
        assert isinstance(got, tuple)
        text, err = got
        assert err == expected[1]
        assert text.endswith(expected[0])


def test_load_error_reaches_the_caller(dm: DeviceMapper, ctr_names: dict[str, str]) -> None:
    dm.create("m")
    with pytest.raises(DMError) as info:
        dm.load("m", substitute("0 4096 mirror core 1 1024 2 A 0 /dev/nonexistent 0",
                                ctr_names))
    assert info.value.errno == errno.ENODEV


def test_target_version(dm: DeviceMapper) -> None:
    assert dm.target_version("mirror") == (1, 14, 0)
    assert "mirror" in [t.name for t in dm.targets()]  # type: ignore[attr-defined]


def test_status_and_table_lines(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    a, b, c = (mkfile(n, 4 * MiB) for n in ("a.img", "b.img", "c.img"))
    log = mkfile("log.img", MiB)
    cases = [
        (f"core 1 1024 2 {a} 0 {b} 0", f"core 1 1024 2 {a} 0 {b} 0", "1 core"),
        (f"core 2 1024 nosync 2 {a} 0 {b} 0 1 handle_errors",
         f"core 2 1024 nosync 2 {a} 0 {b} 0 1 handle_errors", "1 core"),
        (f"core 2 512 sync 3 {a} 0 {b} 0 {c} 8",
         f"core 2 512 sync 3 {a} 0 {b} 0 {c} 8", "1 core"),
        (f"disk 2 {log} 1024 2 {a} 0 {b} 0 2 keep_log handle_errors",
         f"disk 2 {log} 1024 2 {a} 0 {b} 0 2 handle_errors keep_log", f"3 disk {log} A"),
        (f"disk 3 {log} 1024 nosync 2 {a} 0 {b} 0",
         f"disk 3 {log} 1024 nosync 2 {a} 0 {b} 0", f"3 disk {log} A"),
    ]
    for params, table, log_info in cases:
        dm.create("m", f"0 8000 mirror {params}")
        assert dm.table("m")[0].params == table
        st = wait_sync(dm, "m")
        n = len(st.legs)
        assert dm.status("m")[0].params == \
            f"{n} {' '.join(st.legs)} {st.regions}/{st.regions} 1 {'A' * n} {log_info}"
        assert st.regions == -(-8000 // int(table.split()[2 if "core" in table else 3]))
        dm.remove("m")


def test_inactive_disk_log_status_before_resume(dm: DeviceMapper,
                                                mkfile: Callable[..., str]) -> None:
    # disk_resume reads the log: until then the inactive table reports nothing in sync.
    a, b, log = mkfile("a.img", MiB), mkfile("b.img", MiB), mkfile("log.img", MiB)
    dm.create("m")
    dm.load("m", f"0 2048 mirror disk 2 {log} 256 2 {a} 0 {b} 0")
    assert dm.status("m", inactive=True)[0].params == f"2 {a} {b} 0/8 1 AA 3 disk {log} A"


def test_ima_status(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    a, b = mkfile("a.img", MiB), mkfile("b.img", MiB)
    dm.create("m", f"0 2048 mirror core 2 256 nosync 2 {a} 0 {b} 0 1 handle_errors")
    assert target(dm, "m").status(StatusType.IMA) == (
        f"target_name=mirror,target_version=1.14.0,nr_mirrors=2,mirror_device_0={a},"
        f"mirror_device_0_status=A,mirror_device_1={b},mirror_device_1_status=A,"
        "handle_errors=y,keep_log=n,log_type_status=;")


def test_messages_are_refused(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    a, b = mkfile("a.img", MiB), mkfile("b.img", MiB)
    dm.create("m", f"0 2048 mirror core 1 256 2 {a} 0 {b} 0")
    with pytest.raises(DMError) as info:
        dm.message("m", 0, "anything")
    assert info.value.errno == errno.EINVAL


def test_deps_include_the_log_device(dm: DeviceMapper, mkfile: Callable[..., str]) -> None:
    a, b, log = mkfile("a.img", MiB), mkfile("b.img", MiB), mkfile("log.img", MiB)
    dm.create("x", f"0 2048 linear {b} 0")
    dm.create("l", f"0 2048 linear {log} 0")
    ix, il = dm.info("x"), dm.info("l")
    dm.create("m", f"0 2048 mirror disk 2 {il.major}:{il.minor} 256 2 {a} 0 "
                   f"{ix.major}:{ix.minor} 0")
    assert sorted(dm.deps("m")) == sorted([(ix.major, ix.minor), (il.major, il.minor)])
