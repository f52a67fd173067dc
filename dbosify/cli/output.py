"""What the CLI writes to a terminal: workflow data with its control characters made visible.

Ids, type names, task queues, memo and search attribute values, failure messages and history
are anyone's data: an id holding ``ESC ]52;...`` would otherwise write the operator's
clipboard, and a type name holding ``ESC ]0;`` set the window title. In table and text output
every control character (C0, DEL, C1) and every bidirectional override is shown escaped
(ESC as ``\\x1b``, a newline as ``\\n``, U+202E as ``\\u202e``). JSON output stays JSON: the encoder escapes C0
characters already, and the others are written as ``\\u`` escapes, which any JSON reader reads
back as the same characters.
"""

from __future__ import annotations

import re

import click

# C0, DEL and C1 controls; the bidirectional marks, embeddings, overrides and isolates; the
# Unicode line and paragraph separators. In a block of lines, tab and newline are kept.
_OTHERS = "\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_ANY = re.compile(f"[\x00-\x1f{_OTHERS}]")
_BUT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f{_OTHERS}]")
_IN_JSON = re.compile(f"[{_OTHERS}]")


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escaped(m: re.Match[str]) -> str:
    c = m.group()
    code = ord(c)
    return _NAMED.get(c) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape(text: str, *, lines: bool = False) -> str:
    """``text`` with its control characters escaped; ``lines``: newlines and tabs kept (a block
    of text such as a stack trace), else escaped too (a table cell, a value, a message)."""
    return (_BUT_LINES if lines else _ANY).sub(_escaped, text)


def escape_json(text: str) -> str:
    """JSON text with the characters its encoder leaves raw (DEL, C1, bidirectional controls)
    written as ``\\u`` escapes; they only ever occur inside its strings."""
    return _IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def echo(text: str = "", *, lines: bool = False) -> None:
    """A line (``lines``: a block of lines) of table or text output, escaped."""
    click.echo(escape(text, lines=lines))


def echo_json(text: str) -> None:
    """JSON output as the encoder wrote it, its raw control characters escaped."""
    click.echo(escape_json(text))
