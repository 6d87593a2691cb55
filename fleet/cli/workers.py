"""`fleet workers list|forget`: the worker processes the fleet knows, live and lost."""
from __future__ import annotations

import json
import time

import click
from rich.table import Table

from actors.middleware.presence import WorkerNotLost, forget_worker, live_workers, lost_workers
from core.broker import REDIS_NAMESPACE, check_broker
from core.errors import FleetError
from core.formats import ago, moment
from core.settings import get_settings
from core.state import state_redis
from fleet.cli.output import print_table


def _client():
    settings = get_settings()
    check_broker(settings)
    client = state_redis()
    if client is None:
        raise FleetError("workers are not known without a state Redis (set FLEET_STATE_REDIS_URL)", exit_code=2)
    return client, settings.heartbeat_timeout


@click.group("workers")
def workers_group() -> None:
    """Worker processes: live ones, and lost ones (no heartbeat, no clean stop) until forgotten."""


@workers_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
def list_command(as_json: bool) -> None:
    """Live workers, then lost ones with since when and what became of their jobs."""
    client, timeout = _client()
    live, lost = live_workers(client, timeout), lost_workers(client, timeout, REDIS_NAMESPACE)
    if as_json:
        click.echo(json.dumps({
            "live": [{"id": w.id, "host": w.host, "pid": w.pid, "queues": list(w.queues), "threads": w.threads,
                      "heartbeat": w.heartbeat} for w in live],
            "lost": [{"id": x.worker.id, "host": x.worker.host, "pid": x.worker.pid, "since": x.worker.heartbeat,
                      "not_redelivered": x.held} for x in lost]}, indent=2))
        return
    table = Table("state", "id", "host", "pid", "threads", "last heartbeat (UTC)", "jobs it held")
    now = time.time()
    for w in live:
        table.add_row("live", w.id, w.host, str(w.pid), str(w.threads), ago(now - w.heartbeat), "")
    for x in lost:
        w = x.worker
        table.add_row("LOST", w.id, w.host, str(w.pid), str(w.threads), moment(_utc(w.heartbeat)), x.jobs_text)
    print_table(table)
    click.echo(f"{len(live)} live, {len(lost)} lost" + (" (`fleet workers forget ID` once dealt with)" if lost else ""))


@workers_group.command("forget")
@click.argument("worker_ids", nargs=-1, required=True, metavar="ID...")
def forget_command(worker_ids: tuple[str, ...]) -> None:
    """Stop listing lost workers (their jobs were redelivered by then, or never will be)."""
    client, timeout = _client()
    problems = []
    for worker_id in worker_ids:
        try:
            forgotten = forget_worker(client, worker_id, timeout)
        except WorkerNotLost as exc:
            problems.append(str(exc))
            continue
        click.echo(f"Forgot lost worker {worker_id} ({forgotten.host}, pid {forgotten.pid}).")
    if problems:
        raise FleetError("; ".join(problems))


def _utc(unix: float):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(unix, timezone.utc)


commands = [workers_group]
