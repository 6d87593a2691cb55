"""Workout plans: AI generation, one OpenAI call a plan day, and the operations every
entry point shares (create, find failed, retry, reset, rescue).

The CLI's `retry-failed` and the scheduler go through `retry_in_chunks` here: reset a chunk
of failed days, then dispatch one job a plan. The panel's "retry all matching" is a batch of
kind `workouts_retry` (actors/workouts_retry.py).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from peewee import SQL, fn

from actors.outbox import NotSent, outbox
from actors.runtime import attempt_started_at, fleet_actor, task
from core import fencing
from core.errors import CODES, Classified, JobError, classify, is_infrastructure
from core.redact import redact
from db.database import database
from db.models import utcnow
from db.models.batches import Batch, BatchItem
from db.models.workouts import Plan, User, WorkoutPlan

log = logging.getLogger("fleet.workouts")

CHUNK = 500

# Failures that will hit every other day of the plan just the same.
ACCOUNT_WIDE = {"ERR_AUTH", "ERR_QUOTA_EXCEEDED"}

_EXERCISE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "sets", "reps", "seconds", "rest_seconds"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "sets": {"type": "integer", "minimum": 1, "maximum": 10},
        "reps": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 100}, {"type": "null"}]},
        "seconds": {"anyOf": [{"type": "integer", "minimum": 5, "maximum": 3600}, {"type": "null"}]},
        "rest_seconds": {"type": "integer", "minimum": 0, "maximum": 600},
    },
}
WORKOUT_DAY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "focus", "minutes", "exercises"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "focus": {"type": "string", "minLength": 1},
        "minutes": {"type": "integer", "minimum": 10, "maximum": 180},
        "exercises": {"type": "array", "minItems": 1, "maxItems": 12, "items": _EXERCISE},
    },
}
MAX_COMPLETION_TOKENS = 1_200  # a day of at most 12 exercises is ~600 tokens of JSON; room to spare
SYSTEM_PROMPT = (
    "You are a certified personal trainer. Answer with one workout day as JSON that follows "
    "the given schema: each exercise has either reps or seconds (the other is null)."
)


def prompt_for(plan: Plan, day: int) -> str:
    return f"Goal: {plan.goal}\nPlan length: {plan.days} days\nWrite the workout for day {day} of {plan.days}."


def mark_failed(query, error: Classified) -> int:
    """Set still-pending days failed with the error's code; never touches generated days."""
    return (
        WorkoutPlan.update(status="failed", error_code=error.code.code,
                           error_message=redact(error.message)[:2000], updated_at=utcnow())
        .where(query & (WorkoutPlan.status == "pending"))
        .execute()
    )


def fail_remaining_days(message, error: Classified) -> None:
    """`on_give_up`: the retry budget is spent, so the pending days this attempt worked on fail
    with the last code; a day an operator set back to pending while it ran is left pending
    (the follow-up job the unique lock sends generates it)."""
    plan_id = (list(message.args) + [message.kwargs.get("plan_id")])[1]
    tried = (WorkoutPlan.plan == plan_id) & (WorkoutPlan.updated_at <= attempt_started_at(message))
    failed = mark_failed(tried, error)
    log.warning("plan generation gave up", extra={"plan_id": plan_id, "days_failed": failed, "error_code": error.code.code})


def _generate_day(client, plan: Plan, workout: WorkoutPlan) -> None:
    WorkoutPlan.update(attempts=WorkoutPlan.attempts + 1).where(WorkoutPlan.id == workout.id).execute()
    result = client.generate_json(SYSTEM_PROMPT, prompt_for(plan, workout.day), WORKOUT_DAY_SCHEMA, "workout_day",
                                  max_completion_tokens=MAX_COMPLETION_TOKENS)
    # Guarded: a day another run already finished is left as it is.
    WorkoutPlan.update(
        status="generated", content=result.data, error_code=None, error_message=None,
        cost_usd=WorkoutPlan.cost_usd + result.cost_usd, updated_at=utcnow(),
    ).where((WorkoutPlan.id == workout.id) & (WorkoutPlan.status == "pending")).execute()


def _pending_days(plan: Plan) -> list[WorkoutPlan]:
    return list(WorkoutPlan.select().where((WorkoutPlan.plan == plan) & (WorkoutPlan.status == "pending"))
                .order_by(WorkoutPlan.day))


@fleet_actor(queue_name="workouts", service="openai", unique=True, on_give_up=fail_remaining_days,
             time_limit=30 * 60_000)
