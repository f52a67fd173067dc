"""A schedule's spec: when its actions are due, as Temporal computes it.

`compile_spec` turns a `ScheduleSpec` (structured calendars, cron strings, intervals, skip
calendars, start and end times, jitter, a time zone) into a `CompiledSpec` whose `next_after`
gives the next nominal time, and `jittered` the actual time an action of that nominal time is
taken. Cron strings are parsed here (`cron.parse_cron`) into the same calendars and intervals,
which is also how describe returns them.

Calendars are matched on the wall clock of the spec's time zone (UTC by default), to the
second, in the years 2000-2100: every field must match (day of month and day of week included,
unlike cron's either-or). As on Temporal, a wall-clock time that a DST change skips does not
fire that day, and one that occurs twice fires at both instants. Start and end times are
inclusive; jitter is fixed per schedule and nominal time, and less than the gap to the next
nominal time.
"""

from __future__ import annotations

import calendar as _calendar
import hashlib
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporalio.api.schedule.v1 import message_pb2 as sched

from dbosify._engine import cron
from dbosify._engine.errors import ServiceError

_UTC = timezone.utc
MIN_YEAR, MAX_YEAR = 2000, 2100  # the years a calendar can match, as on Temporal


def _values(ranges: Sequence[sched.Range], lo: int, hi: int, field: str) -> tuple[int, ...]:
    """The values a field's ranges match (none when it has no range, as on Temporal)."""
    out: set[int] = set()
    for r in ranges:
        end = r.end if r.end >= r.start else r.start
        step = r.step if r.step > 0 else 1
        if r.start < lo or end > hi:
            raise ServiceError.invalid(
                f"Invalid schedule spec: invalid calendar spec: {field} {r.start}-{end} is not in range [{lo}-{hi}]"
            )
        out.update(range(r.start, end + 1, step))
    return tuple(sorted(out))


@dataclass(frozen=True)
class Calendar:
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    years: tuple[int, ...] | None  # None: every year
    weekdays: frozenset[int]  # 0 = Sunday

    @classmethod
    def of(cls, c: sched.StructuredCalendarSpec) -> Calendar:
        """Every field must match; a field without ranges matches nothing, but for the year,
        where it means every year."""
        return cls(
            seconds=_values(c.second, 0, 59, "Second"),
            minutes=_values(c.minute, 0, 59, "Minute"),
            hours=_values(c.hour, 0, 23, "Hour"),
            days=_values(c.day_of_month, 1, 31, "DayOfMonth"),
            months=_values(c.month, 1, 12, "Month"),
            years=_values(c.year, MIN_YEAR, MAX_YEAR, "Year") if c.year else None,
            weekdays=frozenset(d % 7 for d in _values(c.day_of_week, 0, 7, "DayOfWeek")),
        )

    def matches(self, local: datetime) -> bool:
        return (
            local.second in self.seconds and local.minute in self.minutes and local.hour in self.hours
            and local.day in self.days and local.month in self.months
            and (self.years is None or local.year in self.years)
            and (local.isoweekday() % 7) in self.weekdays
        )

    def next_after(self, t: float, tz: tzinfo) -> float | None:
        """The first time strictly after ``t`` whose wall clock in ``tz`` matches."""
        start = datetime.fromtimestamp(int(t) + 1, tz).replace(tzinfo=None)  # naive wall clock
        years = self.years if self.years is not None else range(max(start.year, MIN_YEAR), MAX_YEAR + 1)
        for year in years:
            if year < start.year:
                continue
            for month in self.months:
                if (year, month) < (start.year, start.month):
                    continue
                for day in self.days:
                    if day > _calendar.monthrange(year, month)[1]:
                        break
                    if (year, month, day) < (start.year, start.month, start.day):
                        continue
                    if (_calendar.weekday(year, month, day) + 1) % 7 not in self.weekdays:
                        continue
                    found = self._in_day(year, month, day, start, t, tz)
                    if found is not None:
                        return found
        return None

    def _in_day(self, y: int, mo: int, d: int, start: datetime, t: float, tz: tzinfo) -> float | None:
        # On the day the search starts, begin a few hours before its wall-clock time (a DST
        # change can map an earlier wall time to a later instant); on later days, at midnight.
        floor = start - timedelta(hours=3)
        lb = (floor.hour, floor.minute, floor.second) if floor.date() == datetime(y, mo, d).date() else (0, 0, 0)
        for hour in self.hours[bisect_left(self.hours, lb[0]):]:
            mlo = lb[1] if hour == lb[0] else 0
            for minute in self.minutes[bisect_left(self.minutes, mlo):]:
                slo = lb[2] if (hour, minute) == lb[:2] else 0
                for second in self.seconds[bisect_left(self.seconds, slo):]:
                    for ts in _instants(datetime(y, mo, d, hour, minute, second), tz):
                        if ts > t:
                            return ts
        return None


