"""udev synchronisation the way libdevmapper does it: System V semaphores named by cookies.

A cookie is 0x0D4D0000 | base; the udev rules decrement its semaphore (`dmsetup udevcomplete`)
once they have processed the uevent, and the waiter blocks until it reaches zero. Without
udev running there is nothing to wait for and the cookie is 0, as in libdm.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Any

DM_COOKIE_MAGIC = 0x0D4D
FLAGS_SHIFT = 16
FLAGS_MASK = 0xFFFF0000

# udev flags (libdevmapper.h)
DISABLE_DM_RULES = 0x0001
DISABLE_SUBSYSTEM_RULES = 0x0002
DISABLE_DISK_RULES = 0x0004
DISABLE_OTHER_RULES = 0x0008
LOW_PRIORITY = 0x0010
DISABLE_LIBRARY_FALLBACK = 0x0020
PRIMARY_SOURCE = 0x0040

FLAG_NAMES = ("DISABLE_DM_RULES", "DISABLE_SUBSYSTEM_RULES", "DISABLE_DISK_RULES",
              "DISABLE_OTHER_RULES", "LOW_PRIORITY", "DISABLE_LIBRARY_FALLBACK",
              "PRIMARY_SOURCE")

IPC_CREAT, IPC_EXCL, IPC_NOWAIT, IPC_RMID = 0o1000, 0o2000, 0o4000, 0
GETVAL, SETVAL = 12, 16

Log = Callable[[str], None]


_libc: Any = None  # ctypes is imported only when a semaphore is touched


def _c() -> Any:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _err() -> int:
    import ctypes

    return ctypes.get_errno() or errno.EIO


def _key(cookie: int) -> Any:
    import ctypes

    return ctypes.c_int(_as_key(cookie))


def udev_running() -> bool:
    """udev_queue_get_udev_is_active(): systemd-udevd's control socket exists."""
    return os.path.exists("/run/udev/control")


def semaphores_supported() -> bool:
    return os.path.exists("/proc/sysvipc/sem")


def parse_cookie(text: str) -> int | None:
    """strtoul(text, 0): decimal, 0x hex or 0 octal; 0 and out-of-range are invalid."""
    import re

    m = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if not m:
        return None
    body = m.group(2)
    if body[:2].lower() == "0x":
        value = int(body[2:], 16)
    else:
        value = int(body, 8 if body.startswith("0") else 10)
    if m.group(1) == "-":
        value = (-value) & 0xFFFFFFFFFFFFFFFF
    if not value or value > 0xFFFFFFFF:
        return None
    return value


# ---------------------------------------------------------------- semaphores


def _get_sem(cookie: int, log: Log) -> int | None:
    if cookie >> 16 != DM_COOKIE_MAGIC:
        log(f"Could not continue to access notification semaphore identified by cookie "
            f"value {cookie} (0x{cookie:x}). Incorrect cookie prefix.")
        return None
    semid = _c().semget(_key(cookie), 1, 0)
    if semid >= 0:
        return semid
    e = _err()
    if e == errno.ENOENT:
        log(f"Could not find notification semaphore identified by cookie value "
            f"{cookie} (0x{cookie:x})")
    elif e == errno.EACCES:
        log(f"No permission to access notificaton semaphore identified by cookie value "
            f"{cookie} (0x{cookie:x})")
    else:
        log(f"Failed to access notification semaphore identified by cookie value "
            f"{cookie} (0x{cookie:x}): {os.strerror(e)}")
    return None


def _as_key(cookie: int) -> int:
    return cookie - (1 << 32) if cookie >= 1 << 31 else cookie


def _semop(semid: int, op: int, flags: int = 0) -> int:
    import ctypes

    class SemBuf(ctypes.Structure):
        _fields_ = [("sem_num", ctypes.c_ushort), ("sem_op", ctypes.c_short),
                    ("sem_flg", ctypes.c_short)]

    sb = SemBuf(0, op, flags)
    while True:
        r = _c().semop(semid, ctypes.byref(sb), 1)
        if r < 0 and _err() == errno.EINTR and not flags & IPC_NOWAIT:
            continue
        return 0 if r == 0 else _err()


def getval(semid: int) -> int:
    return _c().semctl(semid, 0, GETVAL)


def sem_dec(cookie: int, semid: int, log: Log, debug: Log) -> bool:
    val = getval(semid)
    if val < 0:
        log(f"semid {semid}: sem_ctl GETVAL failed for cookie 0x{cookie:x}: "
            f"{os.strerror(_err())}")
        return False
    e = _semop(semid, -1, IPC_NOWAIT)
    if e:
        detail = "incorrect semaphore state" if e == errno.EAGAIN else os.strerror(e)
        log(f"semid {semid}: semop failed for cookie 0x{cookie:x}: {detail}")
        return False
    debug(f"Udev cookie 0x{cookie:x} (semid {semid}) decremented to {val - 1}")
    return True


