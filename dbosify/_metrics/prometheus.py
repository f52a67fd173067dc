"""Core's Prometheus exporter: ``/metrics`` on the bind address.

Names and buckets as Core's exporter makes them: ``-`` becomes ``_``; ``_total`` is appended
to counters with ``counters_total_suffix``; with ``unit_suffix`` a histogram's unit is appended
(``_milliseconds`` or ``_seconds`` for durations); durations are integer milliseconds, or float
seconds with ``durations_as_seconds``; a histogram's buckets are the first override whose key
is part of its name, else Core's defaults for it. The engine's ``dbosify_*`` metrics are
exported alongside.

The text format is written here, as Core's exporter writes it: an integer value prints as an
integer (``temporal_workflow_completed{...} 1``, where prometheus-client's exposition would print
``1.0``), so what matches Core's output matches this one. The server is the standard library's
threading HTTP server, on its own daemon thread.
"""

from __future__ import annotations

import bisect
import math
import socket
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dbosify._metrics import buckets, engine
from dbosify._metrics.engine import Family, Sample
from dbosify._metrics.meter import COUNTER, DURATION, GAUGE, Attributes, Instrument, sanitize


class _Hist:
    __slots__ = ("counts", "sum", "count")

    def __init__(self, n: int) -> None:
        self.counts = [0] * (n + 1)
        self.sum: float = 0
        self.count = 0


class _State:
    __slots__ = ("name", "help", "type", "bounds", "series")

    def __init__(self, name: str, help_: str, type_: str, bounds: list[float]) -> None:
        self.name = name
        self.help = help_
        self.type = type_
        self.bounds = bounds
        self.series: dict[tuple[Any, ...], Any] = {}  # attribute set -> value or _Hist


class PrometheusSink:
    def __init__(
        self, bind_address: str, *, counters_total_suffix: bool = False, unit_suffix: bool = False,
        durations_as_seconds: bool = False, histogram_bucket_overrides: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        self.total_suffix = counters_total_suffix
        self.unit_suffix = unit_suffix
        self.seconds = durations_as_seconds
        self.overrides = [(k, [float(b) for b in v]) for k, v in (histogram_bucket_overrides or {}).items()]
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self._attr_labels: dict[tuple[Any, ...], dict[str, str]] = {}
        host, port = _split(bind_address)
        try:
            self.server: ThreadingHTTPServer | None = _serve(host, port, self)
        except OSError as err:
            raise RuntimeError(f"Failed to start Prometheus metrics server on {bind_address}: {err}") from None

    # -- updates ---------------------------------------------------------------------------

    def _state(self, inst: Instrument) -> _State:
        name = sanitize(inst.name)
        if inst.kind == COUNTER:
            if self.total_suffix:
                name += "_total"
            st = _State(name, inst.description or name, "counter", [])
        elif inst.kind == GAUGE:
            st = _State(name, inst.description or name, "gauge", [])
        else:
            unit = inst.unit or ""
            if inst.values == DURATION:
                unit = "seconds" if self.seconds else "milliseconds"
            if self.unit_suffix and unit:
                name = f"{name}_{sanitize(unit)}"
            st = _State(name, inst.description or name, "histogram", self._bounds(inst.name))
        with self._lock:
            st = self._states.setdefault(st.name, st)
        inst.state = st
        return st

    def _bounds(self, name: str) -> list[float]:
        for key, bounds in self.overrides:
            if key in name:
                return bounds
        base = name[len("temporal_"):] if name.startswith("temporal_") else name
        return buckets.default_for(base, self.seconds)

    def update(self, inst: Instrument, value: int | float, attrs: Attributes) -> None:
        st: _State = inst.state or self._state(inst)
        if inst.values == DURATION and self.seconds:
            value = value / 1000
        key = attrs.key
        with self._lock:
            if st.type == "counter":
                st.series[key] = st.series.get(key, 0) + value
            elif st.type == "gauge":
                st.series[key] = value
            else:
                h = st.series.get(key)
                if h is None:
                    h = st.series[key] = _Hist(len(st.bounds))
                h.counts[bisect.bisect_left(st.bounds, value)] += 1
                h.sum += value
                h.count += 1
            if key not in self._attr_labels:
                self._attr_labels[key] = attrs.labels()

    # -- scrape ----------------------------------------------------------------------------

    def collect(self) -> list[Family]:
        """Every metric as (name, type, help, [(sample name, labels, value)])."""
        with self._lock:
            snapshot = []
            for st in self._states.values():
                series = {
                    k: (v if not isinstance(v, _Hist) else (list(v.counts), v.sum, v.count))
                    for k, v in st.series.items()
                }
                snapshot.append((st, series))
            labels_of = dict(self._attr_labels)
        out: list[Family] = []
        for st, series in snapshot:
            samples: list[Sample] = []
            for key, v in series.items():
                labels = labels_of[key]
                if st.type != "histogram":
                    samples.append((st.name, labels, v))  # type: ignore[arg-type]
                    continue
                counts, total, count = v
                running = 0
                for bound, n in zip(st.bounds, counts, strict=False):
                    running += n
                    samples.append((st.name + "_bucket", {**labels, "le": number(bound)}, running))
                samples.append((st.name + "_bucket", {**labels, "le": "+Inf"}, count))
                samples.append((st.name + "_sum", labels, total))
                samples.append((st.name + "_count", labels, count))
            out.append((st.name, st.type, st.help, samples))
        out.extend(engine.families(sink=self))
        return out

    def exposition(self) -> bytes:
        lines: list[str] = []
        for name, type_, help_, samples in self.collect():
            lines.append(f"# HELP {name} {_escape_help(help_)}")
            lines.append(f"# TYPE {name} {type_}")
            for sample_name, labels, value in samples:
                if labels:
                    body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                    lines.append(f"{sample_name}{{{body}}} {number(value)}")
                else:
                    lines.append(f"{sample_name} {number(value)}")
        return ("\n".join(lines) + "\n").encode()

    def close(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"Invalid Prometheus address: {address!r} (expected host:port)")
    return host.strip("[]") or "0.0.0.0", int(port)


def number(v: float | int) -> str:
    """A value as Core's exporter prints it: integers without a fraction."""
    if isinstance(v, int):
        return str(int(v))
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def _escape_help(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _serve(host: str, port: int, sink: PrometheusSink) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
            body = sink.exposition()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server_class = _Server6 if ":" in host else _Server  # an IPv6 literal, such as [::1]:9090
    server = server_class((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="dbosify-prometheus", daemon=True).start()
    return server
