"""dmsetup's column reports (`info -c`, `splitname`): libdm-report.c for dmsetup's fields.

Field ids, headings, widths and help text are dmsetup's. Output rules follow libdm: widths
grow to the longest value, strings align left and numbers right, --noheadings switches the
separator to ':', --rows prints one line per field, --nameprefixes prints DM_FIELD='value'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devmapper.cli.context import Ctx

# Report object types (dmsetup's report_type_t) and the implicit "special" type.
DR_TASK, DR_INFO, DR_DEPS, DR_TREE, DR_NAME, DR_STATS, DR_STATS_META = 1, 2, 4, 8, 16, 32, 64
SPECIAL = 0x80000000
STR, NUM, SIZ = "string", "number", "size"

TYPES: list[tuple[int, str, str]] = [
    (DR_TASK, "Mapped Device Name", "name_"),
    (DR_INFO, "Mapped Device Information", "info_"),
    (DR_DEPS, "Mapped Device Relationship Information", "deps_"),
    (DR_TREE, "Mapped Device Relationship Information", "tree_"),
    (DR_NAME, "Mapped Device Name Components", "splitname_"),
    (DR_STATS, "Mapped Device Statistics", "stats_"),
    (DR_STATS_META, "Mapped Device Statistics Region Information", "region_"),
]
_SPECIAL_TYPE = (SPECIAL, "Special", "special_")

Getter = Callable[[Any], tuple[str, Any]]


class Field:
    __slots__ = ("type", "kind", "heading", "width", "id", "desc", "get", "uncomparable")

    def __init__(self, rtype: int, kind: str, heading: str, width: int, fid: str, desc: str,
                 get: Getter | None = None, uncomparable: bool = False) -> None:
        self.type = rtype
        self.kind = kind
        self.heading = heading
        self.width = width
        self.id = fid
        self.desc = desc
        self.get = get
        self.uncomparable = uncomparable


def _g(attr: str) -> Getter:
    return lambda obj: getattr(obj, attr)()


_STATS = [
    (NUM, "#Reads", 6, "read_count", "Count of reads completed."),
    (NUM, "#RdMrgs", 7, "reads_merged_count", "Count of read requests merged."),
    (NUM, "#RdSectors", 10, "read_sector_count", "Count of sectors read."),
    (NUM, "AccRdTime", 11, "read_time", "Accumulated duration of all read requests (ns)."),
    (NUM, "#Writes", 7, "write_count", "Count of writes completed."),
    (NUM, "#WrMrgs", 7, "writes_merged_count", "Count of write requests merged."),
    (NUM, "#WrSectors", 10, "write_sector_count", "Count of sectors written."),
    (NUM, "AccWrTime", 11, "write_time", "Accumulated duration of all writes (ns)."),
    (NUM, "#InProg", 7, "in_progress_count", "Count of requests currently in progress."),
    (NUM, "IoTicks", 7, "io_ticks", "Nanoseconds spent servicing requests."),
    (NUM, "QueueTicks", 10, "queue_ticks", "Total nanoseconds spent in queue."),
    (NUM, "RdTicks", 7, "read_ticks", "Nanoseconds spent servicing reads."),
    (NUM, "WrTicks", 7, "write_ticks", "Nanoseconds spent servicing writes."),
    (NUM, "RMrg/s", 6, "reads_merged_per_sec", "Read requests merged per second."),
    (NUM, "WMrg/s", 6, "writes_merged_per_sec", "Write requests merged per second."),
    (NUM, "R/s", 3, "reads_per_sec", "Reads per second."),
    (NUM, "W/s", 3, "writes_per_sec", "Writes per second."),
    (NUM, "RSz/s", 5, "read_size_per_sec", "Size of data read per second."),
    (NUM, "WSz/s", 5, "write_size_per_sec", "Size of data written per second."),
    (NUM, "AvgRqSz", 7, "avg_request_size", "Average request size."),
    (NUM, "QSize", 5, "queue_size", "Average queue size."),
    (NUM, "AWait", 5, "await", "Averate wait time."),
    (NUM, "RdAWait", 7, "read_await", "Averate read wait time."),
    (NUM, "WrAWait", 7, "write_await", "Averate write wait time."),
    (NUM, "Throughput", 10, "throughput", "Throughput."),
    (NUM, "SvcTm", 5, "service_time", "Service time."),
    (NUM, "Util%", 5, "util", "Utilization."),
    (STR, "Histogram Counts", 16, "hist_count", "Latency histogram counts."),
    (STR, "Histogram Counts", 16, "hist_count_bounds",
     "Latency histogram counts with bin boundaries."),
    (STR, "Histogram Counts", 16, "hist_count_ranges",
     "Latency histogram counts with bin ranges."),
    (STR, "Histogram%", 10, "hist_percent", "Relative latency histogram."),
    (STR, "Histogram%", 10, "hist_percent_bounds",
     "Relative latency histogram with bin boundaries."),
    (STR, "Histogram%", 10, "hist_percent_ranges",
     "Relative latency histogram with bin ranges."),
    (NUM, "IntervalNs", 10, "interval_ns", "Sampling interval in nanoseconds."),
    (NUM, "Interval", 8, "interval", "Sampling interval."),
]
_REGION = [
    (NUM, "RgID", 4, "region_id", "Region ID."),
    (SIZ, "RgStart", 7, "region_start", "Region start."),
    (SIZ, "RgSize", 6, "region_len", "Region length."),
    (NUM, "ArID", 4, "area_id", "Area ID."),
    (SIZ, "ArStart", 7, "area_start", "Area offset from start of device."),
    (SIZ, "ArSize", 6, "area_len", "Area length."),
    (SIZ, "ArOff", 5, "area_offset", "Area offset from start of region."),
    (NUM, "#Areas", 6, "area_count", "Area count."),
    (NUM, "GrpID", 5, "group_id", "Group ID."),
    (STR, "ProgID", 6, "program_id", "Program ID."),
    (STR, "UserData", 8, "user_data", "Auxiliary data."),
    (STR, "Precise", 7, "precise", "Set if nanosecond precision counters are enabled."),
    (STR, "#Bins", 9, "hist_bins", "The number of histogram bins configured."),
    (STR, "Histogram Bounds", 16, "hist_bounds", "Latency histogram bin boundaries."),
    (STR, "Histogram Ranges", 16, "hist_ranges", "Latency histogram bin ranges."),
    (STR, "Name", 16, "stats_name", "Stats name of current object."),
    (STR, "ObjType", 7, "obj_type", "Type of stats object being reported."),
]

FIELDS: list[Field] = [
    Field(DR_TASK, STR, "Name", 16, "name", "Name of mapped device.", _g("name")),
    Field(DR_TASK, STR, "MangledName", 16, "mangled_name", "Mangled name of mapped device.",
          _g("mangled_name")),
    Field(DR_TASK, STR, "UnmangledName", 16, "unmangled_name",
          "Unmangled name of mapped device.", _g("unmangled_name")),
    Field(DR_TASK, STR, "UUID", 32, "uuid", "Unique (optional) identifier for mapped device.",
          _g("uuid")),
    Field(DR_TASK, STR, "MangledUUID", 32, "mangled_uuid",
          "Mangled unique (optional) identifier for mapped device.", _g("mangled_uuid")),
    Field(DR_TASK, STR, "UnmangledUUID", 32, "unmangled_uuid",
          "Unmangled unique (optional) identifier for mapped device.", _g("unmangled_uuid")),
    Field(DR_TASK, NUM, "RAhead", 6, "read_ahead", "Read ahead value.", _g("read_ahead")),
    Field(DR_INFO, STR, "BlkDevName", 16, "blkdevname", "Name of block device.",
          _g("blkdevname")),
    Field(DR_INFO, STR, "Stat", 4, "attr",
          "(L)ive, (I)nactive, (s)uspended, (r)ead-only, read-(w)rite.", _g("attr")),
    Field(DR_INFO, STR, "Tables", 6, "tables_loaded",
          "Which of the live and inactive table slots are filled.", _g("tables_loaded")),
    Field(DR_INFO, STR, "Suspended", 9, "suspended", "Whether the device is suspended.",
          _g("suspended")),
    Field(DR_INFO, STR, "Read-only", 9, "readonly",
          "Whether the device is read-only or writeable.", _g("readonly")),
    Field(DR_INFO, STR, "DevNo", 5, "devno", "Device major and minor numbers", _g("devno")),
    Field(DR_INFO, NUM, "Maj", 3, "major", "Block device major number.", _g("major")),
    Field(DR_INFO, NUM, "Min", 3, "minor", "Block device minor number.", _g("minor")),
    Field(DR_INFO, NUM, "Open", 4, "open", "Number of references to open device, if requested.",
          _g("open")),
    Field(DR_INFO, NUM, "Targ", 4, "segments", "Number of segments in live table, if present.",
          _g("segments")),
    Field(DR_INFO, NUM, "Event", 6, "events", "Number of most recent event.", _g("events")),
    Field(DR_DEPS, NUM, "#Devs", 5, "device_count", "Number of devices used by this one.",
          _g("device_count")),
    Field(DR_TREE, STR, "DevNamesUsed", 16, "devs_used",
          "List of names of mapped devices used by this one.", _g("devs_used")),
    Field(DR_DEPS, STR, "DevNosUsed", 16, "devnos_used",
          "List of device numbers of devices used by this one.", _g("devnos_used")),
    Field(DR_DEPS, STR, "BlkDevNamesUsed", 16, "blkdevs_used",
          "List of names of block devices used by this one.", _g("blkdevs_used")),
    Field(DR_TREE, NUM, "#Refs", 5, "device_ref_count",
          "Number of mapped devices referencing this one.", _g("device_ref_count")),
    Field(DR_TREE, STR, "RefNames", 8, "names_using_dev",
          "List of names of mapped devices using this one.", _g("names_using_dev")),
    Field(DR_TREE, STR, "RefDevNos", 9, "devnos_using_dev",
          "List of device numbers of mapped devices using this one.", _g("devnos_using_dev")),
    Field(DR_NAME, STR, "Subsys", 6, "subsystem",
          "Userspace subsystem responsible for this device.", _g("subsystem")),
    Field(DR_NAME, STR, "VG", 4, "vg_name", "LVM Volume Group name.", _g("vg_name")),
    Field(DR_NAME, STR, "LV", 4, "lv_name", "LVM Logical Volume name.", _g("lv_name")),
    Field(DR_NAME, STR, "LVLayer", 7, "lv_layer", "LVM device layer.", _g("lv_layer")),
    *(Field(DR_STATS, k, h, w, i, d) for k, h, w, i, d in _STATS),
    *(Field(DR_STATS_META, k, h, w, i, d) for k, h, w, i, d in _REGION),
]

_SPECIAL_FIELDS = [
    Field(SPECIAL, NUM, "Selected", 8, "selected", "Set if item passes selection criteria."),
    Field(SPECIAL, NUM, "Help", 8, "help", "Show help.", uncomparable=True),
    Field(SPECIAL, NUM, "Help", 8, "?", "Show help.", uncomparable=True),
]

DEFAULT_OPTIONS = "name,major,minor,attr,open,segments,events,uuid"
SPLITNAME_OPTIONS = "vg_name,lv_name,lv_layer"


class ReportError(Exception):
    """Report setup failed; its messages were already printed."""


def _canon(name: str) -> str:
    return name.replace("_", "").lower()


class Prop:
    """A field as used by one report (libdm's field_properties)."""

    __slots__ = ("field", "width", "hidden", "sort_key", "descending", "implicit")

    def __init__(self, field: Field, implicit: bool, hidden: bool = False) -> None:
        self.field = field
        self.width = field.width
        self.hidden = hidden
        self.sort_key: int | None = None
        self.descending = False
        self.implicit = implicit


class Report:
    """dm_report_init_with_selection, dm_report_object and dm_report_output."""

    def __init__(self, ctx: Ctx, report_types: int, options: str, separator: str, *,
                 aligned: bool = True, headings: bool = True, prefixes: bool = False,
                 quoted: bool = True, rows: bool = False, keys: str = "",
                 selection: str | None = None) -> None:
        self.ctx = ctx
        self.sep = separator
        self.rows_mode = rows
        self.aligned = aligned and not rows
        self.headings = headings
        self.prefixes = prefixes
        self.quoted = quoted
        self.props: list[Prop] = []
        self.rows: list[tuple[list[tuple[str, Any]], bool]] = []
        self.already_reported = False
        self.selection = None
        self.report_types = report_types
        prefix = next((p for t, _d, p in TYPES if t == report_types), "")
        self.prefix = prefix
        self.keys_count = 0
        self._parse_fields(options, True)
        self._parse_keys(keys, True)
        self._parse_fields(options, False)
        self._parse_keys(keys, False)
        if any(p.implicit and p.field.id in ("help", "?") for p in self.props):
            self.display_fields(True, False)
            ctx.log_warn(" ")
            self.already_reported = True
        if selection:
            if selection.lower() == "help" or selection == "?":
                self.display_fields(False, True)
                ctx.log_warn(" ")
                from devmapper.cli.selection import display_help

                display_help(ctx)
                self.already_reported = True
            elif selection.lower() != "all":
                from devmapper.cli.selection import parse_selection

                self.selection = parse_selection(self, selection)

    # ---- field lookup
    def _lookup(self, name: str) -> tuple[Field, bool] | None:
        # libdm's _is_same_field: case-insensitive, underscores ignored. (Its "prefix"
        # variant never applies here: no dmsetup field id starts with its type's prefix.)
        canon = _canon(name)
        for f in _SPECIAL_FIELDS:
            if _canon(f.id) == canon:
                return f, True
        for f in FIELDS:
            if _canon(f.id) == canon:
                return f, False
        return None

    def _all_match(self, name: str) -> int:
        canon = _canon(name)
        types = 0
        unprefixed = False
        if canon == "all":
            if not self.prefix:
                return self.report_types or 0xFFFFFFFF
            unprefixed = True
            canon = _canon(self.prefix)
            types = self.report_types
        for t, _desc, prefix in TYPES:
            p = prefix[:-1].lower()
            if canon.startswith(p) and ((unprefixed and len(canon) == len(p))
                                        or canon[len(p):] == "all"):
                types |= t
        return types

    def _add(self, field: Field, implicit: bool, hidden: bool = False) -> Prop:
        prop = Prop(field, implicit, hidden)
        if hidden:
            self.props.insert(0, prop)
        else:
            self.props.append(prop)
        return prop

    def _parse_fields(self, fmt: str, types_only: bool) -> None:
        for word in fmt.split(","):
            if not word:
                continue
            found = self._lookup(word)
            if found:
                field, implicit = found
                if types_only:
                    self.report_types |= field.type
                else:
                    self._add(field, implicit)
                continue
            types = self._all_match(word)
            if types:
                if types_only:
                    self.report_types |= types
                else:
                    for f in FIELDS:
                        if f.type & types:
                            self._add(f, False)
                continue
            self.display_fields(True, False)
            self.ctx.log_warn(" ")
            self.ctx.log_error(f"Unrecognised field: {word}")
            raise ReportError

    def _parse_keys(self, keys: str, types_only: bool) -> None:
        for word in keys.split(","):
            if not word:
                continue
            key, descending = word, False
            if key[0] in "+-":
                descending = key[0] == "-"
                key = key[1:]
            found = self._lookup(key) if key else None
            if not found:
                if not key:
                    self.ctx.log_error("dm_report: Missing sort field name")
                self.display_fields(True, False)
                self.ctx.log_warn(" ")
                self.ctx.log_error(f"dm_report: Unrecognised field: {word}")
                raise ReportError
            field, implicit = found
            if types_only:
                self.report_types |= field.type
                continue
            prop = next((p for p in self.props if p.field is field), None)
            if prop is None:
                prop = self._add(field, implicit, hidden=True)
            if prop.sort_key is not None:
                self.ctx.log_warn(f"dm_report: Ignoring duplicate sort field: {field.id}.")
                continue
            prop.sort_key = self.keys_count
            prop.descending = descending
            self.keys_count += 1

    def field_for_selection(self, name: str) -> Prop | None:
        """A field a selection names; added hidden when the report does not show it."""
        found = self._lookup(name)
        if not found:
            return None
        field, implicit = found
        prop = next((p for p in self.props if p.field is field), None)
        if prop is None:
            prop = self._add(field, implicit, hidden=True)
            self.report_types |= field.type
        return prop

    # ---- help
    def display_fields(self, all_item: bool, show_types: bool) -> None:
        id_len = max(len(f.id) for f in [*_SPECIAL_FIELDS, *FIELDS])
        self._display_more(FIELDS, id_len, all_item, show_types)
        self.ctx.log_warn(" ")
        self._display_more(_SPECIAL_FIELDS, id_len, all_item, show_types)

    def _display_more(self, fields: list[Field], id_len: int, all_item: bool,
                      show_types: bool) -> None:
        last_desc = ""
        types = [*TYPES, _SPECIAL_TYPE]
        for f in fields:
            tid, desc, prefix = next(t for t in types if t[0] == f.type)
            if desc != last_desc:
                if last_desc:
                    self.ctx.log_warn(" ")
                self.ctx.log_warn(f"{desc} Fields")
                self.ctx.log_warn("-" * (len(desc) + 7))
                if all_item and tid != SPECIAL:
                    pad = " " * (id_len - 3 - len(prefix))
                    self.ctx.log_warn(f"  {prefix}all{pad} - All fields in this section.")
            extra = ""
            if show_types:
                extra = f" [{'unselectable ' if f.uncomparable else ''}{f.kind}]"
            self.ctx.log_warn(f"  {f.id:<{id_len}} - {f.desc}{extra}")
            last_desc = desc

    # ---- rows
    def needs(self, rtype: int) -> bool:
        return bool(self.report_types & rtype)

    def add_object(self, obj: Any, output: bool = True) -> bool:
        """dm_report_object_is_selected: the selection result; the row kept when output."""
        if self.already_reported:
            return True
        values: list[tuple[str, Any]] = []
        for prop in self.props:
            if prop.implicit:
                values.append(("1", 1))  # "selected" reads 1 while the selection runs
            else:
                assert prop.field.get is not None
                values.append(prop.field.get(obj))
        selected = True
        if self.selection is not None:
            from devmapper.cli.selection import evaluate

            selected = evaluate(self.selection, self.props, values)
        sel_prop = next((i for i, p in enumerate(self.props)
                         if p.implicit and p.field.id == "selected"), None)
        if sel_prop is not None:
            values[sel_prop] = (str(int(selected)), int(selected))
        keep = selected or (sel_prop is not None and not self.props[sel_prop].hidden)
        if output and keep:
            self.rows.append((values, selected))
        return selected

    def output(self) -> None:
        if not self.rows:
            return
        for values, _sel in self.rows:
            for prop, (text, _v) in zip(self.props, values, strict=True):
                prop.width = max(prop.width, len(text))
        keyed = sorted((p for p in self.props if p.sort_key is not None),
                       key=lambda p: p.sort_key or 0)
        if keyed:
            import functools

            idx = {id(p): i for i, p in enumerate(self.props)}
            def cmp(a: tuple[list[tuple[str, Any]], bool],
                    b: tuple[list[tuple[str, Any]], bool]) -> int:
                return _row_cmp(a[0], b[0], keyed, idx)

            self.rows.sort(key=functools.cmp_to_key(cmp))
        if self.rows_mode:
            self._output_rows()
        else:
            self._output_columns()
        self.rows = []

    def _cell(self, prop: Prop, text: str) -> str:
        if self.prefixes:
            body = f"'{text}'" if self.quoted else text
            return f"DM_{prop.field.id.upper()}={body}"
        if not self.aligned:
            return text
        w = prop.width
        if prop.field.kind in (NUM, SIZ):
            return f"{text[:w]:>{w}}"
        return f"{text[:w]:<{w}}"

    def _output_columns(self) -> None:
        shown = [i for i, p in enumerate(self.props) if not p.hidden]
        if self.headings:
            heads = []
            for i in shown:
                p = self.props[i]
                heads.append(f"{p.field.heading[:p.width]:<{p.width}}" if self.aligned
                             else p.field.heading)
            self.ctx.log_print(self.sep.join(heads))
        for values, _sel in self.rows:
            self.ctx.log_print(self.sep.join(self._cell(self.props[i], values[i][0])
                                             for i in shown))

    def _output_rows(self) -> None:
        for i, p in enumerate(self.props):
            if p.hidden:
                continue
            line = (p.field.heading + self.sep) if self.headings else ""
            line += self.sep.join(self._cell(p, values[i][0]) for values, _s in self.rows)
            self.ctx.log_print(line)


def _row_cmp(a: list[tuple[str, Any]], b: list[tuple[str, Any]], keyed: list[Prop],
             idx: dict[int, int]) -> int:
    for prop in keyed:
        i = idx[id(prop)]
        va, vb = a[i][1], b[i][1]
        if va == vb:
            continue
        less = va < vb
        if prop.descending:
            return 1 if less else -1
        return -1 if less else 1
    return 0
