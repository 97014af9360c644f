"""Mirror against the real kernel (Debian 6.1 under QEMU, one boot for this module).

- status and table lines, event numbers, constructor errors, leg-failure traces: the same
  steps on the engine and in the guest give the same text (device names mapped to labels);
- disk-log bytes: the same scenario leaves byte-identical log devices on both sides;
- a disk log written by one side is accepted by the other, which resyncs exactly the regions
  the log calls dirty;
- `devmapper move` drives the kernel's own mirror under a mounted ext4 with fio writing and
  verifying, including a mover killed with SIGKILL and then aborted or continued.

DEVMAPPER_GUEST_DIR=DIR attaches to a guest already served with `guest.py --serve DIR`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devmapper.library import DeviceMapper
from devmapper.targets.dirty_log.disk import decode_log

from .mirror_helpers import (
    MiB,
    make_file,
    read_at,
    target,
    wait_log_idle,
    wait_sync,
    write_at,
)
from .mirror_scenarios import (
    ENGINE_SCENARIOS,
    KERNEL_REQUEUE_TRACES,
    KERNEL_SCRIPT,
    KERNEL_TRACES,
    REQUEUE_KERNEL_SCRIPT,
)
from .test_table import CTR_CASES, engine_load

sys.path.insert(0, str(Path(__file__).parents[1] / "kernel"))
from guest import Guest  # type: ignore[import-not-found]  # noqa: E402

pytestmark = pytest.mark.kernel
SRC = str(Path(__file__).parents[2] / "src")


@pytest.fixture(scope="module")
def guest() -> Iterator[Guest]:
    served = os.environ.get("DEVMAPPER_GUEST_DIR")
    g = Guest.attach(served) if served else Guest().start()
    try:
        g.run("dmsetup remove_all --force; losetup -D", timeout=120)
        yield g
    finally:
        g.stop()


@pytest.fixture
def work(guest: Guest, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory both sides see; dm and loop devices are cleared after the test."""
    d = guest.workdir / f"mirror-{request.node.name}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    try:
        yield d
    finally:
        guest.run("dmsetup remove_all --force; losetup -D", timeout=120)
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dm() -> Iterator[DeviceMapper]:
    d = DeviceMapper.in_process()
    yield d
    for _ in range(3):
        for dev in d.list():
            try:
                d.remove(dev.name)
            except OSError:
                pass
    d.close()


def run(g: Guest, script: str, timeout: float = 600) -> str:
    r = g.run(script, timeout=timeout)
    assert r.rc == 0, f"guest script failed rc={r.rc}\n{r.stdout}\n{r.stderr}"
    return r.stdout


#: Shell helpers for guest scripts: loop devices over files, labels for dev names.
PRELUDE = r"""
set -e
loop() { losetup -f --show "$1"; }
mm() { lsblk -dno MAJ:MIN "$1" | tr -d ' '; }
waitn() { for i in $(seq 1200); do case "$(dmsetup status $1)" in *" $2/$2 "*) return;; esac
  sleep 0.1; done; echo "no sync" >&2; exit 1; }
ev() { dmsetup info -c --noheadings -o events $1 | tr -d ' '; }
settle() { losetup -D; sync; echo 3 > /proc/sys/vm/drop_caches; }
"""


def relabel(text: str, names: dict[str, str]) -> str:
    return " ".join(names.get(w, w) for w in text.split())


# ---------------------------------------------------------------- text


STATUS_CASES = [
    # label, table (A, B, C legs; L log), sectors, regions
    ("core", "mirror core 1 1024 2 A 0 B 0", 8192, 8),
    ("core-nosync", "mirror core 2 1024 nosync 2 A 0 B 0 1 handle_errors", 8192, 8),
    ("core-sync-3", "mirror core 2 512 sync 3 A 0 B 8 C 0", 8000, 16),
    ("disk", "mirror disk 2 L 1024 2 A 0 B 0 2 handle_errors keep_log", 8192, 8),
    ("disk-again", "mirror disk 2 L 1024 2 A 0 B 0", 8192, 8),
    ("disk-nosync", "mirror disk 3 L 2048 nosync 2 A 0 B 0", 8192, 4),
    ("disk-odd", "mirror disk 2 L 64 2 A 0 B 0", 6400, 100),
]


