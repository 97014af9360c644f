"""udevflags, udevcomplete, udevcomplete_all, udevcookies, udevcreatecookie and
udevreleasecookie: LVM2's commands over the System V semaphores behind udev cookies.

libdm answers these only while udevd runs. Ours work whenever System V semaphores do, udev
or not (an engine has no udev at all): the cookies are real semaphores, created, signalled,
waited for and listed as udev would see them. DM_DISABLE_UDEV turns them off, as in libdm.
"""

from __future__ import annotations

import time

from devmapper.cli import udev
from devmapper.cli.state import Listed, State


def _usable(st: State) -> bool:
    return not st.lib.udev_disabled and udev.semaphores_supported()


def _cookie(st: State, text: str) -> int | None:
    value = udev.parse_cookie(text)
    if value is None:
        st.ctx.log_error("Incorrect cookie value.")
    return value


def udevflags(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    cookie = _cookie(st, args[0])
    if cookie is None:
        return False
    flags = cookie >> udev.FLAGS_SHIFT
    for i in range(16):
        if flags & (1 << i):
            if i < 8 and i < len(udev.FLAG_NAMES):
                st.ctx.out(f"DM_UDEV_{udev.FLAG_NAMES[i]}_FLAG='1'\n")
            elif i < 8:
                st.ctx.out(f"DM_UDEV_FLAG{i}='1'\n")
            else:
                st.ctx.out(f"DM_SUBSYSTEM_UDEV_FLAG{i - 8}='1'\n")
    return True


def udevcomplete(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    cookie = _cookie(st, args[0])
    if cookie is None:
        return False
    st.ctx.out(f"DM_COOKIE_COMPLETED=0x{cookie:<10x}\n")
    # A cookie with flags only (base 0) carries no notification.
    base = cookie & ~udev.FLAGS_MASK & 0xFFFFFFFF
    if not base or not _usable(st):
        return True
    return udev.complete(base | udev.DM_COOKIE_MAGIC << udev.FLAGS_SHIFT,
                         st.ctx.log_error, st.ctx.log_debug)


def udevcreatecookie(st: State, args: list[str], listed: Listed | None,
                     multiple: bool) -> bool:
    if not _usable(st):
        return True  # cookie 0: nothing to print
    made = udev.create_cookie(st.ctx.log_error, st.ctx.log_debug)
    if made is None:
        return False
    st.ctx.out(f"0x{made[0]:08X}\n")
    return True


def udevreleasecookie(st: State, args: list[str], listed: Listed | None,
                      multiple: bool) -> bool:
    if args:
        cookie = _cookie(st, args[0])
        if cookie is None:
            return False
        st.o.udev_cookie = cookie
    if not st.o.udev_cookie:
        st.ctx.log_error("No udev transaction cookie given.")
        return False
    if not _usable(st):
        return True
    return udev.wait(st.o.udev_cookie, st.ctx.log_error, st.ctx.log_debug)


def _yes_no(st: State, prompt: str) -> str:
    """_yes_no_prompt: 'y' or 'n' on a line of its own; EOF counts as 'n'."""
    ret = ""
    c = ""
    while True:
        if c == "\n" or not c:
            st.ctx.out(prompt)
            st.ctx.stdout.flush()
        c = st.ctx.stdin.read(1)
        if not c:
            ret = "n"
            break
        c = c.lower()
        if c in ("y", "n"):
            ret = c
        if ret and c == "\n":
            break
    if c != "\n":
        st.ctx.out("\n")
    return ret


def udevcomplete_all(st: State, args: list[str], listed: Listed | None,
                     multiple: bool) -> bool:
    age = 0
    if len(args) == 1:
        import re

        m = re.match(r"[ \t\n\v\f\r]*([+-]?\d+)", args[0])
        if not m:
            st.ctx.log_error("Failed to read age_in_minutes parameter.")
            return False
        age = int(m.group(1)) & 0xFFFFFFFF
    magic = udev.DM_COOKIE_MAGIC
    if not st.sw("yes"):
        older = f"older than {age} minutes " if age else ""
        st.ctx.log_warn(f"WARNING: This operation will destroy all semaphores {older}with "
                        f"keys that have a prefix {magic} (0x{magic:x}).")
        if _yes_no(st, "Do you really want to continue? [y/n]: ") == "n":
            st.ctx.log_print(f"Semaphores with keys prefixed by {magic} (0x{magic:x}) NOT "
                             "destroyed.")
            return True
    counter = skipped = 0
    for key, semid, otime, ctime in udev.dm_semaphores():
        now = int(time.time())
        if ctime + age * 60 > now or otime + age * 60 > now:
            skipped += 1
            continue
        if not udev.remove_semaphore(semid):
            st.ctx.log_error(f"Could not cleanup notification semaphore with semid {semid} "
                             f"and cookie value {key} (0x{key:x}).")
            continue
        counter += 1
    st.ctx.log_print(f"{counter} semaphores with keys prefixed by {magic} (0x{magic:x}) "
                     f"destroyed. {skipped} skipped.")
    return True


def udevcookies(st: State, args: list[str], listed: Listed | None, multiple: bool) -> bool:
    out = st.ctx.out
    out("Cookie       Semid      Value      Last semop time           Last change time\n")
    for key, semid, otime, ctime in udev.dm_semaphores():
        val = udev.getval(semid)
        if val < 0:
            continue
        out(f"0x{key:<10x} {semid:<10d} {val:<10d} {udev.ctime_str(otime)}  "
            f"{udev.ctime_str(ctime)}\n")
    return True
