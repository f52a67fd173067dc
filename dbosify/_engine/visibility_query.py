"""Temporal's visibility list filter: a tokenizer and a recursive-descent parser to a typed AST.

The language is the SQL-like "List Filter" of ``ListWorkflowExecutions`` and
``CountWorkflowExecutions``. Temporal parses it with its fork of a MySQL grammar (temporalio/sqlparser)
after prefixing ``select * from table1 where``; this module accepts the subset Temporal's
converter (server ``common/persistence/visibility/store/query``) gives a meaning to::

    query      := [expr] [GROUP BY name {"," name}] [ORDER BY order_item {"," order_item}]
    expr       := and_expr {OR and_expr}                      -- AND binds tighter than OR
    and_expr   := not_expr {AND not_expr}
    not_expr   := NOT not_expr | "(" expr ")" | predicate     -- NOT binds tighter than AND
    predicate  := name ( compare_op value
                       | [NOT] IN "(" value {"," value} ")"
                       | [NOT] BETWEEN value AND value
                       | [NOT] STARTS_WITH value
                       | IS [NOT] NULL )
    compare_op := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    order_item := name [ASC | DESC]
    name       := identifier | `back-quoted name` (a doubled backquote is one backquote)
    value      := 'string' | "string" | integer | float | TRUE | FALSE  (numbers may carry a "-")

Keywords are case-insensitive; names are case-sensitive (docs.temporal.io "List Filter": "Search
Attribute names are case sensitive"). Strings decode backslash escapes as MySQL does (``\\n``,
``\\t``, ``\\r``, ``\\b``, ``\\0``, ``\\Z``, ``\\\\``, ``\\'``, ``\\"``; any other escaped character
stands for itself) and a doubled delimiter stands for one. Integers outside int64 become floats, as
Temporal's value parser falls back from ``ParseInt`` to ``ParseFloat``.

Which names exist, which operators suit which types and what the values mean is not decided here
but in `dbosify._engine.visibility_sql`. Every error is a ``ServiceError`` with gRPC status
INVALID_ARGUMENT whose message has Temporal's shape, ``invalid query: <kind>: <detail>``, where kind
is one of Temporal's three (`MALFORMED`, `INVALID`, `UNSUPPORTED`), followed by the 0-based
character offset into the query the problem was found at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NoReturn

from dbosify._engine.errors import ServiceError

MALFORMED = "malformed SQL query"
INVALID = "invalid expression"
UNSUPPORTED = "operation is not supported"

MAX_NESTING = 100  # parentheses and NOTs; Temporal's grammar also stops at a nesting level

CompareOp = Literal["=", "!=", "<", "<=", ">", ">=", "starts_with", "not starts_with"]


def query_error(kind: str, detail: str, pos: int | None = None) -> ServiceError:
    """The INVALID_ARGUMENT error Temporal gives for a bad list filter, with where it was found."""
    where = "" if pos is None else f" (at position {pos})"
    return ServiceError.invalid(f"invalid query: {kind}: {detail}{where}")


# -- AST ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Name:
    """A search attribute name as written (backquotes removed), and where it starts."""

    text: str
    pos: int


@dataclass(frozen=True)
class Value:
    """A literal: ``str`` for quoted strings, ``int``/``float`` for numbers, ``bool`` for TRUE/FALSE."""

    value: str | int | float | bool
    pos: int
    source: str  # the literal as written, for messages


@dataclass(frozen=True)
class Comparison:
    """``name op value``; ``op`` is one of `CompareOp` (``<>`` is read as ``!=``)."""

    name: Name
    op: CompareOp
    value: Value


@dataclass(frozen=True)
class InList:
    name: Name
    values: tuple[Value, ...]
    negated: bool


@dataclass(frozen=True)
class Between:
    name: Name
    low: Value
    high: Value
    negated: bool


@dataclass(frozen=True)
class IsNull:
    name: Name
    negated: bool  # IS NOT NULL


@dataclass(frozen=True)
class Not:
    expr: Expr
    pos: int


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]


Predicate = Comparison | InList | Between | IsNull
Expr = Predicate | Not | And | Or


@dataclass(frozen=True)
class OrderItem:
    name: Name
    descending: bool


@dataclass(frozen=True)
class Query:
    where: Expr | None
    group_by: tuple[Name, ...]
    order_by: tuple[OrderItem, ...]


# -- tokens ------------------------------------------------------------------------------------

TokKind = Literal["name", "keyword", "string", "number", "op", "punct", "end"]

KEYWORDS = frozenset(
    {
        "and", "or", "not", "in", "between", "is", "null", "true", "false", "starts_with",
        "order", "group", "by", "asc", "desc", "limit", "like", "regexp", "exists", "select",
    }
)  # fmt: skip

_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


@dataclass(frozen=True)
class Token:
    kind: TokKind
    text: str  # keywords lower-cased; names and strings decoded; operators as written
    pos: int
    source: str  # the token as written


def _is_name_start(ch: str) -> bool:
    return ch == "_" or ch == "@" or ch.isalpha()


def _is_name_char(ch: str) -> bool:
    return ch == "_" or ch == "@" or ch == "$" or ch.isalnum()


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token; raises on a malformed literal."""
    out: list[Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            out.append(Token("end", "", n, ""))
            return out
        ch = text[i]
        start = i
        if ch in "'\"`":
            i, decoded = _scan_quoted(text, i)
            kind: TokKind = "name" if ch == "`" else "string"
            if "\0" in decoded:  # Postgres text cannot hold it: refused alike on both stores
                raise query_error(INVALID, "a value or name cannot contain the NUL character", start)
            out.append(Token(kind, decoded, start, text[start:i]))
        elif ch.isdigit() or (ch == "." and i + 1 < n and text[i + 1].isdigit()):
            i = _scan_number(text, i)
            out.append(Token("number", text[start:i], start, text[start:i]))
        elif _is_name_start(ch):
            while i < n and _is_name_char(text[i]):
                i += 1
            word = text[start:i]
            if word.lower() in KEYWORDS:
                out.append(Token("keyword", word.lower(), start, word))
            else:
                out.append(Token("name", word, start, word))
        elif text.startswith("<=>", i):
            raise query_error(UNSUPPORTED, "operator '<=>'", start)
        elif text.startswith(("!=", "<>", "<=", ">="), i):
            op = text[i : i + 2]
            i += 2
            out.append(Token("op", "!=" if op == "<>" else op, start, op))
        elif ch in "=<>":
            i += 1
            out.append(Token("op", ch, start, ch))
        elif ch in "(),-":
            i += 1
            out.append(Token("punct", ch, start, ch))
        else:
            raise query_error(MALFORMED, f"syntax error: unexpected character {ch!r}", start)


def _scan_quoted(text: str, i: int) -> tuple[int, str]:
    """Scan the quoted string or name starting at ``text[i]``: (index past it, decoded text)."""
    delim = text[i]
    start = i
    i += 1
    buf: list[str] = []
    n = len(text)
    while True:
        if i >= n:
            what = "back-quoted name" if delim == "`" else "string"
            raise query_error(MALFORMED, f"syntax error: unterminated {what}", start)
        ch = text[i]
        if ch == delim:
            if i + 1 < n and text[i + 1] == delim:  # a doubled delimiter is one delimiter
                buf.append(delim)
                i += 2
                continue
            return i + 1, "".join(buf)
        if ch == "\\" and delim != "`":
            if i + 1 >= n:
                raise query_error(MALFORMED, "syntax error: unterminated string", start)
            nxt = text[i + 1]
            buf.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        buf.append(ch)
        i += 1


def _scan_number(text: str, i: int) -> int:
    start, n = i, len(text)
    while i < n and text[i].isdigit():
        i += 1
    if i < n and text[i] == ".":
        i += 1
        while i < n and text[i].isdigit():
            i += 1
    if i < n and text[i] in "eE":
        j = i + 1
        if j < n and text[j] in "+-":
            j += 1
        if j < n and text[j].isdigit():
            i = j
            while i < n and text[i].isdigit():
                i += 1
    if i < n and (_is_name_char(text[i]) or text[i] == "."):
        raise query_error(
            MALFORMED, f"syntax error: malformed number {text[start : i + 1]!r}", start
        )
    return i


# -- parser ------------------------------------------------------------------------------------


def parse(text: str) -> Query:
    """Parse a list filter; raises ``ServiceError`` (INVALID_ARGUMENT) saying what and where."""
    return _Parser(text).query()


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    # helpers

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        t = self.tokens[self.i]
        if t.kind != "end":
            self.i += 1
        return t

    def at(self, kind: TokKind, text: str | None = None) -> bool:
        t = self.tok
        return t.kind == kind and (text is None or t.text == text)

    def accept(self, kind: TokKind, text: str | None = None) -> Token | None:
        if self.at(kind, text):
            return self.advance()
        return None

    def expect(self, kind: TokKind, text: str | None, what: str) -> Token:
        t = self.accept(kind, text)
        if t is None:
            self.unexpected(what)
        return t

    def unexpected(self, expected: str) -> NoReturn:
        t = self.tok
        if t.kind == "end":
            raise query_error(
                MALFORMED, f"syntax error: unexpected end of query, expected {expected}", t.pos
            )
        raise query_error(
            MALFORMED, f"syntax error: unexpected {t.source!r}, expected {expected}", t.pos
        )

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise query_error(MALFORMED, "max nesting level reached", pos)

    # grammar

    def query(self) -> Query:
        where: Expr | None = None
        if not (self.at("keyword", "order") or self.at("keyword", "group") or self.at("end")):
            where = self.expr()
        group_by: list[Name] = []
        order_by: list[OrderItem] = []
        if self.accept("keyword", "group"):
            self.expect("keyword", "by", "BY after GROUP")
            group_by.append(self.name("a search attribute name after GROUP BY"))
            while self.accept("punct", ","):
                group_by.append(self.name("a search attribute name"))
        if self.accept("keyword", "order"):
            self.expect("keyword", "by", "BY after ORDER")
            while True:
                name = self.name("a search attribute name after ORDER BY")
                desc = False
                if self.accept("keyword", "desc"):
                    desc = True
                else:
                    self.accept("keyword", "asc")
                order_by.append(OrderItem(name, desc))
                if not self.accept("punct", ","):
                    break
        if self.at("keyword", "limit"):
            raise query_error(UNSUPPORTED, "'LIMIT' clause", self.tok.pos)
        if not self.at("end"):
            if where is not None and not group_by and not order_by:
                self.unexpected("AND, OR, GROUP BY, ORDER BY or the end of the query")
            self.unexpected("the end of the query")
        return Query(where, tuple(group_by), tuple(order_by))

    def expr(self) -> Expr:
        items = [self.and_expr()]
        while self.accept("keyword", "or"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Expr:
        items = [self.not_expr()]
        while self.accept("keyword", "and"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Expr:
        nots: list[int] = []
        while self.at("keyword", "not"):
            nots.append(self.advance().pos)
            self.nest(nots[-1])
        if (open_ := self.accept("punct", "(")) is not None:
            self.nest(open_.pos)
            inner = self.expr()
            self.expect("punct", ")", "')'")
            self.depth -= 1
            result: Expr = inner
        else:
            result = self.predicate()
        for pos in reversed(nots):
            result = Not(result, pos)
            self.depth -= 1
        return result

    def name(self, what: str) -> Name:
        t = self.tok
        if t.kind == "name":
            self.advance()
            return Name(t.text, t.pos)
        if t.kind == "keyword" and t.text not in ("null", "true", "false"):
            raise query_error(
                MALFORMED,
                f"syntax error: {t.source!r} is a reserved word; write it `{t.source}` to use it "
                "as a search attribute name",
                t.pos,
            )
        if t.kind in ("string", "number") or t.kind == "keyword":
            raise query_error(INVALID, f"must be a column name but was the value {t.source}", t.pos)
        self.unexpected(what)

    def predicate(self) -> Predicate:
        name = self.name("a search attribute name, NOT or '('")
        t = self.tok
        if t.kind == "op":
            self.advance()
            if self.at("punct", "("):
                raise query_error(
                    INVALID,
                    f"a list of values is only allowed after IN, not after '{t.source}'",
                    self.tok.pos,
                )
            return Comparison(name, _compare_op(t.text), self.value())
        if self.accept("keyword", "is"):
            negated = self.accept("keyword", "not") is not None
            if not self.accept("keyword", "null"):
                if self.tok.kind in ("keyword",) and self.tok.text in ("true", "false"):
                    raise query_error(
                        INVALID,
                        "'IS' operator can only be used as 'IS NULL' or 'IS NOT NULL'",
                        self.tok.pos,
                    )
                self.unexpected("NULL")
            return IsNull(name, negated)
        negated = self.accept("keyword", "not") is not None
        if self.accept("keyword", "in"):
            return InList(name, self.value_list(), negated)
        if self.accept("keyword", "between"):
            low = self.value()
            self.expect("keyword", "and", "AND in BETWEEN ... AND ...")
            return Between(name, low, self.value(), negated)
        if self.accept("keyword", "starts_with"):
            return Comparison(name, "not starts_with" if negated else "starts_with", self.value())
        if self.at("keyword", "like") or self.at("keyword", "regexp"):
            raise query_error(UNSUPPORTED, f"operator '{self.tok.text.upper()}'", self.tok.pos)
        if negated:
            self.unexpected("IN, BETWEEN or STARTS_WITH after NOT")
        if (
            self.at("end")
            or self.at("keyword", "and")
            or self.at("keyword", "or")
            or self.at("punct", ")")
        ):
            raise query_error(
                INVALID, f"incomplete expression: {name.text!r} has no operator", name.pos
            )
        self.unexpected("a comparison operator, IN, BETWEEN, STARTS_WITH or IS")

    def value_list(self) -> tuple[Value, ...]:
        self.expect("punct", "(", "'(' after IN")
        values = [self.value()]
        while self.accept("punct", ","):
            values.append(self.value())
        self.expect("punct", ")", "',' or ')'")
        return tuple(values)

    def value(self) -> Value:
        t = self.tok
        if t.kind == "string":
            self.advance()
            return Value(t.text, t.pos, t.source)
        if t.kind == "keyword" and t.text in ("true", "false"):
            self.advance()
            return Value(t.text == "true", t.pos, t.source)
        if t.kind == "punct" and t.text == "-":
            self.advance()
            num = self.tok
            if num.kind != "number":
                self.unexpected("a number after '-'")
            self.advance()
            return _number(num, t.pos, negative=True)
        if t.kind == "number":
            self.advance()
            return _number(t, t.pos, negative=False)
        if t.kind == "name":
            raise query_error(
                UNSUPPORTED,
                "column name on the right side of comparison expression "
                f"(did you forget to quote '{t.text}'?)",
                t.pos,
            )
        if t.kind == "keyword" and t.text == "null":
            raise query_error(
                INVALID, "NULL is not a value here; use IS NULL or IS NOT NULL", t.pos
            )
        self.unexpected("a value")


def _compare_op(op: str) -> CompareOp:
    ops: dict[str, CompareOp] = {
        "=": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
    }  # fmt: skip
    return ops[op]


def _number(t: Token, pos: int, *, negative: bool) -> Value:
    text = ("-" if negative else "") + t.text
    value: int | float
    if all(c.isdigit() for c in t.text) and len(t.text) <= 19:
        value = int(text)
        if not -(2**63) <= value < 2**63:  # past int64, Temporal reads it as a float
            value = float(text)
    else:
        value = float(text)
    if math.isinf(value):  # past a float64 too: Temporal cannot parse it either
        raise query_error(INVALID, f"unable to parse value {text[:40]!r}", pos)
    return Value(value, pos, text)
