"""The panel's "Retry all matching the filter": a batch of kind `workouts_retry`, one item a plan.

The panel lists the matching plans into a batch of this kind and redirects to its page; each
item resets the plan's matching failed days to pending and dispatches its generation job.
Progress, cancel, resume and retry are the batch runtime's. The same days on the economy lane
are a batch of kind `workout_days` (actors/workout_days.py).
"""
from __future__ import annotations

from datetime import datetime

from peewee import SQL, fn

from actors.batches import ItemRun, batch_kind, create_batch
from actors.workouts import dispatch, failed_filter, failed_plans, reset_days
from core.errors import JobError
from db.models.batches import Batch
from db.models.workouts import Plan, WorkoutPlan

# -- the panel's filters ---------------------------------------------------------------
# A filter is a plain dict (JSON-safe, so a background job can carry it): `plan`, `user`
# (ids), `error_code`, `failed_after`, `failed_before` (ISO times, UTC). The failed-plans
# list and "Retry all matching the filter" both use `matching`, so the job acts on
# exactly the rows the operator saw.

KEYS = ("plan", "user", "error_code", "failed_after", "failed_before")


def _time(value) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def matching(spec: dict):
    """Failed days that match `spec` (conditions on Plan need the query joined with Plan)."""
    unknown = set(spec) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown filter keys {sorted(unknown)}")
    where = failed_filter(spec.get("plan"), spec.get("user"), spec.get("error_code"))
    if spec.get("failed_after") is not None:
        where &= WorkoutPlan.updated_at >= _time(spec["failed_after"])
    if spec.get("failed_before") is not None:
        where &= WorkoutPlan.updated_at < _time(spec["failed_before"])
    return where


def describe(spec: dict) -> str:
    parts = [f"{key.replace('_', ' ')} {value}" for key, value in spec.items() if value is not None]
    return ", ".join(parts) or "all failed plans"


# -- the batch kind ---------------------------------------------------------------------

RETRY_KIND = "workouts_retry"
PLAN_KEY = "Plan #"


@batch_kind(RETRY_KIND, label="Retry failed plans", queue_name="panel", many=True)
def retry_matching_plans(runs: list[ItemRun]) -> list:
    """For each plan: reset its days that match the batch's filter, then dispatch its generation
    job; a group of plans takes one query and one UPDATE. Idempotent: a rerun finds those days
    no longer failed, and the job already queued."""
    plan_ids = [int(run.item.key.removeprefix(PLAN_KEY)) for run in runs]
    users = dict(Plan.select(Plan.id, Plan.user).where(Plan.id.in_(plan_ids)).tuples())
    days = (WorkoutPlan.select(WorkoutPlan.id, WorkoutPlan.plan).join(Plan)
            .where(matching(runs[0].options["filter"]) & WorkoutPlan.plan.in_(plan_ids)).tuples())
    by_plan: dict[int, list[int]] = {}
    for day_id, plan_id in days:
        by_plan.setdefault(plan_id, []).append(day_id)
    reset_days([day for ids in by_plan.values() for day in ids])
    results: list = []
    for plan_id in plan_ids:
        if plan_id not in users:
            results.append(JobError("ERR_NOT_FOUND", f"plan {plan_id} no longer exists"))
            continue
        sent = dispatch(users[plan_id], plan_id, len(by_plan.get(plan_id, [])) or 1) is not None
        results.append({"days_reset": len(by_plan.get(plan_id, [])), "dispatched": sent})
    return results


def count_matching(spec: dict) -> tuple[int, int]:
    """(failed days, plans) that match the filter, in one query."""
    days, plans = (WorkoutPlan.select(fn.COUNT(SQL("*")), fn.COUNT(WorkoutPlan.plan.distinct())).join(Plan)
                   .where(matching(spec)).tuples().get())
    return days or 0, plans or 0


def start_retry(spec: dict, started_by: str) -> tuple[Batch | None, int]:
    """The batch retrying every plan with failed days matching `spec`, and how many plans that
    is; (None, 0) when none match. A bad filter raises ValueError before anything is created."""
    plans = failed_plans(matching(spec))
    if not plans:
        return None, 0
    batch = create_batch(RETRY_KIND, f"Retry failed plans: {describe(spec)}",
                         [f"{PLAN_KEY}{p.plan_id}" for p in plans], options={"filter": spec}, created_by=started_by)
    return batch, len(plans)
