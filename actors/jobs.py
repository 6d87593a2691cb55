"""Job logs: the statistics per job class, the cleanup of old rows and the retry of a failed job,
shared by the CLI and the panel."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from dramatiq.errors import ActorNotFound
from peewee import fn

from actors import audit, batches, schedule
from actors.runtime import fleet_actor, task
from core import dead_letters
from core.errors import FleetError
from core.settings import get_settings
from db.job_log_hours import totals
from db.models import utcnow
from db.models.jobs import JobArgument, JobLog

log = logging.getLogger("fleet.jobs")

CLEANUP_BATCH = 5_000


def successes_since(job_class: str, since: datetime) -> int:
    """How many jobs of one class succeeded since a moment (e.g. today's midnight)."""
    return JobLog.select().where(
        (JobLog.job_class == job_class) & (JobLog.status == "success") & (JobLog.created_at >= since)
    ).count()


def today() -> datetime:
    """Midnight UTC of today, as the job log stores times."""
    return utcnow().replace(hour=0, minute=0, second=0, microsecond=0)


def stats_by_class(since: datetime, day_start: datetime | None = None) -> list[dict]:
    """Per job class: attempts by status since `since`, the average duration of the successful
    ones, and (the seed's statistics) how many succeeded since `day_start` (today, UTC)."""
    stats: dict[str, dict] = {}

    def entry(job_class: str) -> dict:
        return stats.setdefault(job_class, {"job_class": job_class, "counts": {}, "avg_success_seconds": None,
                                            "success_today": 0})

    for (job_class, status), total in totals(since, ("job_class", "status")).items():
        found = entry(job_class)
        found["counts"][status] = total.attempts
        if status == "success":
            found["avg_success_seconds"] = total.average
    for (job_class, status), total in totals(day_start or today(), ("job_class", "status")).items():
        if status == "success":
            entry(job_class)["success_today"] = total.attempts
    return sorted(stats.values(), key=lambda e: e["job_class"])


def cleanup(days: float, keep: int) -> int:
    """Delete finished rows older than `days`, in batches, never the newest `keep` rows."""
    cutoff = utcnow() - timedelta(days=days)
    floor = (JobLog.select(JobLog.id).order_by(JobLog.id.desc()).offset(keep).limit(1).scalar()) if keep else None
    if keep and floor is None:
        return 0  # fewer rows than we must keep
    deleted = 0
    while True:
        query = JobLog.select(JobLog.id).where((JobLog.created_at < cutoff) & (JobLog.status != "started"))
        if floor is not None:
            query = query.where(JobLog.id <= floor)
        ids = [row.id for row in query.limit(CLEANUP_BATCH)]
        if not ids:
            prune_arguments(cutoff)
            return deleted
        deleted += JobLog.delete().where(JobLog.id.in_(ids)).execute()


def prune_arguments(cutoff: datetime) -> int:
    """Delete the searchable arguments of messages older than `cutoff` that have no JobLog row left."""
    deleted = 0
    orphan = ~fn.EXISTS(JobLog.select(JobLog.id).where(JobLog.message_id == JobArgument.message_id))
    while True:
        ids = [row.id for row in JobArgument.select(JobArgument.id)
               .where((JobArgument.created_at < cutoff) & orphan).limit(CLEANUP_BATCH)]
        if not ids:
            return deleted
        deleted += JobArgument.delete().where(JobArgument.id.in_(ids)).execute()


def retry_job(broker, job: JobLog) -> str:
    """Run a failed job again: its dead letter is requeued when there is one, else the same actor
    is sent the same arguments (through the unique check). Returns what happened, in words."""
    try:
        result = dead_letters.requeue(broker, [job.message_id])
    except FleetError:
        result = None  # RabbitMQ: dead letters are not reachable from here
    if result and result.requeued:
        return f"Requeued the dead letter of message {job.message_id} with a fresh retry budget."
    if result and result.in_flight:
        return f"An identical {job.job_class} job is already queued or running; its dead letter was dropped."
    try:
        actor = broker.get_actor(job.job_class)
    except ActorNotFound:
        raise FleetError(f"no actor {job.job_class} is declared; nothing was sent") from None
    try:
        call = json.loads(job.args or "")
        args, kwargs = tuple(call["args"]), dict(call["kwargs"])
    except (ValueError, KeyError, TypeError):
        raise FleetError("the job's arguments were not kept whole in its log; nothing was sent") from None
    message = actor.send_with_options(args=args, kwargs=kwargs)
    if message is None:
        return f"An identical {job.job_class} job is already queued or running; nothing was sent."
    return f"Sent {job.job_class} again with the same arguments (message {message.message_id})."


@task("jobs.cleanup")
@fleet_actor(queue_name="maintenance", retry_delays=(60, 300), time_limit=60 * 60_000)
def cleanup_job_logs(days: float = 7, keep: int = 100) -> None:
    """`fleet jobs cleanup` on a schedule: finished rows older than `days`, never the newest `keep`,
    finished batches past their own retention, the schedule ledger's rows older than
    FLEET_SCHEDULE_KEEP_DAYS, and audit events past FLEET_AUDIT_RETENTION_DAYS."""
    deleted = cleanup(days, keep)
    pruned = batches.prune()
    ledger = schedule.prune(get_settings().schedule_keep_days)
    audit_pruned = audit.prune(get_settings().audit_retention_days)
    log.info("job logs cleaned up", extra={"deleted": deleted, "days": days, "keep": keep, "batches_pruned": pruned,
                                           "schedule_rows_pruned": ledger, "audit_pruned": audit_pruned})
