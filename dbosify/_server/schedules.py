"""Schedule RPCs: create, describe, update, patch (trigger, backfill, pause), list, delete.

The schedule's state and its actions are in `scheduler`; its spec in `schedule_spec`. A
schedule's own search attributes are indexed like a run's, under the key ``schedule:<id>``, so
list filters work on them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import message_pb2 as common
from temporalio.api.enums.v1 import workflow_pb2 as wfenums
from temporalio.api.errordetails.v1 import message_pb2 as errdetails
from temporalio.api.schedule.v1 import message_pb2 as sched
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import listing, schedule_spec, scheduler
from dbosify._engine import search_attributes as sa
from dbosify._engine.errors import ServiceError
from dbosify._engine.visibility_sql import translate
from dbosify._store import Store, Tx


def token_bytes(token: int) -> bytes:
    return token.to_bytes(8, "big")


def _key(schedule_id: str) -> str:
    return f"schedule:{schedule_id}"


def _ts(field: Any, seconds: float) -> None:
    field.FromNanoseconds(int(round(seconds * 1e9)))


def _normalized(tx: Tx, s: sched.Schedule) -> sched.Schedule:
    """The schedule as kept and returned: cron strings as calendars, retry defaults filled in,
    the action's search attributes checked and typed; an invalid spec is refused."""
    out = sched.Schedule()
    out.CopyFrom(s)
    out.spec.CopyFrom(schedule_spec.normalized(s.spec))
    schedule_spec.compile_spec(out.spec)  # validates
    if not out.action.HasField("start_workflow"):
        raise ServiceError.invalid("schedule action is not set")
    info = out.action.start_workflow
    if info.cron_schedule:
        raise ServiceError.invalid("Scheduled workflow must not contain CronSchedule")
    if info.workflow_id_reuse_policy not in (0, wfenums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE):
        raise ServiceError.invalid("Scheduled workflow must use the ALLOW_DUPLICATE id reuse policy")
    for what, value in (("WorkflowId", info.workflow_id), ("WorkflowType", info.workflow_type.name),
                        ("TaskQueue", info.task_queue.name)):
        if not value:
            raise ServiceError.invalid(f"{what} is not set on the schedule's start workflow action.")
    if info.HasField("retry_policy"):
        rp = info.retry_policy
        if not rp.HasField("initial_interval") or not rp.initial_interval.ToNanoseconds():
            rp.initial_interval.FromSeconds(1)
        if not rp.backoff_coefficient:
            rp.backoff_coefficient = 2.0
        if not rp.HasField("maximum_interval") or not rp.maximum_interval.ToNanoseconds():
            rp.maximum_interval.FromNanoseconds(100 * rp.initial_interval.ToNanoseconds())
    if info.HasField("search_attributes"):
        sa.check(tx, info.search_attributes)
    return out


def _index_attrs(tx: Tx, schedule_id: str, attrs: common.SearchAttributes | None) -> bytes | None:
    tx.execute("DELETE FROM search_attributes WHERE run_id = %s", (_key(schedule_id),))
    if attrs is None:
        return None
    return sa.on_start(tx, _key(schedule_id), attrs)


async def create(store: Store, req: rr.CreateScheduleRequest, identity: str) -> Message:
    if not req.schedule_id:
        raise ServiceError.invalid("ScheduleId is not set on request.")

    def fn(tx: Tx) -> int:
        if scheduler.load(tx, req.schedule_id) is not None:
            raise ServiceError.already_exists(
                f'schedule "{req.schedule_id}" is already registered',
                errdetails.WorkflowExecutionAlreadyStartedFailure(),  # as the server's detail says
            )
        now = tx.store.clock.now()
        row = scheduler.Row(
            req.schedule_id, _normalized(tx, req.schedule),
            req.memo.SerializeToString() if req.memo.fields else None, None,
            scheduler.State(created=now), 1, now, None,
        )
        row.search_attributes = _index_attrs(tx, req.schedule_id, req.search_attributes)
        if req.HasField("initial_patch"):
            _apply_patch(tx, row, req.initial_patch, now)
        scheduler.save(tx, row, new=True)
        return row.token

    token = await store.transact(req.namespace, fn)
    return rr.CreateScheduleResponse(conflict_token=token_bytes(token))


