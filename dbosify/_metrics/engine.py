"""The engine's own metrics (what a Temporal server would show an operator), process-wide.

Named ``dbosify_*`` (they are not Core's): database transactions, statements and their
latency, claim latency, takeovers of dead workers, fenced writes refused, and each watched
task queue's backlog (count and age of the oldest ready task). Updates are in-process
increments; the backlog is read from the database only when an exporter collects (a scrape,
or an OpenTelemetry export), never on the task path. Every runtime's exporter includes them.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

logger = logging.getLogger("dbosify")
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

# Latency buckets, in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Sample = tuple[str, dict[str, str], float]  # (sample name, labels, value)
Family = tuple[str, str, str, list[Sample]]  # (name, "counter"|"gauge"|"histogram", help, samples)


class Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def samples(self, name: str, labels: dict[str, str]) -> list[Sample]:
        out: list[Sample] = []
        total = 0
        for bound, n in zip(BUCKETS, self.counts, strict=False):
            total += n
            out.append((name + "_bucket", {**labels, "le": _le(bound)}, float(total)))
        out.append((name + "_bucket", {**labels, "le": "+Inf"}, float(self.count)))
        out.append((name + "_sum", dict(labels), self.sum))
        out.append((name + "_count", dict(labels), float(self.count)))
        return out


def _le(bound: float) -> str:
    return repr(bound)


class _Stats:
    """The counters (plain attributes: an increment is one bytecode-level add)."""

    def __init__(self) -> None:
        self.statements = 0
        self.transactions = 0
        self.tx_latency = Histogram()
        self.claims: dict[str, Histogram] = {"workflow": Histogram(), "activity": Histogram()}
        self.takeovers = 0
        self.fenced = 0


STATS = _Stats()


def statement() -> None:
    STATS.statements += 1


def transaction(seconds: float) -> None:
    STATS.transactions += 1
    STATS.tx_latency.observe(seconds)


def takeover() -> None:
    STATS.takeovers += 1


def fenced(err: E) -> E:
    """A write refused by fencing (returns ``err``, the exception to raise)."""
    STATS.fenced += 1
    return err


def timed_transaction(run: Callable[[], T]) -> T:
    """``run()`` (one transaction, with its retries), counted with its latency."""
    t0 = time.perf_counter()
    try:
        return run()
    finally:
        transaction(time.perf_counter() - t0)


async def timed_claim(task_type: str, claim: Awaitable[T]) -> T:
    """A claim's transaction, awaited, with its latency recorded as ``task_type``'s."""
    t0 = time.perf_counter()
    try:
        return await claim
    finally:
        STATS.claims[task_type].observe(time.perf_counter() - t0)


# -- backlog --------------------------------------------------------------------------------

BacklogProbe = Callable[[], list[tuple[dict[str, str], int, float]]]
_probes: dict[tuple[Any, ...], weakref.ReferenceType[Any]] = {}
_names: dict[tuple[Any, ...], str] = {}
_probes_lock = threading.Lock()
# A queue whose backlog could not be read (the database unreachable: the read waits out the
# store's reconnect budget) is left out of the scrapes of the next seconds.
BACKLOG_RETRY_SECONDS = 30.0
_failed_until: dict[tuple[Any, ...], float] = {}


def watch_backlog(key: tuple[Any, ...], owner: Any, probe_name: str, sink: Any = None) -> None:
    """Report a task queue's backlog through ``getattr(owner, probe_name)()`` while ``owner``
    lives, to ``sink``'s exporter only (the runtime of the worker it watches): one probe per
    ``key`` and sink, so workers of one queue and runtime share its backlog."""
    with _probes_lock:
        _probes[(id(sink), *key)] = weakref.ref(owner)
        _names[(id(sink), *key)] = probe_name


def _backlog(sink: Any = None) -> list[tuple[dict[str, str], int, float]]:
    with _probes_lock:
        live = [(k, r(), _names[k]) for k, r in list(_probes.items()) if k[0] == id(sink)]
        for k, owner, _ in live:
            if owner is None:
                _probes.pop(k, None)
                _names.pop(k, None)
    out: list[tuple[dict[str, str], int, float]] = []
    now = time.monotonic()
    for key, owner, name in live:
        if owner is None or _failed_until.get(key, 0.0) > now:
            continue
        try:
            out.extend(getattr(owner, name)())
        except Exception as err:  # a scrape must not fail for one queue, nor wait on it again soon
            _failed_until[key] = time.monotonic() + BACKLOG_RETRY_SECONDS
            logger.debug("dbosify: backlog of a task queue could not be read: %s", err)
        else:
            _failed_until.pop(key, None)
    return out


def families(backlog: bool = True, sink: Any = None) -> Iterator[Family]:
    """Every engine metric; ``backlog``: read the watched queues' backlog (a query each)."""
    s = STATS
    yield ("dbosify_db_transactions", "counter", "Database transactions committed (with their retries)",
           [("dbosify_db_transactions", {}, float(s.transactions))])
    yield ("dbosify_db_statements", "counter", "Database statements sent",
           [("dbosify_db_statements", {}, float(s.statements))])
    yield ("dbosify_db_transaction_latency_seconds", "histogram", "Database transaction latency",
           s.tx_latency.samples("dbosify_db_transaction_latency_seconds", {}))
    claim: list[Sample] = []
    for kind, hist in s.claims.items():
        claim.extend(hist.samples("dbosify_claim_latency_seconds", {"task_type": kind}))
    yield ("dbosify_claim_latency_seconds", "histogram", "Latency of a worker's claim of tasks", claim)
    yield ("dbosify_takeovers", "counter", "Dead workers whose runs and attempts were taken over",
           [("dbosify_takeovers", {}, float(s.takeovers))])
    yield ("dbosify_fenced_writes_refused", "counter",
           "Writes refused because another worker claimed the run since (fencing)",
           [("dbosify_fenced_writes_refused", {}, float(s.fenced))])
    counts: list[Sample] = []
    ages: list[Sample] = []
    for labels, count, age in _backlog(sink) if backlog else ():
        counts.append(("dbosify_task_queue_backlog", labels, float(count)))
        ages.append(("dbosify_task_queue_backlog_age_seconds", labels, age))
    yield ("dbosify_task_queue_backlog", "gauge", "Tasks ready and not yet claimed", counts)
    yield ("dbosify_task_queue_backlog_age_seconds", "gauge", "Age of the oldest ready task", ages)
