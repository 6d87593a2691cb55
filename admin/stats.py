"""The panel's aggregate queries over JobLog: the day's and the week's from the hourly counts
(db.job_log_hours), the last minutes' one grouped query on an index (JobLog has indexes on
(status, created_at), (created_at) and (error_code, created_at)).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import SQL, PostgresqlDatabase, fn

from core.errors import CODES
from db.database import database
from db.job_log_hours import totals, window_start
from db.models import utcnow
from db.models.jobs import JobLog

FAILED = ("failed", "retrying")  # attempts that ended with an error


@dataclass(frozen=True)
class Hour:
    start: datetime
    succeeded: int
    failed: int


@dataclass(frozen=True)
class Day:
    """The last 24 hours of attempts: counts by status and an hourly series, oldest hour first."""

    statuses: dict[str, int]
    hours: list[Hour]


def last_day(now: datetime | None = None) -> Day:
    """The 24 hourly buckets that end now, from the hourly counts (db.job_log_hours)."""
    now = now or utcnow()
    first = window_start(timedelta(hours=24), now)
    statuses = dict.fromkeys(JobLog.STATUSES, 0)
    per_hour: dict[datetime, list[int]] = {}
    for (hour, status), total in totals(first, ("hour", "status")).items():
        statuses[status] = statuses.get(status, 0) + total.attempts
        counts = per_hour.setdefault(hour, [0, 0])
        if status == "success":
            counts[0] += total.attempts
        elif status in FAILED:
            counts[1] += total.attempts
    hours = []
    for n in range(24):
        start = first + timedelta(hours=n)
        ok, failed = per_hour.get(start, (0, 0))
        hours.append(Hour(start, ok, failed))
    return Day(statuses, hours)


def _minute(column):
    """The minute of `column` as text, 'YYYY-MM-DD HH:MM' (not coerced: peewee would parse it
    back into a datetime through the column's field)."""
    if isinstance(database.obj, PostgresqlDatabase):
        return fn.to_char(fn.date_trunc("minute", column), "YYYY-MM-DD HH24:MI").coerce(False)
    return fn.substr(column, 1, 16).coerce(False)


RECENT_MINUTES, RECENT_STEP = 120, 5
FRESH_MINUTES = 30  # in minute bars while nothing older happened


def recent(now: datetime | None = None, minutes: int = RECENT_MINUTES, step: int = RECENT_STEP) -> list[Hour]:
    """The last `minutes` in buckets of `step` minutes, oldest first (one grouped query): the
    dashboard's chart when all of the day's activity is that recent, so it is not one bar."""
    now = now or utcnow()
    end = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % step) + timedelta(minutes=step)
    first = end - timedelta(minutes=minutes)
    minute = _minute(JobLog.created_at)
    rows = (JobLog.select(minute.alias("minute"), JobLog.status, fn.COUNT(SQL("*")))
            .where(JobLog.status.in_(("success",) + FAILED) & (JobLog.created_at >= first))
            .group_by(minute, JobLog.status).tuples())
    buckets = [[0, 0] for _ in range(minutes // step)]
    for text, status, n in rows:
        index = int((datetime.strptime(text, "%Y-%m-%d %H:%M") - first).total_seconds() // (step * 60))
        if 0 <= index < len(buckets):
            buckets[index][0 if status == "success" else 1] += n
    return [Hour(first + timedelta(minutes=i * step), ok, failed) for i, (ok, failed) in enumerate(buckets)]


def chart(day: Day, now: datetime | None = None) -> tuple[list[Hour], str]:
    """The dashboard's bars and what one bar is: the 24 hours; the last two hours in 5-minute
    bars when nothing older happened; the last half hour in minutes when nothing older than
    that happened (a fresh fleet's first minutes are otherwise one bar)."""
    if any(h.succeeded or h.failed for h in day.hours[:-RECENT_MINUTES // 60]):
        return day.hours, "hour"
    bars = recent(now)
    if any(h.succeeded or h.failed for h in bars[:-FRESH_MINUTES // RECENT_STEP]):
        return bars, f"{RECENT_STEP} minutes"
    return recent(now, FRESH_MINUTES, 1), "minute"


def error_rate(minutes: int = 15) -> dict:
    since = utcnow() - timedelta(minutes=minutes)
    counts = dict(JobLog.select(JobLog.status, fn.COUNT(SQL("*")))
                  .where((JobLog.created_at >= since) & JobLog.status.in_(("success",) + FAILED))
                  .group_by(JobLog.status).tuples())
    failed = sum(counts.get(s, 0) for s in FAILED)
    total = failed + counts.get("success", 0)
    return {"minutes": minutes, "attempts": total, "failed": failed, "rate": round(failed / total, 4) if total else 0.0}


def error_code_counts(now: datetime | None = None) -> dict[str, tuple[int, int, int]]:
    """JobLog rows per error code over the last 1 h, 24 h and 7 d."""
    now = now or utcnow()
    windows = [totals(window_start(span, now), ("error_code",), codes=CODES, durations=False)
               for span in (timedelta(hours=1), timedelta(days=1), timedelta(days=7))]
    return {code: tuple(window[(code,)].attempts if (code,) in window else 0 for window in windows)
            for (code,) in windows[-1]}


def distinct_values(model, column: str) -> list[str]:
    """Distinct values of an indexed column by hopping along the index (a recursive CTE),
    so it costs one lookup a value instead of a scan of the table."""
    table = model._meta.table_name
    sql = (f'WITH RECURSIVE v(x) AS (SELECT MIN("{column}") FROM "{table}" '
           f'UNION ALL SELECT (SELECT MIN("{column}") FROM "{table}" WHERE "{column}" > v.x) FROM v WHERE v.x IS NOT NULL) '
           'SELECT x FROM v WHERE x IS NOT NULL')
    return [row[0] for row in database.execute_sql(sql).fetchall()]
