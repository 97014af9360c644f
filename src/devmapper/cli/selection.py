"""-S/--select: libdm-report's selection language for dmsetup's string and number fields.

    SELECTION := FIELD OP VALUE        OP: =~ !~ = != >= > <= <
    EX        := SELECTION | '(' OR ')' | '!' '(' OR ')'
    AND       := EX (('&&' | ',') AND)?
    OR        := AND (('||' | '#') OR)?

Values are numbers for number fields, and quoted (' or ") or bare strings otherwise; =~ and
!~ take a regular expression matched anywhere in the value. Errors print libdm's text.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from devmapper.cli.report import NUM, SIZ, ReportError

if TYPE_CHECKING:
    from collections.abc import Callable

    from devmapper.cli.context import Ctx
    from devmapper.cli.report import Prop, Report

# (operator, kind, description) in libdm's order: longer operators before their prefixes.
_CMP = [
    ("=~", "regex", "Matching regular expression. [regex]"),
    ("!~", "notregex", "Not matching regular expression. [regex]"),
    ("=", "eq", "Equal to. [number, size, percent, string, string list, time]"),
    ("!=", "ne", "Not equal to. [number, size, percent, string, string_list, time]"),
    (">=", "ge", "Greater than or equal to. [number, size, percent, time]"),
    (">", "gt", "Greater than. [number, size, percent, time]"),
    ("<=", "le", "Less than or equal to. [number, size, percent, time]"),
    ("<", "lt", "Less than. [number, size, percent, time]"),
    ("since", "ge_t", "Since specified time (same as '>='). [time]"),
    ("after", "gt_t", "After specified time (same as '>'). [time]"),
    ("until", "le_t", "Until specified time (same as '<='). [time]"),
    ("before", "lt_t", "Before specified time (same as '<'). [time]"),
]
_LOG = [
    ("&&", "and", "All fields must match"), (",", "and", "All fields must match"),
    ("||", "or", "At least one field must match"), ("#", "or", "At least one field must match"),
    ("!", "not", "Logical negation"), ("(", "ps", "Left parenthesis"),
    (")", "pe", "Right parenthesis"), ("[", "ls", "List start"), ("]", "le", "List end"),
    ("{", "sls", "List subset start"), ("}", "sle", "List subset end"),
]
_NUMERIC_OPS = {"ge", "gt", "le", "lt"}
_UNITS = set("bBsSkKmMgGtTpPeE")
_TIME_OPS = {"ge_t", "gt_t", "le_t", "lt_t"}
_SYNTAX = "Selection syntax error at '{}'."
_HELP_REF = "Use 'help' for selection to get more help."


class Item:
    __slots__ = ("prop", "op", "value", "negate")

    def __init__(self, prop: Prop, op: str, value: Any) -> None:
        self.prop = prop
        self.op = op
        self.value = value
        self.negate = False


class Group:
    __slots__ = ("kind", "members", "negate")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.members: list[Item | Group] = []
        self.negate = False


Node = Item | Group


def display_help(ctx: Ctx) -> None:
    w = ctx.log_warn
    w("Selection operands")
    w("------------------")
    w("  field               - Reporting field.")
    w("  number              - Non-negative integer value.")
    w("  size                - Floating point value with units, 'm' unit used by default "
      "if not specified.")
    w("  percent             - Non-negative integer with or without % suffix.")
    w("  string              - Characters quoted by ' or \" or unquoted.")
    w("  string list         - Strings enclosed by [ ] or { } and elements delimited by "
      "either")
    w("                        \"all items must match\" or \"at least one item must match\" "
      "operator.")
    w("  regular expression  - Characters quoted by ' or \" or unquoted.")
    w(" ")
    w("Selection operators")
    w("-------------------")
    w("  Comparison operators:")
    for op, _k, desc in _CMP:
        w(f"    {op:>6}  - {desc}")
    w(" ")
    w("  Logical and grouping operators:")
    for op, _k, desc in _LOG:
        w(f"    {op:>4}  - {desc}")
    w(" ")


def _skip(s: str, i: int) -> int:
    while i < len(s) and s[i].isspace():
        i += 1
    return i


def _tok_log(s: str, i: int, expect: set[str]) -> tuple[str | None, int]:
    i = _skip(s, i)
    for op, kind, _d in _LOG:
        if kind in expect and s.startswith(op, i):
            return kind, i + len(op)
    return None, i


class _Parser:
    def __init__(self, report: Report, text: str) -> None:
        self.r = report
        self.ctx = report.ctx
        self.s = text

    def fail(self, at: int) -> ReportError:
        self.ctx.log_error(_SYNTAX.format(self.s[at:]))
        self.ctx.log_error(_HELP_REF)
        return ReportError()

    def parse(self) -> Group:
        root = Group("or")
        node, end = self.or_ex(0)
        root.members.append(node)
        nxt = _skip(self.s, end)
        if nxt < len(self.s):
            self.ctx.log_error("Expecting logical operator")
            raise self.fail(nxt)
        return root

    def or_ex(self, i: int) -> tuple[Node, int]:
        return self._chain(i, "or", self.and_ex)

    def and_ex(self, i: int) -> tuple[Node, int]:
        return self._chain(i, "and", self.ex)

    def _chain(self, i: int, op: str,
               operand: Callable[[int], tuple[Node, int]]) -> tuple[Node, int]:
        """operand (op operand)*: one node, or a group of them when op appears."""
        group: Group | None = None
        while True:
            node, i = operand(i)
            kind, j = _tok_log(self.s, i, {op})
            if kind is None:
                if group is None:
                    return node, i
                group.members.append(node)
                return group, i
            if group is None:
                group = Group(op)
            group.members.append(node)
            i = j

    def _paren(self, kind: str, at: int) -> int:
        """The parenthesis expected at ``at``: the index after it."""
        k, j = _tok_log(self.s, at, {kind})
        if k is None:
            side = "left" if kind == "ps" else "right"
            self.ctx.log_error(f"Syntax error: {side} parenthesis expected at "
                               f"'{self.s[_skip(self.s, at):]}'")
            raise ReportError
        return j

    def ex(self, i: int) -> tuple[Node, int]:
        kind, j = _tok_log(self.s, i, {"not", "ps"})
        if kind == "not":
            node, end = self.or_ex(self._paren("ps", j))
            node.negate = not node.negate
            return node, self._paren("pe", end)
        if kind == "ps":
            node, end = self.or_ex(j)
            return node, self._paren("pe", end)
        return self.selection(_skip(self.s, i))

    def selection(self, i: int) -> tuple[Node, int]:
        s = self.s
        m = re.compile(r"[A-Za-z0-9_]+").match(s, i)
        if not m:
            self.ctx.log_error("Expecting field name")
            raise self.fail(i)
        name = m.group()
        we = m.end()
        prop = self.r.field_for_selection(name)
        if prop is None:
            self.r.display_fields(False, True)
            self.ctx.log_warn(" ")
            self.ctx.log_error(f"Unrecognised selection field: {name}")
            raise self.fail(i)
        if prop.field.uncomparable:
            self.r.display_fields(False, True)
            self.ctx.log_warn(" ")
            self.ctx.log_error(f"Selection field is uncomparable: {name}.")
            raise self.fail(i)
        j = _skip(s, we)
        op = next(((o, k) for o, k, _d in _CMP if s.startswith(o, j)), None)
        if op is None:
            display_help(self.ctx)
            self.ctx.log_error(f"Unrecognised comparison operator: {s[we:]}")
            raise self.fail(i)
        kind = op[1]
        j = _skip(s, j + len(op[0]))
        numeric = prop.field.kind in (NUM, SIZ)
        if kind in _NUMERIC_OPS and not numeric:
            display_help(self.ctx)
            self.ctx.log_error(f"Operator can be used only with number, size, time or "
                               f"percent fields: {name}")
            raise self.fail(i)
        if kind in _TIME_OPS:
            display_help(self.ctx)
            self.ctx.log_error(f"Operator can be used only with time fields: {name}")
            raise self.fail(i)
        if kind in ("regex", "notregex"):
            text, j = self.string_value(j, prop.field.id, "string", i)
            if numeric:
                self.ctx.log_error(f"dm_report: incompatible comparison type for selection "
                                   f"field {prop.field.id}")
                raise ReportError
            try:
                value: Any = re.compile(text)
            except re.error:
                self.ctx.log_error(f"dm_report: failed to create regex matcher for selection "
                                   f"field {prop.field.id}")
                raise ReportError from None
        elif numeric:
            m = re.compile(r"\d*\.?\d*").match(s, j)
            digits = m.group() if m else ""
            if not digits.strip("."):
                self.ctx.log_error(f"Failed to parse numeric value for selection field "
                                   f"{prop.field.id}.")
                raise self.fail(i)
            j += len(digits)
            if j < len(s) and s[j] == "%":
                self.ctx.log_error(f"Found percent value but numeric value expected for "
                                   f"selection field {prop.field.id}.")
                raise self.fail(i)
            if j < len(s) and s[j] in _UNITS:
                self.ctx.log_error(f"Found size unit specifier but numeric value expected "
                                   f"for selection field {prop.field.id}.")
                raise self.fail(i)
            value = int(digits.split(".")[0] or 0)
        else:
            value, j = self.string_value(j, prop.field.id, "string", i)
        return Item(prop, kind, value), j

    def string_value(self, j: int, field_id: str, what: str, start: int) -> tuple[str, int]:
        s = self.s
        if j < len(s) and s[j] in "'\"":
            q = s[j]
            end = s.find(q, j + 1)
            if end < 0:
                self.ctx.log_error("Missing end quote.")
                self.ctx.log_error(f"Failed to parse {what} value for selection field "
                                   f"{field_id}.")
                raise self.fail(start)
            return s[j + 1:end], end + 1
        k = j
        while k < len(s) and s[k] != " ":
            if _tok_log(s, k, {"and", "or", "pe"})[0] is not None and not s[k].isspace():
                break
            k += 1
        return s[j:k], k


def parse_selection(report: Report, text: str) -> Group:
    return _Parser(report, text).parse()


def evaluate(node: Node, props: list[Prop], values: list[tuple[str, Any]]) -> bool:
    if isinstance(node, Group):
        if node.kind == "or":
            r = any(evaluate(m, props, values) for m in node.members)
        else:
            r = all(evaluate(m, props, values) for m in node.members)
        return not r if node.negate else r
    text, sortval = values[props.index(node.prop)]
    op = node.op
    if op in ("regex", "notregex"):
        r = node.value.search(str(sortval)) is not None
        r = r if op == "regex" else not r
    elif node.prop.field.kind in (NUM, SIZ):
        a, b = int(sortval), int(node.value)
        r = {"eq": a == b, "ne": a != b, "gt": a > b, "ge": a >= b, "lt": a < b,
             "le": a <= b}[op]
    else:
        r = (text == node.value) if op == "eq" else (text != node.value)
    return not r if node.negate else r
