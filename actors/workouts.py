"""AI generation of workout plans, one OpenAI call a plan day (seed 000)."""
from __future__ import annotations

import logging

from actors.base import fleet_actor
from db.models import Plan, WorkoutPlan, utcnow
from fleet.errors import Classified, JobError, classify
from fleet.redact import redact

log = logging.getLogger("fleet.workouts")

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
SYSTEM_PROMPT = (
    "You are a certified personal trainer. Answer with one workout day as JSON that follows "
    "the given schema: each exercise has either reps or seconds (the other is null)."
)


def _prompt(plan: Plan, day: int) -> str:
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
    """`on_give_up`: the retry budget is spent, so the plan's pending days fail with the last code."""
    plan_id = (list(message.args) + [message.kwargs.get("plan_id")])[1]
    failed = mark_failed(WorkoutPlan.plan == plan_id, error)
    log.warning("plan generation gave up", extra={"plan_id": plan_id, "days_failed": failed, "error_code": error.code.code})


def _generate_day(client, plan: Plan, workout: WorkoutPlan) -> None:
    WorkoutPlan.update(attempts=WorkoutPlan.attempts + 1).where(WorkoutPlan.id == workout.id).execute()
    result = client.generate_json(SYSTEM_PROMPT, _prompt(plan, workout.day), WORKOUT_DAY_SCHEMA, "workout_day")
    # Guarded: a day another run already finished is left as it is.
    WorkoutPlan.update(
        status="generated", content=result.data, error_code=None, error_message=None,
        cost_usd=WorkoutPlan.cost_usd + result.cost_usd, updated_at=utcnow(),
    ).where((WorkoutPlan.id == workout.id) & (WorkoutPlan.status == "pending")).execute()


@fleet_actor(queue_name="workouts", service="openai", unique=True, on_give_up=fail_remaining_days,
             time_limit=30 * 60_000)
def generate_user_workout_plan(user_id: int, plan_id: int) -> None:
    """Generate every pending day of a plan; generated days are skipped, so a rerun is cheap."""
    from fleet.clients.openai_client import OpenAIClient
    from fleet.settings import get_settings

    plan = Plan.get_or_none((Plan.id == plan_id) & (Plan.user == user_id))
    if plan is None:
        raise JobError("ERR_NOT_FOUND", f"plan {plan_id} of user {user_id} does not exist")
    client = OpenAIClient(get_settings())
    pending = list(WorkoutPlan.select().where((WorkoutPlan.plan == plan) & (WorkoutPlan.status == "pending"))
                   .order_by(WorkoutPlan.day))
    permanent: list[Classified] = []
    for workout in pending:
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
    if permanent:
        # The failed days carry their codes; failing the job too makes it count in JobLog.
        last = permanent[-1]
        raise JobError(last.code.code, f"{len(permanent)} day(s) of plan {plan_id} failed: {last.message}")