def test_status_table_and_events_match_kernel(guest: Guest, work: Path,
                                              dm: DeviceMapper) -> None:
    files = {k: make_file(work / f"{k}.img", 8 * MiB, seed=i + 1 if k == "A" else 0)
             for i, k in enumerate("ABCL")}
    script = [PRELUDE, f"cd {work}"]
    for k in "ABCL":
        script.append(f'{k}=$(loop {k}.img); echo "name|$(mm ${k})|{k}"')
    for label, table, sectors, regions in STATUS_CASES:
        t = " ".join(f"${w}" if w in "ABCL" else w for w in table.split())
        script.append(
            f'dmsetup create m --notable; dmsetup load m --table "0 {sectors} {t}"\n'
            f'echo "{label}|inactive|$(dmsetup status --inactive m | cut -d" " -f4-)"\n'
            f'dmsetup resume m; waitn m {regions}; sleep 1\n'
            f'echo "{label}|table|$(dmsetup table m | cut -d" " -f4-)"\n'
            f'echo "{label}|status|$(dmsetup status m | cut -d" " -f4-)"\n'
            f'echo "{label}|events|$(ev m)"\n'
            f'dmsetup suspend m; dmsetup resume m; sleep 1; echo "{label}|resumed|$(ev m)"\n'
            f"dmsetup remove m")
    out = run(guest, "\n".join(script)).splitlines()
    names = {line.split("|")[1]: line.split("|")[2] for line in out if line.startswith("name|")}
    kernel = [f"{lab}|{kind}|{relabel(text, names)}" for lab, kind, text in
              (line.split("|", 2) for line in out if not line.startswith("name|"))]

    engine = []
    paths = {v: k for k, v in files.items()}
    for label, table, sectors, _regions in STATUS_CASES:
        t = " ".join(files.get(w, w) for w in table.split())
        dm.create("m")
        dm.load("m", f"0 {sectors} {t}")
        inactive = dm.status("m", inactive=True)[0].params
        engine.append(f"{label}|inactive|{relabel(inactive, paths)}")
        dm.resume("m")
        wait_sync(dm, "m")
        time.sleep(0.2)
        engine.append(f"{label}|table|{relabel(dm.table('m')[0].params, paths)}")
        engine.append(f"{label}|status|{relabel(dm.status('m')[0].params, paths)}")
        engine.append(f"{label}|events|{dm.info('m').event_nr}")
        dm.suspend("m")
        dm.resume("m")
        time.sleep(0.2)
        engine.append(f"{label}|resumed|{dm.info('m').event_nr}")
        dm.remove("m")
    assert engine == kernel


def test_constructor_errors_match_kernel(guest: Guest, work: Path, dm: DeviceMapper) -> None:
    files = {"A": make_file(work / "a.img", 4 * MiB), "B": make_file(work / "b.img", 4 * MiB),
             "L": make_file(work / "l.img", 4 * MiB), "SMALL": make_file(work / "s.img", 1024)}
    script = [PRELUDE, "set +e", f"cd {work}",
              "A=$(loop a.img); B=$(loop b.img); L=$(loop l.img); SMALL=$(loop s.img)",
              'echo "name|$(mm $A)|A"; echo "name|$(mm $B)|B"; echo "name|$(mm $L)|L"',
              'echo "name|$(mm $SMALL)|SMALL"']
    for i, (line, _) in enumerate(CTR_CASES):
        t = " ".join(f"${w}" if w in files else w for w in line.split())
        script.append(
            f'dmesg -C; if dmsetup create e{i} --table "0 4096 {t}" 2>/dev/null; then '
            f'echo "{i}|OK|$(dmsetup table e{i} | cut -d" " -f3-)"; dmsetup remove e{i}; '
            f'else echo "{i}|ERR|$(dmesg | grep -v ioctl | tr "\\n" "~")"; '
            f"dmsetup remove e{i} 2>/dev/null; fi")
    out = run(guest, "\n".join(script)).splitlines()
    names = {line.split("|")[1]: line.split("|")[2] for line in out if line.startswith("name|")}
    paths = {v: k for k, v in files.items()}
    results = [line.split("|", 2) for line in out if not line.startswith("name|")]
    assert len(results) == len(CTR_CASES)
    for (_i, kind, text), (line, _) in zip(results, CTR_CASES, strict=True):
        got = engine_load(dm, " ".join(files.get(w, w) for w in line.split()))
        if kind == "OK":
            assert isinstance(got, str), (line, got)
            assert relabel(got, paths) == relabel(text, names), line
            continue
        assert isinstance(got, tuple), (line, got)
        message, err = got
        if "too small for target" in text:  # the table's area check, after the constructor
            assert "too small for target" in message and err == errno.EINVAL
            continue
        m = re.search(r"mirror: (.+?) \(-(E[A-Z]+)\)", text)
        assert m, text
        assert (message, errno.errorcode[err]) == (m.group(1), m.group(2)), line