def _info(tx: Tx, row: scheduler.Row, now: float) -> sched.ScheduleInfo:
    st = row.state
    info = sched.ScheduleInfo(
        action_count=st.actions, missed_catchup_window=st.missed, overlap_skipped=st.skipped,
        buffer_dropped=st.dropped, buffer_size=len(st.buffer),
    )
    for wid, rid in scheduler.running(tx, row.schedule_id):
        info.running_workflows.add(workflow_id=wid, run_id=rid)
    _recent(tx, row, info.recent_actions)
    for t in _future(row, now):
        _ts(info.future_action_times.add(), t)
    _ts(info.create_time, st.created)
    if st.updated is not None:
        _ts(info.update_time, st.updated)
    return info


def _recent(tx: Tx, row: scheduler.Row, out: Any) -> None:
    for action in row.state.recent:
        r = out.add()
        _ts(r.schedule_time, action["scheduled"])
        _ts(r.actual_time, action["started"])
        r.start_workflow_result.workflow_id = action["wid"]
        r.start_workflow_result.run_id = action["rid"]
        status = tx.one("SELECT status FROM executions WHERE run_id = %s", (action["rid"],))
        if status is not None:
            r.start_workflow_status = int(status[0])


def _future(row: scheduler.Row, now: float) -> list[float]:
    s = row.schedule
    if s.state.limited_actions and s.state.remaining_actions <= 0:
        return []
    spec = schedule_spec.compile_spec(s.spec)
    count = scheduler.FUTURE_TIMES
    if s.state.limited_actions:
        count = min(count, s.state.remaining_actions)
    return [spec.jittered(row.schedule_id, t) for t in spec.times(max(now, row.processed_until), count)]


def _typed_attrs(tx: Tx, raw: bytes | None) -> common.SearchAttributes:
    attrs = common.SearchAttributes()
    if raw is not None:
        attrs.ParseFromString(raw)
    return sa.typed(attrs, sa.writable(tx))


async def describe(store: Store, req: rr.DescribeScheduleRequest) -> Message:
    def fn(tx: Tx) -> rr.DescribeScheduleResponse:
        row = scheduler.load(tx, req.schedule_id, lock=False)
        if row is None:
            raise scheduler.not_found(req.schedule_id)
        resp = rr.DescribeScheduleResponse(
            schedule=row.schedule, info=_info(tx, row, tx.store.clock.now()),
            conflict_token=token_bytes(row.token),
        )
        if row.memo is not None:
            resp.memo.ParseFromString(row.memo)
        resp.search_attributes.CopyFrom(_typed_attrs(tx, row.search_attributes))
        return resp

    return await store.transact(req.namespace, fn)


async def update(store: Store, req: rr.UpdateScheduleRequest) -> Message:
    def fn(tx: Tx) -> None:
        row = scheduler.load(tx, req.schedule_id)
        if row is None:
            raise scheduler.not_found(req.schedule_id)
        if req.conflict_token and req.conflict_token != token_bytes(row.token):
            return  # as on Temporal: an update from a stale description is ignored
        now = tx.store.clock.now()
        row.schedule = _normalized(tx, req.schedule)
        if req.HasField("search_attributes"):
            row.search_attributes = _index_attrs(tx, req.schedule_id, req.search_attributes)
        if req.HasField("memo"):
            row.memo = req.memo.SerializeToString() if req.memo.fields else None
        row.processed_until = max(row.processed_until, now)  # the new spec applies from now
        row.token += 1
        row.state.updated = now
        scheduler.drain_buffer(tx, row, now)
        scheduler.save(tx, row)

    await store.transact(req.namespace, fn)
    return rr.UpdateScheduleResponse()


def _apply_patch(tx: Tx, row: scheduler.Row, patch: sched.SchedulePatch, now: float) -> None:
    s = row.schedule
    if patch.pause:
        s.state.paused, s.state.notes = True, patch.pause
    if patch.unpause:
        s.state.paused, s.state.notes = False, patch.unpause
        row.processed_until = max(row.processed_until, now)  # no catching up on paused time
    if patch.HasField("trigger_immediately"):
        trig = patch.trigger_immediately
        nominal = trig.scheduled_time.ToNanoseconds() / 1e9 if trig.HasField("scheduled_time") else now
        scheduler.take(tx, row, nominal, now, trig.overlap_policy, now, manual=True)
    spec = schedule_spec.compile_spec(s.spec)
    for bf in patch.backfill_request:
        start = bf.start_time.ToNanoseconds() / 1e9
        end = bf.end_time.ToNanoseconds() / 1e9
        t = spec.next_after(start - 1e-6)
        while t is not None and t <= end:
            scheduler.take(tx, row, t, spec.jittered(row.schedule_id, t), bf.overlap_policy, now, manual=True)
            t = spec.next_after(t)


