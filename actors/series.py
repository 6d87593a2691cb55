"""Series and episodes kept in sync with the series data API, in three stages:

- data jobs (`series_data`, `episode_data`) fetch one record, store it and set
  `data_last_updated_at`; a series' record also adds its new episodes (without data);
- import-missing sweeps find rows never imported (`data_last_updated_at IS NULL`);
- check-updates sweeps find rows whose data is older than N hours.

Sweeps only enqueue (`send_many`, a chunk of rows a round trip, unique per row) and data jobs
only fetch and store. A sweep never runs twice at once, whoever starts it (the scheduler, the
panel, the CLI): a run holds a Redis lock for as long as it works. The operations the CLI and
the panel share are here too.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable, Iterator

from peewee import SQL, Tuple, fn
from redis.exceptions import LockError

from actors.runtime import TASKS, fleet_actor, task
from core import trace
from core.budget import budget
from core.errors import Classified, FleetError, classify
from core.redact import redact
from core.settings import get_settings
from core.state import state_redis
from db.database import database
from db.models import utcnow
from db.models.jobs import JobLog
from db.models.series import Episode, Series

log = logging.getLogger("fleet.series")

PAGE = 1_000  # rows a keyset page of a sweep, and data jobs a round trip to Redis
INSERT_CHUNK = 500
SWEEP_LOCK_TTL = 60  # seconds; renewed every page, so a crashed run frees its sweep within a minute
# Errors that say the record itself is bad or unknown: import-missing sweeps skip rows that failed
# with one (unless `include_failed`). Other failures (timeouts, an outage, a refused key) are
# tried again by the next sweep.
RECORD_ERRORS = ("ERR_NOT_FOUND", "ERR_BAD_REQUEST", "ERR_INVALID_RESPONSE")
QUEUE = "data"
DEFERRALS_COUNTED = 10_000  # the dashboard counts budget deferrals of the last hour up to this ("10000+")
MAX_HOURS = 24 * 366  # "older than" beyond a year is a mistake (the bound of the CLI's --hours too)


# -- data jobs ---------------------------------------------------------------------------

_local = threading.local()


def _client():
    """The worker thread's API client (its HTTP session is not shared between threads; the
    login token is, through Redis)."""
    from core.clients.series_client import SeriesClient

    settings = get_settings()
    if getattr(_local, "settings", None) is not settings:
        _local.client, _local.settings = SeriesClient(settings), settings
    return _local.client


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value, limit: int = 255) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _or(value, fallback):
    """The API's value, or what the row has when the API gave none (0 is a value: season 0 holds the specials)."""
    return fallback if value is None else value


def record_failure(model) -> Callable:
    """An `on_give_up` hook: the row keeps its data, and gets the error's code, message and time."""

    def on_give_up(message, error: Classified) -> None:
        row_id = (list(message.args) + [message.kwargs.get(f"{model._meta.table_name}_id")])[0]
        model.update(error_code=error.code.code, error_message=redact(error.message)[:2000], failed_at=utcnow()) \
            .where(model.id == row_id).execute()
        log.warning("data job gave up", extra={"table": model._meta.table_name, "row_id": row_id,
                                               "error_code": error.code.code})

    on_give_up.__name__ = f"record_{model._meta.table_name}_failure"
    return on_give_up


def _stored(**fields) -> dict:
    return {**fields, "data_last_updated_at": utcnow(), "error_code": None, "error_message": None, "failed_at": None}


@fleet_actor(queue_name=QUEUE, service="series_api", unique=True, on_give_up=record_failure(Series))
def series_data(series_id: int) -> str | None:
    """Fetch a series' extended record with its episode list; store it and add its new episodes.

    Idempotent: a redelivered job writes the same row and the same episodes once more.
    """
    series = Series.get_or_none(Series.id == series_id)
    if series is None:
        return f"series #{series_id} no longer exists; nothing fetched"
    record = _client().get_series(series.tvdb_id, episodes=True)
    episodes = record.pop("episodes", None) or []
    with database.atomic():
        Series.update(**_stored(name=_or(_text(record.get("name")), series.name), data=record)) \
            .where(Series.id == series.id).execute()
        added = _upsert_episodes(series.id, [e for e in episodes if isinstance(e, dict) and _int(e.get("id"))])
    return f"stored series #{series.id} (TVDB {series.tvdb_id}); {len(episodes)} episode(s) listed, {added} new"


