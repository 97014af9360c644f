"""getopt_long as glibc does it: argv permutation, unique long-option prefixes, and the
exact diagnostics ("dmsetup: invalid option -- 'Z'") that scripts see on stderr.

Python's getopt module differs in both messages and corner cases, hence this small copy.
"""

from __future__ import annotations

NO_ARG, REQUIRED_ARG = 0, 1


class LongOpt:
    """One entry of getopt_long's option table (a plain class: dataclasses import slowly)."""

    __slots__ = ("name", "has_arg", "key")

    def __init__(self, name: str, has_arg: int, key: str) -> None:
        self.name = name
        self.has_arg = has_arg
        self.key = key


class GetoptError(Exception):
    """A usage error; the message is glibc's text without the trailing newline."""


def getopt_long(prog: str, args: list[str], shortopts: str,
                longopts: list[LongOpt]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Parse ``args`` (argv without argv[0]). Returns ([(key, value)], operands).

    Short options come back as their letter, long options as their ``key``. Operands keep
    their order; options may follow them (GNU permutation) until a literal ``--``.
    """
    opts: list[tuple[str, str | None]] = []
    operands: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            operands.extend(args[i:])
            break
        if arg.startswith("--"):
            i = _long(prog, arg, args, i, longopts, opts)
        elif arg.startswith("-") and arg != "-":
            i = _short(prog, arg, args, i, shortopts, opts)
        else:
            operands.append(arg)
    return opts, operands


def _long(prog: str, arg: str, args: list[str], i: int, longopts: list[LongOpt],
          opts: list[tuple[str, str | None]]) -> int:
    name, eq, value = arg[2:].partition("=")
    exact = [o for o in longopts if o.name == name]
    matches = exact or [o for o in longopts if o.name.startswith(name)]
    if not matches:
        raise GetoptError(f"{prog}: unrecognized option '--{name}'")
    if len(matches) > 1:
        poss = "".join(f" '--{o.name}'" for o in matches)
        raise GetoptError(f"{prog}: option '--{name}' is ambiguous; possibilities:{poss}")
    opt = matches[0]
    if opt.has_arg == NO_ARG:
        if eq:
            raise GetoptError(f"{prog}: option '--{opt.name}' doesn't allow an argument")
        opts.append((opt.key, None))
        return i
    if not eq:
        if i >= len(args):
            raise GetoptError(f"{prog}: option '--{opt.name}' requires an argument")
        value = args[i]
        i += 1
    opts.append((opt.key, value))
    return i


def _short(prog: str, arg: str, args: list[str], i: int, shortopts: str,
           opts: list[tuple[str, str | None]]) -> int:
    pos = 1
    while pos < len(arg):
        ch = arg[pos]
        idx = shortopts.find(ch)
        if idx < 0 or ch == ":":
            raise GetoptError(f"{prog}: invalid option -- '{ch}'")
        takes_arg = idx + 1 < len(shortopts) and shortopts[idx + 1] == ":"
        if not takes_arg:
            opts.append((ch, None))
            pos += 1
            continue
        if pos + 1 < len(arg):
            opts.append((ch, arg[pos + 1:]))
        elif i < len(args):
            opts.append((ch, args[i]))
            i += 1
        else:
            raise GetoptError(f"{prog}: option requires an argument -- '{ch}'")
        break
    return i
