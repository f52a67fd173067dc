"""Visibility list filters: the parser, its errors, and the SQL it becomes on both databases.

- The parser builds the expected AST: AND binds tighter than OR, NOT tighter than AND, keywords
  in any case, back-quoted names, both quote styles with backslash escapes and doubled quotes.
- Bad queries fail with INVALID_ARGUMENT, "invalid query: ..." naming the problem and position.
- Values are never spliced into SQL: injection attempts come back as parameters.
- The same queries over the same runs give the same run ids on real Postgres (a throwaway
  schema) and real SQLite (a temporary file): NULL semantics of unset attributes, KeywordList
  contains, Text tokens, STARTS_WITH with LIKE metacharacters, datetimes with offsets, durations.
- ORDER BY and GROUP BY ExecutionStatus run and agree on both databases.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dbosify._engine.errors import INVALID_ARGUMENT, ServiceError
from dbosify._engine.visibility_query import (
    And,
    Between,
    Comparison,
    InList,
    IsNull,
    Not,
    Or,
    parse,
)
from dbosify._engine.visibility_sql import SYSTEM_ATTRIBUTES, text_tokens, translate

TEXT, KEYWORD, INT, DOUBLE, BOOL, DATETIME, KEYWORD_LIST = 1, 2, 3, 4, 5, 6, 7

REGISTRY = {
    "CustomKeyword": KEYWORD,
    "CustomKeywordList": KEYWORD_LIST,
    "CustomText": TEXT,
    "CustomInt": INT,
    "CustomDouble": DOUBLE,
    "CustomBool": BOOL,
    "CustomDatetime": DATETIME,
    "Custom Field": KEYWORD,
}


# -- parser ------------------------------------------------------------------------------------


def test_and_binds_tighter_than_or_and_not_tighter_than_and() -> None:
    q = parse("a = 1 OR NOT b = 2 AND c = 3")
    assert isinstance(q.where, Or)
    left, right = q.where.items
    assert isinstance(left, Comparison) and left.name.text == "a"
    assert isinstance(right, And)
    assert isinstance(right.items[0], Not) and isinstance(right.items[0].expr, Comparison)
    assert right.items[0].expr.name.text == "b"


def test_parentheses_group_and_chains_are_flat() -> None:
    q = parse("(a = 1 OR b = 2) AND c = 3 AND d = 4")
    assert isinstance(q.where, And) and len(q.where.items) == 3
    assert isinstance(q.where.items[0], Or)


def test_keywords_are_case_insensitive_names_are_not() -> None:
    q = parse("WorkflowId iN ('a') aNd x Is NoT nUlL oR y nOt BeTwEeN 1 AnD 2 order BY z Desc")
    assert isinstance(q.where, Or)
    first, second = q.where.items
    assert isinstance(first, And)
    assert isinstance(first.items[0], InList) and first.items[0].name.text == "WorkflowId"
    assert isinstance(first.items[1], IsNull) and first.items[1].negated
    assert isinstance(second, Between) and second.negated
    assert q.order_by[0].name.text == "z" and q.order_by[0].descending


def test_operators_and_values() -> None:
    q = parse(
        "a != 'x' AND b <> \"y\" AND c >= -3 AND d < 1.5e2 AND e STARTS_WITH 'p' "
        "AND f NOT STARTS_WITH 'q' AND g = true AND h = FALSE AND i NOT IN (1, 'two') "
        "AND j = 99999999999999999999"
    )
    assert isinstance(q.where, And)
    got: list[tuple[str, str, object]] = []
    for item in q.where.items:
        if isinstance(item, Comparison):
            got.append((item.name.text, item.op, item.value.value))
        else:
            assert isinstance(item, InList)
            got.append((item.name.text, "not in", tuple(v.value for v in item.values)))
    assert got == [
        ("a", "!=", "x"), ("b", "!=", "y"), ("c", ">=", -3), ("d", "<", 150.0),
        ("e", "starts_with", "p"), ("f", "not starts_with", "q"), ("g", "=", True),
        ("h", "=", False), ("i", "not in", (1, "two")), ("j", "=", 1e20),
    ]  # fmt: skip
    assert isinstance(q.where.items[9], Comparison)
    assert isinstance(q.where.items[9].value.value, float)  # past int64: a float, as Temporal


def test_quoting() -> None:
    q = parse(r"`Custom ``Field``` = 'it''s \'quoted\' \\ \n \% done'")
    assert isinstance(q.where, Comparison)
    assert q.where.name.text == "Custom `Field`"
    assert q.where.value.value == "it's 'quoted' \\ \n % done"
    q = parse(r'''a = "say \"hi\" and ""bye"" 'x'"''')
    assert isinstance(q.where, Comparison) and q.where.value.value == "say \"hi\" and \"bye\" 'x'"


def test_group_by_and_order_by_without_a_filter() -> None:
    q = parse("GROUP BY ExecutionStatus")
    assert q.where is None and [n.text for n in q.group_by] == ["ExecutionStatus"]
    q = parse("  ORDER BY StartTime, CloseTime ASC, RunId DESC ")
    assert q.where is None
    assert [(i.name.text, i.descending) for i in q.order_by] == [
        ("StartTime", False), ("CloseTime", False), ("RunId", True),
    ]  # fmt: skip
    assert parse("").where is None and parse("   ").where is None


def error_of(fn: Callable[[], object]) -> str:
    with pytest.raises(ServiceError) as info:
        fn()
    assert info.value.status == INVALID_ARGUMENT
    assert info.value.message.startswith("invalid query: ")
    return info.value.message


# (query, what the message says, the position it names)
ERRORS: list[tuple[str, str, int]] = [
    ("WorkflowId = 'abc", "unterminated string", 13),
    ('WorkflowId = "abc', "unterminated string", 13),
    ("`WorkflowId = 'a'", "unterminated back-quoted name", 0),
    ("WorkflowId = 'a\\", "unterminated string", 13),
    ("WorkflowId =", "unexpected end of query, expected a value", 12),
    ("WorkflowId = 'a' AND", "unexpected end of query", 20),
    ("WorkflowId 'a'", "unexpected \"'a'\", expected a comparison operator", 11),
    ("(WorkflowId = 'a'", "expected ')'", 17),
    ("WorkflowId = 'a')", "unexpected ')'", 16),
    ("WorkflowId = 'a' 'b'", "unexpected \"'b'\"", 17),
    ("WorkflowId = 'a' # x", "unexpected character '#'", 17),
    ("WorkflowId IN ()", "unexpected ')', expected a value", 15),
    ("WorkflowId IN 'a'", "expected '(' after IN", 14),
    ("WorkflowId = ('a', 'b')", "list of values is only allowed after IN", 13),
    ("WorkflowId BETWEEN 'a' 'b'", "expected AND in BETWEEN", 23),
    ("WorkflowId IS 'a'", "expected NULL", 14),
    ("WorkflowId IS TRUE", "'IS' operator can only be used as 'IS NULL' or 'IS NOT NULL'", 14),
    ("WorkflowId NOT = 'a'", "expected IN, BETWEEN or STARTS_WITH after NOT", 15),
    ("WorkflowId", "incomplete expression", 0),
    ("WorkflowId = RunId", "did you forget to quote 'RunId'?", 13),
    ("'a' = WorkflowId", "must be a column name", 0),
    ("WorkflowId = NULL", "use IS NULL or IS NOT NULL", 13),
    ("WorkflowId LIKE 'a%'", "operation is not supported: operator 'LIKE'", 11),
    ("WorkflowId <=> 'a'", "operation is not supported: operator '<=>'", 11),
    ("WorkflowId = 'a' LIMIT 5", "operation is not supported: 'LIMIT' clause", 17),
    ("HistoryLength = 12abc", "malformed number", 16),
    ("Order = 'a'", "expected BY after ORDER", 6),
    ("WorkflowId = 'a' AND by = 'b'", "'by' is a reserved word; write it `by`", 21),
    ("ORDER BY", "unexpected end of query, expected a search attribute name", 8),
    ("WorkflowId = 'a' ORDER BY StartTime GROUP BY ExecutionStatus", "expected the end", 36),
    ("(" * 150 + "WorkflowId = 'a'" + ")" * 150, "max nesting level reached", 100),
    # names and types (visibility_sql)
    ("workflowId = 'a'", "invalid expression: column name 'workflowId' is not a valid search attribute", 0),
    ("X = 1 OR Nope = 2", "column name 'X' is not a valid search attribute", 0),
    ("CustomKeyword = 'a' AND Nope = 2", "column name 'Nope' is not a valid search attribute", 24),
    ("CustomText > 'a'", "operator '>' not supported for Text type search attribute 'CustomText'", 0),
    ("CustomText IN ('a')", "operator 'IN' not supported for Text type", 0),
    ("CustomKeywordList > 'a'", "operator '>' not supported for KeywordList type", 0),
    ("CustomKeywordList STARTS_WITH 'a'", "operator 'STARTS_WITH' not supported for KeywordList", 0),
    ("CustomInt STARTS_WITH '1'", "operator 'STARTS_WITH' not supported for Int type", 0),
    ("StartTime NOT STARTS_WITH '1'", "operator 'NOT STARTS_WITH' not supported for Datetime", 0),
    ("ExecutionStatus STARTS_WITH 'Run'", "operator 'STARTS_WITH' not supported for Keyword", 0),
    ("CustomBool > false", "operator '>' not supported for Bool type search attribute", 0),
    ("CustomBool BETWEEN false AND true", "cannot do range condition on search attribute 'CustomBool' of type Bool", 0),
    ("NOT CustomKeywordList BETWEEN 'a' AND 'b'", "cannot do range condition", 4),
    ("CustomText BETWEEN 'a' AND 'b'", "cannot do range condition on search attribute 'CustomText' of type Text", 0),
    ("CustomInt = 'ten'", "invalid value type for search attribute CustomInt of type Int: 'ten' (type: string)", 12),
    ("CustomInt IN (1, true)", "of type Int: true (type: bool)", 17),
    ("CustomBool = 1", "invalid value type for search attribute CustomBool of type Bool: 1 (type: int64)", 13),
    ("CustomKeyword = 5", "of type Keyword: 5 (type: int64)", 16),
    ("WorkflowId IN ('a', 2.5)", "of type Keyword: 2.5 (type: float64)", 20),
    ("CustomDatetime > 'yesterday'", "unable to parse datetime 'yesterday'", 17),
    ("StartTime > '2024-02-30T00:00:00Z'", "unable to parse datetime", 12),
    ("StartTime > '2024-01-01 00:00:00'", "unable to parse datetime", 12),
    ("StartTime > 1.5", "of type Datetime: 1.5 (type: float64)", 12),
    ("ExecutionStatus = 'running'", "invalid ExecutionStatus value 'running'", 18),
    ("ExecutionStatus = 8", "invalid ExecutionStatus value 8", 18),
    ("ExecutionDuration > '1 hour'", "invalid duration value for search attribute ExecutionDuration: '1 hour'", 20),
    ("ExecutionDuration > 1.5", "invalid duration value", 20),
    ("ExecutionDuration < '00:61:00'", "invalid duration value", 20),
    ("CustomText = ' -- '", "no tokens found", 13),
    ("WorkflowId = 'a' GROUP BY WorkflowType", "'GROUP BY' clause is not supported for search attribute WorkflowType", 26),
    ("GROUP BY ExecutionStatus, WorkflowType", "'GROUP BY' clause supports only a single field", 26),
    ("GROUP BY Nope", "column name 'Nope' is not a valid search attribute", 9),
    ("ORDER BY CustomText", "unable to sort by search attribute type Text", 9),
    ("ORDER BY StartTime, CustomInt DESC", "'ORDER BY' is only supported on system search attributes", 20),
    ("ORDER BY BuildIds", "'ORDER BY' is only supported on system search attributes", 9),
]  # fmt: skip


@pytest.mark.parametrize(("query", "says", "pos"), ERRORS, ids=[e[0][:60] for e in ERRORS])
def test_errors_name_the_problem_and_position(query: str, says: str, pos: int) -> None:
    message = error_of(lambda: translate(query, REGISTRY, sqlite=False))
    assert says in message
    assert message.endswith(f"(at position {pos})")


def test_unregistered_and_misspelt_types_are_refused() -> None:
    message = error_of(lambda: translate("Odd = 'a'", {"Odd": 0}, sqlite=True))
    assert "unknown search attribute type 0 for Odd" in message


def test_injection_attempts_are_parameters() -> None:
    evil = "x' OR '1'='1'; DROP TABLE executions; --"
    quoted = evil.replace("'", "''")
    for query in (
        f"WorkflowId = '{quoted}'",
        f"CustomKeyword STARTS_WITH '{quoted}'",
        f"CustomText = '{quoted}'",
        f"`{evil.replace('`', '``')}` = 'a'",  # a name: refused, never spliced
    ):
        for sqlite in (False, True):
            try:
                t = translate(query, REGISTRY, sqlite=sqlite)
            except ServiceError as err:
                assert "is not a valid search attribute" in err.message
                continue
            assert "DROP" not in t.where and "'1'" not in t.where
            assert "'" not in t.where.replace("ESCAPE '!'", "")


def test_translation_shape() -> None:
    t = translate("", REGISTRY, sqlite=False)
    assert (t.where, t.params, t.order_by, t.group_by_status) == ("1 = 1", [], "", False)
    t = translate("CustomInt > 5 GROUP BY ExecutionStatus", REGISTRY, sqlite=True)
    assert t.group_by_status
    assert t.where == (
        "EXISTS (SELECT 1 FROM search_attributes s WHERE s.run_id = e.run_id AND s.name = %s"
        " AND s.v_int > %s)"
    )
    assert t.params == ["CustomInt", 5]
    t = translate("ORDER BY CloseTime DESC, StartTime", REGISTRY, sqlite=True)
    assert t.order_by == "e.close_time DESC NULLS FIRST, e.start_time ASC"
    # The server-set attributes are filterable without registration, with Temporal's prefix
    # toggle; a custom attribute of the same name as a system one cannot shadow it.
    assert translate("ChangeVersion = 'p'", {}, sqlite=True).params == ["TemporalChangeVersion", "p"]
    t = translate("WorkflowId = 'w'", {"WorkflowId": INT}, sqlite=True)
    assert t.where == "e.workflow_id = %s" and t.params == ["w"]


def test_system_attributes_and_text_tokens() -> None:
    assert SYSTEM_ATTRIBUTES["ExecutionStatus"] == KEYWORD
    assert SYSTEM_ATTRIBUTES["StartTime"] == DATETIME
    assert SYSTEM_ATTRIBUTES["HistoryLength"] == INT
    assert SYSTEM_ATTRIBUTES["BuildIds"] == KEYWORD_LIST
    assert text_tokens("My-Business_id  FOObar, Ünï 42") == ["my", "business_id", "foobar", "ünï", "42"]
    assert text_tokens(" -- ") == []


# -- on real databases -------------------------------------------------------------------------

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z

# run_id: (workflow_id, type, task queue, status, start, close, execution time, next_event_id,
#          history bytes, parent (workflow id, run id) or None, root (workflow id, run id))
RUNS: dict[str, tuple[Any, ...]] = {
    "r1": ("order-1", "Charge", "payments", 1, T0, None, T0, 5, 1000, None, ("order-1", "r1")),
    "r2": ("order-2", "Charge", "payments", 2, T0 + 10, T0 + 70, T0 + 10, 12, 5000, None, ("order-2", "r2")),
    "r3": ("order_3%!", "Refund", "refunds", 3, T0 + 20, T0 + 20.25, T0 + 20, 7, 300, ("order-2", "r2"), ("order-2", "r2")),
    "r4": ("ORDER-4", "Refund", "refunds", 4, T0 + 30, T0 + 3630, T0 + 30, 3, 100, ("order-2", "r2"), ("order-2", "r2")),
    "r5": ("Ünïcode-5", "Ship", "shipping", 5, T0 + 40, T0 + 5440, T0 + 40, 20, 2000, None, ("Ünïcode-5", "r5")),
    "r6": ("order-6", "Ship", "shipping", 6, T0 + 50, T0 + 86450, T0 + 60, 2, 50, None, ("order-6", "r6")),
    "r7": ("order-7", "Charge", "payments", 7, T0 + 60, T0 + 61, T0 + 60, 9, 10, None, ("order-7", "r7")),
}  # fmt: skip

ODD = "o'brien \"x\" \\ y"
ATTRS: dict[str, dict[str, Any]] = {
    "r1": {
        "CustomKeyword": "gold", "CustomKeywordList": ["red", "green"],
        "CustomText": "The quick brown-fox", "CustomInt": 10, "CustomDouble": 1.5,
        "CustomBool": True, "CustomDatetime": "2024-01-01T00:00:00Z", "Custom Field": "has space",
        "BuildIds": ["v1"], "TemporalChangeVersion": ["patch-1"],
    },
    "r2": {
        "CustomKeyword": "silver", "CustomKeywordList": ["blue"], "CustomText": "lazy dog",
        "CustomInt": 20, "CustomDouble": -2.25, "CustomBool": False,
        "CustomDatetime": "2024-06-01T12:00:00.250+02:00",
    },
    "r3": {"CustomKeyword": ODD, "CustomInt": 30, "CustomKeywordList": ["red"]},
    "r4": {"CustomKeyword": "gold-plated", "CustomText": "QUICK thinking"},
    "r5": {},
    "r6": {"CustomBool": True, "CustomDouble": 0.0, "CustomInt": -5},
    "r7": {"CustomKeyword": "", "CustomKeywordList": ["green", "blue"]},
}  # fmt: skip
TYPES = {**REGISTRY, "BuildIds": KEYWORD_LIST, "TemporalChangeVersion": KEYWORD_LIST}

ALL = set(RUNS)

CASES: list[tuple[str, set[str]]] = [
    ("", ALL),
    ("WorkflowId = 'order-1'", {"r1"}),
    ("WorkflowId != 'order-1'", ALL - {"r1"}),
    ("WorkflowId IN ('order-1', 'order-2', 'nope')", {"r1", "r2"}),
    ("WorkflowId NOT IN ('order-1')", ALL - {"r1"}),
    ("WorkflowId STARTS_WITH 'order-'", {"r1", "r2", "r6", "r7"}),
    ("WorkflowId STARTS_WITH 'order_'", {"r3"}),
    ("WorkflowId STARTS_WITH 'order_3%!'", {"r3"}),
    ("WorkflowId STARTS_WITH 'order%'", set()),
    ("WorkflowId NOT STARTS_WITH 'order'", {"r4", "r5"}),
    ("WorkflowId STARTS_WITH 'Ünï'", {"r5"}),
    ("WorkflowId STARTS_WITH ''", ALL),
    ("WorkflowId > 'order-6'", {"r3", "r7", "r5"}),
    ("TemporalWorkflowId = 'order-1'", {"r1"}),
    ("RunId = 'r3'", {"r3"}),
    ("WorkflowType = 'Charge' AND TaskQueue = 'payments'", {"r1", "r2", "r7"}),
    ("WorkflowType = 'Ship' OR WorkflowType = 'Refund' AND ExecutionStatus = 'Failed'", {"r3", "r5", "r6"}),
    ("(WorkflowType = 'Ship' OR WorkflowType = 'Refund') AND ExecutionStatus = 'Failed'", {"r3"}),
    ("WorkflowType = 'Charge' and ExecutionStatus = 'Running'", {"r1"}),
    ("ExecutionStatus = 'Running'", {"r1"}),
    ("ExecutionStatus = 'WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW'", {"r6"}),
    ("ExecutionStatus = 3", {"r3"}),
    ("ExecutionStatus IN ('Canceled', 'Terminated', 'TimedOut')", {"r4", "r5", "r7"}),
    ("ExecutionStatus != 'Running'", ALL - {"r1"}),
    ("CloseTime IS NULL", {"r1"}),
    ("CloseTime IS NOT NULL", ALL - {"r1"}),
    ("CloseTime > '2023-11-14T22:14:00Z'", {"r2", "r4", "r5", "r6", "r7"}),
    ("ExecutionDuration > '1h'", {"r5", "r6"}),
    ("ExecutionDuration >= '1h'", {"r4", "r5", "r6"}),
    ("ExecutionDuration < '1s'", {"r3"}),
    ("ExecutionDuration = 60000000000", {"r2"}),
    ("ExecutionDuration = '60000000000'", {"r2"}),
    ("ExecutionDuration BETWEEN '00:00:01' AND '00:01:00'", {"r2", "r7"}),
    ("ExecutionDuration >= '0.95d'", {"r6"}),
    ("ExecutionDuration > '1h29m59.5s'", {"r5", "r6"}),
    ("ExecutionDuration > '1h29m59.5s' AND ExecutionDuration < '250000ms'", set()),
    ("ExecutionDuration IN ('1h30m', '250ms')", {"r3", "r5"}),
    ("ExecutionDuration IS NULL", {"r1"}),
    ("NOT ExecutionDuration > '1m'", {"r2", "r3", "r7"}),
    ("HistoryLength = 4", {"r1"}),
    ("HistoryLength > 10", {"r2", "r5"}),
    ("HistorySizeBytes >= 1000", {"r1", "r2", "r5"}),
    ("StartTime >= '2023-11-14T22:14:00Z'", {"r5", "r6", "r7"}),
    ("StartTime BETWEEN '2023-11-14T22:13:30Z' AND '2023-11-14T23:13:50+01:00'", {"r2", "r3", "r4"}),
    ("StartTime < '2023-11-14T22:13:20.000001Z'", {"r1"}),
    ("StartTime = 1700000010000000000", {"r2"}),
    ("StartTime = '2023-11-14t22:13:30.000000000z'", {"r2"}),
    ("ExecutionTime = '2023-11-14T22:14:20Z'", {"r6", "r7"}),
    ("ParentWorkflowId = 'order-2'", {"r3", "r4"}),
    ("ParentWorkflowId != 'order-2'", set()),
    ("ParentRunId IS NULL", {"r1", "r2", "r5", "r6", "r7"}),
    ("RootWorkflowId = 'order-2' AND RootRunId = 'r2'", {"r2", "r3", "r4"}),
    # custom attributes: an unset one is NULL
    ("CustomKeyword = 'gold'", {"r1"}),
    ("CustomKeyword != 'gold'", {"r2", "r3", "r4", "r7"}),
    ("NOT CustomKeyword = 'gold'", {"r2", "r3", "r4", "r7"}),
    ("NOT (CustomKeyword = 'gold')", {"r2", "r3", "r4", "r7"}),
    ("CustomKeyword IS NULL", {"r5", "r6"}),
    ("NOT CustomKeyword IS NULL", {"r1", "r2", "r3", "r4", "r7"}),
    ("CustomKeyword STARTS_WITH 'gold'", {"r1", "r4"}),
    ("CustomKeyword NOT STARTS_WITH 'gold'", {"r2", "r3", "r7"}),
    ("CustomKeyword = ''", {"r7"}),
    ("CustomKeyword > 'h'", {"r2", "r3"}),
    ("CustomKeyword BETWEEN 'a' AND 'h'", {"r1", "r4"}),
    (r"CustomKeyword = 'o\'brien \"x\" \\ y'", {"r3"}),
    (r'CustomKeyword = "o\'brien \"x\" \\ y"', {"r3"}),
    (r"""CustomKeyword = 'o''brien "x" \\ y'""", {"r3"}),
    ("CustomKeyword IN ('silver', 'gold-plated')", {"r2", "r4"}),
    ("CustomKeyword NOT IN ('silver', 'gold-plated')", {"r1", "r3", "r7"}),
    ("CustomKeywordList = 'red'", {"r1", "r3"}),
    ("CustomKeywordList != 'red'", {"r2", "r7"}),
    ("CustomKeywordList IN ('blue', 'green')", {"r1", "r2", "r7"}),
    ("CustomKeywordList NOT IN ('blue', 'green')", {"r3"}),
    ("NOT CustomKeywordList IN ('blue', 'green')", {"r3"}),
    ("CustomKeywordList = 'red' AND CustomKeywordList = 'green'", {"r1"}),
    ("CustomKeywordList IS NULL", {"r4", "r5", "r6"}),
    ("CustomText = 'quick'", {"r1", "r4"}),
    ("CustomText = 'FOX'", {"r1"}),
    ("CustomText = 'dog cat'", {"r2"}),
    ("CustomText = 'qui'", set()),
    ("CustomText != 'quick'", {"r2"}),
    ("CustomText != 'quick dog'", set()),
    ("CustomInt > 10", {"r2", "r3"}),
    ("CustomInt < 0", {"r6"}),
    ("CustomInt IN (10, 30)", {"r1", "r3"}),
    ("CustomInt BETWEEN 10 AND 20", {"r1", "r2"}),
    ("CustomInt NOT BETWEEN 10 AND 20", {"r3", "r6"}),
    ("NOT CustomInt BETWEEN 10 AND 20", {"r3", "r6"}),
    ("CustomInt != 10", {"r2", "r3", "r6"}),
    ("CustomInt = 10.0", {"r1"}),
    ("CustomInt >= 9.5 AND CustomInt <= 20.5", {"r1", "r2"}),
    ("CustomDouble > 0", {"r1"}),
    ("CustomDouble <= 0", {"r2", "r6"}),
    ("CustomDouble = -2.25", {"r2"}),
    ("CustomBool = true", {"r1", "r6"}),
    ("CustomBool = FALSE", {"r2"}),
    ("CustomBool != true", {"r2"}),
    ("CustomBool IN (true, false)", {"r1", "r2", "r6"}),
    ("CustomBool IS NULL", {"r3", "r4", "r5", "r7"}),
    ("CustomDatetime > '2024-03-01T00:00:00Z'", {"r2"}),
    ("CustomDatetime = '2024-06-01T10:00:00.25Z'", {"r2"}),
    ("CustomDatetime <= 1704067200000000000", {"r1"}),
    ("`Custom Field` = 'has space'", {"r1"}),
    ("BuildIds = 'v1'", {"r1"}),
    ("TemporalChangeVersion = 'patch-1' AND ChangeVersion = 'patch-1'", {"r1"}),
    # NOT pushed down keeps SQL's three-valued logic (r5 has neither attribute)
    ("NOT (CustomInt > 10 AND CustomKeyword = 'silver')", {"r1", "r3", "r4", "r6", "r7"}),
    ("NOT (CustomInt > 10 OR CustomKeyword = 'gold')", set()),
    ("NOT NOT WorkflowId = 'order-1'", {"r1"}),
    ("NOT (NOT (CustomBool = true) OR CustomInt < 0)", {"r1"}),
    ("CustomBool = true OR CustomKeyword IS NULL", {"r1", "r5", "r6"}),
    # values that look like SQL stay values
    ("WorkflowId = 'x'' OR ''1''=''1'", set()),
    ("CustomKeyword = '; DROP TABLE executions; --' OR CustomText = 'x''); DELETE FROM executions; --'", set()),
]  # fmt: skip


DDL = (
    "CREATE TABLE executions (run_id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL,"
    " workflow_type TEXT NOT NULL, task_queue TEXT NOT NULL, status INTEGER NOT NULL,"
    " start_time DOUBLE PRECISION NOT NULL, close_time DOUBLE PRECISION,"
    " execution_time DOUBLE PRECISION NOT NULL, next_event_id INTEGER NOT NULL,"
    " history_size_bytes BIGINT NOT NULL, parent_workflow_id TEXT, parent_run_id TEXT,"
    " root_workflow_id TEXT NOT NULL, root_run_id TEXT NOT NULL)",
    "CREATE TABLE search_attributes (run_id TEXT NOT NULL, name TEXT NOT NULL,"
    " v_text TEXT, v_int BIGINT, v_num DOUBLE PRECISION)",
    "CREATE INDEX search_attributes_text ON search_attributes (name, v_text)",
    "CREATE INDEX search_attributes_int ON search_attributes (name, v_int)",
    "CREATE INDEX search_attributes_num ON search_attributes (name, v_num)",
    "CREATE INDEX executions_by_start ON executions (start_time, run_id)",
)


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    executions: list[tuple[Any, ...]] = []
    for run_id, (wf, wt, tq, st, start, close, ex, nei, size, parent, root) in RUNS.items():
        p_wf, p_run = parent or (None, None)
        executions.append((run_id, wf, wt, tq, st, start, close, ex, nei, size, p_wf, p_run, *root))
    attrs: list[tuple[Any, ...]] = []
    for run_id, values in ATTRS.items():
        for name, value in values.items():
            t = TYPES[name]
            for v in value if isinstance(value, list) else [value]:
                if t == TEXT:
                    attrs.extend((run_id, name, w, None, None) for w in dict.fromkeys(text_tokens(v)))
                elif t in (KEYWORD, KEYWORD_LIST):
                    attrs.append((run_id, name, v, None, None))
                elif t in (INT, BOOL):
                    attrs.append((run_id, name, None, int(v), None))
                elif t == DOUBLE:
                    attrs.append((run_id, name, None, None, float(v)))
                else:
                    attrs.append((run_id, name, None, None, _timestamp(v)))
    return executions, attrs


class Db:
    """One database holding RUNS and ATTRS: ``run(sql, params)`` returns the rows."""

    def __init__(self, sqlite: bool, run: Callable[[str, list[Any]], list[tuple[Any, ...]]]):
        self.sqlite = sqlite
        self.run = run

    def ids(self, query: str) -> set[str]:
        t = translate(query, REGISTRY, sqlite=self.sqlite)
        return {r[0] for r in self.run(f"SELECT e.run_id FROM executions e WHERE {t.where}", t.params)}


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    executions, attrs = _rows()
    insert_e = f"INSERT INTO executions VALUES ({', '.join(['%s'] * 14)})"
    insert_a = "INSERT INTO search_attributes VALUES (%s, %s, %s, %s, %s)"
    if request.param == "sqlite":
        conn = sqlite3.connect(Path(tmp_path_factory.mktemp("visibility")) / "v.sqlite")
        for stmt in DDL:
            conn.execute(stmt)
        conn.executemany(insert_e.replace("%s", "?"), executions)
        conn.executemany(insert_a.replace("%s", "?"), attrs)
        conn.commit()

        def run_sqlite(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()

        yield Db(True, run_sqlite)
        conn.close()
        return
    import psycopg

    url = str(request.getfixturevalue("_pg_session_url"))
    schema = f"vq_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(f'CREATE SCHEMA "{schema}"')
        try:
            pg.execute(f'SET search_path TO "{schema}"')
            for stmt in DDL:
                pg.execute(stmt)
            with pg.cursor() as cur:
                cur.executemany(insert_e, executions)
                cur.executemany(insert_a, attrs)
            pg.execute("ANALYZE")

            def run_pg(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
                cur = pg.execute(sql, params)
                return cur.fetchall() if cur.description else []

            yield Db(False, run_pg)
        finally:
            pg.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[c[0][:70] for c in CASES])
def test_filters_on_both_databases(db: Db, query: str, expected: set[str]) -> None:
    assert db.ids(query) == expected


def test_tables_survive_injection_attempts(db: Db) -> None:
    assert db.ids("") == ALL
    assert len(db.run("SELECT * FROM search_attributes", [])) == len(_rows()[1])


def test_order_by_on_both_databases(db: Db) -> None:
    def ordered(query: str) -> list[str]:
        t = translate(query, REGISTRY, sqlite=db.sqlite)
        sql = f"SELECT e.run_id FROM executions e WHERE {t.where} ORDER BY {t.order_by}, e.run_id"
        return [r[0] for r in db.run(sql, t.params)]

    # Unset sorts as the largest: first when descending, last when ascending.
    assert ordered("ORDER BY CloseTime DESC") == ["r1", "r6", "r5", "r4", "r2", "r7", "r3"]
    assert ordered("ORDER BY CloseTime") == ["r3", "r7", "r2", "r4", "r5", "r6", "r1"]
    assert ordered("ORDER BY ExecutionDuration ASC") == ["r3", "r7", "r2", "r4", "r5", "r6", "r1"]
    assert ordered("WorkflowType = 'Charge' ORDER BY HistoryLength DESC") == ["r2", "r7", "r1"]
    assert ordered("ORDER BY ExecutionStatus DESC, StartTime") == [
        "r7", "r6", "r5", "r4", "r3", "r2", "r1",
    ]  # fmt: skip
    assert ordered("ORDER BY WorkflowType, StartTime DESC") == [
        "r7", "r2", "r1", "r4", "r3", "r6", "r5",
    ]  # fmt: skip


def test_group_by_execution_status_on_both_databases(db: Db) -> None:
    def counts(query: str) -> dict[int, int]:
        t = translate(query, REGISTRY, sqlite=db.sqlite)
        assert t.group_by_status
        sql = f"SELECT e.status, count(*) FROM executions e WHERE {t.where} GROUP BY e.status"
        return {int(s): int(n) for s, n in db.run(sql, t.params)}

    assert counts("GROUP BY ExecutionStatus") == {s: 1 for s in range(1, 8)}
    assert counts("WorkflowType = 'Charge' GROUP BY ExecutionStatus") == {1: 1, 2: 1, 7: 1}


def test_selective_filters_use_the_indexes(db: Db) -> None:
    """An equality on a custom attribute and a prefix on a keyword reach the (name, v_*) index."""
    for query in ("CustomKeyword = 'gold'", "CustomInt > 10", "CustomDouble = 1.5"):
        t = translate(query, REGISTRY, sqlite=db.sqlite)
        sql = f"SELECT e.run_id FROM executions e WHERE {t.where}"
        if db.sqlite:
            plan = " ".join(str(r) for r in db.run("EXPLAIN QUERY PLAN " + sql, t.params))
        else:
            db.run("SET enable_seqscan = off", [])
            try:
                plan = " ".join(str(r) for r in db.run("EXPLAIN " + sql, t.params))
            finally:
                db.run("SET enable_seqscan = on", [])
        assert "search_attributes_" in plan, plan
    if db.sqlite:  # the prefix range (Postgres: LIKE, which an index serves under the C collation)
        t = translate("CustomKeyword STARTS_WITH 'go'", REGISTRY, sqlite=True)
        plan = " ".join(
            str(r) for r in db.run(f"EXPLAIN QUERY PLAN SELECT 1 FROM executions e WHERE {t.where}", t.params)
        )
        assert "search_attributes_text (name=? AND v_text>? AND v_text<?)" in plan, plan
