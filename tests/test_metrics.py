"""Core's metrics and the engine's: a Prometheus endpoint scraped over HTTP, OTLP export to a
receiver on loopback (HTTP and gRPC), and MetricBuffer; custom meters (runtime, workflow, activity)."""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.request import urlopen

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    MetricBuffer,
    MetricBufferDurationFormat,
    OpenTelemetryConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
)
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tests.conftest import new_namespace

_attempts: dict[str, int] = {}
_release = threading.Event()


@activity.defn
async def flaky(key: str) -> str:
    activity.metric_meter().create_counter("act_calls", "activity calls").add(1, {"k": key})
    _attempts[key] = _attempts.get(key, 0) + 1
    if _attempts[key] == 1:
        raise ApplicationError("first attempt fails")
    return key


@activity.defn
def blocked() -> None:
    _release.wait(20)


@workflow.defn
class Counted:
    @workflow.run
    async def run(self, key: str) -> str:
        counter = workflow.metric_meter().create_counter("wf_steps", "workflow steps")
        counter.add(1)
        got = await workflow.execute_activity(
            flaky, key, start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=10)),
        )
        counter.add(1, {"phase": "after"})
        return got


@workflow.defn
class Fails:
    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("no", non_retryable=True)


@workflow.defn
class Backlogged:
    @workflow.run
    async def run(self, n: int) -> None:
        await asyncio.gather(*[
            workflow.execute_activity(blocked, start_to_close_timeout=timedelta(seconds=30)) for _ in range(n)
        ])


@pytest.fixture(autouse=True)
def _runtimes_closed() -> Iterator[None]:
    """Each test's runtimes go with it: their exporters (and OpenTelemetry's retrying export
    threads) are shut down when the runtime is collected, not left running through later tests."""
    yield
    gc.collect()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(addr: str) -> str:
    with urlopen(f"http://{addr}/metrics", timeout=10) as f:
        return str(f.read().decode())


def _value(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _run_counted(client: Client, tq: str, max_cached: int = 1000) -> str:
    key = uuid.uuid4().hex
    async with Worker(client, task_queue=tq, workflows=[Counted, Fails], activities=[flaky],
                      max_cached_workflows=max_cached, workflow_runner=UnsandboxedWorkflowRunner()):
        assert await client.execute_workflow(Counted.run, key, id=key, task_queue=tq) == key
        with pytest.raises(WorkflowFailureError):
            await client.execute_workflow(Fails.run, id=f"f-{key}", task_queue=tq)
    return key


async def test_prometheus_core_custom_and_engine_metrics(db_url: str) -> None:
    addr = f"127.0.0.1:{_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=addr)))
    runtime.metric_meter.create_gauge("my_gauge", "a gauge").set(7)
    client = await Client.connect(db_url, namespace=new_namespace(db_url), runtime=runtime)
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    # No cache: every workflow task replays the run first, so the workflow meter must not
    # record again on replay (temporalio's replay-safe meter) and the cache misses are counted.
    await _run_counted(client, tq, max_cached=0)
    text = _scrape(addr)
    ns = client.namespace
    base = {"namespace": ns, "task_queue": tq}
    assert _value(text, "temporal_workflow_completed", workflow_type="Counted", **base) == 1
    assert _value(text, "temporal_workflow_failed", workflow_type="Fails", **base) == 1
    assert _value(text, "temporal_activity_execution_failed", activity_type="flaky", **base) == 1
    assert _value(text, "temporal_activity_task_received", activity_type="flaky", **base) == 2
    assert _value(text, "temporal_activity_execution_latency_count", activity_type="flaky") == 2
    assert _value(text, "temporal_workflow_task_execution_latency_count", workflow_type="Counted") >= 2  # type: ignore[operator]
    assert _value(text, "temporal_workflow_task_replay_latency_count", workflow_type="Counted") >= 1  # type: ignore[operator]
    assert _value(text, "temporal_sticky_cache_miss", **base) >= 1  # type: ignore[operator]
    assert 'le="1000"' in text  # Core's default buckets, in milliseconds
    assert _value(text, "temporal_request", operation="StartWorkflowExecution") == 2
    assert _value(text, "temporal_long_request", operation="PollActivityTaskQueue", **base) == 2
    assert _value(text, "temporal_num_pollers", poller_type="activity_task", **base) is not None
    assert _value(text, "temporal_worker_start", **base) == 1
    # Custom metrics with their attributes (Prometheus names: "-" becomes "_").
    assert _value(text, "my_gauge", service_name="temporal-core-sdk") == 7
    assert "# HELP my_gauge a gauge" in text
    assert _value(text, "wf_steps", workflow_type="Counted", **base) == 1
    assert _value(text, "wf_steps", phase="after", workflow_type="Counted") == 1
    assert _value(text, "act_calls", activity_type="flaky", **base) == 2
    # The engine's own metrics.
    assert (_value(text, "dbosify_db_transactions") or 0) > 0
    assert (_value(text, "dbosify_db_statements") or 0) > 0
    assert (_value(text, "dbosify_claim_latency_seconds_count", task_type="workflow") or 0) > 0
    assert _value(text, "dbosify_fenced_writes_refused") is not None
    assert _value(text, "dbosify_takeovers") is not None


async def test_prometheus_options(db_url: str) -> None:
    addr = f"127.0.0.1:{_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(
        metrics=PrometheusConfig(
            bind_address=addr, counters_total_suffix=True, unit_suffix=True, durations_as_seconds=True,
            histogram_bucket_overrides={"activity_execution_latency": [0.25, 7.5]},
        ),
        global_tags={"region": "here"},
    ))
    client = await Client.connect(db_url, namespace=new_namespace(db_url), runtime=runtime)
    await _run_counted(client, f"tq-{uuid.uuid4().hex[:8]}")
    text = _scrape(addr)
    assert _value(text, "temporal_workflow_completed_total", workflow_type="Counted", region="here") == 1
    assert _value(text, "temporal_workflow_completed") is None
    assert _value(text, "temporal_workflow_task_execution_latency_seconds_count", workflow_type="Counted")
    # Core's buckets for workflow tasks, in seconds; the override for activity executions.
    assert re.search(r'temporal_workflow_task_execution_latency_seconds_bucket\{.*le="0.001"', text)
    assert re.search(r'temporal_activity_execution_latency_seconds_bucket\{.*le="7.5"', text)
    assert not re.search(r'temporal_activity_execution_latency_seconds_bucket\{.*le="0.05"', text)


