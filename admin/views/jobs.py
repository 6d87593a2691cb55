"""Job logs: every attempt of every job, newest first, with filters, search, details and CSV;
a failed job's details can run it again, and link to what the job worked on."""
from __future__ import annotations

import json

import dramatiq
from flask import flash, g, redirect, request, url_for
from flask_admin import expose
from flask_admin.contrib.peewee import filters as f
from markupsafe import Markup

from actors.controls import search_condition
from actors.jobs import retry_job
from admin import audit_trail
from admin.access import is_admin
from admin.stats import distinct_values
from admin.views.base import ReadOnlyModelView, as_id, cut
from core.errors import CODES, FleetError
from core.redact import redact
from db.models.jobs import JobLog

CODE_OPTIONS = [(code, code) for code in CODES]
STATUS_OPTIONS = [(s, s) for s in JobLog.STATUSES]
LIST_FIELDS = [JobLog.id, JobLog.created_at, JobLog.finished_at, JobLog.job_class, JobLog.message_id, JobLog.queue,
               JobLog.status, JobLog.attempt, JobLog.error_code, JobLog.message, JobLog.duration_seconds,
               JobLog.trace_id, JobLog.worker]


def _workout_plan(args, kwargs):
    plan_id = kwargs.get("plan_id", args[1] if len(args) > 1 else None)
    if plan_id is None:
        return []
    return [(f"Plan #{plan_id}: its failed days", url_for("failed_plans.index_view", flt0_plan_equals=plan_id))]


# What a job worked on, by actor: (label, url) pairs from its arguments. A domain whose
# jobs work on rows the panel shows adds its actor here.
RELATED = {"generate_user_workout_plan": _workout_plan}


class LiveOptions:
    """Filter options read on every request (Flask-Admin caches a list at start-up)."""

    def __init__(self, load):
        self.load = load

    def __bool__(self) -> bool:
        return True

    def __iter__(self):
        return iter([(v, v) for v in self.load()])


def _actors():
    return distinct_values(JobLog, "job_class")


def _code(view, context, model, name):
    code = model.error_code
    if not code:
        return ""
    sentence = CODES[code].sentence if code in CODES else ""
    return Markup('<span title="{}">{}</span>').format(sentence, code)


def _status(view, context, model, name):
    return Markup('<span class="badge fleet-status fleet-status-{0}">{0}</span>').format(model.status)


def _trace(view, context, model, name):
    if not model.trace_id:
        return ""
    return Markup('<a href="{}" title="All attempts of this trace">{}</a>').format(
        url_for(".index_view", flt0_trace_id_equals=model.trace_id), model.trace_id)


def _message_id(view, context, model, name):
    short = model.message_id if len(model.message_id) <= 13 else model.message_id[:8] + "…"
    return Markup('<a class="fleet-id" href="{}" title="{} (every attempt of this message)">{}</a>').format(
        url_for(".index_view", flt0_message_id_equals=model.message_id), model.message_id, short)


def _pre(text: str | None):
    return Markup('<pre class="fleet-pre">{}</pre>').format(text) if text else ""


def _call(model) -> tuple[list, dict] | None:
    try:
        call = json.loads(model.args or "")
        return list(call["args"]), dict(call["kwargs"])
    except (ValueError, KeyError, TypeError):
        return None


def _args(view, context, model, name):
    if not model.args:
        return ""
    try:
        pretty = json.dumps(json.loads(model.args), indent=2, sort_keys=True)
    except ValueError:
        pretty = model.args
    return _pre(redact(pretty))


def _related(view, context, model, name):
    call = _call(model)
    links = RELATED.get(model.job_class, lambda a, k: [])(*call) if call else []
    links.append(("Every attempt of this message", url_for(".index_view", flt0_message_id_equals=model.message_id)))
    return Markup(" · ").join(Markup('<a href="{}">{}</a>').format(url, label) for label, url in links)


