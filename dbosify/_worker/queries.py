"""Queries on a run: the activation jobs that ask them, and the answers recorded for clients.

Queries are never in history: a driver answers them from the workflow's current state (a live
run's, or a closed run's after a full replay), and the answers go to the `queries` table, where
the client's query call is waiting; a small answer also travels with the wake-up.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import query_pb2 as query_enums
from temporalio.api.query.v1 import message_pb2 as query_pb
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify._store import Tx
from dbosify._store.wakeups import with_value

Pending = list[tuple[str, query_pb.WorkflowQuery]]  # (query id, request)


def failed(message: str) -> query_pb.WorkflowQueryResult:
    return query_pb.WorkflowQueryResult(
        result_type=query_enums.QUERY_RESULT_TYPE_FAILED, error_message=message
    )


def jobs(queries: Pending) -> list[wa.WorkflowActivationJob]:
    """One activation job per pending query."""
    out = []
    for qid, q in queries:
        qj = wa.QueryWorkflow(query_id=qid, query_type=q.query_type)
        qj.arguments.extend(q.query_args.payloads)
        for k, v in q.header.fields.items():
            qj.headers[k].CopyFrom(v)
        out.append(wa.WorkflowActivationJob(query_workflow=qj))
    return out


def answers(
    queries: Pending, completion: wcomp.WorkflowActivationCompletion
) -> dict[str, query_pb.WorkflowQueryResult]:
    """Each query's result from the activation's completion (a failure answers all of them)."""
    out: dict[str, query_pb.WorkflowQueryResult] = {}
    if completion.HasField("failed"):
        for qid, _ in queries:
            out[qid] = failed(completion.failed.failure.message)
    for cmd in completion.successful.commands:
        if cmd.HasField("respond_to_query"):
            r = cmd.respond_to_query
            if r.HasField("succeeded"):
                res = query_pb.WorkflowQueryResult(result_type=query_enums.QUERY_RESULT_TYPE_ANSWERED)
                res.answer.payloads.add().CopyFrom(r.succeeded.response)
            else:
                res = failed(r.failed.message)
                res.failure.CopyFrom(r.failed)
            out[r.query_id] = res
    return out


def record(tx: Tx, query_ids: list[str], results: dict[str, query_pb.WorkflowQueryResult]) -> None:
    """Store the answers (a query without one fails as unanswered) and wake their callers."""
    for qid in query_ids:
        res = results.get(qid) or failed("query not answered")
        data = res.SerializeToString()
        tx.execute(
            "UPDATE queries SET state = 'answered', response = %s WHERE query_id = %s"
            " AND state = 'pending'",
            (data, qid),
        )
        tx.notify(with_value(f"qr:{qid}", data))  # the caller needs no read for a small answer