def generate_user_workout_plan(user_id: int, plan_id: int) -> None:
    """Generate every pending day of a plan; generated days are skipped, so a rerun is cheap."""
    from core.clients.openai_client import OpenAIClient
    from core.settings import get_settings

    plan = Plan.get_or_none((Plan.id == plan_id) & (Plan.user == user_id))
    if plan is None:
        raise JobError("ERR_NOT_FOUND", f"plan {plan_id} of user {user_id} does not exist")
    client = OpenAIClient(get_settings())
    permanent: list[Classified] = []
    tried: set[int] = set()
    # Days set back to pending while the job runs are picked up by the next pass; one reset
    # after the last pass gets a follow-up job when the unique lock is released.
    while pending := [w for w in _pending_days(plan) if w.id not in tried]:
        for workout in pending:
            fencing.check()  # a copy whose message was redelivered (its worker hung) stops here
            tried.add(workout.id)
            try:
                _generate_day(client, plan, workout)
            except Exception as exc:
                error = classify(exc)
                if error.retryable:
                    raise  # the job retries later; days generated so far stay done
                permanent.append(error)
                if error.code.code in ACCOUNT_WIDE:
                    mark_failed(WorkoutPlan.plan == plan, error)
                    break
                mark_failed(WorkoutPlan.id == workout.id, error)
        if permanent and permanent[-1].code.code in ACCOUNT_WIDE:
            break
    if permanent:
        # The failed days carry their codes; failing the job too makes it count in JobLog.
        last = permanent[-1]
        raise JobError(last.code.code, f"{len(permanent)} day(s) of plan {plan_id} failed: {last.message}")


# -- operations ------------------------------------------------------------------------

@dataclass
class FailedPlan:
    plan_id: int
    user_id: int
    failed_days: int


def create_plan(user_id: int, days: int, goal: str, *, generate: bool = False) -> Plan:
    """The plan and its pending days; with `generate`, its generation job too, written to the
    outbox in the same transaction and sent once it has committed (NotSent when Redis refused:
    the scheduler sends it again)."""
    with outbox() as box:
        plan = Plan.create(user=user_id, goal=goal, days=days)
        now = utcnow()
        WorkoutPlan.insert_many(
            [{"plan": plan.id, "day": d, "status": "pending", "created_at": now, "updated_at": now} for d in range(1, days + 1)]
        ).execute()
        if generate:
            box.add(generate_user_workout_plan, int(user_id), plan.id)
        box.saved = f"Plan #{plan.id} (User #{user_id}) with {days} pending day(s)"
    return plan


def _stagger(calls: int) -> float:
    """Seconds to delay a bulk job of `calls` calls to its place in the OpenAI budget's stream;
    0 when Redis cannot say (the job is not held back for that)."""
    from core.openai_budget import openai_budget

    if not calls:
        return 0.0
    try:
        return openai_budget().stagger(calls)
    except Exception as exc:
        if not is_infrastructure(exc):
            raise
        return 0.0


def dispatch(user_id: int, plan_id: int, calls: int = 0):
    """Send the generation job; None when one for this plan is already queued or running. A bulk
    path says how many `calls` (days) the job will make: it is then delayed to its place in a
    stream at the OpenAI budget, so a backlog never reaches the workers all at once."""
    delay = _stagger(calls)
    return generate_user_workout_plan.send_with_options(args=(int(user_id), int(plan_id)),
                                                        delay=int(delay * 1000) or None)


def retry_estimate(days: int) -> str:
    """How long the OpenAI budget needs for `days` days, for a confirmation ("≈ 42 min at 240
    requests/min"), or "" without a pace."""
    from core.clients.openai_client import estimate_tokens
    from core.openai_budget import openai_budget

    tokens = estimate_tokens(SYSTEM_PROMPT, "Goal: strength\nPlan length: 28 days") + MAX_COMPLETION_TOKENS // 3
    return openai_budget().estimate(days, tokens)


def plans_with_pending_days(plan_id: int | None = None):
    """(user id, plan id) of every plan with pending days (or of `plan_id`), in plan order."""
    where = WorkoutPlan.status == "pending"
    if plan_id is not None:
        where &= WorkoutPlan.plan == plan_id
    return (WorkoutPlan.select(Plan.user, WorkoutPlan.plan).join(Plan).where(where)
            .group_by(Plan.user, WorkoutPlan.plan).order_by(WorkoutPlan.plan).tuples())


def count_plans_with_pending_days() -> int:
    return WorkoutPlan.select(fn.COUNT(WorkoutPlan.plan.distinct())).where(WorkoutPlan.status == "pending").scalar() or 0


