"""devmap_mknod: make the device-mapper control node (the seed's devmap_mknod.sh).

With a kernel driver: /dev/mapper/control becomes a character device with the misc major
and the minor /proc/misc gives "device-mapper", mode 0600, and a line says so. Without
one: the engine daemon's control socket is made sure of (started if needed). When nothing
can be done it fails silently with a non-zero status, as the script did for its callers.
"""

from __future__ import annotations

import os
import stat
import sys

DM_NAME = "device-mapper"


def _misc_numbers() -> tuple[int, int] | None:
    major = minor = None
    try:
        with open("/proc/devices") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1] == "misc" and parts[0].isdigit():
                    major = int(parts[0])
        with open("/proc/misc") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1] == DM_NAME and parts[0].isdigit():
                    minor = int(parts[0])
    except OSError:
        return None
    if major is None or minor is None:
        return None
    return major, minor


def make_kernel_node(dev_dir: str, major: int, minor: int) -> str:
    directory = os.path.join(dev_dir, "mapper")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    control = os.path.join(directory, "control")
    if os.path.lexists(control):
        os.unlink(control)
    old = os.umask(0)
    try:
        os.mknod(control, stat.S_IFCHR | 0o600, os.makedev(major, minor))
    finally:
        os.umask(old)
    return control


def main(argv: list[str] | None = None) -> int:
    dev_dir = os.environ.get("DM_DEV_DIR", "/dev")
    numbers = _misc_numbers()
    try:
        if numbers is not None:
            control = make_kernel_node(dev_dir, *numbers)
            print(f"Creating {control} character device with major:{numbers[0]} "
                  f"minor:{numbers[1]}.")
            return 0
        from devmapper.daemon_client import connect_engine

        transport = connect_engine()
        path = getattr(transport, "path", "")
        transport.close()
        print(f"Engine control socket {path} is in place.")
        return 0
    except Exception:  # noqa: BLE001 - the script's contract: silent failure, non-zero exit
        return 1


if __name__ == "__main__":
    sys.exit(main())