def _upsert_episodes(series_id: int, episodes: list[dict]) -> int:
    """Episodes of the series' record: new ones without data (the episode sweep imports them),
    known ones with their season, number, name and air date brought up to date. The count of new ones."""
    if not episodes:
        return 0
    ids = [e["id"] for e in episodes]
    known = sum(Episode.select().where(Episode.tvdb_id.in_(ids[i:i + INSERT_CHUNK])).count()
                for i in range(0, len(ids), INSERT_CHUNK))
    now = utcnow()
    rows = [{"series": series_id, "tvdb_id": e["id"], "season": _int(e.get("seasonNumber")),
             "number": _int(e.get("number")), "name": _text(e.get("name")), "aired": _text(e.get("aired"), 32),
             "created_at": now} for e in episodes]
    for i in range(0, len(rows), INSERT_CHUNK):
        Episode.insert_many(rows[i:i + INSERT_CHUNK]).on_conflict(
            conflict_target=[Episode.tvdb_id],
            preserve=[Episode.series, Episode.season, Episode.number, Episode.name, Episode.aired],
        ).execute()
    return len(set(ids)) - known


@fleet_actor(queue_name=QUEUE, service="series_api", unique=True, on_give_up=record_failure(Episode))
def episode_data(episode_id: int) -> str | None:
    """Fetch an episode's extended record and store it."""
    episode = Episode.get_or_none(Episode.id == episode_id)
    if episode is None:
        return f"episode #{episode_id} no longer exists; nothing fetched"
    record = _client().get_episode(episode.tvdb_id)
    Episode.update(**_stored(
        data=record, name=_or(_text(record.get("name")), episode.name),
        season=_or(_int(record.get("seasonNumber")), episode.season),
        number=_or(_int(record.get("number")), episode.number),
        aired=_or(_text(record.get("aired"), 32), episode.aired),
    )).where(Episode.id == episode.id).execute()
    return f"stored episode #{episode.id} (TVDB {episode.tvdb_id})"


# -- what a sweep works on ----------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    name: str  # "series" | "episodes": the CLI group and the word in messages
    model: type
    data_job: object  # the data actor
    default_hours: int  # of check-data-updates

    def import_task(self) -> str:
        return f"{self.name}.import-missing-data"

    def check_task(self) -> str:
        return f"{self.name}.check-data-updates"


SERIES = Kind("series", Series, series_data, 24)
EPISODES = Kind("episodes", Episode, episode_data, 48)
KINDS = {k.name: k for k in (SERIES, EPISODES)}


def missing_where(model, include_failed: bool = False):
    """Rows never imported; without `include_failed`, not those whose record the API refused."""
    where = model.data_last_updated_at.is_null()
    if not include_failed:
        where &= model.error_code.is_null() | model.error_code.not_in(RECORD_ERRORS)
    return where


def check_hours(hours: float) -> float:
    if not 0 <= hours <= MAX_HOURS:  # NaN fails too
        raise FleetError(f"hours must be between 0 and {MAX_HOURS}, not {hours!r}", exit_code=2)
    return hours


def stale_where(model, hours: float):
    return model.data_last_updated_at < utcnow() - timedelta(hours=hours)


def missing_page(model, after: int = 0, include_failed: bool = False, size: int = PAGE):
    """One page of rows never imported, in id order after id `after` (keyset), on the partial
    index of rows without data."""
    return (model.select(model.id).where(missing_where(model, include_failed) & (model.id > after))
            .order_by(model.id).limit(size))


def stale_page(model, cutoff: datetime, after: tuple | None = None, size: int = PAGE):
    """One page of rows whose data is older than `cutoff`, oldest first, after the
    (data_last_updated_at, id) pair `after` (keyset, in the order of their index)."""
    query = model.select(model.data_last_updated_at, model.id).where(model.data_last_updated_at < cutoff)
    if after is not None:
        query = query.where(Tuple(model.data_last_updated_at, model.id) > Tuple(*after))
    return query.order_by(model.data_last_updated_at, model.id).limit(size)


