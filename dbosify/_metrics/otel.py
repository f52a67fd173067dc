"""Core's OpenTelemetry exporter: OTLP over gRPC or HTTP, with opentelemetry-sdk's exporters.

Periodic export (every ``metric_periodicity``, 1 s by default, as Core), cumulative or delta
temporality, headers, durations in milliseconds or seconds, Core's default histogram buckets
and the bucket overrides (exact metric names). The engine's ``dbosify_*`` metrics are exported
as observable instruments read at each export.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dbosify._metrics import buckets, engine
from dbosify._metrics.meter import COUNTER, DURATION, GAUGE, SERVICE_NAME, Attributes, Instrument

CLOSE_TIMEOUT_MS = 2000  # the last export when a runtime is dropped


class OTelSink:
    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, periodicity_ms: int | None = None,
        delta: bool = False, durations_as_seconds: bool = False, http: bool = False,
        histogram_bucket_overrides: Mapping[str, Sequence[float]] | None = None,
        resource_tags: Mapping[str, str] | None = None,
    ) -> None:
        try:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
            from opentelemetry.sdk.resources import Resource
        except ImportError:
            raise RuntimeError(
                "OpenTelemetryConfig needs opentelemetry-sdk and its OTLP exporters: pip install 'dbosify[metrics]'"
            ) from None
        self.seconds = durations_as_seconds
        self.overrides = {k: [float(b) for b in v] for k, v in (histogram_bucket_overrides or {}).items()}
        exporter = _exporter(url, dict(headers or {}), http, delta)
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=periodicity_ms or 1000)
        resource = Resource.create({"service.name": SERVICE_NAME, **dict(resource_tags or {})})
        self.provider = MeterProvider(metric_readers=[reader], resource=resource)
        self.meter = self.provider.get_meter("temporal-core-sdk")
        self._lock = threading.Lock()
        self._engine_instruments()

    def _instrument(self, inst: Instrument) -> Any:
        with self._lock:
            if inst.state is not None:
                return inst.state
            unit = inst.unit or ""
            if inst.values == DURATION:
                unit = "s" if self.seconds else "ms"
            made: Any
            if inst.kind == COUNTER:
                made = self.meter.create_counter(inst.name, unit=unit, description=inst.description or "")
            elif inst.kind == GAUGE:
                made = self.meter.create_gauge(inst.name, unit=unit, description=inst.description or "")
            else:
                bounds = self.overrides.get(inst.name)
                if bounds is None:
                    base = inst.name[len("temporal_"):] if inst.name.startswith("temporal_") else inst.name
                    bounds = buckets.default_for(base, self.seconds)
                made = self.meter.create_histogram(
                    inst.name, unit=unit, description=inst.description or "",
                    explicit_bucket_boundaries_advisory=bounds,
                )
            inst.state = made
            return made

    def update(self, inst: Instrument, value: int | float, attrs: Attributes) -> None:
        made = inst.state or self._instrument(inst)
        if inst.values == DURATION and self.seconds:
            value = value / 1000
        if inst.kind == COUNTER:
            made.add(value, attrs.items)
        elif inst.kind == GAUGE:
            made.set(value, attrs.items)
        else:
            made.record(value, attrs.items)

    def _engine_instruments(self) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        cached: list[Any] = [0.0, []]  # (when, families): one read of the backlog per export

        def snapshot() -> list[engine.Family]:
            if time.monotonic() - cached[0] > 0.5:
                cached[:] = [time.monotonic(), list(engine.families(sink=self))]
            return cached[1]  # type: ignore[no-any-return]

        def observe(kind: str) -> Any:
            def cb(_opts: CallbackOptions) -> Iterable[Observation]:
                out = []
                for *_, samples in snapshot():
                    for sample_name, labels, value in samples:
                        if sample_name == kind:
                            out.append(Observation(value, labels))
                return out
            return cb

        for name, type_, help_, _ in engine.families(backlog=False):
            if type_ == "histogram":  # as two monotonic sums: no observable histogram in OTel
                for part in ("_sum", "_count"):
                    self.meter.create_observable_counter(name + part, [observe(name + part)], description=help_)
            elif type_ == "counter":
                self.meter.create_observable_counter(name, [observe(name)], description=help_)
            else:
                self.meter.create_observable_gauge(name, [observe(name)], description=help_)

    def close(self) -> None:
        # A last export, bounded: a collector that is gone must not hold the runtime's drop
        # (the exporter would retry for its whole timeout, 10 s by default).
        try:
            self.provider.shutdown(timeout_millis=CLOSE_TIMEOUT_MS)
        except Exception:
            pass


def _exporter(url: str, headers: dict[str, str], http: bool, delta: bool) -> Any:
    from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    temporality: dict[type, AggregationTemporality] | None = None
    if delta:
        d = AggregationTemporality.DELTA
        temporality = {Counter: d, Histogram: d, ObservableCounter: d}
    if http:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as Http,
        )

        return Http(endpoint=url, headers=headers, preferred_temporality=temporality)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as Grpc

    return Grpc(
        endpoint=url, headers=headers, insecure=url.startswith("http://"), preferred_temporality=temporality
    )
