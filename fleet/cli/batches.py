"""`fleet batches …`: list, show and follow batches; cancel, resume, retry them."""
from __future__ import annotations

import json
import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

import actors.all  # noqa: F401  (every batch kind: resume and retry need the kind's actor)
from actors import batches as ops
from core import formats
from db.models.batches import Batch
from fleet.cli.database import open_database
from fleet.cli.output import print_table

WATCH_INTERVAL = 0.5


def _rate(snap: ops.Snapshot) -> str:
    return f"{snap.rate:.2f} items/s" if snap.rate else "- items/s"


def progress_line(snap: ops.Snapshot) -> str:
    b = snap.batch
    economy = ops.economy_text(b)
    if economy:  # no rate or ETA: the provider answers a whole file at once, within 24 h
        return f"{ops.status_label(b)}  {snap.percent:g}%  {b.processed}/{b.total}  economy lane, {economy}"
    return (f"{ops.status_label(b)}  {snap.percent:g}%  {b.processed}/{b.total}  {_rate(snap)}  ETA {formats.duration(snap.eta_seconds)}  "
            f"{ops.usd(b.cost_usd)}  current: {b.current_item or '-'}")


def final_line(b: Batch) -> str:
    return f"Batch {b.id} {ops.status_label(b)}: {ops.outcome_text(b)}."


def exit_code(b: Batch) -> int:
    """0 while the batch runs or once it completed (failed items or not), 1 if it failed or was cancelled."""
    return 1 if b.finished_at is not None and b.status in ("failed", "cancelled") else 0


@click.group("batches")
def batches_group() -> None:
    """Background batches: progress, per-item results, cancel, resume, retry."""