async def patch(store: Store, req: rr.PatchScheduleRequest) -> Message:
    def fn(tx: Tx) -> None:
        row = scheduler.load(tx, req.schedule_id)
        if row is None:
            raise scheduler.not_found(req.schedule_id)
        _apply_patch(tx, row, req.patch, tx.store.clock.now())
        scheduler.save(tx, row)

    await store.transact(req.namespace, fn)
    return rr.PatchScheduleResponse()


async def delete(store: Store, req: rr.DeleteScheduleRequest) -> Message:
    def fn(tx: Tx) -> None:
        if scheduler.load(tx, req.schedule_id) is None:
            raise scheduler.not_found(req.schedule_id)
        tx.execute("DELETE FROM schedules WHERE schedule_id = %s", (req.schedule_id,))
        tx.execute("DELETE FROM search_attributes WHERE run_id = %s", (_key(req.schedule_id),))
        tx.execute("UPDATE executions SET schedule_id = NULL WHERE schedule_id = %s", (req.schedule_id,))

    await store.transact(req.namespace, fn)
    return rr.DeleteScheduleResponse()


# Schedules look like runs to the filter translator: their id is WorkflowId/ScheduleId, their
# search attributes are indexed under schedule:<id>, and run-only columns are empty.
_AS_RUNS = (
    "(SELECT 'schedule:' || schedule_id AS run_id, schedule_id AS workflow_id, schedule_id,"
    " '' AS workflow_type, '' AS task_queue, 0 AS status, 0.0 AS start_time,"
    " CAST(NULL AS DOUBLE PRECISION) AS close_time, 0.0 AS execution_time, 1 AS next_event_id,"
    " 0 AS history_size_bytes, CAST(NULL AS TEXT) AS parent_workflow_id,"
    " CAST(NULL AS TEXT) AS parent_run_id, CAST(NULL AS TEXT) AS root_workflow_id,"
    " CAST(NULL AS TEXT) AS root_run_id FROM schedules) e"
)


async def list_schedules(store: Store, req: rr.ListSchedulesRequest) -> Message:
    page = req.maximum_page_size if req.maximum_page_size > 0 else listing.DEFAULT_PAGE
    after = listing.read_key_token(req.next_page_token)

    def fn(tx: Tx) -> rr.ListSchedulesResponse:
        q = translate(req.query, sa.registry(tx), sqlite=tx.store.is_sqlite)
        ids = [str(r[0]) for r in tx.all(
            f"SELECT e.schedule_id FROM {_AS_RUNS} WHERE ({q.where}) AND e.schedule_id > %s"
            " ORDER BY e.schedule_id LIMIT %s",
            (*q.params, after, page),
        )]
        resp = rr.ListSchedulesResponse()
        now = tx.store.clock.now()
        for schedule_id in ids:
            row = scheduler.load(tx, schedule_id, lock=False)
            if row is None:
                continue
            entry = resp.schedules.add(schedule_id=schedule_id)
            if row.memo is not None:
                entry.memo.ParseFromString(row.memo)
            entry.search_attributes.CopyFrom(_typed_attrs(tx, row.search_attributes))
            li = entry.info
            li.spec.CopyFrom(row.schedule.spec)
            li.workflow_type.CopyFrom(row.schedule.action.start_workflow.workflow_type)
            li.notes = row.schedule.state.notes
            li.paused = row.schedule.state.paused
            _recent(tx, row, li.recent_actions)
            for t in _future(row, now):
                _ts(li.future_action_times.add(), t)
        if len(ids) == page:
            resp.next_page_token = ids[-1].encode()
        return resp

    return await store.transact(req.namespace, fn)


async def matching_times(store: Store, req: rr.ListScheduleMatchingTimesRequest) -> Message:
    def fn(tx: Tx) -> rr.ListScheduleMatchingTimesResponse:
        row = scheduler.load(tx, req.schedule_id, lock=False)
        if row is None:
            raise scheduler.not_found(req.schedule_id)
        spec = schedule_spec.compile_spec(row.schedule.spec)
        start = req.start_time.ToNanoseconds() / 1e9
        end = req.end_time.ToNanoseconds() / 1e9
        resp = rr.ListScheduleMatchingTimesResponse()
        t = spec.next_after(start - 1e-6)
        while t is not None and t <= end and len(resp.start_time) < 1000:
            _ts(resp.start_time.add(), spec.jittered(row.schedule_id, t))
            t = spec.next_after(t)
        return resp

    return await store.transact(req.namespace, fn)
