"""The engine daemon serving block devices inside the guest, where we hold every capability.

The host's sandbox lacks CAP_SYS_RESOURCE, so there PR_SET_IO_FLUSHER is refused and only the
refusal can be checked; here the daemon must carry the flags on every thread, FUSE workers
included, while it serves a filesystem. It also proves the FUSE + loop exposure on another
kernel (Debian's 6.1) than the host's.
"""

from __future__ import annotations

import sys
from pathlib import Path

from guest import Guest

SRC = Path(__file__).resolve().parents[2] / "src"
PF_MEMALLOC_NOIO = 0x00080000
PF_LOCAL_THROTTLE = 0x00100000

_SCRIPT = r"""
set -eu
W={work}  # on the host's 9p share: the backing file
R=/run/devmapper-guest-test  # tmpfs: sockets and nodes cannot live on 9p
trap 'echo "failed at line $LINENO" >&2; cat "$R/daemon.log" >&2' ERR
rm -rf "$W" "$R"; mkdir -p "$W" "$R/run" "$R/dev/mapper" "$R/mnt"
modprobe fuse
export PYTHONPATH={src} DEVMAPPER_BACKEND=engine DEVMAPPER_SOCKET="$R/run/control.sock"
export DM_DEV_DIR="$R/dev" DEVMAPPER_AUTOSTART=0
dms() {{ {py} -m devmapper.cli.dmsetup "$@"; }}
{py} -m devmapper.daemon --foreground -v --socket "$R/run/control.sock" 2>"$R/daemon.log" &
pid=$!
for _ in $(seq 1200); do
    [ -S "$R/run/control.sock" ] && break
    kill -0 $pid; sleep 0.1
done
truncate -s 32M "$W/a.img"
dms create g0 --table "0 65536 linear $W/a.img 0"
mkfs.ext4 -q "$R/dev/mapper/g0"
mount "$R/dev/mapper/g0" "$R/mnt"
dd if=/dev/urandom of="$R/mnt/f" bs=1M count=4 conv=fsync status=none
sum=$(md5sum <"$R/mnt/f")
# Threads and their flags while a filesystem is mounted and I/O has gone through FUSE.
for t in /proc/$pid/task/*; do
    echo "task $(basename $t) $(cut -d')' -f2 "$t/stat" 2>/dev/null | awk '{{print $7}}')"
done
umount "$R/mnt"
fsck.ext4 -fn "$R/dev/mapper/g0" >/dev/null
mount -o ro "$R/dev/mapper/g0" "$R/mnt"
[ "$(md5sum <"$R/mnt/f")" = "$sum" ] && echo "data ok"
umount "$R/mnt"
dms remove g0
kill -TERM $pid; wait $pid; echo "daemon exit $?"
grep -c "PR_SET_IO_FLUSHER.*fail\\|refused" "$R/daemon.log" || true
"""


def test_daemon_serves_a_filesystem_as_an_io_flusher(guest: Guest) -> None:
    script = _SCRIPT.format(work=guest.workdir / "engine-in-guest", src=SRC, py=sys.executable)
    r = guest.run(script, timeout=300)
    assert r.rc == 0, (r.stdout, r.stderr)
    lines = r.stdout.splitlines()
    assert "data ok" in lines and "daemon exit 0" in lines, lines
    # A task that ended between the listing and the read (a finished connection) is skipped.
    rows = [ln.split() for ln in lines if ln.startswith("task ")]
    tasks = {row[1]: int(row[2]) for row in rows if len(row) == 3}
    assert len(tasks) >= 3, tasks  # main, the socket listener, FUSE workers
    for tid, flags in tasks.items():
        assert flags & PF_MEMALLOC_NOIO and flags & PF_LOCAL_THROTTLE, (tid, hex(flags))
    assert lines[-1] == "0", "the daemon logged about PR_SET_IO_FLUSHER: " + r.stderr