def test_leg_failure_traces_match_kernel(guest: Guest, work: Path, dm: DeviceMapper) -> None:
    make_file(work / "a.img", 2 * MiB)
    make_file(work / "b.img", 2 * MiB)
    script = "\n".join([PRELUDE, "set +e", f"cd {work}", "A=$(loop a.img); B=$(loop b.img)",
                        'echo "name|$(mm $A)|A"; echo "name|$(mm $B)|B"', KERNEL_SCRIPT,
                        REQUEUE_KERNEL_SCRIPT])
    out = run(guest, script, timeout=900).splitlines()
    names = {line.split("|")[1]: line.split("|")[2] for line in out if line.startswith("name|")}
    kernel: dict[str, list[str]] = {}
    section = ""
    for line in out:
        if line.startswith("== "):
            section = line[3:]
            kernel[section] = []
        elif section and "|" in line:
            label, st, *rest = line.split("|")
            st = re.sub(r"\b254:\d+\b", "X", relabel(st, names))
            kernel[section].append("|".join([label, st, *rest]))
    # Where the engine completes a held write at a noflush suspend, the kernel requeues it.
    requeue = {name: kernel.pop(name) for name in KERNEL_REQUEUE_TRACES}
    assert requeue == KERNEL_REQUEUE_TRACES
    assert kernel == KERNEL_TRACES
    for name, scenario in ENGINE_SCENARIOS.items():
        assert scenario(dm, make_file(work / "ea.img", 2 * MiB),
                        make_file(work / "eb.img", 2 * MiB)) == kernel[name], name


# ---------------------------------------------------------------- the disk log


def test_fresh_disk_log_bytes_match_kernel(guest: Guest, work: Path, dm: DeviceMapper) -> None:
    """100 regions (not a multiple of 64) over a log device full of 0x5A: header, bitset,
    cleared tail bits and the bytes the format leaves alone must all come out the same."""
    for side in ("k", "e"):
        make_file(work / f"{side}a.img", 4 * MiB, seed=5)
        make_file(work / f"{side}b.img", 4 * MiB)
        make_file(work / f"{side}l.img", 64 * 1024, fill=b"\x5a")
    run(guest, "\n".join([PRELUDE, f"cd {work}", "A=$(loop ka.img); B=$(loop kb.img); "
                          "L=$(loop kl.img)",
                          'dmsetup create m --table "0 6400 mirror disk 2 $L 64 2 $A 0 $B 0"',
                          "waitn m 100; dmsetup remove m; settle"]))
    e = {k: str(work / f"e{k}.img") for k in "abl"}
    dm.create("m", f"0 6400 mirror disk 2 {e['l']} 64 2 {e['a']} 0 {e['b']} 0")
    wait_sync(dm, "m")
    dm.remove("m")
    klog, elog = (work / "kl.img").read_bytes(), (work / "el.img").read_bytes()
    assert decode_log(klog)[:3] == (0x4D695272, 2, 100)
    assert klog == elog
    assert (work / "kb.img").read_bytes() == (work / "eb.img").read_bytes()


