"""Schedule specs: cron strings, calendars, intervals, time zones and DST, jitter (no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from temporalio.api.schedule.v1 import message_pb2 as sched

from dbosify._engine.cron import parse_cron
from dbosify._engine.errors import ServiceError
from dbosify._engine.schedule_spec import compile_spec, normalized

UTC = timezone.utc
NY = ZoneInfo("America/New_York")


def ts(*args: int, tz: timezone | ZoneInfo = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


def times(spec: sched.ScheduleSpec, after: float, n: int) -> list[datetime]:
    return [datetime.fromtimestamp(t, UTC) for t in compile_spec(spec).times(after, n)]


def R(start: int, end: int = 0, step: int = 0) -> sched.Range:
    return sched.Range(start=start, end=end, step=step)


def cal(**fields: list[sched.Range]) -> sched.StructuredCalendarSpec:
    base = {"second": [R(0)], "minute": [R(0)], "hour": [R(0)], "day_of_month": [R(1, 31)],
            "month": [R(1, 12)], "day_of_week": [R(0, 6)]}
    base.update(fields)
    return sched.StructuredCalendarSpec(**base)  # type: ignore[arg-type]


def test_cron_becomes_calendar_as_temporal_keeps_it() -> None:
    c = parse_cron("0 12 * * MON").calendars[0]
    assert [(r.start, r.end, r.step) for r in c.second] == [(0, 0, 0)]
    assert [(r.start, r.end, r.step) for r in c.hour] == [(12, 0, 0)]
    assert [(r.start, r.end, r.step) for r in c.day_of_month] == [(1, 31, 0)]
    assert [(r.start, r.end, r.step) for r in c.day_of_week] == [(1, 0, 0)]
    assert not c.year
    assert [(r.start, r.end, r.step) for r in parse_cron("*/15 9-17 * JAN-mar fri,sa").calendars[0].minute] == [
        (0, 59, 15)]
    seven = parse_cron("30 0 12 1 * * 2030 # yearly-ish").calendars[0]
    assert seven.comment == "yearly-ish" and seven.second[0].start == 30 and seven.year[0].start == 2030
    every = parse_cron("@every 90m/15m").intervals[0]
    assert every.interval.ToSeconds() == 5400 and every.phase.ToSeconds() == 900
    assert normalized(sched.ScheduleSpec(cron_string=["CRON_TZ=Europe/Paris @daily"])).timezone_name == "Europe/Paris"


@pytest.mark.parametrize("bad", ["* * *", "61 * * * *", "5-1 * * * *", "*/0 * * * *", "1/2/3 * * * *", "@often"])
def test_bad_cron_strings_are_invalid_argument(bad: str) -> None:
    with pytest.raises(ServiceError) as err:
        compile_spec(sched.ScheduleSpec(cron_string=[bad]))
    assert err.value.status == 3 and "Invalid schedule spec" in err.value.message


def test_weekday_and_day_of_month_must_both_match() -> None:
    # Friday the 13th, as Temporal reads calendars (cron would take either).
    spec = sched.ScheduleSpec(structured_calendar=[cal(day_of_month=[R(13)], day_of_week=[R(5)])])
    got = times(spec, ts(2026, 1, 1), 3)
    assert [(d.year, d.month, d.day) for d in got] == [(2026, 2, 13), (2026, 3, 13), (2026, 11, 13)]
    assert all(d.weekday() == 4 for d in got)


def test_calendar_defaults_and_empty_fields() -> None:
    daily = times(sched.ScheduleSpec(structured_calendar=[cal()]), ts(2026, 5, 5, 13), 3)
    assert daily == [datetime(2026, 5, 6, tzinfo=UTC) + timedelta(days=i) for i in range(3)]
    empty_hours = sched.ScheduleSpec(structured_calendar=[cal(hour=[])])
    assert times(empty_hours, ts(2026, 5, 5), 1) == []  # an empty field matches nothing


def test_interval_with_offset_start_and_end_inclusive() -> None:
    iv = sched.IntervalSpec()
    iv.interval.FromSeconds(600)
    iv.phase.FromSeconds(120)
    spec = sched.ScheduleSpec(interval=[iv])
    spec.start_time.FromSeconds(int(ts(2026, 1, 1, 0, 12)))
    spec.end_time.FromSeconds(int(ts(2026, 1, 1, 0, 32)))
    got = times(spec, ts(2025, 1, 1), 10)
    assert [(d.hour, d.minute) for d in got] == [(0, 12), (0, 22), (0, 32)]


def test_skip_calendar() -> None:
    spec = sched.ScheduleSpec(structured_calendar=[cal()], exclude_structured_calendar=[cal(day_of_week=[R(0), R(6)])])
    got = times(spec, ts(2026, 11, 27, 12), 3)  # a Friday
    assert [d.strftime("%a") for d in got] == ["Mon", "Tue", "Wed"]


def test_dst_gap_is_skipped_and_fold_fires_twice_in_named_zone() -> None:
    spec = sched.ScheduleSpec(structured_calendar=[cal(hour=[R(2)], minute=[R(30)])], timezone_name="America/New_York")
    spring = [datetime.fromtimestamp(t, NY) for t in compile_spec(spec).times(ts(2026, 3, 6, tz=NY), 3)]
    assert [(d.month, d.day, d.hour, d.minute) for d in spring] == [(3, 6, 2, 30), (3, 7, 2, 30), (3, 9, 2, 30)]
    spec = sched.ScheduleSpec(structured_calendar=[cal(hour=[R(1)], minute=[R(30)])], timezone_name="America/New_York")
    fall = compile_spec(spec).times(ts(2026, 10, 31, 12, tz=NY), 3)
    assert [datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M") for t in fall] == [
        "11-01 05:30", "11-01 06:30", "11-02 06:30"]  # 01:30 EDT, 01:30 EST, then EST


def test_jitter_is_stable_and_bounded_by_the_next_time() -> None:
    iv = sched.IntervalSpec()
    iv.interval.FromSeconds(60)
    spec = sched.ScheduleSpec(interval=[iv])
    spec.jitter.FromSeconds(3600)  # larger than the interval: capped at 60 s
    c = compile_spec(spec)
    nominal = ts(2026, 1, 1, 10)
    a, b = c.jittered("s1", nominal), c.jittered("s1", nominal)
    assert a == b and nominal <= a < nominal + 60
    assert len({c.jittered(f"s{i}", nominal) for i in range(20)}) > 10


def test_bad_specs() -> None:
    with pytest.raises(ServiceError, match="Hour 25-25 is not in range"):
        compile_spec(sched.ScheduleSpec(structured_calendar=[cal(hour=[R(25)])]))
    with pytest.raises(ServiceError, match="unknown time zone Mars/Olympus"):
        compile_spec(sched.ScheduleSpec(structured_calendar=[cal()], timezone_name="Mars/Olympus"))
    iv = sched.IntervalSpec()
    iv.interval.FromMilliseconds(10)
    with pytest.raises(ServiceError, match="interval is too small"):
        compile_spec(sched.ScheduleSpec(interval=[iv]))