async def test_buffered_metrics(db_url: str) -> None:
    buffer = MetricBuffer(10_000, duration_format=MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer, metric_prefix="pre_"))
    client = await Client.connect(db_url, namespace=new_namespace(db_url), runtime=runtime)
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    await _run_counted(client, tq)
    updates = buffer.retrieve_updates()
    assert not [u for u in updates if u.metric.name.startswith("temporal_")]  # the prefix replaces it
    done = [u for u in updates if u.metric.name == "pre_workflow_completed"]
    assert [(u.value, u.attributes["workflow_type"], u.attributes["task_queue"]) for u in done] == [
        (1, "Counted", tq)
    ]
    assert done[0].metric.kind == BUFFERED_METRIC_KIND_COUNTER
    latency = [u for u in updates if u.metric.name == "pre_activity_execution_latency"]
    assert latency and all(isinstance(u.value, float) and u.metric.unit == "s" for u in latency)
    steps = [u for u in updates if u.metric.name == "wf_steps"]
    assert sorted(u.attributes.get("phase", "") for u in steps) == ["", "after"]
    assert all(u.metric.name != "pre_workflow_completed" for u in buffer.retrieve_updates())  # drained


async def test_backlog_count_and_age(db_url: str) -> None:
    addr = f"127.0.0.1:{_port()}"
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=addr)))
    client = await Client.connect(db_url, namespace=new_namespace(db_url), runtime=runtime)
    tq = f"tq-{uuid.uuid4().hex[:8]}"
    _release.clear()
    with futures.ThreadPoolExecutor(4) as pool:
        async with Worker(client, task_queue=tq, workflows=[Backlogged], activities=[blocked],
                          activity_executor=pool, max_concurrent_activities=1,
                          workflow_runner=UnsandboxedWorkflowRunner()):
            handle = await client.start_workflow(Backlogged.run, 4, id=uuid.uuid4().hex, task_queue=tq)
            labels = {"namespace": client.namespace, "task_queue": tq, "task_type": "activity"}
            for _ in range(100):  # one attempt runs (one slot): three wait
                text = await asyncio.to_thread(_scrape, addr)
                if _value(text, "dbosify_task_queue_backlog", **labels) == 3:
                    break
                await asyncio.sleep(0.1)
            assert _value(text, "dbosify_task_queue_backlog", **labels) == 3
            await asyncio.sleep(0.3)
            text = await asyncio.to_thread(_scrape, addr)
            assert (_value(text, "dbosify_task_queue_backlog_age_seconds", **labels) or 0) >= 0.2
            _release.set()
            await handle.result()
            text = await asyncio.to_thread(_scrape, addr)
            assert _value(text, "dbosify_task_queue_backlog", **labels) == 0


