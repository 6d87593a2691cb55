"""The sweeps: never two runs of one at once; they only enqueue data jobs, a page at a time."""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import contextmanager

from peewee import SQL, fn

from actors.runtime import TASKS, fleet_actor, task
from actors.series.rows import (
    EPISODES,
    KINDS,
    PAGE,
    SERIES,
    Kind,
    check_hours,
    matching_pages,
    missing_pages,
    missing_where,
    stale_pages,
    stale_where,
)
from core import trace
from core.errors import FleetError, classify, is_infrastructure
from core.identity import process_id
from core.locks import LockHeld, RedisLock
from core.redact import redact
from core.state import state_redis
from db.models import utcnow
from db.models.jobs import JobLog

log = logging.getLogger("fleet.series")

SWEEP_LOCK_TTL = 60  # seconds; renewed every page, so a crashed run frees its sweep within a minute
SWEEP_OPTIONS = dict(queue_name="sweeps", unique=True, time_limit=60 * 60_000, retry_delays=(30, 300))


class SweepRunning(FleetError):
    """Another run of the same sweep holds its lock."""


class SweepStalled(FleetError):
    """This run stalled longer than its lock lives and lost it; it stops (a job retries)."""


def _lock(client, task_name: str, token: str = "") -> RedisLock:
    return RedisLock(client, f"fleet:sweep:{task_name}", token, SWEEP_LOCK_TTL)


def running_sweep(task_name: str) -> str | None:
    """Who runs the sweep now ("host:pid since HH:MM:SS UTC"), or None."""
    client = state_redis()
    holder = _lock(client, task_name).holder() if client is not None else None
    return holder.rsplit(" #", 1)[0] if holder else None


@contextmanager
def sweep_lock(task_name: str):
    """Hold the sweep's lock for the block, which renews it by calling what it gets; SweepRunning
    when another run holds it, SweepStalled from the renewal when this one lost it."""
    client = state_redis()
    if client is None:
        raise FleetError("sweeps need a Redis for their lock: set FLEET_STATE_REDIS_URL")
    lock = _lock(client, task_name, f"{process_id()} since {utcnow():%H:%M:%S} UTC #{uuid.uuid4().hex}")
    try:
        with lock:  # released on every way out; one that expired meanwhile (a stall) is only logged
            yield lambda: _renew(lock, task_name)
    except LockHeld as held:
        if held.lock is not lock:
            raise
        raise SweepRunning(f"{task_name} is already running ({running_sweep(task_name) or 'just finished'}); "
                           "nothing done") from None


def _renew(lock: RedisLock, task_name: str) -> None:
    if not lock.renew():
        raise SweepStalled(f"{task_name} stalled longer than {SWEEP_LOCK_TTL} s and lost its lock (another run "
                           "may have started); this run stopped, its jobs so far are queued")


class SweepInterrupted(FleetError):
    """Redis (or the database) refused a sweep run by the CLI: what was queued before stays
    queued, no unique lock is left without its message, and the next run finds the other rows."""


def enqueue_pages(kind: Kind, pages: Iterable[list[int]], progress: Callable[[int], None] | None = None,
                  renew: Callable[[], object] | None = None) -> dict:
    """A data job for every id of every page: one `send_many` a page. Counts found, enqueued
    and already queued (a data job for that row is queued or running). When Redis or the
    database refuses, the error goes on (send_many gave back the locks of the page it could not
    send) carrying the jobs queued before it as `fleet_enqueued`."""
    found = enqueued = already = 0
    try:
        for ids in pages:
            sent, skipped = kind.data_job.send_many(((i,) for i in ids), chunk=len(ids))
            found += len(ids)
            enqueued += sent
            already += skipped
            if renew:
                renew()
            if progress:
                progress(found)
    except Exception as exc:
        exc.fleet_enqueued = enqueued  # for the CLI's line (`run_here`); a job just waits out the outage
        raise
    return {"found": found, "enqueued": enqueued, "already_queued": already}


def import_missing(kind: Kind, include_failed: bool = False, progress: Callable[[int], None] | None = None) -> dict:
    """The import-missing-data sweep, now, in this process; SweepRunning if it runs elsewhere."""
    with sweep_lock(kind.import_task()) as renew:
        counts = enqueue_pages(kind, missing_pages(kind.model, include_failed), progress, renew)
    log.info("sweep done", extra={"sweep": kind.import_task(), **counts})
    return {**counts, "include_failed": include_failed}


def check_updates(kind: Kind, hours: float, progress: Callable[[int], None] | None = None) -> dict:
    """The check-data-updates sweep over rows older than `hours`, now, in this process."""
    check_hours(hours)
    with sweep_lock(kind.check_task()) as renew:
        counts = enqueue_pages(kind, stale_pages(kind.model, hours), progress, renew)
    log.info("sweep done", extra={"sweep": kind.check_task(), **counts})
    return {**counts, "hours": hours}


