"""What every family of the WorkflowService RPCs shares: the service's state and its not-found
errors (`dbosify._server.service.WorkflowService` is built from the families)."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.api.common.v1 import message_pb2 as common

from dbosify._engine import history as h
from dbosify._engine.errors import ServiceError
from dbosify._store import Store, Tx


def _camel(rpc: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in rpc.split("_"))


def _not_found_run(workflow_id: str, run_id: str | None = None) -> ServiceError:
    if run_id:
        return ServiceError.not_found(
            f"workflow execution not found for workflow ID {workflow_id!r} and run ID {run_id!r}"
        )
    return ServiceError.not_found(f"workflow not found for ID: {workflow_id}")


def _not_found_chain(workflow_id: str, first_execution_run_id: str) -> ServiceError:
    """The running run of ``workflow_id`` belongs to another chain than the caller's handle."""
    return ServiceError.not_found(
        f"workflow execution not found for workflow ID {workflow_id!r} in the chain started by"
        f" run ID {first_execution_run_id!r}"
    )


# An update admitted but not accepted when its run closed with no run to continue into (Temporal's
# words, status NOT_FOUND; an update sent to a closed run is "workflow execution already completed").
_UPDATE_ABORTED = "workflow update was aborted by closing workflow"


def _update_row(run_id: str, update_id: str, tx: Tx) -> Any:
    return tx.one("SELECT state, outcome FROM updates WHERE run_id = %s AND update_id = %s", (run_id, update_id))


def _get_run(run_id: str, tx: Tx) -> h.Run | None:
    return h.get_run(tx, run_id)


def _completed_error() -> ServiceError:
    return ServiceError.not_found("workflow execution already completed")


class RpcBase:
    """The WorkflowService's state on one store (each RPC family builds on it)."""

    def __init__(self, store: Store, identity: str = "") -> None:
        self.store = store
        self.identity = identity
        self.runtime: Any = None  # the client's RuntimeRef (Core's logs)
        self.eager: Any = None  # dbosify._worker.eager, once this client has a worker (new_worker)
        self.memo_warn_size = 2 * 1024
        self._background: set[asyncio.Task[Any]] = set()

    def _running(self, tx: Tx, execution: common.WorkflowExecution) -> h.Run:
        run = h.find_run(tx, execution.workflow_id, execution.run_id or None, lock=True)
        if run is None:
            raise _not_found_run(execution.workflow_id, execution.run_id or None)
        if not run.running:
            raise _completed_error()
        return run