def missing_pages(model, include_failed: bool = False) -> Iterator[list[int]]:
    """Ids of rows never imported, a page at a time."""
    last = 0
    while ids := [i for (i,) in missing_page(model, last, include_failed).tuples()]:
        yield ids
        last = ids[-1]


def stale_pages(model, hours: float) -> Iterator[list[int]]:
    """Ids of rows whose data is older than `hours`, a page at a time. Rows a data job refreshes
    meanwhile move past the cutoff and out of the sweep."""
    cutoff, after = utcnow() - timedelta(hours=hours), None
    while rows := list(stale_page(model, cutoff, after).tuples()):
        yield [row_id for _, row_id in rows]
        after = rows[-1]


# -- sweeps: never two runs of one at once ---------------------------------------------------

class SweepRunning(FleetError):
    """Another run of the same sweep holds its lock."""


class SweepStalled(FleetError):
    """This run stalled longer than its lock lives and lost it; it stops (a job retries)."""


def _lock_key(task_name: str) -> str:
    return f"fleet:sweep:{task_name}"


def running_sweep(task_name: str) -> str | None:
    """Who runs the sweep now ("host:pid since HH:MM:SS UTC"), or None."""
    client = state_redis()
    value = client.get(_lock_key(task_name)) if client is not None else None
    return value.decode(errors="replace").rsplit(" #", 1)[0] if value else None


@contextmanager
def sweep_lock(task_name: str):
    """Hold the sweep's lock for the block, which renews it by calling what it gets; SweepRunning
    when another run holds it, SweepStalled from the renewal when this one lost it."""
    client = state_redis()
    if client is None:
        raise FleetError("sweeps need a Redis for their lock: set FLEET_STATE_REDIS_URL")
    lock = client.lock(_lock_key(task_name), timeout=SWEEP_LOCK_TTL, blocking=False, thread_local=False)
    holder = f"{socket.gethostname()}:{os.getpid()} since {utcnow():%H:%M:%S} UTC"
    if not lock.acquire(token=f"{holder} #{uuid.uuid4().hex}"):
        raise SweepRunning(f"{task_name} is already running ({running_sweep(task_name) or 'just finished'}); "
                           "nothing done")
    try:
        yield lambda: _renew(lock, task_name)
    finally:
        try:
            lock.release()
        except LockError:  # expired meanwhile (a stall longer than its TTL): nothing left to release
            log.warning("sweep lock had expired", extra={"sweep": task_name})


def _renew(lock, task_name: str) -> None:
    try:
        lock.reacquire()
    except LockError:
        raise SweepStalled(f"{task_name} stalled longer than {SWEEP_LOCK_TTL} s and lost its lock (another run "
                           "may have started); this run stopped, its jobs so far are queued") from None


def enqueue_pages(kind: Kind, pages: Iterable[list[int]], progress: Callable[[int], None] | None = None,
                  renew: Callable[[], object] | None = None) -> dict:
    """A data job for every id of every page: one `send_many` a page. Counts found, enqueued
    and already queued (a data job for that row is queued or running)."""
    found = enqueued = already = 0
    for ids in pages:
        sent, skipped = kind.data_job.send_many(((i,) for i in ids), chunk=len(ids))
        found += len(ids)
        enqueued += sent
        already += skipped
        if renew:
            renew()
        if progress:
            progress(found)
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


SWEEP_OPTIONS = dict(queue_name="sweeps", unique=True, time_limit=60 * 60_000, retry_delays=(30, 300))


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
        raise
    finally:
        if status:
            JobLog.create(run_id=os.urandom(8).hex(), job_class=SWEEP_ACTORS[task_name].actor_name,
                          message_id=str(uuid.uuid4()), queue="cli", status=status, error_code=code, message=message,
                          args=json.dumps({"args": [], "kwargs": params}), duration_seconds=time.monotonic() - clock,
                          trace_id=trace.trace_id(), worker=f"cli:{socket.gethostname()}:{os.getpid()}",
                          created_at=started, finished_at=utcnow())