def _instants(wall: datetime, tz: tzinfo) -> tuple[float, ...]:
    """The instants at which the wall clock of ``tz`` shows ``wall``: none in a DST gap (the
    time is skipped), two in a fold (it fires at both), else one."""
    first = wall.replace(tzinfo=tz, fold=0).timestamp()
    second = wall.replace(tzinfo=tz, fold=1).timestamp()
    if datetime.fromtimestamp(first, tz).replace(tzinfo=None) != wall:
        return ()
    return (first,) if first == second else tuple(sorted((first, second)))


@dataclass(frozen=True)
class Interval:
    every: float
    offset: float

    def next_after(self, t: float) -> float:
        n = (t - self.offset) // self.every + 1
        return n * self.every + self.offset


def _seconds(d: object) -> float:
    return float(d.ToNanoseconds()) / 1e9  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CompiledSpec:
    calendars: tuple[Calendar, ...]
    intervals: tuple[Interval, ...]
    skips: tuple[Calendar, ...]
    tz: tzinfo
    start: float | None
    end: float | None
    jitter: float

    def next_after(self, t: float) -> float | None:
        """The next nominal time strictly after ``t`` (None: no more)."""
        if self.start is not None and t < self.start:
            t = self.start - 1e-6  # start_time itself may match
        for _ in range(10_000):  # skips can exclude many candidates in a row
            candidates = [c.next_after(t, self.tz) for c in self.calendars]
            candidates += [i.next_after(t) for i in self.intervals]
            nxt = min((c for c in candidates if c is not None), default=None)
            if nxt is None or (self.end is not None and nxt > self.end):
                return None
            local = datetime.fromtimestamp(nxt, self.tz).replace(tzinfo=None)
            if not any(s.matches(local) for s in self.skips):
                return nxt
            t = nxt
        return None

    def times(self, after: float, count: int) -> list[float]:
        out: list[float] = []
        t: float | None = after
        while len(out) < count and t is not None:
            t = self.next_after(t)
            if t is not None:
                out.append(t)
        return out

    def jittered(self, schedule_id: str, nominal: float) -> float:
        """The actual time of an action: nominal plus a jitter fixed by the schedule and the
        nominal time, at most the spec's jitter and less than the gap to the next nominal time."""
        if self.jitter <= 0:
            return nominal
        nxt = self.next_after(nominal)
        limit = self.jitter if nxt is None else min(self.jitter, nxt - nominal)
        digest = hashlib.sha256(f"{schedule_id}\x00{nominal:.6f}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        return nominal + fraction * limit


def _zone(name: str) -> tzinfo:
    if not name or name == "UTC":
        return _UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ServiceError.invalid(f"Invalid schedule spec: unknown time zone {name}") from None


def normalized(spec: sched.ScheduleSpec) -> sched.ScheduleSpec:
    """The spec as the server keeps and returns it: cron strings become calendars and intervals."""
    out = sched.ScheduleSpec()
    out.CopyFrom(spec)
    del out.cron_string[:]
    for text in spec.cron_string:
        parsed = cron.parse_cron(text)
        out.structured_calendar.extend(parsed.calendars)
        out.interval.extend(parsed.intervals)
        if parsed.timezone:
            if out.timezone_name and out.timezone_name != parsed.timezone:
                raise ServiceError.invalid("Invalid schedule spec: conflicting timezone names")
            out.timezone_name = parsed.timezone
    return out


def compile_spec(spec: sched.ScheduleSpec) -> CompiledSpec:
    spec = normalized(spec)
    if spec.calendar or spec.exclude_calendar:
        raise ServiceError.invalid(
            "Invalid schedule spec: string calendars are not supported by dbosify; use structured calendars"
        )
    intervals = []
    for i in spec.interval:
        every, phase = _seconds(i.interval), _seconds(i.phase)
        if every < 1:
            raise ServiceError.invalid("Invalid schedule spec: interval is too small")
        if phase < 0 or phase >= every:
            raise ServiceError.invalid("Invalid schedule spec: phase cannot be greater than Interval")
        intervals.append(Interval(every, phase))
    return CompiledSpec(
        calendars=tuple(Calendar.of(c) for c in spec.structured_calendar),
        intervals=tuple(intervals),
        skips=tuple(Calendar.of(c) for c in spec.exclude_structured_calendar),
        tz=_zone(spec.timezone_name),
        start=spec.start_time.ToNanoseconds() / 1e9 if spec.HasField("start_time") else None,
        end=spec.end_time.ToNanoseconds() / 1e9 if spec.HasField("end_time") else None,
        jitter=_seconds(spec.jitter) if spec.HasField("jitter") else 0.0,
    )
