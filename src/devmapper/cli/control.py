"""Choosing the driver, and opening the kernel's control node as libdm's _open_control does.

"auto" means the kernel whenever the kernel has a device-mapper driver, whatever DM_DEV_DIR
says: libdm then opens DM_DEV_DIR/mapper/control (creating the directory and the node
first if they are missing) and fails if it cannot, rather than turning to another driver.
Only without a kernel driver does "auto" reach the engine daemon. Imports only os and
stat: `dmsetup version` goes through here.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

MISC_MAJOR = 10
MAPPER_CTRL_MINOR = 236
DM_DEV_DIR_UMASK = 0o022
DM_CONTROL_NODE_UMASK = 0o177

Log = Callable[[str], None]


class ControlError(Exception):
    """The control node could not be opened; libdm's messages are already logged."""


def kernel_present() -> bool:
    """The kernel has device-mapper: registered, or loadable by opening its node."""
    if os.path.exists("/sys/class/misc/device-mapper"):
        return True
    try:
        fd = os.open("/dev/mapper/control", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def resolve(choice: str | None) -> str:
    choice = choice or "auto"
    if choice == "auto":
        return "kernel" if kernel_present() else "engine"
    return choice


def _sys_error(log: Log, op: str, path: str, err: OSError) -> None:
    log(f"{path}: {op} failed: {os.strerror(err.errno or errno.EIO)}")


def _control_exists(control: str, log: Log, verbose: Log) -> int:
    """1 if the right node is there, 0 if not (any wrong one removed), -1 on failure."""
    try:
        st = os.stat(control)
    except OSError as e:
        if e.errno != errno.ENOENT:
            _sys_error(log, "stat", control, e)
        return 0
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(MISC_MAJOR, MAPPER_CTRL_MINOR):
        return 1
    if not stat.S_ISCHR(st.st_mode):
        verbose(f"{control}: Wrong inode type")
    else:  # libdm prints the numbers of st_mode here, not of st_rdev
        verbose(f"{control}: Wrong device number: ({os.major(st.st_mode)}, "
                f"{os.minor(st.st_mode)}) instead of ({MISC_MAJOR}, {MAPPER_CTRL_MINOR})")
    try:
        os.unlink(control)
    except OSError as e:
        _sys_error(log, "unlink", control, e)
        return -1
    return 0


def _create_dir(path: str, log: Log, verbose: Log) -> bool:
    """dm_create_dir: mkdir -p, silent on a read-only filesystem."""
    if not path:
        return True
    try:
        if stat.S_ISDIR(os.stat(path).st_mode):
            return True
        log(f'Directory "{path}" not found')
        return False
    except OSError:
        pass
    verbose(f'Creating directory "{path}"')
    parts = [i for i, c in enumerate(path) if c == "/" and i]
    for prefix in [path[:i] for i in parts] + [path]:
        try:
            os.mkdir(prefix, 0o777)
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno != errno.EROFS:
                _sys_error(log, "mkdir", prefix, e)
            return False
    return True


def _create_control(control: str, dm_dir: str, log: Log, verbose: Log) -> bool:
    exists = _control_exists(control, log, verbose)
    if exists:
        return exists == 1
    old = os.umask(DM_DEV_DIR_UMASK)
    try:
        ok = _create_dir(dm_dir, log, verbose)
    finally:
        os.umask(old)
    if not ok:
        return False
    verbose(f"Creating device {control} ({MISC_MAJOR}, {MAPPER_CTRL_MINOR})")
    old = os.umask(DM_CONTROL_NODE_UMASK)
    try:
        os.mknod(control, stat.S_IFCHR | 0o600, os.makedev(MISC_MAJOR, MAPPER_CTRL_MINOR))
    except OSError as e:
        _sys_error(log, "mknod", control, e)
        return False
    finally:
        os.umask(old)
    return True


def open_control(dev_dir: str, log: Log, verbose: Log) -> tuple[str, int]:
    """(path, fd) of DEV_DIR/mapper/control, made if missing; ControlError after libdm's
    messages otherwise."""
    dm_dir = os.path.join(dev_dir, "mapper")
    control = os.path.join(dm_dir, "control")
    if _create_control(control, dm_dir, log, verbose):
        try:
            return control, os.open(control, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            _sys_error(log, "open", control, e)
    log("Failure to communicate with kernel device-mapper driver.")
    if os.geteuid() == 0:
        log("Check that device-mapper is available in the kernel.")
    raise ControlError(control)