SWEEP_ACTORS = {name: TASKS[name] for kind in KINDS.values() for name in (kind.import_task(), kind.check_task())}
SWEEPS_BY_ACTOR = {actor.actor_name: name for name, actor in SWEEP_ACTORS.items()}


# -- operations the CLI and the panel share ------------------------------------------------

def add_series(tvdb_ids: Iterable[int], name: str | None = None) -> tuple[int, int]:
    """Create series rows without data (the next import-missing sweep imports them), a chunk
    at a time, so any number of ids takes bounded memory; (created, already known)."""
    created = known = 0
    iterator = iter(tvdb_ids)
    while True:
        chunk = list(dict.fromkeys(next(iterator, None) for _ in range(INSERT_CHUNK)))
        chunk = [i for i in chunk if i is not None]
        if not chunk:
            return created, known
        with database.atomic():
            existing = Series.select().where(Series.tvdb_id.in_(chunk)).count()
            now = utcnow()
            Series.insert_many([{"tvdb_id": i, "name": name, "created_at": now} for i in chunk]) \
                .on_conflict_ignore().execute()
        created += len(chunk) - existing
        known += existing


def find(kind: Kind, tvdb_id: int):
    return kind.model.get_or_none(kind.model.tvdb_id == tvdb_id)


def dispatch(kind: Kind, row_id: int):
    """Send the row's data job now; None when one is already queued or running."""
    return kind.data_job.send(int(row_id))


def status_counts(kind: Kind, hours: float) -> dict:
    """The seed's troubleshooting counts: without data, older than `hours`, fresh, failed by code."""
    model = kind.model
    cutoff = utcnow() - timedelta(hours=hours)

    def count(where) -> int:
        return model.select(fn.COUNT(SQL("*"))).where(where).scalar() or 0

    failed = dict(model.select(model.error_code, fn.COUNT(SQL("*"))).where(model.error_code.is_null(False))
                  .group_by(model.error_code).order_by(model.error_code).tuples())
    without = count(model.data_last_updated_at.is_null())
    refused = count(model.error_code.in_(RECORD_ERRORS) & model.data_last_updated_at.is_null())  # on the failed index
    return {
        "kind": kind.name,
        "hours": hours,
        "without_data": without,
        "without_data_to_import": without - refused,
        "older": count(model.data_last_updated_at < cutoff),
        "fresh": count(model.data_last_updated_at >= cutoff),
        "failed_by_code": failed,
    }


# -- the panel's filters and "Sync all matching the filter" --------------------------------
# A filter is a plain dict (JSON-safe, so a background job can carry it): `never_imported`
# (true), `older_than_hours` (a number), `error_code` (a code, or "any"), `tvdb_id`, and for
# episodes `series` (a series row id). The list and the background job both use `matching`,
# so the job acts on exactly the rows shown.

FILTER_KEYS = ("never_imported", "older_than_hours", "error_code", "tvdb_id", "series")


def matching(kind: Kind, spec: dict):
    unknown = set(spec) - set(FILTER_KEYS)
    if unknown:
        raise ValueError(f"unknown filter keys {sorted(unknown)}")
    model = kind.model
    where = model.id.is_null(False)
    if spec.get("never_imported"):
        where &= model.data_last_updated_at.is_null()
    if spec.get("older_than_hours") is not None:
        hours = float(spec["older_than_hours"])
        if not 0 <= hours <= MAX_HOURS:
            raise ValueError(f"older than: hours must be between 0 and {MAX_HOURS}")
        where &= stale_where(model, hours)
    if spec.get("error_code") == "any":
        where &= model.error_code.is_null(False)
    elif spec.get("error_code"):
        where &= model.error_code == spec["error_code"]
    if spec.get("tvdb_id") is not None:
        where &= model.tvdb_id == int(spec["tvdb_id"])
    if spec.get("series") is not None:
        if model is not Episode:
            raise ValueError("only episodes belong to a series")
        where &= Episode.series == int(spec["series"])
    return where