KERNEL_DIRTY = r"""
# mirror(A, X) with X over B; X fails; a write to region 3 lands on A only: region 3 stays
# dirty in the log, written out by the suspend of the removal.
X=$(dmsetup create x --table "0 8192 linear $B 0"; echo /dev/mapper/x)
dmsetup create m --table "0 8192 mirror disk 2 $L 512 2 $A 0 $X 0"
waitn m 16
dmsetup load x --table "0 8192 error"; dmsetup resume x
head -c 4096 /dev/zero | tr '\0' W | dd of=/dev/mapper/m bs=4096 seek=200 oflag=direct status=none
dmsetup status m | cut -d' ' -f4-
dmsetup remove m; dmsetup remove x; settle
"""


def engine_dirty(dm: DeviceMapper, a: str, b: str, log: str) -> str:
    dm.create("x", f"0 8192 linear {b} 0")
    ix = dm.info("x")
    dm.create("m", f"0 8192 mirror disk 2 {log} 512 2 {a} 0 {ix.major}:{ix.minor} 0")
    wait_sync(dm, "m")
    dm.load("x", "0 8192 error")
    dm.resume("x")
    with dm.open("m") as blk:
        blk.write(200 * 4096, memoryview(b"W" * 4096))
    st = dm.status("m")[0].params
    dm.remove("m")
    dm.remove("x")
    return st


def test_kernel_dirty_log_bytes_and_engine_recovery(guest: Guest, work: Path,
                                                    dm: DeviceMapper) -> None:
    for side in ("k", "e"):
        make_file(work / f"{side}a.img", 4 * MiB, seed=6)
        make_file(work / f"{side}b.img", 4 * MiB)
        make_file(work / f"{side}l.img", MiB)
    out = run(guest, "\n".join([PRELUDE, f"cd {work}",
                                "A=$(loop ka.img); B=$(loop kb.img); L=$(loop kl.img)",
                                KERNEL_DIRTY]))
    k = {x: str(work / f"k{x}.img") for x in "abl"}
    e = {x: str(work / f"e{x}.img") for x in "abl"}
    kstatus = out.split()
    estatus = engine_dirty(dm, e["a"], e["b"], e["l"]).split()
    # Same health and sync count (names differ: loop devices there, files here).
    assert kstatus[3:6] == estatus[3:6] == ["15/16", "1", "AD"]
    klog = Path(k["l"]).read_bytes()
    assert klog == Path(e["l"]).read_bytes()
    clean = decode_log(klog)[3]
    assert [r for r, ok in enumerate(clean) if not ok] == [3]  # 4 KiB block 200: region 3
    for x in "ab":
        assert Path(k[x]).read_bytes() == Path(e[x]).read_bytes()

    # The engine takes the kernel's log over: only region 3 resyncs. Region 5, clean in the
    # log, is made to differ first: a full resync would repair it, this one must not.
    write_at(k["b"], 5 * 512 * 512, b"\xa5" * 4096)
    dm.create("m", f"0 8192 mirror disk 2 {k['l']} 512 2 {k['a']} 0 {k['b']} 0")
    wait_sync(dm, "m")
    assert target(dm, "m").recovered == 1
    dm.remove("m")
    assert read_at(k["b"], 200 * 4096, 4096) == b"W" * 4096
    assert read_at(k["b"], 5 * 512 * 512, 4096) == b"\xa5" * 4096
    ka, kb = read_at(k["a"], 0, 4 * MiB), read_at(k["b"], 0, 4 * MiB)
    assert ka[:5 * 512 * 512] == kb[:5 * 512 * 512]
    assert ka[6 * 512 * 512:] == kb[6 * 512 * 512:]
    assert all(decode_log(Path(k["l"]).read_bytes())[3])