@batches_group.command("list")
@click.option("--status", type=click.Choice(Batch.STATUSES), help="Only batches with this status.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def list_command(status: str | None, limit: int) -> None:
    """The newest batches, with their progress."""
    open_database()
    found = ops.list_batches(status, limit)
    if not found:
        click.echo("No batches." if not status else f"No {status} batches.")
        return
    table = Table("id", "kind", "lane", "title", "status", "progress", "failed", "cost", "created (UTC)")
    for b in found:
        snap = ops.Snapshot(b)
        table.add_row(b.id[:ops.SHORT_ID], b.kind, b.lane, b.title[:50], ops.status_label(b),
                      f"{snap.percent:g}% ({b.processed}/{b.total})", str(b.failed), ops.usd(b.cost_usd),
                      formats.moment(b.created_at))
    print_table(table, 180)


@batches_group.command("show")
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, with the items.")
@click.option("--failed", is_flag=True, help="Only the failed items.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="Items shown; 0 for all.")
def show_command(batch_id: str, as_json: bool, failed: bool, limit: int) -> None:
    """Status, progress, current item, counts, cost, errors and per-item results of a batch."""
    open_database()
    snap = ops.snapshot(batch_id, item_status="failed" if failed else None, limit=limit or None)
    if as_json:
        click.echo(json.dumps(snap.as_dict()))
        return
    b = snap.batch
    click.echo(f"Batch {b.id} ({b.kind}): {b.title}")
    click.echo(f"Status: {ops.status_label(b)}  Lane: {ops.lane_label(b)}")
    click.echo(f"Progress: {progress_line(snap)}")
    for p in snap.as_dict()["provider_batches"]:
        counts = p["request_counts"] or {}
        click.echo(f"Provider batch {p['provider_id'] or '(not sent yet)'}: {p['provider_status'] or p['status']}, "
                   f"{p['items']} item(s), {counts.get('completed', 0)} completed, {counts.get('failed', 0)} failed"
                   + (f"; {p['error']}" if p["error"] else ""))
    click.echo(f"Succeeded: {b.succeeded}  Failed: {b.failed}  Cancelled: {b.cancelled}  Total: {b.total}")
    click.echo(f"Cost: {ops.usd(b.cost_usd)}  Tokens: {b.tokens}")
    stamps = [("created", b.created_at), ("started", b.started_at), ("finished", b.finished_at)]
    click.echo("  ".join(f"{name}: {at:%Y-%m-%d %H:%M:%S}" for name, at in stamps if at) + " (UTC)"
               + (f"  by {b.created_by}" if b.created_by else ""))
    for e in snap.errors:
        click.echo(f"Error {e['code']} × {e['count']}: {e['sentence']}")
    if snap.items:
        table = Table("#", "item", "status", "attempts", "result or error", "cost")
        for i in snap.items:
            outcome = (f"{i.error_code}: {i.error_message}" if i.error_code
                       else ", ".join(f"{k}: {v}" for k, v in (i.result or {}).items()))
            table.add_row(str(i.position + 1), i.key, i.status, str(i.attempts), outcome[:120],
                          ops.usd(i.cost_usd) if i.cost_usd else "")
        print_table(table)
        shown = len(snap.items)
        everything = b.failed if failed else b.total
        if shown < everything:
            click.echo(f"({shown} of {everything} items shown; --limit 0 shows all)")


def watch(batch_id: str, interval: float = WATCH_INTERVAL) -> int:
    """Follow a batch until it ends: a live bar on a terminal, a line a change otherwise."""
    snap = ops.snapshot(batch_id, limit=0)
    batch_id = snap.batch.id
    if sys.stdout.isatty():
        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}  ETA {task.fields[eta]}  {task.fields[cost]}  {task.fields[current]}"))

        def fields(snap: ops.Snapshot) -> dict:
            b = snap.batch
            return {"completed": b.processed, "description": ops.status_label(b), "rate": _rate(snap),
                    "eta": formats.duration(snap.eta_seconds), "cost": ops.usd(b.cost_usd), "current": (b.current_item or "")[-60:]}

        with Progress(*columns, console=Console(), refresh_per_second=4) as bar:
            task = bar.add_task(total=snap.batch.total, **fields(snap))
            while snap.batch.finished_at is None:
                time.sleep(interval)
                snap = ops.snapshot(batch_id, limit=0)
                bar.update(task, **fields(snap))
    else:
        last = None
        while True:
            line = progress_line(snap)
            if line != last:
                click.echo(line)
                last = line
            if snap.batch.finished_at is not None:
                break
            time.sleep(interval)
            snap = ops.snapshot(batch_id, limit=0)
    click.echo(final_line(snap.batch))
    return exit_code(snap.batch)


@batches_group.command("monitor")
@click.argument("batch_id")
@click.option("--watch", "follow", is_flag=True, help="Follow it live until it ends.")
def monitor_command(batch_id: str, follow: bool) -> None:
    """Progress of a batch: percentage, processed/total, current item, rate, ETA, cost. With
    --watch it follows the batch and exits 0 when it completes, 1 if it failed or was cancelled."""
    open_database()
    if follow:
        sys.exit(watch(batch_id))
    snap = ops.snapshot(batch_id, limit=0)
    click.echo(f"Batch {snap.batch.id}: {progress_line(snap)}")
    sys.exit(exit_code(snap.batch))


@batches_group.command("cancel")
@click.argument("batch_id")
def cancel_command(batch_id: str) -> None:
    """Cancel the pending items; running items finish, then the batch is cancelled."""
    open_database()
    batch = ops.find_batch(batch_id)
    click.echo(ops.cancelled_text(ops.cancel(batch.id), batch.id))


@batches_group.command("resume")
@click.argument("batch_id")
def resume_command(batch_id: str) -> None:
    """Send again the chunks whose job was lost (a message the broker lost, a worker gone for
    good); each new job takes over what its lost one left running."""
    open_database(broker=True)
    batch = ops.find_batch(batch_id)
    click.echo(ops.resume(batch.id).text(batch.id))


@batches_group.command("retry")
@click.argument("batch_id")
def retry_command(batch_id: str) -> None:
    """Run the failed items of a batch again (the same batch; its counters corrected)."""
    open_database(broker=True)
    batch = ops.find_batch(batch_id)
    click.echo(ops.retried_text(ops.retry(batch.id), batch.id))


@batches_group.command("poll")
def poll_command() -> None:
    """Poll OpenAI's Batch API now for every economy-lane batch (what the scheduled task
    `batches.economy-poll` does every minute): settle what the provider finished, send what is pending."""
    open_database(broker=True)
    report = ops.poll()
    click.echo(f"Looked at {report.looked_at} provider batch(es); {report.settled_items} item(s) settled, "
               f"{report.submitted} provider batch(es) sent, {len(report.finished)} batch(es) finished.")


commands = [batches_group]
