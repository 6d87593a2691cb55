"""Operators' controls: `fleet queues pause|resume|list`, `fleet breakers list|reset|trip`,
and in the `jobs` group `fleet jobs cancel` and `fleet jobs list --search`. Every change is
audited."""
from __future__ import annotations

import click
from rich.table import Table

from actors import controls
from core import breakers, formats, pauses
from core.queues import queue_depths
from db.models.jobs import JobLog
from fleet.cli import audited
from fleet.cli.database import open_database
from fleet.cli.jobs import _broker, jobs_group
from fleet.cli.output import print_table


def _open():
    open_database()
    return _broker(declare_actors=True)


@click.group("queues")
def queues_group() -> None:
    """Queues: depths, and pausing one (workers stop fetching from it)."""


@queues_group.command("list")
def queues_list() -> None:
    """Every queue: waiting, in flight, delayed, dead, and whether it is paused."""
    broker = _open()
    paused = pauses.paused_since()
    table = Table("queue", "ready", "in flight", "delayed", "dead", "paused")
    for q in queue_depths(broker, controls.queue_names(broker)):
        row = paused.get(q.queue)
        table.add_row(q.queue, str(q.ready), "-" if q.in_flight is None else str(q.in_flight), str(q.delayed),
                      str(q.dead), f"since {formats.moment(row.paused_at)} by {row.paused_by}" if row else "no")
    print_table(table)


@queues_group.command("pause")
@click.argument("name")
def queues_pause(name: str) -> None:
    """Workers stop fetching from queue NAME (what they hold already still runs); kept across restarts."""
    broker = _open()
    if controls.pause_queue(broker, name, audited.os_user()):
        audited.record("queues.pause", target=name, rows=1)
        click.echo(f"Paused queue {name}: workers stop fetching from it within a second.")
    else:
        click.echo(f"Queue {name} was paused already.")


@queues_group.command("resume")
@click.argument("name")
def queues_resume(name: str) -> None:
    """Workers fetch from queue NAME again."""
    broker = _open()
    if controls.resume_queue(broker, name):
        audited.record("queues.resume", target=name, rows=1)
        click.echo(f"Resumed queue {name}.")
    else:
        click.echo(f"Queue {name} was not paused.")


@jobs_group.command("cancel")
@click.argument("message_id")
def jobs_cancel(message_id: str) -> None:
    """Cancel a queued or delayed job by its message id (a running job cannot be cancelled)."""
    broker = _open()
    result = controls.cancel_job(broker, message_id, audited.os_user())
    audited.record("jobs.cancel", target=message_id, rows=1)
    held = " (a worker held it for its time; it drops it then)" if result.held else ""
    click.echo(f"Cancelled {result.message.actor_name} job {message_id}{held}.")


@jobs_group.command("list")
@click.option("--search", default="", help="plan_id=13, tvdb_id=79126, a message id, a trace id, or words of the message.")
@click.option("--status", type=click.Choice(JobLog.STATUSES))
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def jobs_list(search: str, status: str | None, limit: int) -> None:
    """The newest JobLog rows (attempts), optionally searched and filtered."""
    open_database()
    query = JobLog.select(JobLog.created_at, JobLog.job_class, JobLog.status, JobLog.attempt, JobLog.error_code,
                          JobLog.message_id, JobLog.trace_id, JobLog.args)
    condition = controls.search_condition(search)
    if condition is not None:
        query = query.where(condition)
    if status:
        query = query.where(JobLog.status == status)
    rows = list(query.order_by(JobLog.created_at.desc()).limit(limit))
    if not rows:
        click.echo("No matching job log rows.")
        return
    table = Table("time (UTC)", "actor", "status", "attempt", "error code", "message id", "trace id", "arguments")
    for r in rows:
        table.add_row(formats.moment(r.created_at), r.job_class, r.status, str(r.attempt), r.error_code or "-",
                      r.message_id, r.trace_id or "-", (r.args or "")[:60])
    print_table(table, 220)


@click.group("breakers")
def breakers_group() -> None:
    """Circuit breakers: their states, and closing or opening one by hand."""


@breakers_group.command("list")
def breakers_list() -> None:
    open_database()
    table = Table("service", "state")
    for service, state in breakers.states().items():
        table.add_row(service, state)
    print_table(table)


@breakers_group.command("reset")
@click.argument("service", type=click.Choice(breakers.SERVICES))
def breakers_reset(service: str) -> None:
    """Close the breaker of SERVICE: jobs that need it run again at once."""
    open_database()
    before = breakers.reset(service)
    audited.record("breakers.reset", target=service, rows=1)
    click.echo(f"Breaker {service}: {before} -> closed.")


@breakers_group.command("trip")
@click.argument("service", type=click.Choice(breakers.SERVICES))
def breakers_trip(service: str) -> None:
    """Open the breaker of SERVICE for FLEET_CIRCUIT_RESET seconds: jobs that need it wait."""
    open_database()
    before = breakers.trip(service)
    audited.record("breakers.trip", target=service, rows=1)
    click.echo(f"Breaker {service}: {before} -> open.")


commands = [queues_group, breakers_group]