def test_engine_crash_log_accepted_by_kernel(guest: Guest, work: Path,
                                             dm: DeviceMapper) -> None:
    """The engine's on-disk state mid-write (log says dirty, the write on one leg only) is
    captured as a crash image; the kernel resyncs exactly the dirty region."""
    a = make_file(work / "a.img", 4 * MiB, seed=7)
    b = make_file(work / "b.img", 4 * MiB)
    log = make_file(work / "l.img", MiB)
    dm.create("x", f"0 8192 linear {b} 0")
    ix = dm.info("x")
    dm.create("m", f"0 8192 mirror disk 2 {log} 512 2 {a} 0 {ix.major}:{ix.minor} 0")
    wait_sync(dm, "m")
    wait_log_idle(dm, "m")
    dm.suspend("x")  # the write reaches a and the log, then waits on x
    t = threading.Thread(target=lambda: dm.open("m").write(9 * 512 * 512 + 4096,
                                                           memoryview(b"E" * 4096)))
    t.start()
    time.sleep(0.5)
    for name in ("a", "b", "l"):  # the crash image
        shutil.copyfile(work / f"{name}.img", work / f"c{name}.img")
    dm.resume("x")
    t.join(10)
    clean = decode_log((work / "cl.img").read_bytes())[3]
    assert [r for r, ok in enumerate(clean) if not ok] == [9]
    write_at(str(work / "cb.img"), 2 * 512 * 512, b"\xa5" * 4096)  # clean: must stay

    out = run(guest, "\n".join([
        PRELUDE, f"cd {work}", "A=$(loop ca.img); B=$(loop cb.img); L=$(loop cl.img)",
        'dmsetup create m --table "0 8192 mirror disk 2 $L 512 2 $A 0 $B 0"',
        "waitn m 16; sleep 1; dmsetup status m | cut -d' ' -f4-; ev m",
        "dmsetup remove m; settle"]))
    st, ev = out.splitlines()
    assert st.split()[3:6] == ["16/16", "1", "AA"] and ev == "1"
    ca, cb = read_at(str(work / "ca.img"), 0, 4 * MiB), read_at(str(work / "cb.img"), 0,
                                                                  4 * MiB)
    r2 = slice(2 * 512 * 512, 3 * 512 * 512)
    assert cb[r2.start:r2.start + 4096] == b"\xa5" * 4096  # the kernel left region 2 alone
    assert ca[:r2.start] == cb[:r2.start] and ca[r2.stop:] == cb[r2.stop:]
    assert cb[9 * 512 * 512 + 4096:9 * 512 * 512 + 8192] == b"E" * 4096
    kernel_log = (work / "cl.img").read_bytes()
    assert decode_log(kernel_log)[:3] == (0x4D695272, 2, 16) and all(decode_log(kernel_log)[3])


# ---------------------------------------------------------------- the move, on the kernel


# Both moves run under ext4 mounted from vol with fio writing (verification state saved),
# and end with fio verifying every block it wrote and e2fsck.
LOAD_START = r"""mkfs.ext4 -q /dev/mapper/vol; mkdir -p mnt; mount /dev/mapper/vol mnt
export PYTHONPATH=__SRC__ DEVMAPPER_BACKEND=kernel DEVMAPPER_MOVE_DIR=$PWD/moves
fio --name=load --directory=mnt --rw=randwrite --bs=4k --size=8M --numjobs=2 --time_based \
  --runtime=600 --verify=crc32c --do_verify=0 --verify_state_save=1 --ioengine=psync \
  --fsync=16 > fio.out 2>&1 &
FIO=$!
sleep 3
mover() { python3 -m devmapper.cli.tool move "$@" < /dev/null 2>>move.err; }
"""
LOAD_END = r"""ls moves/*.json 2>/dev/null | wc -l
kill $FIO; wait $FIO || true
fio --name=load --directory=mnt --rw=randwrite --bs=4k --size=8M --numjobs=2 \
  --verify=crc32c --verify_only --verify_state_load=1 --ioengine=psync > verify.out 2>&1 \
  && echo "verify ok" || { echo "verify failed"; cat verify.out; }
umount mnt; e2fsck -fn /dev/mapper/vol > /dev/null 2>&1 && echo "fsck ok"
dmsetup remove vol; settle
"""


MOVE_SCRIPT = r"""
A=$(loop va.img); B=$(loop vb.img); C=$(loop vc.img)
echo "A=$(mm $A) B=$(mm $B) C=$(mm $C)"
# Three segments: 24 MiB of A, 8 MiB of C, 24 MiB of A again.
printf '0 49152 linear %s 0\n49152 16384 linear %s 0\n65536 49152 linear %s 65536\n' $A $C $A \
  | dmsetup create vol
""" + LOAD_START + r"""
# The mover itself in the background (not a function's subshell): SIGKILL must hit it.
killmid() { python3 -m devmapper.cli.tool move vol --from $A --to $B < /dev/null 2>>move.err &
  MV=$!
  for i in $(seq 1200); do dmsetup table vol | grep -q mirror && break; sleep 0.1; done
  sleep 1; kill -9 $MV; wait $MV || true; }
killmid; echo "killed|$(dmsetup table vol | awk '{print $3}' | tr '\n' ' ')"
mover --abort vol; echo "aborted|$(dmsetup table vol | tr '\n' ';')"
killmid; mover --continue vol; echo "continued|$(dmsetup table vol | tr '\n' ';')"
""" + LOAD_END


