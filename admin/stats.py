"""The panel's aggregate queries over JobLog, each shaped to stay on an index.

JobLog has indexes on (status, created_at) and (error_code, created_at): counts are
range scans of those (no full-table count), whatever the size of the table.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import SQL, Case, fn

from core.errors import CODES
from db.database import database
from db.models import utcnow
from db.models.jobs import JobLog

FAILED = ("failed", "retrying")  # attempts that ended with an error


@dataclass(frozen=True)
class Hour:
    start: datetime
    succeeded: int
    failed: int


def _count(where) -> int:
    return JobLog.select(fn.COUNT(SQL("*"))).where(where).scalar() or 0


def counts_by_status(since: datetime) -> dict[str, int]:
    return {s: _count((JobLog.status == s) & (JobLog.created_at >= since)) for s in JobLog.STATUSES}


def hourly(hours: int = 24, now: datetime | None = None) -> list[Hour]:
    """Succeeded and failed attempts per hour, oldest first, the current hour last."""
    now = now or utcnow()
    current = now.replace(minute=0, second=0, microsecond=0)
    result = []
    for back in range(hours - 1, -1, -1):
        start = current - timedelta(hours=back)
        window = (JobLog.created_at >= start) & (JobLog.created_at < start + timedelta(hours=1))
        result.append(Hour(start, _count((JobLog.status == "success") & window),
                           _count(JobLog.status.in_(FAILED) & window)))
    return result


def error_rate(minutes: int = 15) -> dict:
    since = utcnow() - timedelta(minutes=minutes)
    ok = _count((JobLog.status == "success") & (JobLog.created_at >= since))
    failed = _count(JobLog.status.in_(FAILED) & (JobLog.created_at >= since))
    total = ok + failed
    return {"minutes": minutes, "attempts": total, "failed": failed, "rate": round(failed / total, 4) if total else 0.0}


def error_code_counts(now: datetime | None = None) -> dict[str, tuple[int, int, int]]:
    """JobLog rows per error code over the last 1 h, 24 h and 7 d, in one query."""
    now = now or utcnow()
    hour, day, week = now - timedelta(hours=1), now - timedelta(days=1), now - timedelta(days=7)
    rows = (JobLog.select(JobLog.error_code,
                          fn.SUM(Case(None, [(JobLog.created_at >= hour, 1)], 0)),
                          fn.SUM(Case(None, [(JobLog.created_at >= day, 1)], 0)),
                          fn.COUNT(SQL("*")))
            .where(JobLog.error_code.in_(list(CODES)) & (JobLog.created_at >= week))
            .group_by(JobLog.error_code).tuples())
    return {code: (int(h or 0), int(d or 0), int(w or 0)) for code, h, d, w in rows}


def distinct_values(model, column: str) -> list[str]:
    """Distinct values of an indexed column by hopping along the index (a recursive CTE),
    so it costs one lookup a value instead of a scan of the table."""
    table = model._meta.table_name
    sql = (f'WITH RECURSIVE v(x) AS (SELECT MIN("{column}") FROM "{table}" '
           f'UNION ALL SELECT (SELECT MIN("{column}") FROM "{table}" WHERE "{column}" > v.x) FROM v WHERE v.x IS NOT NULL) '
           'SELECT x FROM v WHERE x IS NOT NULL')
    return [row[0] for row in database.execute_sql(sql).fetchall()]