class JobLogView(ReadOnlyModelView):
    details_template = "joblog_details.html"
    export_max_rows = 100_000
    can_export = True
    column_list = ["created_at", "job_class", "status", "attempt", "error_code", "message", "duration_seconds",
                   "message_id", "trace_id", "worker"]
    column_details_list = ["id", "related", "run_id", "created_at", "finished_at", "job_class", "queue", "message_id",
                           "status", "attempt", "error_code", "message", "duration_seconds", "trace_id", "worker",
                           "args", "traceback"]
    column_export_list = ["created_at", "finished_at", "job_class", "queue", "message_id", "status", "attempt",
                          "error_code", "message", "duration_seconds", "trace_id", "worker"]
    column_labels = {"created_at": "Time (UTC)", "job_class": "Actor", "duration_seconds": "Seconds",
                     "trace_id": "Trace id", "error_code": "Error code", "finished_at": "Finished (UTC)",
                     "message_id": "Message id", "related": "Related"}
    column_sortable_list = ["created_at"]  # sorting another column would sort the whole table
    column_default_sort = ("created_at", True)
    column_searchable_list = ["message"]
    column_filters = [
        f.FilterEqual(JobLog.job_class, "Actor", options=LiveOptions(_actors)),
        f.FilterEqual(JobLog.status, "Status", options=STATUS_OPTIONS),
        f.FilterEqual(JobLog.error_code, "Error code", options=CODE_OPTIONS),
        f.FilterEmpty(JobLog.error_code, "Error code"),
        f.DateTimeBetweenFilter(JobLog.created_at, "Time (UTC)"),
        f.DateTimeGreaterFilter(JobLog.created_at, "Time (UTC)"),
        f.DateTimeSmallerFilter(JobLog.created_at, "Time (UTC)"),
        f.FilterEqual(JobLog.trace_id, "Trace id"),
        f.FilterEqual(JobLog.message_id, "Message id"),
    ]
    column_formatters = {
        "message": lambda v, c, m, n: cut(m.message),
        "status": _status,
        "error_code": _code,
        "trace_id": _trace,
        "message_id": _message_id,
        "duration_seconds": lambda v, c, m, n: "" if m.duration_seconds is None else f"{m.duration_seconds:.2f}",
    }
    column_formatters_detail = {"error_code": _code, "status": _status, "args": _args, "related": _related,
                                "traceback": lambda v, c, m, n: _pre(m.traceback),
                                "message": lambda v, c, m, n: _pre(m.message)}
    column_formatters_export = {"duration_seconds": lambda v, c, m, n: m.duration_seconds}

    def search_placeholder(self) -> str:
        return "plan_id=13, tvdb_id=…, a message or trace id, or words"

    def get_list(self, page, sort_column, sort_desc, search, filters, execute=True, page_size=None):
        # The search is Fleet's (actors.controls.search_condition: arguments and ids by index), not
        # Flask-Admin's LIKE on every column; get_query applies it, for the list and the export alike.
        g.joblog_search = search_condition(search) if search else None
        return super().get_list(page, sort_column, sort_desc, None, filters, execute, page_size)

    def get_query(self):
        query = JobLog.select(*LIST_FIELDS)  # not the tracebacks and arguments: the details page has them
        condition = g.get("joblog_search")
        return query if condition is None else query.where(condition)

    def get_one(self, id):
        row_id = as_id(id)
        return None if row_id is None else JobLog.get_or_none(JobLog.id == row_id)  # with arguments and traceback

    def render(self, template, **kwargs):
        kwargs.setdefault("can_retry", is_admin())
        model = kwargs.get("model")
        kwargs.setdefault("can_cancel", is_admin() and model is not None and not JobLog.select().where(
            (JobLog.message_id == model.message_id) & (JobLog.status == "cancelled")).exists())
        return super().render(template, **kwargs)

    @expose("/retry/", methods=("POST",))
    def retry_view(self):
        """Run a failed job again (its dead letter, or the same actor and arguments)."""
        row_id = as_id(request.form.get("id"))
        job = JobLog.get_or_none(JobLog.id == row_id) if row_id else None
        if job is None:
            flash("Record does not exist.", "error")
            return redirect(self.get_url(".index_view"))
        if job.status != "failed":
            flash(f"Only a failed job is retried from here; this attempt is {job.status}.", "warning")
        else:
            try:
                flash(retry_job(dramatiq.get_broker(), job), "success")
                audit_trail.record("jobs.retry", f"job={job.id} message={job.message_id}", 1)
            except FleetError as exc:
                flash(str(exc), "error")
        return redirect(self.get_url(".details_view", id=job.id))
