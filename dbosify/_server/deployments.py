"""The Worker Deployment RPCs: describe and list deployments, describe and delete a version, and
set a deployment's current and ramping versions (`dbosify._engine.deployments` holds the rules).

The conflict token is the deployment's routing revision (8 bytes); an empty token is not checked.
A routing change wakes the claim loops of the deployment's task queues. There is no drainage:
a version is CURRENT, RAMPING or INACTIVE, and the routing update state is always COMPLETED.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from temporalio.api.deployment.v1 import message_pb2 as dep
from temporalio.api.enums.v1 import deployment_pb2 as dep_enums
from temporalio.api.enums.v1 import task_queue_pb2 as tq_enums
from temporalio.api.workflowservice.v1 import request_response_pb2 as rr

from dbosify._engine import deployments as d
from dbosify._engine.errors import FAILED_PRECONDITION, ServiceError
from dbosify._store import Store, Tx

UNVERSIONED = "__unversioned__"
_S = dep_enums


def _ts(msg: Any, when: float | None) -> None:
    if when is not None:
        msg.FromNanoseconds(int(when * 1e9))


def _token(revision: int) -> bytes:
    return int(revision).to_bytes(8, "big")


def _deployment_row(tx: Tx, name: str) -> Any:
    if not name:
        raise ServiceError.invalid("WorkerDeploymentName cannot be empty")
    row = tx.one(
        "SELECT name, create_time, current_build, current_since, ramping_build, ramping_pct, ramping_since,"
        " routing_time, revision, last_modifier FROM worker_deployments WHERE name = %s",
        (name,),
    )
    if row is None:
        raise ServiceError.not_found(
            f"no Worker Deployment found with name '{name}'; does your Worker Deployment have pollers?"
        )
    return row


def _versions(tx: Tx, name: str) -> list[tuple[str, float]]:
    return [
        (str(b), float(t))
        for b, t in tx.all(
            "SELECT build_id, min(create_time) FROM deployment_versions WHERE deployment_name = %s"
            " GROUP BY build_id ORDER BY min(create_time)",
            (name,),
        )
    ]


def _routing(row: Any) -> dep.RoutingConfig:
    name, _, cur, cur_since, ramp, pct, ramp_since, routing_time, revision, _ = row
    rc = dep.RoutingConfig(revision_number=int(revision))
    if cur is not None:
        rc.current_deployment_version.CopyFrom(dep.WorkerDeploymentVersion(deployment_name=name, build_id=cur))
        rc.current_version = d.canonical(name, cur)
    else:
        rc.current_version = UNVERSIONED
    _ts(rc.current_version_changed_time, cur_since or routing_time)
    if ramp is not None:
        rc.ramping_deployment_version.CopyFrom(dep.WorkerDeploymentVersion(deployment_name=name, build_id=ramp))
        rc.ramping_version = d.canonical(name, ramp)
        rc.ramping_version_percentage = float(pct)
        _ts(rc.ramping_version_changed_time, ramp_since)
        _ts(rc.ramping_version_percentage_changed_time, routing_time)
    return rc


def _status(row: Any, build: str) -> int:
    if row[2] == build:
        return _S.WORKER_DEPLOYMENT_VERSION_STATUS_CURRENT
    if row[4] == build:
        return _S.WORKER_DEPLOYMENT_VERSION_STATUS_RAMPING
    return _S.WORKER_DEPLOYMENT_VERSION_STATUS_INACTIVE


def _info(tx: Tx, row: Any) -> dep.WorkerDeploymentInfo:
    name = str(row[0])
    info = dep.WorkerDeploymentInfo(name=name, last_modifier_identity=str(row[9] or ""))
    _ts(info.create_time, float(row[1]))
    info.routing_config.CopyFrom(_routing(row))
    info.routing_config_update_state = tq_enums.ROUTING_CONFIG_UPDATE_STATE_COMPLETED
    for build, created in _versions(tx, name):
        s = info.version_summaries.add(version=d.canonical(name, build), status=_status(row, build))  # type: ignore[arg-type]
        s.deployment_version.CopyFrom(dep.WorkerDeploymentVersion(deployment_name=name, build_id=build))
        _ts(s.create_time, created)
        if row[2] == build:
            _ts(s.current_since_time, row[3])
        if row[4] == build:
            _ts(s.ramping_since_time, row[6])
    return info


async def describe(store: Store, req: rr.DescribeWorkerDeploymentRequest) -> Message:
    def fn(tx: Tx) -> rr.DescribeWorkerDeploymentResponse:
        row = _deployment_row(tx, req.deployment_name)
        return rr.DescribeWorkerDeploymentResponse(conflict_token=_token(row[8]), worker_deployment_info=_info(tx, row))

    return await store.transact(req.namespace, fn)  # type: ignore[no-any-return]


async def list_deployments(store: Store, req: rr.ListWorkerDeploymentsRequest) -> Message:
    def fn(tx: Tx) -> rr.ListWorkerDeploymentsResponse:
        resp = rr.ListWorkerDeploymentsResponse()
        names = [str(r[0]) for r in tx.all("SELECT name FROM worker_deployments ORDER BY create_time, name")]
        for name in names:
            row = _deployment_row(tx, name)
            s = resp.worker_deployments.add(name=name)
            _ts(s.create_time, float(row[1]))
            s.routing_config.CopyFrom(_routing(row))
            versions = _versions(tx, name)
            for build, created in versions[-1:]:
                s.latest_version_summary.version = d.canonical(name, build)
                s.latest_version_summary.deployment_version.CopyFrom(
                    dep.WorkerDeploymentVersion(deployment_name=name, build_id=build))
                s.latest_version_summary.status = _status(row, build)  # type: ignore[assignment]
                _ts(s.latest_version_summary.create_time, created)
        return resp

    return await store.transact(req.namespace, fn)  # type: ignore[no-any-return]


def _build_of(deployment: str, version: str, build_id: str) -> str | None:
    """The build id a Set...Version request names (None: unversioned)."""
    if build_id:
        return build_id
    if not version or version == UNVERSIONED:
        return None
    prefix = deployment + "."
    if not version.startswith(prefix) or len(version) == len(prefix):
        raise ServiceError.invalid(f"invalid version {version!r}: expected \"{deployment}.<build id>\"")
    return version[len(prefix):]


def _check_token(row: Any, token: bytes) -> None:
    if token and token != _token(row[8]):
        raise ServiceError(FAILED_PRECONDITION, "conflict token mismatch")


def _check_version(tx: Tx, name: str, build: str) -> None:
    if not tx.one(
        "SELECT 1 FROM deployment_versions WHERE deployment_name = %s AND build_id = %s", (name, build)
    ):
        raise ServiceError.not_found(f"build ID '{build}' not found in Worker Deployment '{name}'")


def _wake_queues(tx: Tx, name: str) -> None:
    for (q,) in tx.all("SELECT DISTINCT task_queue FROM deployment_versions WHERE deployment_name = %s", (name,)):
        tx.notify(f"wf:{q}")


async def set_current(store: Store, req: rr.SetWorkerDeploymentCurrentVersionRequest, identity: str) -> Message:
    def fn(tx: Tx) -> rr.SetWorkerDeploymentCurrentVersionResponse:
        row = _deployment_row(tx, req.deployment_name)
        _check_token(row, req.conflict_token)
        build = _build_of(req.deployment_name, req.version, req.build_id)
        if build is not None:
            _check_version(tx, req.deployment_name, build)
        resp = rr.SetWorkerDeploymentCurrentVersionResponse()
        prev = row[2]
        resp.previous_version = d.canonical(row[0], prev) if prev is not None else UNVERSIONED
        if prev is not None:
            resp.previous_deployment_version.CopyFrom(dep.WorkerDeploymentVersion(deployment_name=row[0], build_id=prev))
        if build == prev:
            resp.conflict_token = _token(row[8])
            return resp
        now = tx.store.clock.now()
        clears_ramp = build is not None and row[4] == build  # the ramping version becomes current
        tx.execute(
            "UPDATE worker_deployments SET current_build = %s, current_since = %s, routing_time = %s,"
            " revision = revision + 1, last_modifier = %s"
            + (", ramping_build = NULL, ramping_pct = 0, ramping_since = NULL" if clears_ramp else "")
            + " WHERE name = %s",
            (build, now, now, req.identity or identity, req.deployment_name),
        )
        _wake_queues(tx, req.deployment_name)
        resp.conflict_token = _token(int(row[8]) + 1)
        return resp

    return await store.transact(req.namespace, fn)  # type: ignore[no-any-return]


async def set_ramping(store: Store, req: rr.SetWorkerDeploymentRampingVersionRequest, identity: str) -> Message:
    if not 0 <= req.percentage <= 100:
        raise ServiceError.invalid("Percentage must be between 0 and 100 (inclusive)")

    def fn(tx: Tx) -> rr.SetWorkerDeploymentRampingVersionResponse:
        row = _deployment_row(tx, req.deployment_name)
        _check_token(row, req.conflict_token)
        build = _build_of(req.deployment_name, req.version, req.build_id)
        if build is not None:
            _check_version(tx, req.deployment_name, build)
            if build == row[2]:
                raise ServiceError(
                    FAILED_PRECONDITION,
                    f"requested ramping version {d.canonical(row[0], build)} is already current",
                )
        resp = rr.SetWorkerDeploymentRampingVersionResponse(previous_percentage=float(row[5] or 0))
        prev = row[4]
        if prev is not None:
            resp.previous_version = d.canonical(row[0], prev)
            resp.previous_deployment_version.CopyFrom(dep.WorkerDeploymentVersion(deployment_name=row[0], build_id=prev))
        now = tx.store.clock.now()
        pct = float(req.percentage) if build is not None else 0.0
        tx.execute(
            "UPDATE worker_deployments SET ramping_build = %s, ramping_pct = %s,"
            " ramping_since = CASE WHEN ramping_build IS NOT NULL AND ramping_build = %s THEN ramping_since"
            " ELSE %s END, routing_time = %s, revision = revision + 1, last_modifier = %s WHERE name = %s",
            (build, pct, build, now if build is not None else None, now, req.identity or identity,
             req.deployment_name),
        )
        _wake_queues(tx, req.deployment_name)
        resp.conflict_token = _token(int(row[8]) + 1)
        return resp

    return await store.transact(req.namespace, fn)  # type: ignore[no-any-return]


def _version_of(req: Any) -> tuple[str, str]:
    if req.HasField("deployment_version"):
        return req.deployment_version.deployment_name, req.deployment_version.build_id
    name, sep, build = req.version.partition(".")  # a deployment name has no "."
    if not sep or not name or not build:
        raise ServiceError.invalid(f"invalid version {req.version!r}: expected \"<deployment>.<build id>\"")
    return name, build


async def describe_version(store: Store, req: rr.DescribeWorkerDeploymentVersionRequest) -> Message:
    name, build = _version_of(req)

    def fn(tx: Tx) -> rr.DescribeWorkerDeploymentVersionResponse:
        row = _deployment_row(tx, name)
        queues = tx.all(
            "SELECT task_queue, create_time FROM deployment_versions WHERE deployment_name = %s AND build_id = %s"
            " ORDER BY task_queue",
            (name, build),
        )
        if not queues:
            raise ServiceError.not_found("Worker Deployment Version not found")
        resp = rr.DescribeWorkerDeploymentVersionResponse()
        v = resp.worker_deployment_version_info
        v.version = d.canonical(name, build)
        v.deployment_name = name
        v.deployment_version.CopyFrom(dep.WorkerDeploymentVersion(deployment_name=name, build_id=build))
        v.status = _status(row, build)  # type: ignore[assignment]
        _ts(v.create_time, min(float(t) for _, t in queues))
        if row[2] == build:
            _ts(v.current_since_time, row[3])
        if row[4] == build:
            _ts(v.ramping_since_time, row[6])
            v.ramp_percentage = float(row[5])
        for q, _ in queues:
            v.task_queue_infos.add(name=str(q), type=1)  # type: ignore[arg-type]  # TASK_QUEUE_TYPE_WORKFLOW
            resp.version_task_queues.add(name=str(q), type=1)  # type: ignore[arg-type]
        return resp

    return await store.transact(req.namespace, fn)  # type: ignore[no-any-return]


async def delete_version(store: Store, req: rr.DeleteWorkerDeploymentVersionRequest) -> Message:
    name, build = _version_of(req)

    def fn(tx: Tx) -> rr.DeleteWorkerDeploymentVersionResponse:
        row = _deployment_row(tx, name)
        _check_version(tx, name, build)
        if build in (row[2], row[4]):
            raise ServiceError(
                FAILED_PRECONDITION,
                f"version '{name}:{build}' cannot be deleted since it is current or ramping",
            )
        if tx.one(
            "SELECT 1 FROM workers w JOIN deployment_versions v ON v.task_queue = w.task_queue"
            " WHERE v.deployment_name = %s AND v.build_id = %s AND w.build_id = %s LIMIT 1",
            (name, build, build),
        ):
            raise ServiceError(
                FAILED_PRECONDITION, f"version '{name}:{build}' cannot be deleted since it has active pollers"
            )
        tx.execute("DELETE FROM deployment_versions WHERE deployment_name = %s AND build_id = %s", (name, build))
        return rr.DeleteWorkerDeploymentVersionResponse()

    return await store.transact(req.namespace, fn)  # type: ignore[no-any-return]
