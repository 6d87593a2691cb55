"""Workout-plan operations shared by the CLI and the panel: create, find failed, retry, reset, rescue."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator

from peewee import fn

from db.database import database
from db.models import Plan, User, WorkoutPlan, utcnow

CHUNK = 500


@dataclass
class FailedPlan:
    plan_id: int
    user_id: int
    failed_days: int


def create_plan(user_id: int, days: int, goal: str) -> Plan:
    with database.atomic():
        plan = Plan.create(user=user_id, goal=goal, days=days)
        now = utcnow()
        WorkoutPlan.insert_many(
            [{"plan": plan.id, "day": d, "status": "pending", "created_at": now, "updated_at": now} for d in range(1, days + 1)]
        ).execute()
    return plan


def dispatch(user_id: int, plan_id: int):
    """Send the generation job; None when one for this plan is already queued or running."""
    from actors.workouts import generate_user_workout_plan

    return generate_user_workout_plan.send(int(user_id), int(plan_id))


def retry_in_chunks(plans: list[FailedPlan], reset: Callable[[list[FailedPlan]], int]) -> Iterator[tuple[FailedPlan, bool, int]]:
    """Reset a chunk of plans (`reset` returns the days it reset), then dispatch a job for each;
    yields (plan, whether a job was sent, days reset with its chunk or 0)."""
    for i in range(0, len(plans), CHUNK):
        chunk = plans[i:i + CHUNK]
        days = reset(chunk)
        for n, plan in enumerate(chunk):
            yield plan, dispatch(plan.user_id, plan.plan_id) is not None, days if n == 0 else 0


def failed_filter(plan_id: int | None = None, user_id: int | None = None, error_code: str | None = None):
    where = WorkoutPlan.status == "failed"
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


def failed_days(where) -> Iterator[WorkoutPlan]:
    """Failed days in id order, fetched in chunks (keyset pagination) so memory stays flat."""
    last = 0
    while True:
        chunk = list(WorkoutPlan.select(WorkoutPlan.id, WorkoutPlan.plan, WorkoutPlan.day).join(Plan)
                     .where(where & (WorkoutPlan.id > last)).order_by(WorkoutPlan.id).limit(CHUNK))
        if not chunk:
            return
        yield from chunk
        last = chunk[-1].id


def _reset_failed(column, ids: list[int]) -> int:
    reset = 0
    now = utcnow()
    for i in range(0, len(ids), CHUNK):
        with database.atomic():
            reset += (WorkoutPlan.update(status="pending", updated_at=now)
                      .where((WorkoutPlan.status == "failed") & column.in_(ids[i:i + CHUNK])).execute())
    return reset


def reset_plans(plan_ids: list[int]) -> int:
    """Failed days of these plans back to pending, an UPDATE per chunk of plans."""
    return _reset_failed(WorkoutPlan.plan, plan_ids)


def reset_days(day_ids: list[int]) -> int:
    """These days back to pending if they failed, an UPDATE per chunk."""
    return _reset_failed(WorkoutPlan.id, day_ids)


def stale_plans(hours: float) -> list[tuple[int, int]]:
    """(user id, plan id) of plans with days pending for longer than `hours`."""
    cutoff = utcnow() - timedelta(hours=hours)
    return list(
        WorkoutPlan.select(Plan.user, WorkoutPlan.plan).join(Plan)
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
