"""Pure-Python stand-in for temporalio's native core module, ``temporalio.bridge.temporal_sdk_bridge``.

The import hook serves this package under that name, so every other temporalio
module (client, worker, testing, runtime, envconfig) runs unchanged on top of it.
Each name here mirrors one the Rust extension exports (see its ``src/lib.rs``).
"""

from __future__ import annotations

from dbosify._metrics.buffer import BufferedMetric, BufferedMetricUpdate
from dbosify._metrics.meter import (
    MetricAttributesRef,
    MetricCounterRef,
    MetricGaugeFloatRef,
    MetricGaugeRef,
    MetricHistogramDurationRef,
    MetricHistogramFloatRef,
    MetricHistogramRef,
    MetricMeterRef,
)
from dbosify._native import envconfig
from dbosify._native._client import ClientRef, RPCError, connect_client
from dbosify._native._runtime import (
    BufferedLogEntry,
    EphemeralServerRef,
    RuntimeRef,
    init_runtime,
    new_metric_meter,
    raise_in_thread,
    start_dev_server,
    start_test_server,
)
from dbosify._native._worker import (
    ActivitySlotInfo,
    CustomSlotSupplier,
    HistoryPusher,
    LocalActivitySlotInfo,
    PollShutdownError,
    SlotMarkUsedCtx,
    SlotReleaseCtx,
    SlotReserveCtx,
    WorkerRef,
    WorkflowSlotInfo,
    new_replay_worker,
    new_worker,
)

FIPS = False

__all__ = [
    "FIPS", "RPCError", "ClientRef", "connect_client", "MetricMeterRef", "MetricAttributesRef",
    "MetricCounterRef", "MetricHistogramRef", "MetricHistogramFloatRef", "MetricHistogramDurationRef",
    "MetricGaugeRef", "MetricGaugeFloatRef", "BufferedMetricUpdate", "BufferedMetric",
    "new_metric_meter", "RuntimeRef", "BufferedLogEntry", "init_runtime", "raise_in_thread",
    "EphemeralServerRef", "start_dev_server", "start_test_server", "PollShutdownError", "WorkerRef",
    "HistoryPusher", "CustomSlotSupplier", "SlotReserveCtx", "SlotReleaseCtx", "SlotMarkUsedCtx",
    "WorkflowSlotInfo", "ActivitySlotInfo", "LocalActivitySlotInfo", "new_worker",
    "new_replay_worker", "envconfig",
]