def sem_inc(cookie: int, semid: int, log: Log, debug: Log) -> bool:
    e = _semop(semid, 1)
    if e:
        log(f"semid {semid}: semop failed for cookie 0x{cookie:x}: {os.strerror(e)}")
        return False
    val = getval(semid)
    debug(f"Udev cookie 0x{cookie:x} (semid {semid}) incremented to {val}")
    return True


def sem_destroy(cookie: int, semid: int, log: Log, debug: Log) -> bool:
    if _c().semctl(semid, 0, IPC_RMID) < 0:
        log(f"Could not cleanup notification semaphore identified by cookie value "
            f"{cookie} (0x{cookie:x}): {os.strerror(_err())}")
        return False
    debug(f"Udev cookie 0x{cookie:x} (semid {semid}) destroyed")
    return True


def create_cookie(log: Log, debug: Log) -> tuple[int, int] | None:
    """_udev_notify_sem_create: a fresh random cookie whose semaphore holds 1."""
    while True:
        base = int.from_bytes(os.urandom(2), "little")
        if not base:
            continue
        cookie = DM_COOKIE_MAGIC << 16 | base
        semid = _c().semget(_key(cookie), 1, 0o600 | IPC_CREAT | IPC_EXCL)
        if semid >= 0:
            break
        e = _err()
        if e == errno.EEXIST:
            continue
        if e == errno.ENOMEM:
            log("Not enough memory to create notification semaphore")
        elif e == errno.ENOSPC:
            log("Limit for the maximum number of semaphores reached. You can check and set "
                "the limits in /proc/sys/kernel/sem.")
        else:
            log(f"Failed to create notification semaphore: {os.strerror(e)}")
        return None
    debug(f"Udev cookie 0x{cookie:x} (semid {semid}) created")
    if _c().semctl(semid, 0, SETVAL, 1) < 0:
        log(f"semid {semid}: semctl failed: {os.strerror(_err())}")
        sem_destroy(cookie, semid, log, debug)
        return None
    debug(f"Udev cookie 0x{cookie:x} (semid {semid}) incremented to {getval(semid)}")
    return cookie, semid


def complete(cookie: int, log: Log, debug: Log) -> bool:
    """dm_udev_complete."""
    semid = _get_sem(cookie, log)
    if semid is None:
        return False
    if not sem_dec(cookie, semid, log, debug):
        log(f"Could not signal waiting process using notification semaphore identified "
            f"by cookie value {cookie} (0x{cookie:x})")
        return False
    return True


def wait(cookie: int, log: Log, debug: Log) -> bool:
    """dm_udev_wait: drop our own reference, then wait for udev to release the rest."""
    semid = _get_sem(cookie, log)
    if semid is None:
        return False
    if not sem_dec(cookie, semid, log, debug):
        log(f"Failed to set a proper state for notification semaphore identified by "
            f"cookie value {cookie} (0x{cookie:x}) to initialize waiting for incoming "
            "notifications.")
        sem_destroy(cookie, semid, log, debug)
        return False
    debug(f"Udev cookie 0x{cookie:x} (semid {semid}) waiting for zero")
    e = _semop(semid, 0)
    if e == errno.EIDRM:
        return True
    if e:
        log(f"Could not set wait state for notification semaphore identified by cookie "
            f"value {cookie} (0x{cookie:x}): {os.strerror(e)}")
        sem_destroy(cookie, semid, log, debug)
        return False
    return sem_destroy(cookie, semid, log, debug)


# ---------------------------------------------------------------- listing


def dm_semaphores() -> list[tuple[int, int, int, int]]:
    """(key, semid, otime, ctime) of every semaphore with the dm cookie prefix."""
    out = []
    try:
        with open("/proc/sysvipc/sem") as f:
            next(f, None)
            for line in f:
                p = line.split()
                if len(p) < 10:
                    continue
                key = int(p[0]) & 0xFFFFFFFF
                if key >> 16 == DM_COOKIE_MAGIC:
                    out.append((key, int(p[1]), int(p[8]), int(p[9])))
    except OSError:
        pass
    return out


def remove_semaphore(semid: int) -> bool:
    return _c().semctl(semid, 0, IPC_RMID) >= 0


def ctime_str(t: int) -> str:
    return time.ctime(t)
