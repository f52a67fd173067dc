"""Metrics: Core's metrics with Core's names, custom meters, and the exporters (Prometheus,
OpenTelemetry, an in-process buffer); see `meter` for the shape temporalio drives.

Imports nothing else of dbosify (the worker and the services import it).
"""

from __future__ import annotations

from typing import Any

from dbosify._metrics.meter import SERVICE_NAME, Meter, Sink


def meter_for(options: Any) -> tuple[Meter | None, Any]:
    """The meter of a runtime made with temporalio's ``RuntimeOptions`` (None without metrics),
    and its buffer sink if it buffers (``retrieve_buffered_metrics``)."""
    conf = getattr(getattr(options, "telemetry", None), "metrics", None)
    if conf is None:
        return None, None
    prom, otel, size = conf.prometheus, conf.opentelemetry, int(conf.buffered_with_size or 0)
    if size > 0 and (prom is not None or otel is not None):
        raise ValueError("Cannot have buffer size with OpenTelemetry or Prometheus metric config")
    if prom is not None and otel is not None:
        raise ValueError("Cannot have OpenTelemetry and Prometheus metrics")
    default: dict[str, Any] = {}
    if conf.attach_service_name:
        default["service_name"] = SERVICE_NAME
    default.update(conf.global_tags or {})
    sink: Sink
    buffer = None
    if size > 0:
        from dbosify._metrics.buffer import BufferSink

        sink = buffer = BufferSink(size)
    elif prom is not None:
        from dbosify._metrics.prometheus import PrometheusSink

        sink = PrometheusSink(
            prom.bind_address, counters_total_suffix=prom.counters_total_suffix,
            unit_suffix=prom.unit_suffix, durations_as_seconds=prom.durations_as_seconds,
            histogram_bucket_overrides=prom.histogram_bucket_overrides,
        )
    elif otel is not None:
        from dbosify._metrics.otel import OTelSink

        sink = OTelSink(
            otel.url, headers=otel.headers, periodicity_ms=otel.metric_periodicity_millis,
            delta=otel.metric_temporality_delta, durations_as_seconds=otel.durations_as_seconds,
            http=otel.http, histogram_bucket_overrides=otel.histogram_bucket_overrides,
        )
    else:
        return None, None
    return Meter(sink, default, conf.metric_prefix), buffer


__all__ = ["Meter", "meter_for"]
