"""A parsed visibility list filter as SQL over ``executions e`` and ``search_attributes``.

`translate` returns a WHERE expression with ``%s`` placeholders and its parameters, an ORDER BY
list and whether the query grouped by ExecutionStatus. Values are only ever parameters; column
names come from the fixed table below and attribute names are parameters too, so nothing from the
query is spliced into SQL.

Storage. System attributes are columns of ``executions`` (`_COLUMNS`). Every other attribute
(custom ones from the caller's registry, and the server-set ones such as BuildIds) is rows of
``search_attributes`` (run_id, name, v_text, v_int, v_num), read through
``EXISTS (SELECT 1 FROM search_attributes s WHERE s.run_id = e.run_id AND s.name = %s AND ...)``
so that indexes on (name, v_text), (name, v_int) and (name, v_num) serve selective filters: Keyword
and KeywordList in v_text (a row per list element), Text as a row per `text_tokens` token, Int in
v_int, Bool in v_int as 0/1, Double in v_num, Datetime in v_num as epoch seconds. No row means
the attribute is not set.

Semantics, after Temporal's SQL visibility (server ``common/persistence/visibility/store/query/
converter.go`` and the Postgres plugin ``common/persistence/sql/sqlplugin/postgresql/
query_converter.go``):

- An unset attribute behaves as SQL NULL: every comparison with it is unknown, so neither
  ``A = 'x'`` nor ``A != 'x'`` nor ``NOT A = 'x'`` matches a run without A; only ``A IS NULL``
  does. NOT is pushed down to the predicates (``NOT A < 5`` is ``A >= 5``, ``NOT A IN (..)`` is
  ``A NOT IN (..)``, De Morgan for AND/OR), which keeps SQL's three-valued logic exactly.
- KeywordList: ``=`` means the list contains the value, ``IN`` that it contains any of them,
  ``!=`` / ``NOT IN`` that it is set and contains none of them (Postgres's ``NOT (col @> ..)``).
- Text: ``=`` matches when ANY token of the value is among the stored tokens (Temporal's Postgres
  converter joins the tokens with ``|`` into a tsquery, SQLite's with ``OR``; docs.temporal.io:
  "the = operator returns a result if any query token matches"); ``!=`` is its negation for a
  run that has the attribute. Only ``=`` and ``!=``.
- Operators by type (Temporal's lists): Keyword: comparisons, IN, BETWEEN, STARTS_WITH (and the
  NOT forms); KeywordList: ``=``, ``!=``, IN; Text: ``=``, ``!=``; Int, Double, Datetime:
  comparisons, IN, BETWEEN; Bool: ``=``, ``!=``, IN (Temporal would also take ``<``/``>`` on
  Bool; we refuse them). IS [NOT] NULL on any attribute.
- ExecutionStatus takes a status name as the enum spells it, PascalCase (``'Running'``) or the
  proto name (``'WORKFLOW_EXECUTION_STATUS_RUNNING'``), case-sensitive, or its number.
- Datetime values are RFC 3339 strings (fractional seconds and offsets allowed) or integer
  nanoseconds since the epoch; SQL visibility keeps microseconds, so do we.
- ExecutionDuration (close_time - execution_time, unset while open) takes integer nanoseconds, a
  string of them, a Go duration (``'1h30m'``, ``'250ms'``, with Temporal's extra ``d`` unit) or
  ``'hh:mm:ss'``. HistoryLength is ``next_event_id - 1``.
- Names are case-sensitive; a custom name wins over the Temporal-prefix toggle, and a name that
  is not found is tried with the ``Temporal`` prefix added or removed (so ``ChangeVersion`` is
  TemporalChangeVersion), as Temporal's resolver does.
- ``ORDER BY`` is refused by Temporal's SQL visibility store (only Elasticsearch takes it, on any
  attribute but Text ones). We accept it on the system attributes kept in ``executions`` and
  refuse it on the others; unset values sort as the largest, on both databases.
- ``GROUP BY`` takes exactly one field and only ExecutionStatus (Temporal also allows
  TemporalNamespaceDivision and TemporalLowCardinalityKeyword*, which do not exist here).
- STARTS_WITH is a prefix match, case-sensitive: on Postgres ``LIKE`` with ``%``/``_``/``!``
  escaped (``ESCAPE '!'``, as Temporal does; a btree index serves it under the C collation), on
  SQLite (where LIKE ignores case) the range ``>= prefix AND < successor-of-prefix``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from dbosify._engine.visibility_query import (
    INVALID,
    UNSUPPORTED,
    And,
    Comparison,
    Expr,
    InList,
    IsNull,
    Name,
    Not,
    Or,
    Predicate,
    Query,
    Value,
    parse,
    query_error,
)

TEXT, KEYWORD, INT, DOUBLE, BOOL, DATETIME, KEYWORD_LIST = 1, 2, 3, 4, 5, 6, 7
TYPE_NAMES: Mapping[int, str] = {
    TEXT: "Text", KEYWORD: "Keyword", INT: "Int", DOUBLE: "Double", BOOL: "Bool",
    DATETIME: "Datetime", KEYWORD_LIST: "KeywordList",
}  # fmt: skip

# Bound values in one translated filter, at most. Temporal takes IN lists of any length; each
# value here is an SQL parameter, and Postgres's protocol carries at most 65,535 of them.
MAX_QUERY_VALUES = 10_000


@dataclass(frozen=True)
class Translated:
    where: str  # over alias e; "1 = 1" when the query has no filter; %s placeholders
    params: list[Any]
    order_by: str  # e.g. "e.start_time DESC"; "" when the query gave none
    group_by_status: bool  # GROUP BY ExecutionStatus


@dataclass(frozen=True)
class _Column:
    """A system attribute kept in ``executions``: its SQL and how values map onto it."""

    sql: str
    type: int
    nullable: bool = False
    kind: str = "plain"  # plain | status | duration | history_length


_COLUMNS: Mapping[str, _Column] = {
    "WorkflowId": _Column("e.workflow_id", KEYWORD),
    "RunId": _Column("e.run_id", KEYWORD),
    "WorkflowType": _Column("e.workflow_type", KEYWORD),
    "TaskQueue": _Column("e.task_queue", KEYWORD),
    "ExecutionStatus": _Column("e.status", KEYWORD, kind="status"),
    "StartTime": _Column("e.start_time", DATETIME),
    "CloseTime": _Column("e.close_time", DATETIME, nullable=True),
    "ExecutionTime": _Column("e.execution_time", DATETIME),
    "ExecutionDuration": _Column(
        "(e.close_time - e.execution_time)", INT, nullable=True, kind="duration"
    ),
    "HistoryLength": _Column("e.next_event_id", INT, kind="history_length"),
    "HistorySizeBytes": _Column("e.history_size_bytes", INT),
    "ParentWorkflowId": _Column("e.parent_workflow_id", KEYWORD, nullable=True),
    "ParentRunId": _Column("e.parent_run_id", KEYWORD, nullable=True),
    "RootWorkflowId": _Column("e.root_workflow_id", KEYWORD),
    "RootRunId": _Column("e.root_run_id", KEYWORD),
}

# Set by the server or the SDK, stored as rows of search_attributes like custom attributes.
_SERVER_SET: Mapping[str, int] = {
    "TemporalChangeVersion": KEYWORD_LIST,
    "BinaryChecksums": KEYWORD_LIST,
    "BuildIds": KEYWORD_LIST,
    "TemporalScheduledById": KEYWORD,
    "TemporalScheduledStartTime": DATETIME,
    "TemporalPauseInfo": KEYWORD_LIST,
}

SYSTEM_ATTRIBUTES: Mapping[str, int] = {
    **{name: col.type for name, col in _COLUMNS.items()},
    **_SERVER_SET,
}

_STATUSES = (
    "Unspecified", "Running", "Completed", "Failed", "Canceled", "Terminated", "ContinuedAsNew",
    "TimedOut",
)  # fmt: skip
# A standalone activity's statuses (temporalio's ActivityExecutionStatus).
_ACTIVITY_STATUSES = (
    "Unspecified", "Running", "Completed", "Failed", "Canceled", "Terminated", "TimedOut", "Paused",
)  # fmt: skip


def _status_values(names: tuple[str, ...], prefix: str) -> Mapping[str, int]:
    return {
        **{name: i for i, name in enumerate(names)},
        **{prefix + re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper(): i for i, name in enumerate(names)},
    }


@dataclass(frozen=True)
class Target:
    """What a filter lists: the system attributes kept as columns (of the table aliased ``e``,
    whose ``run_id`` keys its rows of search_attributes) and the status names."""

    columns: Mapping[str, _Column]
    statuses: tuple[str, ...]
    status_values: Mapping[str, int]

    @property
    def system(self) -> Mapping[str, int]:
        return {**{name: col.type for name, col in self.columns.items()}, **_SERVER_SET}


WORKFLOWS = Target(_COLUMNS, _STATUSES, _status_values(_STATUSES, "WORKFLOW_EXECUTION_STATUS_"))
# Standalone activities (table activity_executions), with the attributes Temporal indexes for them.
ACTIVITIES = Target(
    {
        "ActivityId": _Column("e.activity_id", KEYWORD),
        "RunId": _Column("e.run_id", KEYWORD),
        "ActivityType": _Column("e.activity_type", KEYWORD),
        "TaskQueue": _Column("e.task_queue", KEYWORD),
        "ExecutionStatus": _Column("e.status", KEYWORD, kind="status"),
        "StartTime": _Column("e.start_time", DATETIME),
        "CloseTime": _Column("e.close_time", DATETIME, nullable=True),
        "ExecutionTime": _Column("e.execution_time", DATETIME),
        "ExecutionDuration": _Column(
            "(e.close_time - e.execution_time)", INT, nullable=True, kind="duration"
        ),
    },
    _ACTIVITY_STATUSES,
    _status_values(_ACTIVITY_STATUSES, "ACTIVITY_EXECUTION_STATUS_"),
)

_WORD = re.compile(r"\w+")


def text_tokens(s: str) -> list[str]:
    """The words of a Text value, as stored (one row each) and as matched by ``=``.

    Lower-cased runs of Unicode letters, digits and underscores; everything else separates
    words, so ``'my-business-id foobar'`` is ``['my', 'business', 'id', 'foobar']``. Both the
    writer and the filter use this, so a filter word matches exactly the stored words equal to
    it (docs.temporal.io: ``Description = 'foobar'`` matches ``my-business-id-foobar``, a part
    of a word does not).
    """
    return _WORD.findall(s.lower())


# -- names -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attr:
    alias: str  # as the query wrote it, for messages
    name: str  # resolved name: the column's key or the search_attributes name
    type: int
    column: _Column | None  # None: rows of search_attributes


def _resolve(name: Name, registry: Mapping[str, int], target: Target = WORKFLOWS) -> _Attr:
    alias = name.text
    system = SYSTEM_ATTRIBUTES if target is WORKFLOWS else target.system
    if alias not in system and alias in registry:
        value_type = int(registry[alias])
        if value_type not in TYPE_NAMES:
            raise query_error(
                INVALID, f"unknown search attribute type {value_type} for {alias}", name.pos
            )
        return _Attr(alias, alias, value_type, None)
    resolved = alias
    if resolved not in system:
        resolved = alias[len("Temporal") :] if alias.startswith("Temporal") else "Temporal" + alias
    if resolved in system:
        return _Attr(alias, resolved, system[resolved], target.columns.get(resolved))
    raise query_error(INVALID, f"column name '{alias}' is not a valid search attribute", name.pos)


# -- values ------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_DURATION_PART = r"(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h|d)"
_DURATION = re.compile(rf"([+-]?)((?:{_DURATION_PART})+|0)")
_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
    "m": 60_000_000_000, "h": 3_600_000_000_000, "d": 86_400_000_000_000,
}  # fmt: skip
_HHMMSS = re.compile(r"(\d+):(\d+):(\d+)")


def _rfc3339_seconds(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 timestamp (to the microsecond), or None if it is not one."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micros = int(((m.group(7) or "") + "000000")[:6])
    try:
        tz = timezone.utc
        if m.group(9):
            offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
            tz = timezone(offset if m.group(9) == "+" else -offset)
        when = datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except ValueError:
        return None
    return when.timestamp()


def _duration_nanos(text: str) -> int | None:
    """Nanoseconds of a duration as Temporal's ExecutionDuration filter reads it, or None."""
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    m = _DURATION.fullmatch(text)
    if m is not None:
        total = 0.0
        for number, unit in re.findall(
            r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)", m.group(2)
        ):
            total += float(number) * _DURATION_UNITS[unit]
        return int(-total if m.group(1) == "-" else total)
    m = _HHMMSS.fullmatch(text)
    if m is not None and int(m.group(2)) < 60 and int(m.group(3)) < 60:
        h, mi, s = (int(g) for g in m.groups())
        return ((h * 60 + mi) * 60 + s) * 1_000_000_000
    return None