def generate_pending(plan_id: int | None = None) -> tuple[int, int]:
    """One generation job for each plan with pending days (or for `plan_id`), a chunk of plans
    a round trip; returns (sent, already queued or running)."""
    return generate_user_workout_plan.send_many(plans_with_pending_days(plan_id).iterator())


def retry_in_chunks(plans: list[FailedPlan], reset: Callable[[list[FailedPlan]], int]) -> Iterator[tuple[FailedPlan, bool, int]]:
    """Reset a chunk of plans (`reset` returns the days it reset) and write a job for each to the
    outbox in the same transaction, then send them; yields (plan, whether a job was sent rather
    than found queued or running, days reset with its chunk or 0). NotSent when Redis refused
    a chunk's jobs: its days are pending and the scheduler sends them."""
    for i in range(0, len(plans), CHUNK):
        chunk = plans[i:i + CHUNK]
        with outbox() as box:
            days = reset(chunk)
            messages = box.add_many(generate_user_workout_plan, [(int(p.user_id), int(p.plan_id)) for p in chunk],
                                    [_stagger(p.failed_days) for p in chunk])
            box.saved = f"{days} failed day(s) of {len(chunk)} plan(s) set back to pending"
        for n, (plan, message) in enumerate(zip(chunk, messages)):
            yield plan, box.was_sent(message), days if n == 0 else 0


def retry_days(day_ids: list[int]) -> tuple[int, int, int]:
    """Set these failed days back to pending and write a generation job for each of their plans
    to the outbox in the same transaction, then send them (the panel's "Retry selected");
    (days reset, plans, jobs sent rather than found queued or running). NotSent when Redis
    refused: the days are pending and the scheduler sends the jobs."""
    with outbox() as box:
        plans = sorted(set(WorkoutPlan.select(Plan.user, WorkoutPlan.plan).join(Plan)
                           .where(WorkoutPlan.id.in_(day_ids) & (WorkoutPlan.status == "failed")).tuples()))
        reset = reset_days(day_ids)
        messages = [box.add(generate_user_workout_plan, int(user_id), int(plan_id)) for user_id, plan_id in plans]
        box.saved = f"{reset} day(s) of {len(plans)} plan(s) set back to pending"
    return reset, len(plans), sum(box.was_sent(m) for m in messages)


ECONOMY_KIND = "workout_days"  # actors/workout_days.py: failed days retried as a batch, maybe at the provider


def held_by_batches():
    """Days an unfinished `workout_days` batch holds: they stay failed until it settles them, and
    no reset or retry takes them meanwhile (the provider would answer them too)."""
    return (BatchItem.select(BatchItem.key).join(Batch, on=(BatchItem.batch == Batch.id))
            .where((Batch.kind == ECONOMY_KIND) & BatchItem.status.in_(BatchItem.OPEN)))


def failed_filter(plan_id: int | None = None, user_id: int | None = None, error_code: str | None = None):
    where = (WorkoutPlan.status == "failed") & WorkoutPlan.id.cast("TEXT").not_in(held_by_batches())
    if plan_id is not None:
        where &= WorkoutPlan.plan == plan_id
    if user_id is not None:
        where &= Plan.user == user_id
    if error_code is not None:
        where &= WorkoutPlan.error_code == error_code
    return where


def failed_plans(where) -> list[FailedPlan]:
    """Failed days grouped by plan, in one query."""
    rows = (
        WorkoutPlan.select(WorkoutPlan.plan, Plan.user, fn.COUNT(WorkoutPlan.id).alias("n"))
        .join(Plan).where(where).group_by(WorkoutPlan.plan, Plan.user).order_by(WorkoutPlan.plan).tuples()
    )
    return [FailedPlan(plan_id, user_id, n) for plan_id, user_id, n in rows]


def _reset_failed(column, ids: list[int]) -> int:
    return sum(1 for _ in _reset_failed_listed(column, ids))


def _reset_failed_listed(column, ids: list[int]) -> Iterator[tuple[int, int, int]]:
    """Set the failed days among `ids` back to pending, an UPDATE … RETURNING a chunk; yields
    (day id, plan id, day) of each, in id order within a chunk."""
    for i in range(0, len(ids), CHUNK):
        with database.atomic():
            rows = list(WorkoutPlan.update(status="pending", updated_at=utcnow())
                        .where((WorkoutPlan.status == "failed") & column.in_(ids[i:i + CHUNK])
                               & WorkoutPlan.id.cast("TEXT").not_in(held_by_batches()))
                        .returning(WorkoutPlan.id, WorkoutPlan.plan, WorkoutPlan.day).tuples().execute())
        yield from sorted(rows)


