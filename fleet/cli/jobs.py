import json
from datetime import timedelta

import click
import dramatiq
from rich.table import Table

from actors import audit, batches, schedule
from actors import jobs as joblog
from actors.runtime import boot
from core import dead_letters, formats
from core.broker import check_broker
from core.errors import FleetError
from core.settings import get_settings
from db.job_log_hours import window_start
from db.models import utcnow
from fleet.cli.database import open_database
from fleet.cli.output import print_table
from fleet.cli.types import DAYS, HOURS, Number


def _broker(*, declare_actors: bool = False):
    settings = boot()
    check_broker(settings)
    if declare_actors or settings.is_rabbitmq:  # RabbitMQ's queues are known from the actors
        import actors.all  # noqa: F401  (a requeue runs every middleware, which looks up the actor)
    return dramatiq.get_broker()


def _report(verb: str, done: int, missing: list[str]) -> None:
    """The count, then the ids not found; only the error when nothing was done."""
    if done or not missing:
        click.echo(f"{verb} {done} dead letter(s).")
    if missing:
        raise FleetError(f"no dead letter with id {', '.join(missing)}")


@click.group("jobs")
def jobs_group() -> None:
    """Job logs, dead letters and cleanup."""


@jobs_group.command("dead-letters")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def dead_letters_command(limit: int) -> None:
    """List the newest dead letters (jobs that failed for good)."""
    broker = _broker()
    letters = dead_letters.list_dead_letters(broker, limit)
    if not letters:
        click.echo("No dead letters.")
        return
    table = Table("message id", "actor", "queue", "error code", "error", "failed at (UTC)")
    for d in letters:
        error = d.error or ""
        if d.raw is not None:
            error = f"{error} raw: {d.raw[:80]!r}" if error else f"raw: {d.raw[:80]!r}"
        table.add_row(d.message_id, d.actor, d.queue, d.error_code or "-", error[:120],
                      formats.moment(d.failed_at))
    print_table(table)
    click.echo(f"{dead_letters.count_dead_letters(broker)} dead letter(s) in all.")


@jobs_group.command("requeue")
@click.argument("message_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Requeue every dead letter.")
def requeue_command(message_ids: tuple[str, ...], everything: bool) -> None:
    """Send dead letters again, with a fresh retry budget."""
    if bool(message_ids) == everything:
        raise click.UsageError("give message ids or --all (not both)")
    result = dead_letters.requeue(_broker(declare_actors=True), None if everything else list(message_ids))
    if result.in_flight:
        click.echo(f"{result.in_flight} dead letter(s) dropped: the same job is queued or running already.")
    if result.invalid:
        click.echo(f"{result.invalid} dead letter(s) are not valid messages and stay; delete them with `fleet jobs delete ID`.")
    _report("Requeued", result.requeued, result.missing)


@jobs_group.command("delete")
@click.argument("message_ids", nargs=-1, required=True)
def delete_command(message_ids: tuple[str, ...]) -> None:
    """Delete dead letters for good."""
    done, missing = dead_letters.delete(_broker(), list(message_ids))
    _report("Deleted", done, missing)


@jobs_group.command("cleanup")
@click.option("--days", type=DAYS, default=7, show_default=True, help="Delete finished rows older than this.")
@click.option("--keep", type=click.IntRange(0, 10**9), default=100, show_default=True, help="Never delete the newest N rows.")
def cleanup_command(days: float, keep: int) -> None:
    """Delete old finished JobLog rows, in batches; finished batches older than 30 days with
    their items (never the newest 100 batches); schedule ledger rows older than
    FLEET_SCHEDULE_KEEP_DAYS (never an entry's latest); audit events older than FLEET_AUDIT_RETENTION_DAYS."""
    open_database()
    deleted = joblog.cleanup(days, keep)
    click.echo(f"Deleted {deleted} job log row(s) older than {days:g} day(s); kept the newest {keep}.")
    pruned = batches.prune()
    click.echo(f"Deleted {pruned} finished batch(es) older than {batches.PRUNE_DAYS} days with their items; "
               f"kept the newest {batches.PRUNE_KEEP}.")
    keep_days = get_settings().schedule_keep_days
    ledger = schedule.prune(keep_days)
    click.echo(f"Deleted {ledger} schedule ledger row(s) older than {keep_days:g} day(s) (FLEET_SCHEDULE_KEEP_DAYS); "
               "kept each entry's latest.")
    retention = get_settings().audit_retention_days
    click.echo(f"Deleted {audit.prune(retention)} audit event(s) older than {retention:g} day(s).")


@jobs_group.command("stats")
@click.option("--hours", type=Number(0, HOURS.max, min_open=True), default=24, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a job class, in a list.")
def stats_command(hours: float, as_json: bool) -> None:
    """Per job class: successes today (UTC), attempts by status and the average duration of successful ones
    (over an hour: in whole hours, the current one included, as in the panel)."""
    open_database()
    rows = joblog.stats_by_class(window_start(timedelta(hours=hours), utcnow()))
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo(f"No jobs in the last {hours:g} hour(s).")
        return
    statuses = ["success", "failed", "retrying", "deferred", "started", "abandoned"]
    table = Table("job class", "success today (UTC)", *statuses, "avg success (s)",
                  title=f"Attempts in the last {hours:g} hour(s)")
    for row in rows:
        avg = row["avg_success_seconds"]
        table.add_row(row["job_class"], str(row["success_today"]), *(str(row["counts"].get(s, 0)) for s in statuses),
                      f"{avg:.3f}" if avg is not None else "-")
    print_table(table, 180)


@jobs_group.command("outbox")
@click.option("--send", is_flag=True, help="Send what is unsent now, rather than wait for the scheduler.")
def outbox_command(send: bool) -> None:
    """Jobs committed but not sent yet (Redis refused them); the scheduler sends them again."""
    from actors import outbox

    open_database(broker=send)
    if send:
        _broker(declare_actors=True)
        sent, delivered = outbox.resend_due(older_than=0)
        click.echo(f"Sent {sent} job(s) from the outbox; {delivered} had been delivered already.")
    unsent, oldest, error = outbox.unsent()
    if not unsent:
        click.echo("Outbox: every job sent.")
        return
    line = (f"Outbox: {unsent} job(s) not sent yet, the oldest committed {formats.duration(oldest)} ago"
            f"{f' (last error: {error})' if error else ''}; the scheduler sends them again every "
            f"{formats.duration(boot().outbox_resend)}.")
    if send:
        raise FleetError(line)
    click.echo(line)


commands = [jobs_group]
