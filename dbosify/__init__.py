"""dbosify: run unmodified Temporal Python apps on Postgres through DBOS.

This package is imported by the activation ``.pth`` file at interpreter start-up,
so it must stay cheap to import: nothing heavy at module level.
"""

from __future__ import annotations

__version__ = "0.1.0"


def activate() -> None:
    """Install the import hook so that ``temporalio`` runs on dbosify."""
    from dbosify._hook import install

    install()


def dbos_workflow_id(namespace: str, workflow_id: str, run_id: str) -> str:
    """The DBOS workflow ID of a Temporal run, for DBOS's tools (``dbos workflow get <id>``,
    `DBOSClient`): ``<namespace>/<workflow id>/<run id>`` with ``%`` written ``%25`` and ``/``
    written ``%2F`` in each part."""
    from dbosify._store.dbos_ids import workflow_uuid

    return workflow_uuid(namespace, workflow_id, run_id)
