"""Counts of JobLog rows over a window, from the hourly counts triggers keep (migration 0015):
whole hours from job_log_hours (and, on PostgreSQL, the changes not folded into it yet), the
part of an hour before the window's first whole hour from job_log itself. Exact for any window,
and never more than an hour of job_log rows read.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import SQL, PostgresqlDatabase, Value, fn

from db.database import database
from db.models.jobs import JobLog, JobLogHour, JobLogHourDelta

FOLD = """
WITH moved AS (DELETE FROM job_log_hour_deltas RETURNING *)
INSERT INTO job_log_hours AS kept (hour, job_class, status, error_code, attempts, timed, seconds)
SELECT hour, job_class, status, error_code, sum(attempts), sum(timed), sum(seconds)
FROM moved GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (hour, job_class, status, error_code) DO UPDATE
SET attempts = kept.attempts + excluded.attempts, timed = kept.timed + excluded.timed,
    seconds = kept.seconds + excluded.seconds
"""
FOLD_LOCK = 0x464C4854  # pg_try_advisory_xact_lock's key: one fold at a time, the others skip


@dataclass
class Total:
    attempts: int = 0
    timed: int = 0  # attempts with a duration
    seconds: float = 0.0

    @property
    def average(self) -> float | None:
        return self.seconds / self.timed if self.timed else None


def _postgres() -> bool:
    return isinstance(database.obj, PostgresqlDatabase)


def next_hour(moment: datetime) -> datetime:
    hour = moment.replace(minute=0, second=0, microsecond=0)
    return hour if hour == moment else hour + timedelta(hours=1)


def window_start(span: timedelta, now: datetime) -> datetime:
    """Where a window of `span` that ends `now` starts. One of over an hour is read in whole
    hours, the current one included (24 h: the 24 hourly buckets that end now, as the dashboard's
    chart), so it reads no job_log row however many there are; an hour or less is exact."""
    if span <= timedelta(hours=1):
        return now - span
    return next_hour(now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1) - span)


def totals(since: datetime, by: Sequence[str], *, codes: Collection[str] | None = None,
           durations: bool = True) -> dict[tuple, Total]:
    """Attempts created since `since`, grouped by the columns named in `by` (hour, job_class,
    status, error_code; an error code of None for rows without one); only those with one of `codes` when given. With "hour" in `by`,
    `since` must be the start of an hour. `durations=False` leaves `timed` and `seconds` out of
    the part read from job_log, which can then come from an index alone."""
    first_hour = next_hour(since)
    if "hour" in by and first_hour != since:
        raise ValueError("counts by hour start at an hour")
    found: dict[tuple, Total] = {}

    def add(rows) -> None:
        for *key, attempts, timed, seconds in rows:
            key = tuple(None if c == "error_code" and v == "" else v for c, v in zip(by, key))
            total = found.setdefault(key, Total())
            total.attempts += int(attempts)
            total.timed += int(timed or 0)
            total.seconds += float(seconds or 0)

    for model in (JobLogHour, JobLogHourDelta) if _postgres() else (JobLogHour,):
        columns = [getattr(model, c) for c in by]
        where = model.hour >= first_hour
        if codes is not None:
            where &= model.error_code.in_(list(codes))
        add(model.select(*columns, fn.SUM(model.attempts), fn.SUM(model.timed), fn.SUM(model.seconds))
            .where(where).group_by(*columns).tuples())
    if since < first_hour:
        columns = [getattr(JobLog, c) for c in by]
        where = (JobLog.created_at >= since) & (JobLog.created_at < first_hour)
        if codes is not None:
            where &= JobLog.error_code.in_(list(codes))  # by the (error_code, created_at) index
        measured = ((fn.COUNT(JobLog.duration_seconds), fn.SUM(JobLog.duration_seconds)) if durations
                    else (Value(0), Value(0)))
        add(JobLog.select(*columns, fn.COUNT(SQL("*")), *measured).where(where).group_by(*columns).tuples())
    return {key: total for key, total in found.items() if total.attempts}


def fold() -> int:
    """Move the PostgreSQL triggers' pending changes into job_log_hours (one process at a time);
    the number of hourly rows touched. Nothing to do on SQLite, whose triggers count in place."""
    if not _postgres():
        return 0
    with database.atomic():
        if not database.execute_sql("SELECT pg_try_advisory_xact_lock(%s)", (FOLD_LOCK,)).fetchone()[0]:
            return 0
        touched = database.execute_sql(FOLD).rowcount
        if touched:  # hours whose rows were all deleted (the cleanup) go too
            database.execute_sql("DELETE FROM job_log_hours WHERE attempts = 0 AND timed = 0")
    return touched
