"""The dependency tree of `ls --tree` and of the tree report fields (libdm-deptree.c), and
its drawing (dmsetup.c, after pstree).

Every listed device is added under the root; adding a device's dependencies unlinks them
from the root, so the root's children end up being the devices nothing else uses. Devices
that are not mapped devices (disks, loops) are leaves linked to the root from below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devmapper.cli.task import Info

#: (major, minor) -> (name, uuid, info, deps), or None when it is not a mapped device.
Lookup = Callable[[int, int], "tuple[str, str, Info, list[tuple[int, int]]] | None"]


class TreeNode:
    __slots__ = ("name", "uuid", "info", "exists", "major", "minor", "uses", "used_by")

    def __init__(self, name: str | None, uuid: str, info: Info | None, major: int,
                 minor: int) -> None:
        self.name = name
        self.uuid = uuid
        self.info = info
        self.exists = info is not None
        self.major = major
        self.minor = minor
        self.uses: list[TreeNode] = []
        self.used_by: list[TreeNode] = []


class DepTree:
    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.root = TreeNode(None, "", None, 0, 0)
        self.nodes: dict[tuple[int, int], TreeNode] = {}
        self.failed = False

    def add_dev(self, major: int, minor: int) -> None:
        self._add(self.root, major, minor)

    def _add(self, parent: TreeNode, major: int, minor: int) -> None:
        node = self.nodes.get((major, minor))
        new = node is None
        deps: list[tuple[int, int]] = []
        if node is None:
            found = self.lookup(major, minor)
            if found is None:
                node = TreeNode("", "", None, major, minor)
            else:
                name, uuid, info, deps = found
                node = TreeNode(name, uuid, info, major, minor)
            self.nodes[(major, minor)] = node
        self._link_tree_nodes(parent, node)
        if not new:
            return
        if not node.exists or not deps:
            _link(node, self.root)  # bottom level
            return
        for dmaj, dmin in deps:
            self._add(node, dmaj, dmin)

    def _link_tree_nodes(self, parent: TreeNode, child: TreeNode) -> None:
        root = self.root
        if parent is root:
            if self.num_children(child, True):
                return
        else:
            _unlink(root, child)
        if child is root:
            if self.num_children(parent, False):
                return
        else:
            _unlink(parent, root)
        _link(parent, child)

    def num_children(self, node: TreeNode, inverted: bool) -> int:
        if inverted:
            return 0 if node in self.root.uses else len(node.used_by)
        return 0 if self.root in node.uses else len(node.uses)

    def find(self, major: int, minor: int) -> TreeNode | None:
        if (major, minor) == (0, 0):
            return self.root
        return self.nodes.get((major, minor))

    @staticmethod
    def children(node: TreeNode, inverted: bool) -> list[TreeNode]:
        return node.used_by if inverted else node.uses


def _link(parent: TreeNode, child: TreeNode) -> None:
    if child not in parent.uses:
        parent.uses.append(child)
        child.used_by.append(parent)


def _unlink(parent: TreeNode, child: TreeNode) -> None:
    if child in parent.uses:
        parent.uses.remove(child)
        child.used_by.remove(parent)


# ---------------------------------------------------------------- drawing

UTF_V, UTF_VR, UTF_H, UTF_UR, UTF_HD = "\u2502", "\u251c", "\u2500", "\u2514", "\u252c"
VT_BEG, VT_END = "\x1b(0\x0f", "\x1b(B"
SYMBOLS = {
    "ascii": ("  ", "|-", "| ", "`-", "---", "-+-"),
    "utf": ("  ", UTF_VR + UTF_H, UTF_V + " ", UTF_UR + UTF_H, UTF_H * 3, UTF_H + UTF_HD + UTF_H),
    "vt100": ("  ", VT_BEG + "tq" + VT_END, VT_BEG + "x" + VT_END + " ", VT_BEG + "mq" + VT_END,
              VT_BEG + "qqq" + VT_END, VT_BEG + "qwq" + VT_END),
}
MAX_DEPTH = 100


class TreeOptions:
    def __init__(self) -> None:
        self.device = True
        self.blkdevname = False
        self.table = self.status = False
        self.active = self.rw = self.opencount = self.uuid = False
        self.compact = False
        self.truncate = True
        self.bottomup = False
        self.symbols = "ascii"
        self.termwidth = 80

    @property
    def attributes(self) -> bool:
        return self.active or self.rw or self.opencount or self.uuid

    @property
    def targets(self) -> bool:
        return self.table or self.status

    @property
    def print_compact(self) -> bool:
        return self.compact and not self.attributes and not self.targets


def parse_tree_options(text: str | None, opts: TreeOptions, log: Callable[[str], None],
                       utf_locale: bool, termwidth: int | None) -> bool:
    """_process_tree_options: every option may be abbreviated (strncmp over its length)."""
    opts.symbols = "utf" if utf_locale else "ascii"
    table: list[tuple[str, Callable[[], None]]] = [
        ("device", lambda: setattr(opts, "device", True)),
        ("blkdevname", lambda: setattr(opts, "blkdevname", True)),
        ("nodevice", lambda: setattr(opts, "device", False)),
        ("status", lambda: setattr(opts, "status", True)),
        ("table", lambda: setattr(opts, "table", True)),
        ("active", lambda: setattr(opts, "active", True)),
        ("open", lambda: setattr(opts, "opencount", True)),
        ("uuid", lambda: setattr(opts, "uuid", True)),
        ("rw", lambda: setattr(opts, "rw", True)),
        ("utf", lambda: setattr(opts, "symbols", "utf")),
        ("vt100", lambda: setattr(opts, "symbols", "vt100")),
        ("ascii", lambda: setattr(opts, "symbols", "ascii")),
        ("inverted", lambda: setattr(opts, "bottomup", True)),
        ("compact", lambda: setattr(opts, "compact", True)),
        ("notrunc", lambda: setattr(opts, "truncate", False)),
    ]
    s = text or ""
    pos = 0
    while pos < len(s):
        end = s.find(",", pos)
        end = len(s) if end < 0 else end
        word = s[pos:end]
        # strncmp(s, name, len): a prefix of the option name (an empty word is "device").
        for name, action in table:
            if name.startswith(word):
                action()
                break
        else:
            log(f"Tree options not recognised: {s[pos:]}.")
            return False
        if end >= len(s):
            break
        pos = end + 1
    if opts.symbols != "vt100" and termwidth is not None and termwidth > 3:
        opts.termwidth = termwidth - 3
    return True


class TreePrinter:
    """_display_tree_walk_children and its character-level output with truncation."""

    def __init__(self, tree: DepTree, opts: TreeOptions,
                 kernel_name: Callable[[int, int], str | None]) -> None:
        self.tree = tree
        self.o = opts
        self.sym = SYMBOLS[opts.symbols]
        self.buf = bytearray()
        self.kernel_name = kernel_name
        self.width = [0] * MAX_DEPTH
        self.more = [0] * MAX_DEPTH
        self.cur_x = 1
        self.last_char = ""

    def out_char(self, c: str) -> None:
        # One display column per UTF-8 character; bytes are what truncation counts.
        for b in c.encode("utf-8", "surrogateescape"):
            self._out_byte(b)

    def text(self) -> str:
        return self.buf.decode("utf-8", "surrogateescape")

    def _out_byte(self, c: int) -> None:
        self.cur_x += (c & 0xC0) != 0x80
        if not self.o.truncate:
            self.buf.append(c)
            return
        if self.cur_x <= self.o.termwidth:
            self.buf.append(c)
        if self.cur_x == self.o.termwidth + 1 and (c & 0xC0) != 0x80:
            if self.last_char or c & 0x80:
                self.buf += b"..."
            else:
                self.last_char = chr(c)
                self.cur_x -= 1

    def out_string(self, s: str) -> None:
        for ch in s:
            self.out_char(ch)

    def newline(self) -> None:
        if self.last_char and self.cur_x == self.o.termwidth:
            self.buf += self.last_char.encode("latin-1")
        self.last_char = ""
        self.buf += b"\n"
        self.cur_x = 1

    def prefix(self, depth: int) -> None:
        for d in range(depth):
            for _ in range(self.width[d] + 1):
                self.out_char(" ")
            if d == depth - 1:
                self.out_string(self.sym[1] if self.more[depth] else self.sym[3])
            else:
                self.out_string(self.sym[2] if self.more[d + 1] else self.sym[0])

    def attributes(self, node: TreeNode) -> None:
        info = node.info
        if info is None:
            return
        attr = 0
        o = self.o

        def sep() -> None:
            nonlocal attr
            self.out_string(", " if attr else " [")
            attr += 1

        if o.active:
            sep()
            self.out_string("SUSPENDED" if info.suspended else "ACTIVE")
        if o.rw:
            sep()
            self.out_string("RO" if info.read_only else "RW")
        if o.opencount:
            sep()
            self.out_string(str(info.open_count & 0xFFFFFFFF))
        if o.uuid:
            sep()
            self.out_string(node.uuid or "")
        if attr:
            self.out_char("]")

    def node(self, node: TreeNode, depth: int, last_child: bool, has_children: bool) -> None:
        o = self.o
        if depth + 2 > MAX_DEPTH:
            return
        name = node.name
        if not name and not o.device and not o.blkdevname:
            return
        self.more[depth] = 0 if last_child else 1
        self.width[depth] = 0
        first_on_line = self.cur_x == 1
        if not o.print_compact or first_on_line:
            self.prefix(depth)
        offset = self.cur_x
        if o.print_compact and not first_on_line:
            self.out_string(self.sym[5] if self.more[depth] else self.sym[4])
        if name:
            self.out_string(name)
        if o.blkdevname:
            kname = self.kernel_name(node.major, node.minor)
            if kname is not None:
                self.out_string(" <" if name is not None else "<")
                self.out_string(kname)
                self.out_char(">")
        if o.device:
            self.out_string(" (" if name is not None else "(")
            self.out_string(str(node.major))
            self.out_char(":")
            self.out_string(str(node.minor))
            self.out_char(")")
        if o.attributes:
            self.attributes(node)
        if o.print_compact:
            self.width[depth] = self.cur_x - offset
        if not o.print_compact or not has_children:
            self.newline()
        if o.targets:
            self.more[depth + 1] = 1 if has_children else 0

    def walk(self, node: TreeNode, depth: int) -> None:
        inverted = self.o.bottomup
        kids = list(DepTree.children(node, inverted))
        for i, child in enumerate(kids):
            has_children = bool(self.tree.num_children(child, inverted))
            self.node(child, depth, i == len(kids) - 1, has_children)
            if has_children:
                self.walk(child, depth + 1)
