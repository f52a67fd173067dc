"""A runtime's metric meter, with the shape of Core's (the objects temporalio's
``temporalio/bridge/metric.py`` drives: ``MetricMeterRef``, ``MetricAttributesRef`` and the
instrument refs).

Each `Meter` writes to one sink: a Prometheus endpoint, an OpenTelemetry exporter or an
in-process buffer (`MetricBuffer`), as the runtime's telemetry config says. An update is a
method call on the instrument and one call into the sink; attribute sets are immutable objects
made once and reused, so an update builds nothing.

This package imports nothing else of dbosify: the engine's workers and services import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

COUNTER, GAUGE, HISTOGRAM = 0, 1, 2  # temporalio.runtime.BUFFERED_METRIC_KIND_*
INT, FLOAT, DURATION = "int", "float", "duration"  # how an instrument's values are recorded

SERVICE_NAME = "temporal-core-sdk"  # Core's service_name label
DEFAULT_PREFIX = "temporal_"

AttrValue = str | int | float | bool


class Sink(Protocol):
    """Where a meter's updates go."""

    def update(self, inst: Instrument, value: int | float, attrs: Attributes) -> None: ...

    def close(self) -> None: ...


class Attributes:
    """An immutable attribute set (``MetricAttributesRef``)."""

    __slots__ = ("items", "key", "_dict", "_labels")

    def __init__(self, items: dict[str, AttrValue]) -> None:
        self.items = items
        self.key: tuple[tuple[str, AttrValue], ...] = tuple(items.items())
        self._dict: dict[str, AttrValue] | None = None
        self._labels: dict[str, str] | None = None

    def with_additional_attributes(self, meter: Meter, new_attrs: Mapping[str, Any]) -> Attributes:
        merged = dict(self.items)
        for k, v in new_attrs.items():
            if not isinstance(v, str | bool | int | float):
                raise TypeError(f"Invalid value type for key {k}, must be str, int, float, or bool")
            merged[str(k)] = v
        return Attributes(merged)

    def extend(self, **more: AttrValue) -> Attributes:
        merged = dict(self.items)
        merged.update(more)
        return Attributes(merged)

    def as_dict(self) -> dict[str, AttrValue]:
        """The same dict object for the same attribute set (a buffer's updates share it)."""
        if self._dict is None:
            self._dict = dict(self.items)
        return self._dict

    def labels(self) -> dict[str, str]:
        """Prometheus labels: names with ``-`` as ``_``, values as Core prints them."""
        if self._labels is None:
            self._labels = {sanitize(k): label_value(v) for k, v in self.items.items()}
        return self._labels


def sanitize(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "_:" else "_" for c in name)
    return out if out and not out[0].isdigit() else "_" + out


def label_value(v: AttrValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class Instrument:
    """One metric: a counter, histogram or gauge of ints, floats or durations."""

    __slots__ = ("name", "description", "unit", "kind", "values", "sink", "state")

    def __init__(
        self, sink: Sink, name: str, description: str | None, unit: str | None, kind: int, values: str
    ) -> None:
        self.name = name
        self.description = description or None
        self.unit = unit or None
        self.kind = kind
        self.values = values
        self.sink = sink
        self.state: Any = None  # the sink's own per-instrument state

    def add(self, value: int, attrs_ref: Attributes) -> None:
        self.sink.update(self, value, attrs_ref)

    def record(self, value: int | float, attrs_ref: Attributes) -> None:
        self.sink.update(self, value, attrs_ref)

    def set(self, value: int | float, attrs_ref: Attributes) -> None:
        self.sink.update(self, value, attrs_ref)


# The native module's names for them (temporalio only calls their methods).
MetricAttributesRef = Attributes
MetricCounterRef = MetricHistogramRef = MetricHistogramFloatRef = Instrument
MetricHistogramDurationRef = MetricGaugeRef = MetricGaugeFloatRef = Instrument


class Meter:
    """A runtime's meter (``MetricMeterRef``): custom metrics, and Core's with `core_*`."""

    def __init__(self, sink: Sink, default: dict[str, AttrValue], prefix: str | None) -> None:
        self.sink = sink
        self.default_attributes = Attributes(default)
        self.prefix = DEFAULT_PREFIX if prefix is None else prefix
        self._core: dict[str, Instrument] = {}

    def _new(self, name: str, description: str | None, unit: str | None, kind: int, values: str) -> Instrument:
        return Instrument(self.sink, name, description, unit, kind, values)

    def new_counter(self, name: str, description: str | None, unit: str | None) -> Instrument:
        return self._new(name, description, unit, COUNTER, INT)

    def new_histogram(self, name: str, description: str | None, unit: str | None) -> Instrument:
        return self._new(name, description, unit, HISTOGRAM, INT)

    def new_histogram_float(self, name: str, description: str | None, unit: str | None) -> Instrument:
        return self._new(name, description, unit, HISTOGRAM, FLOAT)

    def new_histogram_duration(self, name: str, description: str | None, unit: str | None) -> Instrument:
        return self._new(name, description, unit, HISTOGRAM, DURATION)

    def new_gauge(self, name: str, description: str | None, unit: str | None) -> Instrument:
        return self._new(name, description, unit, GAUGE, INT)

    def new_gauge_float(self, name: str, description: str | None, unit: str | None) -> Instrument:
        return self._new(name, description, unit, GAUGE, FLOAT)

    def core(self, name: str, description: str, kind: int, values: str = INT) -> Instrument:
        """One of Core's own metrics, named with the runtime's prefix (made once per meter)."""
        inst = self._core.get(name)
        if inst is None:
            unit = "duration" if values == DURATION else None
            inst = self._core[name] = self._new(self.prefix + name, description, unit, kind, values)
        return inst

    def close(self) -> None:
        self.sink.close()


MetricMeterRef = Meter
