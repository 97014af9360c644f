"""dmsetup's command table and usage text, as LVM2 1.02.185 prints them (to stderr)."""

from __future__ import annotations

#: name -> (help text, min args, max args (-1: any), repeatable: 0 no, 1 yes, 2 yes + --select)
COMMANDS: dict[str, tuple[str, int, int, int]] = {
    "help": ("[-c|-C|--columns]", 0, 0, 0),
    "create": ("<dev_name>\n"
               "\t    [-j|--major <major> -m|--minor <minor>]\n"
               "\t    [-U|--uid <uid>] [-G|--gid <gid>] [-M|--mode <octal_mode>]\n"
               "\t    [-u|--uuid <uuid>] [--addnodeonresume|--addnodeoncreate]\n"
               "\t    [--readahead {[+]<sectors>|auto|none}]\n"
               "\t    [-n|--notable|--table {<table>|<table_file>}]\n"
               "\tcreate --concise [<concise_device_spec_list>]", 0, 2, 0),
    "remove": ("[--deferred] [-f|--force] [--retry] <device>...", 0, -1, 2),
    "remove_all": ("[-f|--force]", 0, 0, 0),
    "suspend": ("[--noflush] [--nolockfs] <device>...", 0, -1, 2),
    "resume": ("[--noflush] [--nolockfs] <device>...\n"
               "\t       [--addnodeonresume|--addnodeoncreate]\n"
               "\t       [--readahead {[+]<sectors>|auto|none}]", 0, -1, 2),
    "load": ("<device> [<table>|<table_file>]", 0, 2, 0),
    "clear": ("<device>", 0, -1, 2),
    "reload": ("<device> [<table>|<table_file>]", 0, 2, 0),
    "wipe_table": ("[-f|--force] [--noflush] [--nolockfs] <device>...", 0, -1, 2),
    "rename": ("<device> [--setuuid] <new_name_or_uuid>", 1, 2, 0),
    "measure": ("[<device>...]", 0, -1, 2),
    "message": ("<device> <sector> <message>", 2, -1, 0),
    "ls": ("[--target <target_type>] [--exec <command>] [-o <options>] [--tree]", 0, 0, 0),
    "info": ("[<device>...]", 0, -1, 1),
    "deps": ("[-o <options>] [<device>...]", 0, -1, 2),
    "stats": ("<command> [<options>] [<device>...]", 1, -1, 1),
    "status": ("[<device>...] [--noflush] [--target <target_type>]", 0, -1, 2),
    "table": ("[<device>...] [--concise] [--target <target_type>] [--showkeys]", 0, -1, 2),
    "wait": ("<device> [<event_nr>] [--noflush]", 0, 2, 0),
    "mknodes": ("[<device>...]", 0, -1, 1),
    "mangle": ("[<device>...]", 0, -1, 1),
    "udevcreatecookie": ("", 0, 0, 0),
    "udevreleasecookie": ("[<cookie>]", 0, 1, 0),
    "udevflags": ("<cookie>", 1, 1, 0),
    "udevcomplete": ("<cookie>", 1, 1, 0),
    "udevcomplete_all": ("[<age_in_minutes>]", 0, 1, 0),
    "udevcookies": ("", 0, 0, 0),
    "target-version": ("[<target>...]", 1, -1, 0),
    "targets": ("", 0, 0, 0),
    "version": ("", 0, 0, 0),
    "setgeometry": ("<device> <cyl> <head> <sect> <start>", 5, 5, 0),
    "splitname": ("<device> [<subsystem>]", 1, 2, 0),
}

_HEAD = """Usage:

dmsetup
        [--version] [-h|--help [-c|-C|--columns]]
        [-v|--verbose [-v|--verbose ...]] [-f|--force]
        [--checks] [--manglename {none|hex|auto}]
        [-r|--readonly] [--noopencount] [--noflush] [--nolockfs] [--inactive]
        [--udevcookie <cookie>] [--noudevrules] [--noudevsync] [--verifyudev]
        [-y|--yes] [--readahead {[+]<sectors>|auto|none}] [--retry]
        [-c|-C|--columns] [-o <fields>] [-O|--sort <sort_fields>]
        [-S|--select <selection>] [--nameprefixes] [--noheadings]
        [--separator <separator>]

"""

_TAIL = """
<device> may be device name or (if only one) -u <uuid> or -j <major> -m <minor>
<mangling_mode> is one of 'none', 'auto' and 'hex'.
<fields> are comma-separated.  Use 'help -c' for list.
<concise_device_specification> has single-device entries separated by semi-colons:
    <name>,<uuid>,<minor>,<flags>,<table>
        where <flags> is 'ro' or 'rw' (the default) and any of <uuid>, <minor>
        and <flags> may be empty. Separate extra table lines with commas.
    E.g.: dev1,,,,0 100 linear 253:1 0,100 100 error;dev2,,,ro,0 1 error
Table_file contents may be supplied on stdin.
Options are: devno, devname, blkdevname.
Tree specific options are: ascii, utf, vt100; compact, inverted, notrunc;
                           blkdevname, [no]device, active, open, rw and uuid.

"""

def usage_text() -> str:
    lines = "".join(f"\t{name} {entry[0]}\n" for name, entry in COMMANDS.items())
    return _HEAD + lines + _TAIL