def _type_error(attr: _Attr, v: Value) -> Exception:
    go_type = {str: "string", int: "int64", float: "float64", bool: "bool"}[type(v.value)]
    return query_error(
        INVALID,
        f"invalid value type for search attribute {attr.alias} of type "
        f"{TYPE_NAMES[attr.type]}: {v.source} (type: {go_type})",
        v.pos,
    )


def _convert(attr: _Attr, v: Value, target: Target = WORKFLOWS) -> Any:
    """The parameter a literal becomes for this attribute, or an error saying why it cannot."""
    x = v.value
    kind = attr.column.kind if attr.column else "plain"
    if kind == "status":
        if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < len(target.statuses):
            return x
        if isinstance(x, str) and x in target.status_values:
            return target.status_values[x]
        raise query_error(INVALID, f"invalid ExecutionStatus value {v.source}", v.pos)
    if kind == "duration":
        nanos = x if isinstance(x, int) and not isinstance(x, bool) else None
        if isinstance(x, str):
            nanos = _duration_nanos(x)
        if nanos is None:
            raise query_error(
                INVALID,
                f"invalid duration value for search attribute ExecutionDuration: {v.source}",
                v.pos,
            )
        return nanos / 1e9
    t = attr.type
    if t in (KEYWORD, KEYWORD_LIST, TEXT):
        if not isinstance(x, str):
            raise _type_error(attr, v)
        return x
    if t in (INT, DOUBLE):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise _type_error(attr, v)
        return x + 1 if kind == "history_length" else x
    if t == BOOL:
        if not isinstance(x, bool):
            raise _type_error(attr, v)
        return int(x)
    # DATETIME
    if isinstance(x, str):
        seconds = _rfc3339_seconds(x)
        if seconds is None:
            raise query_error(INVALID, f"unable to parse datetime {v.source}", v.pos)
        return seconds
    if isinstance(x, int) and not isinstance(x, bool):
        return (_EPOCH + timedelta(microseconds=x // 1000)).timestamp()
    raise _type_error(attr, v)


# -- operators ---------------------------------------------------------------------------------

_COMPARE = ("=", "!=", "<", "<=", ">", ">=")
_ALLOWED: Mapping[int, frozenset[str]] = {
    KEYWORD: frozenset(
        (*_COMPARE, "in", "not in", "between", "not between", "starts_with", "not starts_with")
    ),
    KEYWORD_LIST: frozenset(("=", "!=", "in", "not in")),
    TEXT: frozenset(("=", "!=")),
    INT: frozenset((*_COMPARE, "in", "not in", "between", "not between")),
    DOUBLE: frozenset((*_COMPARE, "in", "not in", "between", "not between")),
    DATETIME: frozenset((*_COMPARE, "in", "not in", "between", "not between")),
    BOOL: frozenset(("=", "!=", "in", "not in")),
}
_NEGATED = {
    "=": "!=", "!=": "=", "<": ">=", ">=": "<", ">": "<=", "<=": ">", "in": "not in",
    "not in": "in", "between": "not between", "not between": "between",
    "starts_with": "not starts_with", "not starts_with": "starts_with",
    "is null": "is not null", "is not null": "is null",
}  # fmt: skip
_RANGE_TYPES = (DATETIME, DOUBLE, INT, KEYWORD)


def _check_operator(attr: _Attr, op: str, pos: int) -> None:
    if op in ("between", "not between") and attr.type not in _RANGE_TYPES:
        raise query_error(
            INVALID,
            f"cannot do range condition on search attribute '{attr.alias}' of type "
            f"{TYPE_NAMES[attr.type]}",
            pos,
        )
    allowed = _ALLOWED[attr.type]
    if attr.column is not None and attr.column.kind == "status":
        allowed = allowed - {"starts_with", "not starts_with"}
    if op not in allowed:
        raise query_error(
            UNSUPPORTED,
            f"operator '{op.upper()}' not supported for {TYPE_NAMES[attr.type]} type search "
            f"attribute '{attr.alias}'",
            pos,
        )


def _prefix_successor(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (code point order)."""
    chars = list(prefix)
    while chars:
        c = ord(chars.pop()) + 1
        if c == 0xD800:
            c = 0xE000  # surrogates cannot be stored
        if c <= 0x10FFFF:
            return "".join(chars) + chr(c)
    return None


def _like_prefix(prefix: str) -> str:
    return re.sub(r"([%_!])", r"!\1", prefix) + "%"


# -- translation -------------------------------------------------------------------------------


class _Translator:
    def __init__(self, registry: Mapping[str, int], sqlite: bool, target: Target) -> None:
        self.registry = registry
        self.sqlite = sqlite
        self.target = target
        self.params: list[Any] = []

    def param(self, value: Any) -> str:
        self.params.append(value)
        return "%s"

    def expr(self, x: Expr, negated: bool) -> str:
        if isinstance(x, Not):
            return self.expr(x.expr, not negated)
        if isinstance(x, (And, Or)):
            conjunction = isinstance(x, And) != negated
            parts = [self.expr(item, negated) for item in x.items]
            return "(" + (" AND " if conjunction else " OR ").join(parts) + ")"
        return self.predicate(x, negated)

    def predicate(self, p: Predicate, negated: bool) -> str:
        attr = _resolve(p.name, self.registry, self.target)
        values: list[Any]
        if isinstance(p, IsNull):
            op = "is not null" if p.negated else "is null"
            values = []
        else:
            if isinstance(p, Comparison):
                op, raw = p.op, [p.value]
            elif isinstance(p, InList):
                op, raw = ("not in" if p.negated else "in"), list(p.values)
            else:
                op, raw = ("not between" if p.negated else "between"), [p.low, p.high]
            _check_operator(attr, op, p.name.pos)
            values = [_convert(attr, v, self.target) for v in raw]
            if attr.type == TEXT:
                tokens = text_tokens(values[0])
                if not tokens:
                    raise query_error(
                        INVALID,
                        "unexpected value for Text type search attribute (no tokens found)",
                        raw[0].pos,
                    )
                op, values = ("in" if op == "=" else "not in"), list(dict.fromkeys(tokens))
        if negated:
            op = _NEGATED[op]
        if attr.column is not None:
            return self.condition(attr.column.sql, op, values)
        return self.rows(attr, op, values)

    def condition(self, col: str, op: str, values: list[Any]) -> str:
        """A condition on one value expression; SQL NULL makes it unknown, never true."""
        if op in ("is null", "is not null"):
            if col.startswith("(e.close_time -"):
                col = "e.close_time"  # ExecutionDuration is unset exactly while the run is open
            return f"{col} {op.upper()}"
        if op in ("in", "not in"):
            marks = ", ".join(self.param(v) for v in values)
            return f"{col} {op.upper()} ({marks})"
        if op in ("between", "not between"):
            return f"{col} {op.upper()} {self.param(values[0])} AND {self.param(values[1])}"
        if op in ("starts_with", "not starts_with"):
            return self.prefix(col, values[0], op == "not starts_with")
        return f"{col} {'<>' if op == '!=' else op} {self.param(values[0])}"

    def prefix(self, col: str, prefix: str, negated: bool) -> str:
        if not self.sqlite:
            return f"{col} {'NOT LIKE' if negated else 'LIKE'} {self.param(_like_prefix(prefix))} ESCAPE '!'"
        upper = _prefix_successor(prefix)
        cond = f"{col} >= {self.param(prefix)}"
        if upper is not None:
            cond = f"{cond} AND {col} < {self.param(upper)}"
        return f"NOT ({cond})" if negated else f"({cond})"

    def rows(self, attr: _Attr, op: str, values: list[Any]) -> str:
        """A condition on an attribute kept as rows of search_attributes."""
        if op == "is null":
            return "NOT " + self.exists(attr.name)
        if op == "is not null":
            return self.exists(attr.name)
        col = {INT: "s.v_int", BOOL: "s.v_int", DOUBLE: "s.v_num", DATETIME: "s.v_num"}.get(
            attr.type, "s.v_text"
        )
        if attr.type in (KEYWORD_LIST, TEXT) and op in ("!=", "not in"):
            # Set, and none of its values is one of these.
            present = self.exists(attr.name)
            absent = self.exists(attr.name, col, "=" if op == "!=" else "in", values)
            return f"({present} AND NOT {absent})"
        return self.exists(attr.name, col, op, values)

    def exists(
        self, name: str, col: str | None = None, op: str = "", values: list[Any] | None = None
    ) -> str:
        sql = "SELECT 1 FROM search_attributes s WHERE s.run_id = e.run_id AND s.name = "
        sql += self.param(name)  # bound before the condition's parameters, as written
        if col is not None:
            sql += " AND " + self.condition(col, op, values or [])
        return f"EXISTS ({sql})"


def translate(
    query: str, registry: Mapping[str, int], *, sqlite: bool, target: Target = WORKFLOWS
) -> Translated:
    """Parse and translate a list filter; raises ``ServiceError`` (INVALID_ARGUMENT) if it is bad."""
    parsed: Query = parse(query)
    t = _Translator(registry, sqlite, target)
    where = "1 = 1" if parsed.where is None else t.expr(parsed.where, False)
    if len(t.params) > MAX_QUERY_VALUES:
        raise query_error(
            INVALID,
            f"the query has {len(t.params)} values (words of Text values and attribute names"
            f" included); at most {MAX_QUERY_VALUES}",
        )
    group_by_status = False
    if len(parsed.group_by) > 1:
        raise query_error(
            UNSUPPORTED, "'GROUP BY' clause supports only a single field", parsed.group_by[1].pos
        )
    for name in parsed.group_by:
        attr = _resolve(name, registry, target)
        if attr.name != "ExecutionStatus":
            raise query_error(
                UNSUPPORTED,
                f"'GROUP BY' clause is not supported for search attribute {attr.alias}",
                name.pos,
            )
        group_by_status = True
    order: list[str] = []
    for item in parsed.order_by:
        attr = _resolve(item.name, registry, target)
        if attr.type == TEXT:
            raise query_error(
                UNSUPPORTED, "unable to sort by search attribute type Text", item.name.pos
            )
        if attr.column is None:
            raise query_error(
                UNSUPPORTED,
                f"'ORDER BY' is only supported on system search attributes, not on '{attr.alias}'",
                item.name.pos,
            )
        sql = attr.column.sql + (" DESC" if item.descending else " ASC")
        if attr.column.nullable:  # unset sorts as the largest, as Postgres does by default
            sql += " NULLS FIRST" if item.descending else " NULLS LAST"
        order.append(sql)
    return Translated(where, t.params, ", ".join(order), group_by_status)
