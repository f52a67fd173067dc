"""Temporal's TestService on a time-skipping environment's virtual clock.

temporalio's `WorkflowEnvironment.start_time_skipping()` drives the clock with these RPCs:
it unlocks time skipping while a client waits on a workflow's result and locks it again after,
`env.sleep(d)` is ``unlock_time_skipping_with_sleep``, `env.get_current_time()` is
``get_current_time``. The clock itself is `dbosify._store.virtual_clock.VirtualClock`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from google.protobuf import empty_pb2
from google.protobuf.message import Message
from temporalio.api.testservice.v1 import request_response_pb2 as ts

from dbosify._engine.errors import ServiceError
from dbosify._store import Store
from dbosify._store.virtual_clock import VirtualClock


class TestService:
    """The TestService RPCs on one store; refused unless the store has a virtual clock."""

    __test__ = False  # not a pytest class

    def __init__(self, store: Store) -> None:
        self.store = store

    async def call(self, rpc: str, req_bytes: bytes) -> bytes:
        clock = self.store.clock
        if not isinstance(clock, VirtualClock):
            raise ServiceError.unimplemented(
                "the test service answers only in a time-skipping environment"
                " (WorkflowEnvironment.start_time_skipping())"
            )
        resp: Message
        if rpc == "lock_time_skipping":
            ts.LockTimeSkippingRequest.FromString(req_bytes)
            clock.lock()
            resp = ts.LockTimeSkippingResponse()
        elif rpc == "unlock_time_skipping":
            ts.UnlockTimeSkippingRequest.FromString(req_bytes)
            clock.unlock()
            resp = ts.UnlockTimeSkippingResponse()
        elif rpc == "get_current_time":
            empty_pb2.Empty.FromString(req_bytes)
            resp = ts.GetCurrentTimeResponse()
            resp.time.FromNanoseconds(int(clock.now() * 1e9))
        elif rpc in ("sleep", "unlock_time_skipping_with_sleep"):
            req = ts.SleepRequest.FromString(req_bytes)
            until = clock.now() + req.duration.ToNanoseconds() / 1e9
            await _sleep(clock, until, unlock=rpc != "sleep")
            resp = ts.SleepResponse()
        elif rpc == "sleep_until":
            until_req = ts.SleepUntilRequest.FromString(req_bytes)
            await _sleep(clock, until_req.timestamp.ToNanoseconds() / 1e9, unlock=False)
            resp = ts.SleepResponse()
        else:
            raise ServiceError.unimplemented(
                f"dbosify does not implement the test service RPC {rpc!r}; see docs/COMPATIBILITY.md"
            )
        return bytes(resp.SerializeToString())


async def _sleep(clock: VirtualClock, until: float, *, unlock: bool) -> None:
    """Wait until virtual time ``until``; with ``unlock``, time skipping is unlocked meanwhile.

    An activity that sleeps on the environment's clock (a test's activity calling
    ``env.sleep``) is not work in progress while it sleeps, or time could never skip past it.
    """
    with _excusing_calling_activity(clock):
        await clock.sleep_until(until, unlocked=unlock)


@contextmanager
def _excusing_calling_activity(clock: VirtualClock) -> Iterator[None]:
    token = _calling_activity_token()
    if token is None:
        yield
        return
    with clock.excused(token):
        yield


def _calling_activity_token() -> bytes | None:
    """The task token of the activity attempt making this call, if one is."""
    from temporalio import activity

    if not activity.in_activity():
        return None
    return bytes(activity.info().task_token)