def reset_plans(plan_ids: list[int]) -> int:
    """Failed days of these plans back to pending, an UPDATE per chunk of plans."""
    return _reset_failed(WorkoutPlan.plan, plan_ids)


def reset_plans_listed(plan_ids: list[int]) -> Iterator[tuple[int, int, int]]:
    """As `reset_plans`, yielding (day id, plan id, day) of each day it reset."""
    return _reset_failed_listed(WorkoutPlan.plan, plan_ids)


def reset_days(day_ids: list[int]) -> int:
    """These days back to pending if they failed, an UPDATE per chunk."""
    return _reset_failed(WorkoutPlan.id, day_ids)


def stale_plans(hours: float) -> list[tuple[int, int, int]]:
    """(user id, plan id, stale days) of plans with days pending for longer than `hours`."""
    cutoff = utcnow() - timedelta(hours=hours)
    return list(
        WorkoutPlan.select(Plan.user, WorkoutPlan.plan, fn.COUNT(WorkoutPlan.id)).join(Plan)
        .where((WorkoutPlan.status == "pending") & (WorkoutPlan.updated_at <= cutoff))
        .group_by(Plan.user, WorkoutPlan.plan).order_by(WorkoutPlan.plan).tuples()
    )


def status_counts(plan_id: int | None = None, user_id: int | None = None, stale_hours: float = 2) -> dict:
    where = WorkoutPlan.id.is_null(False)
    if plan_id is not None:
        where &= WorkoutPlan.plan == plan_id
    if user_id is not None:
        where &= Plan.user == user_id
    counts = dict(WorkoutPlan.select(WorkoutPlan.status, fn.COUNT(WorkoutPlan.id)).join(Plan)
                  .where(where).group_by(WorkoutPlan.status).tuples())
    cutoff = utcnow() - timedelta(hours=stale_hours)
    stale = (WorkoutPlan.select().join(Plan)
             .where(where & (WorkoutPlan.status == "pending") & (WorkoutPlan.updated_at < cutoff)).count())
    return {"pending": counts.get("pending", 0), "generated": counts.get("generated", 0),
            "failed": counts.get("failed", 0), "stale_pending": stale}


def user_exists(user_id: int) -> bool:
    return User.select().where(User.id == user_id).exists()


def plan_exists(plan_id: int) -> bool:
    return Plan.select().where(Plan.id == plan_id).exists()


def failed_days_by_code() -> dict[str, int]:
    rows = (WorkoutPlan.select(WorkoutPlan.error_code, fn.COUNT(SQL("*")))
            .where(WorkoutPlan.error_code.in_(list(CODES)) & (WorkoutPlan.status == "failed"))
            .group_by(WorkoutPlan.error_code).tuples())
    return dict(rows)


# -- scheduled tasks -------------------------------------------------------------------------
# What the schedule emits by name: the same operations as `fleet workouts retry-failed` and
# `fleet workouts rescue-stale`.

def rescue_stale(hours: float) -> tuple[int, int]:
    """Dispatch plans with days pending longer than `hours`; (plans found, jobs sent)."""
    stale = stale_plans(hours)
    return len(stale), sum(1 for user_id, plan_id, days in stale if dispatch(user_id, plan_id, days) is not None)


@task("workouts.retry-failed")
@fleet_actor(queue_name="maintenance", retry_delays=(60, 300), time_limit=60 * 60_000)
def retry_failed_plans(reset: bool = False) -> None:
    """Every failed day: only back to pending with `reset`, else reset and one job a plan."""
    plans = failed_plans(failed_filter())
    if reset:
        days = reset_plans([p.plan_id for p in plans])
        log.info("failed days reset to pending", extra={"plans": len(plans), "days": days})
        return
    try:
        sent = sum(s for _, s, _ in retry_in_chunks(plans, lambda chunk: reset_plans([c.plan_id for c in chunk])))
    except NotSent as exc:  # the days are pending and their jobs in the outbox: nothing to retry here
        log.warning("failed plans retried; their jobs wait in the outbox", extra={"reason": str(exc)})
        return
    log.info("failed plans retried", extra={"plans": len(plans), "dispatched": sent})


@task("workouts.rescue-stale")
@fleet_actor(queue_name="maintenance", retry_delays=(60, 300))
def rescue_stale_plans(hours: float = 2) -> None:
    """Re-dispatch plans whose days stay pending longer than `hours` with no job in flight."""
    found, dispatched = rescue_stale(hours)
    log.info("stale plans rescued", extra={"plans": found, "dispatched": dispatched})
