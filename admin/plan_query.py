"""Which failed plan days a filter of the panel means, as a peewee condition.

A filter is a plain dict (JSON-safe, so a background job can carry it):
`plan`, `user` (ids), `error_code`, `failed_after`, `failed_before` (ISO times, UTC).
The failed-plans list and "Retry all matching the filter" both use `matching`, so
the job acts on exactly the rows the operator saw.
"""
from __future__ import annotations

from datetime import datetime

from db.models import WorkoutPlan
from fleet.workouts import failed_filter

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
