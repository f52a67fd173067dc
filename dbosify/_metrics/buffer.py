"""`MetricBuffer`: a runtime's metric updates kept in process, for
``runtime.retrieve_buffered_metrics`` in the shape temporalio documents
(``temporalio.runtime.BufferedMetricUpdate``)."""

from __future__ import annotations

import logging
import threading

from dbosify._metrics.meter import DURATION, Attributes, Instrument

logger = logging.getLogger("dbosify")


class BufferedMetric:
    """One metric: the same object for every update of it."""

    __slots__ = ("name", "description", "unit", "kind")

    def __init__(self, name: str, description: str | None, unit: str | None, kind: int) -> None:
        self.name = name
        self.description = description
        self.unit = unit
        self.kind = kind


class BufferedMetricUpdate:
    __slots__ = ("metric", "value", "attributes")

    def __init__(self, metric: BufferedMetric, value: int | float, attributes: dict[str, object]) -> None:
        self.metric = metric
        self.value = value
        self.attributes = attributes


class BufferSink:
    def __init__(self, size: int) -> None:
        self.size = size
        self._updates: list[tuple[Instrument, int | float, Attributes]] = []
        self._lock = threading.Lock()
        self._warned = False

    def update(self, inst: Instrument, value: int | float, attrs: Attributes) -> None:
        with self._lock:
            if len(self._updates) >= self.size:
                if not self._warned:
                    self._warned = True
                    logger.error("dbosify: the metric buffer is full (%d updates); updates are dropped", self.size)
                return
            self._updates.append((inst, value, attrs))

    def retrieve(self, durations_as_seconds: bool) -> list[BufferedMetricUpdate]:
        with self._lock:
            taken, self._updates = self._updates, []
            self._warned = False
        out = []
        for inst, value, attrs in taken:
            metric = inst.state
            if metric is None:
                unit = inst.unit
                if inst.values == DURATION and unit == "duration":
                    unit = "s" if durations_as_seconds else "ms"
                metric = inst.state = BufferedMetric(inst.name, inst.description, unit, inst.kind)
            if inst.values == DURATION:
                value = value / 1000 if durations_as_seconds else int(value)
            out.append(BufferedMetricUpdate(metric, value, attrs.as_dict()))  # type: ignore[arg-type]
        return out

    def close(self) -> None:
        pass
