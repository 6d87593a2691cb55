"""Links both ways between a job and what it worked on.

From a row to its jobs: JobLog filters that find the jobs of a plan, a user, a series, an
episode (by the job's actor and its argument in the job-argument index) or a batch (one chunk
of it). From a job to its rows: the
links its details page shows, by actor. A domain whose jobs work on rows the panel shows adds
its actor to `RELATED` and, for the way back, a filter here.
"""
from __future__ import annotations

import re

from flask import url_for
from flask_admin.contrib.peewee import filters as f
from flask_admin.model import filters as base_filters

from actors.controls import with_argument
from admin.views.base import as_id
from db.models.batches import Batch
from db.models.jobs import JobLog
from db.models.schedule import ScheduleRun
from db.models.series import Episode, Series
from db.models.workouts import Plan

WORKOUT = "generate_user_workout_plan"
CHUNK_PREFIX = "batch_chunk_"
BATCH_VALUE = re.compile(r"([0-9a-f-]{36})(?:/(\d{1,9}))?")


class JobsOf(f.BasePeeweeFilter, base_filters.BaseIntFilter):
    """The jobs of one row: `actor` called with `argument` = the row's id, looked up in the
    job-argument index (a job's arguments are indexed with its first attempt's row)."""

    actor = ""
    argument = ""

    def __init__(self, name: str):
        super().__init__(JobLog.args, name)

    def operation(self):
        return "equals"

    def validate(self, value) -> bool:
        return as_id(value) is not None

    def apply(self, query, value):
        # `job_class || ''`: no index on the actor, whose millions of rows SQLite's planner would
        # otherwise walk; the argument index finds the row's few jobs first
        return query.where((JobLog.job_class.concat("") == self.actor) & with_argument(self.argument, int(value)))


class JobsOfPlan(JobsOf):
    actor, argument = WORKOUT, "plan_id"


class JobsOfUser(JobsOf):
    actor, argument = WORKOUT, "user_id"


class JobsOfSeries(JobsOf):
    actor, argument = "series_data", "series_id"


class JobsOfEpisode(JobsOf):
    actor, argument = "episode_data", "episode_id"


class JobsOfBatch(f.BasePeeweeFilter):
    """The chunk jobs of a batch (`<batch id>`) or of one chunk (`<batch id>/<chunk>`)."""

    def __init__(self, name: str):
        super().__init__(JobLog.args, name)

    def operation(self):
        return "equals"

    def validate(self, value) -> bool:
        return BATCH_VALUE.fullmatch(value or "") is not None

    def apply(self, query, value):
        batch_id, chunk = BATCH_VALUE.fullmatch(value).groups()
        prefix = f'{{"args": ["{batch_id}", ' + (f"{int(chunk)}]" if chunk is not None else "")
        return query.where(JobLog.job_class.startswith(CHUNK_PREFIX) & JobLog.args.startswith(prefix))


FILTERS = [JobsOfPlan("Plan"), JobsOfUser("User"), JobsOfSeries("Series"), JobsOfEpisode("Episode"),
           JobsOfBatch("Batch")]


def jobs_url(of: str, value) -> str:
    """The job logs of one row: `of` is plan, user, series, episode or batch (a batch's value
    may name a chunk: `<batch id>/<chunk>`)."""
    return url_for("joblogs.index_view", **{f"flt0_{of}_equals": value})


# -- from a job to what it worked on -------------------------------------------------------------

def user_label(user) -> str:
    return f"{user.name} <{user.email}>" if user.name else user.email


def plan_label(plan: Plan) -> str:
    return f"#{plan.id} {plan.goal} ({plan.days} d)"


def _workout(args, kwargs):
    plan_id = as_id(kwargs.get("plan_id", args[1] if len(args) > 1 else None))
    if plan_id is None:
        return []
    plan = Plan.get_or_none(Plan.id == plan_id)
    if plan is None:
        return [(f"Plan #{plan_id} (deleted)", jobs_url("plan", plan_id))]
    return [(f"Plan {plan_label(plan)}: its failed days", url_for("failed_plans.index_view", flt0_plan_equals=plan_id)),
            ("every job of this plan", jobs_url("plan", plan_id)),
            (f"User {user_label(plan.user)}: failed days", url_for("failed_plans.index_view", flt0_user_equals=plan.user_id)),
            ("every job of this user", jobs_url("user", plan.user_id))]


def _synced(model, endpoint: str, of: str):
    def links(args, kwargs):
        row_id = as_id(args[0] if args else kwargs.get(f"{of}_id"))
        row = model.get_or_none(model.id == row_id) if row_id else None
        if row is None:
            return [(f"{of.title()} #{row_id} (deleted)", jobs_url(of, row_id))] if row_id else []
        found = [(f"{of.title()} #{row.id} {row.name or ''} (TVDB {row.tvdb_id})".replace("  ", " "),
                  url_for(f"{endpoint}.details_view", id=row.id)), (f"every job of this {of}", jobs_url(of, row.id))]
        if isinstance(row, Episode):
            found.append((f"Series #{row.series_id}", url_for("series_data.details_view", id=row.series_id)))
        return found
    return links


def _chunk(args, kwargs):
    if len(args) < 2 or not isinstance(args[0], str) or BATCH_VALUE.fullmatch(args[0]) is None:
        return []
    batch = Batch.get_or_none(Batch.id == args[0])
    chunk = args[1] if isinstance(args[1], int) and 0 <= args[1] < 10**9 else None
    if batch is None or chunk is None:
        return [(f"Batch {args[0]} (deleted)", jobs_url("batch", args[0]))]
    first = chunk * batch.chunk_size
    return [(f"Batch “{batch.title}”", url_for("batches.details", batch_id=batch.id)),
            (f"its items {first + 1}–{min(first + batch.chunk_size, batch.total)} (chunk {chunk})",
             url_for("batches.details", batch_id=batch.id, offset=first, limit=batch.chunk_size)),
            ("every job of this batch", jobs_url("batch", batch.id))]


def _sync_matching(args, kwargs):
    kind = args[0] if args else kwargs.get("kind")
    return [("the rows it synced", url_for("series_data.index_view" if kind == "series" else "episode_data.index_view"))]


RELATED = {WORKOUT: _workout, "series_data": _synced(Series, "series_data", "series"),
           "episode_data": _synced(Episode, "episode_data", "episode"), "sync_matching": _sync_matching}


def related(job: JobLog, args: list, kwargs: dict) -> list[tuple[str, str]]:
    """(label, url) of what the job worked on, and of the schedule run that sent it."""
    links = (_chunk if job.job_class.startswith(CHUNK_PREFIX) else RELATED.get(job.job_class, lambda a, k: []))(
        args, kwargs)
    run = ScheduleRun.select(ScheduleRun.id, ScheduleRun.name).where(ScheduleRun.message_id == job.message_id).first()
    if run is not None:
        links.append((f"Schedule run #{run.id} of {run.name}", url_for("schedule.history", entry=run.name)))
    return links
