"""Cron strings, as Temporal schedules (and ``cron_schedule``) accept them.

`parse_cron` turns one string into the structured calendars and intervals it stands for:

- five fields ``minute hour day-of-month month day-of-week``, six with a year last, seven
  with seconds first and a year last (as Temporal reads them); each field ``*``, a number or a
  name (a month's first three or more letters, a weekday's first two or more), ``a-b``,
  ``*/n``, ``a/n`` (a to the field's end), ``a-b/n``, and comma-separated lists of those; day
  of week 0-7 (0 and 7 are Sunday);
- ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``),
  ``@hourly``, and ``@every <duration>[/<offset>]`` (an interval, e.g. ``@every 90m/15m``);
- an optional ``CRON_TZ=<zone>`` or ``TZ=<zone>`` prefix, and a trailing ``# comment``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from temporalio.api.schedule.v1 import message_pb2 as sched

from dbosify._engine.errors import ServiceError

_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")
_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_PREDEFINED = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
_Field = tuple[str, int, int, tuple[str, ...], int]  # name, low, high, names (from low), min prefix
_SECOND: _Field = ("second", 0, 59, (), 0)
_FIELDS: tuple[_Field, ...] = (
    ("minute", 0, 59, (), 0), ("hour", 0, 23, (), 0), ("day_of_month", 1, 31, (), 0),
    ("month", 1, 12, _MONTHS, 3), ("day_of_week", 0, 7, _DAYS, 2),
)
_YEAR: _Field = ("year", 2000, 2100, (), 0)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass
class Parsed:
    calendars: list[sched.StructuredCalendarSpec] = field(default_factory=list)
    intervals: list[sched.IntervalSpec] = field(default_factory=list)
    timezone: str = ""


def _bad(text: str, why: str) -> ServiceError:
    return ServiceError.invalid(f"Invalid schedule spec: invalid cron string {text!r}: {why}")


def _number(token: str, f: _Field, text: str) -> int:
    name, lo, _, names, prefix = f
    low = token.lower()
    if names and len(low) >= prefix:
        for i, full in enumerate(names):
            if full.startswith(low):
                return lo + i
    if not token.isdigit():
        raise _bad(text, f"{name} {token!r} is not a number")
    return int(token)


def _field(spec: str, f: _Field, text: str) -> list[sched.Range]:
    name, lo, hi, _, _ = f
    out: list[sched.Range] = []
    for part in spec.split(","):
        if part.count("/") > 1:
            raise _bad(text, f"{name} {part!r} has too many slashes")
        base, slash, step_text = part.partition("/")
        if slash and not step_text:
            raise _bad(text, f"{name} {part!r} is missing step value")
        step = _number(step_text, ("step", 0, 0, (), 0), text) if step_text else 1
        if step <= 0:
            raise _bad(text, f"{name} {part!r} has invalid Step")
        if base == "*":
            start, end = lo, (6 if name == "day_of_week" else hi)
        elif "-" in base:
            a, b = base.split("-", 1)
            start, end = _number(a, f, text), _number(b, f, text)
        else:
            start = _number(base, f, text)
            end = hi if slash else start
        if not lo <= start <= hi:
            raise _bad(text, f"{name} {part!r} is not in range [{lo}-{hi}]")
        if end < start or end > hi:
            raise _bad(text, f"{name} {part!r}: End is before Start or not in range")
        if name == "day_of_week" and end == 7:  # 7 is Sunday again
            if start == 7:
                start = end = 0
            else:
                out.append(sched.Range(start=0))
                end = 6
        # Kept as Temporal keeps them: no end when it equals the start, no step when it is 1.
        out.append(sched.Range(start=start, end=end if end != start else 0, step=step if step != 1 else 0))
    return out


def _duration(text: str, part: str) -> float:
    pos, total = 0, 0.0
    for m in _DURATION.finditer(part):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(part) or not part:
        raise _bad(text, f"{part!r} is not a duration")
    return total


def parse_cron(text: str) -> Parsed:
    out = Parsed()
    body = text.split("#", 1)[0].strip()
    comment = text.split("#", 1)[1].strip() if "#" in text else ""
    m = re.match(r"(?:CRON_TZ|TZ)=(\S+)\s+(.*)$", body)
    if m:
        out.timezone, body = m.group(1), m.group(2).strip()
    if body.startswith("@every"):
        every_text, _, offset_text = body[len("@every"):].strip().partition("/")
        interval = sched.IntervalSpec()
        interval.interval.FromNanoseconds(int(round(_duration(text, every_text.strip()) * 1e9)))
        if offset_text:
            interval.phase.FromNanoseconds(int(round(_duration(text, offset_text.strip()) * 1e9)))
        out.intervals.append(interval)
        return out
    if body.startswith("@"):
        if body not in _PREDEFINED:
            raise _bad(text, f"unknown {body!r}")
        body = _PREDEFINED[body]
    parts = body.split()
    if len(parts) not in (5, 6, 7):
        raise _bad(text, "CronString does not have 5-7 fields")
    fields = [*((_SECOND,) if len(parts) == 7 else ()), *_FIELDS, *((_YEAR,) if len(parts) >= 6 else ())]
    cal = sched.StructuredCalendarSpec(comment=comment)
    if len(parts) < 7:
        cal.second.append(sched.Range(start=0))
    for f, spec in zip(fields, parts, strict=True):
        if f[0] == "year" and spec == "*":
            continue
        getattr(cal, f[0]).extend(_field(spec, f, text))
    out.calendars.append(cal)
    return out
