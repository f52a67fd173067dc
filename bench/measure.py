"""CPU, memory and statistics, read from /proc (Linux) with the standard library only."""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    # after "pid (comm) ": state=0, ..., utime=11, stime=12
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_mb(pid: int) -> float | None:
    """Resident set size in MiB, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pg_backend_pids(dbname: str) -> list[int]:
    """Postgres backend processes serving ``dbname`` on this machine, found by process title.

    A backend's title is ``postgres: <cluster>: <user> <database> <client> <state>``.
    """
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                title = f.read(200)
        except OSError:
            continue
        if title.startswith(b"postgres: ") and f" {dbname} ".encode() in title.replace(b"\0", b" "):
            out.append(int(entry.name))
    return out


class CpuSampler:
    """CPU seconds used by groups of processes between ``start()`` and ``stop()``.

    Each group is a function returning its current pids. They are sampled every
    ``interval`` seconds in a thread, so processes that start inside the window are counted
    from zero, and processes that end inside it keep their last sample (losing at most one
    interval of CPU).
    """

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]], interval: float = 0.2):
        self.groups = groups
        self.interval = interval
        self._base: dict[int, float] = {}
        self._last: dict[str, dict[int, float]] = {g: {} for g in groups}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        for group, pids_of in self.groups.items():
            for pid in pids_of():
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    self._last[group][pid] = cpu

    def start(self) -> None:
        for pids_of in self.groups.values():
            for pid in pids_of():
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    self._base[pid] = cpu
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        return {
            group: sum(cpu - self._base.get(pid, 0.0) for pid, cpu in last.items())
            for group, last in self._last.items()
        }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def load() -> str:
    """The machine's load averages and uptime, as ``uptime`` says them."""
    try:
        with open("/proc/loadavg") as f:
            one, five, fifteen = f.read().split()[:3]
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
    except OSError:
        return "unknown"
    return f"load average {one}, {five}, {fifteen} (1/5/15 min), up {up / 3600:.1f} h, {os.cpu_count()} cores"


def now() -> float:
    return time.monotonic()
