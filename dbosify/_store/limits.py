"""Each namespace's limits: the values, with Temporal's defaults and dynamic config keys.

The limits are one `Limits` per store (``Store.limits``), with optional per-namespace overrides
(``Store.namespace_limits``), set from ``DBOSIFY_LIMITS`` and from a dev server's
``--dynamic-config-value limit.*=N``. The checks that apply them are in `dbosify._server.limits`
(requests) and `dbosify._engine.limits` (what workers send, and history).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass
class Limits:
    """One namespace's limits: Temporal's defaults, each a dynamic config key of its server."""

    max_id_length: int = 1000  # limit.maxIDLength
    blob_warn: int = 512 * 1024  # limit.blobSize.warn
    blob_error: int = 2 * 1024 * 1024  # limit.blobSize.error
    memo_warn: int = 2 * 1024  # limit.memoSize.warn
    memo_error: int = 2 * 1024 * 1024  # limit.memoSize.error
    search_attribute_value: int = 2 * 1024  # limit.searchAttributesSizeOfValue
    history_size_warn: int = 10 * 1024 * 1024  # limit.historySize.warn
    history_size_error: int = 50 * 1024 * 1024  # limit.historySize.error
    history_count_warn: int = 10 * 1024  # limit.historyCount.warn
    history_count_error: int = 50 * 1024  # limit.historyCount.error


# The dynamic config keys a dev server's `--dynamic-config-value` may set here.
DYNAMIC_CONFIG: dict[str, str] = {
    "limit.maxIDLength": "max_id_length",
    "limit.blobSize.warn": "blob_warn",
    "limit.blobSize.error": "blob_error",
    "limit.memoSize.warn": "memo_warn",
    "limit.memoSize.error": "memo_error",
    "limit.searchAttributesSizeOfValue": "search_attribute_value",
    "limit.historySize.warn": "history_size_warn",
    "limit.historySize.error": "history_size_error",
    "limit.historyCount.warn": "history_count_warn",
    "limit.historyCount.error": "history_count_error",
}


def apply_dynamic_config(limits: Limits, key: str, value: str) -> bool:
    """Set one ``limit.*`` dynamic config value; False when ``key`` is not one of ours."""
    attr = DYNAMIC_CONFIG.get(key)
    if attr is None:
        return False
    setattr(limits, attr, int(value))
    return True


ENV = "DBOSIFY_LIMITS"  # e.g. "limit.blobSize.error=4194304,limit.historyCount.error=100000"


def from_env(environ: Mapping[str, str]) -> Limits:
    """Temporal's defaults, with the ``limit.*`` values of ``DBOSIFY_LIMITS`` (comma-separated)."""
    limits = Limits()
    for item in filter(None, (part.strip() for part in environ.get(ENV, "").split(","))):
        key, _, value = item.partition("=")
        try:
            known = apply_dynamic_config(limits, key.strip(), value.strip())
        except ValueError:
            known = False
        if not known:
            raise ValueError(f"{ENV}: {item!r} is not LIMIT=BYTES with one of {', '.join(DYNAMIC_CONFIG)}")
    return limits


# What is wrong with an id or a name (`id_problem`), checked in this order.
NUL = "nul"  # a NUL character: Postgres text cannot hold it
NOT_UTF8 = "utf8"  # a lone surrogate: not a string protobuf carries or UTF-8 encodes
TOO_LONG = "length"  # more UTF-8 bytes than the limit (limit.maxIDLength: 1,000 by default)


def byte_length(value: str) -> int:
    """The UTF-8 length of ``value`` as Temporal counts it (a lone surrogate as 3 bytes)."""
    return len(value.encode("utf-8", "surrogatepass"))


def id_problem(value: str, max_bytes: int) -> str | None:
    """Why an id or name (workflow id, task queue, type, namespace...) cannot be taken: `NUL`,
    `NOT_UTF8` or `TOO_LONG`; None when it can. Each caller words its own refusal."""
    if "\x00" in value:
        return NUL
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return NOT_UTF8
    return TOO_LONG if size > max_bytes else None
