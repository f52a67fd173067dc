"""The DBOS workflow ID of a Temporal run: ``<namespace>/<workflow id>/<run id>``, each part with
``%`` written ``%25`` and ``/`` written ``%2F`` (in that order), so that the ID names one run
whatever characters its namespace and workflow ID hold. Parts without ``%`` or ``/`` (most
names, and every run ID) read as they are.

Imports nothing heavy: `dbosify.dbos_workflow_id` is this module's `workflow_uuid`.
"""

from __future__ import annotations


def quote(part: str) -> str:
    """One part of the ID: ``%`` -> ``%25``, then ``/`` -> ``%2F``."""
    return part.replace("%", "%25").replace("/", "%2F")


def unquote(part: str) -> str:
    """The inverse of `quote` (``%2F`` first: every ``%2F`` in a quoted part is a quoted ``/``)."""
    return part.replace("%2F", "/").replace("%25", "%")


def workflow_uuid(namespace: str, workflow_id: str, run_id: str) -> str:
    """The DBOS workflow ID of the run ``run_id`` of ``workflow_id`` in ``namespace``."""
    return f"{quote(namespace)}/{quote(workflow_id)}/{quote(run_id)}"


def split(uuid: str) -> tuple[str, str, str] | None:
    """(namespace, workflow id, run id) of a DBOS workflow ID of ours, or None."""
    parts = uuid.split("/")
    if len(parts) != 3:
        return None
    return unquote(parts[0]), unquote(parts[1]), unquote(parts[2])


def sql_unquote(expr: str) -> str:
    """`unquote` in SQL (Postgres and SQLite alike), for statements sent without parameters."""
    return f"replace(replace({expr}, '%2F', '/'), '%25', '%')"
