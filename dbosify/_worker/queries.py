"""Queries on a run: the activation jobs that ask them, and the answers recorded for clients.

Queries are never in history: a driver answers them from the workflow's current state (a live
run's, or a closed run's after a full replay), and the answers go to the `queries` table, where
the client's query call is waiting; a small answer also travels with the wake-up.
"""

from __future__ import annotations

import functools

from temporalio.api.enums.v1 import query_pb2 as query_enums
from temporalio.api.query.v1 import message_pb2 as query_pb
from temporalio.bridge.proto.workflow_activation import workflow_activation_pb2 as wa
from temporalio.bridge.proto.workflow_completion import workflow_completion_pb2 as wcomp

from dbosify._engine import history as h
from dbosify._store import Store, Tx
from dbosify._store.loop_pool import LoopPool
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


def _answers(
    query_ids: list[str], results: dict[str, query_pb.WorkflowQueryResult]
) -> list[tuple[str, bytes]]:
    return [(qid, (results.get(qid) or failed("query not answered")).SerializeToString()) for qid in query_ids]


@functools.lru_cache(maxsize=64)
def _answer_statement(schema: str) -> str:
    s = f'"{schema}"'
    return (
        # The fence, as `RunDriver._owned` checks it: a running run that another claim drives
        # (checked only when the first boolean says so).
        f"WITH f AS (SELECT %s AND status = {h.RUNNING} AND (owner IS DISTINCT FROM %s"
        f"  OR claim_gen IS DISTINCT FROM %s) AS fenced FROM {s}.executions WHERE run_id = %s FOR UPDATE),"
        f" u AS (UPDATE {s}.queries q SET state = 'answered', response = k.resp"
        "  FROM unnest(%s::text[], %s::bytea[]) AS k(id, resp)"
        "  WHERE q.query_id = k.id AND q.state = 'pending' AND NOT COALESCE((SELECT fenced FROM f), false)"
        "  RETURNING q.query_id)"
        " SELECT COALESCE((SELECT fenced FROM f), false), (SELECT string_agg(pg_notify(%s, k.key)::text, '')"
        "  FROM unnest(%s::text[], %s::text[]) AS k(id, key) WHERE k.id IN (SELECT query_id FROM u))"
    )


async def record_direct(
    pool: LoopPool, store: Store, ns: str, run_id: str, fence: tuple[str, int] | None,
    query_ids: list[str], results: dict[str, query_pb.WorkflowQueryResult],
) -> bool:
    """`record` in one statement from the driver's loop (Postgres); False if the driver is
    fenced (``fence``: its owner and claim generation; None for a closed run's replay)."""
    answers = _answers(query_ids, results)
    keys = [with_value(f"qr:{qid}", data) for qid, data in answers]
    channel = store.ident(ns)
    owner, gen = fence if fence is not None else ("", 0)
    rows = await pool.fetch(_answer_statement(channel), (
        fence is not None, owner, gen, run_id, [a[0] for a in answers], [a[1] for a in answers],
        channel, [a[0] for a in answers], keys,
    ))
    if rows and rows[0][0]:
        return False
    for key in keys:  # this process's waiters (the statement told the others)
        store.hub.fire(f"{ns}\x00{key}")
    return True


def record(tx: Tx, query_ids: list[str], results: dict[str, query_pb.WorkflowQueryResult]) -> None:
    """Store the answers (a query without one fails as unanswered) and wake their callers."""
    for qid, data in _answers(query_ids, results):
        tx.execute(
            "UPDATE queries SET state = 'answered', response = %s WHERE query_id = %s"
            " AND state = 'pending'",
            (data, qid),
        )
        tx.notify(with_value(f"qr:{qid}", data))  # the caller needs no read for a small answer