def _as_job(sweep: Callable[[], dict]) -> dict:
    """A sweep run as a job: another run in progress means this one has nothing to do."""
    try:
        return sweep()
    except SweepRunning as exc:
        log.info("sweep not run", extra={"reason": str(exc)})
        return {"not_run": str(exc)}


@task("series.import-missing-data")
@fleet_actor(**SWEEP_OPTIONS)
def import_missing_series_data(include_failed: bool = False) -> dict:
    """Dispatch a data job for every series never imported."""
    return _as_job(lambda: import_missing(SERIES, include_failed))


@task("episodes.import-missing-data")
@fleet_actor(**SWEEP_OPTIONS)
def import_missing_episodes_data(include_failed: bool = False) -> dict:
    """Dispatch a data job for every episode never imported."""
    return _as_job(lambda: import_missing(EPISODES, include_failed))


@task("series.check-data-updates")
@fleet_actor(**SWEEP_OPTIONS)
def check_series_data_updates(hours: float = 24) -> dict:
    """Dispatch a data job for every series whose data is older than `hours`."""
    return _as_job(lambda: check_updates(SERIES, hours))


@task("episodes.check-data-updates")
@fleet_actor(**SWEEP_OPTIONS)
def check_episodes_data_updates(hours: float = 48) -> dict:
    """Dispatch a data job for every episode whose data is older than `hours`."""
    return _as_job(lambda: check_updates(EPISODES, hours))


def sweep_rows(task_name: str, **params) -> int:
    """How many rows the sweep would find now (for a progress bar)."""
    kind, action = _split(task_name)
    model = kind.model
    where = (missing_where(model, params.get("include_failed", False)) if action == "import-missing-data"
             else stale_where(model, params.get("hours", kind.default_hours)))
    return model.select(fn.COUNT(SQL("*"))).where(where).scalar() or 0


def _split(task_name: str) -> tuple[Kind, str]:
    kind_name, _, action = task_name.partition(".")
    return KINDS[kind_name], action


def run_here(task_name: str, progress: Callable[[int], None] | None = None, **params) -> dict:
    """Run a sweep now in this process (the CLI). The run gets a JobLog row as a job's run
    would (queue `cli`), so the statistics and the dashboard count it; SweepRunning when it
    runs elsewhere."""
    kind, action = _split(task_name)
    sweep = import_missing if action == "import-missing-data" else check_updates
    started, clock = utcnow(), time.monotonic()
    status, code, message = "failed", None, None
    try:
        counts = sweep(kind, progress=progress, **params)
        status, message = "success", json.dumps(counts, sort_keys=True)
        return counts
    except SweepRunning:
        status = None  # this run did nothing: no row
        raise
    except Exception as exc:
        error = classify(exc)
        code, message = error.code.code, redact(error.message)[:2000]
        if is_infrastructure(exc):
            raise SweepInterrupted(f"{task_name} stopped: {error.message}; {getattr(exc, 'fleet_enqueued', 0)} data "
                                   "job(s) were queued before that, the rows left are found by the next run") from None
        raise
    finally:
        if status:
            JobLog.create(run_id=os.urandom(8).hex(), job_class=SWEEP_ACTORS[task_name].actor_name,
                          message_id=str(uuid.uuid4()), queue="cli", status=status, error_code=code, message=message,
                          args=json.dumps({"args": [], "kwargs": params}), duration_seconds=time.monotonic() - clock,
                          trace_id=trace.trace_id(), worker=f"cli:{process_id()}",
                          created_at=started, finished_at=utcnow())


def sync_rows(kind: Kind, row_ids: list[int]) -> dict:
    """Data jobs for these rows now (the panel's "Sync selected")."""
    return enqueue_pages(kind, [row_ids[i:i + PAGE] for i in range(0, len(row_ids), PAGE)])


@fleet_actor(queue_name="panel", unique=True, time_limit=60 * 60_000, retry_delays=(10, 60))
def sync_matching(kind: str, spec: dict) -> dict:
    """A data job for every row that matches the panel's filter; its counts go to its JobLog row."""
    return {**enqueue_pages(KINDS[kind], matching_pages(KINDS[kind], spec)), "kind": kind, "filter": spec}


SWEEP_ACTORS = {name: TASKS[name] for kind in KINDS.values() for name in (kind.import_task(), kind.check_task())}
SWEEPS_BY_ACTOR = {actor.actor_name: name for name, actor in SWEEP_ACTORS.items()}
