"""`fleet workouts …`: the workflow of the retry command, its console lines word for word."""
from __future__ import annotations

import json

import click
from peewee import IntegrityError
from rich.table import Table

from actors import workouts as ops
from core.errors import FleetError
from db.models.workouts import User, WorkoutPlan
from fleet.cli.database import open_database
from fleet.cli.output import print_table
from fleet.cli.types import HOURS, ID

QUESTION = "Do you want to retry generating these workout plans? (yes/no) [yes]:"


def _require(plan_id: int | None = None, user_id: int | None = None) -> None:
    if plan_id is not None and not ops.plan_exists(plan_id):
        raise FleetError(f"no plan with id {plan_id}")
    if user_id is not None and not ops.user_exists(user_id):
        raise FleetError(f"no user with id {user_id}")


def _confirmed() -> bool:
    click.echo(QUESTION)
    while True:
        answer = click.prompt("", prompt_suffix="> ", default="yes", show_default=False).strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False
        click.echo("Please answer yes or no.")


@click.group("workouts")
def workouts_group() -> None:
    """AI-generated workout plans: create, inspect, retry failed days."""


@workouts_group.command("add-user")
@click.argument("email")
@click.option("--name", help="Display name.")
def add_user_command(email: str, name: str | None) -> None:
    """Create an app user (who owns plans; not a panel account)."""
    open_database()
    try:
        user = User.create(email=email.strip().lower(), name=name)
    except IntegrityError:
        raise FleetError(f"a user with email {email} already exists") from None
    click.echo(f"Created User #{user.id}")


@workouts_group.command("create-plan")
@click.option("--user", "user_id", type=ID, required=True)
@click.option("--days", type=click.IntRange(1, 365), required=True)
@click.option("--goal", required=True)
def create_plan_command(user_id: int, days: int, goal: str) -> None:
    """Create a plan with its pending days and dispatch its generation job."""
    open_database(broker=True)
    _require(user_id=user_id)
    plan = ops.create_plan(user_id, days, goal, generate=True)
    click.echo(f"Created Plan #{plan.id} (User #{user_id}) with {days} day(s); generation job dispatched.")


@workouts_group.command("status")
@click.option("--plan", "plan_id", type=ID)
@click.option("--user", "user_id", type=ID)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status_command(plan_id: int | None, user_id: int | None, as_json: bool) -> None:
    """Counts of pending, generated and failed days; each day of one plan."""
    open_database()
    _require(plan_id, user_id)
    counts = ops.status_counts(plan_id, user_id)
    days = []
    if plan_id is not None:
        days = [
            {"id": w.id, "day": w.day, "status": w.status, "error_code": w.error_code,
             "error_message": w.error_message, "attempts": w.attempts}
            for w in WorkoutPlan.select().where(WorkoutPlan.plan == plan_id).order_by(WorkoutPlan.day)
        ]
    if as_json:
        click.echo(json.dumps({**counts, **({"days": days} if plan_id is not None else {})}))
        return
    click.echo(f"Pending: {counts['pending']} (older than 2 hours: {counts['stale_pending']})")
    click.echo(f"Generated: {counts['generated']}")
    click.echo(f"Failed: {counts['failed']}")
    if days:
        table = Table("WorkoutPlan", "day", "status", "error code", "message", "attempts")
        for d in days:
            table.add_row(f"#{d['id']}", str(d["day"]), d["status"], d["error_code"] or "-",
                          (d["error_message"] or "")[:80], str(d["attempts"]))
        print_table(table, 160)


@workouts_group.command("retry-failed")
@click.option("--plan", "plan_id", type=ID, help="Only this plan.")
@click.option("--user", "user_id", type=ID, help="Only this user's plans.")
@click.option("--reset", is_flag=True, help="Only set failed days back to pending; dispatch nothing.")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Do not ask for confirmation.")
def retry_failed_command(plan_id: int | None, user_id: int | None, reset: bool, assume_yes: bool) -> None:
    """Retry failed workout-plan generations: one job a plan, whatever its failed days."""
    open_database(broker=not reset)
    _require(plan_id, user_id)
    click.echo("Looking for failed workout plans...")
    where = ops.failed_filter(plan_id, user_id)
    plans = ops.failed_plans(where)
    if not plans:
        click.echo("No failed workout plans found.")
        return
    click.echo(f"Found {sum(p.failed_days for p in plans)} failed workout plan(s).")

    if reset:
        click.echo("Resetting status to pending...")
        for day_id, plan, day in ops.reset_plans_listed([p.plan_id for p in plans]):
            click.echo(f"  - WorkoutPlan #{day_id} (Plan #{plan}, Day {day}) reset to pending")
        click.echo("Status reset complete. Run workout generation job to retry.")
        click.echo(f"To generate them now: fleet workouts generate {f'--plan {plan_id}' if plan_id else '--all-pending'}")
        return

    click.echo(f"Plans affected: {len(plans)}")
    estimate = ops.retry_estimate(sum(p.failed_days for p in plans))
    if estimate:
        click.echo(f"At the OpenAI budget: {estimate}")
    if not assume_yes and not _confirmed():
        click.echo("Cancelled; no workout plan was changed.")
        return
    dispatched = 0
    for p, sent, _ in ops.retry_in_chunks(plans, lambda chunk: ops.reset_plans([c.plan_id for c in chunk])):
        if not sent:
            click.echo(f"  • Plan #{p.plan_id} (User #{p.user_id}) - {p.failed_days} failed workout(s): "
                       "its generation job is already queued or running")
            continue
        dispatched += 1
        click.echo(f"  ✓ Dispatched job for Plan #{p.plan_id} (User #{p.user_id}) - {p.failed_days} failed workout(s)")
    click.echo("")
    click.echo(f"Successfully dispatched {dispatched} generation job(s).")
    click.echo("Jobs are queued and will be processed by your queue worker.")


@workouts_group.command("generate")
@click.option("--plan", "plan_id", type=int, help="This plan's pending days.")
@click.option("--all-pending", is_flag=True, help="Every plan with pending days.")
def generate_command(plan_id: int | None, all_pending: bool) -> None:
    """Dispatch the generation job of plans with pending days (one job a plan)."""
    if (plan_id is None) == (not all_pending):
        raise click.UsageError("give --plan ID or --all-pending (one of them)")
    open_database(broker=True)
    _require(plan_id)
    sent, in_flight = ops.generate_pending(plan_id)
    if not sent + in_flight:
        click.echo(f"Plan #{plan_id} has no pending days." if plan_id else "No plan has pending days.")
        return
    click.echo(f"Dispatched {sent} generation job(s) ({in_flight} already queued or running).")


@workouts_group.command("rescue-stale")
@click.option("--hours", type=HOURS, default=2, show_default=True,
              help="0 dispatches every plan with pending days.")
def rescue_stale_command(hours: float) -> None:
    """Re-dispatch plans whose days stay pending longer than --hours with no job in flight."""
    open_database(broker=True)
    found, dispatched = ops.rescue_stale(hours)
    click.echo(f"Found {found} plan(s) with days pending for more than {hours:g} hour(s); "
               f"dispatched {dispatched} generation job(s) ({found - dispatched} already in flight).")


commands = [workouts_group]