# -- OpenTelemetry ---------------------------------------------------------------------------


class _Received:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sums: dict[str, float] = {}
        self.bounds: dict[str, list[float]] = {}
        self.attrs: dict[str, dict[str, Any]] = {}

    def take(self, req: Any) -> None:
        with self.lock:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.HasField("sum"):
                            for dp in m.sum.data_points:
                                self.sums[m.name] = dp.as_int or dp.as_double
                                self.attrs[m.name] = {a.key: a.value.string_value for a in dp.attributes}
                        if m.HasField("histogram"):
                            for dp in m.histogram.data_points:
                                self.bounds[m.name] = list(dp.explicit_bounds)


@pytest.fixture
def otlp_http() -> Iterator[tuple[str, _Received]]:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )

    got = _Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            req = ExportMetricsServiceRequest()
            req.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            got.take(req)
            body = ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/metrics", got
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def otlp_grpc() -> Iterator[tuple[str, _Received]]:
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as pb
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as pb_grpc

    got = _Received()

    class Service(pb_grpc.MetricsServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
            got.take(request)
            return pb.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(2))
    pb_grpc.add_MetricsServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", got
    finally:
        server.stop(None)


@pytest.mark.parametrize("transport", ["http", "grpc"])
async def test_opentelemetry_export(db_url: str, transport: str, request: pytest.FixtureRequest) -> None:
    url, got = request.getfixturevalue(f"otlp_{transport}")
    runtime = Runtime(telemetry=TelemetryConfig(metrics=OpenTelemetryConfig(
        url=url, http=transport == "http", metric_periodicity=timedelta(milliseconds=100),
        histogram_bucket_overrides={"temporal_activity_execution_latency": [3.0, 30.0]},
    )))
    runtime.metric_meter.create_counter("my_counter").add(5, {"who": "me"})
    client = await Client.connect(db_url, namespace=new_namespace(db_url), runtime=runtime)
    await _run_counted(client, f"tq-{uuid.uuid4().hex[:8]}")
    for _ in range(100):
        with got.lock:
            ready = "temporal_workflow_completed" in got.sums and "temporal_activity_execution_latency" in got.bounds
        if ready:
            break
        await asyncio.sleep(0.1)
    with got.lock:
        assert got.sums["temporal_workflow_completed"] == 1
        assert got.attrs["temporal_workflow_completed"]["workflow_type"] == "Counted"
        assert got.bounds["temporal_activity_execution_latency"] == [3.0, 30.0]
        assert got.sums["my_counter"] == 5 and got.attrs["my_counter"]["who"] == "me"
        assert got.sums.get("dbosify_db_transactions", 0) > 0


def test_bad_attribute_and_config() -> None:
    runtime = Runtime(telemetry=TelemetryConfig(metrics=MetricBuffer(10)))
    with pytest.raises(TypeError, match="Invalid value type for key"):
        runtime.metric_meter.with_additional_attributes({"x": None})  # type: ignore[dict-item]
    counter = runtime.metric_meter.create_counter("c")
    for _ in range(20):
        counter.add(1)
    assert len(runtime._core_runtime.retrieve_buffered_metrics(False)) == 10  # the buffer's size
    with pytest.raises(RuntimeError, match="Prometheus"):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        try:
            Runtime(telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=f"127.0.0.1:{busy.getsockname()[1]}")
            ))
        finally:
            busy.close()


def test_prometheus_on_an_ipv6_address() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            port = int(s.getsockname()[1])
    except OSError:
        pytest.skip("no IPv6 loopback here")
    runtime = Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"[::1]:{port}")))
    runtime.metric_meter.create_counter("six_counter").add(2)
    assert _value(_scrape(f"[::1]:{port}"), "six_counter") == 2