def test_move_under_mounted_fs_with_kill_abort_continue(guest: Guest, work: Path) -> None:
    for name in ("va", "vb", "vc"):
        make_file(work / f"{name}.img", 64 * MiB)
    out = run(guest, "\n".join([PRELUDE, f"cd {work}", MOVE_SCRIPT.replace("__SRC__", SRC)]),
              timeout=1800).splitlines()
    names = dict(kv.split("=") for kv in out[0].split())
    a, b, c = names["A"], names["B"], names["C"]
    assert out[1].startswith("killed|") and "mirror" in out[1]
    assert out[2] == f"aborted|0 49152 linear {a} 0;49152 16384 linear {c} 0;" \
                     f"65536 49152 linear {a} 65536;"
    assert out[3] == f"continued|0 49152 linear {b} 0;49152 16384 linear {c} 0;" \
                     f"65536 49152 linear {b} 65536;"
    assert out[4:] == ["0", "verify ok", "fsck ok"]


STRIPED_MOVE_SCRIPT = r"""
A=$(loop va.img); B=$(loop vb.img); C=$(loop vc.img)
echo "A=$(mm $A) B=$(mm $B) C=$(mm $C)"
# A striped segment (stripes on A and C), then 16 MiB of A.
printf '0 65536 striped 2 128 %s 0 %s 0\n65536 32768 linear %s 32768\n' $A $C $A \
  | dmsetup create vol
""" + LOAD_START + r"""
temp() { dmsetup info vol-pvmove > /dev/null 2>&1 && echo temp || echo no-temp; }
# Killed while the stripe on A copies through the kernel's own mirror in vol-pvmove.
killmid() { python3 -m devmapper.cli.tool move vol --from $A --to $B --region-size 256 \
  < /dev/null 2>>move.err &
  MV=$!
  for i in $(seq 1200); do dmsetup table vol-pvmove 2>/dev/null | grep -q mirror && break
    sleep 0.05; done
  kill -9 $MV; wait $MV || true; }
killmid; echo "killed|$(dmsetup table vol | awk '{print $3}' | tr '\n' ' ')|$(temp)"
mover --abort vol; echo "aborted|$(dmsetup table vol | tr '\n' ';')|$(temp)"
killmid; mover --continue vol; echo "continued|$(dmsetup table vol | tr '\n' ';')|$(temp)"
""" + LOAD_END


def test_striped_move_under_mounted_fs_with_kill_abort_continue(guest: Guest,
                                                                work: Path) -> None:
    """pvmove's way for a striped segment, on the real kernel: the stripe on the source goes
    through the temporary device vol-pvmove (the kernel's mirror), the mover is killed
    mid-copy, then the move is aborted, and once more killed and continued."""
    for name in ("va", "vb", "vc"):
        make_file(work / f"{name}.img", 64 * MiB)
    out = run(guest, "\n".join([PRELUDE, f"cd {work}",
                                STRIPED_MOVE_SCRIPT.replace("__SRC__", SRC)]),
              timeout=1800).splitlines()
    names = dict(kv.split("=") for kv in out[0].split())
    a, b, c = names["A"], names["B"], names["C"]
    assert out[1].startswith("killed|"), out
    assert out[2] == f"aborted|0 65536 striped 2 128 {a} 0 {c} 0;" \
                     f"65536 32768 linear {a} 32768;|no-temp", out
    assert out[3] == f"continued|0 65536 striped 2 128 {b} 0 {c} 0;" \
                     f"65536 32768 linear {b} 32768;|no-temp", out
    assert out[4:] == ["0", "verify ok", "fsck ok"], out
