"""What the dashboard shows of series data: the newest sweep runs and the API budget."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import SQL, fn

from actors.series.rows import EPISODES, SERIES, bounded_count
from actors.series.sweeps import SWEEPS_BY_ACTOR
from core.budget import budget
from db.models import utcnow
from db.models.jobs import JobLog

DEFERRALS_COUNTED = 10_000  # the dashboard counts budget deferrals of the last hour up to this ("10000+")


@dataclass
class SweepRun:
    sweep: str
    status: str
    started_at: datetime
    duration_seconds: float | None
    counts: dict
    message: str | None
    message_id: str
    queue: str


def recent_sweep_runs(limit: int = 8) -> list[SweepRun]:
    """The newest runs of the four sweeps (as jobs or from the CLI), newest first, with their counts.
    A few small index lookups (job class, status, time), whatever the size of the job log."""
    runs = []
    for actor_name, sweep in SWEEPS_BY_ACTOR.items():
        for status in ("started", "success", "failed", "retrying"):
            for row in (JobLog.select().where((JobLog.job_class == actor_name) & (JobLog.status == status))
                        .order_by(JobLog.created_at.desc()).limit(limit)):
                try:
                    counts = json.loads(row.message) if status == "success" and row.message else {}
                except ValueError:
                    counts = {}
                runs.append(SweepRun(sweep, row.status, row.created_at, row.duration_seconds,
                                     counts if isinstance(counts, dict) else {}, row.message, row.message_id, row.queue))
    runs.sort(key=lambda r: r.started_at, reverse=True)
    return runs[:limit]


def budget_usage() -> dict:
    """The series API's shared budget now, and how many data jobs it deferred in the last hour."""
    since = utcnow() - timedelta(hours=1)
    minute = utcnow() - timedelta(minutes=1)
    names = [SERIES.data_job.actor_name, EPISODES.data_job.actor_name]
    deferred = bounded_count(JobLog.select(SQL("1")).where(
        (JobLog.error_code == "ERR_RATE_LIMIT") & (JobLog.created_at >= since) & (JobLog.status == "deferred")
        & JobLog.job_class.in_(names)), DEFERRALS_COUNTED)
    attempts = (JobLog.select(fn.COUNT(SQL("*")))
                .where(JobLog.job_class.in_(names) & JobLog.status.in_(("success", "failed", "retrying"))
                       & (JobLog.created_at >= minute)).scalar() or 0)
    usage = budget("series_api").usage()
    return {**usage, "deferred_last_hour": f"{DEFERRALS_COUNTED}+" if deferred > DEFERRALS_COUNTED else deferred,
            "requests_last_minute": attempts,
            "per_second_last_minute": round(attempts / 60, 2)}


def overview() -> dict:
    """What the dashboard shows of series data: the newest sweep runs and the API budget."""
    return {"runs": recent_sweep_runs(), "budget": budget_usage()}
