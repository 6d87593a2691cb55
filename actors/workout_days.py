"""Failed workout days retried as a batch, one item a day, on the live or the economy lane.

`fleet workouts retry-failed --lane economy` puts the failed days into a batch of this kind on
the economy lane: each day's request (the same prompt, schema and model as the live generation)
goes to OpenAI's Batch API, and the scheduled poll stores each answer as the live job does
(validated against the schema), at half the price. While the batch holds a day it stays `failed`
with its last error, and no reset touches it (`workouts.reset_*` skip days held by an open item),
so neither the nightly reset nor the stale-plan rescue generates it a second time.
"""
from __future__ import annotations

from actors.batches import Ask, Economy, ItemRun, batch_kind, create_batch
from actors.workouts import (
    MAX_COMPLETION_TOKENS,
    SYSTEM_PROMPT,
    WORKOUT_DAY_SCHEMA,
    FailedPlan,
    failed_plans,
    prompt_for,
)
from core.errors import JobError
from db.models import utcnow
from db.models.batches import Batch
from db.models.workouts import Plan, WorkoutPlan

KIND = "workout_days"


def _day(run: ItemRun) -> tuple[WorkoutPlan, Plan]:
    day = WorkoutPlan.get_or_none(WorkoutPlan.id == int(run.item.key))
    if day is None:
        raise JobError("ERR_NOT_FOUND", f"workout day {run.item.key} no longer exists")
    return day, Plan.get_by_id(day.plan_id)


def _ask(day: WorkoutPlan, plan: Plan) -> Ask:
    return Ask(SYSTEM_PROMPT, prompt_for(plan, day.day), WORKOUT_DAY_SCHEMA, "workout_day", MAX_COMPLETION_TOKENS)


def _store(day: WorkoutPlan, content: dict, cost_usd: float) -> dict:
    """The day generated, unless another run already generated it (then nothing changes)."""
    stored = (WorkoutPlan.update(status="generated", content=content, error_code=None, error_message=None,
                                 cost_usd=WorkoutPlan.cost_usd + cost_usd, updated_at=utcnow())
              .where((WorkoutPlan.id == day.id) & (WorkoutPlan.status != "generated")).execute())
    return {"plan": day.plan_id, "day": day.day, "stored": bool(stored)}


def economy_asks(run: ItemRun) -> list[Ask]:
    day, plan = _day(run)
    if day.status == "generated":
        return []
    return [_ask(day, plan)]


def economy_settle(run: ItemRun, answers: list[dict]) -> dict:
    day, _ = _day(run)
    if not answers:
        return {"plan": day.plan_id, "day": day.day, "stored": False}
    WorkoutPlan.update(attempts=WorkoutPlan.attempts + 1).where(WorkoutPlan.id == day.id).execute()
    return _store(day, answers[0], run.cost_usd)


@batch_kind(KIND, label="Workout days", queue_name="workouts", service="openai",
            economy=Economy(economy_asks, economy_settle))
def generate_day(run: ItemRun) -> dict:
    """The live lane: one day generated now, as the plan's generation job would."""
    from core.clients.openai_client import OpenAIClient
    from core.settings import get_settings

    day, plan = _day(run)
    if day.status == "generated":
        return {"plan": day.plan_id, "day": day.day, "stored": False}
    ask = _ask(day, plan)
    WorkoutPlan.update(attempts=WorkoutPlan.attempts + 1).where(WorkoutPlan.id == day.id).execute()
    answer = OpenAIClient(get_settings()).generate_json(ask.system, ask.prompt, ask.schema, ask.schema_name,
                                                         max_completion_tokens=ask.max_completion_tokens)
    run.charge(answer.cost_usd, answer.prompt_tokens + answer.completion_tokens)
    return _store(day, answer.data, answer.cost_usd)


def start_retry_days(where, *, lane: str, created_by: str | None = None) -> tuple[Batch | None, list[FailedPlan]]:
    """A batch of every failed day matching `where` (a condition on WorkoutPlan joined with Plan),
    one item a day, on `lane`; (None, []) when no day matches."""
    plans = failed_plans(where)
    days = [d for d, in WorkoutPlan.select(WorkoutPlan.id).join(Plan).where(where).order_by(WorkoutPlan.id).tuples()]
    if not days:
        return None, []
    title = f"Retry {len(days)} failed workout day(s) of {len(plans)} plan(s)"
    return create_batch(KIND, title, [str(d) for d in days], created_by=created_by, lane=lane), plans
