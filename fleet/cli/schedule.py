"""`fleet schedule …`: check a schedule file, list its entries, run one now, pause, resume,
and read an entry's ledger."""
from __future__ import annotations

from datetime import datetime, timezone

import click
from redis import RedisError
from rich.table import Table

from actors import schedule as sched
from core import formats
from core.broker import check_broker
from core.errors import FleetError
from core.settings import get_settings
from fleet.cli.database import open_database
from fleet.cli.output import print_table


def load(value: str | None = None) -> sched.Schedule:
    """The schedule file (FLEET_SCHEDULE unless named); an invalid one prints a line a problem
    and exits with 2."""
    import actors.all  # noqa: F401  (every domain registers its tasks)

    try:
        return sched.load_schedule(value)
    except sched.ScheduleError as exc:
        for problem in exc.problems:
            click.echo(f"fleet: {problem}", err=True)
        raise SystemExit(2) from None


def when(moment: datetime | None, tz: str) -> str:
    return formats.moment(moment, tz, "-")


def seconds(value: float | None) -> str:
    return formats.seconds(value, empty="-")


@click.group("schedule")
def schedule_group() -> None:
    """The periodic tasks: check the schedule file, list, run now, pause, resume, history."""


@schedule_group.command("check")
@click.argument("file", required=False)
def check_command(file: str | None) -> None:
    """Check a schedule file (default: FLEET_SCHEDULE) and show each entry's next run."""
    schedule = load(file)
    now = datetime.now(timezone.utc)
    table = Table("entry", "task", "arguments", "trigger", "next run")
    for entry in schedule.entries.values():
        table.add_row(entry.name, entry.task, entry.args_text or "-", entry.trigger_text,
                      when(entry.next_slot(now), entry.timezone) if entry.enabled else "disabled")
    print_table(table, 160)
    count = len(schedule.entries)
    click.echo(f"{schedule.path}: {count} {'entry' if count == 1 else 'entries'}, all valid.")


@schedule_group.command("list")
def list_command() -> None:
    """Each entry: trigger in words, next run, last run with its state and duration, paused."""
    schedule = load()
    open_database()
    table = Table("entry", "task", "trigger", "next run", "last run", "state", "duration", "latest slot", "policy")
    for row in sched.entry_rows(schedule):
        e = row.entry
        flags = [row.policy] + ["DISABLED"] * (not e.enabled) + ["PAUSED"] * bool(row.paused)
        table.add_row(e.name, f"{e.task} {e.args_text}".strip(), e.trigger_text, row.next_text, row.last_text,
                      row.state or "-", row.duration or "-", row.slot_text or "-", ", ".join(flags))
    print_table(table)
    click.echo(_schedulers_line(schedule))


def _schedulers_line(schedule: sched.Schedule) -> str:
    try:
        running = sched.schedulers()
    except RedisError as exc:
        return f"Schedulers: unknown (Redis did not answer: {exc})"
    if not running:
        return "Schedulers: none running; no slot is emitted until `fleet scheduler` runs."
    parts = [f"{'leader' if s.leader else 'standby'} {s.id} (heartbeat {formats.seconds(s.heartbeat_age, 1)} ago)" for s in running]
    if not any(s.leader for s in running):
        parts.insert(0, "no leader yet")
    line = "Schedulers: " + "; ".join(parts)
    other = sorted({s.schedule for s in running if s.digest != schedule.digest})
    if other:
        line += (f"\nThey do not all run {schedule.path} as it is now (they read {', '.join(other)} when they"
                 " started): restart them one at a time to use it.")
    return line


@schedule_group.command("run")
@click.argument("name")
def run_command(name: str) -> None:
    """Emit an entry's task now, outside its trigger (not while its previous run is in flight,
    unless the entry allows overlapping)."""
    entry = load().entry(name)
    open_database()
    check_broker(get_settings())
    run = sched.run_now(entry, sched.operator_name())
    if run.state != "emitted":
        raise FleetError(f"{name} not run: {run.detail}")
    click.echo(f"Emitted {name} ({entry.task}) now: run #{run.id}, message {run.message_id}.")


@schedule_group.command("pause")
@click.argument("name")
def pause_command(name: str) -> None:
    """Pause an entry: every scheduler skips its slots (recorded as skipped) until resumed."""
    load().entry(name)
    open_database()
    if not sched.set_paused(name, True, sched.operator_name()):
        click.echo(f"{name} is paused already.")
        return
    click.echo(f"Paused {name}: every scheduler skips its slots until `fleet schedule resume {name}`.")


@schedule_group.command("resume")
@click.argument("name")
def resume_command(name: str) -> None:
    """Resume a paused entry from its next slot."""
    schedule = load()
    entry = schedule.entry(name)
    open_database()
    if not sched.set_paused(name, False, sched.operator_name()):
        click.echo(f"{name} is not paused.")
        return
    if not entry.enabled:
        click.echo(f"Resumed {name}; it is disabled in {schedule.path} (enabled = false), so it has no next run.")
        return
    click.echo(f"Resumed {name}; next run {when(entry.next_slot(datetime.now(timezone.utc)), entry.timezone)}.")


@schedule_group.command("history")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
def history_command(name: str, limit: int) -> None:
    """An entry's ledger, newest slot first: emitted, skipped and missed slots with their outcome."""
    schedule = load()
    open_database()
    runs = sched.history(name, limit)
    if name not in schedule.entries and not runs:
        schedule.entry(name)  # says which entries there are
    tz = schedule.entries[name].timezone if name in schedule.entries else "UTC"
    if not runs:
        click.echo(f"No runs of {name} yet.")
        return
    table = Table("run", "slot", "kind", "state", "emitted", "by", "message id", "duration", "detail")
    for run in runs:
        table.add_row(f"#{run.id}", when(run.slot_time, tz), run.kind, sched.state_text(run),
                      when(run.emitted_at, tz), run.scheduler or "-", run.message_id or "-",
                      seconds(run.duration_seconds), run.detail or "")
    print_table(table, 220)


commands = [schedule_group]
