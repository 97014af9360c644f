"""`devmapper`: tools beyond dmsetup.

    devmapper move NAME --from DEV --to DEV [--to-offset SECTOR] [--region-size SECTORS]
    devmapper move --continue NAME
    devmapper move --abort NAME

`move` moves every linear segment and every stripe of the live device NAME that lies on
--from onto --to (at the same offsets, or packed from --to-offset) while the device stays in
use, showing progress on stderr. Stripes move through a temporary mirror device NAME-pvmove,
as pvmove does. An interrupted move is finished with --continue or undone with --abort.
"""

from __future__ import annotations

import argparse
import sys

from devmapper.library import DeviceMapper, DMError
from devmapper.move import (
    DEFAULT_REGION_SIZE,
    MoveError,
    ProgressBar,
    abort_move,
    continue_move,
    move,
)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="devmapper", description="device-mapper tools")
    sub = ap.add_subparsers(dest="command", required=True)
    mv = sub.add_parser("move", help="move a live device's data to another device",
                        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    mv.add_argument("name", help="mapped device name")
    mv.add_argument("--from", dest="source", metavar="DEV", help="device to move off")
    mv.add_argument("--to", dest="dest", metavar="DEV", help="device to move onto")
    mv.add_argument("--to-offset", type=int, metavar="SECTOR",
                    help="pack the moved segments on --to from this sector (default: keep "
                         "each segment's offset)")
    mv.add_argument("--region-size", type=int, default=DEFAULT_REGION_SIZE, metavar="SECTORS",
                    help=f"mirror region size while copying (default {DEFAULT_REGION_SIZE})")
    what = mv.add_mutually_exclusive_group()
    what.add_argument("--continue", dest="resume", action="store_true",
                      help="finish an interrupted move")
    what.add_argument("--abort", action="store_true",
                      help="undo an interrupted move: back onto the old device")
    mv.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return ap


def _move(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    rs = args.region_size
    if rs < 2 or rs & (rs - 1):
        ap.error("--region-size must be a power of two of at least 2 sectors")
    if not (args.resume or args.abort) and (args.source is None or args.dest is None):
        ap.error("--from and --to are required (or --continue / --abort)")
    bar = None if args.quiet else ProgressBar(f"Moving {args.name}")
    try:
        with DeviceMapper() as dm:
            if args.abort:
                abort_move(dm, args.name, bar)
            elif args.resume:
                continue_move(dm, args.name, bar)
            else:
                move(dm, args.name, args.source, args.dest, dest_offset=args.to_offset,
                     region_size=rs, progress=bar)
    except (MoveError, DMError) as e:
        if bar is not None:
            bar.close()
        print(f"devmapper move: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        print(f"devmapper move: interrupted; finish with `devmapper move --continue "
              f"{args.name}` or undo with `devmapper move --abort {args.name}`",
              file=sys.stderr)
        return 130
    if bar is not None:
        bar.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.command == "move":
        return _move(args, ap)
    ap.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
