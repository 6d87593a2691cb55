""""Retry all matching the filter": a background job and its progress record in Redis.

The panel counts the matching plans, records `fleet:bulk:<id>` and sends
`retry_matching_plans`; a worker walks the plans in chunks (reset the matching days
to pending, then dispatch one generation job a plan) and keeps the record up to date.
Workers know this actor through `actors/all.py` importing this module.
"""
from __future__ import annotations

import json
import logging
import uuid

from peewee import fn

from actors.base import fleet_actor
from admin.plan_query import describe, matching
from db.models import Plan, WorkoutPlan, utcnow
from fleet import FleetError
from fleet.state import state_redis
from fleet.workouts import CHUNK, failed_plans, reset_days, retry_in_chunks

log = logging.getLogger("fleet.panel.bulk")

RECORD_TTL = 24 * 3600
QUEUE = "panel"
INTEGERS = ("plans", "days", "processed", "dispatched", "in_flight", "reset")  # fields of the record


def _key(bulk_id: str) -> str:
    return f"fleet:bulk:{bulk_id}"


def _redis():
    client = state_redis()
    if client is None:
        raise FleetError("bulk retries need a Redis for their progress: set FLEET_STATE_REDIS_URL")
    return client


def _update(bulk_id: str, **fields) -> None:
    client = _redis()
    with client.pipeline() as pipe:
        pipe.hset(_key(bulk_id), mapping={k: "" if v is None else str(v) for k, v in fields.items()})
        pipe.expire(_key(bulk_id), RECORD_TTL).execute()


def get_record(bulk_id: str) -> dict | None:
    raw = _redis().hgetall(_key(bulk_id))
    if not raw:
        return None
    record = {k.decode(): v.decode() for k, v in raw.items()}
    for name in INTEGERS:
        if name in record:
            record[name] = int(record[name] or 0)
    record["filter"] = json.loads(record.get("filter") or "{}")
    return record


def count_matching_plans(spec: dict) -> int:
    return (WorkoutPlan.select(fn.COUNT(WorkoutPlan.plan.distinct())).join(Plan)
            .where(matching(spec)).scalar() or 0)


def start_retry(spec: dict, started_by: str) -> tuple[str, int]:
    """Record and send the job; (bulk id, matching plans). Nothing is sent when none match."""
    matching(spec)  # refuse a bad filter here, not in the worker
    plans = count_matching_plans(spec)
    if not plans:
        return "", 0
    bulk_id = uuid.uuid4().hex[:12]
    _update(bulk_id, id=bulk_id, kind="retry_failed_plans", status="queued", filter=json.dumps(spec),
            description=describe(spec), plans=plans, days=0, processed=0, dispatched=0, in_flight=0, reset=0,
            started_by=started_by, created_at=utcnow().isoformat(timespec="seconds"), finished_at=None, error=None)
    retry_matching_plans.send(bulk_id, spec)
    return bulk_id, plans


def _matching_day_ids(where, plan_ids: list[int]) -> list[int]:
    return [row[0] for row in WorkoutPlan.select(WorkoutPlan.id).join(Plan)
            .where(where & WorkoutPlan.plan.in_(plan_ids)).tuples()]


@fleet_actor(queue_name=QUEUE, time_limit=60 * 60_000, retry_delays=(10, 60))
def retry_matching_plans(bulk_id: str, spec: dict) -> None:
    """Reset the matching failed days to pending and dispatch a generation job per plan.

    Idempotent: a rerun finds the days it already reset no longer failed.
    """
    where = matching(spec)
    _update(bulk_id, status="running", started_at=utcnow().isoformat(timespec="seconds"))
    try:
        plans = failed_plans(where)
        _update(bulk_id, plans=len(plans), days=sum(p.failed_days for p in plans))
        processed = dispatched = in_flight = reset = 0
        # only the matching days of a chunk's plans go back to pending, all before their jobs start
        chunks = retry_in_chunks(plans, lambda chunk: reset_days(_matching_day_ids(where, [p.plan_id for p in chunk])))
        for _, sent, days in chunks:
            dispatched += sent
            in_flight += not sent
            reset += days
            processed += 1
            if processed % CHUNK == 0 or processed == len(plans):
                _update(bulk_id, processed=processed, dispatched=dispatched, in_flight=in_flight, reset=reset)
    except Exception as exc:
        _update(bulk_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:500],
                finished_at=utcnow().isoformat(timespec="seconds"))
        raise
    _update(bulk_id, status="done", finished_at=utcnow().isoformat(timespec="seconds"))
    log.info("bulk retry done", extra={"bulk_id": bulk_id, "dispatched": dispatched, "in_flight": in_flight})