def bounded_count(query, limit: int) -> int:
    """The rows of `query`, counted up to `limit` + 1 (enough to say "more than `limit`")."""
    return query.model.select(fn.COUNT(SQL("*"))).from_(query.limit(limit + 1).alias("counted")).scalar() or 0


def count_matching(kind: Kind, spec: dict, limit: int = 100_000) -> int:
    """How many rows match, counted up to `limit` + 1 (the panel shows "100000+" beyond)."""
    return bounded_count(kind.model.select(SQL("1")).where(matching(kind, spec)), limit)


def matching_pages(kind: Kind, spec: dict, size: int = PAGE) -> Iterator[list[int]]:
    where, last, model = matching(kind, spec), 0, kind.model
    while ids := [i for (i,) in model.select(model.id).where(where & (model.id > last))
                  .order_by(model.id).limit(size).tuples()]:
        yield ids
        last = ids[-1]


def sync_rows(kind: Kind, row_ids: list[int]) -> dict:
    """Data jobs for these rows now (the panel's "Sync selected")."""
    return enqueue_pages(kind, [row_ids[i:i + PAGE] for i in range(0, len(row_ids), PAGE)])


@fleet_actor(queue_name="panel", unique=True, time_limit=60 * 60_000, retry_delays=(10, 60))
def sync_matching(kind: str, spec: dict) -> dict:
    """A data job for every row that matches the panel's filter; its counts go to its JobLog row."""
    return {**enqueue_pages(KINDS[kind], matching_pages(KINDS[kind], spec)), "kind": kind, "filter": spec}


# -- what the dashboard and the panel show ---------------------------------------------------

@dataclass
class SweepRun:
    sweep: str
    status: str
    started_at: datetime
    duration_seconds: float | None
    counts: dict
    message: str | None
    message_id: str
    queue: str


def recent_sweep_runs(limit: int = 8) -> list[SweepRun]:
    """The newest runs of the four sweeps (as jobs or from the CLI), newest first, with their counts.
    A few small index lookups (job class, status, time), whatever the size of the job log."""
    runs = []
    for actor_name, sweep in SWEEPS_BY_ACTOR.items():
        for status in ("started", "success", "failed", "retrying"):
            for row in (JobLog.select().where((JobLog.job_class == actor_name) & (JobLog.status == status))
                        .order_by(JobLog.created_at.desc()).limit(limit)):
                try:
                    counts = json.loads(row.message) if status == "success" and row.message else {}
                except ValueError:
                    counts = {}
                runs.append(SweepRun(sweep, row.status, row.created_at, row.duration_seconds,
                                     counts if isinstance(counts, dict) else {}, row.message, row.message_id, row.queue))
    runs.sort(key=lambda r: r.started_at, reverse=True)
    return runs[:limit]


def budget_usage() -> dict:
    """The series API's shared budget now, and how many data jobs it deferred in the last hour."""
    since = utcnow() - timedelta(hours=1)
    minute = utcnow() - timedelta(minutes=1)
    names = [SERIES.data_job.actor_name, EPISODES.data_job.actor_name]
    deferred = bounded_count(JobLog.select(SQL("1")).where(
        (JobLog.error_code == "ERR_RATE_LIMIT") & (JobLog.created_at >= since) & (JobLog.status == "deferred")
        & JobLog.job_class.in_(names)), DEFERRALS_COUNTED)
    attempts = (JobLog.select(fn.COUNT(SQL("*")))
                .where(JobLog.job_class.in_(names) & JobLog.status.in_(("success", "failed", "retrying"))
                       & (JobLog.created_at >= minute)).scalar() or 0)
    usage = budget("series_api").usage()
    return {**usage, "deferred_last_hour": f"{DEFERRALS_COUNTED}+" if deferred > DEFERRALS_COUNTED else deferred,
            "requests_last_minute": attempts,
            "per_second_last_minute": round(attempts / 60, 2)}


def overview() -> dict:
    """What the dashboard shows of series data: the newest sweep runs and the API budget."""
    return {"runs": recent_sweep_runs(), "budget": budget_usage()}
